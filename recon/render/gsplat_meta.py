"""The one mirror of gsplat 1.5.3's private rasterization ``meta`` dict.

gsplat's densification strategies read a render's ``meta`` (``info``) dict, whose keys are not public API. recon's
CPU/torch rasterizers build that dict here, and methods that render several views per step merge their dicts here,
so a change of gsplat's keys touches this module only. ``tests/test_gsplat_meta.py`` reads the pinned gsplat's
sources and fails when the keys it writes or its ``DefaultStrategy`` reads differ from these.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

#: The gsplat release these keys are checked against.
GSPLAT_VERSION = "1.5.3"
#: Keys ``DefaultStrategy`` reads from ``info`` (with its default ``key_for_gradient="means2d"``).
STRATEGY_KEYS = frozenset({"means2d", "radii", "gaussian_ids", "width", "height", "n_cameras"})
#: Keys recon's CPU/torch rasterizers return that gsplat's ``rasterization`` also returns.
MIRRORED_KEYS = frozenset({
    "camera_ids", "gaussian_ids", "radii", "means2d", "depths", "conics", "opacities", "width", "height",
    "n_cameras", "n_batches", "tile_size", "tile_width", "tile_height",
})  # fmt: skip
#: recon's own additions: which backend drew the image, and the [C, N] visibility mask.
RECON_KEYS = frozenset({"backend", "visibility"})


def make_meta(*, means2d: Tensor, radii: Tensor, depths: Tensor, conics: Tensor, opacities: Tensor, visibility: Tensor,
              camera_ids: Tensor | None, gaussian_ids: Tensor | None, width: int, height: int, n_cameras: int,
              tile_size: int, tile_width: int, tile_height: int, backend: str) -> dict:  # fmt: skip
    """The ``meta`` of a CPU/torch render, laid out as gsplat's (shapes in
    :func:`recon.render.gaussians.rasterize_gaussians`)."""
    return {
        "camera_ids": camera_ids,
        "gaussian_ids": gaussian_ids,
        "radii": radii,
        "means2d": means2d,
        "depths": depths,
        "conics": conics,
        "opacities": opacities,
        "visibility": visibility,
        "width": width,
        "height": height,
        "n_cameras": n_cameras,
        "n_batches": 1,
        "tile_size": tile_size,
        "tile_width": tile_width,
        "tile_height": tile_height,
        "backend": backend,
    }
    return meta


class _GradHolder:
    """Stands in for ``meta["means2d"]`` of merged views: the strategy only reads ``.grad`` (and ``.absgrad``)."""

    def __init__(self, grad: Tensor, absgrad: Tensor | None = None):
        self.grad = grad
        self.absgrad = absgrad


def merge_views(metas: Sequence[dict], gather: Callable[[Tensor], Tensor] | None = None) -> dict | None:
    """The densification statistics of several single-view, unpacked renders (after backward) as one batched
    render of those views would report them (``n_cameras`` = number of views: a loss that is their mean).

    Args:
        metas: the renders' ``meta`` dicts. A view whose 2D means got no gradient counts with a zero gradient.
        gather: data-parallel training: ``Collective.all_gather`` (every rank's tensor, concatenated along dim 0 in
            rank order), so that every rank gets the statistics of the whole step's views, in the order one
            process with the whole batch would have them.

    Returns:
        the merged ``meta``, or None when no view (on any rank) got a gradient.
    """
    has = [m["means2d"].grad is not None for m in metas]
    grads = [m["means2d"].grad if h else torch.zeros_like(m["means2d"]) for m, h in zip(metas, has)]
    absgrads = [getattr(m["means2d"], "absgrad", None) for m in metas]
    with_abs = all(a is not None for a in absgrads)
    sizes = torch.tensor([[m["width"], m["height"]] for m in metas], dtype=torch.float64)
    radii = torch.cat([m["radii"] for m in metas], 0)
    grad = torch.cat(grads, 0)
    absgrad = torch.cat(absgrads, 0) if with_abs else None
    any_grad = torch.tensor([float(any(has))])
    if gather is not None:
        grad, radii, sizes, any_grad = gather(grad), gather(radii), gather(sizes), gather(any_grad)
        absgrad = gather(absgrad) if with_abs else None
    if not bool(any_grad.any()):
        return None
    merged = dict(metas[0])
    width, height = float(sizes[0, 0]), float(sizes[0, 1])
    if bool((sizes != sizes[0]).any()):
        # The strategy normalises every view's gradient by one width and height: views of other sizes are put
        # into pixels of a 2 x 2 image first (it multiplies by width / 2 and height / 2).
        scale = (sizes / 2).to(grad)[:, None, :]
        grad = grad * scale
        absgrad = absgrad * scale if absgrad is not None else None
        width = height = 2
    merged["means2d"] = _GradHolder(grad, absgrad)
    merged["radii"] = radii
    merged["width"], merged["height"] = int(width), int(height)
    merged["n_cameras"] = int(grad.shape[0])
    return merged
