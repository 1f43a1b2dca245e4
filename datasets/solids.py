"""``solids``: four textured primitives (cube, sphere, cylinder, rounded superquadric) on a square ground plane.

Made for primitive-based reconstruction (blocks): the ground truth lists every primitive's type, pose and size, with
a superquadric description of each (so a method fitting superquadrics can be scored on the same terms), and the
meshes. Images are RGBA (the ground plane is opaque, the world beyond it transparent), 128 x 128, 40 views from the
upper hemisphere, every 8th for test.
"""

from __future__ import annotations

import numpy as np
import trimesh
from trimesh.transformations import rotation_matrix, translation_matrix

from .common import make_cameras, mesh_arrays, object_bundle, pinhole, render_views, sphere_poses
from .gt_raycaster import Lighting, Material, Part, RayScene, sample_parts
from .shapes import parametric_grid, quad
from .textures import angle, checker, fbm, hex_colors, mix, ramp, stripes

NAME = "solids"
VERSION = "1"

GROUND_SIZE = 3.0


def superquadric(half: tuple[float, float, float], e1: float, e2: float, nu: int = 64, nv: int = 32) -> trimesh.Trimesh:
    """Closed superellipsoid mesh with semi-axes ``half`` and exponents e1 (along z) and e2 (around z).

    The parametric poles collapse to single vertices (merged here), so the mesh is watertight."""

    def spow(x, e):
        x = np.where(np.abs(x) < 1e-9, 0.0, x)  # cos(pi/2) = 6e-17, whose 0.4th power would split the poles
        return np.sign(x) * np.abs(x) ** e

    def fn(u, v):
        w = 2 * np.pi * u - np.pi
        eta = np.pi * v - np.pi / 2
        return np.stack([half[0] * spow(np.cos(eta), e1) * spow(np.cos(w), e2),
                         half[1] * spow(np.cos(eta), e1) * spow(np.sin(w), e2),
                         half[2] * spow(np.sin(eta), e1)], -1)

    v, f = parametric_grid(fn, nu, nv, wrap_u=True)
    mesh = trimesh.Trimesh(v, f, process=False)  # d/du x d/dv points outward here
    mesh.merge_vertices()
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.remove_unreferenced_vertices()
    return mesh


# ---------------------------------------------------------------------------------------------------- textures
def ground_texture(p: np.ndarray) -> np.ndarray:
    """Light concrete with a 0.25 grid of thin lines (scale cues for the reconstruction)."""
    base = ramp(fbm(p * 8.0, 3, seed=81), hex_colors("#adb5bd", "#dee2e6"))
    frac = (p[:, :2] / 0.25) % 1.0
    line = (np.minimum(frac, 1.0 - frac).min(axis=1) < 0.04).astype(np.float64)
    return mix(base, hex_colors("#495057")[0], 0.7 * line)


def cube_texture(p: np.ndarray) -> np.ndarray:
    red, yellow = hex_colors("#e63946", "#ffd166")
    return mix(red, yellow, checker(p + 1e-3, 0.125))


def sphere_texture(p: np.ndarray) -> np.ndarray:
    """Latitude stripes with a wavy phase, blue/white."""
    s = stripes(p[:, 2] + 0.03 * np.sin(angle(p) * 2 * np.pi * 6), 0.08)
    return mix(hex_colors("#118ab2").repeat(len(p), 0), hex_colors("#f8f9fa").repeat(len(p), 0), s)


def cylinder_texture(p: np.ndarray) -> np.ndarray:
    """Helical stripes around the axis (green/cream); the caps get concentric rings."""
    s = stripes(angle(p) * 8.0 + p[:, 2] * 5.0, 1.0)
    ring = stripes(np.linalg.norm(p[:, :2], axis=1), 0.05)
    on_cap = np.abs(p[:, 2]) > 0.299
    s = np.where(on_cap, ring, s)
    return mix(hex_colors("#06d6a0").repeat(len(p), 0), hex_colors("#fefae0").repeat(len(p), 0), s)


def superquadric_texture(p: np.ndarray) -> np.ndarray:
    """Purple with orange polka dots of radius ~0.035 on a 0.1 lattice."""
    q = (p / 0.1) % 1.0 - 0.5
    dot = (np.linalg.norm(q, axis=1) < 0.35).astype(np.float64)
    base = ramp(fbm(p * 10.0, 2, seed=91), hex_colors("#5a189a", "#9d4edd"))
    return mix(base, hex_colors("#ff9f1c")[0], dot)


# ---------------------------------------------------------------------------------------------------- scene
PRIMITIVES = [
    # type, centre, yaw (deg), half extents (local x, y, z), superquadric exponents (e1, e2)
    ("cube", (-0.6, -0.35, 0.25), 25.0, (0.25, 0.25, 0.25), (0.0, 0.0)),
    ("sphere", (0.55, -0.4, 0.3), 0.0, (0.3, 0.3, 0.3), (1.0, 1.0)),
    ("cylinder", (0.15, 0.55, 0.3), 0.0, (0.22, 0.22, 0.3), (0.0, 1.0)),
    ("superquadric", (-0.6, 0.55, 0.2), -30.0, (0.32, 0.2, 0.2), (0.4, 0.4)),
]


def primitive_mesh(kind: str, half) -> tuple[trimesh.Trimesh, bool]:
    """Local-frame mesh of a primitive and whether to shade it smooth."""
    if kind == "cube":
        return trimesh.creation.box(extents=2 * np.asarray(half)), False
    if kind == "sphere":
        return trimesh.creation.icosphere(subdivisions=4, radius=half[0]), True
    if kind == "cylinder":
        return trimesh.creation.cylinder(radius=half[0], height=2 * half[2], sections=64), True
    return superquadric(half, *PRIM_EXPONENTS[kind]), True


PRIM_EXPONENTS = {p[0]: p[4] for p in PRIMITIVES}
TEXTURES = {"cube": cube_texture, "sphere": sphere_texture, "cylinder": cylinder_texture,
            "superquadric": superquadric_texture}


def build() -> tuple[list[Part], np.ndarray, list[trimesh.Trimesh]]:
    """Parts (ground first), primitive poses [K, 4, 4] and the primitives' world meshes."""
    gv, gf = quad(GROUND_SIZE, GROUND_SIZE)
    parts = [Part("ground", gv, gf, Material(ground_texture), smooth=False)]
    poses, meshes = [], []
    for kind, centre, yaw, half, _ in PRIMITIVES:
        pose = translation_matrix(centre) @ rotation_matrix(np.deg2rad(yaw), [0, 0, 1])
        mesh, smooth = primitive_mesh(kind, half)
        parts.append(Part.from_trimesh(kind, mesh, Material(TEXTURES[kind], specular=0.15 if smooth else 0.0),
                                       transform=pose, smooth=smooth))
        poses.append(pose)
        meshes.append(mesh.copy().apply_transform(pose))
    return parts, np.stack(poses), meshes


def generate(resolution: int = 128, n_views: int = 40, ss: int = 2, n_points: int = 6000) -> dict[str, np.ndarray]:
    """Render the scene; returns a bundle (see :mod:`.common`).

    Ground truth: ``gt/primitives/{types [K], poses [K, 4, 4] (local -> world), sizes [K, 3] (half extents along
    the local axes; radius for spheres and cylinders), exponents [K, 2] (superquadric e1, e2: 0 = sharp edge,
    1 = round)}`` for the K solids, ``gt/ground/{pose, sizes}`` for the plane (z = 0, normal +z), ``gt/mesh`` (solids
    and ground), ``gt/objects_mesh`` (solids only), ``gt/depth``, ``gt/normal``, ``gt/mask``, ``gt/object_mask``
    (centre pixel sees a solid, not the ground), ``gt/part`` (+ ``gt/part_names``).
    """
    parts, poses, meshes = build()
    scene = RayScene(parts, Lighting(sun_dir=(0.5, -0.3, 0.8)), background=(1.0, 1.0, 1.0), scale=1.0)
    cams = sphere_poses(n_views, radius=3.4, target=(0, 0, 0.15), min_el_deg=18.0, max_el_deg=72.0, turns_offset=0.3)
    k = np.tile(np.array(pinhole(resolution, resolution, 48.0), dtype=np.float32), (n_views, 1))
    cameras = make_cameras(cams, k, resolution, resolution)
    r = render_views(scene, cameras, ss=ss)

    pts, nrm, pid, tex = sample_parts(parts, n_points, seed=3)
    colors = scene.shade_points(pts, nrm, pid, tex)
    objects = trimesh.util.concatenate(meshes)
    ground = trimesh.Trimesh(parts[0].vertices, parts[0].faces, process=False)
    everything = trimesh.util.concatenate([objects, ground])
    lo, hi = everything.bounds
    return {
        **object_bundle(r, cams, k, pts, colors, everything),
        # A tighter box than the orbit scenes' 10 % pad, with head room above the solids.
        "aabb": np.stack([lo - 0.05, hi + np.array([0.05, 0.05, 0.4])]).astype(np.float32),
        "gt/primitives/types": np.array([p[0] for p in PRIMITIVES]),
        "gt/primitives/poses": poses.astype(np.float32),
        "gt/primitives/sizes": np.array([p[3] for p in PRIMITIVES], np.float32),
        "gt/primitives/exponents": np.array([p[4] for p in PRIMITIVES], np.float32),
        "gt/ground/pose": np.eye(4, dtype=np.float32),
        "gt/ground/sizes": np.array([GROUND_SIZE / 2, GROUND_SIZE / 2, 0.0], np.float32),
        **mesh_arrays("gt/objects_mesh", objects),
        "gt/object_mask": r["part"] >= 1,
        "gt/part": r["part"],
        "gt/part_names": np.array([p.name for p in parts]),
    }
