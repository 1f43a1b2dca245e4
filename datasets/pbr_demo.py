"""``pbr``: adapter from :func:`datasets.pbr_scene.make_pbr_scene` (written separately) to a demo bundle.

``make_pbr_scene()`` returns a dict of arrays. This adapter only relies on a small contract and passes everything
else through as ground truth, so the PBR scene can grow outputs without touching this file:

- required: ``images`` [N, H, W, 3|4] (float in [0, 1] or uint8, sRGB) and poses: ``camtoworlds`` [N, 4, 4] or
  ``viewmats`` [N, 4, 4] (world-to-camera), OpenCV axes;
- intrinsics: ``intrinsics`` [N, 4] (fx, fy, cx, cy), or ``K`` / ``Ks`` ([3, 3] or [N, 3, 3]), or scalar
  ``fx``, ``fy``, ``cx``, ``cy``;
- optional: ``split/<name>`` or ``<name>_indices`` / ``<name>_idx`` (else every 8th view is test),
  ``points``, ``point_colors``, ``aabb``, ``background``; ``verts`` + ``faces`` become ``gt/mesh`` (and, when no
  points are given, the source of the initial point cloud and the aabb);
- ``relit_viewmats`` / ``relit_Ks`` are also given as ``gt/relit_camtoworlds`` / ``gt/relit_intrinsics``;
- callables (``material_fn``) are not cached; :func:`finish` re-attaches ``scene_material`` as
  ``ground_truth["material_fn"]``;
- every other key is ground truth (``gt/`` prefix added when missing; nested dicts are flattened with '/', and a
  trimesh mesh or a ``{vertices, faces}`` dict becomes a mesh). ``alpha`` also gives ``gt/mask`` (alpha > 0.5).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from recon.errors import ReconError

from .common import every_8th_test

NAME = "pbr"
VERSION = "1"
_SOURCE = Path(__file__).with_name("pbr_scene.py")


def available() -> bool:
    return _SOURCE.is_file()


def source_version() -> str:
    """Changes to pbr_scene.py, or to the recon renderer it uses, invalidate the cache too."""
    if not available():
        return "missing"
    h = hashlib.sha1(_SOURCE.read_bytes())
    import recon.render

    render = Path(recon.render.__file__).parent
    for name in ("mesh_shading.py", "mesh.py", "envmap.py", "pbr.py"):
        if (render / name).is_file():
            h.update((render / name).read_bytes())
    return h.hexdigest()[:8]


_INTRINSIC_KEYS = ("intrinsics", "K", "Ks", "fx", "fy", "cx", "cy", "width", "height", "widths", "heights")
_PASSTHROUGH = ("points", "point_colors", "aabb", "background")


def generate() -> dict[str, np.ndarray]:
    if not available():
        raise ReconError("the pbr demo scene is not available in this installation (datasets/pbr_scene.py missing)")
    from .pbr_scene import make_pbr_scene

    return adapt(make_pbr_scene())


def _flatten(prefix: str, value, out: dict) -> None:
    import trimesh

    if isinstance(value, trimesh.Trimesh):
        out[f"{prefix}/vertices"] = np.asarray(value.vertices, np.float32)
        out[f"{prefix}/faces"] = np.asarray(value.faces, np.int64)
    elif isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}/{k}", v, out)
    elif value is not None:
        arr = np.asarray(value)
        if arr.dtype == object:
            raise ReconError(f"pbr scene output {prefix!r} is not a plain array")
        out[prefix] = arr


def adapt(raw: dict) -> dict[str, np.ndarray]:
    """Turn ``make_pbr_scene()`` output into a bundle (see :mod:`.common`)."""
    if "images" not in raw or not ("camtoworlds" in raw or "viewmats" in raw):
        raise ReconError(f"pbr scene output lacks images or poses (keys: {', '.join(sorted(raw))})")
    images = np.asarray(raw["images"])
    if images.dtype != np.uint8:
        images = np.clip(np.round(images.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    n, h, w = images.shape[:3]
    c2w = _homogeneous(raw["camtoworlds"]) if "camtoworlds" in raw else np.linalg.inv(_homogeneous(raw["viewmats"]))

    if "intrinsics" in raw:
        k = np.broadcast_to(np.asarray(raw["intrinsics"], np.float32).reshape(-1, 4), (n, 4))
    elif "K" in raw or "Ks" in raw:
        K = np.broadcast_to(np.asarray(raw.get("K", raw.get("Ks")), np.float32).reshape(-1, 3, 3), (n, 3, 3))
        k = np.stack([K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]], 1)
    elif all(x in raw for x in ("fx", "fy", "cx", "cy")):
        k = np.stack([np.broadcast_to(np.asarray(raw[x], np.float32), (n,)) for x in ("fx", "fy", "cx", "cy")], 1)
    else:
        raise ReconError("pbr scene output has no intrinsics (intrinsics, K or fx/fy/cx/cy)")

    out: dict[str, np.ndarray] = {
        "images": images,
        "camtoworlds": c2w.astype(np.float32),
        "intrinsics": np.ascontiguousarray(k, dtype=np.float32),
    }
    if "verts" in raw and "faces" in raw:
        out["gt/mesh/vertices"] = np.asarray(raw["verts"], np.float32)
        out["gt/mesh/faces"] = np.asarray(raw["faces"], np.int64)
    if "relit_viewmats" in raw:
        out["gt/relit_camtoworlds"] = np.linalg.inv(_homogeneous(raw["relit_viewmats"])).astype(np.float32)
    if "relit_Ks" in raw:
        K = np.asarray(raw["relit_Ks"], np.float32).reshape(-1, 3, 3)
        out["gt/relit_intrinsics"] = np.stack([K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]], 1)
    if "alpha" in raw:
        out["gt/mask"] = np.asarray(raw["alpha"]) > 0.5
    for key, value in raw.items():
        if key in ("images", "camtoworlds", "viewmats", "verts", "faces") or key in _INTRINSIC_KEYS or callable(value):
            continue
        if key.startswith("split/"):
            out[key] = np.asarray(value, np.int64)
        elif key.endswith(("_indices", "_idx")) and key.split("_")[0] in ("train", "test", "val"):
            out[f"split/{key.split('_')[0]}"] = np.asarray(value, np.int64)
        elif key == "splits" and isinstance(value, dict):
            out.update({f"split/{s}": np.asarray(v, np.int64) for s, v in value.items()})
        elif key in _PASSTHROUGH:
            out[key] = np.asarray(value, np.float32)
        else:
            _flatten(key if key == "gt" or key.startswith("gt/") else f"gt/{key}", value, out)
    if not any(k.startswith("split/") for k in out):
        out.update(every_8th_test(n))
    if "gt/mesh/vertices" in out and "points" not in out:
        out.update(_points_from_mesh(out["gt/mesh/vertices"], out["gt/mesh/faces"], raw.get("material_fn")))
    if "aabb" not in out and "gt/mesh/vertices" in out:
        v = out["gt/mesh/vertices"]
        lo, hi = v.min(0), v.max(0)
        pad = 0.1 * (hi - lo).max()
        out["aabb"] = np.stack([lo - pad, hi + pad]).astype(np.float32)
    return out


def finish(scene) -> None:
    """Attach what the cache cannot hold: the analytic material function (torch points [P, 3] -> dict)."""
    if available():
        from .pbr_scene import scene_material

        scene.ground_truth.setdefault("material_fn", scene_material)


def _homogeneous(m) -> np.ndarray:
    m = np.asarray(m, np.float64)
    if m.shape[-2] == 3:
        bottom = np.broadcast_to(np.array([[0.0, 0.0, 0.0, 1.0]]), (*m.shape[:-2], 1, 4))
        m = np.concatenate([m, bottom], -2)
    return m


def _points_from_mesh(verts: np.ndarray, faces: np.ndarray, material_fn, count: int = 6000) -> dict[str, np.ndarray]:
    """Initial points sampled on the mesh (fixed seed), coloured by the base colour when a material function is
    given (sRGB), else mid grey."""
    import trimesh

    mesh = trimesh.Trimesh(verts, faces, process=False)
    pts, _ = trimesh.sample.sample_surface(mesh, count, seed=13)
    colors = np.full((count, 3), 0.5, np.float32)
    if material_fn is not None:
        import torch

        from recon.color import linear_to_srgb

        with torch.no_grad():
            base = material_fn(torch.as_tensor(np.asarray(pts), dtype=torch.float32))["base_color"]
        colors = linear_to_srgb(np.asarray(base, dtype=np.float64)).astype(np.float32)
    return {"points": np.asarray(pts, np.float32), "point_colors": colors}
