"""Parametric surfaces the trimesh primitives do not cover: open sheets, open tubes, walls.

Shapes: a surface is sampled on an [nu, nv] grid of parameters; vertices come back as [V, 3], faces as [F, 3].
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def parametric_grid(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], nu: int, nv: int, wrap_u: bool = False
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Triangulate ``fn(u, v) -> [..., 3]`` over u, v in [0, 1].

    Args:
        fn: vectorised surface map; receives u, v arrays of equal shape.
        nu, nv: number of grid *cells* along u and v.
        wrap_u: u is periodic (a tube): the u = 1 column is not duplicated but welded to u = 0, so the seam is not
            a boundary.

    Returns:
        vertices [V, 3] float64 and faces [F, 3] int64 (V = nu' (nv + 1), nu' = nu if wrap_u else nu + 1;
        F = 2 nu nv), wound so the normal is d/du x d/dv.
    """
    nu_pts = nu if wrap_u else nu + 1
    u = np.arange(nu_pts) / nu
    v = np.arange(nv + 1) / nv
    uu, vv = np.meshgrid(u, v, indexing="ij")
    verts = np.asarray(fn(uu, vv), dtype=np.float64).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(nu), np.arange(nv), indexing="ij")
    i, j = i.ravel(), j.ravel()
    i1 = (i + 1) % nu_pts
    a, b, c, d = i * (nv + 1) + j, i1 * (nv + 1) + j, i1 * (nv + 1) + j + 1, i * (nv + 1) + j + 1
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return verts, faces


def boundary_edges(faces: np.ndarray) -> np.ndarray:
    """[E, 2] vertex pairs of edges used by exactly one face (the open boundary), sorted within each pair."""
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    uniq, counts = np.unique(e, axis=0, return_counts=True)
    return uniq[counts == 1]


def open_cylinder(radius: float, height: float, sections: int = 96, rings: int = 4, inward: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Side wall of a cylinder around z from z = 0 to ``height`` with no caps (normals out, or in if ``inward``)."""

    def fn(u, v):
        a = 2 * np.pi * u
        return np.stack([radius * np.cos(a), radius * np.sin(a), height * v], -1)

    v, f = parametric_grid(fn, sections, rings, wrap_u=True)
    return v, (f[:, ::-1] if inward else f)


def quad(size_x: float, size_y: float, z: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """An axis-aligned rectangle centred on the z axis at height ``z``, normal +z."""
    hx, hy = size_x / 2, size_y / 2
    v = np.array([[-hx, -hy, z], [hx, -hy, z], [hx, hy, z], [-hx, hy, z]], dtype=np.float64)
    return v, np.array([[0, 1, 2], [0, 2, 3]])


def disc(radius: float, sections: int = 120, z: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A flat disc of ``radius`` centred on the z axis at height ``z``, normal +z (a triangle fan of 1 + sections
    vertices)."""
    a = 2 * np.pi * np.arange(sections) / sections
    v = np.concatenate([[[0.0, 0.0, z]], np.stack([radius * np.cos(a), radius * np.sin(a), np.full(sections, z)], 1)])
    i = np.arange(sections)
    return v, np.stack([np.zeros(sections, np.int64), 1 + i, 1 + (i + 1) % sections], 1)
