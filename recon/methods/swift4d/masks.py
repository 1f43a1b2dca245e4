"""Pseudo ground truth for Swift4D's dynamic score: per-view binary masks of "this pixel changes over time".

Multi-view video (the paper's setting, gaussian_methods.md §1.2): for each fixed training camera, the per-pixel
standard deviation of its frames over the whole clip, averaged over RGB, blurred, thresholded at γ = 0.02.
The reference blurs with a 31×31 Gaussian kernel at N3DV's 1352-px width (the paper omits the blur); we scale the
kernel with the image width so the blur covers the same fraction of the image at any resolution. The blur widens
the masks around movers, so Gaussians at a mover's silhouette (which see both states) are voted dynamic.

Monocular video (D-NeRF: one camera per time, a moving camera) has no per-camera clip, so no temporal std. Our
substitute is the *residual of the canonical static fit*: the canonical stage fits one static 3DGS to all frames,
which converges to the temporal average of the scene; the pixels it cannot explain, |I_t - render_static|
averaged over RGB and blurred the same way, are where the scene differs from its static average, i.e. the same
"deviation from the temporal mean" that the std measures, observed one frame at a time. The threshold must sit
above the static fit's own residual on static texture (a CPU-budget canonical stage is not converged), so it is a
separate setting (``mono_mask_threshold``), chosen on the residual statistics of D-NeRF lego.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
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


def residual_masks(renders: Tensor, images: Tensor, threshold: float, ksize: int) -> Tensor:
    """Monocular substitute: where a static fit cannot explain the frames.

    Args:
        renders: [V, H, W, 3] renders of the static (canonical) model at the V training views.
        images: [V, H, W, 3] the training images (composited over the same background).

    Returns:
        bool [V, H, W].
    """
    residual = (renders.float() - images.float()).abs().mean(-1)
    return change_mask(residual, threshold, ksize)


# ------------------------------------------------------------------------------------------------ disk cache
def _cache_root() -> Path:
    base = os.environ.get("RECON_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "recon") / "swift4d_masks"


def cache_key(scene, frames_per_camera: dict[int, list[int]], threshold: float, ksize: int) -> str:
    """Identifies a set of temporal-std masks: the data (root, name, format, which frames, sizes, mtimes of the
    folder) and the mask settings."""
    h = hashlib.sha1()
    root = Path(scene.root)
    h.update(f"{root.resolve()}|{scene.name}|{scene.format}|{threshold}|{ksize}".encode())
    try:
        h.update(str(root.stat().st_mtime_ns).encode())
    except OSError:
        pass
    for cam in sorted(frames_per_camera):
        idx = frames_per_camera[cam]
        h.update(f"{cam}:{len(idx)}:{idx[0]}:{idx[-1]}:{scene.describe_image(idx[0])}".encode())
    h.update(str(tuple(scene.cameras.widths.tolist()[:1] + scene.cameras.heights.tolist()[:1])).encode())
    return h.hexdigest()[:16]


def multiview_masks(scene, frames_per_camera: dict[int, list[int]], threshold: float, ksize: int, cache: bool = True) -> dict[int, Tensor]:
    """Temporal-std masks of every camera, read from / written to ``$RECON_CACHE/swift4d_masks/<key>.npz``.

    Args:
        scene: the SceneData (images are read lazily, one frame at a time).
        frames_per_camera: camera id -> frame indices (all its frames over the clip).

    Returns:
        camera id -> bool [H, W].
    """
    path = _cache_root() / f"{cache_key(scene, frames_per_camera, threshold, ksize)}.npz"
    if cache and path.is_file():
        try:
            with np.load(path) as z:
                out = {int(k[4:]): torch.from_numpy(z[k]) for k in z.files}
            if set(out) == set(frames_per_camera):
                return out
        except (OSError, ValueError, KeyError):
            pass
    out = {cam: temporal_std_mask((scene.image(i) for i in idx), threshold, ksize) for cam, idx in frames_per_camera.items()}
    if cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez_compressed(tmp, **{f"cam_{k}": v.numpy() for k, v in out.items()})
            tmp.replace(path)
        except OSError:  # a read-only cache must not stop training
            pass
    return out


def mask_coverage(masks: Iterable[Tensor]) -> float:
    """Fraction of True pixels over a set of masks (logged, and a sanity check against all-on/all-off masks)."""
    tot = on = 0
    for m in masks:
        tot += m.numel()
        on += int(m.sum())
    return on / max(tot, 1) if tot else math.nan


def pack_mask(mask: Tensor) -> Tensor:
    """bool [H, W] -> uint8 [4 + ceil(H·W / 8)] on the CPU (checkpoints): H and W as two big-endian bytes each,
    then the pixels, 8 per byte (up to 65535 px a side)."""
    h, w = mask.shape
    bits = np.packbits(mask.detach().cpu().numpy().reshape(-1))
    header = np.array([h >> 8, h & 255, w >> 8, w & 255], np.uint8)
    return torch.from_numpy(np.concatenate([header, bits]))


def unpack_mask(packed: Tensor) -> Tensor:
    """Inverse of :func:`pack_mask`: bool [H, W] on the CPU."""
    arr = packed.cpu().numpy()
    h, w = (int(arr[0]) << 8) | int(arr[1]), (int(arr[2]) << 8) | int(arr[3])
    return torch.from_numpy(np.unpackbits(arr[4:], count=h * w).reshape(h, w).astype(bool))
