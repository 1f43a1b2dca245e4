"""Where a fixed camera's video changes: the per-pixel temporal standard deviation, blurred and thresholded.

This is the statistic of Swift4D's pseudo ground truth (gaussian_methods.md section 1.2: std of each camera's frames
over the clip, averaged over RGB, blurred with a 31x31 Gaussian at N3DV's 1352-px width, thresholded at 0.02), and
the evaluator's stand-in for dynamic masks on multi-view video that ships none (computed there on the test camera's
ground-truth frames only). Both must use the same numbers, so they live here once.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from recon.eval.metrics import gaussian_kernel_1d

#: The reference blur: a 31×31 Gaussian kernel (OpenCV sigma for ksize 31 is 5.0) at N3DV's half-res width 1352.
REFERENCE_KSIZE = 31
REFERENCE_WIDTH = 1352


def blur_kernel_size(width: int, ref_ksize: int = REFERENCE_KSIZE, ref_width: int = REFERENCE_WIDTH) -> int:
    """Odd kernel size that covers the same fraction of an image ``width`` px wide as ``ref_ksize`` at
    ``ref_width`` (at least 3; 1 disables the blur only if ``ref_ksize`` is 1)."""
    if ref_ksize <= 1:
        return 1
    k = int(round(ref_ksize * width / ref_width))
    k = max(3, k)
    return k if k % 2 == 1 else k + 1


def gaussian_blur(img: Tensor, ksize: int) -> Tensor:
    """Separable Gaussian blur of [..., H, W] maps with an odd ``ksize`` and OpenCV's default sigma for it
    (0.3·((k-1)/2 - 1) + 0.8) and reflect-101 borders (OpenCV's default)."""
    if ksize <= 1:
        return img
    sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    k = gaussian_kernel_1d(ksize, sigma, img.device, img.dtype)
    shape = img.shape
    h, w = shape[-2:]
    t = img.reshape(-1, 1, h, w)
    pad = ksize // 2
    # reflect padding needs pad < size; small images fall back to replicate.
    mode = "reflect" if pad < min(h, w) else "replicate"
    t = F.conv2d(F.pad(t, (pad, pad, 0, 0), mode=mode), k.view(1, 1, 1, -1))
    t = F.conv2d(F.pad(t, (0, 0, pad, pad), mode=mode), k.view(1, 1, -1, 1))
    return t.reshape(shape)


def temporal_std(frames: Iterable[np.ndarray | Tensor]) -> Tensor:
    """Per-pixel standard deviation over time of one camera's frames, averaged over RGB.

    Streams the frames (running sums in float64), so a 300-frame clip never sits in memory at once.

    Args:
        frames: iterable of [H, W, C] images in [0, 1] (C >= 3; only RGB is used).

    Returns:
        [H, W] float32 std (population std, i.e. over the T frames, not T - 1).
    """
    s = s2 = None
    n = 0
    for f in frames:
        f = torch.as_tensor(np.asarray(f) if not torch.is_tensor(f) else f)[..., :3].double()
        if s is None:
            s, s2 = torch.zeros_like(f), torch.zeros_like(f)
        s += f
        s2 += f * f
        n += 1
    if n == 0:
        raise ValueError("no frames")
    mean = s / n
    var = (s2 / n - mean * mean).clamp_min(0.0)
    return var.sqrt().mean(-1).float()


def change_mask(deviation: Tensor, threshold: float, ksize: int) -> Tensor:
    """Blur a per-pixel deviation map [..., H, W] and threshold it (>= threshold is dynamic) -> bool [..., H, W]."""
    return gaussian_blur(deviation.float(), ksize) >= threshold


def temporal_std_mask(frames: Iterable[np.ndarray | Tensor], threshold: float = 0.02, ksize: int = 1) -> Tensor:
    """Swift4D's pseudo ground truth for one fixed camera: bool [H, W], True where the pixel changes over time."""
    return change_mask(temporal_std(frames), threshold, ksize)
