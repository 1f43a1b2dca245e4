"""Relightable 3D Gaussians (recon/methods/r3dg): the per-Gaussian shading against recon's BRDF, the depth
pseudo-normal on an analytic plane, visibility baking on a hand-made occluder, and the stage switch."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from recon.cameras import Cameras
from recon.render.envmap import sample_envmap
from recon.render.pbr import eval_brdf
from recon.render.raytrace import hemisphere_directions


def test_shading_equals_the_brdf_summed_over_the_directions():
    from recon.methods.r3dg.shading import local_light, shade, solid_angle_per_sample

    torch.manual_seed(0)
    G, S = 300, 64
    n = F.normalize(torch.randn(G, 3), dim=-1)
    v = F.normalize(torch.randn(G, 3), dim=-1)
    v = torch.where(((v * n).sum(-1, keepdim=True) < 0), -v, v)  # views in front (behind: shaded as grazing, not black)
    d = hemisphere_directions(n, S)
    vis, bc, r, m = torch.rand(G, S), torch.rand(G, 3), torch.rand(G, 1), torch.rand(G, 1)
    env, loc = torch.rand(8, 16, 3) * 2, torch.randn(G, 16, 3) * 0.1
    out = shade(n, v, d, vis, bc, r, m, env, loc)
    light = sample_envmap(env, d.reshape(-1, 3)).reshape(G, S, 3) * vis[..., None] + local_light(loc, d)
    diff, spec = eval_brdf(n[:, None], v[:, None], d, bc[:, None], r[:, None], m[:, None])
    cos = (d * n[:, None]).sum(-1, keepdim=True).clamp_min(0)
    dw = solid_angle_per_sample(S)
    torch.testing.assert_close(out["diffuse"], (diff * light * cos).sum(1) * dw, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["specular"], (spec * light * cos).sum(1) * dw, rtol=1e-5, atol=1e-5)
    # a white Lambertian surface under a uniform white sky, nothing occluding: it reflects the sky's radiance
    # over the sampled band of the hemisphere (z >= sin 10 deg)
    ones = torch.ones(G, S)
    white = shade(n, n, d, ones, torch.ones(G, 3), torch.ones(G, 1), torch.zeros(G, 1), torch.ones(8, 16, 3), None)
    band = 1 - math.sin(math.radians(10)) ** 2  # the cosine-weighted share of the hemisphere above 10 deg
    torch.testing.assert_close(white["diffuse"], torch.full((G, 3), band), rtol=2e-2, atol=0)


def test_pseudo_normal_of_a_plane_is_its_normal():
    from recon.methods.r3dg.model import RelightableGaussians

    H = W = 24
    c2w = torch.eye(4)
    cam = Cameras.create(c2w[None], 20.0, 20.0, W / 2, H / 2, W, H)
    # the plane through (0, 0, 3) with normal m (camera frame = world frame; OpenCV: +z forward)
    m = F.normalize(torch.tensor([0.3, -0.2, -1.0]), dim=0)
    v, u = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    rays = torch.stack([(u - W / 2) / 20.0, (v - H / 2) / 20.0, torch.ones_like(u)], -1)
    depth = (m @ torch.tensor([0.0, 0.0, 3.0])) / (rays @ m)  # z of the hit (rays have z = 1)
    n = RelightableGaussians._pseudo_normal(None, cam, depth)
    inner = n[1:-1, 1:-1].reshape(-1, 3)
    torch.testing.assert_close(inner, m.expand_as(inner), rtol=0, atol=1e-4)  # m faces the camera already
    assert float(n[0].abs().sum()) == 0.0


def _trained(steps=12, stage2_from=0.5):
    from recon.demo import load_demo
    from recon.data.normalize import compute_normalization, normalize_scene
    from recon.engine.trainer import Trainer, TrainerConfig
    from recon.methods.r3dg import R3DGConfig, RelightableGaussians
    from rich.console import Console
    import tempfile

    scene = load_demo("pbr")
    scene = normalize_scene(scene, compute_normalization(scene, "cameras"))
    cfg = R3DGConfig(stage2_from=stage2_from, init_num_points=3000, samples=16)
    method = RelightableGaussians(cfg, scene, steps, torch.device("cpu"))
    method.setup(scene)
    trainer = Trainer(TrainerConfig(max_steps=steps, image_every=0, eval_at_end=False, checkpoint_every=10**6, lpips="none"), method, scene,
                      tempfile.mkdtemp(), console=Console(quiet=True))  # fmt: skip
    return method, scene, trainer


def test_stage_two_freezes_geometry_bakes_visibility_and_learns_materials():
    method, scene, trainer = _trained()
    trainer.config.max_steps = 6
    trainer.train()
    assert not bool(method.baked) or method.stage2_step <= 6
    means = method.splats["means"].detach().clone()
    base = method.base_color().detach().clone()
    trainer.config.max_steps = 12
    trainer.train()
    assert bool(method.baked)
    assert method.visibility.shape == (method.splats.num_gaussians, 16) and 0 <= float(method.visibility.min()) and float(method.visibility.max()) <= 1
    assert float(method.visibility.mean()) < 1.0  # something shadows something
    assert torch.equal(method.splats["means"], means)  # frozen
    assert not torch.equal(method.base_color(), base)  # materials learn
    cam = scene.cameras[int(scene.split("test")[0]) : int(scene.split("test")[0]) + 1]
    out = method.render(cam, outputs=method.render_outputs)
    H, W = int(cam.heights[0]), int(cam.widths[0])
    assert out["rgb"].shape == (H, W, 3) and out["roughness"].shape == (H, W, 1) and torch.isfinite(out["rgb"]).all()
    relit = method.relight(cam, torch.full((8, 16, 3), 2.0))
    assert relit["rgb"].shape == (H, W, 3) and not torch.equal(relit["rgb"], out["rgb"])
    # recon eval --env: the same split scored relit
    from recon.eval.evaluate import evaluate

    plain = evaluate(method, scene, "test", with_lpips=False)
    lit = evaluate(method, scene, "test", with_lpips=False, envmap=torch.full((8, 16, 3), 2.0))
    assert math.isfinite(lit["psnr"]) and lit["psnr"] != plain["psnr"]


def test_baked_visibility_sees_a_roof():
    """A small Gaussian under a large opaque disc facing down: every upward direction is shadowed; the disc looking
    down sees almost nothing of the small one. Turned to face up, the disc no longer shadows (only surfaces facing
    the ray occlude: the paper's facing test)."""
    from recon.methods.r3dg.config import R3DGConfig
    from recon.methods.r3dg.model import RelightableGaussians
    from recon.rotations import rotmat_to_quat

    method = RelightableGaussians(R3DGConfig(samples=32), None, 10, torch.device("cpu"))
    s = method.splats
    s.initialize(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.5]]), torch.rand(2, 3))
    with torch.no_grad():
        s["scales"].copy_(torch.log(torch.tensor([[0.02, 0.02, 0.02], [3.0, 3.0, 0.01]])))  # the roof: wide, thin, in xy
        s["quats"].copy_(rotmat_to_quat(torch.eye(3)).expand(2, 4))
        s["opacities"].fill_(10.0)  # opaque
        s["normal"].copy_(torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]]))
    method.bake_visibility()
    assert float(method.visibility[0].max()) == 0.0  # every upward direction hits the roof (0.9 cut)
    assert float(method.visibility[1].mean()) > 0.9
    with torch.no_grad():
        s["normal"][1] = torch.tensor([0.0, 0.0, 1.0])
    method.bake_visibility()
    assert float(method.visibility[0].min()) == 1.0


def test_ply_export_carries_normals_and_materials_as_extra_properties(tmp_path):
    from plyfile import PlyData

    from recon.data.normalize import SceneTransform
    from recon.export.splats import read_ply, splats_to_data_frame, write_ply

    n = 5
    g = {"means": torch.randn(n, 3), "scales": torch.randn(n, 3), "quats": F.normalize(torch.randn(n, 4), dim=-1), "opacities": torch.randn(n),
         "sh0": torch.randn(n, 1, 3), "shN": torch.randn(n, 15, 3), "normals": F.normalize(torch.randn(n, 3), dim=-1),
         "base_color": torch.rand(n, 3), "roughness": torch.rand(n, 1), "metallic": torch.rand(n, 1)}  # fmt: skip
    R = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    data = splats_to_data_frame(g, SceneTransform(R.numpy().astype("float64"), __import__("numpy").zeros(3), 1.0))
    path = write_ply(data, tmp_path / "r3dg.ply")
    v = PlyData.read(str(path))["vertex"]
    names = v.data.dtype.names
    assert {"base_color_0", "base_color_1", "base_color_2", "roughness", "metallic"} <= set(names)
    normals = torch.from_numpy(__import__("numpy").stack([v["nx"], v["ny"], v["nz"]], 1))
    torch.testing.assert_close(normals, g["normals"] @ R, rtol=0, atol=1e-6)  # turned back into the data frame
    torch.testing.assert_close(torch.from_numpy(__import__("numpy").asarray(v["metallic"])), g["metallic"][:, 0])
    assert read_ply(path)["means"].shape == (n, 3)  # still a standard 3DGS PLY


def test_cli_train_relight_render_and_relit_eval(tmp_path):
    """recon train --method r3dg (both stages, briefly), then recon render --env and recon eval --env."""
    import subprocess
    import sys

    import numpy as np

    from recon.render.envmap import write_envmap

    recon = [sys.executable, "-m", "recon.cli"]
    r = subprocess.run(recon + ["train", "--method", "r3dg", "--max-steps", "10", "--output-dir", str(tmp_path), "--trainer.lpips", "none",
                                "--trainer.no-eval-at-end", "--model.init-num-points", "2000", "--model.samples", "16"],
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    run_dir = r.stdout.strip().splitlines()[-1]
    sky = np.ones((8, 16, 3), np.float32)
    sky[:4] *= 3.0  # a bright upper half: turning it about +Z changes nothing, tilting would
    env = write_envmap(tmp_path / "sky.hdr", sky)
    r = subprocess.run(recon + ["render", run_dir, "--env", str(env)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    frames = sorted((Path(run_dir) / "renders" / "test-sky" / "rgb").glob("*.png"))
    assert frames
    r = subprocess.run(recon + ["eval", run_dir, "--env", str(env), "--lpips", "none", "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    out = __import__("json").loads(r.stdout)
    assert out["envmap"].endswith("sky.hdr") and math.isfinite(out["psnr"])


def test_viewer_environment_controls_relight_without_retracing():
    method, scene, trainer = _trained(steps=8)
    trainer.train()
    names = [o["name"] for o in method.viewer_options()]
    assert names == ["environment", "env_file", "env_rotation"]
    cam = scene.cameras[int(scene.split("test")[0]) : int(scene.split("test")[0]) + 1]
    learnt = method.render(cam)["rgb"]
    sun = method.render(cam, environment="procedural sun")["rgb"]
    turned = method.render(cam, environment="procedural sun", env_rotation=120.0)["rgb"]
    assert not torch.equal(learnt, sun) and not torch.equal(sun, turned)
    import pytest

    from recon.errors import ReconError

    with pytest.raises(ReconError, match="environment map not found"):
        method.render(cam, environment="file", env_file="/nonexistent/sky.hdr")
