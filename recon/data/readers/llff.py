"""LLFF forward-facing captures: ``poses_bounds.npy`` + ``images/`` (and ``images_<n>/``).

``poses_bounds.npy`` is [N, 17]: a 3x5 matrix per image, row-major, then the near and far scene depths. The 3x5
matrix is [R | t | hwf]: the columns of R are the camera's axes in world coordinates in LLFF's order
[down, right, backwards], t is the camera centre, and hwf = (height, width, focal) in pixels of the images the
poses were computed for. We reorder the axes to OpenCV's [right, down, forward] = [col1, col0, -col2] and put the
principal point at the image centre (LLFF assumes it there).

The Neural-3D-Video layout (:mod:`recon.data.readers.n3dv`) uses the same file, one row per camera;
:func:`parse_poses_bounds` is shared by both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recon.cameras import Cameras, check_poses
from recon.data.readers.common import (
    LoadOptions,
    downscaled_folder,
    held_out_splits,
    image_size,
    list_images,
    masks_beside,
    scale_cameras_to,
    scene_name,
)
from recon.data.scene import ImageFiles, SceneData
from recon.errors import ReconError

NAME = "llff"
DESCRIPTION = "LLFF (poses_bounds.npy + images/)"
LOOKS_FOR = "poses_bounds.npy with images/"
OPTIONS = ("same_size",)  # reader-specific keyword options of load_scene


@dataclass
class PosesBounds:
    """Contents of a ``poses_bounds.npy``.

    Attributes:
        camtoworlds: [N, 4, 4] float64 OpenCV camera-to-world.
        heights, widths, focals: [N] the image size and focal length (pixels) the poses were computed for.
        near_far: [N, 2] depth bounds.
    """

    camtoworlds: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    focals: np.ndarray
    near_far: np.ndarray

    def cameras(self, widths=None, heights=None) -> Cameras:
        """Pinhole cameras, principal point at the centre; resized to ``widths`` x ``heights`` when given (the
        images on disk are often smaller or larger than the size in the file)."""
        cams = Cameras.create(
            self.camtoworlds,
            fx=self.focals,
            fy=self.focals,
            cx=self.widths / 2.0,
            cy=self.heights / 2.0,
            width=np.round(self.widths).astype(np.int64),
            height=np.round(self.heights).astype(np.int64),
        )
        if widths is not None:
            cams = scale_cameras_to(cams, widths, heights)
        return cams


def llff_to_opencv(poses: np.ndarray) -> np.ndarray:
    """[N, 3, 4] LLFF [down, right, back | centre] -> [N, 4, 4] OpenCV camera-to-world [right, down, forward | centre]."""
    out = np.zeros((len(poses), 4, 4))
    out[:, :3, 0] = poses[:, :, 1]
    out[:, :3, 1] = poses[:, :, 0]
    out[:, :3, 2] = -poses[:, :, 2]
    out[:, :3, 3] = poses[:, :, 3]
    out[:, 3, 3] = 1.0
    return out


def opencv_to_llff(c2w: np.ndarray) -> np.ndarray:
    """Inverse of :func:`llff_to_opencv`: [N, 4, 4] -> [N, 3, 4]."""
    return np.stack([c2w[:, :3, 1], c2w[:, :3, 0], -c2w[:, :3, 2], c2w[:, :3, 3]], -1)


def parse_poses_bounds(path: Path) -> PosesBounds:
    """Read and check ``poses_bounds.npy`` (shape, finiteness, rigid rotations, positive sizes and bounds)."""
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ReconError("file is missing", path) from None
    except Exception as exc:  # numpy raises ValueError/OSError/UnpicklingError for broken files
        raise ReconError(f"cannot read .npy array ({type(exc).__name__}: {str(exc)[:100]})", path) from None
    if arr.ndim != 2 or arr.shape[1] != 17 or len(arr) == 0:
        raise ReconError(f"expected an [N, 17] array, got shape {list(arr.shape)}", path)
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        row = int(np.argmax(~np.isfinite(arr).all(axis=1)))
        raise ReconError(f"row {row} contains NaN or inf values", path)
    mats = arr[:, :15].reshape(-1, 3, 5)
    c2w = llff_to_opencv(mats[:, :, :4])
    check_poses(c2w, path)
    h, w, f = mats[:, 0, 4], mats[:, 1, 4], mats[:, 2, 4]
    if (h <= 0).any() or (w <= 0).any() or (f <= 0).any():
        raise ReconError("image height, width and focal length (column 5 of each pose) must be positive", path)
    near_far = arr[:, 15:17]
    if (near_far[:, 0] <= 0).any() or (near_far[:, 1] <= near_far[:, 0]).any():
        # Not fatal for reconstruction, but a sign of a wrong file; we still refuse, because methods use them.
        raise ReconError("near/far bounds must satisfy 0 < near < far", path)
    return PosesBounds(c2w, h, w, f, near_far.astype(np.float32))


def detect(path: Path) -> bool:
    root = path.parent if path.is_file() else path
    return (root / "poses_bounds.npy").is_file() and (root / "images").is_dir()


def load(path: Path, opts: LoadOptions) -> SceneData:
    root = path.parent if path.is_file() else path
    pb_path = root / "poses_bounds.npy"
    pb = parse_poses_bounds(pb_path)
    images_dir = root / "images"
    files = list_images(images_dir)
    if len(files) != len(pb.camtoworlds):
        raise ReconError(
            f"camera count mismatch: poses_bounds.npy has {len(pb.camtoworlds)} poses but images/ has {len(files)} images",
            pb_path if files else images_dir,
        )
    masks, warnings = masks_beside(root, files, opts.downscale)
    on_load = opts.downscale
    pre = downscaled_folder(root, "images", opts.downscale)
    if pre is not None:
        pre_files = list_images(pre)
        if len(pre_files) != len(files):
            raise ReconError(f"{pre.name}/ has {len(pre_files)} images but images/ has {len(files)}", pre)
        files, on_load = pre_files, 1
    # Scale the file's intrinsics to the images actually on disk (LLFF's hwf is often for the originals).
    sizes = [image_size(files[0])] * len(files) if opts.extra.get("same_size", True) else [image_size(p) for p in files]
    cameras = pb.cameras([s[0] for s in sizes], [s[1] for s in sizes])
    if on_load > 1:
        cameras = cameras.scaled(1.0 / on_load)
    return SceneData(
        name=scene_name(root),
        format=NAME,
        root=root,
        cameras=cameras,
        images=ImageFiles(files, on_load),
        splits=held_out_splits(len(files), opts.test_every),
        near_far=pb.near_far,
        background=opts.background or (1.0, 1.0, 1.0),
        masks=masks,
        warnings=warnings,
    )
