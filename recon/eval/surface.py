"""Geometry metrics of a predicted surface mesh against a ground-truth mesh (numpy, scipy, trimesh only).

One implementation for every surface method (``recon eval RUN --mesh GT``). Both meshes must be in the same frame
and unit; every distance below is in that unit. Definitions (README, "Geometry metrics"):

- samples: ``n_points`` points per mesh, uniform over its area, each with the unit normal of the face it lies on;
  pred and GT draw from two independent streams of one seed;
- Chamfer-L1: accuracy = mean over pred samples of the Euclidean distance to the nearest GT sample,
  completeness = the same from GT to pred, chamfer = (accuracy + completeness) / 2 (distances are not squared);
- normal consistency: mean |n_pred . n_gt| over the nearest pairs of each direction, the two directions averaged
  (unsigned: an open surface has no inside, so its orientation is arbitrary); the signed mean is reported too;
- F-score at tau: precision = share of pred samples closer than tau to a GT sample, recall = the same from GT,
  F = 2 P R / (P + R) (0 when both are 0);
- topology of each mesh (:func:`topology`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import trimesh
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

DEFAULT_POINTS = 200_000
DEFAULT_FSCORE_THRESHOLD = 0.01
DEFAULT_MIN_COMPONENT_FRACTION = 0.01


def sample_surface(mesh: trimesh.Trimesh, n_points: int, seed: int | np.random.Generator = 0) -> tuple[np.ndarray, np.ndarray]:
    """Points drawn uniformly over the area of ``mesh`` (a face with probability proportional to its area, then a
    uniform point in it).

    Args:
        mesh: F >= 1 faces with a positive total area.
        n_points: N, the number of samples.
        seed: an integer seed or a numpy Generator (drawn from).

    Returns:
        points [N, 3] float64 in the mesh's frame and the unit normals [N, 3] float64 of the faces they lie on
        (oriented by the faces' winding).

    Raises:
        ValueError: the mesh has no area.
    """
    rng = np.random.default_rng(seed)
    tri = np.asarray(mesh.triangles, dtype=np.float64)  # [F, 3, 3]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    double_area = np.linalg.norm(cross, axis=1)
    cumulative = np.cumsum(double_area)
    if len(cumulative) == 0 or not cumulative[-1] > 0:
        raise ValueError("mesh has no area to sample")
    # side="right": a zero-area face has the same cumulative sum as the face before it and is never picked.
    face = np.searchsorted(cumulative, rng.random(n_points) * cumulative[-1], side="right")
    u, v = rng.random((2, n_points))
    flip = u + v > 1  # the half of the unit square outside the triangle, folded back into it: uniform in it
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    t = tri[face]
    points = t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])
    return points, cross[face] / double_area[face, None]


@dataclass(frozen=True)
class NearestPairs:
    """Each sample's nearest sample of the other set, both ways.

    Attributes:
        pred_to_gt: [N] Euclidean distance of each pred sample to its nearest GT sample.
        pred_match: [N] index of that GT sample.
        gt_to_pred: [M] the same from each GT sample to the pred samples.
        gt_match: [M] index of that pred sample.
    """

    pred_to_gt: np.ndarray
    pred_match: np.ndarray
    gt_to_pred: np.ndarray
    gt_match: np.ndarray


def nearest_pairs(pred_points: np.ndarray, gt_points: np.ndarray) -> NearestPairs:
    """Nearest neighbours between pred samples [N, 3] and GT samples [M, 3] (scipy cKDTree, exact, all cores)."""
    d_pg, i_pg = cKDTree(gt_points).query(pred_points, workers=-1)
    d_gp, i_gp = cKDTree(pred_points).query(gt_points, workers=-1)
    return NearestPairs(d_pg, i_pg, d_gp, i_gp)


def chamfer_l1(pairs: NearestPairs) -> dict[str, float]:
    """``{"accuracy": mean pred -> GT distance, "completeness": mean GT -> pred distance, "chamfer": their mean}``."""
    accuracy, completeness = float(pairs.pred_to_gt.mean()), float(pairs.gt_to_pred.mean())
    return {"accuracy": accuracy, "completeness": completeness, "chamfer": (accuracy + completeness) / 2}


def normal_consistency(pairs: NearestPairs, pred_normals: np.ndarray, gt_normals: np.ndarray) -> dict[str, float]:
    """Agreement of the unit normals [N, 3] (pred) and [M, 3] (GT) of nearest pairs, in [0, 1] unsigned and [-1, 1]
    signed: ``{"normal_consistency": (mean |dot| pred -> GT + mean |dot| GT -> pred) / 2,
    "normal_consistency_signed": the same without the absolute value}``."""
    dot_pg = np.einsum("ij,ij->i", pred_normals, gt_normals[pairs.pred_match])
    dot_gp = np.einsum("ij,ij->i", gt_normals, pred_normals[pairs.gt_match])
    return {
        "normal_consistency": float((np.abs(dot_pg).mean() + np.abs(dot_gp).mean()) / 2),
        "normal_consistency_signed": float((dot_pg.mean() + dot_gp.mean()) / 2),
    }


def fscore(pairs: NearestPairs, threshold: float) -> dict[str, float]:
    """``{"precision": share of pred samples closer than threshold to GT, "recall": share of GT samples closer than
    threshold to pred, "fscore": 2 P R / (P + R), 0 when both are 0}``; threshold in the meshes' unit."""
    precision = float((pairs.pred_to_gt < threshold).mean())
    recall = float((pairs.gt_to_pred < threshold).mean())
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "fscore": f}


def topology(mesh: trimesh.Trimesh, min_component_fraction: float = DEFAULT_MIN_COMPONENT_FRACTION) -> dict:
    """Topology figures of a (possibly open) surface.

    Vertices at the same position are welded first (trimesh's merge tolerance) and faces that repeat a vertex
    dropped, so a triangle soup is judged by the surface it draws. Components are edge-connected (two faces that
    share only a vertex are two components; the faces around a non-manifold edge are one).

    Args:
        mesh: F faces (any F >= 0).
        min_component_fraction: components with fewer than this fraction of the F faces are left out of the
            boundary figures: a reconstruction's small floaters would otherwise dominate the loop count.

    Returns:
        ``{"faces": F after welding, "components": number of components, "small_components": how many were left
        out of the boundary figures, "boundary_loops": connected pieces of the boundary (edges of exactly one
        face) of the rest (two loops touching at a vertex count as one), "boundary_length": total length of those
        edges, "non_manifold_edges": edges of more than two faces, "watertight": every edge has exactly two
        faces}``; the last two judge the whole mesh.
    """
    welded = trimesh.Trimesh(np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64), process=False)
    welded.merge_vertices(merge_tex=True, merge_norm=True)  # by position only
    faces = welded.faces
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])]
    n_faces, verts = len(faces), np.asarray(welded.vertices)
    if n_faces == 0:
        return {"faces": 0, "components": 0, "small_components": 0, "boundary_loops": 0, "boundary_length": 0.0,
                "non_manifold_edges": 0, "watertight": False}
    # Edge k of the [3F, 2] list belongs to face k // 3; edge_id numbers the distinct (undirected) edges, found as
    # one int64 key per edge (a 1-D unique is much faster than a row-wise one on millions of edges).
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    keys, edge_id = np.unique(edges[:, 0] * len(verts) + edges[:, 1], return_inverse=True)
    unique_edges = np.stack([keys // len(verts), keys % len(verts)], 1)  # [E, 2]
    edge_face = np.repeat(np.arange(n_faces), 3)
    uses = np.bincount(edge_id, minlength=len(unique_edges))

    # Faces and edges as one bipartite graph: faces sharing any edge (also a non-manifold one) end up together.
    n_nodes = n_faces + len(unique_edges)
    graph = sp.coo_matrix((np.ones(len(edge_id)), (edge_face, n_faces + edge_id)), shape=(n_nodes, n_nodes))
    n_components, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels[:n_faces], minlength=n_components)
    kept = sizes[labels[:n_faces]] >= min_component_fraction * n_faces  # [F] face in a large enough component

    kept_uses = np.bincount(edge_id[kept[edge_face]], minlength=len(unique_edges))
    boundary = unique_edges[kept_uses == 1]  # [B, 2]
    return {
        "faces": int(n_faces),
        "components": int(n_components),
        "small_components": int((sizes < min_component_fraction * n_faces).sum()),
        "boundary_loops": _count_loops(boundary, len(verts)),
        "boundary_length": float(np.linalg.norm(verts[boundary[:, 0]] - verts[boundary[:, 1]], axis=1).sum()),
        "non_manifold_edges": int((uses > 2).sum()),
        "watertight": bool((uses == 2).all()),
    }


def _count_loops(boundary: np.ndarray, n_verts: int) -> int:
    """Connected pieces of the graph of boundary edges [B, 2] over n_verts vertices (vertices off it not counted)."""
    if len(boundary) == 0:
        return 0
    graph = sp.coo_matrix((np.ones(len(boundary)), (boundary[:, 0], boundary[:, 1])), shape=(n_verts, n_verts))
    _, labels = connected_components(graph, directed=False)
    return int(len(np.unique(labels[np.unique(boundary)])))


def surface_metrics(
    pred: trimesh.Trimesh,
    gt: trimesh.Trimesh,
    n_points: int = DEFAULT_POINTS,
    fscore_threshold: float = DEFAULT_FSCORE_THRESHOLD,
    seed: int = 0,
    min_component_fraction: float = DEFAULT_MIN_COMPONENT_FRACTION,
) -> dict:
    """Every geometry metric of ``pred`` against ``gt`` (same frame and unit), as plain JSON-ready values.

    Args:
        pred, gt: meshes with positive area.
        n_points: samples per mesh (N = M).
        fscore_threshold: tau of the F-score, in the meshes' unit.
        seed: seeds the two sample streams (pred, GT).
        min_component_fraction: see :func:`topology`.

    Returns:
        ``{"accuracy", "completeness", "chamfer", "normal_consistency", "normal_consistency_signed", "precision",
        "recall", "fscore"}`` (floats), ``"boundary_length_ratio"`` (pred's boundary length / GT's; None when the
        GT has no boundary), ``"pred"`` and ``"gt"`` (their :func:`topology`), and the settings ``"n_points",
        "fscore_threshold", "seed", "min_component_fraction"``.

    Raises:
        ValueError: a mesh has no area, or a setting is out of range.
    """
    if n_points < 1 or not fscore_threshold > 0 or not 0 <= min_component_fraction < 1:
        raise ValueError(f"need n_points >= 1, fscore_threshold > 0 and 0 <= min_component_fraction < 1 "
                         f"(got {n_points}, {fscore_threshold}, {min_component_fraction})")
    pred_rng, gt_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    pred_points, pred_normals = sample_surface(pred, n_points, pred_rng)
    gt_points, gt_normals = sample_surface(gt, n_points, gt_rng)
    pairs = nearest_pairs(pred_points, gt_points)
    pred_topology, gt_topology = topology(pred, min_component_fraction), topology(gt, min_component_fraction)
    gt_length = gt_topology["boundary_length"]
    return {
        **chamfer_l1(pairs),
        **normal_consistency(pairs, pred_normals, gt_normals),
        **fscore(pairs, fscore_threshold),
        "boundary_length_ratio": pred_topology["boundary_length"] / gt_length if gt_length > 0 else None,
        "pred": pred_topology,
        "gt": gt_topology,
        "n_points": int(n_points),
        "fscore_threshold": float(fscore_threshold),
        "seed": int(seed),
        "min_component_fraction": float(min_component_fraction),
    }
