"""One render thread per browser client: render on demand, low resolution while the camera moves, full resolution
once it rests.

The GUI and camera callbacks never render themselves; they only call :meth:`RenderWorker.request`, which records
*that* something changed and returns at once. The worker renders the client's latest camera and settings when it
gets to it, so a burst of camera messages collapses into one render (the newest), and a slow render never queues
up stale work. A small state machine, as in nerfview:

    request(moving=True)  -> "move":   render at the "while moving" size (fast, low JPEG quality)
    no request for settle_s after a "move" render -> "static": render at full size
    request(moving=False) -> "static": settings changed / training advanced: render at full size

A running render is not interrupted (the CPU rasterizer is one native call); keep the full-size render cheap
enough with the resolution control.
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class Frame:
    """A rendered image and how it was made."""

    image: np.ndarray  # [H, W, 3] uint8
    low: bool  # rendered at the "while moving" size
    seconds: float  # render time
    depth: np.ndarray | None = None  # [H, W] camera-z depth for compositing with the browser's scene nodes


class RenderWorker:
    """Renders frames for one client on its own daemon thread.

    Args:
        render: ``render(low) -> Frame | None`` renders the client's current view (None: nothing to render yet).
        publish: ``publish(frame)`` sends a frame to the client.
        name: thread name (for debugging).
        settle_s: how long the camera must rest before the full-size render.
        on_error: called with the formatted traceback when a render fails (the worker keeps running).
    """

    def __init__(
        self,
        render: Callable[[bool], Frame | None],
        publish: Callable[[Frame], None],
        name: str = "recon-render",
        settle_s: float = 0.2,
        on_error: Callable[[str], None] | None = None,
    ):
        self._render = render
        self._publish = publish
        self._settle_s = settle_s
        self._on_error = on_error
        self._cond = threading.Condition()
        self._pending: str | None = None  # "move" | "static" | None
        self._stopped = False
        self._busy = False
        self.frames = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "RenderWorker":
        self._thread.start()
        return self

    def request(self, moving: bool = False) -> None:
        """Ask for a new frame (never blocks). ``moving``: the camera is being dragged."""
        with self._cond:
            if moving:
                self._pending = "move"
            elif self._pending is None:
                # A pending "move" already ends in a full-size render once the camera rests.
                self._pending = "static"
            self._cond.notify()

    @property
    def idle(self) -> bool:
        """True when nothing is pending or being rendered."""
        with self._cond:
            return self._pending is None and not self._busy

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _next_mode(self, last_low: bool) -> str | None:
        """Wait for work; returns the mode to render or None when stopped."""
        with self._cond:
            while True:
                if self._stopped:
                    return None
                if self._pending is not None:
                    mode, self._pending = self._pending, None
                    self._busy = True
                    return mode
                if last_low:
                    # After a low-resolution frame, wait briefly: no new camera message means the camera rests.
                    if not self._cond.wait(self._settle_s) and self._pending is None and not self._stopped:
                        self._busy = True
                        return "static"
                else:
                    self._cond.wait()

    def _run(self) -> None:
        last_low = False
        while True:
            mode = self._next_mode(last_low)
            if mode is None:
                return
            low = mode == "move"
            try:
                t0 = time.perf_counter()
                frame = self._render(low)
                if frame is not None:
                    frame.seconds = time.perf_counter() - t0
                    self._publish(frame)
                    self.frames += 1
            except Exception:  # a failing render must not kill the client's viewer
                if self._on_error is not None:
                    self._on_error(traceback.format_exc())
                low = False  # do not retry in a loop
            finally:
                with self._cond:
                    self._busy = False
            last_low = low
