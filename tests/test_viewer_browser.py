"""End-to-end viewer tests: a trained run served by the viewer, looked at with Debian's headless Chromium driven
through the Chrome DevTools Protocol (CDP).

They check that the page connects, that what the browser shows is the model (the screenshot matches the server's
render of the browser's own camera, and differs from an empty scene), and that choosing another output in the
GUI (a real click on the dropdown) changes the picture. Chromium missing -> those tests are skipped; the
``recon view`` CLI test needs no browser.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless chromium not installed")

sys.path.insert(0, str(Path(__file__).parent))


# ---------------------------------------------------------------------------------------------------- browser
class Chromium:
    """Headless Chromium with a CDP connection to its page (flags from env_feasibility §5: SwiftShader WebGL)."""

    def __init__(self, width: int = 1024, height: int = 768, timeout: float = 60.0):
        import websockets.sync.client as wsc

        self.dir = tempfile.mkdtemp(prefix="recon-chromium-")
        args = [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
            "--hide-scrollbars", f"--user-data-dir={self.dir}", f"--window-size={width},{height}", "--remote-debugging-port=0",
            "about:blank",
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.ws = None
        atexit.register(self.close)  # never leave a browser behind, even if a test dies half-way
        try:
            port_file = Path(self.dir) / "DevToolsActivePort"
            deadline = time.monotonic() + timeout
            while not (port_file.exists() and len(port_file.read_text().split()) >= 2):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("chromium did not open its DevTools port")
                time.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
            page = next(p for p in pages if p["type"] == "page")
            self.ws = wsc.connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=timeout)
        except Exception:
            self.close()
            raise
        self._id = 0

    @staticmethod
    def start(retries: int = 1, **kw) -> "Chromium":
        """Start with one retry: SwiftShader's first start occasionally hangs (env_feasibility §5)."""
        for attempt in range(retries + 1):
            try:
                return Chromium(**kw)
            except Exception:
                if attempt == retries:
                    raise
        raise AssertionError("unreachable")

    def call(self, method: str, timeout: float = 60.0, **params):
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def eval(self, js: str):
        r = self.call("Runtime.evaluate", expression=js, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(r["exceptionDetails"].get("exception", {}).get("description", str(r)))
        return r["result"].get("value")

    def wait_for(self, js: str, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.eval(js)
            if value:
                return value
            time.sleep(0.2)
        raise TimeoutError(f"page never satisfied: {js}")

    def click(self, x: float, y: float) -> None:
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=5, y=5)  # move away: no tooltip over the view

    def centre_of(self, js_element: str) -> tuple[float, float]:
        r = json.loads(self.eval(f"(() => {{ const r = ({js_element}).getBoundingClientRect(); return JSON.stringify([r.x + r.width / 2, r.y + r.height / 2, r.width]); }})()"))
        assert r[2] > 0, f"element not visible: {js_element}"
        return r[0], r[1]

    def screenshot(self, path: Path) -> np.ndarray:
        import imageio.v3 as iio

        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        Path(path).write_bytes(data)
        return iio.imread(path)[..., :3]

    def close(self) -> None:
        atexit.unregister(self.close)
        if self.ws is not None:
            try:
                self.ws.close()
            except Exception:
                pass
            self.ws = None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def _label(text: str) -> str:
    return f'[...document.querySelectorAll("label")].find(l => l.textContent.trim() == "{text}")'


# ---------------------------------------------------------------------------------------------------- the run
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A small trained run: gs on demo:static for 50 steps, written to disk and loaded back with load_run.

    Falls back to a gs model trained in memory on the tests' blob scene when the demo scenes are unavailable."""
    from recon.engine.run import DataConfig, LoadedRun, load_run, start_training
    from recon.engine.trainer import Trainer, TrainerConfig
    from recon.methods import get_method

    out = tmp_path_factory.mktemp("viewer-run")
    cls = get_method("gs")
    cfg = TrainerConfig(max_steps=50, eval_at_end=False, image_every=0, log_every=25)
    try:
        from rich.console import Console

        run_dir = start_training("gs", DataConfig(path="demo:static"), cfg, cls.config_cls(), out, device="cpu", console=Console(stderr=True, quiet=True))
        return load_run(run_dir, device="cpu")
    except Exception as exc:  # demo scenes are optional for this test
        print(f"demo:static unavailable ({type(exc).__name__}: {exc}); using the blob scene")
    from helpers import blob_scene

    from recon.data.normalize import compute_normalization

    scene = blob_scene(n_views=12, size=64)
    torch.manual_seed(0)
    method = cls(cls.config_cls(), scene, cfg.max_steps, torch.device("cpu"))
    method.setup(scene)
    Trainer(cfg, method, scene, out).train()
    method.eval()
    return LoadedRun(out, {}, method, scene, compute_normalization(scene, "none"), cfg, cfg.max_steps)


def settled_frame(app, after: int = 0, timeout: float = 60.0):
    """Wait until a client shows a full-resolution frame (its ``after``-th or later) and nothing else is pending."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for cv in app.clients.values():
            if cv.full_frames > after and cv.worker.idle and cv.last_frame is not None and not cv.last_frame.low:
                return cv
        time.sleep(0.1)
    raise TimeoutError("no full-resolution frame reached the browser")


def best_quality(app):
    """The browser's frames at JPEG quality 95 (the pixel comparisons below need it): set it in the browser's own
    render panel once it has connected, and wait for a frame made with it."""
    cv = settled_frame(app)
    n = cv.full_frames
    cv.panel.jpeg.value = 95
    cv.worker.request(moving=False)
    return settled_frame(app, after=n)


def view_region(img: np.ndarray) -> tuple[slice, slice]:
    """The part of the canvas no GUI covers: left of the control panel, below the notification toast, above the
    axes logo."""
    h, w = img.shape[:2]
    return slice(170, h - 70), slice(330, min(w - 345, 680))


def expected_on_canvas(frame_image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The server's frame as the browser stretches it over a canvas of ``size`` (h, w)."""
    t = torch.from_numpy(frame_image).permute(2, 0, 1)[None].float()
    return torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()


# ---------------------------------------------------------------------------------------------------- tests
@pytest.mark.browser
@needs_chromium
def test_browser_shows_model_and_output_switch(run, tmp_path):
    from rich.console import Console

    from recon.viewer.app import ViewerApp

    shots = Path(os.environ.get("RECON_VIEWER_SHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    app = ViewerApp(run.method, run.scene, port=free_port(), console=Console(stderr=True, width=200), output_dir=tmp_path / "saved")
    browser = None
    try:
        browser = Chromium.start()
        browser.call("Page.navigate", url=f"http://127.0.0.1:{app.port}")
        browser.wait_for(f"!!{_label('Output')}")  # the GUI arrived over the websocket: the page is connected
        cv = best_quality(app)
        time.sleep(1.5)  # the browser decodes and draws the background image
        with_cams = browser.screenshot(shots / "viewer_rgb_cameras.png")

        # Hide the frustums (they are drawn by the browser over the render) and compare with the server's frame.
        app.view_panel.show_cameras.value = False
        time.sleep(1.0)
        cv = settled_frame(app)
        rgb = browser.screenshot(shots / "viewer_rgb.png").astype(np.float32)
        ys, xs = view_region(rgb)
        assert (cv.last_view.height, cv.last_view.width) == rgb.shape[:2]  # canvas = viewport
        expected = expected_on_canvas(cv.last_frame.image, rgb.shape[:2])
        err = np.abs(rgb[ys, xs] - expected[ys, xs]).mean()
        blank = np.abs(rgb[ys, xs] - np.asarray(run.scene.background, np.float32) * 255).mean()
        assert blank > 8.0, f"the view looks empty (mean difference to the background {blank:.1f})"
        assert err < 0.25 * blank and err < 6.0, f"browser shows something else than the model: err {err:.1f} vs blank {blank:.1f}"
        assert np.abs(with_cams[ys, xs].astype(np.float32) - rgb[ys, xs]).max() > 50  # frustums were drawn

        # A real click on the Output dropdown, then on "depth".
        n = cv.full_frames
        browser.click(*browser.centre_of(f"document.getElementById({_label('Output')}.htmlFor)"))
        browser.wait_for('[...document.querySelectorAll("[role=option]")].some(o => o.textContent == "depth" && o.getBoundingClientRect().width > 0)')
        browser.click(*browser.centre_of('[...document.querySelectorAll("[role=option]")].find(o => o.textContent == "depth")'))
        deadline = time.monotonic() + 10
        while cv.panel.output.value != "depth" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert cv.panel.output.value == "depth"
        cv = settled_frame(app, after=n)
        time.sleep(1.5)
        depth = browser.screenshot(shots / "viewer_depth.png").astype(np.float32)
        expected = expected_on_canvas(cv.last_frame.image, depth.shape[:2])
        assert np.abs(depth[ys, xs] - expected[ys, xs]).mean() < 6.0
        assert np.abs(depth[ys, xs] - rgb[ys, xs]).mean() > 20.0, "switching rgb -> depth did not change the view"

        # "Save view as PNG" writes the displayed output.
        browser.click(*browser.centre_of('[...document.querySelectorAll("button")].find(b => b.textContent.includes("Save view as PNG"))'))
        deadline = time.monotonic() + 20
        while not list((tmp_path / "saved").glob("view-*-depth.png")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert list((tmp_path / "saved").glob("view-*-depth.png"))
    finally:
        if browser is not None:
            browser.close()
        app.close()


def test_cli_view_serves_run(run):
    """``recon view RUN`` prints the URL and the SSH hint, serves the client, and stops cleanly on Ctrl-C."""
    if not (Path(run.run_dir) / "config.yaml").exists():
        pytest.skip("the run was made in memory (demo scenes unavailable)")
    exe = Path(sys.executable).with_name("recon")
    port = free_port()
    # A test runner started in the background (``nohup pytest &``) passes SIGINT on as *ignored*, and Python then
    # never installs its KeyboardInterrupt handler; give the child a terminal's default so Ctrl-C means Ctrl-C.
    proc = subprocess.Popen(
        [str(exe), "view", str(run.run_dir), "--port", str(port), "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while not any("Ctrl-C to stop" in ln for ln in lines) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert any("Ctrl-C to stop" in ln for ln in lines), "".join(lines)
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}", timeout=10).status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail("recon view did not stop within 30 s of SIGINT")
        out = proc.stdout.read()
        reader.join(timeout=5)
    err = "".join(lines)
    assert proc.returncode == 0, err
    assert f"http://localhost:{port}" in err and f"ssh -L {port}:localhost:{port}" in err
    assert out.strip() == ""  # stdout stays free for scripts


@pytest.mark.browser
@needs_chromium
def test_browser_live_training_pause_and_follow(run, tmp_path):
    """Training with a LiveViewer and a browser: the panel shows the step, the view re-renders as the model
    trains, and the Pause button (clicked in the page) stops the trainer until Resume."""
    from rich.console import Console

    from recon.engine.trainer import Trainer, TrainerConfig
    from recon.viewer.live import LiveViewer

    shots = Path(os.environ.get("RECON_VIEWER_SHOTS", tmp_path))
    quiet = Console(stderr=True, quiet=True)
    live = LiveViewer(run.method, run.scene, port=free_port(), console=quiet)
    live.app.training_panel.refresh.value = 0.4
    run.method.train()
    cfg = TrainerConfig(max_steps=run.step + 2000, max_minutes=1.5, eval_at_end=False, image_every=0, checkpoint_every=10**9, checkpoint_minutes=100.0)
    trainer = Trainer(cfg, run.method, run.scene, tmp_path / "live", console=quiet, viewer=live)
    trainer.step = run.step
    stop = threading.Event()

    def train():
        try:
            trainer.train()
        except Exception:  # noqa: S110 (the test reports the state it sees)
            pass
        stop.set()

    browser = None
    thread = threading.Thread(target=train, daemon=True)
    try:
        live.pause()  # start paused so that the browser sees the whole story
        thread.start()
        browser = Chromium.start()
        browser.call("Page.navigate", url=f"http://127.0.0.1:{live.port}")
        browser.wait_for('[...document.querySelectorAll("button")].some(b => b.textContent.includes("Resume training"))')
        cv = settled_frame(live.app)
        step0 = trainer.step
        time.sleep(1.0)
        assert trainer.step == step0, "trainer ran while paused"

        button = '[...document.querySelectorAll("button")].find(b => b.textContent.includes("training"))'
        browser.click(*browser.centre_of(button))  # Resume
        frames0 = cv.full_frames
        deadline = time.monotonic() + 30
        while (trainer.step < step0 + 5 or cv.full_frames < frames0 + 2) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert trainer.step >= step0 + 5, "Resume did not restart training"
        assert cv.full_frames >= frames0 + 2, "the view did not follow the training"
        browser.wait_for('document.body.innerText.includes("step")')
        browser.screenshot(shots / "viewer_live.png")

        browser.click(*browser.centre_of(button))  # Pause
        deadline = time.monotonic() + 10
        while not live.paused and time.monotonic() < deadline:
            time.sleep(0.1)
        assert live.paused
        time.sleep(0.5)
        s = trainer.step
        time.sleep(1.5)
        assert trainer.step == s, "Pause did not stop training"
        text = browser.eval("document.body.innerText")
        assert "Resume training" in text and "Gaussians" in text
    finally:
        cfg.max_steps = 0  # end the loop after its current step (the trainer reads its config every step)
        live.close()  # releases a paused trainer
        if browser is not None:
            browser.close()
        thread.join(timeout=60)
        assert not thread.is_alive()
        run.method.eval()


def _button(text: str) -> str:
    return f'[...document.querySelectorAll("button")].find(b => b.textContent.trim() == "{text}")'


def click_button(browser: Chromium, text: str, timeout: float = 10.0) -> None:
    """Scroll the GUI panel to a button, wait until it stops moving and nothing covers its centre, then click it."""
    button = _button(text)
    browser.eval(f"{button}.scrollIntoView({{block: 'center'}})")
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        x, y = browser.centre_of(button)
        on_top = browser.eval(f"(() => {{ const e = document.elementFromPoint({x}, {y}); return !!e && e.closest('button') === {button}; }})()")
        if (x, y) == last and on_top:
            browser.click(x, y)
            return
        last = (x, y)
        time.sleep(0.2)
    raise TimeoutError(f"button {text!r} never became clickable")


@pytest.mark.browser
@needs_chromium
def test_browser_camera_path_add_save_render(run, tmp_path):
    """The Camera path panel driven by real clicks: three keyframes added from three views, the path saved in
    nerfstudio's format, and "Render video" writes an MP4 of the path's frame count and size."""
    import imageio.v3 as iio
    from rich.console import Console

    from recon.camera_path import read_camera_path
    from recon.cameras import look_at
    from recon.viewer.app import ViewerApp

    if not (Path(run.run_dir) / "config.yaml").exists():
        pytest.skip("the run was made in memory (demo scenes unavailable)")
    shots = Path(os.environ.get("RECON_VIEWER_SHOTS", tmp_path))
    app = ViewerApp(run.method, run.scene, port=free_port(), console=Console(stderr=True, width=200), run_dir=run.run_dir, transform=run.transform)
    browser = None
    panel = app.path_panel
    try:
        browser = Chromium.start()
        browser.call("Page.navigate", url=f"http://127.0.0.1:{app.port}")
        browser.wait_for(f"!!{_button('Add keyframe')}")
        cv = settled_frame(app)
        panel.seconds.value, panel.fps.value, panel.width.value, panel.height.value = 1.5, 4.0, 48, 36
        panel.name.value = "browser-tour"
        target = np.zeros(3)
        for i, angle in enumerate((0.0, 0.6, 1.2)):
            c2w = look_at(np.array([3.0 * np.cos(angle), 3.0 * np.sin(angle), 1.0]), target, np.array([0.0, 0.0, 1.0]))
            app.preview_camera(cv.client, c2w, 45.0 + 5 * i, None)  # move this browser's camera
            deadline = time.monotonic() + 10
            while np.abs(np.asarray(cv.client.camera.position) - c2w[:3, 3]).max() > 1e-3 and time.monotonic() < deadline:
                time.sleep(0.1)
            click_button(browser, "Add keyframe")
            deadline = time.monotonic() + 10
            while len(panel.keyframes()) < i + 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(panel.keyframes()) == i + 1, "the click did not add a keyframe"
            np.testing.assert_allclose(panel.keyframes()[i].camtoworld[:3, 3], c2w[:3, 3], atol=1e-3)
        browser.wait_for('document.body.innerText.includes("3 keyframes")')
        browser.screenshot(shots / "viewer_camera_path.png")

        click_button(browser, "Save path")
        file = Path(run.run_dir) / "camera_paths" / "browser-tour.json"
        deadline = time.monotonic() + 10
        while not file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        saved = read_camera_path(file)
        assert len(saved.path.keyframes) == 3 and len(saved.frames) == 6 and (saved.width, saved.height) == (48, 36)

        click_button(browser, "Render video")
        video = Path(run.run_dir) / "renders" / "browser-tour" / "browser-tour.mp4"
        deadline = time.monotonic() + 120
        while not panel.status.content.startswith("wrote") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert panel.status.content == f"wrote {video}", panel.status.content
        assert iio.imread(video).shape == (6, 36, 48, 3)
        browser.wait_for('document.body.innerText.includes("browser-tour.mp4")')
    finally:
        if browser is not None:
            browser.close()
        app.close()


@pytest.fixture(scope="module")
def dynamic_run(tmp_path_factory):
    """A short swift4d run on the built-in dynamic demo (every dynamic Gaussian method must show its time slider)."""
    from rich.console import Console

    from recon.engine.run import DataConfig, load_run, start_training
    from recon.engine.trainer import TrainerConfig
    from recon.methods import get_method

    out = tmp_path_factory.mktemp("viewer-dynamic-run")
    cls = get_method("swift4d")
    cfg = TrainerConfig(max_steps=150, eval_at_end=False, image_every=0, log_every=50)
    run_dir = start_training("swift4d", DataConfig(path="demo:dynamic"), cfg, cls.config_cls(), out, device="cpu", console=Console(stderr=True, quiet=True))
    return load_run(run_dir, device="cpu")


@pytest.fixture(scope="module")
def simulated_run(tmp_path_factory):
    """A short gasp run dropped onto a ground by ``recon simulate`` (a run that plays its simulation over time)."""
    pytest.importorskip("newton", reason="the newton package is a dependency of recon; install it with scripts/setup.sh")
    from recon.cli import main
    from recon.engine.run import load_run

    out = tmp_path_factory.mktemp("viewer-simulated-run")
    assert main(["train", "--method", "gasp", "--max-steps", "100", "--output-dir", str(out), "--trainer.eval-every", "0"]) == 0
    trained = next((out / "demo-static" / "gasp").iterdir())
    assert main(["simulate", str(trained), "--frames", "8", "--ground", "below", "--drop", "1.0", "--material", "sand",
                 "--output", str(out / "sim"), "--video", "none", "--ply-every", "0", "--progress", "lines"]) == 0  # fmt: skip
    return load_run(out / "sim", device="cpu")


@pytest.mark.browser
@needs_chromium
def test_browser_time_slider_on_a_dynamic_run(dynamic_run, tmp_path):
    """A dynamic method's run: the page shows a Time slider, and moving it changes what the browser shows (the
    server renders the new time and the screenshot follows)."""
    _time_slider_moves_the_picture(dynamic_run, tmp_path, "viewer_time")


@pytest.mark.browser
@needs_chromium
def test_browser_plays_a_simulation(simulated_run, tmp_path):
    """A ``recon simulate`` run: the viewer has the Time slider (and Play), and two frames of the drop look
    different in the browser."""
    _time_slider_moves_the_picture(simulated_run, tmp_path, "viewer_simulation")


def _time_slider_moves_the_picture(run, tmp_path, name: str) -> None:
    from rich.console import Console

    from recon.viewer.app import ViewerApp

    assert run.method.is_dynamic
    shots = Path(os.environ.get("RECON_VIEWER_SHOTS", tmp_path))
    app = ViewerApp(run.method, run.scene, port=free_port(), console=Console(stderr=True, width=200))
    browser = None
    try:
        app.view_panel.show_cameras.value = False
        browser = Chromium.start()
        browser.call("Page.navigate", url=f"http://127.0.0.1:{app.port}")
        browser.wait_for(f"!!{_label('Time')}")  # the slider is in the page
        cv = best_quality(app)
        assert cv.panel.time is not None and cv.panel.play is not None
        cv.panel.time.value = 0.2  # a change from the initial 0.0 (an unchanged value renders nothing)
        cv = settled_frame(app, after=cv.full_frames)
        time.sleep(1.5)
        a = browser.screenshot(shots / f"{name}02.png").astype(np.float32)
        frame_a = cv.last_frame.image.astype(np.float32)
        n = cv.full_frames
        cv.panel.time.value = 0.8
        cv = settled_frame(app, after=n)
        time.sleep(1.5)
        b = browser.screenshot(shots / f"{name}08.png").astype(np.float32)
        frame_b = cv.last_frame.image.astype(np.float32)
        assert frame_a.shape == frame_b.shape
        # The server rendered a different scene state, and the browser shows it.
        assert np.abs(frame_a - frame_b).max() > 40, "the render did not change with time"
        ys, xs = view_region(b)
        expected = expected_on_canvas(cv.last_frame.image, b.shape[:2])
        assert np.abs(b[ys, xs] - expected[ys, xs]).mean() < 6.0
        assert np.abs(a - b).max() > 40, "the browser did not follow the time slider"
    finally:
        if browser is not None:
            browser.close()
        app.close()
