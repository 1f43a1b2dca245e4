"""Camera paths: keyframes, their interpolation, and nerfstudio's ``camera_path.json``.

One copy of this maths for everything that moves a camera along a path: ``recon render --camera-path`` and
``--path orbit`` (:mod:`recon.export.render`) and the viewer's path editor (:mod:`recon.viewer.path_panel`).

- :mod:`.spline`: Kochanek-Bartels (tension) Hermite splines for positions, field of view and time, and a
  sign-aligned quaternion spline for orientations, with optional constant speed;
- :mod:`.path`: :class:`Keyframe`, :class:`CameraPath` (keyframes + duration, fps, tension, loop) and
  :class:`PathFrames` (the sampled cameras), with the conversion to :class:`~recon.cameras.Cameras`;
- :mod:`.nerfstudio`: reading and writing nerfstudio's ``camera_path.json`` (OpenGL axes, vertical FOV in
  degrees, row-major 4x4 matrices; per-camera ``render_time`` for dynamic scenes);
- :mod:`.orbit`: the orbit around a capture, as a generated path.
"""

from .nerfstudio import PathFile, dataparser_transform, read_camera_path, write_camera_path
from .orbit import orbit_path
from .path import CameraPath, Keyframe, PathFrames

__all__ = [
    "CameraPath",
    "Keyframe",
    "PathFile",
    "PathFrames",
    "dataparser_transform",
    "orbit_path",
    "read_camera_path",
    "write_camera_path",
]
