"""Meshes from Gaussian runs: TSDF fusion of rendered depth from the training views (open3d), in the data frame."""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress


@torch.no_grad()
def export_tsdf_mesh(run, path: Path, time: float | None = None, console: Console | None = None, voxel_fraction: float = 1 / 256) -> Path:
    """Render depth and colour at every training view, fuse them with a TSDF and write the mesh (PLY/OBJ/GLB by suffix)."""
    from recon.geometry.tsdf import tsdf_fuse

    console = console or Console(stderr=True)
    method, scene = run.method, run.scene
    idx = scene.split("train")
    cams = scene.cameras.to(method.device_)
    depths, colors = [], []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("render depth", total=len(idx))
        for i in idx:
            cam = cams[int(i)]
            t = time if time is not None else (None if cam.times is None else float(cam.times[0]))
            out = method.render(cam, time=t, outputs=("rgb", "depth", "alpha"))
            d = out["depth"][..., 0].clone()
            d[out["alpha"][..., 0] < 0.5] = 0.0  # no surface: leave the voxel unobserved
            depths.append(d.cpu())
            colors.append(out["rgb"].cpu())
            progress.advance(task)
    sel = cams[torch.from_numpy(idx)]
    centers = sel.centers()
    extent = float((centers - centers.mean(0)).norm(dim=1).max())
    mesh = tsdf_fuse(torch.stack(depths), sel.viewmats().cpu(), sel.Ks().cpu(), colors=torch.stack(colors), voxel_size=extent * 2 * voxel_fraction * 2)
    # Back to the data frame.
    mesh.vertices = run.transform.invert_points(mesh.vertices)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mesh.export(path)
    console.print(f"recon: wrote mesh with {len(mesh.faces)} triangles to {path}")
    return path
