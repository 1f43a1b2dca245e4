"""Up-front image checks, so that a missing, corrupt or wrong-size image stops ``recon train`` at load time rather
than at step 5000.

Cheap by design: a stat and a header read per file (PIL opens lazily and does not decode pixels). PNGs are also
walked chunk by chunk (``verify``, CRCs, no decompression), which catches truncated files; a JPEG without its
end-of-image marker is fully decoded to decide. What is left for load time (:meth:`SceneData.image`) is damage
inside otherwise well-formed compressed data.
"""

from __future__ import annotations

from pathlib import Path

from recon.data.scene import ImageFiles, SceneData
from recon.data.video import VideoFrames
from recon.errors import ReconError

AUTO_CHECK_LIMIT = 5000  # check_images=None checks scenes up to this many images (about a second per thousand)


def _header(path: Path, what: str) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise ReconError(f"{what} file is missing", path)
    try:
        with Image.open(path) as im:
            size, fmt = im.size, im.format
            if fmt == "PNG":
                im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:  # PIL's verify raises SyntaxError
        raise ReconError(f"corrupt or unreadable {what} ({type(exc).__name__}: {str(exc)[:100]})", path) from None
    if fmt == "JPEG" and not _jpeg_complete(path):
        try:
            with Image.open(path) as im:
                im.load()
        except (OSError, ValueError) as exc:
            raise ReconError(f"corrupt or truncated {what} ({str(exc)[:100]})", path) from None
    return size


def _jpeg_complete(path: Path) -> bool:
    """Whether a JPEG ends with its EOI marker (some cameras append data after it, so absence only triggers a decode)."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 64))
        return b"\xff\xd9" in f.read()


def verify_images(scene: SceneData) -> None:
    """Check that every image (and mask) exists, can be opened, and has its camera's size after downscaling.

    Raises:
        ReconError: naming the first bad file and what is wrong with it.
    """
    cams = scene.cameras
    sources = [("image", scene.images)] + ([("mask", scene.masks)] if scene.masks is not None else [])
    for what, source in sources:
        if isinstance(source, ImageFiles):
            f = source.factor
            for i, path in enumerate(source.paths):
                w, h = _header(path, what)
                cw, ch = int(cams.widths[i]), int(cams.heights[i])
                if (w // f, h // f) != (cw, ch):
                    shown = f"{w}x{h}" + (f" ({w // f}x{h // f} after downscale {f})" if f > 1 else "")
                    raise ReconError(f"{what} is {shown} but its camera says {cw}x{ch}", path)
        elif isinstance(source, VideoFrames):
            f = source.factor
            for i, (v, _) in enumerate(source.entries):
                video = source.videos[int(v)]
                cw, ch = int(cams.widths[i]), int(cams.heights[i])
                if (video.width // f, video.height // f) != (cw, ch):
                    raise ReconError(f"video is {video.width}x{video.height} but its camera says {cw}x{ch}", video.path)
