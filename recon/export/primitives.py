"""``primitives`` export: a scene of separate analytic parts (Blocks World's superquadrics), for editing and physics.

Written into a folder, in the data's frame:

- ``blocks.json``: format ``recon-primitives`` v1: ``up``, ``ground`` (point, normal, mesh) and per block its type,
  exponents (e1, e2), semi-axes, rotation (local y-up frame -> data frame), translation, opacity, volume, mass
  (``density`` x volume) and the files below;
- ``block_XX.glb`` and ``block_XX.obj`` (+ ``.mtl`` + ``.png``): each block's textured mesh;
- ``physics/block_XX.obj``: its convex hull (exact for superquadrics with exponents <= 2, which are convex), the
  collision shape a rigid-body engine wants;
- ``ground.glb`` (the patch of ground under the blocks) and ``scene.glb`` (blocks + ground patch).

The writer sees the method only through :meth:`recon.methods.base.Method.primitives`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import trimesh

FORMAT, VERSION = "recon-primitives", 1


def _to_data(mesh: trimesh.Trimesh, transform) -> trimesh.Trimesh:
    out = mesh.copy()
    out.vertices = transform.invert_points(np.asarray(mesh.vertices, np.float64))
    return out


def _write_obj(mesh: trimesh.Trimesh, path: Path) -> None:
    """OBJ + MTL + texture PNG named after ``path`` (trimesh's default names would collide between blocks)."""
    mtl = path.with_suffix(".mtl").name
    text, files = trimesh.exchange.obj.export_obj(mesh, include_texture=True, return_texture=True, mtl_name=mtl)
    # trimesh names every texture material_0.png: give each block its own and point its MTL at it
    renames = {name: f"{path.stem}{Path(name).suffix}" for name in files if name != mtl}
    for name, data in files.items():
        if name == mtl:
            data = data.decode()
            for old, new in renames.items():
                data = data.replace(old, new)
            data = data.encode()
        (path.parent / renames.get(name, name)).write_bytes(data)
    path.write_text(text)


def write_primitives(parts: dict, transform, folder: Path, density: float = 1.0) -> Path:
    """Write ``parts`` (the answer of ``Method.primitives()``, normalised frame) into ``folder`` in the data frame.

    Args:
        transform: the run's :class:`recon.data.normalize.SceneTransform` (data -> normalised).
        density: mass per data-unit volume for ``mass``.
    Returns:
        the path of ``blocks.json``.
    """
    folder = Path(folder)
    (folder / "physics").mkdir(parents=True, exist_ok=True)
    R_n, s = np.asarray(transform.rotation, np.float64), float(transform.scale)
    blocks, scene = [], trimesh.Scene()
    for k, b in enumerate(parts["blocks"]):
        name = f"block_{k:02d}"
        mesh = _to_data(b["mesh"], transform)
        mesh.export(folder / f"{name}.glb")
        _write_obj(mesh, folder / f"{name}.obj")
        hull = trimesh.Trimesh(mesh.vertices, mesh.faces, process=True).convex_hull
        hull.export(folder / "physics" / f"{name}.obj")
        volume = float(b["volume"]) / s**3
        blocks.append({
            "name": name, "type": "superquadric", "index": int(b["index"]),
            "exponents": np.asarray(b["exponents"], float).tolist(),
            "scale": (np.asarray(b["scale"], float) / s).tolist(),
            "rotation": (R_n.T @ np.asarray(b["rotation"], float)).tolist(),
            "translation": transform.invert_points(np.asarray(b["translation"], float)).tolist(),
            "opacity": float(b["opacity"]), "volume": volume, "mass": density * volume,
            "mesh": f"{name}.glb", "obj": f"{name}.obj", "collision": f"physics/{name}.obj",
        })
        scene.add_geometry(mesh, node_name=name, geom_name=name)
    ground = None
    if parts.get("ground") is not None:
        g = parts["ground"]
        gmesh = _to_data(g["mesh"], transform)
        gmesh.export(folder / "ground.glb")
        scene.add_geometry(gmesh, node_name="ground", geom_name="ground")
        ground = {"point": transform.invert_points(np.asarray(g["point"], float)).tolist(),
                  "normal": (R_n.T @ np.asarray(g["normal"], float)).tolist(), "mesh": "ground.glb"}
    if len(scene.geometry):
        scene.export(folder / "scene.glb")
    up = R_n.T @ np.asarray(parts["up"], float)
    doc = {"format": FORMAT, "version": VERSION, "frame": "data", "up": (up / np.linalg.norm(up)).tolist(),
           "ground": ground, "density": density, "blocks": blocks}
    path = folder / "blocks.json"
    tmp = path.with_suffix(".json.partial")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)
    return path
