"""Camera paths (recon.camera_path): the spline through keyframes, nerfstudio's camera_path.json, bad files."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recon.camera_path import CameraPath, Keyframe, dataparser_transform, read_camera_path, write_camera_path
from recon.camera_path.spline import hermite
from recon.cameras import look_at
from recon.errors import ReconError
from recon.rotations import quat_to_rotmat, rotmat_to_quat

sys.path.insert(0, str(Path(__file__).parent))

FIXTURE = Path(__file__).parent / "data" / "nerfstudio_camera_path.json"


def wavy_path(loop=False, tension=0.0, constant_speed=False, dynamic=True) -> CameraPath:
    """Five keyframes around the origin at different heights, fields of view and times."""
    kfs = []
    for i, a in enumerate(np.linspace(0.0, 1.6 * np.pi, 5)):
        eye = np.array([3 * np.cos(a), 3 * np.sin(a), 0.5 + 0.4 * (-1) ** i])
        kfs.append(Keyframe(look_at(eye, np.zeros(3)), 40.0 + 5 * i, (0.1 + 0.2 * i) if dynamic else None))
    return CameraPath(kfs, seconds=2.0, fps=10.0, tension=tension, loop=loop, constant_speed=constant_speed)


def at_parameters(path: CameraPath, s: np.ndarray):
    """The path's cameras at spline parameters ``s`` (keyframe i at s = i)."""
    n = len(path.keyframes) if path.loop else len(path.keyframes) - 1
    return path.evaluate(np.asarray(s, dtype=np.float64) / n)


@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("tension", [0.0, 0.5])
def test_passes_exactly_through_keyframes(loop, tension):
    path = wavy_path(loop, tension)
    f = at_parameters(path, np.arange(len(path.keyframes)))
    for i, k in enumerate(path.keyframes):
        np.testing.assert_allclose(f.camtoworlds[i], k.camtoworld, atol=1e-9)
        assert f.fovs[i] == pytest.approx(k.fov, abs=1e-9) and f.times[i] == pytest.approx(k.time, abs=1e-9)
    # The rendered video starts on the first keyframe and (open paths) ends on the last.
    frames = path.frames()
    np.testing.assert_allclose(frames.camtoworlds[0], path.keyframes[0].camtoworld, atol=1e-9)
    if not loop:
        np.testing.assert_allclose(frames.camtoworlds[-1], path.keyframes[-1].camtoworld, atol=1e-9)
    assert len(frames) == 20


@pytest.mark.parametrize("loop", [False, True])
def test_c1_at_keyframes(loop):
    """One-sided finite differences agree at every interior keyframe (and at the seam of a loop) for position,
    rotation, field of view and time; a kink (e.g. linear interpolation) would not."""
    path = wavy_path(loop)
    h = 1e-5
    inner = range(0 if loop else 1, len(path.keyframes) if loop else len(path.keyframes) - 1)
    for i in inner:
        if loop and i == 0:  # around the seam: approach keyframe 0 from the end of the last segment
            before = at_parameters(path, np.array([len(path.keyframes) - h, len(path.keyframes)]))
            after = at_parameters(path, np.array([0.0, h]))
            pairs = [(before, 0, 1), (after, 0, 1)]
        else:
            f = at_parameters(path, np.array([i - h, i, i + h]))
            pairs = [(f, 0, 1), (f, 1, 2)]
        derivs = []
        for f, a, b in pairs:
            pos = (f.camtoworlds[b, :3, 3] - f.camtoworlds[a, :3, 3]) / h
            rot = (f.camtoworlds[b, :3, :3] - f.camtoworlds[a, :3, :3]).reshape(-1) / h
            derivs.append(np.concatenate([pos, rot, [(f.fovs[b] - f.fovs[a]) / h, (f.times[b] - f.times[a]) / h]]))
        left, right = derivs
        assert np.linalg.norm(left) > 0.1  # the path does move here
        np.testing.assert_allclose(left, right, atol=1e-3 * max(1.0, np.abs(left).max()), err_msg=f"keyframe {i}")


def test_linear_interpolation_would_fail_the_c1_check():
    """Guards the check above: the same finite differences on a polyline see the kink."""
    pts = np.array([[0.0, 0, 0], [1, 0, 0], [1, 1, 0]])
    lin = lambda s: np.array([np.interp(s, [0, 1, 2], pts[:, j]) for j in range(3)])  # noqa: E731
    h = 1e-5
    assert np.linalg.norm((lin(1 + h) - lin(1)) / h - (lin(1) - lin(1 - h)) / h) > 0.5
    spl = hermite(pts, np.array([1 - h, 1, 1 + h]))
    assert np.linalg.norm((spl[2] - spl[1]) / h - (spl[1] - spl[0]) / h) < 1e-3


def test_no_quaternion_flips_on_a_full_turn():
    """A camera turning 360 degrees on the spot (keyframes 72 degrees apart, whose stored quaternions change sign
    at 180 degrees): the interpolated rotation turns smoothly and steadily all the way round."""
    kfs = []
    for a in np.radians(np.arange(0, 361, 72)):
        fwd = np.array([np.cos(a), np.sin(a), 0.0])
        kfs.append(Keyframe(look_at(np.zeros(3), fwd, np.array([0.0, 0.0, 1.0])), 50.0))
    quats = rotmat_to_quat(np.stack([k.camtoworld[:3, :3] for k in kfs]))
    assert (np.sum(quats[1:] * quats[:-1], -1) < 0).any()  # the raw keyframes do flip: the test can fail
    q = hermite(quats, np.linspace(0, len(kfs) - 1, 721), quaternion=True)
    dots = np.sum(q[1:] * q[:-1], -1)
    assert dots.min() > 0.999, "sign flip or jump between neighbouring samples"
    # Steady turning: the forward vector's heading grows monotonically by 360 degrees in total.
    fwd = quat_to_rotmat(q)[:, :, 2]
    heading = np.unwrap(np.arctan2(fwd[:, 1], fwd[:, 0]))
    steps = np.diff(heading)
    assert steps.min() > 0 and heading[-1] - heading[0] == pytest.approx(2 * math.pi, abs=1e-6)
    assert steps.max() < 2.0 * steps.mean()


def test_constant_speed_evens_out_speed():
    kfs = [Keyframe(look_at(np.array(p, float), np.array([0.0, 5, 0])), 50.0) for p in ([0, 0, 0], [0.2, 0, 0], [4, 0, 0], [4.2, 0, 0])]
    uneven = CameraPath(kfs, seconds=4, fps=25).frames()
    even = CameraPath(kfs, seconds=4, fps=25, constant_speed=True).frames()
    step = lambda f: np.linalg.norm(np.diff(f.camtoworlds[:, :3, 3], axis=0), axis=1)  # noqa: E731
    assert step(uneven).max() / step(uneven).mean() > 2.0
    assert step(even).max() / step(even).mean() < 1.05
    np.testing.assert_allclose(even.camtoworlds[[0, -1]], uneven.camtoworlds[[0, -1]], atol=1e-9)


def test_reads_nerfstudio_fixture():
    """A file written by hand from nerfstudio's documented schema (OpenGL axes, row-major, vertical fov)."""
    f = read_camera_path(FIXTURE)
    assert (f.width, f.height, f.fps, f.seconds) == (48, 32, 2.0, 2.0)
    assert len(f.path.keyframes) == 3 and f.path.tension == 0.5 and not f.path.loop
    k0 = f.path.keyframes[0]
    # OpenGL camera at (0, 0, 4) looking down -z  ->  OpenCV: +z forward is world -z, image down is world -y.
    np.testing.assert_allclose(k0.camtoworld[:3, 3], [0, 0, 4])
    np.testing.assert_allclose(k0.camtoworld[:3, 2], [0, 0, -1])
    np.testing.assert_allclose(k0.camtoworld[:3, 1], [0, -1, 0])
    np.testing.assert_allclose(f.path.keyframes[1].camtoworld[:3, 2], [-1, 0, 0], atol=1e-12)  # at +x, looks at -x
    assert [k.fov for k in f.path.keyframes] == [50.0, 40.0, 30.0] and [k.time for k in f.path.keyframes] == [0.0, 0.5, 1.0]
    assert len(f.frames) == 4 and f.frames.times.tolist() == [0.0, 0.5, 1.0, 1.0]
    cams = f.frames.cameras(48, 32)
    # nerfstudio's focal length: render_height / 2 / tan(fov / 2).
    assert float(cams.fy[0]) == pytest.approx(16 / math.tan(math.radians(25)), rel=1e-6) and float(cams.cx[0]) == 24


def test_round_trip_through_the_file(tmp_path):
    path = wavy_path(loop=True, tension=0.3, constant_speed=True)
    path.width, path.height = 64, 48
    out = write_camera_path(path, tmp_path / "p.json")
    raw = json.loads(out.read_text())
    for key in ("keyframes", "camera_path", "render_height", "render_width", "fps", "seconds", "camera_type", "is_cycle", "smoothness_value"):
        assert key in raw, key
    cam = raw["camera_path"][0]
    assert len(cam["camera_to_world"]) == 16 and cam["camera_to_world"][12:] == [0, 0, 0, 1]  # row-major
    assert cam["aspect"] == pytest.approx(64 / 48) and "render_time" in cam
    # Stored in OpenGL axes: the camera's third column (backwards) points away from where it looks.
    gl = np.array(raw["keyframes"][0]["matrix"]).reshape(4, 4)
    np.testing.assert_allclose(gl[:3, 2], -path.keyframes[0].camtoworld[:3, 2], atol=1e-12)
    back = read_camera_path(out)
    assert (back.path.loop, back.path.tension, back.path.constant_speed, back.path.seconds, back.path.fps) == (True, 0.3, True, 2.0, 10.0)
    for a, b in zip(path.keyframes, back.path.keyframes):
        np.testing.assert_allclose(a.camtoworld, b.camtoworld, atol=1e-12)
        assert (a.fov, a.time) == (b.fov, b.time)
    frames = path.frames()
    np.testing.assert_allclose(back.frames.camtoworlds, frames.camtoworlds, atol=1e-12)
    np.testing.assert_allclose(back.frames.times, frames.times)
    # And the fixture survives recon's writer unchanged.
    ns = read_camera_path(FIXTURE)
    again = read_camera_path(write_camera_path(ns.path, tmp_path / "ns.json"))
    for a, b in zip(ns.path.keyframes, again.path.keyframes):
        np.testing.assert_allclose(a.camtoworld, b.camtoworld, atol=1e-12)


def test_column_major_keyframe_matrices_are_accepted(tmp_path):
    """three.js stores matrices column by column; such keyframes (older nerfstudio viewers) are transposed."""
    raw = json.loads(FIXTURE.read_text())
    for k in raw["keyframes"]:
        k["matrix"] = np.array(k["matrix"]).reshape(4, 4).T.reshape(-1).tolist()
    (tmp_path / "cm.json").write_text(json.dumps(raw))
    a, b = read_camera_path(FIXTURE), read_camera_path(tmp_path / "cm.json")
    for ka, kb in zip(a.path.keyframes, b.path.keyframes):
        np.testing.assert_allclose(ka.camtoworld, kb.camtoworld)


def test_dataparser_transform_brings_nerfstudio_poses_back(tmp_path):
    rot = look_at(np.zeros(3), np.array([1.0, 2, 0.5]))[:3, :3]
    t = np.concatenate([rot, [[0.3], [-1.0], [2.0]]], 1)
    (tmp_path / "dataparser_transforms.json").write_text(json.dumps({"transform": t.tolist(), "scale": 0.25}))
    tf = dataparser_transform(tmp_path / "dataparser_transforms.json")
    c2w = look_at(np.array([2.0, 1, 1]), np.zeros(3))[None]
    ns = tf.apply_camtoworlds(c2w)
    np.testing.assert_allclose(ns[0, :3, 3], 0.25 * (rot @ c2w[0, :3, 3] + t[:, 3]))
    np.testing.assert_allclose(tf.invert_camtoworlds(ns), c2w, atol=1e-12)


BAD = {
    "malformed.json": ('{"keyframes": [', "not a JSON file"),
    "empty.json": ("{}", "the camera path is empty"),
    "list.json": ("[]", "must be a JSON object"),
    "one.json": (None, "at least 2 keyframes, got 1"),
    "time.json": (None, "render_time 1.5, outside [0, 1]"),
    "fisheye.json": (None, "camera_type 'fisheye' is not supported"),
    "pose.json": (None, "not a rigid transform"),
}


def bad_file(tmp_path: Path, name: str) -> Path:
    text, _ = BAD[name]
    if text is None:
        raw = json.loads(FIXTURE.read_text())
        if name == "one.json":
            raw["keyframes"] = raw["keyframes"][:1]
        elif name == "time.json":
            raw["camera_path"][2]["render_time"] = 1.5
        elif name == "fisheye.json":
            raw["camera_type"] = "fisheye"
        elif name == "pose.json":
            raw["camera_path"][1]["camera_to_world"][0] = 3.0
        text = json.dumps(raw)
    (tmp_path / name).write_text(text)
    return tmp_path / name


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_files_are_one_line(tmp_path, name):
    with pytest.raises(ReconError) as exc:
        read_camera_path(bad_file(tmp_path, name))
    msg = str(exc.value)
    assert BAD[name][1] in msg and str(tmp_path / name) in msg and "\n" not in msg


def test_bad_keyframes_in_code():
    k = wavy_path().keyframes
    with pytest.raises(ReconError, match="at least 2 keyframes, got 1"):
        CameraPath(k[:1]).frames()
    with pytest.raises(ReconError, match=r"keyframe 1 has time -0.2, outside \[0, 1\]"):
        CameraPath([k[0], Keyframe(k[1].camtoworld, 50.0, -0.2)]).frames()
    with pytest.raises(ReconError, match="either every keyframe has a time or none"):
        CameraPath([k[0], Keyframe(k[1].camtoworld, 50.0, None)]).frames()


# ---------------------------------------------------------------------------------------------------- recon render
RECON = [sys.executable, "-m", "recon.cli"]


def recon(*args, timeout=300):
    return subprocess.run(RECON + [str(a) for a in args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """gs on demo:static for 30 steps (a few seconds), loaded back."""
    from rich.console import Console

    from recon.engine.run import DataConfig, load_run, start_training
    from recon.engine.trainer import TrainerConfig
    from recon.methods import get_method

    out = tmp_path_factory.mktemp("camera-path-run")
    cfg = TrainerConfig(max_steps=30, eval_at_end=False, image_every=0, log_every=30)
    run_dir = start_training("gs", DataConfig(path="demo:static"), cfg, get_method("gs").config_cls(), out, device="cpu", console=Console(stderr=True, quiet=True))
    return load_run(run_dir, device="cpu")


def training_camera_path(run, indices, **kw) -> CameraPath:
    """A path through some training cameras, in the run's data frame (as files hold it)."""
    from recon.camera_path.path import keyframes_from_cameras

    path = CameraPath(keyframes_from_cameras(run.scene.cameras, indices), **kw)
    return path.mapped(run.transform.invert_camtoworlds)


def test_render_camera_path_writes_mp4(tiny_run, tmp_path):
    """Three training cameras as keyframes, 1.5 s at 4 fps, rgb and depth side by side: an MP4 of 6 frames of
    2 x 40 by 30 pixels, PNGs on request, and the first frame is the first training camera's view."""
    import imageio.v3 as iio
    import torch

    train = tiny_run.scene.split("train")
    path = training_camera_path(tiny_run, train[:3], seconds=1.5, fps=4.0, width=40, height=40)
    file = write_camera_path(path, tmp_path / "three.json")
    r = recon("render", tiny_run.run_dir, "--camera-path", file, "--outputs", "rgb", "depth", "--png", "--output", tmp_path / "out", "--progress", "lines", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    video = iio.imread(tmp_path / "out" / "three.mp4")
    assert video.shape == (6, 40, 80, 3)
    assert len(list((tmp_path / "out" / "rgb").glob("*.png"))) == 6 == len(list((tmp_path / "out" / "depth").glob("*.png")))
    assert "frame 6/6" in r.stderr and "eta" in r.stderr
    # Frame 0 sits on training camera train[0] (through the data frame and OpenGL axes and back).
    cam = tiny_run.scene.cameras[int(train[0])].scaled(40 / 128)
    with torch.no_grad():
        ref = tiny_run.method.render(cam, outputs=("rgb",), background=torch.tensor(tiny_run.scene.background))["rgb"].numpy()
    png = iio.imread(tmp_path / "out" / "rgb" / "00000.png")[..., :3] / 255.0
    assert np.abs(png - ref).mean() < 0.01, np.abs(png - ref).mean()
    # Another fps and duration re-sample the keyframes: 2 s at 5 fps.
    r = recon("render", tiny_run.run_dir, "--camera-path", file, "--fps", "5", "--seconds", "2", "--resolution", "24", "16", "--output", tmp_path / "re", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert iio.imread(tmp_path / "re" / "three.mp4").shape == (10, 16, 24, 3)


@pytest.mark.parametrize("name", ["malformed.json", "empty.json", "one.json", "time.json"])
def test_cli_bad_camera_path_is_one_line(tiny_run, tmp_path, name):
    file = bad_file(tmp_path, name)
    r = recon("render", tiny_run.run_dir, "--camera-path", file, "--device", "cpu")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(file) in lines[0] and BAD[name][1] in lines[0], r.stderr


def test_dynamic_paths_render_at_their_times(tmp_path):
    """A dynamic method follows the path's render_time frame by frame (a probe method paints the time it was
    called with into the red channel); two keyframes at 0.2 and 0.8 give evenly spaced times."""
    from types import SimpleNamespace

    import imageio.v3 as iio
    from rich.console import Console

    from helpers import blob_scene
    from recon.data.normalize import SceneTransform
    from recon.export.render import render_run
    from test_viewer import ProbeMethod

    kfs = [Keyframe(look_at(np.array([3.0, 0, 1]), np.zeros(3)), 50.0, 0.2), Keyframe(look_at(np.array([0.0, 3, 1]), np.zeros(3)), 50.0, 0.8)]
    file = write_camera_path(CameraPath(kfs, seconds=1.0, fps=4.0, width=16, height=12), tmp_path / "timed.json")
    run = SimpleNamespace(method=ProbeMethod(), scene=blob_scene(n_views=4, size=16), transform=SceneTransform.identity(), run_dir=tmp_path)
    out = render_run(run, camera_path=file, png=True, output=tmp_path / "out", console=Console(stderr=True, quiet=True))
    reds = [iio.imread(out / "rgb" / f"{i:05d}.png")[0, 0, 0] / 255.0 for i in range(4)]
    np.testing.assert_allclose(reds, [0.2, 0.4, 0.6, 0.8], atol=1 / 255)
    assert [c["time"] for c in run.method.calls] == pytest.approx([0.2, 0.4, 0.6, 0.8])
