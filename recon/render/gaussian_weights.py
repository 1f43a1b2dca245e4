"""Per-Gaussian maximum blending weight max over pixels of α·T (no grad), on CPU and CUDA tensors.

Swift4D's temporal-importance pruning (gaussian_methods.md §1.4) needs, for every Gaussian, the largest weight
α_i·T_i it gets in any pixel of any training (view, time) image; the reference keeps it with an atomic max inside
its CUDA forward pass. Two implementations with the *same maths* as the rasterizers:

* CPU tensors: the C++ tile kernel's forward (``cuda/raster_cpu.cpp``) with its per-element running max of α·T
  switched on (per-thread maxima merged after the tile loop), i.e. one colourless forward pass;
* ``backend="torch"`` (the reference, any device): projection by
  :func:`recon.render.gaussians.project_gaussians`, pixel pairs and their α and transmittance from the pure-torch
  compositor's ``_pairs`` and ``pair_alpha_transmittance`` (same boxes, same (depth, index) drawing order,
  α = min(0.999, o·exp(-σ)) skipped below 1/255, a pixel stops before the Gaussian that would bring its
  transmittance to ≤ 1e-4 (gsplat's rule), T accumulated in float64). Memory is
  bounded by processing each image in horizontal bands of rows (compositing is per pixel).
"""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def gaussian_max_weights(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3] activated
    opacities: Tensor,  # [N] activated
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    *,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    antialiased: bool = False,
    backend: str = "auto",
    max_pairs: int = 1 << 22,
) -> Tensor:
    """max over the C images and their pixels of each Gaussian's blending weight α·T.

    Args:
        means, quats, scales, opacities: activated Gaussians as for :func:`rasterize_gaussians`.
        viewmats, Ks: C pinhole cameras (OpenCV axes).
        width, height: image size.
        backend: ``"cpu"`` (C++ projection and tile kernel; CPU tensors), ``"torch"`` (the pure-torch reference,
            any device) or ``"auto"`` (cpu for CPU tensors, else torch).
        max_pairs: torch backend: rough bound on (Gaussian, pixel) pairs processed at once (sets the band height).

    Returns:
        [N] float32 weights in [0, 1); 0 for Gaussians never drawn.
    """
    from recon.render.gaussians import _project

    if backend == "auto":
        backend = "cpu" if means.device.type == "cpu" else "torch"
    if backend not in ("cpu", "torch") or (backend == "cpu" and means.device.type != "cpu"):
        raise ValueError(f"backend {backend!r}: use 'cpu' (CPU tensors) or 'torch'")
    N, C = means.shape[0], viewmats.shape[0]
    if N == 0:
        return torch.zeros(0, device=means.device, dtype=torch.float32)
    radii, means2d, depths, conics, opac = _project(
        backend, means, quats, scales, opacities, viewmats, Ks, width, height, eps2d=eps2d, near_plane=near_plane,
        far_plane=far_plane, radius_clip=0.0, antialiased=antialiased,
    )  # fmt: skip
    if backend == "torch":
        return _max_weights_torch(radii, means2d, depths, conics, opac, width, height, max_pairs)
    from recon.render.gaussians import composite_cpu

    M = C * N
    xy = means2d.detach().reshape(M, 2).contiguous()
    _, _, outputs = composite_cpu(
        xy, conics.detach().reshape(M, 3).contiguous(), xy.new_empty(M, 0), opac.detach().reshape(M).contiguous(),
        depths.detach().reshape(M).contiguous(), radii.reshape(M, 2).to(torch.int32).contiguous(),
        torch.empty(0, dtype=torch.int32), None, C, width, height, 16, want_max_weight=True,
    )  # fmt: skip
    return outputs[-1].reshape(C, N).amax(0).float()  # per-element max α·T [C*N] -> max over images


def _max_weights_torch(radii, means2d, depths, conics, opac, width: int, height: int, max_pairs: int) -> Tensor:
    """Pure-torch reference compositor of :func:`gaussian_max_weights` on projected Gaussians ([C, N, ...])."""
    from recon.kernels.raster_torch import _pairs, pair_alpha_transmittance

    dev = means2d.device
    out = torch.zeros(means2d.shape[1], device=dev, dtype=torch.float32)
    for c in range(means2d.shape[0]):
        vis = torch.nonzero((radii[c] > 0).all(-1)).squeeze(-1)  # [V]
        if vis.numel() == 0:
            continue
        xy, r = means2d[c, vis], radii[c, vis].to(means2d.dtype)
        # Row extent of each box, exactly as _pairs computes it.
        y_lo = torch.floor(xy[:, 1] - r[:, 1] - 0.5).clamp(0, height - 1)
        y_hi = torch.ceil(xy[:, 1] + r[:, 1] - 0.5).clamp(0, height - 1)
        x_lo = torch.floor(xy[:, 0] - r[:, 0] - 0.5).clamp(0, width - 1)
        x_hi = torch.ceil(xy[:, 0] + r[:, 0] - 0.5).clamp(0, width - 1)
        area = float(((x_hi - x_lo + 1) * (y_hi - y_lo + 1)).sum())
        band = max(1, min(height, int(max_pairs * height / max(area, 1.0))))
        for y0 in range(0, height, band):
            y1 = min(height, y0 + band)  # rows [y0, y1)
            sel = (y_hi >= y0) & (y_lo <= y1 - 1)
            if not bool(sel.any()):
                continue
            ids = vis[sel]  # Gaussian ids overlapping the band
            shifted = means2d[c, ids].clone()
            shifted[:, 1] -= y0  # band-local rows; boxes are then clamped to the band by _pairs
            zeros = torch.zeros(ids.numel(), dtype=torch.int32, device=dev)
            g, pix = _pairs(shifted, radii[c, ids], depths[c, ids], zeros, width, y1 - y0)
            if g.numel() == 0:
                continue
            # One gather of a packed per-Gaussian table (x, y, conic a b c, opacity) instead of six.
            packed = torch.cat([shifted, conics[c, ids], opac[c, ids, None]], 1)[g]
            dx = packed[:, 0] - ((pix % width).to(packed.dtype) + 0.5)
            dy = packed[:, 1] - ((pix // width).to(packed.dtype) + 0.5)
            alpha, _, t_before, keep = pair_alpha_transmittance(dx, dy, packed[:, 2:5], packed[:, 5], pix)
            w = (alpha.double() * t_before * keep).float()
            out.scatter_reduce_(0, ids[g], w, reduce="amax", include_self=True)
    return out
