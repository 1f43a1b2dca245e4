"""CPU rasterizer (C++ kernel + C++ projection) against the dense brute-force oracle in tests/raster_reference.py.

Gradients are compared analytic-vs-analytic (oracle autograd vs our hand-written backward) in float64, which is
exact up to rounding, so the alpha-skip / early-stop discontinuities cannot make the comparison flaky: both sides
take the same discrete decisions for the same inputs.
"""

from __future__ import annotations

import pytest
import torch
from raster_reference import random_scene, rasterize_dense

from recon.render.gaussians import project_gaussians, rasterize_gaussians

PARAMS = ("means", "quats", "scales", "opacities", "colors", "backgrounds")


def _args(s):
    return [s[k] for k in ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks")]


def _ref_output(ref, mode):
    if mode == "RGB":
        return ref["colors"]
    if mode == "D":
        return ref["depth_acc"]
    if mode == "ED":
        return ref["depth_exp"]
    if mode == "RGB+D":
        return torch.cat([ref["colors"], ref["depth_acc"]], -1)
    return torch.cat([ref["colors"], ref["depth_exp"]], -1)


def _compare(scene, W, H, *, backend="cpu", mode="RGB+ED", sh_degree=None, antialiased=False, radius_clip=0.0,
             tile_size=16, use_bg=True, rtol=1e-3, seed=0):  # fmt: skip
    s = scene
    bg = s["backgrounds"] if (use_bg and mode not in ("D", "ED")) else None
    out, alphas, meta = rasterize_gaussians(
        *_args(s), W, H, sh_degree=sh_degree, backgrounds=bg, render_mode=mode, return_median=True,
        rasterize_mode="antialiased" if antialiased else "classic", radius_clip=radius_clip, tile_size=tile_size,
        backend=backend,
    )  # fmt: skip
    ref = rasterize_dense(
        *_args(s), W, H, sh_degree=sh_degree, backgrounds=bg, antialiased=antialiased, radius_clip=radius_clip
    )
    ref_out = _ref_output(ref, mode)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=0)
    torch.testing.assert_close(alphas, ref["alphas"], atol=1e-5, rtol=0)
    torch.testing.assert_close(meta["render_median"], ref["median"], atol=1e-5, rtol=0)

    g = torch.Generator().manual_seed(seed + 1)
    w_out = torch.randn(out.shape, generator=g, dtype=out.dtype)
    w_a = torch.randn(alphas.shape, generator=g, dtype=out.dtype)
    w_m = torch.randn(alphas.shape, generator=g, dtype=out.dtype)
    names = [k for k in PARAMS if k != "backgrounds" or bg is not None]
    if mode in ("D", "ED"):
        names.remove("colors")
    inputs = [s[k] for k in names]
    ours = torch.autograd.grad(
        (out * w_out).sum() + (alphas * w_a).sum() + (meta["render_median"] * w_m).sum(), inputs
    )
    theirs = torch.autograd.grad(
        (ref_out * w_out).sum() + (ref["alphas"] * w_a).sum() + (ref["median"] * w_m).sum(), inputs
    )
    for name, a, b in zip(names, ours, theirs):
        scale = b.abs().max().clamp(min=1e-12)
        err = ((a - b).abs().max() / scale).item()
        assert err < rtol, f"{backend} d/d{name}: max rel err {err:.2e}"
    return out, alphas, meta


@pytest.mark.parametrize(
    "cfg",
    [
        dict(mode="RGB+ED"),
        dict(mode="RGB+D", antialiased=True),
        dict(mode="RGB", sh_degree=3),
        dict(mode="RGB", sh_degree=1, tile_size=13),  # tile not a multiple of the 8-lane chunk
        dict(mode="D"),
        dict(mode="ED", radius_clip=1.5),
        dict(mode="RGB", channels=1),
        dict(mode="RGB+ED", channels=5, tile_size=8),
    ],
    ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()),
)
def test_cpu_matches_dense_float64(cfg):
    cfg = dict(cfg)
    channels = cfg.pop("channels", 3)
    scene, W, H = random_scene(n=110, n_cameras=2, sh_degree=cfg.get("sh_degree"), channels=channels, seed=3)
    _compare(scene, W, H, **cfg)


def test_scene_has_the_awkward_cases():
    """The oracle scene really contains culled, tied and huge Gaussians, so the parity tests exercise them."""
    scene, W, H = random_scene(n=110, n_cameras=2, seed=3)
    with torch.no_grad():
        radii, _, depths, _, _, _ = project_gaussians(
            scene["means"], scene["quats"], scene["scales"], scene["opacities"], scene["viewmats"], scene["Ks"], W, H
        )
    vis = (radii[0] > 0).all(-1)
    assert (~vis).sum() >= 10  # behind camera / off screen
    tied = depths[0][vis]
    assert (tied.unsqueeze(0) == tied.unsqueeze(1)).sum() > vis.sum()  # some visible Gaussians share a depth
    assert radii[0].max() >= 16  # at least one Gaussian spans several tiles


def test_float32_close_to_dense():
    scene, W, H = random_scene(n=110, n_cameras=2, dtype=torch.float32, seed=5)
    out, alphas, _ = rasterize_gaussians(*_args(scene), W, H, backgrounds=scene["backgrounds"], backend="cpu")
    ref = rasterize_dense(*_args(scene), W, H, backgrounds=scene["backgrounds"])
    torch.testing.assert_close(out, ref["colors"], atol=2e-5, rtol=0)
    torch.testing.assert_close(alphas, ref["alphas"], atol=2e-5, rtol=0)


def test_packed_equals_unpacked():
    scene, W, H = random_scene(n=80, n_cameras=2, seed=7)
    res = {}
    for packed in (False, True):
        out, alphas, meta = rasterize_gaussians(
            *_args(scene), W, H, backgrounds=scene["backgrounds"], packed=packed, backend="cpu"
        )
        loss = (out * torch.linspace(0, 1, out.numel(), dtype=out.dtype).reshape(out.shape)).sum() + alphas.sum()
        grads = torch.autograd.grad(loss, [scene[k] for k in PARAMS])
        res[packed] = (out, alphas, grads, meta)
    torch.testing.assert_close(res[True][0], res[False][0])
    torch.testing.assert_close(res[True][1], res[False][1])
    for a, b in zip(res[True][2], res[False][2]):
        torch.testing.assert_close(a, b)
    mp, mu = res[True][3], res[False][3]
    nnz = int(mu["visibility"].sum())
    assert mp["means2d"].shape == (nnz, 2) and mp["radii"].shape == (nnz, 2) and mp["gaussian_ids"].shape == (nnz,)
    assert mu["means2d"].shape == (2, 80, 2) and mu["radii"].shape == (2, 80, 2) and mu["gaussian_ids"] is None


def test_means2d_grad_and_absgrad():
    """meta['means2d'] is a non-leaf that receives the true gradient; absgrad sums |per-pixel gradient|."""
    scene, W, H = random_scene(n=60, n_cameras=1, seed=11)
    out, alphas, meta = rasterize_gaussians(*_args(scene), W, H, absgrad=True, backend="cpu")
    meta["means2d"].retain_grad()
    (out.sum() + alphas.sum()).backward()
    g, ga = meta["means2d"].grad, meta["means2d"].absgrad
    assert g.shape == ga.shape == (1, 60, 2)
    assert (ga >= g.abs() - 1e-9).all() and (ga > g.abs() + 1e-9).any()

    # one pixel: the sum over pixels has a single term, so |grad| == absgrad
    one, _, _ = random_scene(n=5, n_cameras=1, width=1, height=1, seed=12)
    out, alphas, meta = rasterize_gaussians(*_args(one), 1, 1, absgrad=True, backend="cpu")
    meta["means2d"].retain_grad()
    (out * torch.tensor([0.3, -1.0, 2.0], dtype=out.dtype)).sum().backward()
    torch.testing.assert_close(meta["means2d"].absgrad, meta["means2d"].grad.abs())


def test_tile_size_does_not_change_the_image():
    scene, W, H = random_scene(n=100, n_cameras=1, width=50, height=37, seed=13)
    outs = [rasterize_gaussians(*_args(scene), W, H, tile_size=t, backend="cpu")[0] for t in (8, 16, 24)]
    torch.testing.assert_close(outs[0], outs[1], atol=1e-12, rtol=0)
    torch.testing.assert_close(outs[0], outs[2], atol=1e-12, rtol=0)


def test_many_channels():
    """D > 32 takes the heap path of the gradient reduction."""
    scene, W, H = random_scene(n=40, n_cameras=1, channels=40, seed=17)
    _compare(scene, W, H, mode="RGB")


def test_cpp_projection_matches_torch_projection():
    """The fused C++ projection (used when cameras need no gradient) against the torch autograd projection."""
    scene, W, H = random_scene(n=90, n_cameras=2, seed=19)
    keys = ("means", "quats", "scales", "opacities")
    for aa in (False, True):
        outs = {}
        for backend, vm in (("cpu", scene["viewmats"]), ("torch", scene["viewmats"].clone().requires_grad_())):
            out, alphas, meta = rasterize_gaussians(
                *_args(scene)[:5], vm, scene["Ks"], W, H, render_mode="RGB+ED",
                rasterize_mode="antialiased" if aa else "classic", backend=backend,
            )  # fmt: skip
            vis = meta["visibility"]
            loss = (out * torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape).sin()).sum()
            grads = torch.autograd.grad(loss + alphas.sum(), [scene[k] for k in keys])
            outs[backend] = (meta["radii"], meta["means2d"][vis], meta["conics"][vis], meta["depths"][vis], out, grads)
        a, b = outs["cpu"], outs["torch"]
        assert torch.equal(a[0], b[0])
        for x, y in zip(a[1:5], b[1:5]):
            torch.testing.assert_close(x, y)
        for x, y in zip(a[5], b[5]):
            torch.testing.assert_close(x, y)


def test_camera_gradients_flow_on_cpu():
    scene, W, H = random_scene(n=50, n_cameras=1, seed=23)
    vm = scene["viewmats"].clone().requires_grad_()
    out, _, _ = rasterize_gaussians(*_args(scene)[:5], vm, scene["Ks"], W, H, backend="cpu")
    (g,) = torch.autograd.grad(out.sum(), [vm])
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_empty_and_fully_culled():
    scene, W, H = random_scene(n=10, n_cameras=1, seed=29)
    with torch.no_grad():
        scene["means"][:, 2] = -5.0  # everything behind the camera
    bg = torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float64)
    out, alphas, meta = rasterize_gaussians(*_args(scene), W, H, backgrounds=bg, backend="cpu")
    assert (alphas == 0).all() and torch.allclose(out, bg[:, None, None, :].expand_as(out))
    grads = torch.autograd.grad(out.sum(), [scene["means"], scene["opacities"]])
    assert all((g == 0).all() for g in grads)
