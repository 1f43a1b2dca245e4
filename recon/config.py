"""Config dataclasses <-> plain YAML, and the run directory layout.

Every config is a dataclass whose field docstrings become the CLI help (tyro). A run's resolved config is written
as plain YAML (no Python tags), so it stays readable by people and other tools.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import typing
from pathlib import Path

import yaml

from recon.errors import ReconError


def to_plain(obj):
    """Dataclasses, paths, tuples, enums and numpy scalars -> YAML-safe builtins."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if not f.name.startswith("_")}
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    return obj


def from_plain(cls, data: dict):
    """Rebuild dataclass ``cls`` from :func:`to_plain` output; unknown keys are ignored, missing ones defaulted."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        tp = hints.get(f.name)
        origin = typing.get_origin(tp)
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            value = from_plain(tp, value)
        elif tp is Path or (origin is typing.Union and Path in typing.get_args(tp) and value is not None):
            value = Path(value)
        elif origin is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def write_yaml(data: dict, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(to_plain(data), sort_keys=False))
    tmp.replace(path)


def read_yaml(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ReconError("file is missing", path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ReconError(f"malformed YAML{where}", path) from None
    if not isinstance(data, dict):
        raise ReconError("expected a YAML mapping", path)
    return data


def new_run_dir(output_dir: Path, scene_name: str, method: str) -> Path:
    """``outputs/<scene>/<method>/<timestamp>/`` (a suffix is added if two runs start in the same second)."""
    stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H%M%S")
    base = Path(output_dir) / scene_name / method
    run = base / stamp
    i = 1
    while run.exists():
        run = base / f"{stamp}-{i}"
        i += 1
    run.mkdir(parents=True)
    return run
