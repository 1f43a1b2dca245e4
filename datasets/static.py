"""``static``: a colourful textured toy on a pedestal, seen from 48 views all around (NeRF-synthetic style).

The object is a small assembly (striped pedestal, checkered ball, rainbow torus ring tilted around it, a striped
cone hat, two marbled cubes) with texture detail down to a few pixels, so novel-view PSNR separates good
reconstructions from blurry ones, and with a glossy ball so that view-dependent colour matters a little.

Images are RGBA with a transparent background (white by convention), 128 x 128, every 8th view held out for test.
"""

from __future__ import annotations

import numpy as np
import trimesh
from trimesh.transformations import rotation_matrix, translation_matrix

from .common import make_cameras, object_bundle, pinhole, render_views, sphere_poses
from .gt_raycaster import Lighting, Material, Part, RayScene, sample_parts
from .textures import angle, checker, fbm, hex_colors, mix, ramp, stripes

NAME = "static"
VERSION = "1"

PALETTE = hex_colors("#e63946", "#f4a261", "#e9c46a", "#2a9d8f", "#457b9d", "#8338ec", "#ff006e")


# ---------------------------------------------------------------------------------------------------- textures
def pedestal_texture(p: np.ndarray) -> np.ndarray:
    """Wood-like stain with 24 dark grooves around the axis and fine grain noise."""
    grain = fbm(p * np.array([40.0, 40.0, 6.0]), octaves=3, seed=1)
    base = ramp(grain, hex_colors("#7f5539", "#b08968", "#ddb892"))
    grooves = stripes(angle(p), 1.0 / 24.0, duty=0.18)
    return mix(base, hex_colors("#3d2b1f")[0], 0.7 * grooves)


def ball_texture(p: np.ndarray) -> np.ndarray:
    """A 3D checker (cells ~0.09) of two palette colours, with a noise tint so no two cells look alike."""
    c = checker(p + 0.013, 0.09)
    tint = fbm(p * 9.0, octaves=2, seed=2)
    a = mix(PALETTE[[4]].repeat(len(p), 0), PALETTE[[3]].repeat(len(p), 0), tint)
    b = mix(PALETTE[[2]].repeat(len(p), 0), PALETTE[[1]].repeat(len(p), 0), tint)
    return mix(a, b, c)


def ring_texture(p: np.ndarray) -> np.ndarray:
    """Rainbow along the ring with thin white bands every 10 degrees."""
    t = angle(p)
    col = ramp(t, np.concatenate([PALETTE, PALETTE[:1]]))
    bands = stripes(t, 1.0 / 36.0, duty=0.2)
    return mix(col, np.ones(3), 0.85 * bands)


def cone_texture(p: np.ndarray) -> np.ndarray:
    """Horizontal stripes (period 0.06) alternating magenta / cream, twisted a little around the axis."""
    s = stripes(p[:, 2] + 0.05 * angle(p), 0.06)
    return mix(hex_colors("#fefae0").repeat(len(p), 0), PALETTE[[6]].repeat(len(p), 0), s)


def cube_texture(seed: int):
    """Marble: a colour ramp of turbulent fbm, different per cube."""

    def tex(p: np.ndarray) -> np.ndarray:
        n = fbm(p * 7.0, octaves=4, seed=seed)
        veins = np.abs(np.sin(12.0 * p[:, 0] + 9.0 * n))
        cols = hex_colors("#1d3557", "#a8dadc", "#f1faee") if seed % 2 else hex_colors("#6a040f", "#e85d04", "#ffba08")
        return ramp(veins, cols)

    return tex


# ---------------------------------------------------------------------------------------------------- geometry
def build_parts() -> list[Part]:
    """The object's parts in world coordinates (z up, centred near the origin, about 1.2 units across)."""
    parts = [
        Part.from_trimesh(
            "pedestal",
            trimesh.creation.cylinder(radius=0.55, height=0.2, sections=64),
            Material(pedestal_texture),
            transform=translation_matrix([0, 0, -0.5]),
        ),
        Part.from_trimesh(
            "ball",
            trimesh.creation.icosphere(subdivisions=4, radius=0.33),
            Material(ball_texture, specular=0.35, shininess=60.0),
            transform=translation_matrix([0, 0, -0.06]),
        ),
        Part.from_trimesh(
            "ring",
            trimesh.creation.torus(major_radius=0.5, minor_radius=0.07, major_sections=96, minor_sections=24),
            Material(ring_texture),
            transform=translation_matrix([0, 0, -0.06]) @ rotation_matrix(np.deg2rad(28), [1, 0.3, 0]),
        ),
        Part.from_trimesh(
            "cone",
            trimesh.creation.cone(radius=0.2, height=0.38, sections=48),
            Material(cone_texture),
            transform=translation_matrix([0, 0, 0.22]),
        ),
    ]
    for k, (x, y, yaw) in enumerate([(0.36, 0.22, 20.0), (-0.3, -0.28, -35.0)]):
        parts.append(
            Part.from_trimesh(
                f"cube{k}",
                trimesh.creation.box(extents=[0.16, 0.16, 0.16]),
                Material(cube_texture(10 + k)),
                transform=translation_matrix([x, y, -0.32]) @ rotation_matrix(np.deg2rad(yaw), [0, 0, 1]),
                smooth=False,
            )
        )
    return parts


def generate(resolution: int = 128, n_views: int = 48, ss: int = 2, n_points: int = 6000) -> dict[str, np.ndarray]:
    """Render the scene; returns a bundle (see :mod:`.common`).

    Ground truth: ``gt/mesh`` (all parts), ``gt/depth`` [N, H, W] camera-z (0 = background), ``gt/normal``
    [N, H, W, 3] world normals facing the camera, ``gt/mask`` [N, H, W] centre-ray hits, ``gt/part`` [N, H, W]
    part index (-1 = background) with ``gt/part_names``.
    """
    parts = build_parts()
    lighting = Lighting()
    scene = RayScene(parts, lighting, background=(1.0, 1.0, 1.0), scale=1.0)
    poses = sphere_poses(n_views, radius=2.8, target=(0, 0, -0.1), min_el_deg=-25.0, max_el_deg=72.0)
    k = np.tile(np.array(pinhole(resolution, resolution, 40.0), dtype=np.float32), (n_views, 1))
    cameras = make_cameras(poses, k, resolution, resolution)
    r = render_views(scene, cameras, ss=ss)

    pts, nrm, pid, tex = sample_parts(parts, n_points, seed=7)
    colors = scene.shade_points(pts, nrm, pid, tex)
    mesh = trimesh.util.concatenate([trimesh.Trimesh(p.vertices, p.faces, process=False) for p in parts])
    mesh.merge_vertices()  # undo the crease splits: the ground-truth mesh is the connected surface
    return {
        **object_bundle(r, poses, k, pts, colors, mesh),
        "gt/part": r["part"],
        "gt/part_names": np.array([p.name for p in parts]),
    }
