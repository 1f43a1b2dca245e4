"""Small mesh utilities: normals, clean-up, simplification, conversion and transforms."""

from __future__ import annotations

import numpy as np
import torch
import trimesh
from torch import Tensor


def face_normals(verts: Tensor, faces: Tensor, normalize: bool = True) -> Tensor:
    """[F, 3] face normals (area-weighted when ``normalize=False``) of verts [V, 3], faces [F, 3]."""
    p = verts[faces.long()]
    n = torch.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], dim=-1)
    return torch.nn.functional.normalize(n, dim=-1) if normalize else n


def vertex_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted vertex normals [V, 3] (differentiable)."""
    fn = face_normals(verts, faces, normalize=False)
    vn = torch.zeros_like(verts)
    for i in range(3):
        vn = vn.index_add(0, faces[:, i].long(), fn)
    return torch.nn.functional.normalize(vn, dim=-1, eps=1e-12)


def to_trimesh(verts, faces, **kwargs) -> trimesh.Trimesh:
    """Tensors or arrays -> ``trimesh.Trimesh`` without trimesh's implicit processing."""
    v = verts.detach().cpu().numpy() if isinstance(verts, Tensor) else np.asarray(verts)
    f = faces.detach().cpu().numpy() if isinstance(faces, Tensor) else np.asarray(faces)
    return trimesh.Trimesh(v.astype(np.float64), f.astype(np.int64), process=False, **kwargs)


def transform_mesh(mesh: trimesh.Trimesh, transform: np.ndarray | Tensor | None) -> trimesh.Trimesh:
    """Apply a 4x4 similarity / affine transform (e.g. back to the input data's frame); returns a copy."""
    out = mesh.copy()
    if transform is not None:
        T = transform.detach().cpu().numpy() if isinstance(transform, Tensor) else np.asarray(transform)
        out.apply_transform(T.astype(np.float64))
    return out


def clean_mesh(
    mesh: trimesh.Trimesh, min_component_faces: int = 0, min_component_ratio: float = 0.0, keep_largest: bool = False
) -> trimesh.Trimesh:
    """Merge duplicate vertices, drop degenerate / duplicate faces and unreferenced vertices, and small pieces.

    Args:
        mesh: input mesh (not modified).
        min_component_faces: drop connected components with fewer faces.
        min_component_ratio: drop components smaller than this fraction of the largest one.
        keep_largest: keep only the largest component.
    """
    m = mesh.copy()
    m.merge_vertices()
    m.update_faces(m.nondegenerate_faces())
    m.update_faces(m.unique_faces())
    m.remove_unreferenced_vertices()
    if len(m.faces) == 0 or not (min_component_faces or min_component_ratio or keep_largest):
        return m
    parts = m.split(only_watertight=False)
    sizes = np.array([len(p.faces) for p in parts])
    keep = sizes >= max(min_component_faces, min_component_ratio * sizes.max())
    if keep_largest:
        keep = np.arange(len(parts)) == int(np.argmax(sizes))
    return trimesh.util.concatenate([p for p, k in zip(parts, keep) if k])


def simplify_mesh(mesh: trimesh.Trimesh, target_faces: int) -> trimesh.Trimesh:
    """Quadric edge-collapse decimation (open3d) down to about ``target_faces`` triangles."""
    if len(mesh.faces) <= target_faces:
        return mesh.copy()
    import open3d as o3d

    om = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(np.asarray(mesh.vertices, np.float64)),
        o3d.utility.Vector3iVector(np.asarray(mesh.faces, np.int32)),
    )
    om = om.simplify_quadric_decimation(target_number_of_triangles=int(target_faces))
    om.remove_degenerate_triangles()
    om.remove_unreferenced_vertices()
    return trimesh.Trimesh(np.asarray(om.vertices), np.asarray(om.triangles), process=False)
