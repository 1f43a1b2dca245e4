"""MCMC densification on CPU: torch twins of gsplat's CUDA-only relocation and covariance ops, through a strategy subclass."""

import dataclasses
import math

import pytest
import torch

from recon.gaussians import mcmc


def _binoms(n_max=51):
    b = torch.zeros(n_max, n_max)
    for n in range(n_max):
        for k in range(n + 1):
            b[n, k] = math.comb(n, k)
    return b


def _relocation_loop(o, s, n, binoms):
    """Literal transcription of eq. 9 (one Gaussian at a time), in float64."""
    new_o = 1.0 - (1.0 - o) ** (1.0 / n)
    denom = 0.0
    for i in range(1, n + 1):
        for k in range(i):
            denom += float(binoms[i - 1, k]) * ((-1.0) ** k / math.sqrt(k + 1)) * new_o ** (k + 1)
    return new_o, s * (o / denom)


def test_relocation_matches_the_formula_and_preserves_opacity():
    g = torch.Generator().manual_seed(0)
    o = torch.rand(64, generator=g, dtype=torch.float64) * 0.98 + 0.01
    s = torch.rand(64, 3, generator=g, dtype=torch.float64) + 0.1
    n = torch.randint(1, 12, (64,), generator=g)
    b = _binoms().double()
    new_o, new_s = mcmc.compute_relocation(o, s, n, b)
    for j in range(64):
        ro, rs = _relocation_loop(float(o[j]), s[j], int(n[j]), b)
        assert abs(float(new_o[j]) - ro) < 1e-12
        assert torch.allclose(new_s[j], rs, rtol=1e-9)
    # N copies composited together have the original opacity.
    assert torch.allclose(1 - (1 - new_o) ** n.double(), o, atol=1e-12)
    # One copy: nothing changes.
    o1, s1 = mcmc.compute_relocation(o, s, torch.ones_like(n), b)
    assert torch.allclose(o1, o) and torch.allclose(s1, s)


def test_covariance_twin_matches_gsplat_torch_reference():
    from gsplat.cuda._torch_impl import _quat_scale_to_covar_preci

    g = torch.Generator().manual_seed(1)
    q = torch.randn(20, 4, generator=g)
    s = torch.rand(20, 3, generator=g) + 0.05
    c, p = mcmc.quat_scale_to_covar_preci(q, s)
    c_ref, p_ref = _quat_scale_to_covar_preci(q, s, compute_covar=True, compute_preci=True, triu=False)
    assert torch.allclose(c, c_ref, atol=1e-6) and torch.allclose(p, p_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (gsplat's relocation kernel)")
def test_relocation_parity_with_gsplat_cuda():
    from gsplat.relocation import compute_relocation

    o = torch.rand(1000, device="cuda") * 0.98 + 0.01
    s = torch.rand(1000, 3, device="cuda") + 0.1
    n = torch.randint(1, 40, (1000,), device="cuda")
    b = _binoms().cuda()
    a = compute_relocation(o.clone(), s.clone(), n.clone().float(), b)
    c = mcmc.compute_relocation(o.cpu(), s.cpu(), n.cpu(), b.cpu())
    assert torch.allclose(a[0].cpu(), c[0], atol=1e-5) and torch.allclose(a[1].cpu(), c[1], rtol=1e-4)


def test_mcmc_training_runs_on_cpu_and_respects_the_cap(tmp_path):
    from recon.data.normalize import compute_normalization, normalize_scene
    from recon.engine.trainer import Trainer, TrainerConfig
    from recon.methods import get_method
    from tests.helpers import blob_scene

    scene = blob_scene()
    scene = normalize_scene(scene, compute_normalization(scene))
    cls = get_method("gs")
    cfg = cls.config_cls(sh_degree=1)
    cfg.densify = dataclasses.replace(cfg.densify, strategy="mcmc", max_gaussians=600, refine_start=0.1, refine_stop=0.9, refine_every=10)
    m = cls(cfg, scene, 100, "cpu")
    m.setup(scene)
    assert m.splats["means"].shape[0] == 400
    Trainer(TrainerConfig(max_steps=100, image_every=0, eval_at_end=False), m, scene, tmp_path / "run").train()
    n = m.splats["means"].shape[0]
    assert 400 < n <= 600
    # The CPU path is a strategy subclass: gsplat's own module still has its CUDA functions.
    import gsplat.relocation
    import gsplat.strategy.ops as ops

    assert ops.compute_relocation is gsplat.relocation.compute_relocation


def _params_and_adam(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = torch.nn.ParameterDict({
        "means": torch.randn(n, 3, generator=g), "scales": torch.randn(n, 3, generator=g) - 3,
        "quats": torch.randn(n, 4, generator=g), "opacities": torch.randn(n, generator=g) * 3,
        "extra": torch.randn(n, 2, generator=g),  # a method's own attribute travels with its Gaussian
    })  # fmt: skip
    opts = {k: torch.optim.Adam([{"params": [p], "lr": 1e-3, "name": k}]) for k, p in params.items()}
    for p in params.values():
        p.grad = torch.ones_like(p)
    for o in opts.values():
        o.step()
    return params, opts


def test_relocate_moves_dead_gaussians_onto_live_ones_and_keeps_their_opacity():
    params, opts = _params_and_adam()
    before = {k: v.detach().clone() for k, v in params.items()}
    dead = torch.sigmoid(before["opacities"]) < 0.3
    assert 0 < int(dead.sum()) < 40
    torch.manual_seed(0)
    mcmc.relocate(params, opts, dead, _binoms(), 0.005)
    o_new = torch.sigmoid(params["opacities"].detach())
    donors = [j for j in range(40) if not dead[j] and not torch.equal(params["scales"][j], before["scales"][j])]
    assert donors, "no live Gaussian received copies"
    for j in torch.nonzero(dead).flatten().tolist():
        # Each dead row is now a copy of a donor: same position and extra attribute, the donor's new opacity.
        src = [d for d in donors if torch.equal(params["means"][j], before["means"][d])]
        assert src and torch.equal(params["extra"][j], before["extra"][src[0]]) and o_new[j] == o_new[src[0]]
    for k, opt in opts.items():
        assert opt.param_groups[0]["params"][0] is params[k]
        assert (opt.state[params[k]]["exp_avg"][donors] == 0).all()
    # Copies composite to the donor's opacity: 1 - (1 - o_new)^(copies) = o_old.
    d = donors[0]
    copies = 1 + sum(torch.equal(params["means"][j], before["means"][d]) for j in torch.nonzero(dead).flatten().tolist())
    assert torch.allclose(1 - (1 - o_new[d]) ** copies, torch.sigmoid(before["opacities"][d]), atol=1e-5)


def test_sample_add_appends_copies_with_fresh_moments():
    params, opts = _params_and_adam()
    torch.manual_seed(0)
    mcmc.sample_add(params, opts, 5, _binoms(), 0.005)
    assert all(p.shape[0] == 45 for p in params.values())
    for k, opt in opts.items():
        state = opt.state[params[k]]
        assert state["exp_avg"].shape[0] == 45 and (state["exp_avg"][40:] == 0).all() and (state["exp_avg"][:40] != 0).any()
