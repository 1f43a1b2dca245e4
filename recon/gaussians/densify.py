"""Density control of a Gaussian model: gsplat's strategies behind one small interface with checkpointable state.

What the strategies read from a render (gsplat's ``meta``) is mirrored in :mod:`recon.render.gsplat_meta`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from recon.errors import ReconError

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
    checkpointable state. MCMC runs through :class:`~recon.gaussians.mcmc.AnyDeviceMCMCStrategy`, which takes the
    torch twins of gsplat's CUDA-only ops on CPU tensors.

    Every per-Gaussian tensor in the parameter dict (a method's extra attributes too) is cloned, split, pruned and
    relocated with the Gaussians it belongs to: gsplat's ops rewrite every entry of the dict."""

    def __init__(self, cfg: DensifyConfig, scene_scale: float, max_steps: int):
        from gsplat.strategy import DefaultStrategy

        self.cfg = cfg
        start = int(cfg.refine_start * max_steps)
        stop = int(cfg.refine_stop * max_steps)
        if cfg.strategy == "mcmc":
            from recon.gaussians.mcmc import AnyDeviceMCMCStrategy  # (imports gsplat: only when asked for)

            self.strategy = AnyDeviceMCMCStrategy(cap_max=cfg.max_gaussians, noise_lr=cfg.mcmc_noise_lr, refine_start_iter=start,
                                         refine_stop_iter=stop, refine_every=cfg.refine_every, min_opacity=cfg.prune_opa)
            self.state = self.strategy.initialize_state()
            return
        if cfg.strategy != "default":
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
