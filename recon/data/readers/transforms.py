"""Parsing shared by the ``transforms*.json`` family (nerfstudio, instant-ngp, Blender, D-NeRF).

All of them list frames with a ``file_path`` and a camera-to-world ``transform_matrix`` in OpenGL/Blender camera
axes (x right, y up, z backward), and give intrinsics either globally or per frame as ``fl_x fl_y cx cy w h`` or
as field-of-view angles ``camera_angle_x/y``; nerfstudio adds ``camera_model`` and distortion ``k1..k4 p1 p2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from recon.cameras import Cameras, check_poses, opengl_to_opencv
from recon.data.readers.common import json_matrix, json_number
from recon.errors import ReconError

# nerfstudio camera_model names -> ours. EQUIRECTANGULAR, FISHEYE624 and friends have no equivalent here.
CAMERA_MODEL_NAMES = {
    "PINHOLE": "pinhole",
    "SIMPLE_PINHOLE": "pinhole",
    "OPENCV": "opencv",
    "OPENCV_FISHEYE": "fisheye",
}

DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")  # the order of Cameras.distortion


@dataclass
class FrameCamera:
    """One frame's intrinsics: pixels, model name from :data:`recon.cameras.CAMERA_MODELS`, distortion [6]."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    model: str
    distortion: np.ndarray


def cameras_from_frames(camtoworlds: np.ndarray, intrinsics: list[FrameCamera], times: np.ndarray | None) -> Cameras:
    """Cameras for frames with their own intrinsics records ([N, 4, 4] OpenCV poses, N records, [N] times or None)."""
    return Cameras.create(
        camtoworlds,
        fx=[c.fx for c in intrinsics],
        fy=[c.fy for c in intrinsics],
        cx=[c.cx for c in intrinsics],
        cy=[c.cy for c in intrinsics],
        width=[c.width for c in intrinsics],
        height=[c.height for c in intrinsics],
        model=[c.model for c in intrinsics],
        distortion=np.stack([c.distortion for c in intrinsics]),
        times=times,
    )


def frame_camera(meta: dict, frame: dict, source: Path, image_size: Callable[[], tuple[int, int]]) -> FrameCamera:
    """Intrinsics of ``frame``: per-frame values override the file's global ones.

    Args:
        meta: the whole JSON object (global keys).
        frame: one entry of ``frames``.
        source: the JSON file (for error messages).
        image_size: returns (width, height) of the frame's image; called only when ``w``/``h`` are absent
            (Blender files give only ``camera_angle_x``).
    """

    def get(key: str):
        return json_number(frame, key, source) if key in frame else json_number(meta, key, source)

    w, h = get("w"), get("h")
    if w is None or h is None:
        w, h = image_size()
    if w <= 0 or h <= 0:
        raise ReconError(f"image size {w}x{h} is not positive", source)
    fx, fy = get("fl_x"), get("fl_y")
    ax, ay = get("camera_angle_x"), get("camera_angle_y")
    # instant-ngp's precedence: explicit focal lengths, then field-of-view angles, then square pixels.
    if fx is None and ax is not None:
        fx = 0.5 * w / math.tan(0.5 * ax)
    if fy is None and ay is not None:
        fy = 0.5 * h / math.tan(0.5 * ay)
    if fx is None and fy is None:
        raise ReconError("no focal length: give fl_x/fl_y or camera_angle_x", source)
    fx = fx if fx is not None else fy
    fy = fy if fy is not None else fx
    if fx <= 0 or fy <= 0:
        raise ReconError(f"focal length must be positive (fl_x={fx}, fl_y={fy})", source)
    cx = get("cx")
    cy = get("cy")
    cx = w / 2.0 if cx is None else cx
    cy = h / 2.0 if cy is None else cy

    dist = np.array([get(k) or 0.0 for k in DISTORTION_KEYS], dtype=np.float64)
    raw_model = frame.get("camera_model", meta.get("camera_model"))
    if raw_model is None:
        fisheye = bool(frame.get("is_fisheye", meta.get("is_fisheye", False)))  # instant-ngp's flag
        raw_model = "OPENCV_FISHEYE" if fisheye else "OPENCV"
    if not isinstance(raw_model, str) or raw_model.upper() not in CAMERA_MODEL_NAMES:
        raise ReconError(
            f"unsupported camera_model {raw_model!r} (supported: {', '.join(CAMERA_MODEL_NAMES)})", source
        )
    model = CAMERA_MODEL_NAMES[raw_model.upper()]
    if model == "opencv":
        if dist[3] != 0.0:
            raise ReconError("camera_model OPENCV has no k4 (use OPENCV_FISHEYE for k1..k4)", source)
        if not dist.any():
            model = "pinhole"
    elif model == "fisheye":
        dist[4:] = 0.0  # the equidistant model has no tangential terms
    else:
        dist[:] = 0.0
    return FrameCamera(fx, fy, cx, cy, int(round(w)), int(round(h)), model, dist)


def frame_poses(frames: list[dict], labels: list[str], source: Path) -> np.ndarray:
    """[N, 4, 4] OpenCV camera-to-world matrices from the frames' OpenGL ``transform_matrix``; checked for NaN/inf
    and rigidity, with the offending frame named."""
    out = []
    for frame, label in zip(frames, labels):
        if "transform_matrix" not in frame:
            raise ReconError(f"frame {label!r} has no transform_matrix", source)
        out.append(json_matrix(frame["transform_matrix"], (4, 4), f"transform_matrix of frame {label!r}", source))
    c2w = opengl_to_opencv(np.stack(out)) if out else np.zeros((0, 4, 4))
    for i, label in enumerate(labels):
        try:
            check_poses(c2w[i : i + 1], source)
        except ReconError as err:
            raise ReconError(f"frame {label!r}: {err.message.replace('pose 0 ', 'pose ')}", source) from None
    return c2w


def frame_times(frames: list[dict], labels: list[str], source: Path) -> np.ndarray | None:
    """[N] per-frame ``time`` when every frame has one (None when none has); mixing is an error."""
    has = [isinstance(f, dict) and "time" in f for f in frames]
    if not any(has):
        return None
    if not all(has):
        raise ReconError(f"frame {labels[has.index(False)]!r} has no 'time' but others do", source)
    times = np.array([json_number(f, "time", source) for f in frames], dtype=np.float64)
    if times.min() < -1e-6 or times.max() > 1 + 1e-6:
        raise ReconError(f"frame times must lie in [0, 1] (found {times.min():.4g} to {times.max():.4g})", source)
    return np.clip(times, 0.0, 1.0)


def frames_list(meta, source: Path) -> list[dict]:
    """``meta['frames']`` checked to be a non-empty list of objects with a ``file_path``."""
    if not isinstance(meta, dict):
        raise ReconError("expected a JSON object with a 'frames' list", source)
    frames = meta.get("frames")
    if not isinstance(frames, list):
        raise ReconError("no 'frames' list", source)
    if not frames:
        raise ReconError("'frames' is empty", source)
    for i, f in enumerate(frames):
        if not isinstance(f, dict) or not isinstance(f.get("file_path"), str):
            raise ReconError(f"frame {i} has no 'file_path'", source)
    return frames
