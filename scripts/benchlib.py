"""What the benchmark scripts share: the commit their numbers belong to, and running the ``recon`` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def git_commit() -> str:
    """Short hash of HEAD, ``+changes`` when tracked files differ from it (numbers of uncommitted code say so)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT, timeout=10, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=ROOT, timeout=10)
        return out.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return "unknown"


def recon_cli(*args: str, threads: int = 0) -> str:
    """Run ``recon ARGS`` (``threads`` > 0 caps OMP_NUM_THREADS); its stdout, or exit with its stderr's tail."""
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads > 0 else {})}
    r = subprocess.run([sys.executable, "-m", "recon.cli", *args], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"recon {' '.join(args)} failed:\n{r.stderr[-3000:]}")
    return r.stdout
