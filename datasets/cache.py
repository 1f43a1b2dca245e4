"""On-disk cache of generated demo scenes: one ``scene.npz`` of plain arrays per scene version.

Location: ``$RECON_CACHE/demo/<name>-<version>/scene.npz`` when ``RECON_CACHE`` is set, else
``~/.cache/recon/demo/<name>-<version>/scene.npz``. The version is part of the folder name, so changing a generator
(and bumping its ``VERSION``) simply stops old files from being found.

Writes are atomic (a temporary file in the same folder, then ``os.replace``): a crash or a parallel generation never
leaves a half-written file that a later load would trust. Files are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import os
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np


def cache_root() -> Path:
    """The folder holding all demo scenes (``$RECON_CACHE/demo`` or ``~/.cache/recon/demo``)."""
    base = os.environ.get("RECON_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "recon") / "demo"


def scene_dir(name: str, version: str) -> Path:
    return cache_root() / f"{name}-{version}"


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` (flat name -> array; names may contain '/') to ``path`` atomically, uncompressed
    (loading speed matters more than the few MB)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_arrays(path: Path) -> dict[str, np.ndarray] | None:
    """Read a cached file fully into memory; None if it is absent or unreadable (then the caller regenerates)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        warnings.warn(f"ignoring unreadable demo cache {path} ({type(exc).__name__}: {exc}); regenerating")
        return None
