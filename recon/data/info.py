"""``recon data info``: what a data set holds, as a JSON-ready dict and as a rich table.

Everything here comes from the cameras and metadata already read by the reader; only one image is decoded (to
report channels, i.e. whether the images carry alpha).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from recon.data.scene import SceneData
from recon.errors import ReconError


def _range(values) -> list[float]:
    v = np.asarray(values, dtype=np.float64)
    return [round(float(v.min()), 4), round(float(v.max()), 4)]


def scene_info(scene: SceneData, *, decode_one: bool = True) -> dict[str, Any]:
    """Summary of a scene (JSON-serialisable).

    Keys: name, format, root, frames, splits {name: count}, split_aliases {name: other name with the same frames},
    resolutions {"WxH": count}, channels, intrinsics {fx, fy, cx, cy: [min, max], models {name: count},
    distorted: bool}, time (None or {min, max, distinct}), cameras (physical cameras for multi-view video),
    points, masks, priors (names of the per-view priors), bounds {camera_centers: [[min xyz], [max xyz]], aabb, near_far}, background, warnings.
    """
    cams = scene.cameras
    n = len(cams)
    sizes = Counter(f"{int(w)}x{int(h)}" for w, h in zip(cams.widths.tolist(), cams.heights.tolist()))
    splits = {k: int(len(v)) for k, v in scene.splits.items()}
    aliases = {}
    names = list(scene.splits)
    for i, a in enumerate(names):
        for b in names[:i]:
            if np.array_equal(scene.splits[a], scene.splits[b]):
                aliases[a] = b
                break
    centers = cams.centers().double().numpy()
    info: dict[str, Any] = {
        "name": scene.name,
        "format": scene.format,
        "root": str(scene.root),
        "frames": n,
        "splits": splits,
        "split_aliases": aliases,
        "resolutions": dict(sizes.most_common()),
        "channels": None,
        "intrinsics": {
            "fx": _range(cams.fx),
            "fy": _range(cams.fy),
            "cx": _range(cams.cx),
            "cy": _range(cams.cy),
            "models": dict(Counter(cams.model_names).most_common()),
            "distorted": not cams.is_pinhole,
            # [k1, k2, k3, k4, p1, p2] ranges over the cameras (the data's own lens model; training resamples
            # distorted images to pinhole ones once, on load)
            "distortion": None if cams.is_pinhole else {k: _range(cams.distortion[:, i]) for i, k in enumerate(("k1", "k2", "k3", "k4", "p1", "p2"))},
        },
        "time": None,
        "cameras": None,
        "points": 0 if scene.points is None else int(len(scene.points)),
        "masks": scene.masks is not None,
        "priors": sorted(scene.priors),
        "bounds": {
            "camera_centers": [np.round(centers.min(0), 4).tolist(), np.round(centers.max(0), 4).tolist()],
            "aabb": None if scene.aabb is None else np.round(np.asarray(scene.aabb, dtype=np.float64), 4).tolist(),
            "near_far": None if scene.near_far is None else _range(scene.near_far),
        },
        "background": [float(c) for c in scene.background],
        "warnings": list(scene.warnings),
    }
    if cams.times is not None:
        t = cams.times.double().numpy()
        info["time"] = {"min": round(float(t.min()), 4), "max": round(float(t.max()), 4), "distinct": int(len(np.unique(t)))}
        info["time_by_split"] = {k: _range(t[v]) for k, v in scene.splits.items()}
    if scene.camera_ids is not None:
        info["cameras"] = int(len(np.unique(scene.camera_ids)))
    if decode_one:
        try:
            info["channels"] = int(scene.image(int(scene.splits["train"][0])).shape[-1])
        except ReconError as err:
            info["warnings"].append(f"first training image unreadable: {err}")
    return info


def print_scene_info(info: dict[str, Any], console=None) -> None:
    """Print :func:`scene_info`'s dict as a rich table (to ``console``, default a new rich Console)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"{info['name']}  [dim]({info['format']})[/dim]", show_header=False, title_justify="left")
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()

    def split_text(name: str, count: int) -> str:
        alias = info.get("split_aliases", {}).get(name)
        return f"{name} {count}" + (f" (= {alias})" if alias else "")

    intr = info["intrinsics"]

    def rng(r):
        return f"{r[0]:g}" if r[0] == r[1] else f"{r[0]:g} .. {r[1]:g}"

    table.add_row("data", info["root"])
    table.add_row("frames", f"{info['frames']}: " + ", ".join(split_text(k, v) for k, v in info["splits"].items()))
    res = ", ".join(f"{k} ({v})" if len(info["resolutions"]) > 1 else k for k, v in info["resolutions"].items())
    if info.get("channels"):
        res += f", {info['channels']} channels" + (" (RGBA)" if info["channels"] == 4 else "")
    table.add_row("resolution", res)
    models = ", ".join(f"{m} ({c})" if len(intr["models"]) > 1 else m for m, c in intr["models"].items())
    table.add_row("cameras", models + (", with distortion (training undistorts to pinhole)" if intr["distorted"] else "")
                  + (f", {info['cameras']} physical cameras" if info.get("cameras") else ""))
    if intr.get("distortion"):
        coeffs = {k: r for k, r in intr["distortion"].items() if max(abs(r[0]), abs(r[1])) > 0}
        table.add_row("distortion", "  ".join(f"{k} {rng(r)}" for k, r in coeffs.items()))
    table.add_row("intrinsics", f"fx {rng(intr['fx'])}  fy {rng(intr['fy'])}  cx {rng(intr['cx'])}  cy {rng(intr['cy'])}")
    if info.get("time"):
        t = info["time"]
        per = info.get("time_by_split", {})
        table.add_row("time", f"{t['min']:g} .. {t['max']:g} ({t['distinct']} distinct)"
                      + "".join(f"; {k} {rng(r)}" for k, r in per.items()))
    table.add_row("points", str(info["points"]) if info["points"] else "none")
    table.add_row("masks", "yes" if info["masks"] else "no")
    if info.get("priors"):
        table.add_row("priors", ", ".join(info["priors"]) + " (per view, monocular)")
    b = info["bounds"]
    table.add_row("camera centres", f"{b['camera_centers'][0]} .. {b['camera_centers'][1]}")
    if b.get("aabb"):
        table.add_row("aabb", f"{b['aabb'][0]} .. {b['aabb'][1]}")
    if b.get("near_far"):
        table.add_row("near / far", f"{b['near_far'][0]:g} .. {b['near_far'][1]:g}")
    for w in info["warnings"]:
        table.add_row("[yellow]warning[/yellow]", w)
    console.print(table)
