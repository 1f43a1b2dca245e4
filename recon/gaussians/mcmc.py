"""3DGS-MCMC densification on any device: gsplat's ``MCMCStrategy`` with pure-torch twins of its CUDA-only ops.

gsplat 1.5.3's MCMC relocation (``gsplat.relocation.compute_relocation``, eq. 9 of "3D Gaussian Splatting as Markov
Chain Monte Carlo") and the covariance used for its position noise (``gsplat.quat_scale_to_covar_preci``) call CUDA
kernels. :class:`AnyDeviceMCMCStrategy` keeps gsplat's own code path for CUDA tensors and, for other devices, runs
the same three steps (relocate dead Gaussians, add new ones, perturb positions) with the twins below; gsplat's
modules are left as they are. ``tests/test_mcmc.py`` checks the twins against closed forms (and against gsplat where
CUDA is present).
"""

from __future__ import annotations

from typing import Callable

import torch
from gsplat.strategy import MCMCStrategy
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


class AnyDeviceMCMCStrategy(MCMCStrategy):
    """gsplat's ``MCMCStrategy`` (same settings, state and schedule); on CUDA tensors exactly gsplat's code, on other
    devices the same operations with :func:`compute_relocation` and :func:`quat_scale_to_covar_preci`.

    The random draws (``torch.multinomial`` of the opacities, ``torch.randn_like`` of the means) come in the same
    order as in gsplat, so a seeded CPU run is reproducible."""

    def step_post_backward(self, params, optimizers, state, step: int, info, lr: float):
        if params["means"].is_cuda:
            return super().step_post_backward(params, optimizers, state, step, info, lr)
        state["binoms"] = state["binoms"].to(params["means"].device)
        binoms = state["binoms"]
        if self.refine_start_iter < step < self.refine_stop_iter and step % self.refine_every == 0:
            dead = torch.sigmoid(params["opacities"].flatten()) <= self.min_opacity
            if bool(dead.any()):
                relocate(params, optimizers, dead, binoms, self.min_opacity)
            n_new = max(0, min(self.cap_max, int(1.05 * len(params["means"]))) - len(params["means"]))
            if n_new > 0:
                sample_add(params, optimizers, n_new, binoms, self.min_opacity)
        inject_position_noise(params, lr * self.noise_lr)


def _sample(weights: Tensor, n: int) -> Tensor:
    """``n`` indices drawn with replacement in proportion to ``weights`` [N] (numpy beyond torch's 2^24 limit)."""
    if weights.numel() <= 2**24:
        return torch.multinomial(weights, n, replacement=True)
    import numpy as np

    p = (weights / weights.sum()).detach().cpu().double().numpy()
    return torch.from_numpy(np.random.choice(weights.numel(), size=n, p=p / p.sum())).to(weights.device)


@torch.no_grad()
def rewrite_rows(params, optimizers: dict, param_fn: Callable[[str, Tensor], Tensor], moment_fn: Callable[[Tensor], Tensor]) -> None:
    """Replace every per-Gaussian parameter ``p`` by ``param_fn(name, p)`` and each of its Adam moments ``m`` by
    ``moment_fn(m)`` (the optimizer keeps its step count and now points at the new parameter)."""
    for name in list(params.keys()):
        old = params[name]
        new = torch.nn.Parameter(param_fn(name, old.detach()), requires_grad=old.requires_grad)
        params[name] = new
        opt = optimizers.get(name)
        if opt is None:
            continue
        moments = opt.state.pop(old, {})
        opt.state[new] = {k: v if k == "step" else moment_fn(v) for k, v in moments.items()}
        for group in opt.param_groups:
            group["params"] = [new]


def _relocated(params, idx: Tensor, binoms: Tensor, min_opacity: float) -> tuple[Tensor, Tensor]:
    """Opacity logits and log-scales of the Gaussians ``idx`` [M] (with repeats) once each is shared among its
    copies: one more than the number of times it was drawn."""
    opacities = torch.sigmoid(params["opacities"])
    new_o, new_s = compute_relocation(opacities[idx], torch.exp(params["scales"])[idx], torch.bincount(idx)[idx] + 1, binoms)
    new_o = new_o.clamp(min=min_opacity, max=1.0 - torch.finfo(torch.float32).eps)
    return torch.logit(new_o), torch.log(new_s)


def _donors_rescaled(name: str, p: Tensor, donors: Tensor, logit: Tensor, log_scale: Tensor) -> Tensor:
    """A copy of parameter ``name`` whose ``donors`` rows carry the shared opacity / shrunk scale of
    :func:`_relocated` (other parameters are copied unchanged)."""
    p = p.clone()
    if name == "opacities":
        p[donors] = logit
    elif name == "scales":
        p[donors] = log_scale
    return p


def relocate(params, optimizers: dict, dead: Tensor, binoms: Tensor, min_opacity: float) -> None:
    """Move the ``dead`` [N] bool Gaussians onto live ones drawn by opacity; donors and copies share the donor's
    opacity (MCMC eq. 9) and the donors' Adam moments restart."""
    dead_ids = dead.nonzero(as_tuple=True)[0]
    alive_ids = (~dead).nonzero(as_tuple=True)[0]
    donors = alive_ids[_sample(torch.sigmoid(params["opacities"])[alive_ids].flatten(), len(dead_ids))]
    logit, log_scale = _relocated(params, donors, binoms, min_opacity)

    def param_fn(name: str, p: Tensor) -> Tensor:
        p = _donors_rescaled(name, p, donors, logit, log_scale)
        p[dead_ids] = p[donors]
        return p

    def moment_fn(m: Tensor) -> Tensor:
        m = m.clone()
        m[donors] = 0
        return m

    rewrite_rows(params, optimizers, param_fn, moment_fn)


def sample_add(params, optimizers: dict, n: int, binoms: Tensor, min_opacity: float) -> None:
    """Append ``n`` copies of Gaussians drawn by opacity (their Adam moments start at zero)."""
    donors = _sample(torch.sigmoid(params["opacities"]).flatten(), n)
    logit, log_scale = _relocated(params, donors, binoms, min_opacity)

    def param_fn(name: str, p: Tensor) -> Tensor:
        p = _donors_rescaled(name, p, donors, logit, log_scale)
        return torch.cat([p, p[donors]])

    rewrite_rows(params, optimizers, param_fn, lambda m: torch.cat([m, m.new_zeros((n, *m.shape[1:]))]))


@torch.no_grad()
def inject_position_noise(params, scale: float) -> None:
    """MCMC's exploration noise: Gaussian noise shaped by each covariance, only on nearly transparent Gaussians
    (a steep sigmoid of 1 - opacity around 0.995)."""
    opacities = torch.sigmoid(params["opacities"].flatten())
    covars, _ = quat_scale_to_covar_preci(params["quats"], torch.exp(params["scales"]), compute_preci=False)
    gate = 1 / (1 + torch.exp(-100 * ((1 - opacities) - 0.995)))
    noise = torch.randn_like(params["means"]) * gate[:, None] * scale
    params["means"].add_(torch.einsum("bij,bj->bi", covars, noise))
