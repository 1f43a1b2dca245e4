"""A hand-held capture to pose: a table top with boxes, walked around by a camera, for ``recon data process``.

Structure from motion needs what real photos have and the other demo scenes avoid: texture that is detailed at
every scale and never repeats (the other scenes' checkers and stripes make SIFT matches ambiguous). Every surface
here carries its own fractal colour noise. The camera orbits the table at a slight bob in height, always looking at
the centre, so consecutive frames overlap like a phone video's; :func:`render` returns the frames and the true
camera-to-world matrices (OpenCV axes) and the intrinsics to check recovered poses against.
"""

from __future__ import annotations

import numpy as np
import trimesh
from trimesh.transformations import rotation_matrix, translation_matrix

from .common import make_cameras, pinhole, render_views
from .gt_raycaster import Lighting, Material, Part, RayScene
from .textures import fbm

VERSION = "1"


def noise_texture(seed: int, scale: float, palette: np.ndarray):
    """Fractal colour noise: three fbm fields (4 octaves) blended into ``palette`` [3, 3] (rows: colours)."""

    def fn(p: np.ndarray) -> np.ndarray:
        q = np.asarray(p, np.float64) * scale
        w = np.stack([fbm(q, octaves=5, seed=seed + 17 * c) for c in range(3)], axis=1)
        w = np.clip((w - 0.5) * 3.0 + 0.5, 0.0, 1.0)
        return np.clip(w @ palette, 0.0, 1.0)

    return fn


def build_parts() -> list[Part]:
    warm = np.array([[0.55, 0.35, 0.2], [0.25, 0.4, 0.15], [0.15, 0.15, 0.3]])
    cool = np.array([[0.2, 0.3, 0.6], [0.5, 0.2, 0.3], [0.2, 0.5, 0.4]])
    table = trimesh.creation.box(extents=[2.4, 2.4, 0.05])
    parts = [Part.from_trimesh("table", table, Material(noise_texture(1, 6.0, warm)), transform=translation_matrix([0, 0, -0.025]), smooth=False)]
    boxes = [((-0.45, -0.3, 0.0), (0.5, 0.35, 0.45), 20.0), ((0.4, 0.35, 0.0), (0.3, 0.45, 0.7), -35.0), ((0.35, -0.5, 0.0), (0.35, 0.3, 0.25), 60.0),
             ((-0.3, 0.5, 0.0), (0.25, 0.25, 0.35), 10.0)]
    for k, (pos, ext, yaw) in enumerate(boxes):
        box = trimesh.creation.box(extents=ext)
        tf = translation_matrix([pos[0], pos[1], ext[2] / 2]) @ rotation_matrix(np.deg2rad(yaw), [0, 0, 1])
        parts.append(Part.from_trimesh(f"box{k}", box, Material(noise_texture(10 + 7 * k, 9.0, cool if k % 2 else warm)), transform=tf, smooth=False))
    return parts


def orbit(n_views: int, radius: float = 2.2, height: float = 1.3, turns: float = 1.0) -> np.ndarray:
    """[N, 4, 4] camera-to-world (OpenCV axes) around the table centre, bobbing +-0.15 in height."""
    from recon.cameras import look_at

    poses = []
    for i in range(n_views):
        a = 2.0 * np.pi * turns * i / n_views
        eye = np.array([radius * np.cos(a), radius * np.sin(a), height + 0.15 * np.sin(3.0 * a)])
        poses.append(look_at(eye, np.array([0.0, 0.0, 0.2]), np.array([0.0, 0.0, 1.0])))
    return np.stack(poses).astype(np.float64)


def render(n_views: int = 24, resolution: int = 192, fov_deg: float = 55.0, ss: int = 1, turns: float = 1.0) -> dict[str, np.ndarray]:
    """``images`` [N, H, W, 3] uint8, ``camtoworlds`` [N, 4, 4], ``intrinsics`` [N, 4] (fx, fy, cx, cy)."""
    scene = RayScene(build_parts(), Lighting(), background=(0.8, 0.85, 0.9), scale=1.0)
    poses = orbit(n_views, turns=turns)
    k = np.tile(np.array(pinhole(resolution, resolution, fov_deg), dtype=np.float32), (n_views, 1))
    r = render_views(scene, make_cameras(poses.astype(np.float32), k, resolution, resolution), ss=ss)
    rgb = r["rgb"] if "rgb" in r else r["color"]
    img = np.clip(np.asarray(rgb)[..., :3], 0.0, 1.0)
    return {"images": (img * 255.0 + 0.5).astype(np.uint8), "camtoworlds": poses, "intrinsics": k}
