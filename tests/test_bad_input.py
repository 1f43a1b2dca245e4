"""Bad data: every case raises one ReconError, in one line, naming the file and the problem (issue #2 §6)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recon.cameras import Cameras, orbit_poses
from recon.data import load_scene
from recon.data.readers import writers
from recon.data.readers.colmap_model import ColmapCamera, ColmapImage, write_model
from recon.errors import ReconError

W, H = 16, 12


def scene_parts(n: int = 4):
    rng = np.random.default_rng(0)
    cams = Cameras.create(orbit_poses(n, 3.0), 15.0, 15.0, W / 2, H / 2, W, H)
    return cams, [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(n)]


def fails(path, match: str, file: Path | str | None = None, **kwargs) -> ReconError:
    """load_scene(path) raises one-line ReconError matching ``match``, about ``file`` (a path or a name)."""
    with pytest.raises(ReconError, match=match) as info:
        load_scene(path, **kwargs)
    err = info.value
    assert "\n" not in str(err)
    if file is not None:
        assert err.path is not None
        assert (err.path == Path(file)) if isinstance(file, Path) else (err.path.name == file), str(err)
    return err


def nerfstudio(tmp_path: Path, n: int = 4) -> Path:
    cams, images = scene_parts(n)
    return writers.write_nerfstudio(tmp_path, cams, images)


def edit_json(path: Path, fn) -> None:
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


# ------------------------------------------------------------------------------------------------ structure
def test_missing_folder(tmp_path):
    fails(tmp_path / "nope", "does not exist", tmp_path / "nope")


def test_unknown_layout_says_what_was_looked_for(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    err = fails(tmp_path, "cannot tell the data format", tmp_path)
    for wanted in ("transforms.json", "transforms_train.json", "sparse/0", "poses_bounds.npy", "cameras_sphere.npz", "--format"):
        assert wanted in str(err)


def test_unknown_format_name(tmp_path):
    nerfstudio(tmp_path)
    fails(tmp_path, "unknown data format 'pixie'.*known: nerfstudio", format="pixie")


def test_forced_format_that_does_not_match(tmp_path):
    nerfstudio(tmp_path)
    fails(tmp_path, "no COLMAP model", tmp_path, format="colmap")


def test_malformed_json_names_line_and_column(tmp_path):
    path = nerfstudio(tmp_path)
    text = path.read_text().splitlines()
    text[3] = text[3] + " oops"
    path.write_text("\n".join(text))
    fails(tmp_path, r"malformed JSON at line 4, column \d+", path)


def test_json_without_frames(tmp_path):
    (tmp_path / "transforms.json").write_text('{"fl_x": 10}')
    fails(tmp_path, "no 'frames' list", "transforms.json")


# ------------------------------------------------------------------------------------------------ images
def test_all_images_missing(tmp_path):
    path = nerfstudio(tmp_path)
    for p in (tmp_path / "images").iterdir():
        p.unlink()
    fails(tmp_path, "none of the 4 frames has an image file", path)


def test_blender_missing_image(tmp_path):
    cams, images = scene_parts()
    writers.write_blender(tmp_path, cams, images, {"train": np.arange(4)})
    (tmp_path / "train" / "r_2.png").unlink()
    fails(tmp_path, r"image './train/r_2' not found", "transforms_train.json")


def test_corrupt_image_caught_up_front_and_lazily(tmp_path):
    path = nerfstudio(tmp_path)
    bad = tmp_path / "images" / "0002.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    fails(tmp_path, "corrupt or unreadable image", bad)
    scene = load_scene(tmp_path, check_images=False)  # nothing read yet: the error comes on first use
    with pytest.raises(ReconError, match="cannot decode image"):
        scene.image(2)


def test_truncated_png_and_jpeg(tmp_path):
    import imageio.v3 as iio

    path = nerfstudio(tmp_path)
    png = tmp_path / "images" / "0001.png"
    png.write_bytes(png.read_bytes()[:-40])
    fails(tmp_path, "corrupt or unreadable image", png)

    cams, images = scene_parts(2)
    root = tmp_path / "jpg"
    writers.write_nerfstudio(root, cams, images, names=["a.jpg", "b.jpg"])
    data = (root / "images" / "b.jpg").read_bytes()
    (root / "images" / "b.jpg").write_bytes(data[:-10])  # header intact, end-of-image marker gone
    fails(root, "corrupt or truncated image", root / "images" / "b.jpg")
    assert iio.imread(root / "images" / "a.jpg").shape == (H, W, 3)


def test_wrong_size_image(tmp_path):
    import imageio.v3 as iio

    path = nerfstudio(tmp_path)
    bad = tmp_path / "images" / "0003.png"
    iio.imwrite(bad, np.zeros((H, W + 2, 3), np.uint8))
    fails(tmp_path, rf"image is {W + 2}x{H} but its camera says {W}x{H}", bad)
    scene = load_scene(tmp_path, check_images=False)
    with pytest.raises(ReconError, match="but its camera says"):
        scene.image(3)


def test_wrong_size_after_downscale_message(tmp_path):
    import imageio.v3 as iio

    nerfstudio(tmp_path)
    bad = tmp_path / "images" / "0000.png"
    iio.imwrite(bad, np.zeros((2 * H, 2 * W, 3), np.uint8))
    fails(tmp_path, "after downscale 2", bad, downscale=2)


# ------------------------------------------------------------------------------------------------ counts
def test_llff_count_mismatch(tmp_path):
    cams, images = scene_parts(5)
    writers.write_llff(tmp_path, cams, images, np.tile([1.0, 5.0], (5, 1)))
    (tmp_path / "images" / "0004.png").unlink()
    fails(tmp_path, "camera count mismatch: poses_bounds.npy has 5 poses but images/ has 4 images", "poses_bounds.npy")


def test_neus_count_mismatch(tmp_path):
    cams, images = scene_parts(3)
    writers.write_neus(tmp_path, cams, images)
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "image" / "000003.png", images[0])
    fails(tmp_path, "3 world_mat entries but 4 images", "cameras_sphere.npz")


def test_neus_mask_count_mismatch(tmp_path):
    cams, images = scene_parts(3)
    writers.write_neus(tmp_path, cams, images, masks=[np.zeros((H, W, 3), np.uint8)] * 2)
    fails(tmp_path, "2 masks in mask/ but 3 images", "mask")


def test_n3dv_count_mismatch(tmp_path):
    cams, _ = scene_parts(2)
    video = np.zeros((3, H, W, 3), np.uint8)
    writers.write_n3dv(tmp_path, cams, [video, video], np.tile([1.0, 5.0], (2, 1)))
    (tmp_path / "cam01.mp4").unlink()
    fails(tmp_path, "poses_bounds.npy has 2 poses but there are 1 cameras", "poses_bounds.npy")


def test_colmap_image_with_unknown_camera(tmp_path):
    cams, images = scene_parts(2)
    writers.write_colmap(tmp_path, cams, images, ext=".txt")
    lines = (tmp_path / "sparse/0/images.txt").read_text().splitlines()
    lines[1] = " ".join(lines[1].split()[:8] + ["7", lines[1].split()[9]])
    (tmp_path / "sparse/0/images.txt").write_text("\n".join(lines) + "\n")
    fails(tmp_path, "refers to camera 7, which is not in cameras.txt", "images.txt")


def test_colmap_truncated_binary(tmp_path):
    cams, images = scene_parts(2)
    writers.write_colmap(tmp_path, cams, images)
    f = tmp_path / "sparse/0/images.bin"
    f.write_bytes(f.read_bytes()[:-30])
    fails(tmp_path, "file is truncated", f)


# ------------------------------------------------------------------------------------------------ poses
def test_nan_pose(tmp_path):
    path = nerfstudio(tmp_path)
    edit_json(path, lambda m: m["frames"][1]["transform_matrix"][0].__setitem__(3, float("nan")))
    fails(tmp_path, "frame 'images/0001.png': pose contains NaN or inf", path)


def test_non_rigid_pose(tmp_path):
    path = nerfstudio(tmp_path)

    def scale(meta):
        m = np.array(meta["frames"][2]["transform_matrix"])
        m[:3, :3] *= 1.5
        meta["frames"][2]["transform_matrix"] = m.tolist()

    edit_json(path, scale)
    fails(tmp_path, "frame 'images/0002.png': pose is not a rigid transform", path)


def test_llff_inf_and_bad_shape(tmp_path):
    cams, images = scene_parts(3)
    writers.write_llff(tmp_path, cams, images, np.tile([1.0, 5.0], (3, 1)))
    arr = np.load(tmp_path / "poses_bounds.npy")
    arr[1, 3] = np.inf
    np.save(tmp_path / "poses_bounds.npy", arr)
    fails(tmp_path, "row 1 contains NaN or inf", "poses_bounds.npy")
    np.save(tmp_path / "poses_bounds.npy", arr[:, :15])
    fails(tmp_path, r"expected an \[N, 17\] array, got shape \[3, 15\]", "poses_bounds.npy")


def test_neus_singular_world_mat(tmp_path):
    cams, images = scene_parts(2)
    writers.write_neus(tmp_path, cams, images)
    data = dict(np.load(tmp_path / "cameras_sphere.npz"))
    data["world_mat_1"] = np.zeros((4, 4))
    np.savez(tmp_path / "cameras_sphere.npz", **data)
    fails(tmp_path, "world_mat_1 is singular", "cameras_sphere.npz")


# ------------------------------------------------------------------------------------------------ models, splits
def test_unsupported_camera_model_nerfstudio(tmp_path):
    path = nerfstudio(tmp_path)
    edit_json(path, lambda m: m["frames"][0].__setitem__("camera_model", "EQUIRECTANGULAR"))
    fails(tmp_path, "unsupported camera_model 'EQUIRECTANGULAR'", path)


def test_unsupported_camera_model_colmap(tmp_path):
    cams, images = scene_parts(2)
    writers.write_colmap(tmp_path, cams, images)
    write_model(
        tmp_path / "sparse/0",
        [ColmapCamera(1, "FOV", W, H, np.array([15.0, 8, 6, 0.1])), ColmapCamera(2, "PINHOLE", W, H, np.array([15.0, 15, 8, 6]))],
        [ColmapImage(1, np.array([1.0, 0, 0, 0]), np.zeros(3), 1, "0000.png"), ColmapImage(2, np.array([1.0, 0, 0, 0]), np.zeros(3), 2, "0001.png")],
        np.zeros((0, 3)), np.zeros((0, 3), np.uint8),
    )
    fails(tmp_path, "unsupported COLMAP camera model FOV for camera 1", "cameras.bin")


def test_opencv_with_k4_is_refused(tmp_path):
    path = nerfstudio(tmp_path)
    edit_json(path, lambda m: m["frames"][0].update(camera_model="OPENCV", k4=0.1))
    fails(tmp_path, "OPENCV has no k4", path)


def test_empty_split(tmp_path):
    cams, images = scene_parts(4)
    writers.write_blender(tmp_path, cams, images, {"train": np.arange(3), "test": np.array([3])})
    edit_json(tmp_path / "transforms_test.json", lambda m: m.__setitem__("frames", []))
    fails(tmp_path, "'frames' is empty", "transforms_test.json")

    path = nerfstudio(tmp_path / "ns")
    edit_json(path, lambda m: m.update(train_filenames=["images/0000.png"], test_filenames=["images/nope.png"]))
    fails(tmp_path / "ns", "split 'test' is empty", path)


def test_bad_options(tmp_path):
    nerfstudio(tmp_path)
    fails(tmp_path, "downscale must be a positive integer", downscale=0)
    fails(tmp_path, "unknown background 'plaid'", background="plaid")


def test_corrupt_video(tmp_path):
    cams, _ = scene_parts(2)
    video = np.zeros((3, H, W, 3), np.uint8)
    writers.write_n3dv(tmp_path, cams, [video, video], np.tile([1.0, 5.0], (2, 1)))
    (tmp_path / "cam01.mp4").write_bytes(b"not a video at all")
    fails(tmp_path, "cannot open video", "cam01.mp4")


def test_unknown_reader_option(tmp_path):
    nerfstudio(tmp_path)
    fails(tmp_path, "unknown option.*undo_applied_trasform for the nerfstudio reader", undo_applied_trasform=True)
