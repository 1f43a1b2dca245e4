"""Dataset readers on tiny data sets written by the tests, one synthetic scene in every format, and the shared sets."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from recon.cameras import Cameras, orbit_poses
from recon.data import detect_format, load_scene
from recon.data.readers import writers
from recon.data.readers.colmap_model import ColmapCamera, ColmapImage, write_model
from recon.data.readers.neus import decompose_projection
from recon.rotations import rotmat_to_quat

W, H, F = 40, 30, 36.0


def synthetic(n: int = 6, seed: int = 0, w: int = W, h: int = H):
    """n cameras on an orbit looking at the origin, centred pinhole; random images; a few known 3D points."""
    rng = np.random.default_rng(seed)
    c2w = orbit_poses(n, radius=4.0, elevation_deg=25.0, phase=0.3)
    cams = Cameras.create(c2w, F, F, w / 2, h / 2, w, h)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]
    points = rng.uniform(-0.6, 0.6, (12, 3))
    return cams, images, points


def project(cams: Cameras, points: np.ndarray) -> np.ndarray:
    return cams.project(torch.as_tensor(points, dtype=torch.float32))[0].double().numpy()


# ------------------------------------------------------------------------------------------------ cross-format check
def _write(fmt: str, root: Path, cams: Cameras, images, points) -> None:
    if fmt == "nerfstudio":
        writers.write_nerfstudio(root, cams, images)
    elif fmt == "blender":
        writers.write_blender(root, cams, images, {"train": np.arange(len(cams))})
    elif fmt in ("colmap-bin", "colmap-txt"):
        writers.write_colmap(root, cams, images, ext=".bin" if fmt.endswith("bin") else ".txt", points=points)
    elif fmt == "llff":
        writers.write_llff(root, cams, images, np.tile([1.0, 8.0], (len(cams), 1)))
    elif fmt == "neus":
        writers.write_neus(root, cams, images, masks=[np.full((H, W, 3), 255, np.uint8)] * len(cams))


@pytest.mark.parametrize("fmt", ["nerfstudio", "blender", "colmap-bin", "colmap-txt", "llff", "neus"])
def test_same_scene_in_every_format_projects_identically(tmp_path, fmt):
    cams, images, points = synthetic()
    _write(fmt, tmp_path, cams, images, points)
    expected = fmt.split("-")[0]
    assert detect_format(tmp_path) == expected
    scene = load_scene(tmp_path)
    assert scene.format == expected and len(scene) == len(cams)
    # Same cameras, same order (frames are sorted by name where the format has no order of its own).
    np.testing.assert_allclose(project(scene.cameras, points), project(cams, points), atol=1e-3)
    np.testing.assert_allclose(scene.cameras.widths, W)
    np.testing.assert_allclose(scene.cameras.heights, H)
    # The pixels are those written, in the same order.
    np.testing.assert_allclose(scene.image(3)[..., :3], images[3] / 255.0, atol=1e-6)


# ------------------------------------------------------------------------------------------------ nerfstudio
def test_nerfstudio_distortion_fisheye_points_and_missing_frames(tmp_path):
    cams, images, points = synthetic(4)
    models = ["opencv", "opencv", "fisheye", "pinhole"]
    dist = np.array([[0.05, -0.02, 0.0, 0.0, 0.001, -0.002]] * 2 + [[0.03, 0.01, -0.004, 0.001, 0, 0], [0] * 6])
    cams = Cameras.create(cams.camtoworlds, [36, 37, 30, 36], 35, [20.5, 19.5, 20, 20], 15.2, W, H, models, dist)
    colors = np.random.default_rng(1).uniform(0, 1, (len(points), 3))
    path = writers.write_nerfstudio(tmp_path, cams, images, points=points, colors=colors)
    meta = json.loads(path.read_text())
    meta["frames"].append(dict(meta["frames"][0], file_path="images/gone.png"))  # an image that does not exist
    meta["aabb_scale"] = 2
    path.write_text(json.dumps(meta))

    scene = load_scene(path)  # a single file works too
    assert len(scene) == 4 and len(scene.warnings) == 1 and "1 of 5 frames" in scene.warnings[0]
    assert scene.cameras.model_names == ["opencv", "opencv", "fisheye", "pinhole"]
    np.testing.assert_allclose(project(scene.cameras, points), project(cams, points), atol=1e-3)
    np.testing.assert_allclose(scene.points, points, atol=1e-6)
    np.testing.assert_allclose(scene.point_colors, np.round(colors * 255) / 255, atol=1e-6)
    np.testing.assert_allclose(scene.aabb, [[-1 / 0.33] * 3, [1 / 0.33] * 3], rtol=1e-6)


def test_nerfstudio_global_intrinsics_splits_masks_time_and_downscale(tmp_path):
    cams, images, _ = synthetic(5)
    c2w = cams.camtoworlds.double().numpy()
    frames = []
    for i, img in enumerate(images):
        iio.imwrite(tmp_path / f"f{i}.png", img)
        iio.imwrite(tmp_path / f"m{i}.png", np.full((H, W), 255, np.uint8))
        frames.append({"file_path": f"f{i}.png", "mask_path": f"m{i}.png", "time": i / 4,
                       "transform_matrix": writers.opencv_to_opengl(c2w[i]).tolist()})
    meta = {"camera_angle_x": 2 * np.arctan(W / 2 / F), "frames": frames,
            "train_filenames": ["f0.png", "f1.png", "./f2.png"], "test_filenames": ["f3.png", "f4.png"]}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    scene = load_scene(tmp_path, downscale=2)
    assert list(scene.splits["train"]) == [0, 1, 2] and list(scene.splits["test"]) == [3, 4]
    np.testing.assert_allclose(scene.cameras.times, [0, 0.25, 0.5, 0.75, 1.0])
    assert int(scene.cameras.widths[0]) == W // 2 and scene.image(0).shape == (H // 2, W // 2, 3)
    assert scene.mask(0).shape == (H // 2, W // 2, 1)
    np.testing.assert_allclose(float(scene.cameras.fx[0]), F / 2, rtol=1e-5)


def test_nerfstudio_undo_applied_transform(tmp_path):
    cams, images, points = synthetic(3)
    applied = np.array([[0.0, 1, 0, 0.5], [1, 0, 0, 0], [0, 0, -1, 2]])  # nerfstudio's usual axis swap, plus a shift
    A = np.vstack([applied, [0, 0, 0, 1]])
    moved = cams.with_poses(torch.from_numpy(A @ cams.camtoworlds.double().numpy()).float())
    path = writers.write_nerfstudio(tmp_path, moved, images, points=points @ A[:3, :3].T + A[:3, 3])
    meta = json.loads(path.read_text())
    meta["applied_transform"] = applied.tolist()
    path.write_text(json.dumps(meta))
    back = load_scene(tmp_path, undo_applied_transform=True)
    np.testing.assert_allclose(project(back.cameras, points), project(cams, points), atol=1e-3)
    np.testing.assert_allclose(back.points, points, atol=1e-5)


# ------------------------------------------------------------------------------------------------ Blender / D-NeRF
def test_blender_splits_background_and_dnerf_times(tmp_path):
    cams, images, points = synthetic(6)
    rgba = [np.concatenate([im, np.full((H, W, 1), 0, np.uint8)], -1) for im in images]  # fully transparent
    splits = {"train": np.arange(4), "val": np.array([4]), "test": np.array([5])}
    writers.write_blender(tmp_path, cams, rgba, splits)
    scene = load_scene(tmp_path, background="black")
    assert scene.format == "blender" and {k: len(v) for k, v in scene.splits.items()} == {"train": 4, "val": 1, "test": 1}
    assert scene.image(0).shape == (H, W, 4) and scene.image_rgb(0).max() == 0.0
    assert load_scene(tmp_path).image_rgb(0).min() == 1.0  # white by default

    dyn = tmp_path / "dyn"
    writers.write_blender(dyn, cams, images, {"train": np.arange(5), "val": np.array([5])}, times=np.linspace(0, 1, 6))
    scene = load_scene(dyn / "transforms_val.json")
    assert scene.format == "dnerf" and scene.is_dynamic
    np.testing.assert_allclose(scene.cameras.times, np.linspace(0, 1, 6), atol=1e-6)
    assert list(scene.splits["test"]) == [5]  # val doubles as test
    np.testing.assert_allclose(project(scene.cameras, points), project(cams, points), atol=1e-3)


# ------------------------------------------------------------------------------------------------ COLMAP
def test_colmap_camera_models(tmp_path):
    cams, images, points = synthetic(5)
    w2c = writers.rigid_inverse(cams.camtoworlds.double().numpy())
    models = [
        ColmapCamera(1, "SIMPLE_PINHOLE", W, H, np.array([F, 20.0, 15.0])),
        ColmapCamera(2, "SIMPLE_RADIAL", W, H, np.array([F, 20.0, 15.0, 0.05])),
        ColmapCamera(3, "RADIAL", W, H, np.array([F, 20.0, 15.0, 0.05, -0.01])),
        ColmapCamera(4, "OPENCV_FISHEYE", W, H, np.array([F, F + 1, 20.0, 15.0, 0.02, 0.01, 0.0, 0.001])),
        ColmapCamera(5, "RADIAL_FISHEYE", W, H, np.array([F, 20.0, 15.0, 0.02, 0.01])),
    ]
    imgs = [ColmapImage(10 + i, rotmat_to_quat(w2c[i, :3, :3]), w2c[i, :3, 3], i + 1, f"{i:02d}.png") for i in range(5)]
    for ext in (".txt", ".bin"):
        root = tmp_path / ext[1:]
        writers._write_images(root / "images", images, [im.name for im in imgs])
        write_model(root / "colmap" / "sparse" / "0", models, imgs, points, np.zeros((len(points), 3), np.uint8), ext)
        scene = load_scene(root)
        assert scene.cameras.model_names == ["pinhole", "opencv", "opencv", "fisheye", "fisheye"]
        np.testing.assert_allclose(scene.cameras.distortion[2].numpy(), [0.05, -0.01, 0, 0, 0, 0], atol=1e-7)
        np.testing.assert_allclose(scene.cameras.distortion[3].numpy(), [0.02, 0.01, 0, 0.001, 0, 0], atol=1e-7)
        np.testing.assert_allclose(scene.cameras.fy[3].item(), F + 1)
        np.testing.assert_allclose(scene.points, points, atol=1e-6)
        # Undistorted, the first camera sees the points where the pinhole reference does.
        np.testing.assert_allclose(project(scene.cameras[0], points), project(cams[0], points), atol=1e-3)
    # A model folder given directly finds the images above it.
    assert load_scene(tmp_path / "bin" / "colmap" / "sparse" / "0").root == tmp_path / "bin"


def test_colmap_downscale_folder_and_sorting(tmp_path):
    cams, images, _ = synthetic(4, w=41, h=31)
    names = ["d.png", "b.png", "c.png", "a.png"]  # registered in this order; read sorted by name
    writers.write_colmap(tmp_path, cams, images, names=names, subdir="sparse")
    scene = load_scene(tmp_path, downscale=2)  # no images_2: downscale on load, floor size
    assert [Path(p).name for p in scene.images.paths] == sorted(names)
    assert scene.image(0).shape == (15, 20, 3) and int(scene.cameras.widths[0]) == 20
    # images_2 with sizes rounded up (as ImageMagick does): the camera follows the files.
    writers._write_images(tmp_path / "images_2", [im[::2, ::2] for im in images], names)
    scene = load_scene(tmp_path, downscale=2)
    assert scene.image(0).shape == (16, 21, 3) and int(scene.cameras.widths[0]) == 21
    np.testing.assert_allclose(float(scene.cameras.fx[0]), F * 21 / 41, rtol=1e-6)


@pytest.mark.parametrize("fmt", ["colmap-bin", "llff"])
def test_masks_beside_colmap_and_llff(tmp_path, fmt):
    """A masks/ folder beside images/ (NeRD's real scenes, ``recon data process --masks``) gives the scene its
    foreground masks, matched by file stem whatever the extension, downscaled with the images; a set that misses
    some images is dropped with a warning; a mask of the wrong size is one error naming it."""
    cams, images, points = synthetic(4, w=40, h=30)
    _write(fmt, tmp_path, cams, images, points)
    stems = [Path(p).stem for p in sorted((tmp_path / "images").iterdir())]
    rng = np.random.default_rng(3)
    masks = [(rng.random((H, W)) > 0.5).astype(np.uint8) * 255 for _ in stems]
    (tmp_path / "masks").mkdir()
    for stem, m in zip(stems, masks):
        iio.imwrite(tmp_path / "masks" / f"{stem}.png", m)
    scene = load_scene(tmp_path)
    assert scene.masks is not None and len(scene.masks) == 4
    np.testing.assert_allclose(scene.mask(2)[..., 0], masks[2] / 255.0, atol=1e-6)
    half = load_scene(tmp_path, downscale=2)
    assert tuple(half.mask(0).shape[:2]) == tuple(half.image(0).shape[:2]) == (15, 20)
    (tmp_path / "masks" / f"{stems[1]}.png").unlink()
    partial = load_scene(tmp_path)
    assert partial.masks is None and any("no mask for 1 of 4" in w for w in partial.warnings)
    iio.imwrite(tmp_path / "masks" / f"{stems[1]}.png", np.zeros((10, 10), np.uint8))
    iio.imwrite(tmp_path / "masks" / f"{stems[0]}.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(Exception, match="mask is 10x10 but its image"):
        load_scene(tmp_path)


def test_monosdf_layout_with_priors(tmp_path):
    """MonoSDF's folder (cameras.npz + 000000_rgb.png + _depth.npy / _normal.npy / _mask.png): detected, cameras
    as the projections say, priors exposed per view (normals decoded from [0, 1] to unit camera-frame vectors) and
    carried through subsets and downscaling; a prior some views lack is dropped with a warning."""
    cams, images, points = synthetic(5, w=40, h=30)
    rng = np.random.default_rng(4)
    w2c = writers.rigid_inverse(cams.camtoworlds.double().numpy())
    K = np.array([[F, 0, W / 2 - 0.5], [0, F, H / 2 - 0.5], [0, 0, 1.0]])  # IDR: pixel centres at integers
    npz = {}
    depths, normals = [], []
    for i in range(5):
        P = np.eye(4)
        P[:3, :4] = K @ w2c[i, :3, :4]
        npz[f"world_mat_{i}"], npz[f"scale_mat_{i}"] = P, np.diag([2.0, 2.0, 2.0, 1.0])
        iio.imwrite(tmp_path / f"{i:06d}_rgb.png", images[i])
        depths.append(rng.random((H, W)).astype(np.float32))
        n = rng.normal(size=(H, W, 3))
        normals.append(n / np.linalg.norm(n, axis=-1, keepdims=True))
        np.save(tmp_path / f"{i:06d}_depth.npy", depths[-1])
        np.save(tmp_path / f"{i:06d}_normal.npy", np.moveaxis((normals[-1] + 1) / 2, -1, 0).astype(np.float32))
        iio.imwrite(tmp_path / f"{i:06d}_mask.png", np.full((H, W), 255, np.uint8))
    np.savez(tmp_path / "cameras.npz", **npz)
    assert detect_format(tmp_path) == "monosdf"
    scene = load_scene(tmp_path)
    np.testing.assert_allclose(project(scene.cameras, points), project(cams, points), atol=1e-3)
    assert sorted(scene.priors) == ["depth", "normal"] and scene.masks is not None
    np.testing.assert_allclose(scene.priors["depth"].load(3)[..., 0], depths[3], atol=1e-6)
    np.testing.assert_allclose(scene.priors["normal"].load(2), normals[2], atol=1e-5)
    sub = scene.subset(np.array([4, 1]))
    np.testing.assert_allclose(sub.priors["depth"].load(1)[..., 0], depths[1], atol=1e-6)
    half = load_scene(tmp_path, downscale=2)
    assert half.priors["normal"].load(0).shape == (15, 20, 3)
    assert np.allclose(np.linalg.norm(half.priors["normal"].load(0), axis=-1), 1.0, atol=1e-5)
    (tmp_path / "000002_normal.npy").unlink()
    partial = load_scene(tmp_path)
    assert sorted(partial.priors) == ["depth"] and any("normal priors for 4 of 5" in w for w in partial.warnings)


# ------------------------------------------------------------------------------------------------ LLFF, NeuS
def test_llff_bounds_split_and_resized_images(tmp_path):
    cams, images, points = synthetic(9)
    near_far = np.stack([np.linspace(1, 2, 9), np.linspace(6, 8, 9)], -1)
    # poses_bounds for 2x larger originals, images on disk at our size: intrinsics follow the files.
    big = Cameras.create(cams.camtoworlds, 2 * F, 2 * F, W, H, 2 * W, 2 * H)
    writers._write_images(tmp_path / "images", images, writers._default_names(9))
    np.save(tmp_path / "poses_bounds.npy", writers.poses_bounds_array(big, near_far))
    scene = load_scene(tmp_path)
    assert scene.format == "llff" and list(scene.splits["test"]) == [0, 8]
    np.testing.assert_allclose(scene.near_far, near_far, rtol=1e-6)
    np.testing.assert_allclose(project(scene.cameras, points), project(cams, points), atol=1e-3)


def test_neus_decomposition_and_aabb(tmp_path):
    rng = np.random.default_rng(2)
    K = np.array([[700.0, 0, 210], [0, 690, 150], [0, 0, 1]])
    cams, images, points = synthetic(3)
    w2c = writers.rigid_inverse(orbit_poses(3, radius=4.0, elevation_deg=25.0, phase=0.3))  # float64 poses
    for i in range(3):
        P = 3.7 * K @ w2c[i, :3]  # any positive scale
        K2, w2c2 = decompose_projection(P)
        np.testing.assert_allclose(K2, K, atol=1e-9)
        np.testing.assert_allclose(w2c2, w2c[i], atol=1e-9)
        K3, w2c3 = decompose_projection(-P)  # and any sign
        np.testing.assert_allclose(w2c3, w2c[i], atol=1e-9)
    S = np.diag([2.0, 2.0, 2.0, 1.0])
    S[:3, 3] = [1, 2, 3]
    masks = [rng.integers(0, 2, (H, W, 3), dtype=np.uint8) * 255 for _ in range(3)]
    writers.write_neus(tmp_path, cams, images, masks, scale_mat=S)
    scene = load_scene(tmp_path)
    np.testing.assert_allclose(scene.aabb, [[-1, 0, 1], [3, 4, 5]])
    np.testing.assert_allclose(scene.mask(1)[..., 0], masks[1][..., 0] / 255.0)


# ------------------------------------------------------------------------------------------------ N3DV video
def _videos(n_cams=3, n_frames=12, h=32, w=48):
    frames = np.zeros((n_cams, n_frames, h, w, 3), np.uint8)
    for c in range(n_cams):
        for t in range(n_frames):
            frames[c, t] = 20 * c + 15 * t  # every (camera, frame) has its own grey level
            frames[c, t, :, : w // 2, 1] = 255 - 10 * t
    return frames


def test_n3dv_lazy_video_frames(tmp_path):
    frames = _videos()
    n_cams, n_frames, h, w = frames.shape[:4]
    c2w = orbit_poses(n_cams, 4.0)
    cams = Cameras.create(c2w, 40.0, 40.0, w / 2, h / 2, w, h)
    writers.write_n3dv(tmp_path, cams, list(frames), np.tile([0.5, 9.0], (n_cams, 1)))
    assert detect_format(tmp_path) == "n3dv"
    scene = load_scene(tmp_path)
    assert len(scene) == n_cams * n_frames and scene.is_dynamic
    assert list(scene.splits["test"]) == list(range(n_frames))  # cam00
    np.testing.assert_allclose(scene.cameras.times[:n_frames], np.arange(n_frames) / (n_frames - 1), atol=1e-6)
    assert list(scene.camera_ids[::n_frames]) == [0, 1, 2] and list(scene.frame_ids[:3]) == [0, 1, 2]
    # Random access (forward, backward, across videos) returns the right frames.
    for i in [5, 2, 30, 13, 35, 0, 11]:
        c, t = divmod(i, n_frames)
        np.testing.assert_allclose(scene.image(i), frames[c, t] / 255.0, atol=3 / 255)
    np.testing.assert_allclose(project(scene.cameras[::n_frames], np.zeros((1, 3))), project(cams, np.zeros((1, 3))), atol=1e-3)

    sub = load_scene(tmp_path, max_frames=4, downscale=2)
    assert len(sub) == n_cams * 4 and list(sub.frame_ids[:4]) == [0, 4, 7, 11]
    np.testing.assert_allclose(sub.cameras.times[:4], [0, 4 / 11, 7 / 11, 1], atol=1e-6)
    assert sub.image(5).shape == (h // 2, w // 2, 3)
    np.testing.assert_allclose(sub.image(5).mean(), frames[1, 4].mean() / 255.0, atol=3 / 255)


# ------------------------------------------------------------------------------------------------ shared data sets
def test_shared_fox(shared_data):
    scene = load_scene(shared_data / "fox")
    assert scene.format == "nerfstudio" and len(scene) == 50
    assert len(scene.warnings) == 1 and scene.warnings[0].startswith("17 of 67 frames")
    assert (int(scene.cameras.widths[0]), int(scene.cameras.heights[0])) == (270, 480)
    assert scene.cameras.model_names[0] == "opencv" and scene.image(0).shape == (480, 270, 3)
    assert len(scene.splits["test"]) == 7 and scene.aabb is not None


def test_shared_lego(shared_data):
    scene = load_scene(shared_data / "nerf_synthetic_lego")
    assert scene.format == "blender" and len(scene) == 87
    assert len(scene.splits["test"]) == 11 and len(scene.splits["train"]) == 76
    assert not set(scene.splits["test"]) & set(scene.splits["train"])
    assert scene.image(0).shape == (200, 200, 4)
    np.testing.assert_allclose(float(scene.cameras.fx[0]), 100 / np.tan(0.6911112070083618 / 2), rtol=1e-6)


def test_shared_dnerf_lego(shared_data):
    scene = load_scene(shared_data / "dnerf_lego")
    assert scene.format == "dnerf" and len(scene.splits["train"]) == 34 and len(scene.splits["val"]) == 11
    t = scene.cameras.times.numpy()
    assert 0.16 <= t[scene.splits["train"]].min() < 0.17 and 0.94 < t[scene.splits["train"]].max() <= 0.95
    assert t[scene.splits["val"]].min() == 0.0 and t[scene.splits["val"]].max() == 1.0


def test_shared_dtu(shared_data):
    scene = load_scene(shared_data / "dtu_scan65")
    assert scene.format == "neus" and len(scene) == 49 and scene.masks is not None
    c = scene.cameras
    assert abs(float(c.fx[0]) - 723.1) < 0.1 and abs(float(c.fy[0]) - 720.8) < 0.1
    # NeuS' integer pixel centres are shifted to ours (+0.5): the data README's cx 205.8, cy 154.8 become +0.5.
    assert abs(float(c.cx[0]) - 206.3) < 0.1 and abs(float(c.cy[0]) - 155.3) < 0.1
    assert scene.mask(0).shape == (300, 400, 1) and set(np.unique(scene.mask(0))) <= {0.0, 1.0}
    # The object (centre of the region of interest) is in front of every camera.
    center = torch.as_tensor(scene.aabb.mean(0, keepdims=True))
    uv, z = c.project(center)
    assert (z > 0).all() and (uv[..., 0] > 0).all() and (uv[..., 0] < 400).all()


def test_n3dv_extracted_frames_layout_and_frame_selection(tmp_path):
    from recon.data.video import select_frames

    assert list(select_frames(10, 30.0, stride=3)) == [0, 3, 6, 9]
    assert list(select_frames(10, 30.0, video_fps=10.0)) == [0, 3, 6, 9]
    assert list(select_frames(10, 30.0, max_frames=3)) == [0, 4, 9]
    frames = _videos(n_cams=2, n_frames=4, h=8, w=12)
    cams = Cameras.create(orbit_poses(2, 4.0), 10.0, 10.0, 6, 4, 12, 8)
    np.save(tmp_path / "poses_bounds.npy", writers.poses_bounds_array(cams, np.tile([0.5, 9.0], (2, 1))))
    for c in range(2):
        writers._write_images(tmp_path / f"cam{c:02d}" / "images", frames[c], [f"{t:04d}.png" for t in range(4)])
    scene = load_scene(tmp_path, frame_stride=2)
    assert scene.format == "n3dv" and len(scene) == 4 and list(scene.frame_ids) == [0, 2, 0, 2]
    np.testing.assert_allclose(scene.cameras.times, [0, 2 / 3, 0, 2 / 3], atol=1e-6)
    np.testing.assert_allclose(scene.image(3), frames[1, 2] / 255.0)


def test_video_decoder_survives_pickling(tmp_path):
    import pickle

    from recon.data.video import VideoFile, write_video

    frames = _videos(n_cams=1, n_frames=5, h=16, w=16)[0]
    write_video(tmp_path / "v.mp4", frames)
    video = VideoFile(tmp_path / "v.mp4")
    video.frame(2)
    clone = pickle.loads(pickle.dumps(video))
    np.testing.assert_allclose(clone.frame(4), frames[4], atol=3)


def test_rgba_downscale_does_not_bleed_transparent_colour(tmp_path):
    cams, images, _ = synthetic(2)
    rgba = []
    for im in images:
        a = np.zeros((H, W, 4), np.uint8)
        a[..., 0] = 255  # transparent pixels are red ...
        a[:, : W // 2] = [0, 0, 255, 255]  # ... the opaque half is blue
        a[:, W // 2] = [0, 0, 255, 255]  # column 20: its 2x2 block is half covered
        rgba.append(a)
    writers.write_blender(tmp_path, cams, rgba, {"train": np.arange(2)})
    scene = load_scene(tmp_path, downscale=2, test_every=0)
    img = scene.image(0)
    assert img.shape == (H // 2, W // 2, 4) and img[..., 0].max() == 0.0  # no red fringe
    np.testing.assert_allclose(img[0, W // 4, 3], 0.5)  # the half-covered block keeps half alpha
    np.testing.assert_allclose(img[0, W // 4, :3], [0, 0, 1])  # and pure blue
