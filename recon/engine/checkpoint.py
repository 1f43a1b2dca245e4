"""Checkpoints: written atomically, loadable with ``torch.load(weights_only=True)``.

A checkpoint holds tensors and plain Python values only (no pickled objects): the step, the method's state
(parameters and buffers), optimizer and strategy state, and the RNG states, so ``--resume`` continues exactly
where a run stopped. It is written to a temporary file in the same folder, flushed to disk, then renamed over the
final name, so a run killed mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

from recon.errors import ReconError

_CKPT_RE = re.compile(r"step-(\d+)\.pt$")


def atomic_save(obj, path: Path) -> None:
    """``torch.save`` to ``path`` via a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def rng_state() -> dict:
    """Torch, numpy and Python RNG states as tensors (weights_only-loadable)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": torch.tensor(py_state[1], dtype=torch.int64),
        "python_version": int(py_state[0]),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], 0, 0.0))
    random.setstate((state["python_version"], tuple(int(x) for x in state["python"].tolist()), None))


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step:06d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints of a run, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT_RE.search(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """Load a checkpoint; a missing or corrupt file is a :class:`ReconError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ReconError("checkpoint file is missing", path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ReconError(f"checkpoint is corrupt or unreadable ({type(exc).__name__})", path) from None


def load_method_state(method, state: dict, source: Path | None = None) -> None:
    """Put a checkpoint's method state into ``method`` (a :class:`recon.methods.base.Method`): resize it to the
    checkpoint's sizes (Gaussian counts change during training), then load parameters, buffers and extra state.

    Raises:
        ReconError: the checkpoint was written by a different method or configuration (naming ``source``).
    """
    try:
        method.resize_for_state_dict(state["method"])
        method.load_state_dict(state["method"])
        method.load_extra_state(state.get("method_extra", {}))
    except (KeyError, RuntimeError) as exc:
        raise ReconError(f"checkpoint does not match the run's method ({type(exc).__name__})", source) from None


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints."""
    for p in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        p.unlink(missing_ok=True)
