"""Shared pieces of the demo scenes: camera rigs, rendering a list of views, and the flat-array scene bundle.

Every scene module's ``generate()`` returns a *bundle*: a flat ``dict[str, np.ndarray]`` that the cache stores as is
and :func:`bundle_to_scene` turns into a :class:`SceneData`. Keys:

- ``images`` [N, H, W, C] uint8 (C = 4: RGBA with straight alpha; C = 3: opaque);
- ``camtoworlds`` [N, 4, 4] float32 (OpenCV axes), ``intrinsics`` [N, 4] float32 (fx, fy, cx, cy);
- optional ``times`` [N], ``frame_ids`` [N], ``camera_ids`` [N];
- ``split/<name>`` int64 frame indices; ``points`` [P, 3], ``point_colors`` [P, 3], ``aabb`` [2, 3],
  ``background`` [3];
- ``gt/...``: ground truth, unflattened on load into nested dicts; a dict with exactly the keys ``vertices`` and
  ``faces`` becomes a ``trimesh.Trimesh``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import trimesh

from recon.cameras import Cameras, look_at
from recon.data.scene import ArrayImages, SceneData

from .gt_raycaster import RayScene


# ---------------------------------------------------------------------------------------------------- cameras
def pinhole(width: int, height: int, fov_deg: float) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) of a centred pinhole camera with horizontal field of view ``fov_deg``."""
    fx = 0.5 * width / np.tan(0.5 * np.deg2rad(fov_deg))
    return fx, fx, width / 2.0, height / 2.0


def sphere_poses(n: int, radius: float, target=(0.0, 0.0, 0.0), min_el_deg: float = -30.0, max_el_deg: float = 75.0,
                 turns_offset: float = 0.0) -> np.ndarray:
    """[n, 4, 4] OpenCV camera-to-world poses spread evenly over a band of a sphere (z up), looking at ``target``.

    A Fibonacci spiral over the band: uniform coverage without the clustering of a latitude grid, and consecutive
    views are far apart, so an every-8th test split samples the whole band.
    """
    target = np.asarray(target, dtype=np.float64)
    z0, z1 = np.sin(np.deg2rad(min_el_deg)), np.sin(np.deg2rad(max_el_deg))
    i = np.arange(n) + 0.5
    z = z0 + (z1 - z0) * i / n  # uniform in z = uniform in area on the sphere
    az = 2 * np.pi * turns_offset + i * np.pi * (3.0 - np.sqrt(5.0))
    rxy = np.sqrt(1.0 - z * z)
    eyes = target + radius * np.stack([rxy * np.cos(az), rxy * np.sin(az), z], 1)
    return np.stack([look_at(e, target) for e in eyes]).astype(np.float32)


def make_cameras(camtoworlds: np.ndarray, intrinsics: np.ndarray, width: int, height: int,
                 times: np.ndarray | None = None) -> Cameras:
    """Cameras from [N, 4, 4] poses and [N, 4] (fx, fy, cx, cy)."""
    k = np.asarray(intrinsics, dtype=np.float64)
    return Cameras.create(camtoworlds, k[:, 0], k[:, 1], k[:, 2], k[:, 3], width, height, times=times)


# ---------------------------------------------------------------------------------------------------- rendering
def render_views(scene: RayScene, cameras: Cameras, indices: Sequence[int] | None = None, ss: int = 2
                 ) -> dict[str, np.ndarray]:
    """Render cameras ``indices`` (default all) and stack each output of :meth:`RayScene.render` to [N, ...]."""
    indices = range(len(cameras)) if indices is None else indices
    outs = [scene.render(cameras, int(i), ss=ss) for i in indices]
    return {k: np.stack([o[k] for o in outs]) for k in outs[0]}


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(x) * 255.0), 0, 255).astype(np.uint8)


def rgba_uint8(renders: dict[str, np.ndarray]) -> np.ndarray:
    """[N, H, W, 4] uint8 RGBA from stacked renders; colour is zeroed where alpha is 0 (as Blender writes it)."""
    rgb = np.where(renders["alpha"][..., None] > 0, renders["rgb"], 0.0)
    return np.concatenate([to_uint8(rgb), to_uint8(renders["alpha"])[..., None]], -1)


# ---------------------------------------------------------------------------------------------------- bundles
def object_bundle(renders: dict[str, np.ndarray], poses: np.ndarray, intrinsics: np.ndarray, points: np.ndarray,
                  point_colors: np.ndarray, mesh: trimesh.Trimesh) -> dict[str, np.ndarray]:
    """The arrays every orbit-around-an-object demo scene shares: RGBA images over white, every 8th view as test,
    surface points with colours, a box padded by 10 % around the mesh, the mesh and the depth/normal/mask maps."""
    lo, hi = mesh.bounds
    pad = 0.1 * (hi - lo).max()
    return {
        "images": rgba_uint8(renders),
        "camtoworlds": poses,
        "intrinsics": intrinsics,
        **every_8th_test(len(poses)),
        "points": points.astype(np.float32),
        "point_colors": point_colors,
        "aabb": np.stack([lo - pad, hi + pad]).astype(np.float32),
        "background": np.ones(3, dtype=np.float32),
        **mesh_arrays("gt/mesh", mesh),
        "gt/depth": renders["depth"],
        "gt/normal": renders["normal"],
        "gt/mask": renders["part"] >= 0,
    }


def every_8th_test(n: int) -> dict[str, np.ndarray]:
    """Bundle entries ``split/train`` and ``split/test`` for ``n`` views: every 8th view (0, 8, ...) is a test view."""
    idx = np.arange(n)
    return {"split/train": idx[idx % 8 != 0], "split/test": idx[idx % 8 == 0]}


def mesh_arrays(prefix: str, mesh: trimesh.Trimesh | tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    """Bundle entries ``<prefix>/vertices`` (float32) and ``<prefix>/faces`` (int64) of a mesh."""
    v, f = (mesh.vertices, mesh.faces) if isinstance(mesh, trimesh.Trimesh) else mesh
    return {f"{prefix}/vertices": np.asarray(v, dtype=np.float32), f"{prefix}/faces": np.asarray(f, dtype=np.int64)}


def unflatten(flat: dict[str, np.ndarray]) -> dict:
    """``{'a/b': x}`` -> ``{'a': {'b': x}}``; ``{vertices, faces}`` leaves become trimesh meshes."""
    root: dict = {}
    for key, value in flat.items():
        node = root
        *path, leaf = key.split("/")
        for p in path:
            node = node.setdefault(p, {})
        node[leaf] = value

    def convert(node):
        if not isinstance(node, dict):
            return node
        if set(node) == {"vertices", "faces"}:
            return trimesh.Trimesh(node["vertices"], node["faces"], process=False)
        return {k: convert(v) for k, v in node.items()}

    return convert(root)


def bundle_to_scene(name: str, bundle: dict[str, np.ndarray], root: Path) -> SceneData:
    """Turn a generator's bundle into the :class:`SceneData` (format ``demo:<name>``, name ``demo-<name>``)."""
    images = bundle["images"]
    n, h, w = images.shape[:3]
    times = bundle.get("times")
    cameras = make_cameras(bundle["camtoworlds"], bundle["intrinsics"], w, h, times=times)
    splits = {k.split("/", 1)[1]: v.astype(np.int64) for k, v in bundle.items() if k.startswith("split/")}
    gt = unflatten({k.split("/", 1)[1]: v for k, v in bundle.items() if k.startswith("gt/")})
    opt = {k: bundle[k] for k in ("points", "point_colors", "aabb", "frame_ids", "camera_ids") if k in bundle}
    for k in ("frame_ids", "camera_ids"):
        if k in opt:
            opt[k] = opt[k].astype(np.int64)
    return SceneData(
        name=f"demo-{name}",
        format=f"demo:{name}",
        root=Path(root),
        cameras=cameras,
        images=ArrayImages(images, name=f"demo:{name}"),
        splits=splits,
        background=tuple(float(x) for x in bundle.get("background", np.ones(3))),
        ground_truth=gt,
        **opt,
    )
