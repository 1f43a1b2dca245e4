"""Dataset readers: one module per format, a detector, and :func:`load_scene`, the one entry point.

Each reader module provides ``NAME``, ``DESCRIPTION``, ``LOOKS_FOR`` (what detection looks for, for error
messages), ``OPTIONS`` (its reader-specific keyword options), ``detect(path) -> bool`` and
``load(path, opts: LoadOptions) -> SceneData``. Other code (built-in demo scenes, plugins) can add readers with
:func:`register_reader`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from recon.data.readers.common import LoadOptions, check_downscale, parse_background
from recon.data.scene import SceneData
from recon.errors import ReconError

# Detection order matters: a nerfstudio folder often also holds colmap/, and N3DV shares poses_bounds.npy with LLFF.
_BUILTIN = {
    "nerfstudio": "recon.data.readers.nerfstudio",
    "dnerf": "recon.data.readers.dnerf",
    "blender": "recon.data.readers.blender",
    "colmap": "recon.data.readers.colmap",
    "n3dv": "recon.data.readers.n3dv",
    "llff": "recon.data.readers.llff",
    "neus": "recon.data.readers.neus",
    "monosdf": "recon.data.readers.monosdf",
}
ALIASES = {
    "instant-ngp": "nerfstudio",
    "ngp": "nerfstudio",
    "transforms": "nerfstudio",
    "nerf-synthetic": "blender",
    "d-nerf": "dnerf",
    "dynerf": "n3dv",
    "neural-3d-video": "n3dv",
    "idr": "neus",
    "dtu": "neus",
    "volsdf": "neus",
}
_registered: dict[str, Any] = {}

FORMATS: tuple[str, ...] = tuple(_BUILTIN)
"""Names accepted by ``load_scene(format=...)`` / ``--format``, in detection order (aliases in :data:`ALIASES`)."""


def register_reader(reader: Any, *, detect_first: bool = False) -> None:
    """Add a reader (a module or object with NAME, DESCRIPTION, LOOKS_FOR, detect, load)."""
    global FORMATS
    for attr in ("NAME", "detect", "load"):
        if not hasattr(reader, attr):
            raise TypeError(f"reader {reader!r} has no {attr}")
    _registered[reader.NAME] = reader
    names = [n for n in FORMATS if n != reader.NAME]
    FORMATS = tuple([reader.NAME] + names if detect_first else names + [reader.NAME])


def get_reader(name: str) -> ModuleType | Any:
    """The reader for a format name or alias; an unknown name is a :class:`ReconError` listing the known ones."""
    key = ALIASES.get(name.lower(), name.lower()) if isinstance(name, str) else name
    if key in _registered:
        return _registered[key]
    if key in _BUILTIN:
        return importlib.import_module(_BUILTIN[key])
    raise ReconError(f"unknown data format {name!r} (known: {', '.join(FORMATS)})")


def detect_format(path: str | Path) -> str:
    """Name of the format of a data folder (or of a single file such as a transforms.json).

    Raises:
        ReconError: the path does not exist, or no reader recognises it (the message lists what was looked for).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ReconError(f"{'data folder' if not path.suffix else 'file'} does not exist", path)
    for name in FORMATS:
        reader = get_reader(name)
        if reader.detect(path):
            return name
    looked = "; ".join(f"{get_reader(n).LOOKS_FOR} ({n})" for n in FORMATS if hasattr(get_reader(n), "LOOKS_FOR"))
    raise ReconError(f"cannot tell the data format: found none of {looked}. Choose one with --format", path)


def load_scene(
    path: str | Path,
    format: str | None = None,
    *,
    downscale: int = 1,
    test_every: int = 8,
    background=None,
    video_fps: float | None = None,
    max_frames: int | None = None,
    frame_stride: int = 1,
    check_images: bool | None = None,
    cache_budget_bytes: int | None = None,
    **options,
) -> SceneData:
    """Read a data set into a :class:`SceneData` (cameras in OpenCV axes, the data's own frame and units).

    Args:
        path: the data folder, or a single file (transforms.json, transforms_train.json, cameras_sphere.npz,
            poses_bounds.npy, a COLMAP model folder).
        format: a name from :data:`FORMATS` (or an alias) to skip detection.
        downscale: integer image downscale; pre-downscaled folders (``images_4``) are used when present.
        test_every: hold out every n-th frame as ``test`` when the format has no split of its own (0: none).
        background: RGB in [0, 1] or a colour name for compositing RGBA images (default: the format's, white).
        video_fps, max_frames, frame_stride: video frame subsampling (see :func:`recon.data.video.select_frames`).
        check_images: verify every image file up front (exists, readable header, size matches its camera);
            None checks scenes of up to a few thousand images, where it takes about a second.
        cache_budget_bytes: memory budget of the decoded-image cache (default: SceneData's, 2 GiB).
        **options: reader-specific options (nerfstudio: ``undo_applied_transform``; colmap: ``images`` folder
            name; n3dv with extracted frames: ``fps``).

    Raises:
        ReconError: anything wrong with the data, as one line naming the file and the problem.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ReconError(f"{'data folder' if not path.suffix else 'file'} does not exist", path)
    if not isinstance(test_every, int) or test_every < 0:
        raise ReconError(f"test_every must be a non-negative integer, got {test_every!r}")
    opts = LoadOptions(
        downscale=check_downscale(downscale),
        test_every=test_every,
        background=parse_background(background),
        video_fps=video_fps,
        max_frames=max_frames,
        frame_stride=int(frame_stride),
        extra=dict(options),
    )
    name = format if format is not None else detect_format(path)
    reader = get_reader(name)
    unknown = sorted(set(options) - set(getattr(reader, "OPTIONS", ())))
    if unknown:
        known = ", ".join(getattr(reader, "OPTIONS", ())) or "none"
        raise ReconError(f"unknown option(s) {', '.join(unknown)} for the {reader.NAME} reader (it takes: {known})")
    scene = reader.load(path, opts)
    if cache_budget_bytes is not None:
        scene.cache_budget_bytes = int(cache_budget_bytes)
    from recon.data.readers.checks import AUTO_CHECK_LIMIT, verify_images

    if check_images or (check_images is None and len(scene.images) <= AUTO_CHECK_LIMIT):
        verify_images(scene)
    return scene


__all__ = ["FORMATS", "ALIASES", "LoadOptions", "detect_format", "get_reader", "load_scene", "register_reader"]
