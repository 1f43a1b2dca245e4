"""`recon data process`: photos and a video of recon's synthetic capture (datasets/capture.py: fractal textures,
a camera walking around a table) posed by pycolmap and checked against the true cameras; frame picking; the pose
metric against a hand-made case; bad inputs as one line each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pycolmap")

from recon.data.process import ProcessConfig, process  # noqa: E402
from recon.data.process.frames import VideoInfo, extract, sharpness  # noqa: E402
from recon.data.readers import load_scene  # noqa: E402
from recon.eval.poses import pose_errors  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def quiet():
    from rich.console import Console

    return Console(stderr=True, quiet=True)


@pytest.fixture(scope="module")
def capture():
    from recon.demo import capture as cap

    return cap.render(n_views=24, resolution=192)


def write_pngs(folder: Path, images) -> Path:
    import imageio.v3 as iio

    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        iio.imwrite(folder / f"view_{i:03d}.png", img)
    return folder


def write_video(path: Path, frames, fps: float = 10.0) -> Path:
    import imageio_ffmpeg

    h, w = frames[0].shape[:2]
    writer = imageio_ffmpeg.write_frames(str(path), (w, h), fps=fps, quality=9, macro_block_size=16)
    writer.send(None)
    for f in frames:
        writer.send(np.ascontiguousarray(f))
    writer.close()
    return path


def errors_against_truth(out: Path, true_c2w: np.ndarray, index_of) -> dict:
    est = load_scene(out, test_every=0)
    idx = [index_of(Path(p).name) for p in est.images.paths]
    return pose_errors(true_c2w[idx], est.cameras.camtoworlds.double().numpy())


# ---------------------------------------------------------------------------------------------------- poses
def test_pose_errors_oracle():
    """A known similarity is undone exactly; a known 2-degree turn of one camera is reported as 2 degrees."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(0)
    ref = np.tile(np.eye(4), (12, 1, 1))
    ref[:, :3, :3] = Rotation.random(12, random_state=1).as_matrix()
    ref[:, :3, 3] = rng.normal(size=(12, 3)) * 3.0
    s, r, t = 0.37, Rotation.from_euler("xyz", [20, -50, 110], degrees=True).as_matrix(), np.array([1.0, -2.0, 5.0])
    est = ref.copy()
    est[:, :3, 3] = (s * (r @ ref[:, :3, 3].T)).T + t  # the estimate lives in another frame ...
    est[:, :3, :3] = r @ ref[:, :3, :3]
    est[5, :3, :3] = est[5, :3, :3] @ Rotation.from_euler("y", 2.0, degrees=True).as_matrix()  # ... and one camera is turned
    e = pose_errors(ref, est)
    assert e["scale"] == pytest.approx(1 / s)
    assert np.allclose(e["center"], 0.0, atol=1e-9)
    assert e["rotation_deg"][5] == pytest.approx(2.0, abs=1e-6)
    assert np.allclose(np.delete(e["rotation_deg"], 5), 0.0, atol=1e-5)


# ---------------------------------------------------------------------------------------------------- photos
def test_photos_are_posed_like_the_true_cameras(capture, tmp_path):
    photos = write_pngs(tmp_path / "photos", capture["images"])
    out = tmp_path / "dataset"
    report = process(photos, out, ProcessConfig(), quiet())
    assert report["registered_images"] == 24 and report["unregistered"] == []
    assert report["mean_reprojection_error_px"] < 1.0 and report["points3d"] > 300
    e = errors_against_truth(out, capture["camtoworlds"], lambda n: int(n[5:8]))
    assert e["rotation_deg_median"] < 0.5 and e["center_rel_median"] < 0.01, (e["rotation_deg_median"], e["center_rel_median"])
    # The layout recon's COLMAP reader expects, the report beside it, no work files, no hidden partial folder.
    assert json.loads((out / "process_report.json").read_text())["registered_images"] == 24
    assert sorted(p.name for p in out.iterdir()) == ["images", "images_2", "images_4", "process_report.json", "sparse"]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())
    half = load_scene(out, downscale=2)
    assert int(half.cameras.widths[0]) == 96 and len(half.cameras) == 24


def test_undistort_writes_pinhole_data(capture, tmp_path):
    photos = write_pngs(tmp_path / "photos", capture["images"][:12])
    out = tmp_path / "dataset"
    report = process(photos, out, ProcessConfig(undistort=True, downscale=(2,)), quiet())
    assert [c["model"] for c in report["cameras"]] == ["PINHOLE"] and "undistort" in report["seconds"]
    assert report["images"] == 12  # the input count, not the registered one
    scene = load_scene(out, test_every=0)
    assert scene.cameras.is_pinhole and len(scene.cameras) == report["registered_images"] >= 10
    w, h = report["cameras"][0]["width"], report["cameras"][0]["height"]
    assert scene.image(0).shape[:2] == (h, w) and load_scene(out, downscale=2).image(0).shape[:2] == (round(h / 2), round(w / 2))


# ---------------------------------------------------------------------------------------------------- video
def test_sharpest_frame_of_each_stretch(tmp_path):
    """Frames 3k and 3k+2 are blurred copies: extraction keeps 3k+1, one per stretch of three."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    base = (gaussian_filter(rng.random((96, 128, 3)), (1.5, 1.5, 0)) * 255).astype(np.uint8)
    frames = []
    for k in range(6):
        sharp = np.roll(base, 4 * k, axis=1)
        blurred = gaussian_filter(sharp.astype(np.float32), (2.5, 2.5, 0)).astype(np.uint8)
        frames += [blurred, sharp, blurred]
    assert sharpness(frames[1]) > 3 * sharpness(frames[0])
    video = write_video(tmp_path / "clip.mp4", frames)
    kept = extract(VideoInfo(video, 18, 10.0, (128, 96)), 6, tmp_path / "frames", "clip")
    assert [k["frame"] for k in kept] == [1, 4, 7, 10, 13, 16]
    assert all(k["sharpness"] > 2 * k["stretch_median_sharpness"] for k in kept)


def test_video_end_to_end(tmp_path):
    """A 48-frame walk half around the table as an MP4 -> 16 frames (11 degrees apart) -> posed (sequential
    matching)."""
    from recon.demo import capture as cap

    clip = cap.render(n_views=48, resolution=192, turns=0.5)
    video = write_video(tmp_path / "walk.mp4", clip["images"])
    out = tmp_path / "dataset"
    report = process(video, out, ProcessConfig(max_frames=16, downscale=()), quiet())
    assert report["kind"] == "videos" and report["matcher"] == "sequential" and report["images"] == 16
    assert report["registered_images"] >= 15, report["unregistered"]
    frames = [k["frame"] for k in report["video_frames"][0]["kept"]]
    assert len(frames) == 16 and all(3 * i <= f < 3 * (i + 1) for i, f in enumerate(frames))  # one per stretch of 3
    e = errors_against_truth(out, clip["camtoworlds"], lambda n: int(n.rsplit("_", 1)[1][:6]))
    assert e["rotation_deg_median"] < 1.0 and e["center_rel_median"] < 0.02


def test_two_videos_get_a_folder_and_a_camera_each(tmp_path):
    """Two clips of one walk: frames in images/<clip>/, one camera per clip, both posed in one model."""
    from recon.demo import capture as cap

    clip = cap.render(n_views=48, resolution=192, turns=0.5)
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", clip["images"][:24])
    write_video(videos / "b.mp4", clip["images"][24:])
    out = tmp_path / "dataset"
    report = process(videos, out, ProcessConfig(max_frames=16, downscale=(2,)), quiet())
    assert report["images"] == 16 and len(report["cameras"]) == 2
    assert report["registered_images"] >= 15, report["unregistered"]
    assert sorted(p.name for p in (out / "images").iterdir()) == ["a", "b"] and (out / "images_2" / "b").is_dir()
    scene = load_scene(out, test_every=0)
    assert len(scene.cameras) == report["registered_images"]
    assert all("/images/a/" in str(p) or "/images/b/" in str(p) for p in scene.images.paths)


# ---------------------------------------------------------------------------------------------------- bad input
def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recon.cli", "data", "process", *map(str, args)], capture_output=True, text=True, cwd=REPO)


def one_line_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    err = [ln for ln in lines if ln.startswith("recon: error:")]
    assert len(err) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    for n in needles:
        assert n in err[0], err[0]
    return err[0]


def test_bad_inputs_are_one_line(tmp_path, capture):
    import imageio.v3 as iio

    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(run_cli(empty, tmp_path / "o1"), str(empty), "no images")
    single = write_pngs(tmp_path / "single", capture["images"][:1])
    one_line_error(run_cli(single, tmp_path / "o2"), "1 image")
    broken = write_pngs(tmp_path / "broken", capture["images"][:3])
    (broken / "view_001.png").write_bytes(b"not a png at all")
    one_line_error(run_cli(broken, tmp_path / "o3"), "view_001.png", "cannot be read")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "notes.txt").write_text("hello")
    one_line_error(run_cli(docs, tmp_path / "o4"), "no images", "notes.txt")
    bad_video = tmp_path / "clip.mp4"
    bad_video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    one_line_error(run_cli(bad_video, tmp_path / "o5"), "clip.mp4", "cannot be decoded")
    taken = tmp_path / "taken"
    taken.mkdir()
    one_line_error(run_cli(broken.parent / "single", taken), "exists already")
    # Photos SfM cannot pose (flat grey): a hint, the input named, and neither OUT nor a partial folder left.
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(4):
        iio.imwrite(flat / f"f{i}.png", np.full((64, 64, 3), 120, np.uint8))
    one_line_error(run_cli(flat, tmp_path / "o6"), str(flat), "posed no images", "features")
    assert not (tmp_path / "o6").exists() and not (tmp_path / ".o6.partial").exists()
    for k in range(1, 6):
        assert not (tmp_path / f"o{k}").exists()
