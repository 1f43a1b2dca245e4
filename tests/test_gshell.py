"""G-Shell (recon/methods/gshell): the initial shell is a closed sphere, a negative mSDF region opens it along the
expected loop, the sign regulariser acts only across the surface, and a short training run on the open-surface
demo fits its silhouettes better than the sphere it starts from."""

from __future__ import annotations

import math

import torch

from recon.eval.surface import topology


def _method(res: int = 16, max_steps: int = 40):
    from recon.demo import load_demo
    from recon.methods.gshell.model import GShell, GShellConfig

    scene = load_demo("open_surface")
    method = GShell(GShellConfig(grid_res=res), scene, max_steps=max_steps, device="cpu")
    method.setup(scene)
    return method, scene


def test_initial_shell_is_a_closed_sphere_and_an_msdf_cap_opens_it():
    method, _ = _method()
    with torch.no_grad():
        method.msdf.fill_(1.0)
    mesh = method.mesh()
    topo = topology(mesh, min_component_fraction=0.0)
    assert topo["watertight"] and topo["components"] == 1
    centre = method.box_center
    radius = method.config.init_radius * float(method.box_half.min())
    r = torch.as_tensor(mesh.vertices, dtype=torch.float32) - centre
    assert float((r.norm(dim=-1) - radius).abs().max()) < 0.1 * radius
    # cut away the top of the sphere: one boundary loop, at the plane
    verts, _, _, _ = method._grid()
    with torch.no_grad():
        method.msdf.copy_(centre[2] + 0.5 * radius - verts[:, 2])
    topo = topology(method.mesh(), min_component_fraction=0.0)
    assert topo["boundary_loops"] == 1 and topo["non_manifold_edges"] == 0 and not topo["watertight"]
    expected = 2 * math.pi * radius * math.sqrt(1 - 0.25)
    assert abs(topo["boundary_length"] - expected) < 0.15 * expected


def test_sign_regulariser_only_sees_edges_across_the_surface():
    method, _ = _method()
    reg = method._sign_regularizer()
    reg.backward()
    near = method.sdf.grad.abs() > 0
    assert bool(near.any())
    _, _, _, cell = method._grid()
    # only vertices next to the zero set get gradients (within a grid diagonal of it)
    assert float(method.sdf.detach()[near].abs().max()) <= math.sqrt(3) * cell + 1e-5


def test_a_short_run_fits_the_open_surface_silhouettes_better_than_the_sphere(tmp_path):
    from recon.engine.trainer import Trainer, TrainerConfig

    method, scene = _method(res=20, max_steps=80)
    test = int(scene.split("test")[0])
    cam = scene.cameras[[test]]
    gt = torch.from_numpy(scene.image(test)[..., 3] > 0.5)

    def iou() -> float:
        alpha = method.render(cam, outputs=("alpha",))["alpha"][..., 0] > 0.5
        return float((alpha & gt).sum() / (alpha | gt).sum())

    before = iou()
    trainer = Trainer(TrainerConfig(max_steps=80, image_every=0, log_every=40, eval_at_end=False), method, scene, tmp_path)
    trainer.train()
    after = iou()
    assert after > before + 0.03, (before, after)
