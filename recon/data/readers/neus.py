"""NeuS / IDR object captures (DTU, BlendedMVS preprocessing): ``cameras_sphere.npz`` + ``image/`` + ``mask/``.

``world_mat_i`` is the 4x4 projection K [R | t] (world -> pixels) of image i; ``scale_mat_i`` maps the unit sphere
(the region of interest) into the world. NeuS trains in the unit-sphere frame (``world_mat @ scale_mat``); we
report cameras in the data's own world frame (``world_mat``) and give the sphere's box as ``aabb``, so that meshes
and Chamfer distances come out in the data's units (DTU: millimetres).

The decomposition P = K [R | t] uses an RQ decomposition written with numpy (no OpenCV).

Pixel convention: NeuS/IDR (like OpenCV) put pixel centres at integer coordinates, ours at +0.5, so the principal
point is shifted by +0.5 px on load (:data:`PIXEL_CENTER_SHIFT`).
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np

from recon.cameras import Cameras, check_poses
from recon.data.readers.common import LoadOptions, held_out_splits, image_size, list_images, scene_name
from recon.data.scene import ImageFiles, SceneData
from recon.errors import ReconError

NAME = "neus"
DESCRIPTION = "NeuS / IDR (cameras_sphere.npz + image/ + mask/)"
LOOKS_FOR = "cameras_sphere.npz (or cameras.npz) with image/"
OPTIONS = ()  # reader-specific keyword options of load_scene
CAMERA_FILES = ("cameras_sphere.npz", "cameras.npz")
PIXEL_CENTER_SHIFT = 0.5


def rq3(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RQ decomposition of a 3x3 matrix: M = K @ R with K upper triangular (positive diagonal), R orthogonal.

    Obtained from numpy's QR of the row-reversed transpose: with J the reversal permutation, (J M)^T = Q U gives
    M = (J U^T J)(J Q^T), where J U^T J is upper triangular and J Q^T orthogonal.
    """
    J = np.eye(3)[::-1]
    Q, U = np.linalg.qr((J @ M).T)
    K = J @ U.T @ J
    R = J @ Q.T
    D = np.diag(np.sign(np.diag(K)) + (np.diag(K) == 0))  # make K's diagonal positive
    return K @ D, D @ R


def decompose_projection(P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a 3x4 projection P ~ K [R | t] into K (3x3, K[2, 2] = 1) and the world-to-camera [4, 4] matrix."""
    P = np.asarray(P, dtype=np.float64)
    M = P[:, :3]
    if np.linalg.det(M) < 0:  # P is defined up to scale, sign included: pick the one with a proper rotation
        P = -P
        M = -M
    K, R = rq3(M)
    scale = K[2, 2]
    t = np.linalg.solve(K, P[:, 3])
    w2c = np.eye(4)
    w2c[:3, :3] = R
    w2c[:3, 3] = t
    return K / scale, w2c


def _indexed(npz, prefix: str) -> dict[int, np.ndarray]:
    out = {}
    for key in npz.files:
        m = re.fullmatch(prefix + r"(\d+)", key)
        if m:
            out[int(m.group(1))] = npz[key]
    return out


def find_cameras(root: Path) -> Path | None:
    for name in CAMERA_FILES:
        if (root / name).is_file():
            return root / name
    return None


def detect(path: Path) -> bool:
    if path.is_file():
        return path.name in CAMERA_FILES and (path.parent / "image").is_dir()
    return find_cameras(path) is not None and (path / "image").is_dir()


def read_projections(cam_path: Path) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """``world_mat_i`` and ``scale_mat_i`` of an IDR/NeuS/VolSDF/MonoSDF camera file, by index."""
    try:
        npz = np.load(cam_path, allow_pickle=False)
        return _indexed(npz, "world_mat_"), _indexed(npz, "scale_mat_")
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ReconError(f"cannot read .npz ({type(exc).__name__}: {str(exc)[:100]})", cam_path) from None


def load(path: Path, opts: LoadOptions) -> SceneData:
    root = path.parent if path.is_file() else path
    cam_path = path if path.is_file() else find_cameras(root)
    if cam_path is None:
        raise ReconError(f"no {' or '.join(CAMERA_FILES)}", root)
    world, scale = read_projections(cam_path)
    files = list_images(root / "image")
    if not files:
        raise ReconError("no images in image/", root / "image")
    n = len(files)
    cameras, aabb, warnings = cameras_from_projections(world, scale, n, image_size(files[0]), cam_path, opts.downscale, "image/")

    masks = None
    mask_files = list_images(root / "mask")
    if mask_files:
        if len(mask_files) != n:
            raise ReconError(f"{len(mask_files)} masks in mask/ but {n} images in image/", root / "mask")
        masks = ImageFiles(mask_files, opts.downscale)

    return SceneData(
        name=scene_name(root),
        format=NAME,
        root=root,
        cameras=cameras,
        images=ImageFiles(files, opts.downscale),
        masks=masks,
        splits=held_out_splits(n, opts.test_every),
        aabb=aabb,
        background=opts.background or (1.0, 1.0, 1.0),
        warnings=warnings,
    )


def cameras_from_projections(world: dict[int, np.ndarray], scale: dict[int, np.ndarray], n: int, size: tuple[int, int], cam_path: Path,
                             downscale: int, images_named: str) -> tuple[Cameras, np.ndarray | None, list[str]]:
    """Cameras (data frame) of ``n`` images of ``size`` (w, h) from their projections, and the region of interest
    (``scale_mat``'s sphere as a box, or None with a warning). ``images_named`` says where the images were counted."""
    if sorted(world) != list(range(len(world))):
        raise ReconError(f"world_mat_i entries are not numbered 0..{len(world) - 1}", cam_path)
    if len(world) != n:
        raise ReconError(f"camera count mismatch: {len(world)} world_mat entries but {n} images in {images_named}", cam_path)

    Ks, c2ws = [], []
    for i in range(n):
        P = np.asarray(world[i], dtype=np.float64)
        if P.shape not in ((4, 4), (3, 4)):
            raise ReconError(f"world_mat_{i} has shape {list(P.shape)}, expected [4, 4]", cam_path)
        if not np.isfinite(P).all():
            raise ReconError(f"world_mat_{i} contains NaN or inf values", cam_path)
        if abs(np.linalg.det(P[:3, :3])) < 1e-12:
            raise ReconError(f"world_mat_{i} is singular (not a projection matrix)", cam_path)
        K, w2c = decompose_projection(P[:3])
        Ks.append(K)
        c2ws.append(np.linalg.inv(w2c))
    c2w = np.stack(c2ws)
    check_poses(c2w, cam_path)
    Ks = np.stack(Ks)

    w, h = size
    cameras = Cameras.create(
        c2w,
        fx=Ks[:, 0, 0],
        fy=Ks[:, 1, 1],
        cx=Ks[:, 0, 2] + PIXEL_CENTER_SHIFT,
        cy=Ks[:, 1, 2] + PIXEL_CENTER_SHIFT,
        width=w,
        height=h,
    )
    if downscale > 1:
        cameras = cameras.scaled(1.0 / downscale)

    aabb = None
    warnings = []
    if scale:
        S = np.asarray(scale.get(0, next(iter(scale.values()))), dtype=np.float64)
        if S.shape != (4, 4) or not np.isfinite(S).all():
            raise ReconError("scale_mat_0 must be a finite 4x4 matrix", cam_path)
        radius = np.abs(np.diag(S)[:3])
        center = S[:3, 3]
        aabb = np.stack([center - radius, center + radius]).astype(np.float32)
    else:
        warnings.append("no scale_mat_i in the camera file: no region of interest (aabb)")

    skew = np.abs(Ks[:, 0, 1]) / Ks[:, 0, 0]
    if skew.max() > 1e-3:
        warnings.append(f"camera skew up to {skew.max():.2g} x fx ignored")

    return cameras, aabb, warnings
