"""Camera conventions: projection vs rays, distortion round trips, pose checks, normalisation."""

from pathlib import Path

import numpy as np
import pytest
import torch

from recon.cameras import Cameras, check_poses, look_at, opengl_to_opencv, orbit_poses, undistort_image
from recon.errors import ReconError


def _cams(model="pinhole", dist=None):
    return Cameras.create(orbit_poses(5, 3.0, 30.0), 90.0, 95.0, 40.3, 31.7, 80, 64, model=model, distortion=dist)


@pytest.mark.parametrize(
    "model,dist",
    [("pinhole", None), ("opencv", [0.12, -0.05, 0.01, 0.0, 0.002, -0.001]), ("fisheye", [0.05, -0.01, 0.002, -0.0005, 0, 0])],
)
def test_ray_then_project_returns_the_pixel(model, dist):
    cams = _cams(model, dist)
    for i in range(len(cams)):
        o, d = cams.rays(i)
        pts = o[::7, ::9] + d[::7, ::9] * 2.5
        px, z = cams[i].project(pts.reshape(-1, 3))
        v, u = torch.meshgrid(torch.arange(64)[::7] + 0.5, torch.arange(80)[::9] + 0.5, indexing="ij")
        expected = torch.stack([u, v], -1).reshape(-1, 2)
        assert torch.allclose(px[0], expected, atol=2e-3)
        assert (z > 0).all()


def test_look_at_points_the_optical_axis_at_the_target():
    c2w = look_at(np.array([2.0, 1.0, 1.5]), np.zeros(3))
    cams = Cameras.create(c2w[None], 50, 50, 32, 32, 64, 64)
    px, z = cams.project(torch.zeros(1, 3))
    assert torch.allclose(px[0, 0], torch.tensor([32.0, 32.0]), atol=1e-4)
    # World up (+z) appears towards the top of the image (smaller v).
    px_up, _ = cams.project(torch.tensor([[0.0, 0.0, 0.3]]))
    assert px_up[0, 0, 1] < 32


def test_opengl_conversion_is_an_involution_and_flips_forward_axis():
    c2w = torch.from_numpy(orbit_poses(3, 2.0)).float()
    gl = opengl_to_opencv(c2w)
    assert torch.allclose(opengl_to_opencv(gl), c2w)
    assert torch.allclose(gl[:, :3, 2], -c2w[:, :3, 2])


def test_orbit_poses_about_any_up_axis():
    """Poses on a tilted circle: at the given distance and elevation, looking at the target, image up = ``up``,
    the first one in the ``start`` direction, evenly spaced."""
    target, up, start = np.array([0.5, -1.0, 2.0]), np.array([0.0, 1.0, 1.0]) / np.sqrt(2), np.array([1.0, 0.3, 0.0])
    poses = orbit_poses(6, 2.5, 30.0, target=target, up=up, start=start, phase=0.0)
    rel = poses[:, :3, 3] - target
    np.testing.assert_allclose(np.linalg.norm(rel, axis=1), 2.5, atol=1e-12)
    np.testing.assert_allclose(rel @ up, 2.5 * np.sin(np.deg2rad(30.0)), atol=1e-12)
    np.testing.assert_allclose(np.einsum("ni,ni->n", poses[:, :3, 2], -rel / 2.5), 1.0, atol=1e-12)  # looks at it
    assert (poses[:, :3, 1] @ up < 0).all()  # OpenCV y (image down) points away from up
    flat = rel - np.outer(rel @ up, up)
    first = start - (start @ up) * up
    np.testing.assert_allclose(flat[0] / np.linalg.norm(flat[0]), first / np.linalg.norm(first), atol=1e-12)
    cosines = np.einsum("ni,ni->n", flat, np.roll(flat, -1, 0)) / np.linalg.norm(flat, axis=1) ** 2
    np.testing.assert_allclose(cosines, np.cos(2 * np.pi / 6), atol=1e-12)


def test_viewmats_invert_camtoworlds():
    cams = _cams()
    eye = cams.viewmats() @ cams.camtoworlds
    assert torch.allclose(eye, torch.eye(4).expand_as(eye), atol=1e-5)


def test_scaled_cameras_project_to_scaled_pixels():
    cams = _cams()
    half = cams.scaled(0.5)
    assert half.widths.tolist() == [40] * 5 and half.heights.tolist() == [32] * 5
    p = torch.tensor([[0.1, -0.2, 0.05]])
    a, _ = cams.project(p)
    b, _ = half.project(p)
    assert torch.allclose(a * 0.5, b, atol=1e-4)


def test_check_poses_rejects_nan_and_non_rigid(tmp_path):
    good = orbit_poses(3, 2.0)
    check_poses(good, tmp_path / "x.json")
    bad = good.copy()
    bad[1, 0, 0] = np.nan
    with pytest.raises(ReconError, match="NaN"):
        check_poses(bad, tmp_path / "x.json")
    bad = good.copy()
    bad[2, :3, :3] *= 2.0
    with pytest.raises(ReconError, match="pose 2 is not a rigid"):
        check_poses(bad, tmp_path / "x.json")


def test_unsupported_model_is_a_clear_error():
    with pytest.raises(ReconError, match="unsupported camera model 'equirectangular'"):
        Cameras.create(orbit_poses(1, 2.0), 1, 1, 1, 1, 2, 2, model="equirectangular")


def test_undistort_image_straightens_a_distorted_line():
    # Render a vertical world line through a distorted camera, undistort, and check the line is straight.
    cams = Cameras.create(look_at(np.array([0, -3.0, 0]), np.zeros(3))[None], 60, 60, 40, 40, 80, 80, model="opencv", distortion=[0.3, 0.1, 0, 0, 0, 0])
    zs = torch.linspace(-1.0, 1.0, 80)
    pts = torch.stack([torch.full_like(zs, -1.5), torch.zeros_like(zs), zs], -1)
    px, _ = cams.project(pts)
    img = torch.zeros(80, 80, 1)
    for u, v in px[0]:
        if 0 <= u < 80 and 0 <= v < 80:
            img[int(v), int(u)] = 1.0
    assert px[0, :, 0].max() - px[0, :, 0].min() > 1.0  # the distorted image of the line bends
    out, pinhole = undistort_image(img, cams, 0)
    assert pinhole.models[0] == 0
    ys, xs = torch.nonzero(out[..., 0] > 0.2, as_tuple=True)
    straight = pinhole.project(pts)[0][0, :, 0]
    assert straight.std() < 1e-3  # the pinhole projection of the line is a vertical line
    assert (xs.float() + 0.5 - straight.mean()).abs().max() < 2.0


def test_undistort_scene_gives_pinhole_cameras_and_straight_images():
    from recon.data.scene import ArrayImages, SceneData
    from recon.data.undistort import undistort_scene

    cams = Cameras.create(look_at(np.array([0, -3.0, 0]), np.zeros(3))[None], 60, 60, 40, 40, 80, 80, model="opencv", distortion=[0.3, 0.1, 0, 0, 0, 0])
    zs = torch.linspace(-1.0, 1.0, 80)
    pts = torch.stack([torch.full_like(zs, -1.5), torch.zeros_like(zs), zs], -1)
    px, _ = cams.project(pts)
    img = np.zeros((80, 80, 3), np.float32)
    for u, v in px[0]:
        img[int(v), int(u)] = 1.0
    scene = SceneData("t", "test", Path("."), cams, ArrayImages(img[None]), {"train": np.array([0])})
    und = undistort_scene(scene)
    assert und.cameras.is_pinhole and not scene.cameras.is_pinhole
    out = und.image(0)
    ys, xs = np.nonzero(out[..., 0] > 0.2)
    straight = und.cameras.project(pts)[0][0, :, 0]
    assert np.abs(xs + 0.5 - float(straight.mean())).max() < 2.0
