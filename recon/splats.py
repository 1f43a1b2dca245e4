"""Gaussian parameters shared by every Gaussian method: initialisation, optimizers, densification, SH helpers.

Parameters live in an ``nn.ParameterDict`` with gsplat's names and pre-activation values, so gsplat's strategies
(which rewrite the dict and the Adam moments together) work unchanged:

- ``means`` [N, 3]; ``scales`` [N, 3] log; ``quats`` [N, 4] wxyz (unnormalised); ``opacities`` [N] logit;
- ``sh0`` [N, 1, 3] and ``shN`` [N, K-1, 3] spherical-harmonic coefficients (K = (degree+1)²);
- methods add their own per-Gaussian tensors (a dynamic score, normals, BRDF parameters) under other names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from recon.render.sh import SH_C0  # noqa: E402  (one definition of the constant)


def rgb_to_sh(rgb: Tensor) -> Tensor:
    """DC SH coefficient that renders as ``rgb`` (gsplat/3DGS convention: colour = SH + 0.5)."""
    return (rgb - 0.5) / SH_C0


def sh_to_rgb(sh0: Tensor) -> Tensor:
    return sh0 * SH_C0 + 0.5


def knn_mean_distance(points: Tensor, k: int = 3) -> Tensor:
    """Root-mean-square distance from each point to its ``k`` nearest neighbours (simple-knn's job in 3DGS).

    A k-d tree (scipy) keeps this O(N log N): 100k points take well under a second on one core, where a dense
    distance matrix would take minutes.

    Args:
        points: [N, 3].

    Returns:
        [N] distances (on ``points``' device).
    """
    from scipy.spatial import cKDTree

    n = points.shape[0]
    if n <= 1:
        return torch.ones(n, device=points.device)
    k = min(k, n - 1)
    pts = points.detach().double().cpu().numpy()
    dist, _ = cKDTree(pts).query(pts, k=k + 1)  # the first neighbour is the point itself
    d = torch.from_numpy(np.sqrt((dist[:, 1:] ** 2).mean(1))).float()
    return d.to(points.device)


def init_splats(
    points: Tensor,
    colors: Tensor,
    sh_degree: int,
    init_opacity: float = 0.1,
    init_scale: float = 1.0,
    extra: dict[str, Tensor] | None = None,
) -> nn.ParameterDict:
    """Gaussians at ``points`` with isotropic scales from the 3-NN distance and colours as DC SH coefficients.

    Args:
        points: [N, 3] positions; colors: [N, 3] in [0, 1].
        sh_degree: maximum SH degree (coefficients for higher bands start at zero).
        extra: additional per-Gaussian tensors [N, ...] to make parameters of.
    """
    n = points.shape[0]
    dist = knn_mean_distance(points).clamp_min(1e-7)
    scales = torch.log(dist * init_scale)[:, None].repeat(1, 3)
    quats = torch.zeros(n, 4, device=points.device)
    quats[:, 0] = 1.0
    opacities = torch.logit(torch.full((n,), init_opacity, device=points.device))
    k = (sh_degree + 1) ** 2
    sh0 = rgb_to_sh(colors.clamp(0, 1))[:, None, :]
    shN = torch.zeros(n, k - 1, 3, device=points.device)
    params = {"means": points, "scales": scales, "quats": quats, "opacities": opacities, "sh0": sh0, "shN": shN}
    params.update(extra or {})
    return nn.ParameterDict({name: nn.Parameter(t.contiguous().float()) for name, t in params.items()})


def make_adam(splats: nn.ParameterDict, lrs: dict[str, float]) -> dict[str, torch.optim.Optimizer]:
    """One Adam per parameter (the layout gsplat's strategies expect), eps 1e-15 as in 3DGS."""
    return {name: torch.optim.Adam([{"params": [p], "lr": lrs[name], "name": name}], eps=1e-15) for name, p in splats.items()}


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def resize_like(splats: nn.ParameterDict, state_dict: dict[str, Tensor], prefix: str) -> None:
    """Replace parameters with empty ones of the checkpoint's shapes (the Gaussian count changes in training)."""
    for name in list(splats.keys()):
        key = prefix + name
        if key in state_dict and state_dict[key].shape != splats[name].shape:
            splats[name] = nn.Parameter(torch.empty_like(state_dict[key], device=splats[name].device))


def random_points(n: int, center: Tensor, half_extent: Tensor | float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` uniform points in a box (centre [3], half-sizes [3] or a scalar) and random colours (the 3DGS
    initialisation for data without points)."""
    g = torch.Generator().manual_seed(seed)
    pts = (torch.rand(n, 3, generator=g) * 2 - 1) * torch.as_tensor(half_extent).cpu() + center.cpu()
    cols = torch.rand(n, 3, generator=g)
    return pts, cols


@dataclass
class DensifyConfig:
    """Density control through gsplat's strategies; step values are fractions of the run's length so that short CPU
    runs and long GPU runs densify over the same part of training."""

    strategy: str = "default"
    """``default``: 3DGS adaptive density control (clone/split/prune, opacity reset); ``mcmc``: 3DGS-MCMC
    (relocation of dead Gaussians, growth up to ``max_gaussians``, position noise, opacity/scale regularisers)."""
    grow_grad2d: float = 0.0002
    """Split/duplicate Gaussians whose mean 2D positional gradient exceeds this."""
    grow_scale3d: float = 0.01
    """Duplicate below, split above this 3D scale (× scene scale)."""
    prune_opa: float = 0.005
    """Prune Gaussians less opaque than this."""
    prune_scale3d: float = 0.1
    """Prune Gaussians larger than this (× scene scale) after the first opacity reset."""
    refine_start: float = 0.07
    """Start refining after this fraction of the steps (3DGS: 500 of 7000)."""
    refine_stop: float = 0.5
    """Stop refining after this fraction of the steps."""
    refine_every: int = 100
    """Refine every N steps."""
    reset_every: int = 3000
    """Reset opacities every N steps (0: never)."""
    absgrad: bool = False
    """Use the absolute 2D gradient (AbsGS); pair with grow_grad2d ≈ 0.0008."""
    max_gaussians: int = 1_000_000
    """Cap on the number of Gaussians (``default``: the least opaque are pruned beyond it; ``mcmc``: its cap_max)."""
    mcmc_noise_lr: float = 5e5
    """MCMC: scale of the position noise (× the means' learning rate)."""
    mcmc_opacity_reg: float = 0.01
    """MCMC: weight of the mean-opacity regulariser."""
    mcmc_scale_reg: float = 0.01
    """MCMC: weight of the mean-scale regulariser."""


class Densifier:
    """Thin wrapper around gsplat's ``DefaultStrategy`` / ``MCMCStrategy`` with a Gaussian-count cap and
    checkpointable state. MCMC's CUDA-only ops get torch twins on CPU (:mod:`recon.engine.mcmc_ops`)."""

    def __init__(self, cfg: DensifyConfig, scene_scale: float, max_steps: int):
        from gsplat.strategy import DefaultStrategy, MCMCStrategy

        self.cfg = cfg
        start = int(cfg.refine_start * max_steps)
        stop = int(cfg.refine_stop * max_steps)
        if cfg.strategy == "mcmc":
            from recon.engine import mcmc_ops

            mcmc_ops.install()
            self.strategy = MCMCStrategy(cap_max=cfg.max_gaussians, noise_lr=cfg.mcmc_noise_lr, refine_start_iter=start,
                                         refine_stop_iter=stop, refine_every=cfg.refine_every, min_opacity=cfg.prune_opa)
            self.state = self.strategy.initialize_state()
            return
        if cfg.strategy != "default":
            from recon.errors import ReconError

            raise ReconError(f"unknown densification strategy {cfg.strategy!r} (default, mcmc)")
        self.strategy = DefaultStrategy(
            prune_opa=cfg.prune_opa,
            grow_grad2d=cfg.grow_grad2d,
            grow_scale3d=cfg.grow_scale3d,
            prune_scale3d=cfg.prune_scale3d,
            refine_start_iter=start,
            refine_stop_iter=stop,
            refine_every=cfg.refine_every,
            reset_every=cfg.reset_every if cfg.reset_every > 0 else max_steps * 10,
            absgrad=cfg.absgrad,
            verbose=False,
        )
        self.state = self.strategy.initialize_state(scene_scale=scene_scale)

    def check(self, splats, optimizers) -> None:
        self.strategy.check_sanity(splats, optimizers)

    @property
    def is_mcmc(self) -> bool:
        return self.cfg.strategy == "mcmc"

    def regularizer(self, splats) -> Tensor | float:
        """MCMC's opacity and scale regularisers (0 for the default strategy)."""
        if not self.is_mcmc:
            return 0.0
        return self.cfg.mcmc_opacity_reg * torch.sigmoid(splats["opacities"]).mean() + self.cfg.mcmc_scale_reg * torch.exp(splats["scales"]).mean()

    def pre_backward(self, splats, optimizers, step: int, info: dict) -> None:
        if not self.is_mcmc:
            self.strategy.step_pre_backward(splats, optimizers, self.state, step, info)

    def post_backward(self, splats, optimizers, step: int, info: dict, packed: bool = False, means_lr: float = 0.0) -> None:
        if self.is_mcmc:
            self.strategy.step_post_backward(splats, optimizers, self.state, step, info, lr=means_lr)
            return
        self.strategy.step_post_backward(splats, optimizers, self.state, step, info, packed=packed)
        n = splats["means"].shape[0]
        if n > self.cfg.max_gaussians:
            from gsplat.strategy.ops import remove

            excess = n - self.cfg.max_gaussians
            order = torch.argsort(splats["opacities"].detach())
            mask = torch.zeros(n, dtype=torch.bool, device=splats["means"].device)
            mask[order[:excess]] = True
            remove(splats, optimizers, self.state, mask)

    def state_dict(self) -> dict:
        return {k: v for k, v in self.state.items() if isinstance(v, torch.Tensor) or v is None or isinstance(v, (int, float))}

    def load_state_dict(self, state: dict) -> None:
        self.state.update(state)


# ---------------------------------------------------------------------------- SH rotation (for exports)
def _sh_basis(dirs: Tensor, degree: int) -> Tensor:
    """Real SH basis values [M, (degree+1)²] at unit directions [M, 3], in gsplat/3DGS ordering and signs."""
    from recon.render.sh import _bases

    return torch.stack(_bases(degree, dirs), -1)


def sh_rotation_matrix(rotation: Tensor, degree: int, samples: int = 512) -> Tensor:
    """[K, K] matrix M with ``coeffs_rotated = M @ coeffs`` for a world rotation ``rotation`` [3, 3].

    The rotated function is f'(d) = f(Rᵀ d); each SH band is closed under rotation, so fitting M by least squares
    on well-spread sample directions is exact (up to float precision) and avoids Wigner-D bookkeeping.
    """
    g = torch.Generator().manual_seed(0)
    d = torch.randn(samples, 3, generator=g, dtype=torch.float64)
    d = d / d.norm(dim=1, keepdim=True)
    R = rotation.double()
    Y = _sh_basis(d, degree)  # [M, K]
    Y_src = _sh_basis(d @ R, degree)  # f'(d) = f(R^T d); rows are (R^T d)^T = d^T R
    # Y @ c' = Y_src @ c for all c  =>  c' = pinv(Y) @ Y_src @ c
    return torch.linalg.lstsq(Y, Y_src).solution.float()
