"""``recon data info``: scene_info's dict and its rich rendering."""

from __future__ import annotations

import io
import json

import numpy as np
from rich.console import Console

from recon.cameras import Cameras, orbit_poses
from recon.data import FORMATS, load_scene
from recon.data.info import print_scene_info, scene_info
from recon.data.readers import writers

W, H, F = 24, 18, 20.0


def render(info) -> str:
    out = io.StringIO()
    print_scene_info(info, Console(file=out, width=160))
    return out.getvalue()


def test_formats_listed():
    assert set(FORMATS) >= {"nerfstudio", "blender", "dnerf", "colmap", "llff", "neus", "n3dv"}


def test_info_static_scene_with_points(tmp_path):
    rng = np.random.default_rng(0)
    cams = Cameras.create(orbit_poses(4, 3.0), F, F, W / 2, H / 2, W, H)
    images = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(4)]
    points = rng.uniform(-1, 1, (10, 3))
    writers.write_colmap(tmp_path, cams, images, points=points, colors=np.ones_like(points))
    info = scene_info(load_scene(tmp_path))
    assert info["format"] == "colmap" and info["frames"] == 4 and info["points"] == 10
    assert info["splits"] == {"train": 3, "test": 1} and info["resolutions"] == {f"{W}x{H}": 4}
    assert info["intrinsics"]["fx"] == [F, F] and info["intrinsics"]["models"] == {"pinhole": 4}
    assert info["channels"] == 3 and info["time"] is None and info["warnings"] == []
    json.dumps(info)  # --json must work
    text = render(info)
    assert "colmap" in text and f"{W}x{H}" in text and "train 3, test 1" in text


def test_info_dynamic_scene(tmp_path):
    rng = np.random.default_rng(1)
    cams = Cameras.create(orbit_poses(5, 3.0), F, F, W / 2, H / 2, W, H)
    images = [rng.integers(0, 256, (H, W, 4), dtype=np.uint8) for _ in range(5)]
    writers.write_blender(tmp_path, cams, images, {"train": np.arange(4), "val": np.array([4])}, times=np.linspace(0, 1, 5))
    info = scene_info(load_scene(tmp_path))
    assert info["format"] == "dnerf" and info["time"] == {"min": 0.0, "max": 1.0, "distinct": 5}
    assert info["split_aliases"] == {"test": "val"} and info["channels"] == 4
    text = render(info)
    assert "test 1 (= val)" in text and "RGBA" in text and "time" in text


def test_info_shared_sets(shared_data):
    fox = scene_info(load_scene(shared_data / "fox"))
    assert fox["frames"] == 50 and fox["resolutions"] == {"270x480": 50} and len(fox["warnings"]) == 1
    assert fox["intrinsics"]["distorted"] and "17 of 67 frames" in render(fox)
    dtu = scene_info(load_scene(shared_data / "dtu_scan65"))
    assert dtu["masks"] and dtu["bounds"]["aabb"] is not None and dtu["resolutions"] == {"400x300": 49}


def test_cli_info_reports_the_datas_own_distortion(tmp_path):
    """An OPENCV COLMAP model: `recon data info` names the data's model and coefficients (not the undistorted view
    training uses) and says that training undistorts."""
    import subprocess
    import sys

    from recon.data.readers.colmap_model import ColmapCamera, ColmapImage, write_model
    from recon.rotations import rotmat_to_quat

    rng = np.random.default_rng(1)
    c2w = orbit_poses(4, 3.0)
    w2c = writers.rigid_inverse(np.asarray(c2w, np.float64))
    writers._write_images(tmp_path / "images", [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(4)], [f"{i}.png" for i in range(4)])
    cam = ColmapCamera(1, "OPENCV", W, H, np.array([F, F, W / 2, H / 2, 0.05, -0.02, 0.001, -0.002]))
    imgs = [ColmapImage(i + 1, rotmat_to_quat(w2c[i, :3, :3]), w2c[i, :3, 3], 1, f"{i}.png") for i in range(4)]
    write_model(tmp_path / "sparse" / "0", [cam], imgs, np.zeros((0, 3)), np.zeros((0, 3), np.uint8), ".bin")
    r = subprocess.run([sys.executable, "-m", "recon.cli", "data", "info", str(tmp_path), "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    intr = json.loads(r.stdout)["intrinsics"]
    assert intr["models"] == {"opencv": 4} and intr["distorted"] is True
    assert intr["distortion"]["k1"] == [0.05, 0.05] and intr["distortion"]["p2"] == [-0.002, -0.002]
    text = subprocess.run([sys.executable, "-m", "recon.cli", "data", "info", str(tmp_path)], capture_output=True, text=True).stdout
    assert "training undistorts" in text and "k1 0.05" in text
