"""The "Camera path" panel: keyframes from browser views, the path drawn in the scene, a preview, save / load
(nerfstudio's ``camera_path.json``) and a background render to MP4.

The path itself (splines, file format) is :mod:`recon.camera_path`; this module only edits a
:class:`~recon.camera_path.CameraPath` in the run's normalised frame and converts it to the data frame when it is
written (and back when read), like every other recon export.

The panel is shared by every browser connected to the viewer (viser's global GUI), but the preview only moves
the camera of the browser that drives it, and renders that browser's view at the path's time, so the others
keep looking around.
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from recon.camera_path import CameraPath, Keyframe, read_camera_path, write_camera_path
from recon.errors import ReconError

from .camera import ViewCamera, from_camtoworld
from .gui import ORDER
from .path_render import RenderJob

KEY_COLOR, SELECTED_COLOR, PREVIEW_COLOR, CURVE_COLOR = (220, 40, 60), (250, 200, 30), (40, 200, 90), (70, 130, 230)


class CameraPathPanel:
    """Edit, preview, save, load and render a camera path.

    Args:
        server: the viser server.
        is_dynamic: the method has a time (keyframes get one).
        scale: frustum size (a fraction of the training cameras' extent).
        get_time: ``get_time(client)``: that browser's render time (the default time of the keyframes it adds), or
            None (no such browser, or a static scene).
        on_preview: ``on_preview(client, camtoworld [4, 4], fov_deg, time)``: show the path's camera in one browser.
        path_dir: folder for path files (``RUN/camera_paths``), or None (save only offers a download).
        to_file, from_file: ``[N, 4, 4] -> [N, 4, 4]`` pose maps normalised frame -> file (data) frame and back.
        run_dir, device: what "Render video" renders (None: no render button, e.g. during live training).
        output: ``output(client) -> str``: the output that browser shows, rendered when it clicks "Render video"
            (``client`` None: the method's first output)
    """

    def __init__(self, server, *, is_dynamic: bool, scale: float, get_time: Callable[[object], float | None],
                 on_preview: Callable, path_dir: Path | None, to_file, from_file, run_dir: Path | None = None,
                 device: str = "cpu", output: Callable[[object], str] = lambda _client: "rgb", initial_size: tuple[int, int] = (640, 480)):
        self.server = server
        self.is_dynamic = is_dynamic
        self.scale = scale
        self._get_time, self._on_preview = get_time, on_preview
        self.path_dir, self._to_file, self._from_file = path_dir, to_file, from_file
        self.run_dir, self.device, self._output = run_dir, device, output
        self.path = CameraPath(width=initial_size[0], height=initial_size[1])
        self.selected: int | None = None
        self.job: RenderJob | None = None
        self._lock = threading.RLock()
        self._syncing = False  # set while the panel writes its own controls (their callbacks must not edit)
        self._advancing = False  # set while the play thread moves the preview slider
        self._nodes: list = []
        self._preview_client = None
        self._stop = threading.Event()
        gui = server.gui
        with gui.add_folder("Camera path", order=ORDER["Camera path"]):
            self.add = gui.add_button("Add keyframe", icon="plus", hint="Adds your current view (and, for dynamic scenes, the current time) after the selected keyframe.")
            self.keyframe = gui.add_dropdown("Keyframe", ("none",), initial_value="none", hint="The keyframe to edit (or click its frustum).")
            self.set_view = gui.add_button("Set to my view", hint="Move the selected keyframe to your current view.")
            self.goto = gui.add_button("Go to keyframe", hint="Move your camera onto the selected keyframe.")
            self.earlier = gui.add_button("Move earlier")
            self.later = gui.add_button("Move later")
            self.delete = gui.add_button("Delete keyframe", color="red")
            self.kf_fov = gui.add_slider("Keyframe FOV", min=5.0, max=150.0, step=0.5, initial_value=50.0, hint="Vertical field of view of the selected keyframe (degrees).")
            self.kf_time = gui.add_slider("Keyframe time", min=0.0, max=1.0, step=0.001, initial_value=0.0, hint="Scene time of the selected keyframe.") if is_dynamic else None
            self.seconds = gui.add_number("Duration (s)", initial_value=4.0, min=0.1, max=600.0, step=0.1)
            self.fps = gui.add_number("FPS", initial_value=24.0, min=1.0, max=120.0, step=1.0)
            self.width = gui.add_number("Width", initial_value=int(initial_size[0]), min=16, max=4096, step=2)
            self.height = gui.add_number("Height", initial_value=int(initial_size[1]), min=16, max=4096, step=2)
            self.tension = gui.add_slider("Smoothness (tension)", min=0.0, max=1.0, step=0.05, initial_value=0.0, hint="0: Catmull-Rom through the keyframes; 1: stop at each keyframe.")
            self.loop = gui.add_checkbox("Loop", initial_value=False, hint="Close the path: it comes back to the first keyframe.")
            self.constant = gui.add_checkbox("Constant speed", initial_value=False, hint="Same speed along the whole curve, instead of the same time per segment.")
            self.preview = gui.add_slider("Preview", min=0.0, max=1.0, step=0.001, initial_value=0.0, hint="Moves your camera along the path.")
            self.play = gui.add_checkbox("Play preview", initial_value=False, hint="Plays the path in your view at its duration.")
            self.name = gui.add_text("Path name", initial_value="path", hint="Saved as RUN/camera_paths/<name>.json (nerfstudio's format).")
            self.save = gui.add_button("Save path", icon="device-floppy")
            self.load = gui.add_button("Load path", icon="folder-open", hint="Loads RUN/camera_paths/<name>.json (also nerfstudio's files).")
            self.render = gui.add_button("Render video", icon="video", disabled=run_dir is None,
                                         hint="Runs `recon render RUN --camera-path` in the background." if run_dir else "Available in `recon view RUN`.")
            self.cancel = gui.add_button("Cancel render", visible=False)
            self.status = gui.add_markdown("")
        self._wire()
        self._player = threading.Thread(target=self._play_loop, name="recon-path-play", daemon=True)
        self._player.start()

    # ------------------------------------------------------------------ state
    def keyframes(self) -> list[Keyframe]:
        with self._lock:
            return list(self.path.keyframes)

    def current(self) -> CameraPath:
        """The path with the panel's current settings."""
        with self._lock:
            return replace(self.path, seconds=float(self.seconds.value), fps=float(self.fps.value), tension=float(self.tension.value),
                           loop=bool(self.loop.value), constant_speed=bool(self.constant.value),
                           width=int(self.width.value), height=int(self.height.value))

    def add_keyframe(self, view: ViewCamera, client=None) -> int:
        """Insert ``view`` after the selected keyframe (or at the end), at ``client``'s time; returns its index."""
        t = (self._get_time(client) or 0.0) if self.is_dynamic else None
        kf = Keyframe(view.camtoworld(), math.degrees(view.fov), None if t is None else float(t))
        with self._lock:
            at = len(self.path.keyframes) if self.selected is None else self.selected + 1
            self.path.keyframes.insert(at, kf)
            self.selected = at
        self.refresh()
        return at

    def select(self, index: int | None) -> None:
        with self._lock:
            self.selected = index
        self.refresh()

    def _edit(self, fn) -> None:
        """Apply ``fn(keyframes, selected) -> new selected`` under the lock, then redraw."""
        with self._lock:
            if self.selected is None or self.selected >= len(self.path.keyframes):
                return
            self.selected = fn(self.path.keyframes, self.selected)
        self.refresh()

    def move(self, offset: int) -> None:
        def fn(ks, i):
            j = min(max(i + offset, 0), len(ks) - 1)
            ks[i], ks[j] = ks[j], ks[i]
            return j

        self._edit(fn)

    def delete_selected(self) -> None:
        def fn(ks, i):
            ks.pop(i)
            return min(i, len(ks) - 1) if ks else None

        self._edit(fn)

    def set_selected(self, **changes) -> None:
        def fn(ks, i):
            ks[i] = replace(ks[i], **changes)
            return i

        self._edit(fn)

    # ------------------------------------------------------------------ drawing
    def refresh(self) -> None:
        """Sync the controls with the keyframes and redraw the frustums and the curve."""
        with self._lock:
            ks, sel = list(self.path.keyframes), self.selected
            self._syncing = True
            try:
                names = tuple(str(i + 1) for i in range(len(ks))) or ("none",)
                self.keyframe.options = names
                self.keyframe.value = str(sel + 1) if sel is not None else names[0]
                if sel is not None:
                    self.kf_fov.value = float(ks[sel].fov)
                    if self.kf_time is not None and ks[sel].time is not None:
                        self.kf_time.value = float(ks[sel].time)
            finally:
                self._syncing = False
            for node in self._nodes:
                node.remove()
            self._nodes = []
            aspect = float(self.width.value) / max(float(self.height.value), 1.0)
            for i, k in enumerate(ks):
                wxyz, pos = from_camtoworld(k.camtoworld)
                h = self.server.scene.add_camera_frustum(
                    f"/camera_path/keyframe_{i}", fov=math.radians(k.fov), aspect=aspect, scale=self.scale, thickness=0.08 * self.scale,
                    color=SELECTED_COLOR if i == sel else KEY_COLOR, wxyz=wxyz, position=pos,
                )
                h.on_click(lambda _e, i=i: self.select(i))
                self._nodes.append(h)
            if len(ks) >= 2:
                path = self.current()
                n = 24 * (len(ks) if path.loop else len(ks) - 1) + 1
                pts = path.evaluate(np.linspace(0.0, 1.0, n)).camtoworlds[:, :3, 3]
                self._nodes.append(self.server.scene.add_spline_catmull_rom(
                    "/camera_path/curve", points=pts, curve_type="catmullrom", tension=0.5, thickness=0.03 * self.scale, color=CURVE_COLOR))
            self.status_hint()

    def status_hint(self) -> None:
        if self.job is not None and self.job.running:
            return
        n = len(self.path.keyframes)
        path = self.current()
        self.status.content = (f"{n} keyframe{'s' if n != 1 else ''}" + (f" · {path.num_frames} frames at {path.width}x{path.height}" if n >= 2 else " · add at least 2"))

    def show_preview(self, client, fraction: float) -> None:
        """Show the path's camera at ``fraction`` in ``client``'s view (and a frustum where it is)."""
        with self._lock:
            if len(self.path.keyframes) < 2:
                return
            path = self.current()
        f = path.evaluate(np.array([fraction]))
        wxyz, pos = from_camtoworld(f.camtoworlds[0])
        self.server.scene.add_camera_frustum("/camera_path/preview", fov=math.radians(float(f.fovs[0])), aspect=path.width / path.height,
                                             scale=1.5 * self.scale, thickness=0.08 * self.scale, color=PREVIEW_COLOR, wxyz=wxyz, position=pos)
        if client is not None:
            self._on_preview(client, f.camtoworlds[0], float(f.fovs[0]), None if f.times is None else float(f.times[0]))

    def _play_loop(self) -> None:
        last = time.perf_counter()
        while not self._stop.wait(1.0 / 15.0):
            now = time.perf_counter()
            if self.play.value and len(self.path.keyframes) >= 2:
                frac = float(self.preview.value) + (now - last) / max(float(self.seconds.value), 0.1)
                frac = frac % 1.0 if self.loop.value or frac <= 1.0 else 0.0
                self._advancing = True  # its own flag: a user's edit on another thread must not be ignored meanwhile
                try:
                    self.preview.value = round(frac, 3)
                finally:
                    self._advancing = False
                self.show_preview(self._preview_client, frac)
            last = now

    # ------------------------------------------------------------------ files and rendering
    def file_for(self, name: str) -> Path:
        if not re.fullmatch(r"[\w.-]+", name):
            raise ReconError(f"path name {name!r}: use letters, digits, '.', '-' and '_' only")
        return self.path_dir / f"{name.removesuffix('.json')}.json"

    def save_path(self, client=None) -> Path | None:
        """Write the path (data frame) to ``path_dir`` and offer it to ``client`` as a download."""
        path = self.current().mapped(self._to_file)
        file = None
        if self.path_dir is not None:
            file = write_camera_path(path, self.file_for(str(self.name.value)))
            self.status.content = f"saved {file}"
        if client is not None:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                data = write_camera_path(path, Path(tmp) / "camera_path.json").read_bytes()
            client.send_file_download(f"{self.name.value}.json", data)
        return file

    def load_path(self, file: Path, client=None) -> None:
        """Load ``file`` for editing (a path without times gets ``client``'s time on a dynamic scene)."""
        pf = read_camera_path(file)
        if pf.path is None:
            raise ReconError("has no keyframes to edit (only sampled cameras); render it with recon render --camera-path", file)
        path = pf.path.mapped(self._from_file)
        if not self.is_dynamic:
            path = replace(path, keyframes=[replace(k, time=None) for k in path.keyframes])
        elif not path.is_dynamic:
            t = float(self._get_time(client) or 0.0)
            path = replace(path, keyframes=[replace(k, time=t) for k in path.keyframes])
        with self._lock:
            self._syncing = True
            try:
                self.seconds.value, self.fps.value, self.tension.value = path.seconds, path.fps, path.tension
                self.loop.value, self.constant.value = path.loop, path.constant_speed
                self.width.value, self.height.value = path.width, path.height
            finally:
                self._syncing = False
            self.path = path
            self.selected = 0
        self.refresh()
        self.status.content = f"loaded {file} ({len(path.keyframes)} keyframes)"

    def start_render(self, client=None) -> RenderJob | None:
        """Save the path and render it with ``recon render`` in the background (the output ``client`` shows)."""
        if self.run_dir is None or (self.job is not None and self.job.running):
            return None
        file = self.save_path()
        name = Path(file).stem
        self.render.disabled, self.cancel.visible = True, True
        self.status.content = "starting the render ..."

        def progress(text: str) -> None:
            self.status.content = text

        def done(ok: bool, text: str) -> None:
            self.render.disabled, self.cancel.visible = False, False
            self.status.content = text if ok else f"**render failed**: {text}" if text != "render cancelled" else text

        self.job = RenderJob(self.run_dir, file, self.run_dir / "renders" / name, (self._output(client),), self.device, progress, done).start()
        return self.job

    def _guard(self, fn, client=None) -> None:
        """Run a GUI action; a user error ends up in the status line (and as a notification), never as a crash."""
        try:
            fn()
        except ReconError as exc:
            self.status.content = f"**error**: {exc}"
            if client is not None:
                try:
                    client.add_notification("Camera path", str(exc), color="red", auto_close_seconds=8.0)
                except Exception:
                    pass

    def _wire(self) -> None:
        def view_of(event):
            return ViewCamera.from_handle(event.client.camera) if event.client is not None else None

        @self.add.on_click
        def _(event) -> None:
            if event.client is not None:
                self.add_keyframe(view_of(event), event.client)

        @self.keyframe.on_update
        def _(_e) -> None:
            if not self._syncing and str(self.keyframe.value).isdigit():
                self.select(int(self.keyframe.value) - 1)

        @self.set_view.on_click
        def _(event) -> None:
            if event.client is not None:
                view = view_of(event)
                self.set_selected(camtoworld=view.camtoworld(), fov=math.degrees(view.fov))

        @self.goto.on_click
        def _(event) -> None:
            with self._lock:
                k = self.path.keyframes[self.selected] if self.selected is not None else None
            if k is not None and event.client is not None:
                self._on_preview(event.client, k.camtoworld, k.fov, k.time)

        self.earlier.on_click(lambda _e: self.move(-1))
        self.later.on_click(lambda _e: self.move(+1))
        self.delete.on_click(lambda _e: self.delete_selected())
        self.kf_fov.on_update(lambda _e: None if self._syncing else self.set_selected(fov=float(self.kf_fov.value)))
        if self.kf_time is not None:
            self.kf_time.on_update(lambda _e: None if self._syncing else self.set_selected(time=float(self.kf_time.value)))
        for h in (self.seconds, self.fps, self.width, self.height, self.tension, self.loop, self.constant):
            h.on_update(lambda _e: None if self._syncing else self.refresh())

        @self.preview.on_update
        def _(event) -> None:
            if self._syncing or self._advancing:
                return
            if event.client is not None:
                self._preview_client = event.client
            self.show_preview(self._preview_client, float(self.preview.value))

        @self.play.on_update
        def _(event) -> None:
            if event.client is not None:
                self._preview_client = event.client

        self.save.on_click(lambda e: self._guard(lambda: self.save_path(e.client), e.client))
        self.load.on_click(lambda e: self._guard(lambda: self.load_path(self.file_for(str(self.name.value)), e.client), e.client))
        self.render.on_click(lambda e: self._guard(lambda: self.start_render(e.client), e.client))
        self.cancel.on_click(lambda _e: self.job.cancel() if self.job is not None else None)

    def forget_client(self, client_id: int) -> None:
        """A browser left: stop driving its camera."""
        if self._preview_client is not None and self._preview_client.client_id == client_id:
            self._preview_client = None

    def close(self) -> None:
        self._stop.set()
        if self.job is not None:
            self.job.cancel()
