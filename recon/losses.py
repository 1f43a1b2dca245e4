"""Training losses shared by every method."""

from __future__ import annotations

from torch import Tensor

from recon.eval.metrics import ssim_map


def l1(pred: Tensor, target: Tensor) -> Tensor:
    return (pred - target).abs().mean()


def dssim(pred: Tensor, target: Tensor) -> Tensor:
    """Structural dissimilarity 1 - SSIM, averaged over the image(s) [..., H, W, C]."""
    p = pred.reshape(-1, *pred.shape[-3:])
    t = target.reshape(-1, *target.shape[-3:])
    return 1.0 - ssim_map(p, t).mean()


def l1_dssim(pred: Tensor, target: Tensor, ssim_lambda: float = 0.2) -> Tensor:
    """The 3DGS photometric loss: (1 - λ)·L1 + λ·(1 - SSIM), λ = 0.2 (λ = 0: plain L1, SSIM not computed)."""
    if ssim_lambda == 0:
        return l1(pred, target)
    return (1.0 - ssim_lambda) * l1(pred, target) + ssim_lambda * dssim(pred, target)
