"""Pure-torch twins of the two CUDA-only operations gsplat's ``MCMCStrategy`` needs, so MCMC runs on CPU.

gsplat 1.5.3's MCMC relocation (``gsplat.relocation.compute_relocation``, eq. 9 of "3D Gaussian Splatting as Markov
Chain Monte Carlo") and the covariance used for its position noise (``gsplat.quat_scale_to_covar_preci``) call CUDA
kernels. :func:`install` routes CPU tensors to the functions below and leaves CUDA tensors on gsplat's kernels.
``tests/test_mcmc.py`` checks them against closed forms (and against gsplat where CUDA is present).
"""

from __future__ import annotations

import torch
from torch import Tensor

from recon.rotations import quat_to_rotmat


def compute_relocation(opacities: Tensor, scales: Tensor, ratios: Tensor, binoms: Tensor) -> tuple[Tensor, Tensor]:
    """New opacity and scales when one Gaussian is replaced by ``ratios`` copies of itself (MCMC eq. 9).

    The N copies together must render like the original: o_new = 1 - (1 - o)^(1/N), and the scales shrink by
    o / Σ_{i=1..N} Σ_{k=0..i-1} C(i-1, k) (-1)^k o_new^(k+1) / sqrt(k+1).

    Args:
        opacities: [N] activated opacities; scales: [N, 3] activated scales; ratios: [N] copy counts;
        binoms: [n_max, n_max] binomial coefficients (gsplat's table).

    Returns:
        new opacities [N] and new scales [N, 3].
    """
    n_max = binoms.shape[0]
    ratios = ratios.clamp(1, n_max).long()
    new_op = 1.0 - torch.pow(1.0 - opacities, 1.0 / ratios.to(opacities.dtype))
    # Double sum over i in 1..N and k in 0..i-1, vectorised over the (i, k) grid and masked by each Gaussian's N.
    i = torch.arange(1, n_max + 1, device=opacities.device)[:, None]  # [n_max, 1]
    k = torch.arange(n_max, device=opacities.device)[None, :]  # [1, n_max]
    valid = k <= i - 1
    coeff = binoms.to(opacities)[(i - 1).clamp_max(n_max - 1).expand(-1, n_max), k.expand(n_max, -1)] * valid
    sign_sqrt = ((-1.0) ** k) / torch.sqrt(k.to(opacities.dtype) + 1.0)  # [1, n_max]
    powers = new_op[:, None] ** (k + 1).to(opacities.dtype)  # [N, n_max]
    per_i = (coeff * sign_sqrt)[None] * powers[:, None, :]  # [N, n_max(i), n_max(k)]
    per_i = per_i.sum(-1)  # [N, n_max(i)]
    upto = (torch.arange(1, n_max + 1, device=opacities.device)[None, :] <= ratios[:, None]).to(opacities.dtype)
    denom = (per_i * upto).sum(-1)
    new_scales = (opacities / denom)[:, None] * scales
    return new_op, new_scales


def quat_scale_to_covar_preci(quats: Tensor, scales: Tensor, compute_covar: bool = True, compute_preci: bool = True, triu: bool = False):
    """Covariance R S Sᵀ Rᵀ (and its inverse) from wxyz quaternions [N, 4] and scales [N, 3]; gsplat's signature."""
    R = quat_to_rotmat(quats)
    covar = preci = None
    if compute_covar:
        M = R * scales[..., None, :]
        covar = M @ M.transpose(-1, -2)
    if compute_preci:
        M = R * (1.0 / scales)[..., None, :]
        preci = M @ M.transpose(-1, -2)
    if triu:
        idx = torch.triu_indices(3, 3)
        covar = None if covar is None else covar[..., idx[0], idx[1]]
        preci = None if preci is None else preci[..., idx[0], idx[1]]
    return covar, preci


_installed = False


def install() -> None:
    """Route gsplat's strategy ops to the torch twins for CPU tensors (idempotent)."""
    global _installed
    if _installed:
        return
    import gsplat.strategy.ops as ops

    cuda_relocation = ops.compute_relocation
    cuda_covar = ops.quat_scale_to_covar_preci

    def relocation_dispatch(opacities, scales, ratios, binoms):
        if opacities.is_cuda:
            return cuda_relocation(opacities, scales, ratios, binoms)
        return compute_relocation(opacities, scales, ratios, binoms)

    def covar_dispatch(quats, scales, compute_covar=True, compute_preci=True, triu=False):
        if quats.is_cuda:
            return cuda_covar(quats, scales, compute_covar=compute_covar, compute_preci=compute_preci, triu=triu)
        return quat_scale_to_covar_preci(quats, scales, compute_covar, compute_preci, triu)

    ops.compute_relocation = relocation_dispatch
    ops.quat_scale_to_covar_preci = covar_dispatch
    _installed = True
