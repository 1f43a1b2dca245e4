"""Pure-torch twin of the C++ tile rasterizer (`raster_cpu.cpp`): same inputs, same maths, autograd backward.

Vectorised over (Gaussian, pixel) pairs instead of looping over tiles:
  1. every visible Gaussian emits one pair per pixel inside its radius box (the same box the C++ kernel visits);
  2. pairs are sorted by (pixel, depth rank), the depth rank being the stable (image, depth, index) order that
     the C++ binning uses, so ties break identically;
  3. alpha = min(0.999, o * exp(-sigma)), zeroed where sigma < 0 or alpha < 1/255;
  4. the transmittance in front of each pair is a segmented exclusive cumulative sum of log(1 - alpha) (float64,
     so that long segments do not lose precision), and a pair is kept only while T * (1 - alpha) > 1e-4,
     which reproduces gsplat's "stop before the Gaussian that would drop T to 1e-4" rule;
  5. colours, alpha and median depth are accumulated with index_add / scatter_reduce.
It runs on any device, needs memory proportional to the number of pairs, and is the parity oracle and the
benchmark baseline for the C++ kernel.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
TRANS_MIN = 1e-4


def _pairs(means2d: Tensor, radii: Tensor, depths: Tensor, image_ids: Tensor, width: int, height: int):
    """Sorted (element id, pixel id) pairs of all visible elements. All outputs are integer tensors."""
    dev = means2d.device
    vis = torch.nonzero((radii > 0).all(dim=-1)).squeeze(-1)  # [V] element ids, increasing
    # Stable sort by depth, then stably by image: order within an image is (depth, element index).
    o = torch.argsort(depths.detach()[vis], stable=True)
    o = o[torch.argsort(image_ids[vis][o], stable=True)]
    order = vis[o]  # [V] element ids in drawing order
    V = order.numel()
    xy = means2d.detach()[order]
    r = radii[order].to(xy.dtype)
    x0 = torch.floor(xy[:, 0] - r[:, 0] - 0.5).clamp(0, width - 1).long()
    x1 = torch.ceil(xy[:, 0] + r[:, 0] - 0.5).clamp(0, width - 1).long()
    y0 = torch.floor(xy[:, 1] - r[:, 1] - 0.5).clamp(0, height - 1).long()
    y1 = torch.ceil(xy[:, 1] + r[:, 1] - 0.5).clamp(0, height - 1).long()
    nx = (x1 - x0 + 1).clamp(min=0)
    ny = (y1 - y0 + 1).clamp(min=0)
    counts = nx * ny
    rank = torch.repeat_interleave(torch.arange(V, device=dev), counts)  # [P] drawing rank of each pair
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(rank.numel(), device=dev) - first[rank]
    px = x0[rank] + local % nx[rank]
    py = y0[rank] + local // nx[rank]
    pix = (image_ids[order][rank].long() * height + py) * width + px  # global pixel id
    perm = torch.argsort(pix * max(V, 1) + rank)  # keys are unique: pixel-major, drawing order within a pixel
    rank, pix = rank[perm], pix[perm]
    return order[rank], pix


def pair_alpha_transmittance(dx: Tensor, dy: Tensor, conics: Tensor, opacities: Tensor, pix: Tensor):
    """Steps 3-4 for sorted pairs: per pair offsets ``dx, dy`` [P] from the pixel centre, the element's conic [P, 3]
    and opacity [P], and the pixel ids [P] (pairs of one pixel contiguous, front to back).

    Returns alpha [P] (zeroed where invalid; differentiable), log(1 - alpha) [P] float64, the transmittance in front
    of each pair [P] float64, and keep [P] bool (the pairs that are drawn).
    """
    sigma = 0.5 * (conics[:, 0] * dx * dx + conics[:, 2] * dy * dy) + conics[:, 1] * dx * dy
    alpha = torch.clamp(opacities * torch.exp(-sigma), max=ALPHA_MAX)
    valid = (sigma >= 0) & (alpha >= ALPHA_MIN)
    alpha = torch.where(valid, alpha, torch.zeros_like(alpha))
    la = torch.log1p(-alpha.double())
    excl = torch.cumsum(la, 0) - la
    new_seg = torch.ones_like(pix, dtype=torch.bool)
    new_seg[1:] = pix[1:] != pix[:-1]
    seg = torch.cumsum(new_seg.long(), 0) - 1
    t_before = torch.exp(excl - excl[new_seg][seg])
    keep = valid & (t_before.detach() * (1.0 - alpha.detach().double()) > TRANS_MIN)
    return alpha, la, t_before, keep


def rasterize_to_pixels_torch(
    means2d: Tensor,  # [M, 2]
    conics: Tensor,  # [M, 3]
    colors: Optional[Tensor],  # [M, D] or None (depth-only)
    opacities: Tensor,  # [M]
    depths: Tensor,  # [M]
    radii: Tensor,  # [M, 2] int
    image_ids: Optional[Tensor],  # [M] int, or None: element m is in image m // (M // n_images)
    n_images: int,
    width: int,
    height: int,
    backgrounds: Optional[Tensor] = None,  # [n_images, D]
    depth_channel: bool = False,
    want_median: bool = False,
) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """Composites projected Gaussians; same contract as the C++ kernel's autograd Function.

    Returns:
        render [n_images, H, W, D (+1 if depth_channel)], alphas [n_images, H, W, 1],
        median depth [n_images, H, W, 1] or None.
    """
    M = means2d.shape[0]
    dev, dtype = means2d.device, means2d.dtype
    if image_ids is None:
        image_ids = torch.arange(M, device=dev) // max(M // max(n_images, 1), 1)
    g, pix = _pairs(means2d, radii, depths, image_ids, width, height)
    n_pix = n_images * height * width

    # Per-pair alpha (differentiable in means2d, conics, opacities) and the transmittance in front of it.
    px = (pix % width).to(dtype) + 0.5
    py = ((pix // width) % height).to(dtype) + 0.5
    alpha, la, t_before, keep = pair_alpha_transmittance(means2d[g, 0] - px, means2d[g, 1] - py, conics[g], opacities[g], pix)
    w = (alpha.double() * t_before * keep).to(dtype)  # blending weight of each pair

    feats = []
    if colors is not None and colors.shape[-1] > 0:
        feats.append(colors[g])
    if depth_channel:
        feats.append(depths[g][:, None])
    D_out = sum(f.shape[-1] for f in feats)
    render = torch.zeros(n_pix, D_out, device=dev, dtype=dtype)
    if feats:
        render = render.index_add(0, pix, w[:, None] * torch.cat(feats, dim=-1))
    log_t = torch.zeros(n_pix, device=dev, dtype=torch.float64).index_add(0, pix, la * keep)
    t_final = torch.exp(log_t).to(dtype)  # [n_pix]
    if backgrounds is not None:
        D = backgrounds.shape[-1]
        bg = backgrounds[:, None, :].expand(n_images, height * width, D).reshape(n_pix, D)
        bg_term = t_final[:, None] * bg
        if depth_channel:  # the depth channel has a zero background, as in gsplat
            bg_term = torch.cat([bg_term, torch.zeros_like(bg_term[:, :1])], dim=-1)
        render = render + bg_term
    alphas = (1.0 - t_final).reshape(n_images, height, width, 1)
    render = render.reshape(n_images, height, width, D_out)

    median = None
    if want_median:
        # gsplat 2DGS convention: the last drawn Gaussian whose front transmittance is still > 0.5.
        cand = keep & (t_before.detach() > 0.5)
        idx = torch.where(cand, torch.arange(pix.numel(), device=dev), torch.full_like(pix, -1))
        last = torch.full((n_pix,), -1, device=dev, dtype=torch.long).scatter_reduce(
            0, pix, idx, reduce="amax", include_self=True
        )
        has = last >= 0
        median = torch.zeros(n_pix, device=dev, dtype=dtype)
        median = median.masked_scatter(has, depths[g[last[has]]])
        median = median.reshape(n_images, height, width, 1)
    return render, alphas, median
