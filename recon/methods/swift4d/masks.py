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
from torch import Tensor

# The temporal-change statistic lives below the methods: the evaluator's dynamic-region metric uses it too.
from recon.data.motion import blur_kernel_size, change_mask, gaussian_blur, temporal_std, temporal_std_mask  # noqa: F401

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
