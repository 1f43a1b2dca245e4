"""Marching cubes on dense SDF grids (scikit-image), returning outward-oriented triangles in world units."""

from __future__ import annotations

import numpy as np
from torch import Tensor


def marching_cubes(
    sdf: Tensor | np.ndarray,
    bbox_min=(-1.0, -1.0, -1.0),
    bbox_max=(1.0, 1.0, 1.0),
    level: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Extract the ``level`` iso-surface of a signed distance grid.

    Args:
        sdf: [X, Y, Z] samples; ``sdf[i, j, k]`` is the value at ``bbox_min + (i, j, k) * spacing`` with
            ``spacing = (bbox_max - bbox_min) / (shape - 1)``. Negative inside, positive outside.
        bbox_min, bbox_max: world-space corners of the grid.
        level: iso value.
    Returns:
        (verts [V, 3] float32 world positions, faces [F, 3] int64), counter-clockwise seen from outside (normals
        point towards increasing SDF). Empty arrays when the level is not crossed.
    """
    from skimage.measure import marching_cubes as _mc

    vol = sdf.detach().cpu().numpy() if isinstance(sdf, Tensor) else np.asarray(sdf)
    vol = vol.astype(np.float32)
    if not (vol.min() < level < vol.max()):
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    lo, hi = np.asarray(bbox_min, np.float64), np.asarray(bbox_max, np.float64)
    spacing = (hi - lo) / (np.asarray(vol.shape) - 1)
    verts, faces, _, _ = _mc(vol, level=level, spacing=tuple(spacing), allow_degenerate=False)
    # scikit-image's default (gradient_direction="descent") winds triangles counter-clockwise seen from the side of
    # larger values, i.e. outwards for an SDF; test_marching_cubes_sphere guards this
    return (verts + lo).astype(np.float32), faces.astype(np.int64)
