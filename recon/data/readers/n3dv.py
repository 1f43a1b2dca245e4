"""Multi-view video in the Neural-3D-Video (DyNeRF) layout: ``poses_bounds.npy`` + ``cam00.mp4``, ``cam01.mp4``, ...

One ``poses_bounds.npy`` row per camera (the LLFF layout, parsed by :func:`recon.data.readers.llff.parse_poses_bounds`),
rows in the cameras' sorted order. The already-extracted variant used by 4DGS-style code, ``cam00/images/0000.png``,
is read too. Frames are decoded lazily (:mod:`recon.data.video`).

Frames are ordered camera-major; each has ``time = frame / (n_frames - 1)`` in [0, 1] (computed over the full
sequence, so subsampling never changes a frame's time), its ``frame_ids`` and its ``camera_ids``. By the dataset's
convention cam00 is the test camera: all its frames form ``test``, the other cameras ``train``.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from recon.data.readers.common import LoadOptions, image_size, list_images, scene_name
from recon.data.readers.llff import parse_poses_bounds
from recon.data.scene import ImageFiles, SceneData
from recon.data.video import VideoFile, VideoFrames, select_frames
from recon.errors import ReconError

NAME = "n3dv"
DESCRIPTION = "multi-view video, Neural-3D-Video layout (poses_bounds.npy + camXX.mp4)"
LOOKS_FOR = "poses_bounds.npy with cam00.mp4, cam01.mp4, ... (or cam00/images/)"
OPTIONS = ("fps",)  # reader-specific keyword options of load_scene
CAM_RE = re.compile(r"cam(\d+)", re.IGNORECASE)


def _videos(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_file() and CAM_RE.fullmatch(p.stem) and p.suffix.lower() == ".mp4")


def _frame_folders(root: Path) -> list[Path]:
    return sorted(p / "images" for p in root.iterdir() if p.is_dir() and CAM_RE.fullmatch(p.name) and (p / "images").is_dir())


def detect(path: Path) -> bool:
    root = path.parent if path.is_file() else path
    return (root / "poses_bounds.npy").is_file() and bool(_videos(root) or _frame_folders(root))


def load(path: Path, opts: LoadOptions) -> SceneData:
    root = path.parent if path.is_file() else path
    pb_path = root / "poses_bounds.npy"
    pb = parse_poses_bounds(pb_path)
    videos = _videos(root)
    folders = [] if videos else _frame_folders(root)
    sources = videos or folders
    if not sources:
        raise ReconError("no camXX.mp4 videos or camXX/images/ folders", root)
    n_cams = len(sources)
    if len(pb.camtoworlds) != n_cams:
        raise ReconError(
            f"camera count mismatch: poses_bounds.npy has {len(pb.camtoworlds)} poses but there are {n_cams} cameras "
            f"({sources[0].name if videos else sources[0].parent.name}, ...)",
            pb_path,
        )

    # Frame counts: synchronised rigs can differ by a frame or two at the end; use the common length.
    if videos:
        decoders = [VideoFile(p) for p in videos]
        counts = [v.n_frames for v in decoders]
        sizes = [(v.width, v.height) for v in decoders]
        fps = decoders[0].fps
    else:
        frame_lists = [list_images(f) for f in folders]
        counts = [len(f) for f in frame_lists]
        if min(counts) == 0:
            raise ReconError("no frames", folders[counts.index(0)])
        sizes = [image_size(f[0]) for f in frame_lists]
        fps = float(opts.extra.get("fps", 30.0))
    n_frames = min(counts)
    warnings = []
    if max(counts) != n_frames:
        warnings.append(f"cameras have {min(counts)} to {max(counts)} frames; using the first {n_frames} of each")
    frames = select_frames(n_frames, fps, stride=opts.frame_stride, video_fps=opts.video_fps, max_frames=opts.max_frames)
    times_per_frame = frames / max(n_frames - 1, 1)

    cam_ids = np.repeat(np.arange(n_cams), len(frames))
    frame_ids = np.tile(frames, n_cams)
    times = np.tile(times_per_frame, n_cams)

    cams = pb.cameras([s[0] for s in sizes], [s[1] for s in sizes])[cam_ids]
    cams = replace(cams, times=torch.as_tensor(times, dtype=torch.float32))
    if opts.downscale > 1:
        cams = cams.scaled(1.0 / opts.downscale)

    if videos:
        images = VideoFrames(decoders, np.stack([cam_ids, frame_ids], -1), opts.downscale)
    else:
        images = ImageFiles([frame_lists[c][f] for c, f in zip(cam_ids, frame_ids)], opts.downscale)

    # cam00 is the held-out camera by convention; a single camera cannot hold one out.
    names = [s.stem if videos else s.parent.name for s in sources]
    test_cam = next((i for i, nm in enumerate(names) if int(CAM_RE.fullmatch(nm).group(1)) == 0), 0)
    if n_cams > 1:
        splits = {"train": np.flatnonzero(cam_ids != test_cam), "test": np.flatnonzero(cam_ids == test_cam)}
    else:
        splits = {"train": np.arange(len(cam_ids))}
    return SceneData(
        name=scene_name(root),
        format=NAME,
        root=root,
        cameras=cams,
        images=images,
        splits=splits,
        near_far=pb.near_far[cam_ids],
        frame_ids=frame_ids.astype(np.int64),
        camera_ids=cam_ids.astype(np.int64),
        background=opts.background or (1.0, 1.0, 1.0),
        warnings=warnings,
    )
