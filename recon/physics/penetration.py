"""Interpenetration of posed meshes, measured without a physics engine.

The check is deliberately independent of the simulator that produced the poses, so that it can judge it: each
mesh's surface is sampled (plus its vertices) and every sample is tested against every other mesh's *convex hull*,
which is what the engine collides (``rigid.py``). For a point inside a convex polytope with outward unit face
normals ``n_k`` and offsets ``d_k`` the distance to the boundary is exactly ``-max_k(n_k . x - d_k)``, so the depth of
each sample needs no nearest-point query. The depth of a pair is the deepest sample of either mesh inside the
other one; for the small overlaps of resting contact that is the penetration depth, up to the sample spacing
along edges (an edge of one box crossing an edge of another is found to within about that spacing).

Against the ground plane (point ``p``, unit up normal ``n``) a mesh sinks by ``max(0, -min_v (v - p) . n)`` over its
vertices, exact for any mesh because a linear function is lowest at a vertex of the hull.

Lengths are in the meshes' own units.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import trimesh

__all__ = ["max_penetration", "penetration_per_mesh"]


def _hull_planes(mesh: trimesh.Trimesh) -> tuple[np.ndarray, np.ndarray]:
    """Outward unit normals [K, 3] and offsets [K] of the planes of the mesh's convex hull (coplanar faces merged,
    so a box has 6 planes instead of 12 triangles)."""
    hull = mesh.convex_hull
    normals = np.asarray(hull.face_normals, np.float64)
    offsets = np.einsum("fi,fi->f", normals, np.asarray(hull.triangles[:, 0], np.float64))
    scale = max(float(np.abs(hull.vertices).max()), 1e-12)
    keys = np.round(np.concatenate([normals, offsets[:, None] / scale], 1), 9)
    _, first = np.unique(keys, axis=0, return_index=True)
    return normals[first], offsets[first]


def _depth_inside(points: np.ndarray, normals: np.ndarray, offsets: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """[P] distance of each point to the polytope's boundary when inside (> 0), <= 0 when outside."""
    out = np.empty(len(points))
    for s in range(0, len(points), chunk):
        out[s : s + chunk] = -(points[s : s + chunk] @ normals.T - offsets).max(1)
    return out


def _surface_points(mesh: trimesh.Trimesh, samples: int, seed: int) -> np.ndarray:
    pts, _ = trimesh.sample.sample_surface(mesh, samples, seed=seed)
    return np.concatenate([np.asarray(pts, np.float64), np.asarray(mesh.vertices, np.float64)])


def penetration_per_mesh(
    meshes: Sequence[trimesh.Trimesh],
    ground_point: Sequence[float] | None = None,
    ground_normal: Sequence[float] | None = None,
    samples: int = 4000,
    seed: int = 0,
) -> np.ndarray:
    """Deepest interpenetration each posed mesh takes part in: with any other mesh, or below the ground.

    Args:
        meshes: B meshes, already posed in one world frame (any units).
        ground_point, ground_normal: the ground plane (a point on it and its up normal, any length); None for no
            ground.
        samples: surface samples per mesh (its vertices are always added).
        seed: sampling seed (the result is deterministic for a given seed).
    Returns:
        [B] float64 depths in the meshes' units, >= 0 (0 = touching or apart).
    """
    if (ground_point is None) != (ground_normal is None):
        raise ValueError("give both ground_point and ground_normal, or neither")
    B = len(meshes)
    depth = np.zeros(B)
    if ground_normal is not None:
        n = np.asarray(ground_normal, np.float64)
        n = n / np.linalg.norm(n)
        p = np.asarray(ground_point, np.float64)
        for i, m in enumerate(meshes):
            depth[i] = max(0.0, -float(((np.asarray(m.vertices) - p) @ n).min()))
    points = [_surface_points(m, samples, seed + i) for i, m in enumerate(meshes)]
    planes = [_hull_planes(m) for m in meshes]
    bounds = [np.asarray(m.bounds, np.float64) for m in meshes]
    for i in range(B):
        for j in range(B):
            if i == j:
                continue
            lo, hi = bounds[j]
            pts = points[i]
            near = pts[np.all((pts >= lo) & (pts <= hi), axis=1)]  # outside the box means outside the hull
            if len(near) == 0:
                continue
            d = float(_depth_inside(near, *planes[j]).max())
            if d > 0:
                depth[i] = max(depth[i], d)
                depth[j] = max(depth[j], d)
    return depth


def max_penetration(
    meshes: Sequence[trimesh.Trimesh],
    ground_point: Sequence[float] | None = None,
    ground_normal: Sequence[float] | None = None,
    samples: int = 4000,
    seed: int = 0,
) -> float:
    """The deepest interpenetration among posed meshes and the ground (see ``penetration_per_mesh``); 0 if none."""
    per = penetration_per_mesh(meshes, ground_point, ground_normal, samples, seed)
    return float(per.max()) if len(per) else 0.0
