"""Viewer tests that need no browser: camera conversion, the render path, GUI settings -> render keywords, the
render worker's state machine, splat conversion, live-training hooks and the CLI's error path."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.cameras import Cameras, look_at
from recon.methods import get_method
from recon.methods.base import Method
from recon.viewer.camera import ViewCamera, from_camtoworld, render_size, scene_up, to_cameras, vertical_fov
from recon.viewer.options import ViewerOption, method_options, parse_options
from recon.viewer.render import RenderSettings, ViewRenderer, to_display
from recon.viewer.splats import covariances, viser_splats
from recon.viewer.worker import Frame, RenderWorker

sys.path.insert(0, str(Path(__file__).parent))
from helpers import blob_scene  # noqa: E402


# ---------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def scene():
    return blob_scene(n_views=8, size=48)


@pytest.fixture(scope="module")
def gs(scene):
    """A Gaussian model made from the scene's points (untrained: the viewer only needs *a* model to show)."""
    torch.manual_seed(0)
    cls = get_method("gs")
    m = cls(cls.config_cls(), scene, 100, torch.device("cpu"))
    m.setup(scene)
    m.eval()
    return m


class ProbeMethod(Method):
    """A method whose image encodes the time and the options it was called with (checks what the viewer passes)."""

    name = "probe"
    render_outputs = ("rgb", "depth", "normal")
    is_dynamic = True

    def __init__(self):
        super().__init__(None, None, 1, torch.device("cpu"))
        self.calls: list[dict] = []

    def viewer_options(self):
        return [
            {"name": "envmap", "kind": "dropdown", "choices": ["studio", "sunset"]},
            {"name": "env_rotation", "kind": "slider", "min": 0.0, "max": 360.0, "step": 1.0, "default": 90.0},
        ]

    @torch.no_grad()
    def render(self, camera, time=None, outputs=("rgb",), background=None, **options):
        self.calls.append({"time": time, "outputs": tuple(outputs), **options})
        h, w = int(camera.heights[0]), int(camera.widths[0])
        t = 0.0 if time is None else float(time)
        rot = float(options.get("env_rotation", 0.0)) / 360.0
        out = {
            "rgb": torch.tensor([t, rot, 1.0 if options.get("envmap") == "sunset" else 0.0]).expand(h, w, 3).clone(),
            "depth": torch.linspace(1, 2, w).expand(h, w)[..., None].clone(),
            "normal": torch.tensor([0.0, 0.0, -1.0]).expand(h, w, 3).clone(),
        }
        return {k: out[k] for k in outputs}


def viser_camera(eye, target, up, fov, width, height):
    """The camera viser reports for a browser looking from ``eye`` at ``target``: viser's own look-at code
    (``CameraHandle._update_wxyz``) makes the quaternion, so this checks our reading of its convention."""
    from viser._viser import CameraHandle, _CameraHandleState

    h = CameraHandle.__new__(CameraHandle)
    h._state = _CameraHandleState(
        client=None, wxyz=np.array([1.0, 0, 0, 0]), position=np.asarray(eye, float), fov=fov, image_height=height,
        image_width=width, near=0.01, far=100.0, min_orbit_distance=0.01, max_orbit_distance=1e4,
        look_at=np.asarray(target, float), up_direction=np.asarray(up, float), update_timestamp=1.0, camera_cb=[],
    )  # fmt: skip
    h._update_wxyz()
    return ViewCamera.from_handle(h)


# ---------------------------------------------------------------------------------------------------- cameras
def test_render_size_keeps_aspect():
    assert render_size(16 / 9, 512) == (512, 288)
    assert render_size(0.5, 400) == (200, 400)
    assert render_size(1.0, 3) == (8, 8)  # never degenerate


def test_viser_camera_conventions():
    eye, target, up = np.array([3.0, -1.0, 1.5]), np.array([0.2, 0.1, -0.3]), np.array([0.0, 0.0, 1.0])
    view = viser_camera(eye, target, up, fov=math.radians(50), width=160, height=90)
    cam = to_cameras(view, 160, 90)
    pix, depth = cam.project(torch.tensor(np.stack([target, target + 0.2 * up]), dtype=torch.float32))
    # The look-at point is in front of the camera, at the image centre; world "up" is image "up" (smaller v).
    assert depth[0, 0] > 0
    assert torch.allclose(pix[0, 0], torch.tensor([80.0, 45.0]), atol=1e-3)
    assert pix[0, 1, 1] < 45.0 and abs(pix[0, 1, 0] - 80.0) < 1e-3
    # Vertical field of view: the top edge of the image is fov/2 above the axis.
    assert math.isclose(2 * math.degrees(math.atan(45.0 / float(cam.fy[0]))), 50.0, rel_tol=1e-5)
    assert float(cam.fx[0]) == float(cam.fy[0])


def test_camtoworld_round_trip(scene):
    cams = scene.cameras
    for i in range(len(cams)):
        wxyz, pos = from_camtoworld(cams.camtoworlds[i].numpy())
        view = ViewCamera(tuple(wxyz), tuple(pos), vertical_fov(cams, i), 48, 48)
        assert np.allclose(view.camtoworld(), cams.camtoworlds[i].double().numpy(), atol=1e-5)
    up = scene_up(cams)
    assert up[2] > 0.9  # the orbit's cameras are z-up


def test_browser_view_renders_like_method(gs, scene):
    """viser's camera for a look-at view -> our Cameras -> image == method.render on the same view built with
    recon's own look_at (independent code paths for the pose)."""
    eye, target, up = np.array([2.2, 1.6, 1.2]), np.zeros(3), np.array([0.0, 0.0, 1.0])
    fov, w, h = math.radians(40), 64, 48
    view = viser_camera(eye, target, up, fov, w, h)
    bg = tuple(scene.background)
    got = ViewRenderer(gs).render(view, 64, RenderSettings(output="rgb", background=bg))
    fy = 0.5 * h / math.tan(0.5 * fov)
    ref_cam = Cameras.create(look_at(eye, target, up)[None], fy, fy, w / 2, h / 2, w, h)
    ref = gs.render(ref_cam, outputs=("rgb",), background=torch.tensor(bg))["rgb"].numpy()
    assert got.shape == (h, w, 3)
    assert np.abs(got / 255.0 - ref).max() < 2.5 / 255.0
    assert ref.std() > 0.02  # the view actually shows the model, not just background


def test_training_view_matches_training_camera(gs, scene):
    """Jumping to a training camera (its wxyz/position/fov) renders exactly what that camera renders."""
    cams = scene.cameras
    i = int(scene.split("train")[1])
    wxyz, pos = from_camtoworld(cams.camtoworlds[i].numpy())
    view = ViewCamera(tuple(wxyz), tuple(pos), vertical_fov(cams, i), int(cams.widths[i]), int(cams.heights[i]))
    got = ViewRenderer(gs).render(view, int(cams.widths[i]), RenderSettings(background=(1.0, 1.0, 1.0)))
    ref = gs.render(cams[i], outputs=("rgb",), background=torch.ones(3))["rgb"].numpy()
    assert np.abs(got / 255.0 - ref).max() < 2.5 / 255.0


# ---------------------------------------------------------------------------------------------------- outputs and options
def test_output_switching_changes_image(gs):
    view = viser_camera([2.5, 0.5, 1.0], [0, 0, 0], [0, 0, 1], math.radians(45), 64, 64)
    r = ViewRenderer(gs)
    images = {o: r.render(view, 64, RenderSettings(output=o, background=(1.0, 1.0, 1.0))) for o in ("rgb", "depth", "alpha")}
    for a, b in (("rgb", "depth"), ("rgb", "alpha"), ("depth", "alpha")):
        assert np.abs(images[a].astype(int) - images[b].astype(int)).mean() > 5, (a, b)
    # scalar outputs go through the colormap (colour, not grey)
    d = images["depth"].astype(int)
    assert np.abs(d[..., 0] - d[..., 2]).max() > 50


def test_to_display_kinds():
    normal = torch.tensor([0.0, 0.0, -1.0]).expand(4, 4, 3)
    assert torch.allclose(to_display(normal)[0, 0], torch.tensor([0.5, 0.5, 0.0]))
    depth = torch.linspace(0, 1, 16).reshape(4, 4, 1)
    alpha = torch.zeros(4, 4, 1)
    alpha[:2] = 1.0
    shown = to_display(depth, alpha)
    assert shown.shape == (4, 4, 3) and (shown[2:] == 0).all() and shown[:2].sum() > 0


def test_time_and_method_options_passed_through():
    m = ProbeMethod()
    opts = method_options(m)
    assert [o.name for o in opts] == ["envmap", "env_rotation"] and opts[0].default == "studio"
    view = ViewCamera((1.0, 0.0, 0.0, 0.0), (0.0, 0.0, -3.0), math.radians(45), 40, 30)
    settings = RenderSettings(output="rgb", time=0.25, options={"envmap": "sunset", "env_rotation": 180.0})
    img = ViewRenderer(m).render(view, 40, settings)
    assert m.calls[-1]["time"] == 0.25 and m.calls[-1]["envmap"] == "sunset" and m.calls[-1]["env_rotation"] == 180.0
    assert np.allclose(img[0, 0], [64, 128, 255], atol=1)
    img2 = ViewRenderer(m).render(view, 40, RenderSettings(output="rgb", time=0.75, options={"envmap": "studio"}))
    assert img2[0, 0, 0] > img[0, 0, 0] + 100 and img2[0, 0, 2] == 0


def test_option_specs_are_validated():
    assert parse_options([ViewerOption("a", "checkbox", True)])[0].title == "a"
    with pytest.raises(ValueError):
        parse_options([{"name": "x", "kind": "dropdown"}])  # no choices
    with pytest.raises(ValueError):
        parse_options([{"name": "x", "kind": "wheel"}])
    with pytest.raises(ValueError):
        parse_options([{"name": "x", "kind": "checkbox"}, {"name": "x", "kind": "checkbox"}])


# ---------------------------------------------------------------------------------------------------- splats
def test_viser_splats_from_gaussians(gs):
    params = gs.gaussians()
    arrays = viser_splats(params)
    n = len(arrays["centers"])
    assert 0 < n <= len(params["means"])
    assert arrays["covariances"].shape == (n, 3, 3) and arrays["opacities"].shape == (n, 1) and arrays["rgbs"].shape == (n, 3)
    assert np.all(np.linalg.eigvalsh(arrays["covariances"].astype(np.float64)) > -1e-9)
    # A rotated anisotropic Gaussian: R diag(s^2) R^T
    s = torch.log(torch.tensor([[1.0, 2.0, 3.0]]))
    q = torch.tensor([[math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)]])  # 90 deg about z
    assert torch.allclose(covariances(s, q)[0], torch.diag(torch.tensor([4.0, 1.0, 9.0])), atol=1e-5)


# ---------------------------------------------------------------------------------------------------- worker
def test_render_worker_low_then_full():
    """Moving -> low-resolution frames; resting -> one full-resolution frame; bursts collapse into few renders."""
    rendered, published = [], []

    def render(low):
        rendered.append(low)
        time.sleep(0.02)
        return Frame(np.zeros((2, 2, 3), np.uint8), low, 0.0)

    w = RenderWorker(render, published.append, settle_s=0.1).start()
    try:
        for _ in range(50):  # a drag: many camera messages
            w.request(moving=True)
            time.sleep(0.002)
        deadline = time.monotonic() + 5
        while (not published or published[-1].low or not w.idle) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert published and not published[-1].low
        assert published[0].low
        assert len(rendered) < 20  # coalesced, not one render per message
        n = len(rendered)
        w.request(moving=False)
        deadline = time.monotonic() + 5
        while len(rendered) == n and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        assert rendered[n:] == [False]  # a settings change: exactly one full render
    finally:
        w.stop()


def test_render_worker_survives_errors():
    errors = []
    calls = []

    def render(low):
        calls.append(low)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return Frame(np.zeros((2, 2, 3), np.uint8), low, 0.0)

    published = []
    w = RenderWorker(render, published.append, on_error=errors.append).start()
    try:
        w.request()
        time.sleep(0.3)
        w.request()
        deadline = time.monotonic() + 5
        while not published and time.monotonic() < deadline:
            time.sleep(0.02)
        assert published and errors and "boom" in errors[0]
    finally:
        w.stop()


# ---------------------------------------------------------------------------------------------------- app and live (no browser)
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_app_gui_drives_render_settings(scene, capsys):
    """The GUI is built from what the method offers, and its values become render keywords."""
    from rich.console import Console

    from recon.viewer.app import ClientView, ViewerApp
    from recon.viewer.worker import RenderWorker

    m = ProbeMethod()
    app = ViewerApp(m, scene, port=free_port(), console=Console(stderr=True, width=200))
    try:
        # The panel a browser gets on connecting, built here on the shared GUI (no browser needed).
        panel = app.attach_panel(ClientView(client=None, worker=RenderWorker(lambda low: None, lambda f: None)), app.server.gui)
        assert tuple(panel.output.options) == m.render_outputs
        assert panel.time is not None and panel.play is not None  # dynamic method: time slider and play
        assert app.view_panel.splats is None and app.view_panel.mesh is None  # neither capability declared -> no toggles
        panel.output.value = "depth"
        panel.time.value = 0.5
        panel.options[1][1].value = 45.0
        s = panel.settings()
        assert s.output == "depth" and s.time == 0.5 and s.options == {"envmap": "studio", "env_rotation": 45.0}
        assert s.background == tuple(scene.background)
        panel.close()
    finally:
        app.close()
    out = capsys.readouterr()
    assert "viser" not in out.out  # stdout stays clean for the CLI (viser's banner is swallowed)


def test_port_in_use_moves_to_next(scene, capsys):
    import socket

    from rich.console import Console

    from recon.viewer.app import ViewerApp

    port = free_port()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port))
    blocker.listen()
    try:
        app = ViewerApp(ProbeMethod(), scene, port=port, console=Console(stderr=True, width=200))
        try:
            assert app.port != port
        finally:
            app.close()
    finally:
        blocker.close()
    err = capsys.readouterr().err
    assert f"port {port} is in use; using {app.port}" in err
    assert f"ssh -L {app.port}:localhost:{app.port}" in err


def test_live_viewer_hooks(gs, scene):
    """No client: after_step renders nothing; pause blocks before_step until resumed; close releases a pause."""
    from rich.console import Console

    from recon.viewer.live import LiveViewer

    live = LiveViewer(gs, scene, port=free_port(), console=Console(stderr=True, width=200))
    try:
        calls = []
        live.app.renderer.render = lambda *a, **k: calls.append(1)  # would be called by any render
        for step in range(1, 30):
            live.before_step(step)
            with live.lock:
                pass
            live.after_step(step, {"loss": 0.1, "psnr": 20.0, "num_gaussians": 400.0})
        assert not calls
        assert "**step**" in live.app.training_panel.stats.content

        live.pause()
        assert live.paused
        done = threading.Event()
        t = threading.Thread(target=lambda: (live.before_step(30), done.set()), daemon=True)
        t.start()
        assert not done.wait(0.6)  # blocked while paused
        live.resume()
        assert done.wait(2.0)

        live.pause()
        done.clear()
        t = threading.Thread(target=lambda: (live.before_step(31), done.set()), daemon=True)
        t.start()
        assert not done.wait(0.3)
    finally:
        live.close()
    assert done.wait(2.0)  # close() must never leave the trainer stuck


def test_cli_view_missing_run_is_one_line(tmp_path):
    exe = Path(sys.executable).with_name("recon")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "recon.cli"]
    r = subprocess.run(cmd + ["view", str(tmp_path / "nope")], capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "does not exist" in lines[0], r.stderr


def test_depth_for_compositing(gs):
    """The depth sent with the image (so the browser hides frustums behind the model) is the method's camera-z
    depth where the model covers the pixel and far away elsewhere."""
    from recon.viewer.render import FAR_DEPTH

    view = viser_camera([2.5, 0.5, 1.0], [0, 0, 0], [0, 0, 1], math.radians(45), 64, 64)
    r = ViewRenderer(gs)
    image, depth = r.render_with_depth(view, 64, RenderSettings(background=(1.0, 1.0, 1.0)))
    raw = r.render_raw(view, 64, RenderSettings(output="depth"))
    covered = raw["alpha"][..., 0].numpy() >= 0.5
    assert image.shape[:2] == depth.shape and covered.any() and (~covered).any()
    assert np.allclose(depth[covered], raw["depth"][..., 0].numpy()[covered], atol=1e-5)
    assert (depth[~covered] == FAR_DEPTH).all()
    assert 1.0 < float(np.median(depth[covered])) < 4.5  # the blobs sit ~2.7 units from this camera
    assert r.render_with_depth(view, 64, RenderSettings(), depth=False)[1] is None
