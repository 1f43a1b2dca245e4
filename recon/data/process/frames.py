"""Frames from videos for structure from motion: spread evenly over time, the sharpest of each stretch.

Each video's frames are cut into ``n`` equal stretches of time and the sharpest frame of every stretch is kept
(sharpness: variance of the Laplacian of the grey image, the usual focus measure), so motion-blurred frames are
passed over while the spread over the clip stays even. Decoding goes through imageio-ffmpeg's bundled ffmpeg
binary; no system ffmpeg is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from recon.errors import ReconError


def sharpness(rgb: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of the grey image ([H, W, 3] uint8; larger = sharper)."""
    g = rgb[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


@dataclass
class VideoInfo:
    path: Path
    frames: int
    fps: float
    size: tuple[int, int]  # (width, height)


def probe(path: Path) -> VideoInfo:
    """Frame count, rate and size of a video; a file ffmpeg cannot decode is an error naming it."""
    import imageio_ffmpeg

    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        reader.close()
        n, _secs = imageio_ffmpeg.count_frames_and_secs(str(path))
    except (RuntimeError, OSError, StopIteration, ValueError) as exc:
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ReconError(f"cannot be decoded as a video ({last[:200]})", path) from None
    if n < 1:
        raise ReconError("has no frames", path)
    return VideoInfo(Path(path), int(n), float(meta.get("fps") or 0.0), tuple(int(v) for v in meta["size"]))


def frame_budget(infos: list[VideoInfo], max_frames: int) -> list[int]:
    """Frames to take from each video: ``max_frames`` shared in proportion to their lengths (at least 2 each,
    never more than a video has)."""
    total = sum(i.frames for i in infos)
    counts = [min(i.frames, max(2, int(round(max_frames * i.frames / total)))) for i in infos]
    return counts


def extract(info: VideoInfo, count: int, out_dir: Path, prefix: str, on_frame: Callable[[int], None] | None = None) -> list[dict]:
    """Decode ``info.path`` once and write the sharpest frame of each of ``count`` equal stretches to
    ``out_dir/<prefix>_<frame>.jpg``. Returns one record per kept frame: name, frame index, time (s), sharpness,
    and the stretch's median sharpness (how much better the kept frame is than a frame picked blindly)."""
    import imageio.v3 as iio
    import imageio_ffmpeg

    edges = np.linspace(0, info.frames, count + 1)
    best: list[tuple[float, int, np.ndarray] | None] = [None] * count
    scores: list[list[float]] = [[] for _ in range(count)]
    w, h = info.size
    reader = imageio_ffmpeg.read_frames(str(info.path))
    try:
        next(reader)
        for i, raw in enumerate(reader):
            if i >= info.frames:
                break
            b = min(int(np.searchsorted(edges, i, side="right")) - 1, count - 1)
            frame = np.frombuffer(raw, np.uint8).reshape(h, w, 3)
            s = sharpness(frame[::2, ::2]) if min(w, h) > 1000 else sharpness(frame)
            scores[b].append(s)
            if best[b] is None or s > best[b][0]:
                best[b] = (s, i, frame.copy())
            if on_frame is not None:
                on_frame(i)
    except RuntimeError as exc:
        raise ReconError(f"decoding failed part-way ({str(exc).strip().splitlines()[-1][:200]})", info.path) from None
    finally:
        reader.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    kept = []
    for b, entry in enumerate(best):
        if entry is None:
            continue
        s, i, frame = entry
        name = f"{prefix}_{i:06d}.jpg"
        iio.imwrite(out_dir / name, frame, quality=95)
        kept.append({"name": name, "frame": i, "time": i / info.fps if info.fps else None, "sharpness": s,
                     "stretch_median_sharpness": float(np.median(scores[b]))})
    if len(kept) < 2:
        raise ReconError(f"gave {len(kept)} usable frame(s); structure from motion needs at least 2", info.path)
    return kept
