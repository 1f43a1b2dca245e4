"""Image metrics: PSNR and SSIM (also the D-SSIM training loss); LPIPS lives in :mod:`recon.eval.lpips`.

SSIM follows Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), C1 = 0.01², C2 = 0.03², as in 3DGS and
nerfstudio/torchmetrics, computed on valid (un-padded) windows. All functions take images [..., H, W, C] in [0, 1].
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor


def psnr(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Peak signal-to-noise ratio in dB for images in [0, 1].

    Args:
        pred, target: [..., H, W, C].
        mask: optional [..., H, W, 1] weights; the mean squared error is taken over masked pixels.

    Returns:
        [...] PSNR per image.
    """
    err = (pred - target) ** 2
    if mask is None:
        mse = err.mean(dim=(-3, -2, -1))
    else:
        w = mask.expand_as(err)
        mse = (err * w).sum(dim=(-3, -2, -1)) / w.sum(dim=(-3, -2, -1)).clamp_min(1e-8)
    return -10.0 * torch.log10(mse.clamp_min(1e-10))


@functools.lru_cache(maxsize=8)
def gaussian_kernel_1d(size: int, sigma: float, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """[size] normalised 1-D Gaussian centred on the middle tap (computed in float64, then cast)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).to(device=device, dtype=dtype)


def ssim_map(pred: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Per-pixel SSIM over valid windows.

    Args:
        pred, target: [B, H, W, C] (or [H, W, C]).

    Returns:
        [B, H - window + 1, W - window + 1, C] SSIM values.
    """
    squeeze = pred.ndim == 3
    if squeeze:
        pred, target = pred[None], target[None]
    x = pred.permute(0, 3, 1, 2)
    y = target.permute(0, 3, 1, 2)
    c = x.shape[1]
    g = gaussian_kernel_1d(window, sigma, x.device, x.dtype)
    # Separable Gaussian filter: two 1D depthwise convolutions are ~5x cheaper than one 2D one on CPU.
    gh = g.view(1, 1, 1, -1).expand(c, 1, 1, window)
    gv = g.view(1, 1, -1, 1).expand(c, 1, window, 1)

    def blur(t):
        return F.conv2d(F.conv2d(t, gh, groups=c), gv, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    s = s.permute(0, 2, 3, 1)
    return s[0] if squeeze else s


def ssim(pred: Tensor, target: Tensor) -> Tensor:
    """Mean SSIM per image: [..., H, W, C] -> [...] (leading dims flattened into a batch)."""
    lead = pred.shape[:-3]
    p = pred.reshape(-1, *pred.shape[-3:])
    t = target.reshape(-1, *target.shape[-3:])
    return ssim_map(p, t).mean(dim=(1, 2, 3)).reshape(lead)
