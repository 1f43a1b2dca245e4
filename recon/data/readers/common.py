"""Helpers every reader shares: options, JSON with good error messages, image paths and sizes, splits.

Readers report their data in the data's own frame and units (see docs/architecture.md); these helpers only deal with
the plumbing around that: where the images are, how big they are, how the frames are split.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from recon.cameras import Cameras
from recon.errors import ReconError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".exr", ".tif", ".tiff", ".bmp", ".webp")

NAMED_BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "gray": (0.5, 0.5, 0.5), "grey": (0.5, 0.5, 0.5)}


@dataclass
class LoadOptions:
    """What the user asked for, passed unchanged to every reader.

    Attributes:
        downscale: integer image downscale factor (1 = full resolution). Readers use a pre-downscaled folder
            (``images_4``) when the format has them, else downscale on load.
        test_every: every n-th frame is held out for ``test`` when the format has no split of its own (0: none).
        background: RGB composited behind RGBA images; None = the format's default (white for Blender).
        video_fps: sample videos at (at most) this rate; None = every frame.
        max_frames: keep at most this many frames per video, evenly spaced over the whole sequence.
        frame_stride: keep every ``frame_stride``-th video frame (applied before ``max_frames``).
        extra: reader-specific options (e.g. ``undo_applied_transform`` for nerfstudio), by name.
    """

    downscale: int = 1
    test_every: int = 8
    background: tuple[float, float, float] | None = None
    video_fps: float | None = None
    max_frames: int | None = None
    frame_stride: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


def parse_background(value: Any) -> tuple[float, float, float] | None:
    """``None``, a colour name (white/black/gray), a hex string ``#rrggbb`` or 3 numbers in [0, 1] -> RGB tuple."""
    if value is None:
        return None
    if isinstance(value, str):
        name = value.strip().lower()
        if name in NAMED_BACKGROUNDS:
            return NAMED_BACKGROUNDS[name]
        if name.startswith("#") and len(name) == 7:
            try:
                return tuple(int(name[i : i + 2], 16) / 255.0 for i in (1, 3, 5))  # type: ignore[return-value]
            except ValueError:
                pass
        raise ReconError(f"unknown background {value!r} (use white, black, gray, #rrggbb or three numbers in [0, 1])")
    rgb = tuple(float(v) for v in value)
    if len(rgb) != 3 or not all(0.0 <= v <= 1.0 for v in rgb):
        raise ReconError(f"background must be three numbers in [0, 1], got {value!r}")
    return rgb  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------- JSON
def read_json(path: Path) -> Any:
    """Parse a JSON file; a syntax error becomes a one-line :class:`ReconError` with line and column."""
    path = Path(path)
    if not path.is_file():
        raise ReconError("file is missing", path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ReconError(f"not a UTF-8 text file ({exc.reason} at byte {exc.start})", path) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReconError(f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", path) from None


def json_number(meta: dict, key: str, source: Path, default: Any = None) -> Any:
    """``meta[key]`` as a float (or ``default`` when absent); a non-number is a clear error."""
    if key not in meta or meta[key] is None:
        return default
    value = meta[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ReconError(f"{key!r} must be a number, got {value!r}", source)
    if not math.isfinite(value):
        raise ReconError(f"{key!r} is not finite ({value!r})", source)
    return float(value)


def json_matrix(value: Any, shape: tuple[int, ...], what: str, source: Path) -> np.ndarray:
    """A nested JSON list as a float64 array of ``shape`` (a 3x4 pose is padded to 4x4 when 4x4 is asked)."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ReconError(f"{what} is not a numeric matrix", source) from None
    if shape == (4, 4) and arr.shape == (3, 4):
        arr = np.concatenate([arr, [[0.0, 0.0, 0.0, 1.0]]], 0)
    if arr.shape != shape:
        raise ReconError(f"{what} has shape {list(arr.shape)}, expected {list(shape)}", source)
    return arr


# ---------------------------------------------------------------------------------------------------------- images
def find_image(base: Path, name: str) -> Path | None:
    """Resolve an image reference: the exact path, or (for names without a known extension, as in Blender's
    ``./train/r_0``) the first existing file with an image extension. None when nothing exists."""
    path = base / name
    if path.is_file():
        return path
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
            cand = path.with_name(path.name + ext)
            if cand.is_file():
                return cand
    return None


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (hidden files skipped)."""
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def masks_beside(root: Path, image_files: Sequence[Path], downscale: int, folder: str = "masks") -> tuple["ImageFiles | None", list[str]]:
    """Foreground masks in ``root/<folder>/`` matched to the images by file stem (``0001.jpg`` <- ``0001.png``, or
    ``0001.jpg.png`` as COLMAP names them), as object captures ship them beside LLFF or COLMAP layouts (e.g. NeRD's
    real scenes). ``image_files`` are the full-resolution images; the masks are downscaled by ``downscale`` on load.

    Returns (masks or None, warnings): no folder -> None; masks for only some images -> None and a warning that
    says how many are missing; a mask whose size differs from its image -> an error naming it.
    """
    from recon.data.scene import ImageFiles

    mask_dir = root / folder
    if not mask_dir.is_dir():
        return None, []
    by_key = {}
    for m in list_images(mask_dir):
        by_key.setdefault(m.stem, m)  # 0001.png -> "0001"; 0001.jpg.png -> "0001.jpg"
    found, missing = [], []
    for f in image_files:
        m = by_key.get(f.stem) or by_key.get(f.name)
        (found.append(m) if m is not None else missing.append(f.name))
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        return None, [f"{folder}/ has no mask for {len(missing)} of {len(image_files)} images ({shown}); masks not used"]
    (w, h), (iw, ih) = image_size(found[0]), image_size(image_files[0])
    if (w, h) != (iw, ih):
        raise ReconError(f"mask is {w}x{h} but its image {image_files[0].name} is {iw}x{ih}", found[0])
    return ImageFiles(found, downscale), []


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise ReconError("image file is missing", path) from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ReconError(f"cannot read image header ({type(exc).__name__}: {str(exc)[:100]})", path) from None


def downscaled_folder(root: Path, base: str, factor: int) -> Path | None:
    """``root/<base>_<factor>`` (e.g. ``images_4``) when it exists and ``factor`` > 1, else None."""
    if factor <= 1:
        return None
    folder = root / f"{base}_{factor}"
    return folder if folder.is_dir() else None


def scale_cameras_to(cameras: Cameras, widths: Sequence[int], heights: Sequence[int]) -> Cameras:
    """Cameras for images whose real sizes are ``widths`` x ``heights`` (pre-downscaled folders round sizes their
    own way, e.g. ImageMagick's ``-resize 25%`` rounds up): intrinsics scale by the per-axis size ratio, in the
    continuous pixel convention."""
    w = torch.as_tensor(np.asarray(widths, dtype=np.int64))
    h = torch.as_tensor(np.asarray(heights, dtype=np.int64))
    sx = w.double() / cameras.widths.double()
    sy = h.double() / cameras.heights.double()
    return replace(
        cameras,
        fx=(cameras.fx.double() * sx).float(),
        fy=(cameras.fy.double() * sy).float(),
        cx=(cameras.cx.double() * sx).float(),
        cy=(cameras.cy.double() * sy).float(),
        widths=w,
        heights=h,
    )


def check_downscale(factor: Any) -> int:
    try:
        f = int(factor)
    except (TypeError, ValueError):
        raise ReconError(f"downscale must be a positive integer, got {factor!r}") from None
    if f < 1 or f != factor:
        raise ReconError(f"downscale must be a positive integer, got {factor!r}")
    return f


# ---------------------------------------------------------------------------------------------------------- splits
def held_out_splits(n: int, test_every: int) -> dict[str, np.ndarray]:
    """Every ``test_every``-th frame (0, n, 2n, ...) is ``test``, the rest ``train``; ``test_every`` <= 0: all train."""
    from recon.data.scene import every_nth_split

    if test_every <= 0:
        return {"train": np.arange(n)}
    return every_nth_split(n, test_every)


def rigid_inverse(m: np.ndarray) -> np.ndarray:
    """Inverse of [..., 4, 4] rigid transforms."""
    out = np.zeros_like(m)
    R = m[..., :3, :3]
    out[..., :3, :3] = np.swapaxes(R, -1, -2)
    out[..., :3, 3] = -np.einsum("...ji,...j->...i", R, m[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out


def scene_name(root: Path) -> str:
    return root.resolve().name or "scene"


def read_ply_points(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Vertices (and colours, when present) of a PLY point cloud: [P, 3] float32 and [P, 3] float32 in [0, 1]."""
    try:
        from plyfile import PlyData

        ply = PlyData.read(str(path))
        v = ply["vertex"]
        pts = np.stack([v["x"], v["y"], v["z"]], -1).astype(np.float32)
    except FileNotFoundError:
        raise ReconError("point cloud file is missing", path) from None
    except Exception as exc:  # plyfile raises several types for malformed files
        raise ReconError(f"cannot read PLY point cloud ({type(exc).__name__}: {str(exc)[:100]})", path) from None
    names = set(v.data.dtype.names or ())
    colors = None
    if {"red", "green", "blue"} <= names:
        rgb = np.stack([v["red"], v["green"], v["blue"]], -1)
        colors = (rgb.astype(np.float32) / (255.0 if rgb.dtype == np.uint8 or rgb.max() > 1.0 else 1.0)).astype(np.float32)
    if not np.isfinite(pts).all():
        raise ReconError("point cloud has NaN or inf coordinates", path)
    return pts, colors
