"""The viewer's GUI panels, built from what the method offers.

The panels only hold state and report changes through callbacks; they never render. :class:`RenderPanel` turns
its controls into a :class:`~recon.viewer.render.RenderSettings` snapshot for the render workers. It is built once
per browser, on viser's ``client.gui``, so that every browser has its own output, resolution, time and options;
the other panels are shared (``server.gui``).

Top-level folders get fixed places (:data:`ORDER`): a per-browser panel is built when its browser connects, after
the shared ones, and would otherwise land at the bottom.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable

from .options import ViewerOption, method_options, to_render_value
from .render import RenderSettings

COLORMAPS = ("turbo", "viridis", "magma", "gray")

# Where each top-level folder sits, top to bottom (viser sorts a container's children by ``order``).
ORDER = {"Training": 10.0, "Render": 20.0, "Method": 21.0, "Time": 22.0, "View": 30.0, "Camera path": 40.0, "Metrics": 50.0}


def _add_option_control(gui, opt: ViewerOption):
    """One viser control for a method's viewer option."""
    kw = {"hint": opt.hint}
    if opt.kind == "dropdown":
        return gui.add_dropdown(opt.title, opt.choices, initial_value=str(opt.default), **kw)
    if opt.kind == "slider":
        step = opt.step if opt.step is not None else (opt.max - opt.min) / 100.0
        default = opt.default if opt.default is not None else opt.min
        return gui.add_slider(opt.title, min=opt.min, max=opt.max, step=step, initial_value=default, **kw)
    if opt.kind == "checkbox":
        return gui.add_checkbox(opt.title, initial_value=bool(opt.default), **kw)
    if opt.kind == "number":
        return gui.add_number(opt.title, initial_value=opt.default if opt.default is not None else 0.0, min=opt.min, max=opt.max, step=opt.step, **kw)
    if opt.kind == "rgb":
        default = opt.default if opt.default is not None else (1.0, 1.0, 1.0)
        return gui.add_rgb(opt.title, initial_value=tuple(int(round(255 * c)) for c in default), **kw)
    return gui.add_text(opt.title, initial_value=str(opt.default or ""), **kw)


class RenderPanel:
    """Output, colormap, resolution, field of view, background, time (+ play) and the method's own options, for one
    browser.

    Args:
        gui: that browser's ``client.gui`` (or ``server.gui`` for a panel every browser shares).
        method: the method (``render_outputs``, ``is_dynamic``, ``viewer_options()``).
        background: initial background colour in [0, 1].
        fov_deg: initial vertical field of view (the training cameras').
        max_side: initial full-size render resolution (longer side, pixels).
        on_change: called with the name of the control (``"output"``, ``"time"``, ...) whenever a setting that
            affects the image changes.
        on_fov: called with the new vertical fov in radians.
    """

    def __init__(self, gui, method, background, fov_deg: float, max_side: int, on_change: Callable[[str], None], on_fov: Callable[[float], None]):
        self.method = method
        self._on_change = on_change
        outputs = tuple(method.render_outputs)
        with gui.add_folder("Render", order=ORDER["Render"]):
            self.output = gui.add_dropdown("Output", outputs, initial_value=outputs[0], hint="What the method renders; scalar outputs are colour-mapped.")
            self.colormap = gui.add_dropdown("Colormap", COLORMAPS, initial_value="turbo", hint="For scalar outputs (depth, alpha, ...).")
            self.max_side = gui.add_slider("Max resolution", min=64, max=2048, step=32, initial_value=int(max_side), hint="Longer side of the render when the camera rests.")
            self.move_side = gui.add_slider("Res. while moving", min=32, max=1024, step=32, initial_value=min(256, int(max_side)), hint="Longer side of the render while the camera moves (faster feedback).")
            self.jpeg = gui.add_slider("JPEG quality", min=30, max=100, step=5, initial_value=85)
            self.fov = gui.add_slider("FOV (deg)", min=10.0, max=120.0, step=1.0, initial_value=round(float(fov_deg)), hint="Vertical field of view of the browser camera.")
            self.background = gui.add_rgb("Background", initial_value=tuple(int(round(255 * c)) for c in background))
        self.options: list[tuple[ViewerOption, object]] = []
        opts = method_options(method)
        if opts:
            with gui.add_folder("Method", order=ORDER["Method"]):
                for opt in opts:
                    self.options.append((opt, _add_option_control(gui, opt)))
        self.time = None
        self.play = None
        self.fps = None
        if method.is_dynamic:
            with gui.add_folder("Time", order=ORDER["Time"]):
                self.time = gui.add_slider("Time", min=0.0, max=1.0, step=0.001, initial_value=0.0)
                self.play = gui.add_checkbox("Play", initial_value=False)
                self.fps = gui.add_slider("Speed (s / loop)", min=1.0, max=30.0, step=0.5, initial_value=5.0)
            self._player = threading.Thread(target=self._play_loop, name="recon-play", daemon=True)
            self._stop = threading.Event()
            self._player.start()

        controls = {"output": self.output, "colormap": self.colormap, "max_side": self.max_side, "background": self.background}
        controls.update({opt.name: h for opt, h in self.options})
        if self.time is not None:
            controls["time"] = self.time
        for name, h in controls.items():
            h.on_update(lambda _e, name=name: self._on_change(name))
        self.fov.on_update(lambda _e: on_fov(math.radians(float(self.fov.value))))

    def _play_loop(self) -> None:
        """Advance the time slider while "Play" is ticked (each change re-renders this panel's browser at moving
        size)."""
        last = time.perf_counter()
        while not self._stop.wait(1.0 / 15.0):
            now = time.perf_counter()
            if self.play.value:
                period = max(float(self.fps.value), 0.1)
                self.time.value = (float(self.time.value) + (now - last) / period) % 1.0
            last = now

    @property
    def playing(self) -> bool:
        return bool(self.play is not None and self.play.value)

    def settings(self) -> RenderSettings:
        return RenderSettings(
            output=str(self.output.value),
            time=float(self.time.value) if self.time is not None else None,
            background=tuple(float(c) / 255.0 for c in self.background.value),
            colormap=str(self.colormap.value),
            options={opt.name: to_render_value(opt, h.value) for opt, h in self.options},
        )

    def close(self) -> None:
        if self.time is not None:
            self._stop.set()


class ViewPanel:
    """Scene content and tools: training cameras, client-side splats, mesh, "save view as PNG"."""

    def __init__(self, gui, has_gaussians: bool, has_mesh: bool, has_depth: bool = False):
        with gui.add_folder("View", order=ORDER["View"]):
            self.save = gui.add_button("Save view as PNG", icon="camera", hint="Renders this view at full resolution into RUN/renders/viewer/.")
            self.show_cameras = gui.add_checkbox("Training cameras", initial_value=True, hint="Click a frustum to jump to its view.")
            self.occlude = None
            if has_depth:
                self.occlude = gui.add_checkbox(
                    "Depth occlusion",
                    initial_value=True,
                    hint="Send the rendered depth along with the image so that frustums and meshes behind the model are hidden.",
                )
            self.splats = None
            if has_gaussians:
                self.splats = gui.add_checkbox(
                    "Splats in browser",
                    initial_value=False,
                    hint="Send the Gaussians to the browser and render them there (view-independent colour only); "
                    "server rendering pauses meanwhile.",
                )
            self.mesh = gui.add_checkbox("Mesh", initial_value=False, hint="Show the method's mesh.") if has_mesh else None
            self.info = gui.add_markdown("")


class TrainingPanel:
    """Live training: step, loss, PSNR, Gaussian count, pause/resume, how often views follow the model."""

    def __init__(self, gui, on_pause: Callable[[bool], None]):
        with gui.add_folder("Training", order=ORDER["Training"]):
            self.stats = gui.add_markdown("waiting for the first step")
            self.pause = gui.add_button("Pause training", icon="player-pause", hint="Pause after the current step.")
            self.refresh = gui.add_slider("Update view every (s)", min=0.2, max=10.0, step=0.2, initial_value=1.0, hint="How often views re-render as the model trains (each render briefly holds up training).")
        self.paused = False

        @self.pause.on_click
        def _(_e) -> None:
            self.set_paused(not self.paused)
            on_pause(self.paused)

    def set_paused(self, paused: bool) -> None:
        """Show the button for the new state (the caller acts on it)."""
        self.paused = paused
        self.pause.label = "Resume training" if paused else "Pause training"
        self.pause.icon = "player-play" if paused else "player-pause"

    def show(self, step: int, stats: dict, rate: float | None) -> None:
        parts = [f"**step** {step}"]
        for key, label, fmt in (("loss", "loss", "{:.4f}"), ("psnr", "PSNR", "{:.2f} dB"), ("num_gaussians", "Gaussians", "{:,.0f}")):
            v = stats.get(key)
            if v is not None and v == v:
                parts.append(f"**{label}** " + fmt.format(float(v)))
        for k, v in stats.items():
            if k not in ("loss", "psnr", "num_gaussians") and isinstance(v, (int, float)):
                parts.append(f"**{k}** {float(v):.4g}")
        if rate is not None:
            parts.append(f"**steps/s** {rate:.1f}")
        if self.paused:
            parts.append("*paused*")
        self.stats.content = "  \n".join(parts)


class MetricsPanel:
    """The run's evaluations (``metrics.json`` from the end of training, ``eval-<split>.json`` from `recon eval`):
    PSNR, SSIM and LPIPS with its backbone, or why LPIPS is missing; for dynamic runs the moving part's PSNR / SSIM
    and its share of the pixels."""

    def __init__(self, gui, run_dir):
        from pathlib import Path

        lines = []
        for path in [Path(run_dir) / "metrics.json", *sorted(Path(run_dir).glob("eval-*.json"))]:
            line = metrics_line(path)
            if line:
                lines.append(line)
        with gui.add_folder("Metrics", order=ORDER["Metrics"]):
            self.text = gui.add_markdown("  \n".join(lines) or "not evaluated yet (`recon eval RUN`)")


def metrics_line(path) -> str | None:
    """One markdown line for an evaluation file, None when it is missing or unreadable."""
    import json

    try:
        m = json.loads(path.read_text())
        parts = [f"**{m.get('split', 'test')}** ({m['num_images']} views, step {m.get('step', '?')})", f"PSNR {m['psnr']:.2f} dB", f"SSIM {m['ssim']:.4f}"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if isinstance(m.get("lpips"), float):
        parts.append(f"LPIPS ({m.get('lpips_net', 'alex')}) {m['lpips']:.4f}")
    else:
        parts.append("LPIPS unavailable")
    if isinstance(m.get("psnr_dynamic"), float):
        share = m.get("dynamic_share") or 0.0
        ssim_dyn = m.get("ssim_dynamic")
        parts.append(f"moving part ({100 * share:.1f} % of pixels): PSNR {m['psnr_dynamic']:.2f} dB"
                     + (f", SSIM {ssim_dyn:.4f}" if isinstance(ssim_dyn, float) else ""))
    return " · ".join(parts)
