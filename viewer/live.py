"""Live training view (``recon train ... --viewer``): the viewer app plus training statistics and pause/resume.

The trainer calls, from its own thread::

    viewer.before_step(step)            # blocks while paused
    with viewer.lock: <one training step>
    viewer.after_step(step, stats)      # stats: loss, psnr, num_gaussians, ...
    ...
    viewer.close()

Costs to training are kept small: with no browser connected ``after_step`` only compares two clock readings (the
GUI statistics update twice a second); with a browser connected, views re-render at most every "Update view
every (s)" seconds, each render holding ``lock`` (so training waits for it, but never sees a half-updated model
and the render never sees one either).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from rich.console import Console

from .app import ViewerApp

STATS_EVERY_S = 0.5


class LiveViewer:
    """Viewer attached to a running :class:`~recon.engine.trainer.Trainer`.

    Args:
        method: the method being trained.
        scene: the normalised training scene.
        port: viewer port (the next free one when taken).
        console: where messages go.
        host: interface to listen on.
        output_dir: folder for "Save view as PNG" (e.g. ``RUN/renders/viewer``); None: browser download only.
    """

    def __init__(self, method, scene, port: int = 7007, console: Console | None = None, host: str = "127.0.0.1", output_dir: Path | None = None):
        self.console = console or Console(stderr=True)
        # Re-entrant: the render worker holds it around method.render, the trainer around a step, and a method may
        # call back into code that takes it again (e.g. exports during training).
        self.lock = threading.RLock()
        self._running = threading.Event()
        self._running.set()
        self.step = 0
        self.stats: dict = {}
        self._rendered_step = -1
        self._last_refresh = 0.0
        self._last_splats = 0.0
        self._last_stats = 0.0
        self._rate_mark = (time.perf_counter(), 0)
        self._rate: float | None = None
        self._closed = False
        self.app = ViewerApp(method, scene, host=host, port=port, console=self.console, output_dir=output_dir, lock=self.lock, on_pause=self._on_pause, label=f"recon · training {method.name}")
        self.port = self.app.port

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def _on_pause(self, paused: bool) -> None:
        if paused:
            self._running.clear()
            self.console.print("[yellow]viewer[/]: training paused (resume in the viewer)")
        else:
            self._running.set()
            self.console.print("[bold]viewer[/]: training resumed")
        self.app.training_panel.show(self.step, self.stats, self._rate)

    def pause(self) -> None:
        """Pause from code (same as the button)."""
        if not self.paused:
            self.app.training_panel.set_paused(True)
            self._on_pause(True)

    def resume(self) -> None:
        if self.paused:
            self.app.training_panel.set_paused(False)
            self._on_pause(False)

    # ------------------------------------------------------------------ trainer hooks
    def before_step(self, step: int) -> None:
        """Block while paused. Waits in short slices so that Ctrl-C in the main thread still gets through."""
        while not self._running.wait(0.25):
            pass

    def after_step(self, step: int, stats: dict) -> None:
        if self._closed:
            return
        self.step = step
        self.stats = stats
        now = time.perf_counter()
        if now - self._last_stats >= STATS_EVERY_S:
            t0, s0 = self._rate_mark
            if step > s0 and now > t0:
                self._rate = (step - s0) / (now - t0)
            self._rate_mark = (now, step)
            self._last_stats = now
            self.app.training_panel.show(step, stats, self._rate)
        if not self.app.has_clients:
            return  # nobody is looking: no rendering at all
        interval = float(self.app.training_panel.refresh.value)
        if step != self._rendered_step and now - self._last_refresh >= interval:
            self._rendered_step = step
            self._last_refresh = now
            self.app.request_all(moving=False)
            if now - self._last_splats >= max(5.0, interval):  # splats are heavier to send than an image
                self._last_splats = now
                self.app.refresh_splats()

    def close(self) -> None:
        """Release a paused trainer and stop the server."""
        self._closed = True
        self._running.set()
        self.app.close()
