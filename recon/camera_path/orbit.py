"""The orbit around a capture as a generated path (``recon render --path orbit``)."""

from __future__ import annotations

import numpy as np

from recon.cameras import camera_focus, orbit_poses

from .path import PathFrames


def orbit_path(train_c2w: np.ndarray, fov: float, num_frames: int, times: np.ndarray | None = None) -> PathFrames:
    """``num_frames`` cameras on a circle through the training cameras' mean height, looking at their common focus.

    The circle lies in the plane orthogonal to the cameras' average up vector, at their mean distance from the
    focus; its first camera is above the first training camera.

    Args:
        train_c2w: [N, 4, 4] OpenCV camera-to-world of the training cameras.
        fov: vertical field of view of every frame, degrees.
        num_frames: number of frames (the circle is closed: the last frame is one step before the first).
        times: [num_frames] scene times for dynamic runs, or None.
    """
    c2w = np.asarray(train_c2w, dtype=np.float64)
    centers = c2w[:, :3, 3]
    up = -c2w[:, :3, 1].mean(0)  # OpenCV y points down
    up /= np.linalg.norm(up)
    focus = camera_focus(c2w)
    rel = centers - focus
    height = float((rel @ up).mean())
    radius = float(np.linalg.norm(rel - np.outer(rel @ up, up), axis=1).mean())
    poses = orbit_poses(num_frames, float(np.hypot(radius, height)), float(np.degrees(np.arctan2(height, radius))),
                        target=focus, up=up, start=rel[0])
    return PathFrames(poses, np.full(num_frames, float(fov)), None if times is None else np.asarray(times, np.float64))
