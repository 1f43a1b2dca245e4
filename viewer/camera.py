"""Conversions between viser's browser camera and recon's :class:`~recon.cameras.Cameras`.

viser reports a client's camera as ``wxyz`` (the rotation R in ``P_world = R p_camera + t``), ``position`` (t), a
*vertical* field of view in radians and the canvas size in pixels. Its camera axes already follow OpenCV (the
look direction is +z, image "up" is -y, x points right; see ``viser.CameraHandle.wxyz``), which is also recon's
convention, so the camera-to-world matrix is simply ``[R | t]`` with no axis flips. The intrinsics are those of a
pinhole camera with square pixels and the principal point in the image centre, because that is what the browser's
three.js ``PerspectiveCamera`` draws with: rendering with them makes the background image line up with the scene
nodes (frustums, splats, meshes) that the browser draws itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from recon.cameras import Cameras
from recon.rotations import quat_to_rotmat, rotmat_to_quat


@dataclass(frozen=True)
class ViewCamera:
    """A browser camera, as viser reports it (everything in the normalised scene frame).

    Attributes:
        wxyz: [4] rotation camera -> world, OpenCV axes.
        position: [3] camera centre.
        fov: vertical field of view, radians.
        width, height: canvas size in (CSS) pixels; only their ratio and magnitude matter, the render size is
            chosen by :func:`render_size`.
    """

    wxyz: tuple[float, float, float, float]
    position: tuple[float, float, float]
    fov: float
    width: int
    height: int

    @staticmethod
    def from_handle(camera) -> "ViewCamera":
        """Snapshot a ``viser.CameraHandle`` (the handle's state changes under our feet as messages arrive)."""
        return ViewCamera(
            wxyz=tuple(float(v) for v in camera.wxyz),
            position=tuple(float(v) for v in camera.position),
            fov=float(camera.fov),
            width=max(int(camera.image_width), 1),
            height=max(int(camera.image_height), 1),
        )

    @property
    def aspect(self) -> float:
        return self.width / self.height

    def camtoworld(self) -> np.ndarray:
        """[4, 4] float64 OpenCV camera-to-world matrix."""
        c2w = np.eye(4)
        c2w[:3, :3] = quat_to_rotmat(np.asarray(self.wxyz, dtype=np.float64))
        c2w[:3, 3] = self.position
        return c2w


def render_size(aspect: float, max_side: int) -> tuple[int, int]:
    """(width, height) of a render with the canvas' aspect ratio whose longer side is ``max_side`` pixels."""
    max_side = max(int(max_side), 8)
    if aspect >= 1.0:
        w, h = max_side, max_side / aspect
    else:
        w, h = max_side * aspect, max_side
    return max(int(round(w)), 1), max(int(round(h)), 1)


def to_cameras(view: ViewCamera, width: int, height: int, device: torch.device | str = "cpu") -> Cameras:
    """The :class:`Cameras` (batch of one, pinhole) that sees what the browser shows, rendered at width x height.

    The vertical field of view fixes fy; pixels are square (fx = fy) and the principal point is the image centre
    (pixel centres at +0.5 means the centre is at (W/2, H/2)).
    """
    fy = 0.5 * height / math.tan(0.5 * view.fov)
    cams = Cameras.create(view.camtoworld()[None], fy, fy, width / 2.0, height / 2.0, width, height)
    return cams.to(device)


def from_camtoworld(c2w: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(wxyz, position) of an OpenCV camera-to-world matrix, for viser (frustums, jumping to a training view)."""
    c2w = np.asarray(c2w, dtype=np.float64)
    return rotmat_to_quat(c2w[:3, :3]), c2w[:3, 3].copy()


def vertical_fov(cameras: Cameras, index: int) -> float:
    """Vertical field of view (radians) of camera ``index`` (pinhole approximation)."""
    return float(2.0 * math.atan(0.5 * float(cameras.heights[index]) / float(cameras.fy[index])))


def scene_up(cameras: Cameras) -> np.ndarray:
    """The mean "up" direction of cameras (-y in OpenCV axes), normalised; +z if the cameras disagree entirely.

    Used as the browser's up direction so that orbiting feels natural for captures that are not z-up.
    """
    ups = -cameras.camtoworlds[:, :3, 1].double().numpy()
    up = ups.mean(0)
    n = np.linalg.norm(up)
    return up / n if n > 1e-6 else np.array([0.0, 0.0, 1.0])


def look_at_point(c2w: np.ndarray, target: np.ndarray | None = None) -> np.ndarray:
    """A point on the camera's optical axis for viser's orbit controls: the one closest to ``target`` (default:
    the origin, which normalised scenes are centred on), at least a small distance in front of the camera."""
    c2w = np.asarray(c2w, dtype=np.float64)
    target = np.zeros(3) if target is None else np.asarray(target, dtype=np.float64)
    eye, fwd = c2w[:3, 3], c2w[:3, 2]
    dist = float((target - eye) @ fwd)
    if not math.isfinite(dist) or dist < 1e-3:
        dist = max(float(np.linalg.norm(target - eye)), 1.0)
    return eye + dist * fwd
