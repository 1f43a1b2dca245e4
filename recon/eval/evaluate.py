"""Evaluation of a method on a split: per-image, per-time and mean PSNR / SSIM / LPIPS, images written; for dynamic
scenes also PSNR / SSIM inside and outside the moving part (:mod:`recon.eval.regions`). With a ground-truth mesh,
:func:`evaluate_geometry` scores the method's own mesh against it (:mod:`recon.eval.surface`).

LPIPS uses the v0.1 weights converted into the user's cache (:mod:`recon.eval.lpips`); when they are missing or bad,
the metrics say why (``lpips_note``) and everything else is still computed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress

from recon.data.scene import SceneData
from recon.errors import ReconError
from recon.eval.lpips import LPIPSUnavailable, load_lpips
from recon.eval.metrics import psnr, ssim
from recon.eval.regions import RegionSums, dynamic_regions, region_sums
if TYPE_CHECKING:
    import trimesh

    from recon.data.normalize import SceneTransform


@torch.no_grad()
def evaluate(
    method, scene: SceneData, split: str = "test", out_dir: Path | None = None, console: Console | None = None, with_lpips: bool = True, lpips_net: str = "alex",
    dynamic_region: str = "auto", envmap: torch.Tensor | None = None, to_env: torch.Tensor | None = None, albedo_scale=None,
) -> dict:
    """Render every frame of ``split`` and compare with the images (RGBA composited over the scene background).
    With ``envmap`` [He, We, 3] (linear lat-long; ``to_env`` [3, 3]: normalised frame -> map frame) the frames are
    relit under it (:meth:`~recon.methods.base.Method.relight`, with ``albedo_scale`` [3] if given) instead of
    rendered.

    Args:
        with_lpips: compute LPIPS (with the ``lpips_net`` backbone: ``alex`` or ``vgg``).
        dynamic_region: ``auto`` (dynamic-region metrics whenever the data defines a region), ``on`` (an error when
            it does not: static data, monocular video without masks) or ``off``.

    Returns:
        ``{"split", "num_images", "psnr", "ssim", "lpips", "lpips_net", "per_image": [...]}``, plus
        ``per_time_{psnr,ssim,lpips}`` for dynamic scenes; without LPIPS, ``lpips_note`` says why. With a dynamic
        region: ``{psnr,ssim}_{dynamic,static}``, ``dynamic_share``, ``dynamic_region_source`` and the same per time
        (``per_time_psnr_dynamic`` ...) and per image; a dynamic scene without one gets ``dynamic_region_note``.
    """
    if envmap is not None and not method.supports("relight"):
        raise ReconError(f"method {method.name!r} cannot relight: --env needs a method with the relight capability")
    if dynamic_region not in ("auto", "on", "off"):
        raise ReconError(f"dynamic_region must be auto, on or off (got {dynamic_region!r})")
    console = console or Console(stderr=True)
    indices = scene.split(split)
    cams = scene.cameras.to(method.device_)
    bg = torch.tensor(scene.background, dtype=torch.float32, device=method.device_)
    lp, lp_note = None, None
    if with_lpips:
        try:
            lp = load_lpips(lpips_net, method.device_)
        except LPIPSUnavailable as exc:
            lp_note = str(exc)
    else:
        lp_note = "LPIPS not computed: switched off"
    regions, region_note = (None, "switched off") if dynamic_region == "off" else dynamic_regions(scene, indices)
    if regions is None and dynamic_region == "on":
        raise ReconError(f"no dynamic-region metrics: {region_note}", scene.root)
    total, per_time_sums = RegionSums(), {}
    rows = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"eval {split}", total=len(indices))
        for i in indices:
            i = int(i)
            cam = cams[i]
            t = None if cam.times is None else float(cam.times[0])
            if envmap is None:
                out = method.render(cam, time=t, outputs=("rgb",), background=bg)
            else:
                out = method.relight(cam, envmap, to_env=to_env, time=t, outputs=("rgb",), background=bg, albedo_scale=albedo_scale)
            pred = out["rgb"].clamp(0, 1).float()
            gt = torch.from_numpy(scene.image_rgb(i)).to(pred)
            row = {"index": i, "image": scene.describe_image(i), "psnr": float(psnr(pred, gt)), "ssim": float(ssim(pred, gt))}
            if t is not None:
                row["time"] = t
            if lp is not None:
                row["lpips"] = float(lp(pred, gt))
            if regions is not None:
                sums = region_sums(pred, gt, regions.masks[i])
                row.update(sums.summary())
                total.add(sums)
                per_time_sums.setdefault(f"{t:.4f}", RegionSums()).add(sums)
            rows.append(row)
            if out_dir is not None:
                from recon.io.images import save_image

                save_image(torch.cat([pred, gt], 1), Path(out_dir) / f"{i:05d}.png")
            progress.advance(task)
    metrics = {
        "split": split,
        "num_images": len(rows),
        "psnr": float(np.mean([r["psnr"] for r in rows])),
        "ssim": float(np.mean([r["ssim"] for r in rows])),
    }
    if lp is not None:
        metrics["lpips"] = float(np.mean([r["lpips"] for r in rows]))
        metrics["lpips_net"] = lpips_net
    else:
        metrics["lpips_note"] = lp_note
    if scene.is_dynamic:
        for key in ("psnr", "ssim", "lpips"):
            if key not in metrics:
                continue
            per_time: dict[str, list[float]] = {}
            for r in rows:
                per_time.setdefault(f"{r['time']:.4f}", []).append(r[key])
            metrics[f"per_time_{key}"] = {k: float(np.mean(v)) for k, v in sorted(per_time.items())}
        if regions is not None:
            metrics.update(total.summary())
            metrics["dynamic_region_source"] = regions.source
            per_time = {k: v.summary() for k, v in sorted(per_time_sums.items())}
            for key in ("psnr_dynamic", "ssim_dynamic", "psnr_static", "ssim_static", "dynamic_share"):
                metrics[f"per_time_{key}"] = {k: v[key] for k, v in per_time.items()}
        elif dynamic_region != "off":
            metrics["dynamic_region_note"] = region_note
    metrics["per_image"] = rows
    return metrics


def read_mesh(path: Path) -> "trimesh.Trimesh":
    """The triangle mesh in a file trimesh reads (PLY, OBJ, STL, OFF, GLB ...; a scene's meshes are concatenated).

    Raises:
        ReconError: the file is missing, unreadable, or holds no triangles with area (message names the file).
    """
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise ReconError("mesh file does not exist", path)
    try:
        mesh = trimesh.load(path, force="mesh")
    except Exception as exc:  # trimesh's readers raise whatever their parser hits (ValueError, KeyError, struct.error ...)
        detail = (str(exc).strip().splitlines() or [""])[0]
        raise ReconError(f"cannot read a mesh from it ({type(exc).__name__}: {detail})", path) from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0 or not mesh.area > 0:
        raise ReconError("the file holds no triangles with area", path)
    return mesh


def ground_truth_mesh(scene: SceneData, name: str) -> "trimesh.Trimesh":
    """A mesh the data ships as ground truth (``recon eval --mesh gt:NAME``; e.g. the ``solids`` demo's
    ``objects_mesh``, its primitives without the ground), in the data's frame."""
    import trimesh

    meshes = sorted(k for k, v in scene.ground_truth.items() if isinstance(v, trimesh.Trimesh))
    if name not in meshes:
        raise ReconError(f"no ground-truth mesh {name!r} in this data (it has: {', '.join(meshes) or 'none'})", scene.root)
    return scene.ground_truth[name]


def evaluate_geometry(method, transform: "SceneTransform", gt: "trimesh.Trimesh", n_points: int, fscore_threshold: float, seed: int = 0) -> dict:
    """Score the method's own mesh against ``gt`` in the data frame (the frame the GT file is in).

    Args:
        method: a method with the ``mesh`` capability; its ``mesh()`` is in the normalised frame.
        transform: the run's scene normalisation, undone on the method's mesh (as the mesh export does).
        gt: the ground-truth mesh, data frame.
        n_points, fscore_threshold, seed: see :func:`recon.eval.surface.surface_metrics` (threshold in data units).

    Returns:
        :func:`recon.eval.surface.surface_metrics` of the two.

    Raises:
        ReconError: the method has no mesh of its own, its mesh is empty, or a setting is out of range.
    """
    import trimesh  # here, with surface (scipy, trimesh: half a second): image-only evaluations do not load them

    from recon.eval.surface import surface_metrics

    if not method.capabilities.mesh:
        raise ReconError(f"method {method.name!r} has no mesh of its own to compare with a ground-truth mesh")
    if n_points < 1 or not fscore_threshold > 0:
        raise ReconError(f"mesh points must be at least 1 and the F-score threshold above 0 (got {n_points}, {fscore_threshold})")
    mesh = method.mesh(time=None)
    vertices = transform.invert_points(np.asarray(mesh.vertices, dtype=np.float64))
    pred = trimesh.Trimesh(vertices, np.asarray(mesh.faces), process=False)  # a new mesh: the method may keep its own
    if len(pred.faces) == 0 or not pred.area > 0:
        raise ReconError(f"method {method.name!r} returned an empty mesh: nothing to compare")
    return surface_metrics(pred, gt, n_points=n_points, fscore_threshold=fscore_threshold, seed=seed)


def write_metrics(metrics: dict | list, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(metrics, indent=2, default=lambda o: None if isinstance(o, float) and math.isnan(o) else str(o)))
    tmp.replace(path)
