"""A camera path: keyframes (pose, field of view, scene time) and how to move through them.

Poses are OpenCV camera-to-world matrices in whatever frame the caller works in (the viewer and the renderer use
the run's normalised frame; files hold the data frame, see :mod:`.nerfstudio`). Fields of view are *vertical*,
in degrees, as in nerfstudio's files and viser's camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from recon.cameras import Cameras
from recon.errors import ReconError
from recon.rotations import quat_to_rotmat, rotmat_to_quat

from . import spline


@dataclass
class Keyframe:
    """One keyframe.

    Attributes:
        camtoworld: [4, 4] OpenCV camera-to-world.
        fov: vertical field of view, degrees.
        time: scene time in [0, 1] (dynamic scenes), else None.
    """

    camtoworld: np.ndarray
    fov: float
    time: float | None = None


@dataclass
class PathFrames:
    """Sampled cameras along a path (what gets rendered).

    Attributes:
        camtoworlds: [N, 4, 4] OpenCV camera-to-world.
        fovs: [N] vertical field of view, degrees.
        times: [N] scene times in [0, 1], or None (static).
    """

    camtoworlds: np.ndarray
    fovs: np.ndarray
    times: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.camtoworlds)

    def mapped(self, c2w_map) -> "PathFrames":
        """The same frames with ``c2w_map([N, 4, 4]) -> [N, 4, 4]`` applied to the poses (a change of frame)."""
        return replace(self, camtoworlds=np.asarray(c2w_map(self.camtoworlds.copy()), dtype=np.float64))

    def cameras(self, width: int, height: int) -> Cameras:
        """Pinhole :class:`Cameras` of ``width`` x ``height`` pixels, square pixels, centred principal point."""
        if width < 1 or height < 1:
            raise ReconError(f"render size must be positive, got {width}x{height}")
        fy = 0.5 * height / np.tan(0.5 * np.radians(self.fovs))
        return Cameras.create(self.camtoworlds, fy, fy, width / 2.0, height / 2.0, width, height,
                              times=None if self.times is None else self.times)


@dataclass
class CameraPath:
    """Keyframes and the timing of the video made from them.

    Attributes:
        keyframes: at least two (checked by :meth:`frames`).
        seconds: duration of the video.
        fps: frames per second.
        tension: Kochanek-Bartels tension in [0, 1] (0: Catmull-Rom; nerfstudio calls it "smoothness").
        loop: the path returns to the first keyframe (a closed curve).
        constant_speed: move at constant speed along the curve instead of spending equal time per segment.
        width, height: render size in pixels.
    """

    keyframes: list[Keyframe] = field(default_factory=list)
    seconds: float = 4.0
    fps: float = 24.0
    tension: float = 0.0
    loop: bool = False
    constant_speed: bool = False
    width: int = 640
    height: int = 480

    @property
    def num_frames(self) -> int:
        return max(int(round(self.seconds * self.fps)), 1)

    @property
    def is_dynamic(self) -> bool:
        return any(k.time is not None for k in self.keyframes)

    def check(self, source=None) -> None:
        """Raise a one-line :class:`ReconError` (naming ``source``) when the path cannot be sampled."""
        if len(self.keyframes) < 2:
            raise ReconError(f"a camera path needs at least 2 keyframes, got {len(self.keyframes)}", source)
        times = [k.time for k in self.keyframes]
        if any(t is not None for t in times) and any(t is None for t in times):
            raise ReconError("either every keyframe has a time or none has", source)
        for i, t in enumerate(times):
            if t is not None and not (0.0 <= t <= 1.0):
                raise ReconError(f"keyframe {i} has time {t:g}, outside [0, 1]", source)
        for i, k in enumerate(self.keyframes):
            if not (0.0 < k.fov < 180.0):
                raise ReconError(f"keyframe {i} has field of view {k.fov:g} degrees, outside (0, 180)", source)
        if not (self.seconds > 0 and self.fps > 0):
            raise ReconError(f"seconds and fps must be positive, got {self.seconds:g} s at {self.fps:g} fps", source)
        if not (0.0 <= self.tension <= 1.0):
            raise ReconError(f"tension must be in [0, 1], got {self.tension:g}", source)

    def parameters(self, fractions: np.ndarray) -> np.ndarray:
        """Spline parameters [M] for path fractions [M] in [0, 1] (constant speed or equal time per segment)."""
        n = spline.num_segments(len(self.keyframes), self.loop)
        if self.constant_speed:
            pos = np.stack([k.camtoworld[:3, 3] for k in self.keyframes])
            return spline.constant_speed_parameters(pos, fractions, self.tension, self.loop)
        return np.clip(np.asarray(fractions, dtype=np.float64), 0.0, 1.0) * n

    def evaluate(self, fractions: np.ndarray) -> PathFrames:
        """Cameras at path fractions [M] in [0, 1] (0: first keyframe; 1: the last, or the first again when
        looping)."""
        self.check()
        s = self.parameters(np.atleast_1d(fractions))
        c2w = np.stack([np.asarray(k.camtoworld, np.float64) for k in self.keyframes])
        pos = spline.hermite(c2w[:, :3, 3], s, self.tension, self.loop)
        quat = spline.hermite(rotmat_to_quat(c2w[:, :3, :3]), s, self.tension, self.loop, quaternion=True)
        fov = spline.hermite(np.array([[k.fov] for k in self.keyframes]), s, self.tension, self.loop)[:, 0]
        times = None
        if self.is_dynamic:
            t = spline.hermite(np.array([[k.time] for k in self.keyframes]), s, self.tension, self.loop)[:, 0]
            times = np.clip(t, 0.0, 1.0)  # a tangent can overshoot [0, 1] between keyframes near its ends
        out = np.tile(np.eye(4), (len(s), 1, 1))
        out[:, :3, :3] = quat_to_rotmat(quat)
        out[:, :3, 3] = pos
        return PathFrames(out, fov, times)

    def frames(self, num_frames: int | None = None) -> PathFrames:
        """The video's frames: ``num_frames`` (default ``seconds * fps``) evenly spaced in time. An open path
        starts on its first keyframe and ends on its last; a loop leaves out the end, which is its start."""
        n = self.num_frames if num_frames is None else int(num_frames)
        if n < 1:
            raise ReconError(f"a video needs at least one frame, got {n}")
        if self.loop or n == 1:
            fractions = np.arange(n) / n
        else:
            fractions = np.linspace(0.0, 1.0, n)
        return self.evaluate(fractions)

    def mapped(self, c2w_map) -> "CameraPath":
        """The same path with ``c2w_map([N, 4, 4]) -> [N, 4, 4]`` applied to every keyframe pose."""
        if not self.keyframes:
            return replace(self, keyframes=[])
        c2w = np.asarray(c2w_map(np.stack([k.camtoworld for k in self.keyframes]).astype(np.float64)))
        return replace(self, keyframes=[replace(k, camtoworld=m) for k, m in zip(self.keyframes, c2w)])


def fov_from_focal(focal: float, size: float) -> float:
    """Field of view in degrees of a pinhole camera with ``focal`` pixels over ``size`` pixels."""
    return math.degrees(2.0 * math.atan(0.5 * size / focal))


def keyframes_from_cameras(cameras: Cameras, indices) -> list[Keyframe]:
    """Keyframes at some of a scene's cameras (their pose, vertical FOV and time)."""
    out = []
    for i in indices:
        i = int(i)
        t = None if cameras.times is None else float(cameras.times[i])
        out.append(Keyframe(cameras.camtoworlds[i].double().numpy(), fov_from_focal(float(cameras.fy[i]), float(cameras.heights[i])), t))
    return out
