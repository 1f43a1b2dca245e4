"""Dynamic-region metrics: PSNR / SSIM inside and outside the part of each evaluation image that shows motion.

A dynamic scene's whole-image PSNR is dominated by its static background (the moving part of a multi-view video is
often ~10 % of the pixels), so a method that blurs the thing that moves can still score well. Users of dynamic
methods judge them by the moving part; so does :func:`recon.eval.evaluate.evaluate`, with the regions found here:

1. **ground truth** - the data's own per-frame dynamic masks (the built-in ``dynamic`` scene ships
   ``ground_truth["dynamic_mask"]``, [N, H, W] bool: pixels whose colour depends on moving geometry);
2. **temporal change** - multi-view video without masks: the evaluated camera's own temporal std over its
   ground-truth frames of the split, blurred and thresholded exactly as Swift4D's change masks are
   (:mod:`recon.data.motion`; one mask per camera, the same at every time). Nothing rendered enters it, so every
   method is graded on the same pixels;
3. otherwise (monocular video such as D-NeRF: one moving camera, one frame per time) there is no region a method
   could not have influenced, and the metrics say why instead.

How the numbers pool: a region's PSNR is that of the mean squared error over *all* its pixels in the set (an image,
a time, or the whole split), not the mean of per-image PSNRs, so frames where the moving part covers a handful of
pixels do not swing the result. SSIM is the mean of the per-pixel SSIM map over the region's pixels (the map's
valid windows, so the region is cropped by the window's half-width).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from recon.data.motion import blur_kernel_size, temporal_std_mask
from recon.data.scene import SceneData
from recon.eval.metrics import ssim_map

#: Threshold and blur of the temporal-change regions: Swift4D's γ and its reference blur (scaled to the width).
CHANGE_THRESHOLD = 0.02
_SSIM_WINDOW = 11


@dataclass
class Regions:
    """Per evaluated frame index, a bool [H, W] mask of its dynamic pixels, and where the masks came from."""

    masks: dict[int, Tensor]
    source: str


def dynamic_regions(scene: SceneData, indices) -> tuple[Regions | None, str]:
    """The dynamic region of every frame in ``indices`` (see the module docstring for the sources).

    Returns:
        (regions, "") or (None, why there are none).
    """
    indices = [int(i) for i in indices]
    if not scene.is_dynamic:
        return None, "the run has no time axis (static data): there is no moving part to measure"
    gt = scene.ground_truth.get("dynamic_mask") if scene.ground_truth else None
    if gt is not None:
        gt = np.asarray(gt)
        return Regions({i: torch.from_numpy(gt[i].astype(bool)) for i in indices}, "ground-truth dynamic masks"), ""
    if scene.camera_ids is None:
        return None, "no dynamic masks in the data and no fixed camera (monocular video): no region to measure"
    by_camera: dict[int, list[int]] = {}
    for i in indices:
        by_camera.setdefault(int(scene.camera_ids[i]), []).append(i)
    if max(len(v) for v in by_camera.values()) < 2:
        return None, "no dynamic masks in the data and one frame per evaluated camera: no temporal change to measure"
    masks = {}
    for cam, frames in by_camera.items():
        width = int(scene.cameras.widths[frames[0]])
        m = temporal_std_mask((scene.image_rgb(i) for i in frames), CHANGE_THRESHOLD, blur_kernel_size(width))
        masks.update({i: m for i in frames})
    return Regions(masks, "temporal change of each test camera's ground-truth frames (std >= 0.02, blurred)"), ""


@dataclass
class RegionSums:
    """Running sums of one set of images: squared error and SSIM over the dynamic and the static pixels."""

    sse: list[float] = field(default_factory=lambda: [0.0, 0.0])  # [dynamic, static] sum of per-pixel MSE (RGB mean)
    pixels: list[int] = field(default_factory=lambda: [0, 0])
    ssim: list[float] = field(default_factory=lambda: [0.0, 0.0])
    ssim_pixels: list[int] = field(default_factory=lambda: [0, 0])

    def add(self, other: "RegionSums") -> None:
        for name in ("sse", "pixels", "ssim", "ssim_pixels"):
            a, b = getattr(self, name), getattr(other, name)
            for k in range(2):
                a[k] += b[k]

    def summary(self) -> dict[str, float | None]:
        """``psnr_dynamic``, ``ssim_dynamic``, ``psnr_static``, ``ssim_static`` (None where the region is empty)
        and ``dynamic_share`` (the region's share of the pixels)."""
        out: dict[str, float | None] = {}
        for k, name in enumerate(("dynamic", "static")):
            n = self.pixels[k]
            out[f"psnr_{name}"] = -10.0 * math.log10(max(self.sse[k] / n, 1e-10)) if n else None
            out[f"ssim_{name}"] = self.ssim[k] / self.ssim_pixels[k] if self.ssim_pixels[k] else None
        total = self.pixels[0] + self.pixels[1]
        out["dynamic_share"] = self.pixels[0] / total if total else None
        return out


def region_sums(pred: Tensor, target: Tensor, mask: Tensor) -> RegionSums:
    """Sums of one image.

    Args:
        pred, target: [H, W, 3] in [0, 1].
        mask: bool [H, W], True on dynamic pixels.
    """
    mask = mask.to(pred.device).bool()
    err = (pred.float() - target.float()).square().mean(-1)  # [H, W]
    s = ssim_map(pred.float(), target.float(), window=_SSIM_WINDOW).mean(-1)  # [H - 10, W - 10]
    r = _SSIM_WINDOW // 2
    inner = mask[r : mask.shape[0] - r, r : mask.shape[1] - r]
    sums = RegionSums()
    for k, m in enumerate((mask, ~mask)):
        sums.sse[k] = float(err[m].sum())
        sums.pixels[k] = int(m.sum())
    for k, m in enumerate((inner, ~inner)):
        sums.ssim[k] = float(s[m].sum())
        sums.ssim_pixels[k] = int(m.sum())
    return sums

