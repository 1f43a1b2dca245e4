"""Writers for the formats the readers read: cameras + images -> a data folder in that format.

Used by the tests (one synthetic scene written in every format must load back to the same cameras) and useful for
converting demo scenes into standard layouts. Each writer is the exact inverse of its reader's conventions:
OpenGL poses for transforms.json, world-to-camera quaternions for COLMAP, [down, right, back] for LLFF, integer pixel
centres for NeuS.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from recon.cameras import Cameras, opencv_to_opengl
from recon.data.readers.colmap_model import ColmapCamera, ColmapImage, write_model
from recon.data.readers.common import rigid_inverse
from recon.data.readers.llff import opencv_to_llff
from recon.data.readers.neus import PIXEL_CENTER_SHIFT
from recon.rotations import rotmat_to_quat

_MODEL_TO_NERFSTUDIO = {"pinhole": "PINHOLE", "opencv": "OPENCV", "fisheye": "OPENCV_FISHEYE"}


def _c2w(cameras: Cameras) -> np.ndarray:
    return cameras.camtoworlds.double().numpy()


def _write_images(folder: Path, images: Sequence[np.ndarray], names: Sequence[str]) -> None:
    import imageio.v3 as iio

    folder.mkdir(parents=True, exist_ok=True)
    for img, name in zip(images, names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(folder / name, np.asarray(img, dtype=np.uint8))


def _default_names(n: int, ext: str = ".png") -> list[str]:
    return [f"{i:04d}{ext}" for i in range(n)]


def _require_centered_pinhole(cameras: Cameras, fmt: str) -> None:
    if not cameras.is_pinhole:
        raise ValueError(f"{fmt} stores pinhole cameras only")
    centred = np.allclose(cameras.cx, cameras.widths / 2) and np.allclose(cameras.cy, cameras.heights / 2)
    if not (np.allclose(cameras.fx, cameras.fy) and centred):
        raise ValueError(f"{fmt} stores square pixels with the principal point at the image centre only")


def write_nerfstudio(root: Path, cameras: Cameras, images: Sequence[np.ndarray], *, names: Sequence[str] | None = None,
                     points: np.ndarray | None = None, colors: np.ndarray | None = None) -> Path:
    """``root/transforms.json`` + ``root/images/`` with per-frame intrinsics; returns the JSON path."""
    names = list(names or _default_names(len(cameras)))
    _write_images(root / "images", images, names)
    c2w = opencv_to_opengl(_c2w(cameras))
    frames = []
    for i in range(len(cameras)):
        k1, k2, k3, k4, p1, p2 = (float(v) for v in cameras.distortion[i])
        frames.append({
            "file_path": f"images/{names[i]}",
            "transform_matrix": c2w[i].tolist(),
            "camera_model": _MODEL_TO_NERFSTUDIO[cameras.model_names[i]],
            "fl_x": float(cameras.fx[i]), "fl_y": float(cameras.fy[i]),
            "cx": float(cameras.cx[i]), "cy": float(cameras.cy[i]),
            "w": int(cameras.widths[i]), "h": int(cameras.heights[i]),
            "k1": k1, "k2": k2, "k3": k3, "k4": k4, "p1": p1, "p2": p2,
        })
    meta: dict = {"frames": frames}
    if points is not None:
        write_ply_points(root / "points.ply", points, colors)
        meta["ply_file_path"] = "points.ply"
    path = root / "transforms.json"
    path.write_text(json.dumps(meta, indent=2))
    return path


def write_blender(root: Path, cameras: Cameras, images: Sequence[np.ndarray], splits: dict[str, np.ndarray],
                  times: np.ndarray | None = None) -> None:
    """``transforms_<split>.json`` + ``<split>/r_<i>.png`` (names without extension, as Blender exports them)."""
    _require_centered_pinhole(cameras, "Blender")
    c2w = opencv_to_opengl(_c2w(cameras))
    for split, idx in splits.items():
        idx = np.asarray(idx)
        w = float(cameras.widths[idx[0]])
        angle = 2.0 * np.arctan(0.5 * w / float(cameras.fx[idx[0]]))
        frames = []
        for j, i in enumerate(idx):
            _write_images(root / split, [images[i]], [f"r_{j}.png"])
            frame = {"file_path": f"./{split}/r_{j}", "rotation": 0.0, "transform_matrix": c2w[i].tolist()}
            if times is not None:
                frame["time"] = float(times[i])
            frames.append(frame)
        (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": angle, "frames": frames}, indent=2))


def write_colmap(root: Path, cameras: Cameras, images: Sequence[np.ndarray], *, ext: str = ".bin",
                 points: np.ndarray | None = None, colors: np.ndarray | None = None,
                 names: Sequence[str] | None = None, subdir: str = "sparse/0") -> None:
    """``root/images/`` + ``root/<subdir>/{cameras,images,points3D}<ext>``, one COLMAP camera per image."""
    names = list(names or _default_names(len(cameras)))
    _write_images(root / "images", images, names)
    w2c = rigid_inverse(_c2w(cameras))
    cams, imgs = [], []
    for i in range(len(cameras)):
        fx, fy, cx, cy = (float(v[i]) for v in (cameras.fx, cameras.fy, cameras.cx, cameras.cy))
        k1, k2, k3, k4, p1, p2 = (float(v) for v in cameras.distortion[i])
        model = cameras.model_names[i]
        if model == "pinhole":
            name, params = "PINHOLE", [fx, fy, cx, cy]
        elif model == "opencv" and k3 == 0:
            name, params = "OPENCV", [fx, fy, cx, cy, k1, k2, p1, p2]
        elif model == "opencv":
            name, params = "FULL_OPENCV", [fx, fy, cx, cy, k1, k2, p1, p2, k3, 0, 0, 0]
        else:
            name, params = "OPENCV_FISHEYE", [fx, fy, cx, cy, k1, k2, k3, k4]
        cams.append(ColmapCamera(i + 1, name, int(cameras.widths[i]), int(cameras.heights[i]), np.array(params)))
        imgs.append(ColmapImage(i + 1, rotmat_to_quat(w2c[i, :3, :3]), w2c[i, :3, 3], i + 1, names[i]))
    xyz = np.zeros((0, 3)) if points is None else np.asarray(points, dtype=np.float64)
    rgb = np.zeros((len(xyz), 3), np.uint8) if colors is None else np.round(np.asarray(colors) * 255).astype(np.uint8)
    write_model(root / subdir, cams, imgs, xyz, rgb, ext)


def write_llff(root: Path, cameras: Cameras, images: Sequence[np.ndarray], near_far: np.ndarray) -> None:
    """``root/poses_bounds.npy`` + ``root/images/``."""
    _require_centered_pinhole(cameras, "LLFF")
    _write_images(root / "images", images, _default_names(len(cameras)))
    np.save(root / "poses_bounds.npy", poses_bounds_array(cameras, near_far))


def poses_bounds_array(cameras: Cameras, near_far: np.ndarray) -> np.ndarray:
    """[N, 17] LLFF/N3DV array for centred pinhole cameras."""
    poses = opencv_to_llff(_c2w(cameras))
    hwf = np.stack([cameras.heights.double().numpy(), cameras.widths.double().numpy(), cameras.fx.double().numpy()], -1)
    mats = np.concatenate([poses, hwf[:, :, None]], -1)  # [N, 3, 5]
    return np.concatenate([mats.reshape(-1, 15), np.asarray(near_far, dtype=np.float64).reshape(-1, 2)], 1)


def write_neus(root: Path, cameras: Cameras, images: Sequence[np.ndarray], masks: Sequence[np.ndarray] | None = None,
               scale_mat: np.ndarray | None = None) -> None:
    """``root/cameras_sphere.npz`` (world_mat_i = K [R | t] with integer pixel centres, scale_mat_i) + image/ + mask/."""
    _write_images(root / "image", images, [f"{i:06d}.png" for i in range(len(cameras))])
    if masks is not None:
        _write_images(root / "mask", masks, [f"{i:03d}.png" for i in range(len(cameras))])
    w2c = rigid_inverse(_c2w(cameras))
    S = np.eye(4) if scale_mat is None else np.asarray(scale_mat, dtype=np.float64)
    arrays = {}
    for i in range(len(cameras)):
        K = np.eye(4)
        K[0, 0], K[1, 1] = float(cameras.fx[i]), float(cameras.fy[i])
        K[0, 2], K[1, 2] = float(cameras.cx[i]) - PIXEL_CENTER_SHIFT, float(cameras.cy[i]) - PIXEL_CENTER_SHIFT
        arrays[f"world_mat_{i}"] = K @ w2c[i]
        arrays[f"scale_mat_{i}"] = S
    np.savez(root / "cameras_sphere.npz", **arrays)


def write_n3dv(root: Path, cameras: Cameras, videos: Sequence[np.ndarray], near_far: np.ndarray, fps: float = 30.0) -> None:
    """``root/poses_bounds.npy`` (one row per camera) + ``root/camXX.mp4`` from uint8 [T, H, W, 3] frames."""
    from recon.data.video import write_video

    _require_centered_pinhole(cameras, "N3DV")
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "poses_bounds.npy", poses_bounds_array(cameras, near_far))
    for i, frames in enumerate(videos):
        write_video(root / f"cam{i:02d}.mp4", frames, fps=fps)


def write_ply_points(path: Path, points: np.ndarray, colors: np.ndarray | None = None) -> None:
    """A PLY point cloud (x, y, z float32 and, when given, red/green/blue uint8 from colours in [0, 1])."""
    from plyfile import PlyData, PlyElement

    fields = [("x", "f4"), ("y", "f4"), ("z", "f4")]
    if colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    arr = np.zeros(len(points), dtype=fields)
    for k, name in enumerate("xyz"):
        arr[name] = points[:, k]
    if colors is not None:
        rgb = np.round(np.clip(colors, 0, 1) * 255).astype(np.uint8)
        for k, name in enumerate(("red", "green", "blue")):
            arr[name] = rgb[:, k]
    path.parent.mkdir(parents=True, exist_ok=True)
    PlyData([PlyElement.describe(arr, "vertex")]).write(str(path))
