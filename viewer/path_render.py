"""The viewer's "Render video" job: ``recon render RUN --camera-path FILE`` in a child process, its progress read
from the plain per-frame lines it prints (``--progress lines``).

A child process, not a thread: the render loads its own copy of the run, so the viewer keeps serving every browser
while it runs, and a browser that leaves (or a cancel) cannot leave the viewer's model half-used.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable

_FRAME = re.compile(r"frame (\d+)/(\d+) .*eta (\d+) s")


class RenderJob:
    """One background render.

    Args:
        run_dir: the run to render.
        path_file: the camera path file.
        output: output folder (the MP4 is ``output/<path_file stem>.mp4``).
        outputs: outputs to render side by side.
        device: ``--device`` for the child.
        on_progress: called with a one-line status (from the child's thread) as frames complete and at the end.
        on_done: called with (ok, message) once the child has exited.
    """

    def __init__(self, run_dir: Path, path_file: Path, output: Path, outputs: tuple[str, ...], device: str,
                 on_progress: Callable[[str], None], on_done: Callable[[bool, str], None]):
        self.video = Path(output) / f"{Path(path_file).stem}.mp4"
        self.cmd = [sys.executable, "-m", "recon.cli", "render", str(run_dir), "--camera-path", str(path_file),
                    "--output", str(output), "--outputs", *outputs, "--progress", "lines", "--device", device]
        self._on_progress, self._on_done = on_progress, on_done
        self.proc: subprocess.Popen | None = None
        self.cancelled = False
        self._thread = threading.Thread(target=self._run, name="recon-path-render", daemon=True)

    def start(self) -> "RenderJob":
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cancel(self) -> None:
        self.cancelled = True
        if self.running:
            self.proc.terminate()

    def wait(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        last = ""
        for line in self.proc.stderr:
            line = line.strip()
            m = _FRAME.search(line)
            if m:
                done, total, eta = (int(g) for g in m.groups())
                self._on_progress(f"rendering frame {done}/{total}, about {eta} s left")
            elif line:
                last = line
        code = self.proc.wait()
        if self.cancelled:
            self._on_done(False, "render cancelled")
        elif code == 0:
            self._on_done(True, f"wrote {self.video}")
        else:
            self._on_done(False, last.removeprefix("recon: error: ") or f"render failed (exit code {code})")
