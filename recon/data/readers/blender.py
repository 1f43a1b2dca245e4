"""Blender synthetic scenes (NeRF-synthetic): ``transforms_{train,val,test}.json`` next to the image folders.

Each file holds ``camera_angle_x`` and frames whose ``file_path`` usually has no extension (``./train/r_0`` means
``train/r_0.png``). Images are RGBA and composited over ``background`` (white by default, as in the NeRF paper's
evaluation). Splits come from the files: ``test`` is the test file, else the val file, else every ``test_every``-th
training frame is held out (so a train-only copy, like the shared lego, still has a test split).

D-NeRF (:mod:`recon.data.readers.dnerf`) is this layout plus a per-frame ``time``; both share :func:`load_blender`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recon.data.readers.common import IMAGE_EXTENSIONS, LoadOptions, find_image, image_size, read_json, scene_name
from recon.data.readers.transforms import cameras_from_frames, frame_camera, frame_poses, frame_times, frames_list
from recon.data.scene import ImageFiles, SceneData, every_nth_split
from recon.errors import ReconError

NAME = "blender"
DESCRIPTION = "Blender synthetic (transforms_{train,val,test}.json)"
LOOKS_FOR = "transforms_train.json"
OPTIONS = ()  # reader-specific keyword options of load_scene
SPLIT_FILES = ("train", "val", "test")


def split_file(root: Path, split: str) -> Path:
    return root / f"transforms_{split}.json"


def split_names(root: Path) -> list[str]:
    """train, val, test, then any other ``transforms_<name>.json`` as split ``<name>`` (e.g. relit test views,
    ``transforms_test_relight_city.json``), sorted."""
    extra = sorted(p.stem[len("transforms_"):] for p in root.glob("transforms_*.json") if p.stem[len("transforms_"):] not in SPLIT_FILES)
    return list(SPLIT_FILES) + [name for name in extra if name]


def frames_have_time(path: Path) -> bool:
    """Whether ``transforms_train.json`` under ``path`` has per-frame ``time`` (then it is D-NeRF)."""
    root = path.parent if path.is_file() else path
    try:
        meta = read_json(split_file(root, "train"))
        frames = meta.get("frames") or []
        return bool(frames) and isinstance(frames[0], dict) and "time" in frames[0]
    except (ReconError, AttributeError):
        return False  # let the Blender reader report the problem


def detect(path: Path) -> bool:
    if path.is_file():
        return path.name.startswith("transforms_") and path.suffix == ".json" and not frames_have_time(path)
    return split_file(path, "train").is_file() and not frames_have_time(path)


def load(path: Path, opts: LoadOptions) -> SceneData:
    return load_blender(path, opts, dynamic=False)


def load_blender(path: Path, opts: LoadOptions, *, dynamic: bool) -> SceneData:
    """Read a Blender / D-NeRF folder (or one of its ``transforms_*.json``; the whole folder is read either way)."""
    root = path.parent if path.is_file() else path
    fmt = "dnerf" if dynamic else NAME
    if not split_file(root, "train").is_file():
        raise ReconError("no transforms_train.json (Blender layout needs it)", root)

    c2ws, cams, paths, times = [], [], [], []
    splits: dict[str, np.ndarray] = {}
    for split in split_names(root):
        json_path = split_file(root, split)
        if not json_path.is_file():
            continue
        meta = read_json(json_path)
        frames = frames_list(meta, json_path)
        labels = [f["file_path"] for f in frames]
        files = []
        for label in labels:
            img = find_image(root, label)
            if img is None:
                raise ReconError(f"image {label!r} not found (tried extensions {', '.join(IMAGE_EXTENSIONS[:3])}, ...)", json_path)
            files.append(img)
        # Blender renders share one size per file: read it once from the first image's header.
        size = image_size(files[0])
        cams += [frame_camera(meta, f, json_path, lambda: size) for f in frames]
        c2ws.append(frame_poses(frames, labels, json_path))
        t = frame_times(frames, labels, json_path)
        if dynamic and t is None:
            raise ReconError("D-NeRF frames need a 'time' each", json_path)
        times.append(t)
        start = len(paths)
        paths += files
        splits[split] = np.arange(start, len(paths), dtype=np.int64)

    if "test" not in splits:
        if "val" in splits:
            splits["test"] = splits["val"]  # the usual practice for sets shipped without a test file
        elif opts.test_every > 0:
            held = every_nth_split(len(splits["train"]), opts.test_every)
            if "test" in held:
                train = splits["train"]
                splits = {"train": train[held["train"]], "test": train[held["test"]]}

    cameras = cameras_from_frames(np.concatenate(c2ws), cams, np.concatenate(times) if dynamic else None)
    if opts.downscale > 1:
        cameras = cameras.scaled(1.0 / opts.downscale)
    return SceneData(
        name=scene_name(root),
        format=fmt,
        root=root,
        cameras=cameras,
        images=ImageFiles(paths, opts.downscale),
        splits=splits,
        background=opts.background or (1.0, 1.0, 1.0),
    )
