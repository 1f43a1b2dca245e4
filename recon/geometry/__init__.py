"""Geometry: iso-surfaces (marching cubes, differentiable marching tetrahedra), mesh utilities, TSDF fusion."""

from recon.geometry.isosurface import marching_cubes
from recon.geometry.mesh_utils import (
    clean_mesh, face_normals, simplify_mesh, to_trimesh, transform_mesh, vertex_normals,
)
from recon.geometry.tets import marching_tets, tet_grid
from recon.geometry.tsdf import tsdf_fuse

__all__ = [
    "marching_cubes",
    "marching_tets",
    "tet_grid",
    "clean_mesh",
    "simplify_mesh",
    "vertex_normals",
    "face_normals",
    "to_trimesh",
    "transform_mesh",
    "tsdf_fuse",
]
