"""The one mirror of gsplat 1.5.3's private rasterization ``meta`` dict.

gsplat's densification strategies read a render's ``meta`` (``info``) dict, whose keys are not public API. recon's
CPU/torch rasterizers build that dict here, and methods that render several views per step merge their dicts here,
so a change of gsplat's keys touches this module only. ``tests/test_gsplat_meta.py`` reads the pinned gsplat's
sources and fails when the keys it writes or its ``DefaultStrategy`` reads differ from these.
"""

from __future__ import annotations

from typing import Sequence

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


def merge_views(metas: Sequence[dict]) -> dict | None:
    """The densification statistics of several single-view, unpacked renders (after backward) as one batched
    render of those views would report them (``n_cameras`` = number of views: a loss that is their mean), or
    None when a view's 2D means got no gradient."""
    grads = [m["means2d"].grad for m in metas]
    if any(g is None for g in grads):
        return None
    absgrads = [getattr(m["means2d"], "absgrad", None) for m in metas]
    merged = dict(metas[0])
    merged["means2d"] = _GradHolder(torch.cat(grads, 0), torch.cat(absgrads, 0) if all(a is not None for a in absgrads) else None)
    merged["radii"] = torch.cat([m["radii"] for m in metas], 0)
    merged["n_cameras"] = len(metas)
    return merged
