"""The viewer's Camera path panel without a browser: editing keyframes, the data frame of saved files, load,
preview for one browser only, and the background render job (its progress and a cancel)."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.camera_path import read_camera_path
from recon.cameras import look_at
from recon.data.normalize import SceneTransform
from recon.viewer.camera import ViewCamera, from_camtoworld

sys.path.insert(0, str(Path(__file__).parent))
from helpers import blob_scene  # noqa: E402
from test_viewer import ProbeMethod  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def view_at(eye, fov=0.8) -> ViewCamera:
    wxyz, pos = from_camtoworld(look_at(np.asarray(eye, float), np.zeros(3)))
    return ViewCamera(tuple(wxyz), tuple(pos), fov, 400, 300)


def fake_client(app, client_id: int = 7):
    """A browser as the viewer sees it (camera, ``atomic``) with its own render panel, registered with ``app``
    without a websocket; returns ``(client, its ClientView)``."""
    import contextlib

    from recon.viewer.app import ClientView
    from recon.viewer.worker import RenderWorker

    class Cam:
        wxyz, position, fov, image_width, image_height = (1.0, 0, 0, 0), (0.0, 0, 0), 0.8, 400, 300

    class Client:
        camera = Cam()

        def atomic(self):
            return contextlib.nullcontext()

    client = Client()
    client.client_id = client_id
    cv = ClientView(client=client, worker=RenderWorker(lambda low: None, lambda f: None))
    app.attach_panel(cv, app.server.gui)  # a real browser's panel is on its client.gui
    app._clients[client_id] = cv
    return client, cv


@pytest.fixture
def app(tmp_path):
    from rich.console import Console

    from recon.viewer.app import ViewerApp

    tf = SceneTransform(look_at(np.zeros(3), np.array([1.0, 0.5, 0.2]))[:3, :3], np.array([0.1, -0.2, 0.3]), 0.5)
    a = ViewerApp(ProbeMethod(), blob_scene(n_views=6, size=32), port=free_port(), console=Console(stderr=True, quiet=True),
                  run_dir=tmp_path / "run", transform=tf)
    yield a
    a.close()


def test_edit_keyframes(app):
    p = app.path_panel
    client, cv = fake_client(app)
    cv.panel.time.value = 0.25  # new keyframes take the time of the browser that adds them
    for i, eye in enumerate([(3, 0, 1), (0, 3, 1), (-3, 0, 1)]):
        assert p.add_keyframe(view_at(eye, fov=0.5 + 0.1 * i), client) == i
    ks = p.keyframes()
    assert len(ks) == 3 and [k.time for k in ks] == [0.25] * 3 and ks[1].fov == pytest.approx(np.degrees(0.6))
    assert p.keyframe.options == ("1", "2", "3") and p.keyframe.value == "3"
    p.select(0)
    p.move(+1)  # reorder: the first keyframe becomes the second
    assert np.allclose(p.keyframes()[1].camtoworld[:3, 3], (3, 0, 1)) and p.selected == 1
    p.kf_fov.value = 70.0  # per-keyframe controls edit the selected keyframe
    p.kf_time.value = 0.9
    assert p.keyframes()[1].fov == 70.0 and p.keyframes()[1].time == 0.9
    p.add_keyframe(view_at((0, -3, 1)), client)  # inserted after the selected one
    assert np.allclose(p.keyframes()[2].camtoworld[:3, 3], (0, -3, 1))
    p.delete_selected()
    assert len(p.keyframes()) == 3 and p.selected == 2  # the next keyframe is selected
    # The scene shows one frustum per keyframe and the curve.
    names = [n.name for n in p._nodes]
    assert names == ["/camera_path/keyframe_0", "/camera_path/keyframe_1", "/camera_path/keyframe_2", "/camera_path/curve"]


def test_save_is_in_the_data_frame_and_loads_back(app, tmp_path):
    p = app.path_panel
    for eye in [(3, 0, 1), (0, 3, 1), (-3, 0, 1)]:
        p.add_keyframe(view_at(eye))
    p.seconds.value, p.fps.value, p.loop.value, p.constant.value = 2.0, 5.0, True, True
    p.name.value = "tour"
    file = p.save_path()
    assert file == tmp_path / "run" / "camera_paths" / "tour.json"
    saved = read_camera_path(file)
    assert len(saved.frames) == 10 and saved.path.loop and saved.path.constant_speed
    tf = app.path_panel._to_file
    np.testing.assert_allclose(saved.path.keyframes[0].camtoworld, tf(p.keyframes()[0].camtoworld[None])[0], atol=1e-9)
    assert not np.allclose(saved.path.keyframes[0].camtoworld[:3, 3], (3, 0, 1))  # not the viewer's frame
    before = p.keyframes()
    p.delete_selected()
    p.loop.value = False
    p.load_path(file)
    assert p.loop.value and len(p.keyframes()) == 3
    for a, b in zip(before, p.keyframes()):
        np.testing.assert_allclose(a.camtoworld, b.camtoworld, atol=1e-9)
    # A bad name or file is a status line, not an exception in viser's callback thread.
    p.name.value = "../evil"
    p._guard(lambda: p.load_path(p.file_for(str(p.name.value))))
    assert "error" in p.status.content and "use letters" in p.status.content


def test_preview_moves_one_browser_only(app):
    """The preview drives the camera and the time of the browser that asked, not its render panel's time."""
    p = app.path_panel
    client, cv = fake_client(app)
    for t, eye in zip([0.0, 1.0], [(3, 0, 1), (0, 3, 1)]):
        cv.panel.time.value = t
        p.add_keyframe(view_at(eye), client)
    try:
        p.show_preview(client, 0.5)
        assert cv.time_override == pytest.approx(0.5) and cv.panel.time.value == 1.0
        f = p.current().evaluate(np.array([0.5]))
        np.testing.assert_allclose(client.camera.position, f.camtoworlds[0, :3, 3])
        cv.panel.time.value = 0.3  # touching the time slider ends the preview's own time
        assert cv.time_override is None
        # "Play preview" moves along the path in the browser that ticked it.
        p._preview_client = client
        p.preview.value = 0.0
        start = tuple(client.camera.position)
        p.play.value = True
        time.sleep(0.6)
        p.play.value = False
        assert 0.05 < p.preview.value < 0.5 and cv.time_override == pytest.approx(p.preview.value, abs=0.05)
        assert tuple(client.camera.position) != start
    finally:
        app._clients.pop(7).panel.close()


def test_render_job_progress_and_errors(tmp_path):
    """The background job reads the child's per-frame lines; a failing child's one-line error is reported."""
    from recon.viewer.path_render import RenderJob

    seen, done = [], []
    job = RenderJob(tmp_path / "no-such-run", tmp_path / "p.json", tmp_path / "out", ("rgb",), "cpu", seen.append, lambda ok, msg: done.append((ok, msg)))
    job.start().wait(120)
    assert done and done[0][0] is False and "does not exist" in done[0][1], done
    job = RenderJob(tmp_path, tmp_path / "p.json", tmp_path / "out", ("rgb",), "cpu", seen.append, lambda ok, msg: done.append((ok, msg)))
    job.cmd = [sys.executable, "-c", "import sys, time\nfor i in range(3): print(f'recon render: frame {i+1}/3 0.1 s/frame eta {2-i} s', file=sys.stderr, flush=True)"]
    job.start().wait(60)
    assert seen[-1] == "rendering frame 3/3, about 0 s left" and done[-1][0] is True


def test_client_dropping_mid_render_breaks_nothing():
    """A browser that vanishes (no websocket goodbye) while its frame is being rendered: the viewer forgets it,
    reports no error, and the next browser is served."""
    import asyncio
    import threading

    from rich.console import Console

    from recon.viewer.app import ViewerApp
    from recon.viewer.headless import HeadlessClient

    class SlowProbe(ProbeMethod):
        def __init__(self):
            super().__init__()
            self.rendering = threading.Event()
            self.started = 0

        def render(self, camera, *a, **kw):
            self.started += 1
            self.rendering.set()
            time.sleep(0.5)
            return super().render(camera, *a, **kw)

    method = SlowProbe()
    app = ViewerApp(method, blob_scene(n_views=6, size=32), port=free_port(), console=Console(stderr=True, quiet=True))

    async def scenario():
        async with HeadlessClient(app.port, canvas=(320, 240)) as a:
            await a.look(look_at(np.array([3.0, 0, 1]), np.zeros(3)))
            await asyncio.get_running_loop().run_in_executor(None, method.rendering.wait, 20.0)
            gone = next(iter(app.clients.values())).client
            a.abort()  # mid-render
        deadline = time.monotonic() + 10
        while app.clients and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not app.clients, "the viewer still holds the departed browser"
        app.preview_camera(gone, np.eye(4), 50.0, 0.5)  # driving a departed browser is a no-op
        calls = method.started
        async with HeadlessClient(app.port, canvas=(320, 240)) as b:
            await b.look(look_at(np.array([0.0, 3, 1]), np.zeros(3)))
            assert await b.next_frame(30.0), "the next browser got no frame"
        return calls

    try:
        calls = asyncio.run(scenario())
        assert calls >= 1 and method.started > calls
        assert not app._errors_seen, app._errors_seen
    finally:
        app.close()


def test_each_browser_has_its_own_render_settings():
    """Two browsers on one run: what one sets in its Render and Time panels (output, time) changes its own images
    only; the other keeps its settings and its picture."""
    import asyncio

    import imageio.v3 as iio
    from rich.console import Console

    from recon.viewer.app import ViewerApp
    from recon.viewer.headless import HeadlessClient

    method = ProbeMethod()  # its rgb image is (time, env rotation / 360, sunset?) everywhere
    app = ViewerApp(method, blob_scene(n_views=6, size=32), port=free_port(), console=Console(stderr=True, quiet=True))

    async def until(cond, what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.05)

    async def fresh_red(client, eye) -> float:
        """Move ``client``'s camera, wait for the frame of that view and return its mean red in [0, 1]."""
        await client.look(look_at(np.asarray(eye, float), np.zeros(3)))
        assert await client.next_frame(30.0), "no frame"
        await asyncio.sleep(0.5)  # the full-size frame follows the low-resolution one of a moving camera
        return float(iio.imread(client.last_image)[..., 0].mean()) / 255.0

    async def scenario():
        async with HeadlessClient(app.port, canvas=(320, 240)) as a:
            await a.look(look_at(np.array([3.0, 0, 1]), np.zeros(3)))
            await until(lambda: len(app.clients) == 1 and "Time" in a.controls and "Output" in a.controls, "A got no render panel")
            cv_a = next(iter(app.clients.values()))
            async with HeadlessClient(app.port, canvas=(320, 240)) as b:
                await b.look(look_at(np.array([0.0, 3, 1]), np.zeros(3)))
                await until(lambda: len(app.clients) == 2 and "Time" in b.controls, "B got no render panel")
                cv_b = next(cv for cv in app.clients.values() if cv is not cv_a)
                assert cv_a.panel is not cv_b.panel and a.controls["Time"] != b.controls["Time"]  # two panels

                assert await a.set("Time", 0.8)
                await until(lambda: cv_a.panel.time.value == 0.8, "A's time did not arrive")
                assert abs(await fresh_red(a, (3.0, 0.2, 1)) - 0.8) < 0.05  # A sees t = 0.8 ...
                assert cv_b.panel.time.value == 0.0
                assert abs(await fresh_red(b, (0.2, 3.0, 1))) < 0.05  # ... B still t = 0

                assert await b.set("Output", "depth")
                await until(lambda: cv_b.panel.output.value == "depth", "B's output did not arrive")
                assert cv_a.panel.output.value == "rgb"
                await until(lambda: any(c["outputs"][0] == "depth" for c in method.calls), "B rendered no depth")
                await until(lambda: cv_b.worker.idle, "B's depth render did not finish")
                method.calls.clear()
                assert abs(await fresh_red(a, (3.0, -0.2, 1)) - 0.8) < 0.05  # A still rgb at t = 0.8
                assert {c["outputs"][0] for c in method.calls} == {"rgb"}  # (depth rides along for occlusion)
                method.calls.clear()
                await b.look(look_at(np.array([-0.2, 3.0, 1]), np.zeros(3)))
                assert await b.next_frame(30.0)
                await until(lambda: cv_b.worker.idle, "B's render did not finish")
                assert {c["outputs"][0] for c in method.calls} == {"depth"}  # and B still depth
            await until(lambda: len(app.clients) == 1, "B was not forgotten")
            assert cv_a.panel.output.value == "rgb" and cv_a.panel.time.value == 0.8

    try:
        asyncio.run(scenario())
        assert not app._errors_seen, app._errors_seen
    finally:
        app.close()
