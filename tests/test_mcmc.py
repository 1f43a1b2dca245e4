"""MCMC densification on CPU: torch twins of gsplat's CUDA-only relocation and covariance ops."""

import dataclasses
import math

import pytest
import torch

from recon.engine import mcmc_ops


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
    new_o, new_s = mcmc_ops.compute_relocation(o, s, n, b)
    for j in range(64):
        ro, rs = _relocation_loop(float(o[j]), s[j], int(n[j]), b)
        assert abs(float(new_o[j]) - ro) < 1e-12
        assert torch.allclose(new_s[j], rs, rtol=1e-9)
    # N copies composited together have the original opacity.
    assert torch.allclose(1 - (1 - new_o) ** n.double(), o, atol=1e-12)
    # One copy: nothing changes.
    o1, s1 = mcmc_ops.compute_relocation(o, s, torch.ones_like(n), b)
    assert torch.allclose(o1, o) and torch.allclose(s1, s)


def test_covariance_twin_matches_gsplat_torch_reference():
    from gsplat.cuda._torch_impl import _quat_scale_to_covar_preci

    g = torch.Generator().manual_seed(1)
    q = torch.randn(20, 4, generator=g)
    s = torch.rand(20, 3, generator=g) + 0.05
    c, p = mcmc_ops.quat_scale_to_covar_preci(q, s)
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
    c = mcmc_ops.compute_relocation(o.cpu(), s.cpu(), n.cpu(), b.cpu())
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
