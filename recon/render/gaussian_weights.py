"""Per-Gaussian maximum blending weight max over pixels of α·T (no grad), on CPU and CUDA tensors.

Swift4D's temporal-importance pruning (gaussian_methods.md §1.4) needs, for every Gaussian, the largest weight
α_i·T_i it gets in any pixel of any training (view, time) image; the reference keeps it with an atomic max inside
its CUDA forward pass. Our rasterizers do not output it, so this is a separate no-grad pass with the *same maths*:

* projection: :func:`recon.render.gaussians.project_gaussians` (EWA, eps2d, opacity-aware radius, culling);
* pixel pairs: the pure-torch compositor's ``_pairs`` (same boxes, same (depth, index) drawing order);
* α = min(0.999, o·exp(-σ)), skipped below 1/255; a pixel stops before the Gaussian that would bring its
  transmittance to ≤ 1e-4 (gsplat's rule), T accumulated in float64.

Memory is bounded by processing each image in horizontal bands of rows: a Gaussian's pairs in a band only depend on
the Gaussians overlapping that band, because compositing is per pixel.
"""

from __future__ import annotations

import torch
from torch import Tensor

from recon.render.gaussians import project_gaussians

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
TRANS_MIN = 1e-4


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
    max_pairs: int = 1 << 22,
) -> Tensor:
    """max over the C images and their pixels of each Gaussian's blending weight α·T.

    Args:
        means, quats, scales, opacities: activated Gaussians as for :func:`rasterize_gaussians`.
        viewmats, Ks: C pinhole cameras (OpenCV axes).
        width, height: image size.
        max_pairs: rough bound on (Gaussian, pixel) pairs processed at once (sets the band height).

    Returns:
        [N] float32 weights in [0, 1); 0 for Gaussians never drawn.
    """
    from recon.kernels.raster_torch import _pairs

    N = means.shape[0]
    dev = means.device
    out = torch.zeros(N, device=dev, dtype=torch.float32)
    if N == 0:
        return out
    radii, means2d, depths, conics, opac, _ = project_gaussians(
        means, quats, scales, opacities, viewmats, Ks, width, height, eps2d=eps2d, near_plane=near_plane,
        far_plane=far_plane, antialiased=antialiased,
    )  # fmt: skip
    for c in range(viewmats.shape[0]):
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
            gx, gy, ca, cb, cc, go = torch.cat([shifted, conics[c, ids], opac[c, ids, None]], 1)[g].unbind(1)
            dx = gx - ((pix % width).to(gx.dtype) + 0.5)
            dy = gy - ((pix // width).to(gx.dtype) + 0.5)
            sigma = 0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
            alpha = torch.clamp(go * torch.exp(-sigma), max=ALPHA_MAX)
            valid = (sigma >= 0) & (alpha >= ALPHA_MIN)
            alpha = torch.where(valid, alpha, torch.zeros_like(alpha)).double()
            # Transmittance in front of each pair: segmented exclusive cumulative sum of log(1 - α) per pixel.
            la = torch.log1p(-alpha)
            excl = torch.cumsum(la, 0) - la
            new_seg = torch.ones_like(pix, dtype=torch.bool)
            new_seg[1:] = pix[1:] != pix[:-1]
            seg = torch.cumsum(new_seg.long(), 0) - 1
            t_before = torch.exp(excl - excl[new_seg][seg])
            keep = valid & (t_before * (1.0 - alpha) > TRANS_MIN)
            w = (alpha * t_before * keep).float()
            out.scatter_reduce_(0, ids[g], w, reduce="amax", include_self=True)
    return out
