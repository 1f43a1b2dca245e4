"""Reading an exported primitives folder (``blocks.json``, format ``recon-primitives`` version 1).

Layout (every path relative to the folder; all geometry in the data frame, lengths in its units)::

    blocks.json
        {"format": "recon-primitives", "version": 1, "frame": "data",
         "up": [x, y, z],                                       # unit up vector
         "ground": {"point": [x, y, z], "normal": [x, y, z], "mesh": "ground.glb"},
         "blocks": [{"name": "block_00", "type": "superquadric", "exponents": [e1, e2], "scale": [sx, sy, sz],
                     "rotation": [[...], [...], [...]], "translation": [x, y, z], "opacity": 0.97,
                     "mesh": "block_00.glb",                    # textured render mesh
                     "collision": "physics/block_00.obj",       # watertight collision mesh (convex hull)
                     "volume": 0.0123, "mass": 0.0123}, ...]}

Only what a physics drop needs is checked (up, ground, and per block a name, a loadable collision mesh with volume,
a render mesh that exists, a positive mass or volume); the rest of each entry is kept as ``Block.info``. Every
problem is a one-line ``ReconError`` naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import trimesh

from recon.errors import ReconError

__all__ = ["Block", "Primitives", "read_primitives", "FORMAT", "VERSION"]

FORMAT = "recon-primitives"
VERSION = 1


@dataclass
class Block:
    """One exported block.

    Attributes:
        name: the block's name.
        collision: its collision mesh in the data frame.
        mesh_path: its textured render mesh (GLB), data frame.
        mass: the exported mass (``volume`` when the file gives none; None when neither is given).
        info: the block's whole ``blocks.json`` entry (type, exponents, scale, rotation, translation, opacity...).
    """

    name: str
    collision: trimesh.Trimesh
    mesh_path: Path
    mass: float | None
    info: dict = field(default_factory=dict)


@dataclass
class Primitives:
    """A primitives folder: ``up`` [3] unit, the ground plane (``ground_point`` [3], unit ``ground_normal`` [3],
    optional ``ground_mesh`` path) and the blocks."""

    folder: Path
    up: np.ndarray
    ground_point: np.ndarray
    ground_normal: np.ndarray
    ground_mesh: Path | None
    blocks: list[Block]


def _vector(value, what: str, path: Path, unit: bool = False) -> np.ndarray:
    try:
        v = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        v = np.zeros(0)
    if v.shape != (3,) or not np.all(np.isfinite(v)) or (unit and not np.linalg.norm(v) > 0):
        raise ReconError(f"{what} must be three finite numbers{' (not all zero)' if unit else ''}, got {value!r}", path)
    return v / np.linalg.norm(v) if unit else v


def _positive(entry: dict, key: str, what: str, path: Path) -> float | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ReconError(f"{what}: '{key}' must be a positive number, got {value!r}", path)
    return float(value)


def _load_collision(path: Path, name: str) -> trimesh.Trimesh:
    if not path.is_file():
        raise ReconError(f"collision mesh of block {name!r} not found", path)
    try:
        mesh = trimesh.load(path, force="mesh", process=True)
    except Exception as e:  # trimesh raises many types for a damaged file
        raise ReconError(f"cannot read the collision mesh of block {name!r}: {e}", path) from e
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ReconError(f"the collision mesh of block {name!r} has no triangles", path)
    if not mesh.convex_hull.volume > 0:
        raise ReconError(f"the collision mesh of block {name!r} is flat (no volume)", path)
    return mesh


def read_primitives(folder: str | Path) -> Primitives:
    """Read and check ``folder/blocks.json`` and load every block's collision mesh (render meshes are only checked
    to exist)."""
    folder = Path(folder)
    path = folder / "blocks.json"
    if not path.is_file():
        raise ReconError("no blocks.json here: not an exported primitives folder", folder)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReconError(f"not valid JSON: {e}", path) from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ReconError(f"'format' must be {FORMAT!r}", path)
    if doc.get("version") != VERSION:
        raise ReconError(f"unsupported version {doc.get('version')!r} (this reader knows {VERSION})", path)
    up = _vector(doc.get("up"), "'up'", path, unit=True)
    ground = doc.get("ground")
    if not isinstance(ground, dict):
        raise ReconError("'ground' must be an object with 'point' and 'normal'", path)
    point = _vector(ground.get("point"), "'ground.point'", path)
    normal = _vector(ground.get("normal"), "'ground.normal'", path, unit=True)
    if float(up @ normal) <= 0:
        raise ReconError(f"'ground.normal' {normal.tolist()} points away from 'up' {up.tolist()}", path)
    ground_mesh = folder / ground["mesh"] if isinstance(ground.get("mesh"), str) else None
    entries = doc.get("blocks")
    if not isinstance(entries, list) or not entries:
        raise ReconError("'blocks' must be a non-empty list", path)
    blocks = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ReconError(f"block {i} must be an object", path)
        name = str(entry.get("name", f"block_{i:02d}"))
        for key in ("mesh", "collision"):
            if not isinstance(entry.get(key), str):
                raise ReconError(f"block {name!r} has no '{key}' file name", path)
        mesh_path = folder / entry["mesh"]
        if not mesh_path.is_file():
            raise ReconError(f"render mesh of block {name!r} not found", mesh_path)
        mass = _positive(entry, "mass", f"block {name!r}", path)
        volume = _positive(entry, "volume", f"block {name!r}", path)
        blocks.append(Block(name, _load_collision(folder / entry["collision"], name), mesh_path,
                            mass if mass is not None else volume, entry))
    return Primitives(folder, up, point, normal, ground_mesh, blocks)
