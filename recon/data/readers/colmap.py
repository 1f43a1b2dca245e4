"""COLMAP sparse reconstructions: ``images/`` plus ``sparse/0``, ``colmap/sparse/0`` (nerfstudio) or ``sparse/``.

Camera models map onto ours (parameters in COLMAP's order):

=========================  =========================  ==============================================
COLMAP                     params                     recon
=========================  =========================  ==============================================
SIMPLE_PINHOLE             f cx cy                    pinhole
PINHOLE                    fx fy cx cy                pinhole
SIMPLE_RADIAL              f cx cy k                  opencv (k1)
RADIAL                     f cx cy k1 k2              opencv (k1 k2)
OPENCV                     fx fy cx cy k1 k2 p1 p2    opencv
FULL_OPENCV                ... k1 k2 p1 p2 k3 k4-k6   opencv when k4 = k5 = k6 = 0 (else unsupported)
OPENCV_FISHEYE             fx fy cx cy k1 k2 k3 k4    fisheye
SIMPLE_RADIAL_FISHEYE      f cx cy k                  fisheye (k1)
RADIAL_FISHEYE             f cx cy k1 k2              fisheye (k1 k2)
=========================  =========================  ==============================================

COLMAP's pixel convention (the top-left pixel's centre at (0.5, 0.5)) is ours, so intrinsics are used as they are.
Images are sorted by name; every ``test_every``-th is held out. ``downscale=n`` uses ``images_n/`` when it exists
(sizes read from the files, since such folders round sizes their own way), else downscales on load. Registered
images whose file is gone (deleted after reconstruction) are skipped with one warning. A ``masks/`` folder beside
``images/`` gives foreground masks, matched by file stem (:func:`~recon.data.readers.common.masks_beside`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recon.cameras import Cameras, check_poses
from recon.data.readers.colmap_model import ColmapCamera, model_ext, read_model
from recon.data.readers.common import (
    LoadOptions,
    downscaled_folder,
    held_out_splits,
    image_size,
    masks_beside,
    rigid_inverse,
    scale_cameras_to,
    scene_name,
)
from recon.data.scene import ImageFiles, SceneData
from recon.errors import ReconError
from recon.rotations import quat_to_rotmat

NAME = "colmap"
DESCRIPTION = "COLMAP sparse model (binary or text) + images/"
LOOKS_FOR = "sparse/0/, colmap/sparse/0/ or sparse/ with cameras+images .bin/.txt"
OPTIONS = ("images",)  # reader-specific keyword options of load_scene
MODEL_DIRS = ("sparse/0", "colmap/sparse/0", "sparse")


def find_model(path: Path) -> tuple[Path, Path] | None:
    """(dataset root, model folder) for ``path`` = a dataset root, a model folder, or a file inside one."""
    if path.is_file():
        path = path.parent
    for sub in MODEL_DIRS:
        if model_ext(path / sub) is not None:
            return path, path / sub
    if model_ext(path) is not None:
        # A model folder itself: the dataset root is above sparse/0, colmap/sparse/0 or sparse/.
        root = path
        for sub in sorted(MODEL_DIRS, key=len, reverse=True):  # the longest layout first
            parts = Path(sub).parts
            if path.parts[-len(parts):] == parts:
                root = path.parents[len(parts) - 1]
                break
        return root, path
    return None


def detect(path: Path) -> bool:
    return find_model(path) is not None


def convert_camera(cam: ColmapCamera, source: Path) -> tuple[str, list[float], np.ndarray]:
    """COLMAP camera -> (our model name, [fx, fy, cx, cy], distortion [k1, k2, k3, k4, p1, p2])."""
    p = [float(v) for v in cam.params]
    d = np.zeros(6)
    m = cam.model
    if m == "SIMPLE_PINHOLE":
        return "pinhole", [p[0], p[0], p[1], p[2]], d
    if m == "PINHOLE":
        return "pinhole", p[:4], d
    if m in ("SIMPLE_RADIAL", "RADIAL", "SIMPLE_RADIAL_FISHEYE", "RADIAL_FISHEYE"):
        d[0] = p[3]
        if m.startswith("RADIAL"):
            d[1] = p[4]
        return ("fisheye" if m.endswith("FISHEYE") else "opencv"), [p[0], p[0], p[1], p[2]], d
    if m == "OPENCV":
        d[[0, 1, 4, 5]] = p[4:8]
        return "opencv", p[:4], d
    if m == "FULL_OPENCV" and not any(p[9:12]):
        d[[0, 1, 4, 5, 2]] = p[4:9]
        return "opencv", p[:4], d
    if m == "OPENCV_FISHEYE":
        d[:4] = p[4:8]
        return "fisheye", p[:4], d
    detail = " with nonzero k4..k6 (rational model)" if m == "FULL_OPENCV" else ""
    raise ReconError(
        f"unsupported COLMAP camera model {m}{detail} for camera {cam.id} (supported: SIMPLE_PINHOLE, PINHOLE, "
        "SIMPLE_RADIAL, RADIAL, OPENCV, OPENCV_FISHEYE, SIMPLE_RADIAL_FISHEYE, RADIAL_FISHEYE; undistort with "
        "colmap image_undistorter)",
        source,
    )


def load(path: Path, opts: LoadOptions) -> SceneData:
    found = find_model(path)
    if found is None:
        raise ReconError(f"no COLMAP model found (looked for {LOOKS_FOR})", path)
    root, model_dir = found
    model = read_model(model_dir)
    cam_file = model_dir / f"cameras{model.ext}"
    img_file = model_dir / f"images{model.ext}"
    if not model.images:
        raise ReconError("the model has no registered images", img_file)

    images_dir = root / str(opts.extra.get("images", "images"))
    if not images_dir.is_dir():
        raise ReconError(f"image folder {images_dir.name}/ not found next to the COLMAP model", root)

    entries = sorted(model.images.values(), key=lambda im: im.name)
    converted = {}
    kept, missing = [], []
    for im in entries:
        if im.camera_id not in model.cameras:
            raise ReconError(f"image {im.name!r} refers to camera {im.camera_id}, which is not in {cam_file.name}", img_file)
        if im.camera_id not in converted:
            converted[im.camera_id] = convert_camera(model.cameras[im.camera_id], cam_file)
        (kept if (images_dir / im.name).is_file() else missing).append(im)
    warnings = []
    if missing:
        if not kept:
            raise ReconError(
                f"none of the {len(entries)} registered images is in {images_dir.name}/ (first: {missing[0].name!r})", root
            )
        shown = ", ".join(im.name for im in missing[:3]) + (", ..." if len(missing) > 3 else "")
        warnings.append(f"{len(missing)} of {len(entries)} registered images skipped: file missing ({shown})")

    w2c = np.zeros((len(kept), 4, 4))
    for i, im in enumerate(kept):
        if not (np.isfinite(im.qvec).all() and np.isfinite(im.tvec).all()) or np.linalg.norm(im.qvec) < 1e-12:
            raise ReconError(f"image {im.name!r} has a NaN, inf or zero pose", img_file)
        w2c[i, :3, :3] = quat_to_rotmat(im.qvec)
        w2c[i, :3, 3] = im.tvec
        w2c[i, 3, 3] = 1.0
    c2w = rigid_inverse(w2c)
    check_poses(c2w, img_file)

    cams = [model.cameras[im.camera_id] for im in kept]
    conv = [converted[im.camera_id] for im in kept]
    cameras = Cameras.create(
        c2w,
        fx=[c[1][0] for c in conv],
        fy=[c[1][1] for c in conv],
        cx=[c[1][2] for c in conv],
        cy=[c[1][3] for c in conv],
        width=[c.width for c in cams],
        height=[c.height for c in cams],
        model=[c[0] for c in conv],
        distortion=np.stack([c[2] for c in conv]),
    )

    paths = [images_dir / im.name for im in kept]
    masks, mask_warnings = masks_beside(root, paths, opts.downscale)
    warnings += mask_warnings
    on_load = opts.downscale
    pre = downscaled_folder(root, images_dir.name, opts.downscale)
    if pre is not None and all((pre / im.name).is_file() for im in kept):
        paths = [pre / im.name for im in kept]
        # One header per physical camera is enough to learn the folder's rounding.
        size_of = {}
        for im, p in zip(kept, paths):
            if im.camera_id not in size_of:
                size_of[im.camera_id] = image_size(p)
        sizes = [size_of[im.camera_id] for im in kept]
        cameras = scale_cameras_to(cameras, [s[0] for s in sizes], [s[1] for s in sizes])
        on_load = 1
    elif opts.downscale > 1:
        cameras = cameras.scaled(1.0 / opts.downscale)

    colors = model.colors.astype(np.float32) / 255.0 if len(model.points) else None
    return SceneData(
        name=scene_name(root),
        format=NAME,
        root=root,
        cameras=cameras,
        images=ImageFiles(paths, on_load),
        splits=held_out_splits(len(kept), opts.test_every),
        points=model.points.astype(np.float32) if len(model.points) else None,
        point_colors=colors,
        background=opts.background or (1.0, 1.0, 1.0),
        masks=masks,
        warnings=warnings,
    )
