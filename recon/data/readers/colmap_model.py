"""A small reader (and writer, for tests and conversions) of COLMAP sparse models: ``cameras``, ``images`` and
``points3D`` as ``.bin`` or ``.txt``.

Layouts follow COLMAP's documentation (little-endian binary):

- cameras.bin: u64 count; per camera: i32 id, i32 model id, u64 width, u64 height, f64 params[model's count];
- images.bin: u64 count; per image: i32 id, f64 qw qx qy qz, f64 tx ty tz, i32 camera id, NUL-terminated name,
  u64 n points2D, n x (f64 x, f64 y, i64 point3D id);
- points3D.bin: u64 count; per point: u64 id, f64 x y z, u8 r g b, f64 error, u64 track length,
  length x (i32 image id, i32 point2D index).

Images store world-to-camera rotations (Hamilton quaternion, w first) and translations in OpenCV camera axes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recon.errors import ReconError

# id -> (name, number of parameters), as in COLMAP's camera_models.h.
MODELS = {
    0: ("SIMPLE_PINHOLE", 3),
    1: ("PINHOLE", 4),
    2: ("SIMPLE_RADIAL", 4),
    3: ("RADIAL", 5),
    4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8),
    6: ("FULL_OPENCV", 12),
    7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5),
    10: ("THIN_PRISM_FISHEYE", 12),
    11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16),
}
MODEL_IDS = {name: i for i, (name, _) in MODELS.items()}


@dataclass
class ColmapCamera:
    id: int
    model: str
    width: int
    height: int
    params: np.ndarray  # [model's parameter count] float64


@dataclass
class ColmapImage:
    id: int
    qvec: np.ndarray  # [4] w, x, y, z (world-to-camera rotation)
    tvec: np.ndarray  # [3] world-to-camera translation
    camera_id: int
    name: str


@dataclass
class ColmapModel:
    cameras: dict[int, ColmapCamera]
    images: dict[int, ColmapImage]
    points: np.ndarray  # [P, 3] float64
    colors: np.ndarray  # [P, 3] uint8
    folder: Path
    ext: str  # ".bin" or ".txt"


# ---------------------------------------------------------------------------------------------------------- reading
class _Bin:
    """Bounds-checked cursor over a binary file; running off the end is a clear 'truncated file' error."""

    def __init__(self, path: Path):
        self.path = path
        self.data = path.read_bytes()
        self.pos = 0

    def read(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ReconError(f"file is truncated (needed {size} bytes at offset {self.pos})", self.path)
        out = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return out

    def skip(self, nbytes: int):
        if self.pos + nbytes > len(self.data):
            raise ReconError(f"file is truncated (needed {nbytes} bytes at offset {self.pos})", self.path)
        self.pos += nbytes

    def cstring(self) -> str:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise ReconError("file is truncated (unterminated image name)", self.path)
        raw = self.data[self.pos : end]
        self.pos = end + 1
        return raw.decode("utf-8", errors="replace")


def _model_name(model_id: int, path: Path) -> tuple[str, int]:
    if model_id not in MODELS:
        raise ReconError(f"unknown COLMAP camera model id {model_id}", path)
    return MODELS[model_id]


def read_cameras_bin(path: Path) -> dict[int, ColmapCamera]:
    f = _Bin(path)
    (n,) = f.read("<Q")
    out = {}
    for _ in range(n):
        cam_id, model_id, w, h = f.read("<iiQQ")
        name, nparams = _model_name(model_id, path)
        params = np.array(f.read(f"<{nparams}d"))
        out[cam_id] = ColmapCamera(cam_id, name, int(w), int(h), params)
    return out


def read_images_bin(path: Path) -> dict[int, ColmapImage]:
    f = _Bin(path)
    (n,) = f.read("<Q")
    out = {}
    for _ in range(n):
        vals = f.read("<i7di")
        name = f.cstring()
        (npts,) = f.read("<Q")
        f.skip(24 * npts)  # the 2D observations are not needed
        out[vals[0]] = ColmapImage(vals[0], np.array(vals[1:5]), np.array(vals[5:8]), vals[8], name)
    return out


def read_points3d_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    f = _Bin(path)
    (n,) = f.read("<Q")
    xyz = np.empty((n, 3), dtype=np.float64)
    rgb = np.empty((n, 3), dtype=np.uint8)
    for i in range(n):
        vals = f.read("<Q3d3BdQ")
        xyz[i] = vals[1:4]
        rgb[i] = vals[4:7]
        f.skip(8 * vals[8])  # track: (i32 image id, i32 point2D index) pairs
    return xyz, rgb


def _txt_lines(path: Path) -> list[str]:
    """Lines of a COLMAP text file without comments; blank lines kept (images.txt may have empty point lines)."""
    if not path.is_file():
        raise ReconError("file is missing", path)
    return [ln.rstrip("\r\n") for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if not ln.startswith("#")]


def _floats(tokens: list[str], path: Path, lineno: int) -> list[float]:
    try:
        return [float(t) for t in tokens]
    except ValueError:
        raise ReconError(f"line {lineno}: expected numbers, got {' '.join(tokens)!r}", path) from None


def read_cameras_txt(path: Path) -> dict[int, ColmapCamera]:
    out = {}
    for lineno, line in enumerate(_txt_lines(path), 1):
        tok = line.split()
        if not tok:
            continue
        if len(tok) < 4:
            raise ReconError(f"camera line {lineno} has {len(tok)} fields (need ID MODEL WIDTH HEIGHT PARAMS...)", path)
        model = tok[1].upper()
        if model not in MODEL_IDS:
            raise ReconError(f"unknown COLMAP camera model {tok[1]!r}", path)
        nparams = MODELS[MODEL_IDS[model]][1]
        vals = _floats(tok[2:], path, lineno)
        if len(vals) - 2 != nparams:
            raise ReconError(f"camera {tok[0]}: model {model} needs {nparams} parameters, got {len(vals) - 2}", path)
        out[int(tok[0])] = ColmapCamera(int(tok[0]), model, int(vals[0]), int(vals[1]), np.array(vals[2:]))
    return out


def read_images_txt(path: Path) -> dict[int, ColmapImage]:
    out = {}
    lines = _txt_lines(path)
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        tok = lines[i].split(maxsplit=9)
        if len(tok) < 10:
            raise ReconError(f"image entry {tok[:1]} has {len(tok)} fields (need 10: ID QW QX QY QZ TX TY TZ CAMERA_ID NAME)", path)
        vals = _floats(tok[1:8], path, i + 1)
        out[int(tok[0])] = ColmapImage(int(tok[0]), np.array(vals[:4]), np.array(vals[4:7]), int(tok[8]), tok[9].strip())
        i += 2  # the next line lists the 2D points (possibly empty)
    return out


def read_points3d_txt(path: Path) -> tuple[np.ndarray, np.ndarray]:
    xyz, rgb = [], []
    for lineno, line in enumerate(_txt_lines(path), 1):
        tok = line.split()
        if not tok:
            continue
        if len(tok) < 8:
            raise ReconError(f"point line {lineno} has {len(tok)} fields (need at least 8)", path)
        vals = _floats(tok[1:7], path, lineno)
        xyz.append(vals[:3])
        rgb.append(vals[3:6])
    return np.asarray(xyz, dtype=np.float64).reshape(-1, 3), np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)


def model_ext(folder: Path) -> str | None:
    """'.bin' or '.txt' when ``folder`` holds a COLMAP model (binary preferred), else None."""
    for ext in (".bin", ".txt"):
        if (folder / f"cameras{ext}").is_file() and (folder / f"images{ext}").is_file():
            return ext
    return None


def read_model(folder: Path, *, points: bool = True) -> ColmapModel:
    """Read a sparse model folder (binary when ``cameras.bin`` and ``images.bin`` exist, else text).

    ``points3D`` is optional (some exports omit it): a missing file gives an empty point cloud.
    """
    ext = model_ext(folder)
    if ext is None:
        raise ReconError("no COLMAP model here (need cameras.bin + images.bin or cameras.txt + images.txt)", folder)
    if ext == ".bin":
        cams, imgs = read_cameras_bin(folder / "cameras.bin"), read_images_bin(folder / "images.bin")
    else:
        cams, imgs = read_cameras_txt(folder / "cameras.txt"), read_images_txt(folder / "images.txt")
    xyz, rgb = np.zeros((0, 3)), np.zeros((0, 3), dtype=np.uint8)
    pts_path = folder / f"points3D{ext}"
    if points and pts_path.is_file():
        xyz, rgb = read_points3d_bin(pts_path) if ext == ".bin" else read_points3d_txt(pts_path)
    return ColmapModel(cams, imgs, xyz, rgb, folder, ext)


# ---------------------------------------------------------------------------------------------------------- writing
def write_model(folder: Path, cameras: list[ColmapCamera], images: list[ColmapImage], xyz: np.ndarray, rgb: np.ndarray,
                ext: str = ".bin") -> None:
    """Write a sparse model (no 2D observations or tracks); used by tests and by dataset conversion scripts."""
    folder.mkdir(parents=True, exist_ok=True)
    if ext == ".bin":
        with open(folder / "cameras.bin", "wb") as f:
            f.write(struct.pack("<Q", len(cameras)))
            for c in cameras:
                f.write(struct.pack("<iiQQ", c.id, MODEL_IDS[c.model], c.width, c.height))
                f.write(struct.pack(f"<{len(c.params)}d", *c.params))
        with open(folder / "images.bin", "wb") as f:
            f.write(struct.pack("<Q", len(images)))
            for im in images:
                f.write(struct.pack("<i7di", im.id, *im.qvec, *im.tvec, im.camera_id))
                f.write(im.name.encode() + b"\x00")
                f.write(struct.pack("<Q", 0))
        with open(folder / "points3D.bin", "wb") as f:
            f.write(struct.pack("<Q", len(xyz)))
            for i, (p, c) in enumerate(zip(xyz, rgb)):
                f.write(struct.pack("<Q3d3BdQ", i + 1, *p, *(int(v) for v in c), 0.0, 0))
    else:
        with open(folder / "cameras.txt", "w") as f:
            f.write("# Camera list with one line of data per camera:\n")
            for c in cameras:
                f.write(f"{c.id} {c.model} {c.width} {c.height} {' '.join(repr(float(v)) for v in c.params)}\n")
        with open(folder / "images.txt", "w") as f:
            f.write("# Image list with two lines of data per image:\n")
            for im in images:
                vals = " ".join(repr(float(v)) for v in (*im.qvec, *im.tvec))
                f.write(f"{im.id} {vals} {im.camera_id} {im.name}\n\n")
        with open(folder / "points3D.txt", "w") as f:
            f.write("# 3D point list with one line of data per point:\n")
            for i, (p, c) in enumerate(zip(xyz, rgb)):
                f.write(f"{i + 1} {float(p[0])!r} {float(p[1])!r} {float(p[2])!r} {int(c[0])} {int(c[1])} {int(c[2])} 0.0\n")
