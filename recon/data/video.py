"""Lazy video decoding: frames on demand through imageio-ffmpeg, with a small per-video cache.

Training asks for (camera, frame) pairs in random order, so decoding every frame of every video up front would cost
minutes and gigabytes (N3DV: 20 cameras x 300 frames x 2704x2028). Instead each :class:`VideoFile` keeps one ffmpeg
decoder open and moves it forward; a request far ahead or behind restarts the decoder with an input seek
(``-ss`` before ``-i``, which ffmpeg makes frame-accurate when decoding). Recently decoded frames are kept in a small
LRU cache, and :class:`recon.data.scene.ImageCache` sits on top with the scene's memory budget.

Frame k is taken to start at k / fps (constant frame rate, as in multi-view capture rigs); the seek aims half a
frame early so rounding of timestamps cannot skip the wanted frame.
"""

from __future__ import annotations

import collections
import os
import threading
from pathlib import Path

import numpy as np

from recon.data.scene import downscale_image
from recon.errors import ReconError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm")

# Decoders inherited from a parent process across fork(): closing them would kill the parent's ffmpeg, so the child
# parks them here (never closed) and opens its own.
_INHERITED: list = []


class VideoFile:
    """Random access to the frames of one video file.

    Args:
        path: the video.
        cache_frames: how many decoded frames (uint8 [H, W, 3]) to keep.
        max_forward: decode forward (rather than seek) when the wanted frame is at most this far ahead.

    Attributes:
        fps, width, height, n_frames: from the file (n_frames counted from the stream's packets).
    """

    def __init__(self, path: Path, cache_frames: int = 16, max_forward: int = 30):
        import imageio_ffmpeg

        self.path = Path(path)
        if not self.path.is_file():
            raise ReconError("video file is missing", self.path)
        self.cache_frames = cache_frames
        self.max_forward = max_forward
        self._lock = threading.Lock()
        self._cache: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._reader = None
        self._pos = 0  # index of the frame the open reader yields next
        self._pid = os.getpid()
        try:
            gen = imageio_ffmpeg.read_frames(str(self.path))
            meta = next(gen)
            gen.close()
            self.n_frames, _ = imageio_ffmpeg.count_frames_and_secs(str(self.path))
        except Exception as exc:  # ffmpeg reports unreadable files as RuntimeError/OSError/StopIteration
            last = str(exc).strip().splitlines()[-1][:120] if str(exc).strip() else ""
            raise ReconError(f"cannot open video ({type(exc).__name__}: {last})", self.path) from None
        self.width, self.height = (int(v) for v in meta["size"])
        self.fps = float(meta.get("fps") or 0.0)
        if self.n_frames <= 0 or self.fps <= 0:
            raise ReconError(f"video has no frames (frames={self.n_frames}, fps={self.fps})", self.path)

    def __len__(self) -> int:
        return self.n_frames

    def _open(self, start: int) -> None:
        import imageio_ffmpeg

        self.close()
        input_params = ["-ss", f"{(start - 0.5) / self.fps:.6f}"] if start > 0 else []
        # passthrough: never duplicate or drop frames to meet an output frame rate.
        self._reader = imageio_ffmpeg.read_frames(
            str(self.path), input_params=input_params, output_params=["-fps_mode", "passthrough"]
        )
        next(self._reader)  # metadata
        self._pos = start

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _after_fork(self) -> None:
        """In a forked data-loader worker: leave the parent's decoder alone and start afresh."""
        if self._reader is not None:
            _INHERITED.append(self._reader)
        self._reader = None
        self._lock = threading.Lock()
        self._cache = collections.OrderedDict()
        self._pid = os.getpid()

    def __getstate__(self):
        state = self.__dict__.copy()
        state.update(_reader=None, _lock=None, _cache=collections.OrderedDict())
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as uint8 [H, W, 3]."""
        if not 0 <= index < self.n_frames:
            raise ReconError(f"frame {index} is out of range (video has {self.n_frames})", self.path)
        if self._pid != os.getpid():
            self._after_fork()
        with self._lock:
            if index in self._cache:
                self._cache.move_to_end(index)
                return self._cache[index]
            if self._reader is None or not (self._pos <= index <= self._pos + self.max_forward):
                self._open(index)
            while True:
                try:
                    raw = next(self._reader)
                except StopIteration:
                    self.close()
                    raise ReconError(f"cannot decode frame {index} (stream ended at frame {self._pos})", self.path) from None
                except Exception as exc:
                    self.close()
                    raise ReconError(f"cannot decode frame {index} ({type(exc).__name__})", self.path) from None
                img = np.frombuffer(raw, dtype=np.uint8).reshape(self.height, self.width, 3)
                k = self._pos
                self._pos += 1
                self._cache[k] = img
                self._cache.move_to_end(k)
                while len(self._cache) > self.cache_frames:
                    self._cache.popitem(last=False)
                if k == index:
                    return img

    def __del__(self):
        try:
            if self._pid == os.getpid():
                self.close()
        except Exception:
            pass


class VideoFrames:
    """An :class:`recon.data.scene.ImageSource` over frames of several videos.

    Args:
        videos: the decoders.
        entries: [N, 2] int (video index, frame index) per image.
        factor: integer downscale applied after decoding (box filter, floor size, like :class:`ImageFiles`).
    """

    def __init__(self, videos: list[VideoFile], entries: np.ndarray, factor: int = 1):
        self.videos = videos
        self.entries = np.asarray(entries, dtype=np.int64).reshape(-1, 2)
        self.factor = int(factor)

    def __len__(self) -> int:
        return len(self.entries)

    def describe(self, index: int) -> str:
        v, k = self.entries[index]
        return f"{self.videos[v].path} frame {k}"

    def load(self, index: int) -> np.ndarray:
        v, k = (int(x) for x in self.entries[index])
        img = self.videos[v].frame(k).astype(np.float32) / 255.0
        if self.factor > 1:
            img = downscale_image(img, self.factor)
        return img


def select_frames(n_frames: int, fps: float, *, stride: int = 1, video_fps: float | None = None,
                  max_frames: int | None = None) -> np.ndarray:
    """Frame indices to use from a video of ``n_frames``: every ``stride``-th (or the stride that brings ``fps``
    down to at most ``video_fps``), then at most ``max_frames`` of those, evenly spaced over the whole sequence."""
    if stride < 1:
        raise ReconError(f"frame stride must be >= 1, got {stride}")
    if video_fps is not None:
        if video_fps <= 0:
            raise ReconError(f"video fps must be positive, got {video_fps}")
        stride = max(stride, int(np.ceil(fps / video_fps - 1e-6)))
    idx = np.arange(0, n_frames, stride)
    if max_frames is not None:
        if max_frames < 1:
            raise ReconError(f"max frames must be >= 1, got {max_frames}")
        if len(idx) > max_frames:
            pick = np.unique(np.round(np.linspace(0, len(idx) - 1, max_frames)).astype(np.int64))
            idx = idx[pick]
    return idx


def write_video(path: Path, frames: np.ndarray, fps: float = 30.0, quality: int | None = None) -> None:
    """Write uint8 [T, H, W, 3] frames as a video (H.264 for .mp4); used by tests and exporters.

    ``quality=None`` writes near-lossless (CRF 0 equivalent through a high quality level) so tests can compare
    decoded pixels; sizes should be multiples of 16 to avoid ffmpeg resizing them.
    """
    import imageio_ffmpeg

    frames = np.asarray(frames, dtype=np.uint8)
    h, w = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(
        str(path), (w, h), fps=fps, quality=quality, macro_block_size=1,
        output_params=[] if quality is not None else ["-crf", "0"], pix_fmt_out="yuv444p" if quality is None else "yuv420p",
    )
    writer.send(None)
    for f in frames:
        writer.send(np.ascontiguousarray(f))
    writer.close()
