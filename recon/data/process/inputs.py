"""What ``recon data process`` was given: a folder of photos, one video, or a folder of videos.

Every problem with the input is found here, before any work starts, and reported as one line naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recon.data.readers.common import IMAGE_EXTENSIONS
from recon.data.video import VIDEO_EXTENSIONS
from recon.errors import ReconError

IMAGE_EXTS = tuple(e for e in IMAGE_EXTENSIONS if e != ".exr")  # what recon reads, less what COLMAP cannot
VIDEO_EXTS = VIDEO_EXTENSIONS + (".m4v",)  # what recon's video reader takes, plus phones' .m4v


@dataclass
class Inputs:
    """``kind`` is ``"images"`` or ``"videos"``; ``files`` sorted by name; ``ignored``: other files in the folder;
    ``source``: the path the user gave (named in errors)."""

    kind: str
    files: list[Path]
    ignored: list[Path]
    source: Path


def collect(path: Path) -> Inputs:
    """Classify ``path`` (a folder of images, a video file, or a folder of videos)."""
    path = Path(path)
    if not path.exists():
        raise ReconError("does not exist", path)
    if path.is_file():
        if path.suffix.lower() in VIDEO_EXTS:
            return Inputs("videos", [path], [], path)
        if path.suffix.lower() in IMAGE_EXTS:
            raise ReconError("is one image; structure from motion needs a folder of overlapping photos (20 or more is best)", path)
        raise ReconError(f"is neither a folder of images nor a video ({', '.join(VIDEO_EXTS)})", path)
    entries = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in entries if p.suffix.lower() in IMAGE_EXTS]
    videos = [p for p in entries if p.suffix.lower() in VIDEO_EXTS]
    others = [p for p in entries if p not in images and p not in videos]
    if images and videos:
        raise ReconError(f"holds both images ({len(images)}) and videos ({len(videos)}); give one kind (a folder of photos, or the videos)", path)
    if videos:
        return Inputs("videos", videos, others, path)
    if not images:
        what = f"{len(others)} other file(s), e.g. {others[0].name!r}" if others else "nothing"
        raise ReconError(f"has no images ({', '.join(IMAGE_EXTS)}) or videos; found {what}", path)
    if len(images) < 2:
        raise ReconError(f"has 1 image ({images[0].name}); structure from motion needs at least 2 overlapping photos (20 or more is best)", path)
    return Inputs("images", images, others, path)


def check_images(files: list[Path]) -> list[tuple[int, int]]:
    """Open every image (header and pixels) and return their (width, height); an unreadable one is an error."""
    from PIL import Image

    sizes = []
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                sizes.append(im.size)
        except Exception as exc:  # PIL raises many types for broken files
            raise ReconError(f"cannot be read as an image ({type(exc).__name__}: {exc})", f) from None
    return sizes
