"""SceneData: what every reader produces and every method consumes.

A reader turns a data folder into a :class:`SceneData`: cameras for every frame (OpenCV axes, the data's own frame
and units), a lazy :class:`ImageSource` for the pixels, the splits, and whatever else the format carries (initial
points, masks, near/far bounds, times, ground truth). Methods never touch files.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from recon.cameras import Cameras
from recon.errors import ReconError


class ImageSource(Protocol):
    """Lazy access to N images. ``load`` returns float32 [H, W, C] in [0, 1] (C = 1, 3 or 4)."""

    def __len__(self) -> int: ...

    def load(self, index: int) -> np.ndarray: ...

    def describe(self, index: int) -> str:
        """Where image ``index`` comes from (a path, or 'camXX.mp4 frame 12'), for error messages."""
        ...


def read_image_file(path: Path) -> np.ndarray:
    """Read an image file as float32 [H, W, C] in [0, 1]; 16-bit PNGs keep their precision.

    Raises:
        ReconError: the file is missing or cannot be decoded.
    """
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise ReconError("image file is missing", path)
    try:
        img = iio.imread(path)
    except Exception as exc:  # imageio raises many types for corrupt files
        raise ReconError(f"cannot decode image ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})", path) from None
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3:
        raise ReconError(f"unexpected image shape {img.shape}", path)
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0
    if img.dtype == bool:
        return img.astype(np.float32)
    return img.astype(np.float32)


class ImageFiles:
    """Images stored as files, optionally downscaled on load by an integer ``factor`` (area filter)."""

    def __init__(self, paths: Sequence[Path], factor: int = 1):
        self.paths = [Path(p) for p in paths]
        self.factor = int(factor)

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self, index: int) -> str:
        return str(self.paths[index])

    def load(self, index: int) -> np.ndarray:
        img = read_image_file(self.paths[index])
        if self.factor > 1:
            img = downscale_image(img, self.factor)
        return img


class ArrayImages:
    """Images held in memory (demo scenes, decoded video), [N, H, W, C] float32 or uint8."""

    def __init__(self, images: np.ndarray | Sequence[np.ndarray], name: str = "memory"):
        self.images = images
        self.name = name

    def __len__(self) -> int:
        return len(self.images)

    def describe(self, index: int) -> str:
        return f"{self.name}[{index}]"

    def load(self, index: int) -> np.ndarray:
        img = np.asarray(self.images[index])
        if img.dtype == np.uint8:
            return img.astype(np.float32) / 255.0
        return img.astype(np.float32, copy=False)


def downscale_image(img: np.ndarray, factor: int) -> np.ndarray:
    """Box-filter an [H, W, C] image by an integer factor (output floor(H/f) x floor(W/f))."""
    h, w = img.shape[0] // factor, img.shape[1] // factor
    img = img[: h * factor, : w * factor]
    if img.ndim == 3 and img.shape[-1] == 4:
        # RGBA: average premultiplied colour, so transparent pixels' (arbitrary) RGB does not bleed into edges.
        rgb = (img[..., :3] * img[..., 3:]).reshape(h, factor, w, factor, 3).mean(axis=(1, 3))
        alpha = img[..., 3:].reshape(h, factor, w, factor, 1).mean(axis=(1, 3))
        rgb = np.where(alpha > 0, rgb / np.maximum(alpha, 1e-12), 0.0)
        return np.concatenate([np.clip(rgb, 0.0, 1.0), alpha], -1).astype(np.float32)
    return img.reshape(h, factor, w, factor, -1).mean(axis=(1, 3)).astype(np.float32)


class ImageCache:
    """Thread-safe LRU cache of images with a memory budget in bytes (numpy arrays, or device tensors for the
    trainer: anything with ``nbytes``)."""

    def __init__(self, source: ImageSource, budget_bytes: int = 2 << 30):
        self.source = source
        self.budget = int(budget_bytes)
        self._items: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, index: int) -> np.ndarray:
        with self._lock:
            if index in self._items:
                self._items.move_to_end(index)
                return self._items[index]
        img = self.source.load(index)
        with self._lock:
            if img.nbytes <= self.budget and index not in self._items:
                self._items[index] = img
                self._bytes += img.nbytes
                while self._bytes > self.budget:
                    _, old = self._items.popitem(last=False)
                    self._bytes -= old.nbytes
        return img


@dataclass
class SceneData:
    """A scene as every method sees it, in the data's own frame and units (before any normalisation).

    Attributes:
        name: short scene name (used for the run directory).
        format: reader that produced it (``blender``, ``colmap``, ``demo:static`` ...).
        root: the data folder (or a cache folder for demo scenes).
        cameras: all N frames' cameras (OpenCV axes); ``cameras.times`` in [0, 1] for dynamic scenes.
        images: lazy pixels for the N frames, float [H, W, 3|4] in [0, 1]; 4 channels mean RGBA.
        splits: split name -> int64 indices into the N frames (at least ``train``; ``test`` and maybe ``val``).
        masks: optional lazy foreground masks, [H, W, 1] in [0, 1].
        priors: optional per-view data by name, lazy like the images: ``depth`` [H, W, 1] (monocular, relative:
            known up to scale and shift per view) and ``normal`` [H, W, 3] (unit vectors in each view's camera
            frame, OpenCV axes), as MonoSDF's data ships them. Camera-frame quantities: a normalisation of the
            world does not change them.
        points: optional [P, 3] float32 initial point cloud (COLMAP points3D, demo geometry samples).
        point_colors: optional [P, 3] float32 colours in [0, 1] for ``points``.
        near_far: optional [N, 2] depth bounds per frame (LLFF).
        aabb: optional [2, 3] scene bounding box (instant-ngp ``aabb_scale``, NeuS unit sphere, demo scenes).
        frame_ids: optional [N] int64 frame index in a video (with ``cameras.times``).
        camera_ids: optional [N] int64 index of the physical camera a frame came from (multi-view video).
        background: RGB used to composite RGBA images (Blender: white by default).
        ground_truth: extra per-scene ground truth (demo scenes: meshes, albedo maps, env light ...), by name.
        warnings: non-fatal problems found while reading, shown by ``recon data info`` and ``recon train``.
    """

    name: str
    format: str
    root: Path
    cameras: Cameras
    images: ImageSource
    splits: dict[str, np.ndarray]
    masks: ImageSource | None = None
    priors: dict[str, ImageSource] = field(default_factory=dict)
    points: np.ndarray | None = None
    point_colors: np.ndarray | None = None
    near_far: np.ndarray | None = None
    aabb: np.ndarray | None = None
    frame_ids: np.ndarray | None = None
    camera_ids: np.ndarray | None = None
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ground_truth: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    cache_budget_bytes: int = 2 << 30
    _cache: ImageCache | None = field(default=None, repr=False)
    _mask_cache: ImageCache | None = field(default=None, repr=False)

    def __post_init__(self):
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Check that counts agree and every split is non-empty; raise :class:`ReconError` otherwise."""
        n = len(self.cameras)
        if len(self.images) != n:
            raise ReconError(f"{len(self.images)} images but {n} cameras", self.root)
        if self.masks is not None and len(self.masks) != n:
            raise ReconError(f"{len(self.masks)} masks but {n} cameras", self.root)
        for name, source in self.priors.items():
            if len(source) != n:
                raise ReconError(f"{len(source)} {name} priors but {n} cameras", self.root)
        if "train" not in self.splits:
            raise ReconError("no training split", self.root)
        for name, idx in self.splits.items():
            idx = np.asarray(idx, dtype=np.int64)
            self.splits[name] = idx
            if len(idx) == 0:
                raise ReconError(f"split {name!r} is empty", self.root)
            if idx.min() < 0 or idx.max() >= n:
                raise ReconError(f"split {name!r} refers to frame {int(idx.max())} of {n}", self.root)

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.cameras)

    @property
    def is_dynamic(self) -> bool:
        return self.cameras.times is not None

    @property
    def has_alpha(self) -> bool:
        return self.image(int(self.splits["train"][0])).shape[-1] == 4

    def split(self, name: str) -> np.ndarray:
        """Frame indices of split ``name``; raises a clear error if the data has no such split."""
        if name not in self.splits:
            raise ReconError(f"no split {name!r} (available: {', '.join(self.splits)})", self.root)
        return self.splits[name]

    def image(self, index: int) -> np.ndarray:
        """Image ``index`` as float32 [H, W, C] in [0, 1], checked against its camera's size."""
        if self._cache is None:
            self._cache = ImageCache(self.images, self.cache_budget_bytes)
        img = self._cache.get(int(index))
        h, w = int(self.cameras.heights[index]), int(self.cameras.widths[index])
        if img.shape[0] != h or img.shape[1] != w:
            raise ReconError(
                f"image is {img.shape[1]}x{img.shape[0]} but its camera says {w}x{h}", self.images.describe(index)
            )
        if not np.isfinite(img).all():
            raise ReconError("image contains NaN or inf values", self.images.describe(index))
        return img

    def image_rgb(self, index: int, background: Sequence[float] | None = None) -> np.ndarray:
        """Image ``index`` as [H, W, 3], compositing RGBA over ``background`` (default: the scene's)."""
        img = self.image(index)
        if img.shape[-1] == 4:
            bg = np.asarray(self.background if background is None else background, dtype=np.float32)
            return img[..., :3] * img[..., 3:] + bg * (1.0 - img[..., 3:])
        if img.shape[-1] == 1:
            return np.repeat(img, 3, axis=-1)
        return img[..., :3]

    def mask(self, index: int) -> np.ndarray | None:
        """Foreground mask [H, W, 1] of frame ``index`` (from ``masks``, else the alpha channel, else None)."""
        if self.masks is not None:
            if self._mask_cache is None:
                self._mask_cache = ImageCache(self.masks, self.cache_budget_bytes // 4)
            m = self._mask_cache.get(int(index))
            return m[..., :1] if m.shape[-1] in (1, 3, 4) else m
        img = self.image(index)
        return img[..., 3:4] if img.shape[-1] == 4 else None

    def subset(self, indices: np.ndarray) -> "SceneData":
        """A view on some frames (cameras and images re-indexed); splits keep only the frames selected."""
        indices = np.asarray(indices, dtype=np.int64)
        remap = {int(j): i for i, j in enumerate(indices)}
        splits = {k: np.array([remap[int(j)] for j in v if int(j) in remap], dtype=np.int64) for k, v in self.splits.items()}
        splits = {k: v for k, v in splits.items() if len(v)}
        if "train" not in splits:
            splits["train"] = np.arange(len(indices))
        return replace(
            self,
            cameras=self.cameras[torch.from_numpy(indices)],
            images=_Reindexed(self.images, indices),
            masks=None if self.masks is None else _Reindexed(self.masks, indices),
            priors={k: _Reindexed(v, indices) for k, v in self.priors.items()},
            near_far=None if self.near_far is None else self.near_far[indices],
            frame_ids=None if self.frame_ids is None else self.frame_ids[indices],
            camera_ids=None if self.camera_ids is None else self.camera_ids[indices],
            splits=splits,
            _cache=None,
            _mask_cache=None,
        )

    def describe_image(self, index: int) -> str:
        return self.images.describe(index)


class _Reindexed:
    def __init__(self, source: ImageSource, indices: np.ndarray):
        self.source, self.indices = source, indices

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int) -> np.ndarray:
        return self.source.load(int(self.indices[index]))

    def describe(self, index: int) -> str:
        return self.source.describe(int(self.indices[index]))


def every_nth_split(n: int, every: int = 8) -> dict[str, np.ndarray]:
    """The usual hold-out: frames 0, every, 2·every, ... are ``test``; the rest are ``train``."""
    idx = np.arange(n)
    test = idx[::every] if every > 0 else idx[:0]
    train = np.setdiff1d(idx, test)
    if len(train) == 0:  # a single image: train and test on it rather than fail
        train = idx
    splits = {"train": train}
    if len(test):
        splits["test"] = test
    return splits


ReaderFn = Callable[..., SceneData]
