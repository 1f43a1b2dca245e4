"""nerfstudio's ``camera_path.json``, read and written.

The schema, as nerfstudio's viewer writes it (``viewer/render_panel.py``) and ``ns-render camera-path`` reads it
(``cameras/camera_paths.py: get_path_from_json`` plus ``seconds``):

- ``render_width``, ``render_height`` (pixels), ``fps``, ``seconds``, ``camera_type`` (``perspective``; recon
  renders nothing else), ``is_cycle`` (loop), ``smoothness_value`` (spline tension), ``default_fov``,
  ``default_transition_sec``;
- ``keyframes``: ``matrix`` (camera-to-world, 16 numbers), ``fov``, ``aspect``, ``override_transition_enabled``,
  ``override_transition_sec`` and, for dynamic scenes, ``render_time`` and ``override_time_enabled``;
- ``camera_path``: the sampled cameras, each ``camera_to_world`` (16 numbers), ``fov``, ``aspect`` and, for
  dynamic scenes, ``render_time`` (nerfstudio uses the times only when every camera has one).

Conventions: matrices are flattened row by row (nerfstudio reshapes with ``view(4, 4)``), cameras use OpenGL axes
(x right, y up, looking down -z) and ``fov`` is the *vertical* field of view in degrees (nerfstudio's focal length
is ``render_height / 2 / tan(fov / 2)``). recon uses OpenCV axes, so y and z flip on the way in and out.

Frames: recon writes poses in the run's *data* frame (where the input cameras were), like every other recon
export. nerfstudio's poses are in its dataparser's frame (``dataparser_transforms.json``: a 3x4 transform and a
scale applied to the data); :func:`dataparser_transform` reads that file so that its paths can be brought back to
the data frame. recon keeps its own settings under a ``recon`` key, which nerfstudio ignores.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recon.cameras import check_poses, opencv_to_opengl, opengl_to_opencv
from recon.data.normalize import SceneTransform
from recon.errors import ReconError

from .path import CameraPath, Keyframe, PathFrames


@dataclass
class PathFile:
    """What a camera path file holds (poses in the file's frame, OpenCV axes).

    Attributes:
        path: the editable path (from ``keyframes``), or None when the file has none.
        frames: the sampled cameras (``camera_path``), or None when the file has none.
        width, height: ``render_width`` / ``render_height`` (None when missing).
        fps, seconds: frame rate and duration of the video (None when missing).
    """

    path: CameraPath | None
    frames: PathFrames | None
    width: int | None
    height: int | None
    fps: float | None
    seconds: float | None


def _matrix(values, what: str, source) -> np.ndarray:
    """A flattened 4x4 camera-to-world (row-major; a column-major one, as three.js stores matrices, is transposed)
    in OpenGL axes -> [4, 4] OpenCV."""
    try:
        m = np.asarray(values, dtype=np.float64).reshape(4, 4)
    except (TypeError, ValueError):
        raise ReconError(f"{what} must be 16 numbers (a flattened 4x4 matrix)", source) from None
    if np.allclose(m[:3, 3], 0.0) and not np.allclose(m[3, :3], 0.0):
        m = m.T  # column-major: the translation sits in the last row
    if not np.isfinite(m).all() or not np.allclose(m[3], [0, 0, 0, 1], atol=1e-6):
        raise ReconError(f"{what} is not a camera-to-world matrix (last row {m[3].round(6).tolist()})", source)
    check_poses(m[None], source)
    return opengl_to_opencv(m)


def _number(d: dict, key: str, what: str, source, default=None):
    v = d.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ReconError(f"{what} {key!r} must be a number, got {v!r}", source)
    return float(v)


def _time(d: dict, what: str, source) -> float | None:
    t = _number(d, "render_time", what, source)
    if t is not None and not (0.0 <= t <= 1.0):
        raise ReconError(f"{what} has render_time {t:g}, outside [0, 1]", source)
    return t


def read_camera_path(file: str | Path) -> PathFile:
    """Read a ``camera_path.json`` (nerfstudio's or recon's). Any problem is one :class:`ReconError` naming the
    file: not JSON, no cameras, one keyframe, a time outside [0, 1], a non-rigid pose, an unsupported camera type."""
    file = Path(file)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReconError("camera path file does not exist", file) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReconError(f"cannot read camera path: {exc}", file) from None
    except json.JSONDecodeError as exc:
        raise ReconError(f"not a JSON file (line {exc.lineno}: {exc.msg})", file) from None
    if not isinstance(data, dict):
        raise ReconError("a camera path must be a JSON object with 'keyframes' and/or 'camera_path'", file)
    kind = data.get("camera_type", "perspective")
    if kind != "perspective":
        raise ReconError(f"camera_type {kind!r} is not supported (recon renders perspective paths)", file)
    keyframes, cams = data.get("keyframes") or [], data.get("camera_path") or []
    if not isinstance(keyframes, list) or not isinstance(cams, list):
        raise ReconError("'keyframes' and 'camera_path' must be lists", file)
    if not keyframes and not cams:
        raise ReconError("the camera path is empty (no 'keyframes' and no 'camera_path' entries)", file)
    if len(keyframes) == 1:
        raise ReconError("a camera path needs at least 2 keyframes, got 1", file)

    width, height = (_number(data, k, "", file) for k in ("render_width", "render_height"))
    if (width is not None and width < 1) or (height is not None and height < 1):
        raise ReconError(f"render size must be positive, got {width}x{height}", file)
    fps, seconds = _number(data, "fps", "", file), _number(data, "seconds", "", file)
    own = data.get("recon") if isinstance(data.get("recon"), dict) else {}

    path = None
    if keyframes:
        kfs = []
        for i, k in enumerate(keyframes):
            if not isinstance(k, dict) or "matrix" not in k or "fov" not in k:
                raise ReconError(f"keyframe {i} needs 'matrix' and 'fov'", file)
            kfs.append(Keyframe(_matrix(k["matrix"], f"keyframe {i} 'matrix'", file), _number(k, "fov", f"keyframe {i}", file), _time(k, f"keyframe {i}", file)))
        path = CameraPath(
            keyframes=kfs,
            seconds=seconds if seconds is not None else CameraPath.seconds,
            fps=fps if fps is not None else CameraPath.fps,
            tension=float(_number(data, "smoothness_value", "", file, 0.0)),
            loop=bool(data.get("is_cycle", False)),
            constant_speed=bool(own.get("constant_speed", False)),
            width=int(width) if width else CameraPath.width,
            height=int(height) if height else CameraPath.height,
        )
        path.check(file)

    frames = None
    if cams:
        c2w, fovs, times = [], [], []
        for i, c in enumerate(cams):
            if not isinstance(c, dict) or "camera_to_world" not in c or "fov" not in c:
                raise ReconError(f"camera_path[{i}] needs 'camera_to_world' and 'fov'", file)
            c2w.append(_matrix(c["camera_to_world"], f"camera_path[{i}] 'camera_to_world'", file))
            fov = _number(c, "fov", f"camera_path[{i}]", file)
            if not (0.0 < fov < 180.0):
                raise ReconError(f"camera_path[{i}] has field of view {fov:g} degrees, outside (0, 180)", file)
            fovs.append(fov)
            times.append(_time(c, f"camera_path[{i}]", file))
        # As in nerfstudio: times only when every camera has one.
        t = np.array(times, dtype=np.float64) if all(v is not None for v in times) else None
        frames = PathFrames(np.stack(c2w), np.array(fovs, dtype=np.float64), t)
    return PathFile(path, frames, None if width is None else int(width), None if height is None else int(height), fps, seconds)


def _flat(c2w_opencv: np.ndarray) -> list[float]:
    return [float(v) for v in opencv_to_opengl(np.asarray(c2w_opencv, dtype=np.float64)).reshape(-1)]


def write_camera_path(path: CameraPath, file: str | Path) -> Path:
    """Write ``path`` (poses in the frame the file should hold, normally the data frame) as a nerfstudio
    ``camera_path.json``: its keyframes and the ``seconds * fps`` sampled cameras. Returns the file."""
    path.check()
    frames = path.frames()
    aspect = path.width / path.height
    segments = len(path.keyframes) if path.loop else len(path.keyframes) - 1
    keyframes = []
    for k in path.keyframes:
        d = {"matrix": _flat(k.camtoworld), "fov": float(k.fov), "aspect": aspect, "override_transition_enabled": False, "override_transition_sec": None}
        if k.time is not None:
            d.update(render_time=float(k.time), override_time_enabled=True)
        keyframes.append(d)
    cams = []
    for i in range(len(frames)):
        d = {"camera_to_world": _flat(frames.camtoworlds[i]), "fov": float(frames.fovs[i]), "aspect": aspect}
        if frames.times is not None:
            d["render_time"] = float(frames.times[i])
        cams.append(d)
    data = {
        "camera_type": "perspective",
        "render_width": int(path.width),
        "render_height": int(path.height),
        "fps": float(path.fps),
        "seconds": float(path.seconds),
        "is_cycle": bool(path.loop),
        "smoothness_value": float(path.tension),
        "default_fov": float(path.keyframes[0].fov),
        "default_transition_sec": float(path.seconds) / max(segments, 1),
        "keyframes": keyframes,
        "camera_path": cams,
        "recon": {"constant_speed": bool(path.constant_speed), "frame": "data"},
    }
    if path.is_dynamic:
        data["default_time"] = float(path.keyframes[0].time)
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(file)  # never leave a half-written path behind
    return file


def dataparser_transform(file: str | Path) -> SceneTransform:
    """nerfstudio's ``dataparser_transforms.json`` (``transform``: 3x4, ``scale``) as the :class:`SceneTransform`
    data frame -> nerfstudio frame (``x_ns = scale * (T @ [x; 1])``)."""
    file = Path(file)
    try:
        d = json.loads(file.read_text(encoding="utf-8"))
        t = np.asarray(d["transform"], dtype=np.float64).reshape(-1, 4)[:3]
        scale = float(d["scale"])
    except FileNotFoundError:
        raise ReconError("dataparser transform file does not exist", file) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReconError(f"not a nerfstudio dataparser_transforms.json ({type(exc).__name__}: {exc})", file) from None
    r = t[:, :3]
    # nerfstudio's transform is a rotation (plus translation); the scale is separate.
    if not np.allclose(r @ r.T, np.eye(3), atol=1e-4) or not scale > 0:
        raise ReconError("the transform is not a rotation with a positive scale", file)
    return SceneTransform(rotation=r, translation=scale * t[:, 3], scale=scale)
