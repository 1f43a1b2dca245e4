"""GASP: flat Gaussian <-> triangle mappings, size control, Birch grouping, the Newton MPM adapter, flat training and
``recon simulate`` end to end (zero-force playback equals the trained model; a drop stays above the ground)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.cameras import Cameras, look_at
from recon.gaussians import FLAT_SCALE
from recon.physics.flat import clamp_edges, gaussians_to_triangles, triangles_to_gaussians
from recon.physics.grouping import apply_binding, bind, birch_cores
from recon.render.gaussians import rasterize_gaussians
from recon.rotations import quat_to_rotmat


def _flat_gaussians(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * 0.3
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)
    scales = torch.log(torch.rand(n, 3, generator=g) * 0.05 + 0.01)
    scales[:, 2] = math.log(FLAT_SCALE)
    return {"means": means, "quats": quats, "scales": scales}


def _covariance(quats, log_scales):
    rot = quat_to_rotmat(quats.double())
    s = torch.exp(log_scales.double())
    return rot @ torch.diag_embed(s * s) @ rot.transpose(-1, -2)


def _render(params, n_pix: int = 48) -> torch.Tensor:
    n = params["means"].shape[0]
    c2w = torch.as_tensor(look_at(np.array([0.0, -2.0, 0.8]), np.zeros(3), np.array([0.0, 0.0, 1.0])), dtype=torch.float32)
    cam = Cameras.create(c2w[None], 50.0, 50.0, n_pix / 2, n_pix / 2, n_pix, n_pix)
    colors = torch.rand(n, 3, generator=torch.Generator().manual_seed(1))
    out, _, _ = rasterize_gaussians(params["means"], params["quats"], torch.exp(params["scales"]), torch.full((n,), 0.8), colors,
                                    cam.viewmats(), cam.Ks(), n_pix, n_pix, sh_degree=None)  # fmt: skip
    return out[0]


def test_triangle_round_trip_keeps_every_gaussian_and_its_render():
    g = _flat_gaussians(500)
    back = triangles_to_gaussians(gaussians_to_triangles(g["means"], g["quats"], g["scales"]))
    torch.testing.assert_close(back["means"], g["means"])
    # the same disc: equal covariances (axes may come back swapped, normal flipped)
    torch.testing.assert_close(_covariance(back["quats"], back["scales"]), _covariance(g["quats"], g["scales"]), atol=1e-8, rtol=1e-4)
    diff = (_render(back) - _render(g)).abs().max()
    assert float(diff) < 1e-5


def test_triangle_to_gaussian_follows_gasp_gram_schmidt():
    tri = torch.tensor([[[1.0, 2.0, 3.0], [3.0, 2.0, 3.0], [2.0, 2.5, 3.0]]])  # edges (2, 0, 0) and (1, 0.5, 0)
    g = triangles_to_gaussians(tri)
    torch.testing.assert_close(g["means"], tri[:, 0])
    torch.testing.assert_close(torch.exp(g["scales"][0, :2]), torch.tensor([2.0, 0.5]))  # |e1|, e2's part orthogonal to e1
    rot = quat_to_rotmat(g["quats"])[0]
    torch.testing.assert_close(rot[:, 0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(rot[:, 2], torch.tensor([0.0, 0.0, 1.0]))  # the normal: e1 x e2, normalised
    # the larger in-plane axis becomes vertex 2
    g2 = {"means": torch.zeros(1, 3), "quats": torch.tensor([[1.0, 0, 0, 0]]), "scales": torch.log(torch.tensor([[0.1, 0.3, 1e-6]]))}
    tri2 = gaussians_to_triangles(g2["means"], g2["quats"], g2["scales"])
    torch.testing.assert_close(tri2[0, 1], torch.tensor([0.0, 0.3, 0.0]))


def test_size_control_clamps_edge_ratios():
    g = _flat_gaussians(200)
    rest = gaussians_to_triangles(g["means"], g["quats"], g["scales"])
    gen = torch.Generator().manual_seed(3)
    moved = rest + torch.randn(rest.shape, generator=gen) * 0.05
    for tau in (1.0, 1.5):
        out = clamp_edges(moved, rest, tau)
        ratio = (out[:, 1:] - out[:, :1]).norm(dim=-1) / (rest[:, 1:] - rest[:, :1]).norm(dim=-1)
        assert float(ratio.max()) <= tau * (1 + 1e-5) and float(ratio.min()) >= (1 / tau) * (1 - 1e-5)
        torch.testing.assert_close(out[:, 0], moved[:, 0])
        # directions are kept
        cos = torch.nn.functional.cosine_similarity(out[:, 1:] - out[:, :1], moved[:, 1:] - moved[:, :1], dim=-1)
        assert float(cos.min()) > 1 - 1e-5
    with pytest.raises(ValueError):
        clamp_edges(moved, rest, 0.5)


def test_grouping_reduces_particles_and_binds_members_rigidly():
    gen = torch.Generator().manual_seed(0)
    centres = torch.rand(20, 3, generator=gen) * 2
    g = _flat_gaussians(2000)
    g["means"] = centres.repeat_interleave(100, 0) + torch.randn(2000, 3, generator=gen) * 0.02  # 20 blobs
    tris = gaussians_to_triangles(g["means"], g["quats"], g["scales"])
    groups = birch_cores(tris, threshold=0.1)
    assert groups.core_triangles.shape[0] * 5 <= tris.shape[0]
    assert int(groups.sizes.sum()) == 2000 and groups.core_of.shape == (2000,)
    coeffs = bind(tris, groups.core_triangles, groups.core_of)
    torch.testing.assert_close(apply_binding(groups.core_triangles, groups.core_of, coeffs), tris, atol=1e-5, rtol=0)
    # a rigid motion of every core moves the members rigidly with it
    angle = 0.7
    rot = torch.tensor([[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    shift = torch.tensor([0.3, -0.2, 0.5])
    moved = apply_binding(groups.core_triangles @ rot.T + shift, groups.core_of, coeffs)
    torch.testing.assert_close(moved, tris @ rot.T + shift, atol=1e-5, rtol=0)
    # a sheared core does not change its members' sizes (orthonormal frame)
    sheared = groups.core_triangles.clone()
    sheared[:, 2] += 0.5 * (sheared[:, 1] - sheared[:, 0])
    members = apply_binding(sheared, groups.core_of, coeffs)
    torch.testing.assert_close((members[:, 1:] - members[:, :1]).norm(dim=-1), (tris[:, 1:] - tris[:, :1]).norm(dim=-1), atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def newton_engine():
    pytest.importorskip("newton", reason="the newton package is a dependency of recon; install it with scripts/setup.sh")
    from recon.physics.mpm import get_engine

    return get_engine("newton")


def test_newton_without_forces_keeps_particles_still_and_drops_them_on_the_ground(newton_engine):
    from recon.physics.mpm import ParticleSystem, material

    rng = np.random.default_rng(0)
    pts = rng.uniform([-0.2, -0.2, 0.3], [0.2, 0.2, 0.7], (3000, 3))
    # tilted up vector: the adapter rotates the scene into the engine's z-up frame and back
    up = np.array([0.0, -0.6, 0.8])
    frames = {}
    still = ParticleSystem(pts, np.zeros(len(pts), bool), material("elastic"), up=up, gravity=0.0, ground=None, cell_size=0.05)
    newton_engine.run(still, 4, 1 / 30, 1, lambda f, p: frames.__setitem__(f, p))
    assert sorted(frames) == [0, 1, 2, 3, 4]
    assert np.abs(frames[4] - pts).max() < 1e-5

    frames.clear()
    ground = float((pts @ up).min()) - 0.1
    fixed = np.zeros(len(pts), bool)
    fixed[:100] = True
    drop = ParticleSystem(pts, fixed, material("sand"), up=up, gravity=9.81, ground=ground, cell_size=0.05)
    newton_engine.run(drop, 15, 1 / 30, 1, lambda f, p: frames.__setitem__(f, p))
    last = frames[15]
    assert np.isfinite(last).all()
    heights = last @ up - ground
    assert heights.min() > -0.05  # no particle deeper than one cell into the ground
    assert (last[100:] @ up).mean() < (pts[100:] @ up).mean() - 0.05  # it fell
    np.testing.assert_allclose(last[:100], pts[:100], atol=1e-5)  # fixed particles stay


def test_newton_materials_differ_as_named(newton_engine):
    """An elastic box dropped on the ground keeps its shape; a fluid one spreads out flat."""
    from recon.physics.mpm import ParticleSystem, material

    pts = np.random.default_rng(1).uniform([-0.2, -0.2, 0.05], [0.2, 0.2, 0.45], (3000, 3))
    heights = {}
    for name in ("elastic", "fluid"):
        frames = {}
        system = ParticleSystem(pts, np.zeros(len(pts), bool), material(name), gravity=9.81, ground=0.0, cell_size=0.05)
        newton_engine.run(system, 12, 1 / 30, 4, lambda f, p: frames.__setitem__(f, p))
        heights[name] = float(np.percentile(frames[12][:, 2], 99) - np.percentile(frames[12][:, 2], 1))
    assert heights["elastic"] > 0.8 * 0.4
    assert heights["fluid"] < 0.5 * heights["elastic"]


def test_flat_training_keeps_discs_flat_through_densification():
    from recon.methods.gasp.model import Gasp, GaspConfig
    from tests.helpers import blob_scene

    scene = blob_scene()
    cfg = GaspConfig(init="random", init_num_points=400)
    cfg.densify.refine_start = 0.0
    method = Gasp(cfg, scene, max_steps=40, device="cpu")
    method.setup(scene)
    assert torch.allclose(method.splats["scales"][:, 2], torch.tensor(math.log(FLAT_SCALE)))
    g = method.gaussians()
    assert float(g["scales"][:, 2].max()) <= math.log(FLAT_SCALE) + 1e-6


@pytest.fixture(scope="module")
def gasp_run(tmp_path_factory) -> Path:
    from recon.cli import main

    out = tmp_path_factory.mktemp("gasp-run")
    assert main(["train", "--method", "gasp", "--max-steps", "60", "--output-dir", str(out), "--trainer.eval-every", "0"]) == 0
    return next((out / "demo-static" / "gasp").iterdir())


def test_recon_simulate_plays_back_the_trained_model_and_drops_it(gasp_run: Path, tmp_path: Path, newton_engine):
    from recon.cli import main
    from recon.engine.run import load_run
    from recon.eval.metrics import psnr

    run = gasp_run
    source = load_run(run, device="cpu")
    cam = source.scene.cameras[[int(source.scene.split("test")[0])]]
    reference = source.method.render(cam)["rgb"]

    still = tmp_path / "still"
    assert main(["simulate", str(run), "--frames", "3", "--gravity", "0", "--ground", "none", "--output", str(still),
                 "--progress", "lines", "--video", "none"]) == 0  # fmt: skip
    played = load_run(still, device="cpu")
    assert played.method.is_dynamic
    for t in (0.0, 0.5, 1.0):
        assert psnr(played.method.render(cam, time=t)["rgb"], reference) >= 40.0
    assert len(list((still / "ply").glob("frame-*.ply"))) == 4

    drop = tmp_path / "drop"
    assert main(["simulate", str(run), "--frames", "8", "--ground", "below", "--material", "sand", "--output", str(drop),
                 "--progress", "lines", "--ply-every", "4"]) == 0  # fmt: skip
    info = json.loads((drop / "simulation.json").read_text())
    checks = info["checks"]
    assert checks["non_finite"] == 0
    assert checks["lowest_centre_above_ground_cells"] > -1.0
    assert checks["max_size_ratio"] <= info["settings"]["tau"] + 1e-4
    assert info["counts"]["simulated_triangles"] < info["counts"]["moved"]
    assert len(list((drop / "ply").glob("frame-*.ply"))) == 3  # frames 0, 4, 8
    assert list((drop / "video").glob("*.mp4"))
    moved = load_run(drop, device="cpu").method
    z0 = moved.gaussians(time=0.0)["means"]
    z1 = moved.gaussians(time=1.0)["means"]
    assert float((z0 - z1).norm(dim=-1).max()) > 1e-3  # something moved


def test_recon_simulate_moves_only_the_selected_groups(gasp_run: Path, tmp_path: Path, newton_engine, capsys):
    from recon.cli import main
    from recon.engine.run import load_run

    assert main(["simulate", str(gasp_run), "--list-groups"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].startswith("group") and listing[1].split()[0] == "0"
    out = tmp_path / "group0"
    assert main(["simulate", str(gasp_run), "--select", "groups", "--groups", "0", "--frames", "3", "--ground", "below",
                 "--output", str(out), "--video", "none", "--ply-every", "0", "--progress", "lines"]) == 0  # fmt: skip
    info = json.loads((out / "simulation.json").read_text())
    moved_count = info["counts"]["moved"]
    assert moved_count == int(listing[1].split()[1].replace(",", ""))
    method = load_run(out, device="cpu").method
    start, end = method.gaussians(time=0.0)["means"], method.gaussians(time=1.0)["means"]
    shift = (end - start).norm(dim=-1)
    mask = torch.zeros(len(shift), dtype=torch.bool)
    mask[method.playback.moved] = True
    assert float(shift[~mask].max()) == 0.0 and float(shift[mask].max()) > 1e-3
    assert main(["simulate", str(gasp_run), "--select", "groups", "--groups", "100000"]) == 2
    assert main(["simulate", str(gasp_run), "--select", "box", "--box", "9", "9", "9", "10", "10", "10"]) == 2
    assert "holds no Gaussian centre" in capsys.readouterr().err


def test_recon_simulate_takes_a_given_ground_plane(gasp_run: Path, tmp_path: Path, newton_engine):
    from recon.cli import main
    from recon.engine.run import load_run

    run = load_run(gasp_run, device="cpu")
    data_means = np.asarray(run.transform.invert_points(run.method.gaussians()["means"].double()))
    floor = float(data_means[:, 2].min()) - 0.1
    out = tmp_path / "plane"
    assert main(["simulate", str(gasp_run), "--ground-plane", "0", "0", str(floor), "0", "0", "1", "--frames", "6", "--material", "sand",
                 "--output", str(out), "--video", "none", "--ply-every", "0", "--progress", "lines"]) == 0  # fmt: skip
    info = json.loads((out / "simulation.json").read_text())
    up = np.asarray(info["settings"]["up"])
    np.testing.assert_allclose(up, run.transform.rotation @ np.array([0.0, 0.0, 1.0]), atol=1e-9)
    expected = float(run.transform.apply_points(np.array([0.0, 0.0, floor])) @ up)
    assert abs(info["settings"]["ground_height"] - expected) < 1e-9
    assert info["checks"]["lowest_centre_above_ground_cells"] > -1.0 and info["checks"]["non_finite"] == 0


def test_recon_simulate_refuses_runs_without_flat_gaussians(tmp_path: Path, capsys):
    from recon.cli import main

    assert main(["train", "--method", "gs", "--max-steps", "5", "--output-dir", str(tmp_path), "--trainer.eval-every", "0"]) == 0
    run = next((tmp_path / "demo-static" / "gs").iterdir())
    assert main(["simulate", str(run), "--frames", "2"]) == 2
    err = capsys.readouterr().err
    assert "needs flat Gaussians" in err and "--method gasp" in err
