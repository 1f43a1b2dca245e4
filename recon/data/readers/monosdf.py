"""MonoSDF / VolSDF-style scenes with monocular priors: ``cameras.npz`` + ``000000_rgb.png`` (+ ``_depth``,
``_normal``, ``_mask``) in one folder, as MonoSDF ships DTU, Replica and ScanNet.

Cameras are the IDR convention shared with :mod:`.neus` (``world_mat_i`` = K [R | t], ``scale_mat_i`` = the unit
sphere's placement; cameras in the data's frame, the sphere as ``aabb``). The priors become
``SceneData.priors``:

- ``depth`` [H, W, 1]: ``*_depth.npy`` ([H, W] or [1, H, W]; monocular, so known up to scale and shift per view);
  a single-channel ``*_depth.png`` when there is no .npy (a colour PNG is a visualisation and is not used);
- ``normal`` [H, W, 3]: ``*_normal.npy`` ([3, H, W] or [H, W, 3], encoded in [0, 1] as MonoSDF stores them) or
  ``*_normal.png``; decoded to unit vectors in the view's camera frame (OpenCV axes, as MonoSDF compares them).

``*_mask.npy`` / ``*_mask.png`` become the scene's masks. A prior that some views lack is dropped with a warning.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recon.data.readers.common import LoadOptions, held_out_splits, image_size, scene_name
from recon.data.readers.neus import cameras_from_projections, read_projections
from recon.data.scene import ImageFiles, SceneData, downscale_image, read_image_file
from recon.errors import ReconError

NAME = "monosdf"
DESCRIPTION = "MonoSDF (cameras.npz + *_rgb.png, with *_depth / *_normal priors)"
LOOKS_FOR = "cameras.npz beside *_rgb.png images"
OPTIONS = ()
RGB_SUFFIX = "_rgb.png"


def _frames(root: Path) -> list[Path]:
    return sorted(p for p in root.glob(f"*{RGB_SUFFIX}") if p.is_file() and not p.name.startswith("."))


def detect(path: Path) -> bool:
    root = path.parent if path.is_file() else path
    return (root / "cameras.npz").is_file() and bool(_frames(root))


class PriorFiles:
    """One prior per view from .npy or .png files, as [H, W, C] float32 (downscaled by area on load)."""

    def __init__(self, paths: list[Path], kind: str, factor: int = 1):
        self.paths, self.kind, self.factor = paths, kind, int(factor)

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self, index: int) -> str:
        return str(self.paths[index])

    def load(self, index: int) -> np.ndarray:
        p = self.paths[index]
        if p.suffix == ".npy":
            try:
                a = np.load(p, allow_pickle=False).astype(np.float32)
            except (OSError, ValueError) as exc:
                raise ReconError(f"cannot read .npy ({exc})", p) from None
            if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
                a = np.moveaxis(a, 0, -1)  # [C, H, W] -> [H, W, C]
            if a.ndim == 2:
                a = a[..., None]
        else:
            a = read_image_file(p)
            a = a[..., :1] if self.kind == "depth" else a[..., :3]
        if self.kind == "normal":
            a = _unit(a[..., :3] * 2.0 - 1.0)
        if self.factor > 1:
            a = downscale_image(a, self.factor)
            if self.kind == "normal":  # averaged unit vectors are shorter than 1
                a = _unit(a)
        return a.astype(np.float32)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-8)


def _matching(frames: list[Path], suffix: str, exts: tuple[str, ...]) -> tuple[list[Path] | None, int]:
    """The file ``<id><suffix><ext>`` of every frame (the first extension that exists), or None and how many had one."""
    found = []
    for f in frames:
        stem = f.name[: -len(RGB_SUFFIX)]
        hit = next((f.parent / f"{stem}{suffix}{e}" for e in exts if (f.parent / f"{stem}{suffix}{e}").is_file()), None)
        found.append(hit)
    have = sum(h is not None for h in found)
    return (found if have == len(frames) else None), have


def _is_colour(img: np.ndarray) -> bool:
    """Whether an image's channels differ anywhere (a colour-mapped visualisation, not grey data)."""
    return img.shape[-1] >= 3 and float(np.ptp(img[..., :3], axis=-1).max()) > 1e-3


def load(path: Path, opts: LoadOptions) -> SceneData:
    root = path.parent if path.is_file() else path
    cam_path = root / "cameras.npz"
    frames = _frames(root)
    if not frames:
        raise ReconError(f"no *{RGB_SUFFIX} images beside cameras.npz", root)
    world, scale = read_projections(cam_path)
    cameras, aabb, warnings = cameras_from_projections(world, scale, len(frames), image_size(frames[0]), cam_path, opts.downscale,
                                                       f"*{RGB_SUFFIX}")
    priors = {}
    for kind in ("depth", "normal"):
        files, have = _matching(frames, f"_{kind}", (".npy", ".png"))
        if files is None:
            if have:
                warnings.append(f"{kind} priors for {have} of {len(frames)} views only: not used")
            continue
        if kind == "depth" and files[0].suffix == ".png" and _is_colour(read_image_file(files[0])):
            warnings.append("the *_depth.png files are colour visualisations (no *_depth.npy): depth priors not used")
            continue
        priors[kind] = PriorFiles(files, kind, opts.downscale)
    masks = None
    mask_files, have = _matching(frames, "_mask", (".npy", ".png"))
    if mask_files is not None:
        masks = PriorFiles(mask_files, "mask", opts.downscale)
    elif have:
        warnings.append(f"masks for {have} of {len(frames)} views only: not used")
    return SceneData(
        name=scene_name(root),
        format=NAME,
        root=root,
        cameras=cameras,
        images=ImageFiles(frames, opts.downscale),
        masks=masks,
        priors=priors,
        splits=held_out_splits(len(frames), opts.test_every),
        aabb=aabb,
        background=opts.background or (1.0, 1.0, 1.0),
        warnings=warnings,
    )
