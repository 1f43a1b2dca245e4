"""gsplat's DefaultStrategy (1.5.3) runs unchanged on the CPU path, fed by our meta dict."""

from __future__ import annotations

import math

import pytest
import torch
from gsplat.strategy import DefaultStrategy

from recon.render.gaussians import rasterize_gaussians


def _splats(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.cat([(torch.rand(n, 2, generator=g) - 0.5) * 2.0, 3.0 + torch.rand(n, 1, generator=g)], -1)
    scales = torch.full((n, 3), math.log(0.03))
    scales[: n // 2] = math.log(0.3)  # half "large" (split), half "small" (duplicate)
    params = torch.nn.ParameterDict(
        {
            "means": means,
            "scales": scales,
            "quats": torch.randn(n, 4, generator=g),
            "opacities": torch.logit(torch.full((n,), 0.5)),
            "colors": torch.rand(n, 3, generator=g),
        }
    )
    optimizers = {k: torch.optim.Adam([p], lr=1e-3) for k, p in params.items()}
    return params, optimizers


@pytest.mark.parametrize("packed,absgrad", [(False, False), (True, False), (False, True)])
def test_default_strategy_densifies_on_cpu(packed, absgrad):
    W, H = 48, 40
    params, optimizers = _splats()
    strategy = DefaultStrategy(
        refine_start_iter=1, refine_every=2, grow_grad2d=1e-9, grow_scale3d=0.1, prune_opa=1e-4,
        reset_every=1000, absgrad=absgrad, verbose=False,
    )  # fmt: skip
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state(scene_scale=1.0)
    K = torch.tensor([[[50.0, 0, W / 2], [0, 50.0, H / 2], [0, 0, 1]]]).repeat(2, 1, 1)
    views = torch.eye(4)[None].repeat(2, 1, 1)
    views[1, 0, 3] = 0.1  # two cameras per step
    target = torch.rand(2, H, W, 3)
    n0 = len(params["means"])
    for step in range(5):
        out, alphas, info = rasterize_gaussians(
            params["means"], torch.nn.functional.normalize(params["quats"], dim=-1), params["scales"].exp(),
            torch.sigmoid(params["opacities"]), params["colors"], views, K, W, H, packed=packed, absgrad=absgrad,
            backend="cpu",
        )  # fmt: skip
        for key in ("width", "height", "n_cameras", "radii", "gaussian_ids", "means2d"):
            assert key in info
        loss = (out - target).abs().mean()
        strategy.step_pre_backward(params, optimizers, state, step, info)
        loss.backward()
        grad = info["means2d"].absgrad if absgrad else info["means2d"].grad
        assert grad is not None and grad.abs().sum() > 0
        strategy.step_post_backward(params, optimizers, state, step, info, packed=packed)
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
    n1 = len(params["means"])
    # every visible Gaussian had a "high" gradient: small ones duplicated, large ones split (2 refinements)
    assert n1 > n0 * 1.5, (n0, n1)
    assert all(len(p) == n1 for p in params.values())
    assert all(opt.param_groups[0]["params"][0] is params[k] for k, opt in optimizers.items())
