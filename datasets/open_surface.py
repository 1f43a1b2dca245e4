"""``open_surface``: a pleated tartan skirt, an open garment-like surface seen from all around, above and below.

The surface is a single sheet (no thickness) with two boundary loops, the waist and the hem; views from above and
below look inside it, so its back faces are seen, shaded two-sided. This is what a watertight-only reconstruction
(an SDF's zero level set) cannot represent and what GShell-style methods must recover: the ground truth exposes the
mesh and its boundary edges.

Images are RGBA (transparent background), 128 x 128, 48 views, every 8th for test.
"""

from __future__ import annotations

import numpy as np
import trimesh

from .common import make_cameras, object_bundle, pinhole, render_views, sphere_poses
from .gt_raycaster import Lighting, Material, Part, RayScene, sample_parts
from .shapes import boundary_edges, parametric_grid
from .textures import angle, fbm, hex_colors, mix, stripes

NAME = "open_surface"
VERSION = "1"

WAIST_Z, HEM_Z = 0.5, -0.55
WAIST_R, HEM_FLARE = 0.27, 0.33
PLEATS = 10


def skirt_point(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Surface map (u around the waist in [0, 1), v from waist 0 to hem 1) -> [..., 3] world points.

    The radius flares towards the hem and carries pleats whose depth grows with v; the hem also undulates in
    height, so its boundary is not a plane curve."""
    a = 2 * np.pi * u
    r = WAIST_R + HEM_FLARE * v**1.2 + 0.055 * v**1.4 * np.sin(PLEATS * a)
    z = WAIST_Z + (HEM_Z - WAIST_Z) * v + 0.05 * v**2 * np.sin(3 * a + 0.7)
    return np.stack([r * np.cos(a), r * np.sin(a), z], -1)


def tex_point(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Texture space: an unpleated unit cylinder, so the tartan runs straight along the fabric, not the folds."""
    a = 2 * np.pi * u
    return np.stack([np.cos(a), np.sin(a), -v], -1)


def tartan(p: np.ndarray) -> np.ndarray:
    """Tartan on the texture cylinder: warp bands around it, weft bands down it, blended as a twill, plus a fine
    thread noise."""
    sett = hex_colors("#c1121f", "#003049", "#fdf0d5", "#003049", "#c1121f", "#ffd60a", "#2d6a4f", "#003049")
    widths = np.array([6, 2, 1, 2, 6, 1, 4, 2], dtype=np.float64)
    edges = np.cumsum(widths) / widths.sum()

    def band(x):  # colour of the sett at fractional position x in [0, 1)
        return sett[np.searchsorted(edges, x % 1.0, side="right").clip(0, len(sett) - 1)]

    warp = band(angle(p) * 6.0)  # six setts around
    weft = band(-p[:, 2] * 3.2)
    twill = stripes(angle(p) * 400.0 + (-p[:, 2]) * 60.0, 1.0)  # diagonal threads decide which one is on top
    col = mix(warp, weft, 0.3 + 0.4 * twill)
    return np.clip(col * (0.85 + 0.3 * fbm(p * 45.0, 2, seed=71))[:, None], 0.0, 1.0)


def skirt_mesh(nu: int = 160, nv: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices [V, 3], faces [F, 3] (welded seam, normals outward) and texture coordinates [V, 3]."""
    verts, faces = parametric_grid(skirt_point, nu, nv, wrap_u=True)
    tex, _ = parametric_grid(tex_point, nu, nv, wrap_u=True)
    # d/du x d/dv points inward here (v runs downward), so flip the winding to make normals point out.
    return verts, faces[:, ::-1].copy(), tex


def generate(resolution: int = 128, n_views: int = 48, ss: int = 2, n_points: int = 6000) -> dict[str, np.ndarray]:
    """Render the scene; returns a bundle (see :mod:`.common`).

    Ground truth: ``gt/mesh`` (the sheet, welded, outward normals), ``gt/boundary_edges`` [E, 2] vertex pairs of
    the open boundary, ``gt/n_boundary_loops`` (2), ``gt/depth``, ``gt/normal`` (facing the camera, so inside views
    show inward normals), ``gt/mask``, ``gt/backface`` [N, H, W] (the pixel centre sees the inside of the sheet).
    """
    verts, faces, tex = skirt_mesh()
    part = Part("skirt", verts, faces, Material(tartan), tex_coords=tex)
    scene = RayScene([part], Lighting(), background=(1.0, 1.0, 1.0), scale=1.0)
    # Down to -70 deg elevation: half the views look up into the skirt or see its inside through the waist.
    poses = sphere_poses(n_views, radius=3.0, target=(0, 0, 0.0), min_el_deg=-70.0, max_el_deg=80.0, turns_offset=0.1)
    k = np.tile(np.array(pinhole(resolution, resolution, 40.0), dtype=np.float32), (n_views, 1))
    cameras = make_cameras(poses, k, resolution, resolution)
    r = render_views(scene, cameras, ss=ss)

    pts, nrm, pid, ptex = sample_parts([part], n_points, seed=5)
    colors = scene.shade_points(pts, nrm, pid, ptex)

    mesh = trimesh.Trimesh(verts, faces, process=False)
    return {
        **object_bundle(r, poses, k, pts, colors, mesh),
        "gt/boundary_edges": boundary_edges(faces),
        "gt/n_boundary_loops": np.int64(2),
        "gt/backface": r["backface"],
    }

