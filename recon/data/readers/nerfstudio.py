"""nerfstudio / instant-ngp ``transforms.json``.

One JSON file lists every frame (``file_path``, OpenGL camera-to-world ``transform_matrix``, optional ``mask_path``
and ``time``) with global or per-frame intrinsics. Quirks handled here:

- frames whose image file does not exist are skipped with one warning that counts them (instant-ngp's fox lists
  67 frames for 50 images);
- ``aabb_scale`` (instant-ngp) becomes a box in the data's frame, undoing instant-ngp's default ``scale`` 0.33 and
  ``offset`` 0.5 (both overridable in the file) that map the data into its unit cube;
- ``applied_transform``/``applied_scale`` (nerfstudio's ns-process-data) say how the file's frame was made from the
  original COLMAP frame. Cameras and ``ply_file_path`` points (written in the file's frame by nerfstudio >= 0.3) are
  reported in the file's frame; the reader option ``undo_applied_transform=True`` maps both back to the original;
- ``train_filenames``/``val_filenames``/``test_filenames`` give the split, else every ``test_every``-th frame;
- ``images_<n>`` / ``masks_<n>`` sibling folders are used for ``downscale=n`` when present (nerfstudio's layout).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from recon.cameras import Cameras
from recon.data.readers.common import (
    LoadOptions,
    find_image,
    held_out_splits,
    image_size,
    json_matrix,
    json_number,
    read_json,
    read_ply_points,
    scale_cameras_to,
    scene_name,
)
from recon.data.readers.transforms import cameras_from_frames, frame_camera, frame_poses, frame_times, frames_list
from recon.data.scene import ImageFiles, SceneData
from recon.errors import ReconError

NAME = "nerfstudio"
DESCRIPTION = "nerfstudio / instant-ngp transforms.json"
LOOKS_FOR = "transforms.json"
OPTIONS = ("undo_applied_transform",)  # reader-specific keyword options of load_scene


def detect(path: Path) -> bool:
    if path.is_file():
        return path.suffix.lower() == ".json" and not path.name.startswith("transforms_")
    return (path / "transforms.json").is_file()


def _norm(name: str) -> str:
    return os.path.normpath(name).replace("\\", "/")


def _downscaled_path(root: Path, rel: str, factor: int) -> Path | None:
    """nerfstudio's convention: ``images/x.jpg`` at downscale n lives in ``images_n/x.jpg``."""
    parts = Path(_norm(rel)).parts
    if factor <= 1 or len(parts) < 2:
        return None
    cand = root.joinpath(f"{parts[0]}_{factor}", *parts[1:])
    return cand if cand.is_file() else None


def load(path: Path, opts: LoadOptions) -> SceneData:
    json_path = path if path.is_file() else path / "transforms.json"
    root = json_path.parent
    meta = read_json(json_path)
    all_frames = frames_list(meta, json_path)

    # Skip frames without images (one warning), keep the rest in file order.
    frames, images, missing = [], [], []
    for frame in all_frames:
        img = find_image(root, frame["file_path"])
        if img is None:
            missing.append(frame["file_path"])
        else:
            frames.append(frame)
            images.append(img)
    warnings = []
    if missing:
        if not frames:
            raise ReconError(
                f"none of the {len(all_frames)} frames has an image file (first: {missing[0]!r})", json_path
            )
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        warnings.append(f"{len(missing)} of {len(all_frames)} frames skipped: image file missing ({shown})")
    labels = [f["file_path"] for f in frames]

    c2w = frame_poses(frames, labels, json_path)
    intr = [frame_camera(meta, f, json_path, lambda p=p: image_size(p)) for f, p in zip(frames, images)]
    cameras = cameras_from_frames(c2w, intr, frame_times(frames, labels, json_path))

    # Masks: all frames or none.
    has_mask = [isinstance(f.get("mask_path"), str) for f in frames]
    mask_paths = None
    if any(has_mask):
        if not all(has_mask):
            raise ReconError(f"mask_path is given for {sum(has_mask)} of {len(frames)} frames (all or none)", json_path)
        mask_paths = []
        for f in frames:
            m = find_image(root, f["mask_path"])
            if m is None:
                raise ReconError(f"mask file {f['mask_path']!r} of frame {f['file_path']!r} is missing", json_path)
            mask_paths.append(m)

    # Downscale: pre-downscaled sibling folders when every image has one, else on load.
    factor = opts.downscale
    on_load = mask_factor = factor
    if factor > 1:
        pre = [_downscaled_path(root, f["file_path"], factor) for f in frames]
        if all(p is not None for p in pre):
            images = pre
            sizes = [image_size(p) for p in pre]
            cameras = scale_cameras_to(cameras, [s[0] for s in sizes], [s[1] for s in sizes])
            on_load = 1
            if mask_paths is not None:
                pre_m = [_downscaled_path(root, f["mask_path"], factor) for f in frames]
                if all(p is not None for p in pre_m):
                    mask_paths, mask_factor = pre_m, 1
        else:
            cameras = cameras.scaled(1.0 / factor)

    # Optional initial points and the applied transform.
    points = colors = None
    if isinstance(meta.get("ply_file_path"), str):
        points, colors = read_ply_points(root / meta["ply_file_path"])
    if opts.extra.get("undo_applied_transform") and "applied_transform" in meta:
        applied = json_matrix(meta["applied_transform"], (4, 4), "applied_transform", json_path)
        scale = json_number(meta, "applied_scale", json_path, 1.0)
        cameras, points = _undo_applied(cameras, points, applied, scale, json_path)

    splits = _splits(meta, frames, json_path, opts.test_every)
    return SceneData(
        name=scene_name(root),
        format=NAME,
        root=root,
        cameras=cameras,
        images=ImageFiles(images, on_load),
        masks=None if mask_paths is None else ImageFiles(mask_paths, mask_factor),
        splits=splits,
        points=points,
        point_colors=colors,
        aabb=_aabb(meta, json_path),
        background=opts.background or (1.0, 1.0, 1.0),
        warnings=warnings,
    )


def _splits(meta: dict, frames: list[dict], source: Path, test_every: int) -> dict[str, np.ndarray]:
    """The file's own ``*_filenames`` lists when present, else every ``test_every``-th frame."""
    keys = {"train": "train_filenames", "val": "val_filenames", "test": "test_filenames"}
    if not any(k in meta for k in keys.values()):
        return held_out_splits(len(frames), test_every)
    index = {_norm(f["file_path"]): i for i, f in enumerate(frames)}
    splits = {}
    for split, key in keys.items():
        if key not in meta:
            continue
        names = meta[key]
        if not isinstance(names, list):
            raise ReconError(f"{key!r} must be a list of file names", source)
        idx = [index[_norm(n)] for n in names if isinstance(n, str) and _norm(n) in index]
        if not idx:
            raise ReconError(f"split {split!r} is empty: none of the {len(names)} {key} has an image", source)
        splits[split] = np.array(idx, dtype=np.int64)
    if "train" not in splits:
        raise ReconError("test_filenames given without train_filenames", source)
    return splits


def _aabb(meta: dict, source: Path) -> np.ndarray | None:
    """instant-ngp's ``aabb_scale`` box in the data's frame.

    instant-ngp maps a data point p to ``scale * p + offset`` and renders the cube [0.5 - a/2, 0.5 + a/2]^3
    (a = aabb_scale); inverting gives ``(0.5 - offset) / scale ± a / (2 * scale)``. (Its axis cycling happens after
    the offset, and the box is a cube, so the cycling does not matter here.)
    """
    a = json_number(meta, "aabb_scale", source)
    if a is None:
        return None
    if a <= 0:
        raise ReconError(f"aabb_scale must be positive, got {a}", source)
    scale = json_number(meta, "scale", source, 0.33)
    offset = np.asarray(meta.get("offset", [0.5, 0.5, 0.5]), dtype=np.float64).reshape(-1)
    if offset.shape != (3,) or scale <= 0:
        raise ReconError("'offset' must be 3 numbers and 'scale' positive", source)
    center = (0.5 - offset) / scale
    half = 0.5 * a / scale
    return np.stack([center - half, center + half]).astype(np.float32)


def _undo_applied(cameras: Cameras, points, applied: np.ndarray, scale: float, source: Path):
    """Map cameras and points from the file's frame back to the original one: x_orig = A^-1 (x_file / s)."""
    R = applied[:3, :3]
    if abs(np.linalg.det(R)) < 1e-9:
        raise ReconError("applied_transform is singular", source)
    inv = np.linalg.inv(applied)
    c2w = cameras.camtoworlds.double().numpy().copy()
    c2w[:, :3, 3] /= scale
    c2w = inv @ c2w
    # Keep the rotation orthonormal (applied_transform is a rotation or a permutation/flip of axes).
    u, _, vt = np.linalg.svd(c2w[:, :3, :3])
    c2w[:, :3, :3] = u @ vt
    cameras = cameras.with_poses(torch.from_numpy(c2w).float())
    if points is not None:
        points = ((points.astype(np.float64) / scale) @ inv[:3, :3].T + inv[:3, 3]).astype(np.float32)
    return cameras, points
