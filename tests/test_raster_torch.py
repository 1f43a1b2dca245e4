"""The pure-torch twin of the C++ kernel (backend="torch") against the dense oracle and against the kernel."""

from __future__ import annotations

import pytest
import torch
from raster_reference import random_scene
from test_raster import _args, _compare

from recon.render.gaussians import rasterize_gaussians


@pytest.mark.parametrize(
    "cfg",
    [dict(mode="RGB+ED"), dict(mode="RGB", sh_degree=2, antialiased=True), dict(mode="D", channels=1)],
    ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()),
)
def test_torch_twin_matches_dense_float64(cfg):
    cfg = dict(cfg)
    channels = cfg.pop("channels", 3)
    scene, W, H = random_scene(n=100, n_cameras=2, sh_degree=cfg.get("sh_degree"), channels=channels, seed=31)
    _compare(scene, W, H, backend="torch", **cfg)


def test_torch_twin_matches_cpu_kernel_float32():
    scene, W, H = random_scene(n=150, n_cameras=2, dtype=torch.float32, width=64, height=48, seed=37)
    outs = {}
    for backend in ("cpu", "torch"):
        out, alphas, meta = rasterize_gaussians(
            *_args(scene), W, H, backgrounds=scene["backgrounds"], render_mode="RGB+D", return_median=True,
            packed=backend == "torch", backend=backend,
        )  # fmt: skip
        grads = torch.autograd.grad(out.sum() + alphas.sum(), [scene[k] for k in ("means", "opacities", "colors")])
        outs[backend] = (out, alphas, meta["render_median"], grads)
    a, b = outs["cpu"], outs["torch"]
    for x, y in zip(a[:3], b[:3]):
        torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)
    for x, y in zip(a[3], b[3]):
        torch.testing.assert_close(x, y, atol=1e-3 * y.abs().max().item(), rtol=1e-3)
