"""The viewer application: a viser server showing one method, for ``recon view RUN`` and live training.

:class:`ViewerApp` wires the pieces together, generic over methods:

- :mod:`.server` starts viser (next free port) and prints the URL and the SSH port-forward;
- :mod:`.gui` builds the panels from what the method declares (``render_outputs``, ``is_dynamic``,
  ``viewer_options()``, ``capabilities.gaussians`` / ``.mesh``);
- every connected browser gets its own :class:`~.gui.RenderPanel` (output, resolution, time, the method's options:
  one person can look at depth at t = 0.8 while another looks at rgb at t = 0.1) and a
  :class:`~.worker.RenderWorker` thread that renders its camera with those settings on demand through
  :class:`~.render.ViewRenderer` and shows the result as the scene's background image;
- :mod:`.scene_nodes` adds the training cameras (click to jump), client-side splats and meshes;
- :mod:`.path_panel` edits, previews, saves and renders camera paths (:mod:`recon.camera_path`).

Callbacks from viser never render; they ask a worker for a new frame and return.
"""

from __future__ import annotations

import datetime as _dt
import io
import math
import threading
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from rich.console import Console

from .camera import ViewCamera, from_camtoworld, look_at_point, scene_up, vertical_fov
from .gui import MetricsPanel, RenderPanel, TrainingPanel, ViewPanel
from .path_panel import CameraPathPanel
from .render import RenderSettings, ViewRenderer
from .scene_nodes import MeshNode, SplatNode, TrainingCameras, camera_extent
from .server import start_server, stop_server
from .worker import Frame, RenderWorker

# A browser that leaves while its frame is being rendered makes viser warn once the frame is sent; that is normal.
warnings.filterwarnings("ignore", message="Queued a BackgroundImageMessage on a closed connection")


@dataclass
class ClientView:
    """Per-browser state: its render settings, its render worker and the last frame it was sent."""

    client: object
    worker: RenderWorker
    panel: RenderPanel | None = None  # its own render settings (on viser's client.gui)
    last_frame: Frame | None = None
    last_view: ViewCamera | None = None
    full_frames: int = 0  # full-resolution frames published (tests wait on this)
    time_override: float | None = None  # this browser previews a camera path at its own time
    changed: threading.Condition = field(default_factory=threading.Condition)


class ViewerApp:
    """A running viewer for ``method`` (with the normalised ``scene`` it was trained on).

    Args:
        method: any :class:`~recon.methods.base.Method`.
        scene: the normalised scene (training cameras, thumbnails, background).
        host, port: where to listen (the next free port when ``port`` is taken).
        console: where messages go.
        output_dir: folder for "Save view as PNG" (None: the PNG is only offered as a browser download).
        lock: lock held around every use of the method (shared with the training step when live).
        max_side: initial full-size render resolution (default: 1024 on CUDA, 512 on CPU).
        on_pause: when given, a training panel with a pause/resume button is shown; called with the new state.
        run_dir: the run on disk (camera paths are saved in RUN/camera_paths and rendered from it); None: paths
            can only be downloaded.
        transform: the run's :class:`~recon.data.normalize.SceneTransform` (camera path files hold the data frame).
    """

    def __init__(
        self,
        method,
        scene,
        *,
        host: str = "127.0.0.1",
        port: int = 7007,
        console: Console | None = None,
        output_dir: Path | None = None,
        lock=None,
        max_side: int | None = None,
        on_pause=None,
        label: str = "recon",
        run_dir: Path | None = None,
        transform=None,
    ):
        self.method = method
        self.scene = scene
        self.console = console or Console(stderr=True)
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.lock = lock if lock is not None else threading.RLock()
        self.renderer = ViewRenderer(method, self.lock)
        self._clients: dict[int, ClientView] = {}
        self._clients_lock = threading.Lock()
        self._client_side = False  # splats rendered in the browser: server rendering paused
        self._errors_seen: set[str] = set()
        self._closed = False

        self.server = start_server(host, port, self.console, label=label)
        self.port = self.server.get_port()
        if max_side is None:
            max_side = 1024 if method.device_.type == "cuda" else 512

        # Start where the first training camera is, with the scene's up direction for the orbit controls.
        cams = scene.cameras
        train = np.asarray(scene.split("train"))
        first = int(train[0])
        fov0 = vertical_fov(cams, first)
        up = scene_up(cams[train])
        c2w = cams.camtoworlds[first].double().numpy()
        target = look_at_point(c2w)
        start = start_position(c2w[:3, 3], target, up)
        self.server.scene.set_up_direction(tuple(float(u) for u in up))
        self.server.initial_camera.position = tuple(start)
        self.server.initial_camera.look_at = tuple(target)
        self.server.initial_camera.up = tuple(float(u) for u in up)
        self.server.initial_camera.fov = fov0

        gui = self.server.gui
        self.training_panel = TrainingPanel(gui, on_pause) if on_pause is not None else None
        # What each browser's render panel starts with (it is built when the browser connects).
        self._panel_defaults = (scene.background, math.degrees(fov0), max_side)
        self._splat_time: float | None = 0.0 if method.is_dynamic else None  # the time the browser-side splats show
        self.view_panel = ViewPanel(
            gui,
            has_gaussians=method.capabilities.gaussians,
            has_mesh=method.capabilities.mesh,
            has_depth="depth" in self.renderer.outputs,
        )
        self.training_cameras = TrainingCameras(self.server, scene, self.jump_to_camera)
        identity = lambda c2w: c2w  # noqa: E731
        first_w, first_h = int(cams.widths[first]), int(cams.heights[first])
        self.path_panel = CameraPathPanel(
            self.server,
            is_dynamic=method.is_dynamic,
            scale=0.05 * camera_extent(scene),
            get_time=self._time_of,
            on_preview=self.preview_camera,
            path_dir=None if run_dir is None else Path(run_dir) / "camera_paths",
            to_file=identity if transform is None else transform.invert_camtoworlds,
            from_file=identity if transform is None else transform.apply_camtoworlds,
            run_dir=None if run_dir is None else Path(run_dir),
            device=method.device_.type,
            output=self._output_of,
            initial_size=(first_w + first_w % 2, first_h + first_h % 2),
        )
        self.splats = SplatNode(self.server)
        self.mesh = MeshNode(self.server)
        # Sending splats can take a moment for large models: a latest-wins job thread, like the render workers.
        self._splat_job = RenderWorker(lambda _low: self._send_splats(), lambda _f: None, name="recon-splats", on_error=self._report_error).start()
        self._wire_view_panel()

        self.server.on_client_connect(self._connect)
        self.server.on_client_disconnect(self._disconnect)

    # ------------------------------------------------------------------ clients
    def _connect(self, client) -> None:
        cv = ClientView(client=client, worker=None)  # type: ignore[arg-type]
        self.attach_panel(cv, client.gui)
        cv.worker = RenderWorker(
            lambda low, cv=cv: self._render_for(cv, low),
            lambda frame, cv=cv: self._publish(cv, frame),
            name=f"recon-render-{client.client_id}",
            on_error=lambda tb, client=client: self._report_error(tb, client),
        )
        with self._clients_lock:
            self._clients[client.client_id] = cv
        cv.worker.start()
        client.camera.on_update(lambda _cam, cv=cv: cv.worker.request(moving=True))
        cv.worker.request(moving=False)  # the first camera message arrived before this callback ran

    def attach_panel(self, cv: ClientView, gui) -> RenderPanel:
        """Build ``cv``'s own render panel on ``gui`` (its browser's ``client.gui``)."""
        background, fov_deg, max_side = self._panel_defaults
        cv.panel = RenderPanel(gui, self.method, background, fov_deg, max_side,
                               on_change=lambda what, cv=cv: self._settings_changed(cv, what),
                               on_fov=lambda fov, cv=cv: self._set_fov(cv, fov))
        return cv.panel

    def _disconnect(self, client) -> None:
        with self._clients_lock:
            cv = self._clients.pop(client.client_id, None)
        if cv is not None:
            cv.worker.stop(timeout=0.0)
            if cv.panel is not None:
                cv.panel.close()
        self.path_panel.forget_client(client.client_id)

    @property
    def clients(self) -> dict[int, ClientView]:
        with self._clients_lock:
            return dict(self._clients)

    @property
    def has_clients(self) -> bool:
        return bool(self._clients)  # a dict's truth value is atomic; no lock needed on the training thread

    def request_all(self, moving: bool = False) -> None:
        """Re-render every client's view (settings changed, model changed)."""
        for cv in self.clients.values():
            cv.worker.request(moving=moving)

    # ------------------------------------------------------------------ rendering
    def _render_for(self, cv: ClientView, low: bool) -> Frame | None:
        if self._client_side or self._closed:
            return None
        view = ViewCamera.from_handle(cv.client.camera)
        panel = cv.panel
        side = int(panel.move_side.value if low else panel.max_side.value)
        # Never render far beyond what the canvas can show (2x covers high-DPI screens).
        side = min(side, 2 * max(view.width, view.height))
        occlude = self.view_panel.occlude is not None and bool(self.view_panel.occlude.value)
        image, depth = self.renderer.render_with_depth(view, side, self._settings_of(cv), depth=occlude)
        cv.last_view = view
        return Frame(image=image, low=low, seconds=0.0, depth=depth)

    @staticmethod
    def _settings_of(cv: ClientView) -> RenderSettings:
        """What ``cv``'s browser shows: its panel's settings, at a path preview's time while one is shown."""
        settings = cv.panel.settings()
        if cv.time_override is not None and settings.time is not None:
            settings = replace(settings, time=cv.time_override)
        return settings

    def _publish(self, cv: ClientView, frame: Frame) -> None:
        if self._client_side or self._closed or cv.client.client_id not in self._clients:
            return  # splats mode, shutting down, or the browser left while we rendered
        quality = int(cv.panel.jpeg.value)
        cv.client.scene.set_background_image(frame.image, format="jpeg", jpeg_quality=min(quality, 60) if frame.low else quality, depth=frame.depth)
        with cv.changed:
            cv.last_frame = frame
            if not frame.low:
                cv.full_frames += 1
            cv.changed.notify_all()

    def _settings_changed(self, cv: ClientView, what: str) -> None:
        if what == "time":  # touching the time slider ends this browser's path preview (and its own time)
            cv.time_override = None
        # While the time slider plays, render at the "moving" size so playback stays fluid.
        cv.worker.request(moving=cv.panel.playing)
        if what == "time" and self._client_side:  # the splats in the browsers follow the latest time set
            self._splat_time = cv.panel.settings().time
            self._splat_job.request()

    def _set_fov(self, cv: ClientView, fov: float) -> None:
        cv.client.camera.fov = fov

    def panel_of(self, client) -> RenderPanel | None:
        """``client``'s render panel (None: no client, or one that has left)."""
        cv = self.clients.get(client.client_id) if client is not None else None
        return None if cv is None else cv.panel

    def _time_of(self, client) -> float | None:
        panel = self.panel_of(client)
        return None if panel is None else panel.settings().time

    def _output_of(self, client) -> str:
        panel = self.panel_of(client)
        return str(panel.output.value) if panel is not None else self.method.render_outputs[0]

    def jump_to_camera(self, client, index: int) -> None:
        """Move ``client``'s camera onto training view ``index`` (and its time, for dynamic scenes)."""
        cams = self.scene.cameras
        c2w = cams.camtoworlds[index].double().numpy()
        wxyz, pos = from_camtoworld(c2w)
        with client.atomic():
            client.camera.position = pos
            client.camera.wxyz = wxyz
            client.camera.fov = vertical_fov(cams, index)
        panel = self.panel_of(client)
        if cams.times is not None and panel is not None and panel.time is not None:
            panel.time.value = float(cams.times[index])

    def preview_camera(self, client, camtoworld: np.ndarray, fov_deg: float, time: float | None) -> None:
        """Put ``client``'s camera on a camera path's pose (and, for dynamic scenes, render it at ``time``; the
        other browsers keep their own view and the panel's time)."""
        cv = self.clients.get(client.client_id)
        if cv is None:  # the browser left: nothing to preview
            return
        wxyz, pos = from_camtoworld(camtoworld)
        try:
            with client.atomic():
                client.camera.wxyz = wxyz
                client.camera.position = pos
                client.camera.fov = math.radians(fov_deg)
        except Exception:  # the browser left meanwhile: nothing to preview
            return
        cv.time_override = time
        cv.worker.request(moving=True)

    def _report_error(self, tb: str, client=None) -> None:
        last = tb.strip().splitlines()[-1]
        if last not in self._errors_seen:  # each distinct error once, with its traceback
            self._errors_seen.add(last)
            self.console.print(f"[red]viewer: render failed[/]\n{tb}")
        if client is not None:
            try:
                client.add_notification("Render failed", last, color="red", auto_close_seconds=8.0)
            except Exception:
                pass

    # ------------------------------------------------------------------ view panel
    def _wire_view_panel(self) -> None:
        vp = self.view_panel

        @vp.save.on_click
        def _(event) -> None:
            client = event.client or next((cv.client for cv in self.clients.values()), None)
            if client is not None:
                self.save_view(client)

        @vp.show_cameras.on_update
        def _(_e) -> None:
            self.training_cameras.set_visible(bool(vp.show_cameras.value))

        if vp.occlude is not None:
            vp.occlude.on_update(lambda _e: self.request_all())

        if vp.splats is not None:

            @vp.splats.on_update
            def _(event) -> None:
                if vp.splats.value:
                    panel = self.panel_of(event.client)  # the splats show the time of the browser that asked
                    if panel is not None and panel.time is not None:
                        self._splat_time = float(panel.time.value)
                    self._splat_job.request()
                else:
                    self._client_side = False
                    self.splats.hide()
                    vp.info.content = ""
                    self.request_all()

        if vp.mesh is not None:

            @vp.mesh.on_update
            def _(_e) -> None:
                if not vp.mesh.value:
                    self.mesh.hide()
                    return
                vp.info.content = "extracting the mesh ..."
                try:
                    nv, nf = self.mesh.show(self.method, self.lock)
                    vp.info.content = f"mesh: {nv:,} vertices, {nf:,} faces"
                except Exception as exc:  # a method whose mesh extraction fails keeps the rest of the viewer
                    vp.info.content = f"mesh failed: {type(exc).__name__}: {exc}"

    def _send_splats(self) -> None:
        vp = self.view_panel
        if vp.splats is None or not vp.splats.value:
            return None
        n = self.splats.show(self.method, self._splat_time, self.lock)
        first = not self._client_side
        self._client_side = True
        if first:
            for cv in self.clients.values():
                cv.client.scene.set_background_image(None)
        vp.info.content = f"{n:,} splats rendered in the browser (view-independent colour)"
        return None

    def refresh_splats(self) -> None:
        """Re-send the splats if they are shown (the model changed)."""
        if self._client_side:
            self._splat_job.request()

    def save_view(self, client) -> Path | None:
        """Render ``client``'s view at full resolution; write it to ``output_dir`` and offer it as a download."""
        from recon.io.images import save_image

        view = ViewCamera.from_handle(client.camera)
        cv = self.clients.get(client.client_id)
        if cv is None:  # the browser left
            return None
        settings = self._settings_of(cv)
        image = self.renderer.render(view, int(cv.panel.max_side.value), settings)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")[:-3]
        name = f"view-{stamp}-{settings.output}.png"
        path = None
        if self.output_dir is not None:
            path = self.output_dir / name
            save_image(image.astype(np.float32) / 255.0, path)
            self.console.print(f"[bold]viewer[/]: saved {path}")
            client.add_notification("View saved", str(path), auto_close_seconds=5.0)
        import imageio.v3 as iio

        buf = io.BytesIO()
        iio.imwrite(buf, image, extension=".png")
        client.send_file_download(name, buf.getvalue())
        return path

    # ------------------------------------------------------------------ life cycle
    def wait_for_full_frame(self, count: int = 1, timeout: float = 30.0) -> ClientView | None:
        """Block until some client has received ``count`` full-resolution frames (tests, scripts)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for cv in self.clients.values():
                if cv.full_frames >= count:
                    return cv
            time.sleep(0.05)
        return None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for cv in self.clients.values():
            cv.worker.stop(timeout=2.0)
            if cv.panel is not None:
                cv.panel.close()
        self._splat_job.stop(timeout=2.0)
        self.training_cameras.close()
        self.path_panel.close()
        stop_server(self.server)


def start_position(eye: np.ndarray, target: np.ndarray, up: np.ndarray, raise_deg: float = 20.0, back: float = 1.3) -> np.ndarray:
    """Where the browser camera starts: the first training camera's view of ``target``, raised by ``raise_deg``
    around it and moved ``back`` times further out, so that this camera's own frustum (and thumbnail) sit below
    the line of sight instead of covering the model."""
    v = np.asarray(eye, np.float64) - target
    d = float(np.linalg.norm(v))
    if d < 1e-9:
        return np.asarray(eye, np.float64)
    v /= d
    side = np.asarray(up, np.float64) - float(np.dot(up, v)) * v
    if np.linalg.norm(side) < 1e-6:  # looking straight down the up axis: just move back
        return target + back * d * v
    side /= np.linalg.norm(side)
    a = math.radians(raise_deg)
    return target + back * d * (math.cos(a) * v + math.sin(a) * side)


def serve_run(run, host: str = "127.0.0.1", port: int = 7007, console: Console | None = None) -> None:
    """``recon view RUN``: serve a loaded run (:class:`recon.engine.run.LoadedRun`) until Ctrl-C."""
    console = console or Console(stderr=True)
    app = None
    try:
        app = ViewerApp(run.method, run.scene, host=host, port=port, console=console, output_dir=Path(run.run_dir) / "renders" / "viewer", label=f"recon · {run.method.name}",
                        run_dir=Path(run.run_dir), transform=run.transform)
        MetricsPanel(app.server.gui, run.run_dir)
        console.print(f"[bold]viewer[/]: {run.method.name} on {run.scene.name}, step {run.step}; Ctrl-C to stop")
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:  # Ctrl-C, also while starting up: a clean stop, exit code 0
        pass
    finally:
        if app is not None:
            app.close()
