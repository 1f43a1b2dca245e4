"""Differentiable Blocks World (``--method blocks``): layout from the data, the terms of the paper, its phases, image
gradients through the mesh rasterizer, and the ``primitives`` export in the data frame. The contract test trains it
on its demo; the quality run is ``scripts/bench_blocks.py``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import trimesh

from recon.data.normalize import compute_normalization, normalize_scene
from recon.geometry.ground import camera_up, fit_ground_plane, visual_hull_points
from recon.geometry.superquadric import pseudo_sdf
from recon.methods import get_method


@pytest.fixture(scope="module")
def solids():
    from recon.demo import load_demo

    scene = load_demo("solids")
    transform = compute_normalization(scene, "cameras")
    return scene, transform, normalize_scene(scene, transform)


@pytest.fixture()
def method(solids):
    _, _, scene = solids
    cls = get_method("blocks")
    m = cls(cls.config_cls(), scene, 100, torch.device("cpu"))
    m.setup(scene)
    return m


def test_ground_plane_found_among_clutter():
    rng = np.random.default_rng(0)
    floor = np.c_[rng.uniform(-2, 2, (600, 2)), rng.normal(0, 0.002, 600)]
    boxes = rng.uniform([-0.5, -0.5, 0.05], [0.5, 0.5, 0.6], (400, 3))
    tilt = trimesh.transformations.rotation_matrix(np.deg2rad(10), [1, 0, 0])[:3, :3]
    pts = np.r_[floor, boxes] @ tilt.T + np.array([0.3, -0.2, 1.0])
    plane = fit_ground_plane(pts, np.array([0.0, 0.0, 1.0]))
    assert plane is not None
    assert np.degrees(np.arccos(plane.normal @ (tilt @ [0, 0, 1]))) < 1.0
    assert plane.inliers[:600].mean() > 0.95 and plane.inliers[600:].mean() < 0.1
    assert fit_ground_plane(boxes, np.array([0.0, 0.0, 1.0])) is None  # no plane holds 15 % of a cloud of boxes


def test_visual_hull_of_a_sphere_from_its_silhouettes():
    from recon.cameras import Cameras, orbit_poses

    c2w = orbit_poses(12, 3.0, 25.0)
    size, f = 48, 60.0
    cams = Cameras.create(c2w, f, f, size / 2, size / 2, size, size)
    masks = []
    for i in range(len(cams)):
        o, d = cams.rays(i)
        t = -(o * d).sum(-1, keepdim=True) / (d * d).sum(-1, keepdim=True)
        masks.append(((o + t * d).norm(dim=-1, keepdim=True) < 0.5).float().reshape(size, size, 1).numpy())
    pts = visual_hull_points(cams, masks, np.full(3, -1.0), np.full(3, 1.0), resolution=40)
    r = np.linalg.norm(pts, axis=1)
    assert len(pts) > 500 and r.max() < 0.75  # carved to near the sphere (a hull is always a little larger)
    assert r.min() < 0.1  # and still filled
    assert np.allclose(camera_up(c2w.numpy() if hasattr(c2w, "numpy") else c2w), [0, 0, 1], atol=0.05)


def test_layout_and_initial_blocks_on_solids(method, solids):
    scene, transform, _ = solids
    notes = " ".join(method.layout_notes)
    assert "RANSAC plane" in notes
    point, normal = (v.detach().numpy() for v in method.env.ground_plane())
    assert np.degrees(np.arccos(normal @ [0, 0, 1])) < 2.0  # the demo's ground is z = 0 (normalisation does not rotate)
    assert abs(transform.invert_points(point)[2]) < 0.02 * (1 / transform.scale)
    # initial blocks sit on the solids: every centre above the ground and within the solids' footprint
    centers = transform.invert_points(method.blocks.translations().detach().numpy().astype(np.float64))
    assert (centers[:, 2] > 0.0).all() and (np.abs(centers[:, :2]) < 1.0).all()


def test_overlap_charges_only_shared_volume(method):
    b = method.blocks
    with torch.no_grad():
        b.offsets.zero_()
        b.raw_scales.zero_()
        b.opacity_logits.fill_(10.0)
        b.alive.zero_()
        b.alive[:2] = True
    g = torch.Generator().manual_seed(0)
    same = b.overlap(500, 0.005, 1.95, g)
    with torch.no_grad():
        b.offsets[1, 0] = 3.0  # 3 region radii apart: no shared volume
    apart = b.overlap(500, 0.005, 1.95, g)
    assert float(same.detach()) > 0.01 and float(apart.detach()) == 0.0
    assert float(b.parsimony().detach()) == pytest.approx(1.0, abs=1e-3)


def test_phases_kill_filter_and_make_opaque(method):
    cfg = method.config
    b = method.blocks
    with torch.no_grad():
        b.opacity_logits.copy_(torch.tensor([-6.0, 2.0, -0.5, 0.5, 3.0, -3.0, 1.0, 0.0, 4.0, 5.0]))
    method.after_optimizer_step(0, {})
    assert not bool(b.alive[0]) and bool(b.alive[5])  # 0.0025 < kill threshold 0.01 < 0.047
    end = int(cfg.coarse_until * method.max_steps)
    assert method.phase(end - 1)["coarse"] and not method.phase(end + 1)["coarse"]
    method.after_optimizer_step(end, {})
    assert bool(b.opaque)
    assert b.alive.tolist() == [False, True, False, True, True, False, True, False, True, True]
    assert torch.equal(b.opacities(), b.alive.float())


def test_image_gradients_reach_pose_shape_opacity_and_texture(method, solids):
    _, _, scene = solids
    i = int(scene.split("train")[0])
    cam = scene.cameras[i:i + 1]
    out = method._render(cam, torch.ones(3), detach_bary=True)
    target = torch.from_numpy(scene.image_rgb(i)).float()
    (out["rgb"][0] - target).square().mean().backward()
    b = method.blocks
    for name in ("offsets", "raw_scales", "rot6d", "raw_exponents", "opacity_logits", "texture_logits"):
        grad = getattr(b, name).grad
        assert grad is not None and float(grad.abs().sum()) > 0, name
    assert float(method.env.ground_logits.grad.abs().sum()) > 0


def test_primitives_export_is_in_the_data_frame(method, solids, tmp_path):
    from recon.export.primitives import write_primitives

    _, transform, _ = solids
    path = write_primitives(method.primitives(), transform, tmp_path / "prims")
    doc = json.loads(path.read_text())
    assert doc["format"] == "recon-primitives" and len(doc["blocks"]) == method.config.num_blocks
    assert np.degrees(np.arccos(np.clip(np.asarray(doc["up"]) @ [0, 0, 1], -1, 1))) < 2.0
    for blk in doc["blocks"]:
        mesh = trimesh.load(tmp_path / "prims" / blk["mesh"], force="mesh")
        R, t = np.asarray(blk["rotation"]), np.asarray(blk["translation"])
        local = (np.asarray(mesh.vertices) - t) @ R  # data frame -> the block's own frame
        sdf = pseudo_sdf(torch.as_tensor(local, dtype=torch.float32)[None], torch.tensor([blk["exponents"]]), torch.tensor([blk["scale"]]))
        assert float(sdf.abs().max()) < 1e-3  # the JSON's analytic block is the mesh's block, in the data frame
        hull = trimesh.load(tmp_path / "prims" / blk["collision"], force="mesh")
        assert hull.is_watertight and hull.volume == pytest.approx(blk["volume"], rel=0.03)
        obj = tmp_path / "prims" / blk["obj"]
        assert f"map_Kd {obj.stem}.png" in obj.with_suffix(".mtl").read_text()  # each block its own texture file
        assert trimesh.load(obj, force="mesh").visual.material.image.size == (method.config.texture_size,) * 2
    assert (tmp_path / "prims" / "scene.glb").is_file() and (tmp_path / "prims" / "ground.glb").is_file()
    merged = method.mesh()
    assert merged.is_watertight or len(merged.split(only_watertight=True)) == method.config.num_blocks


def test_perceptual_term_when_weights_exist(solids):
    from recon.eval.lpips import LPIPSUnavailable, load_lpips
    from recon.methods.base import Batch

    try:
        load_lpips("vgg", torch.device("cpu"))
    except LPIPSUnavailable as exc:  # the set-up fetches them; without them the option says so at its first step
        pytest.skip(str(exc))
    _, _, scene = solids
    cls = get_method("blocks")
    cfg = cls.config_cls()
    cfg.perceptual_weight = 0.1
    m = cls(cfg, scene, 100, torch.device("cpu"))
    m.setup(scene)
    i = int(scene.split("train")[0])
    batch = Batch(i, scene.cameras[i:i + 1], torch.from_numpy(scene.image_rgb(i)).float(), None, None, torch.ones(3), None)
    with_p = m.train_step(batch, 0)
    perceptual = m._perceptual(with_p["rgb"], batch.image)
    assert 0.05 < float(perceptual) < 1.0  # an untrained render is far from the photo, but not maximally
    with_p["loss"].backward()
    assert float(m.blocks.texture_logits.grad.abs().sum()) > 0


def test_ground_pose_has_its_own_learning_rate(solids):
    _, _, scene = solids
    cls = get_method("blocks")
    cfg = cls.config_cls()
    cfg.ground_lr_scale = 0.1
    m = cls(cfg, scene, 100, torch.device("cpu"))
    groups = {g["name"]: g for g in m.optimizers()["blocks"].param_groups}
    assert groups["ground"]["lr"] == pytest.approx(0.1 * cfg.lr) and groups["shape"]["lr"] == pytest.approx(cfg.lr)
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    assert id(m.env.ground_rot6d) in ids["ground"] and id(m.env.ground_rot6d) not in ids["shape"]
