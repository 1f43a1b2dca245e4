"""A build lock that cannot outlive its holder and says who holds it.

torch's ``FileBaton`` (used by ``cpp_extension.load``) is a file that exists while a build runs; a process killed
mid-build leaves it behind and every later build waits on it forever. This lock is an advisory ``flock`` on a lock
file instead: the kernel releases it when the holder's process ends, however it ends (exit, exception, SIGTERM,
SIGKILL, the OOM killer), so a dead holder never blocks anyone. The holder writes its PID, host, start time and
purpose into the file, so a process that has to wait can say what it is waiting for.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable


class BuildLock:
    """Exclusive lock on ``path`` for the duration of a ``with`` block.

    Args:
        path: the lock file (created if missing; never deleted, so that two processes always lock the same inode).
        purpose: what the holder is doing, recorded for waiters' messages.
        timeout: seconds to wait for a live holder before raising ``TimeoutError`` (None: wait as long as it
            lives; it releases the lock when it ends, whatever way it ends).
        say: where the one "waiting for ..." line goes (default: stderr).
    """

    def __init__(self, path: str | Path, purpose: str, timeout: float | None = None,
                 say: Callable[[str], None] | None = None, poll: float = 0.2):
        self.path = Path(path)
        self.purpose = purpose
        self.timeout = timeout
        self.poll = poll
        self.say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._fd: int | None = None

    def holder(self) -> dict | None:
        """What the current (or last) holder wrote into the lock file, or None."""
        try:
            text = self.path.read_text()
            return json.loads(text) if text.strip() else None
        except (OSError, ValueError):
            return None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        start, told = time.monotonic(), False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    h = self.holder() or {}
                    since = time.strftime("%H:%M:%S", time.localtime(h["started"])) if "started" in h else "?"
                    self.say(
                        f"recon: waiting for pid {h.get('pid', '?')} on {h.get('host', '?')} ({h.get('purpose', '?')},"
                        f" since {since}); lock {self.path}"
                    )
                    told = True
                if self.timeout is not None and time.monotonic() - start > self.timeout:
                    os.close(fd)
                    raise TimeoutError(f"lock {self.path} still held after {self.timeout:.0f} s") from None
                time.sleep(self.poll)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "purpose": self.purpose}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> "BuildLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def announced_build(lock_path: str | Path, what: str, built: bool, folder: str | Path, ninja: str | None,
                    say: Callable[[str], None], expected: str = ""):  # fmt: skip
    """Context for a JIT build of ``what`` into ``folder`` (gsplat's CUDA kernels, recon's CUDA tracer): holds the
    :class:`BuildLock` at ``lock_path``, puts ``ninja`` (this environment's, when given) first on PATH for the
    block and restores PATH after, and, when the module was not ``built`` yet, says that it compiles (``expected``:
    e.g. ", ~90 s") and how long it took."""
    old_path = os.environ.get("PATH", "")
    t0 = time.monotonic()
    with BuildLock(lock_path, purpose=f"compiling {what}", say=say):
        if not built:
            say(f"recon: compiling {what} (first use with this torch/CUDA{expected}) into {folder}…")
        if ninja is not None:
            os.environ["PATH"] = ninja + os.pathsep + old_path
        try:
            yield
        finally:
            os.environ["PATH"] = old_path
    if not built:
        say(f"recon: compiled {what} in {time.monotonic() - t0:.0f} s")
