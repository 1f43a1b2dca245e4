"""Meshes of methods that render depth but have no mesh of their own (Gaussian runs): TSDF fusion of the depth
rendered from the training views (open3d)."""

from __future__ import annotations

import torch
from rich.console import Console
from rich.progress import Progress


@torch.no_grad()
def fuse_rendered_depth(method, scene, time: float | None = None, console: Console | None = None, voxel_fraction: float = 1 / 256):
    """Render depth and colour at every training view of ``scene`` (normalised) and fuse them with a TSDF.

    Args:
        method: a method rendering ``rgb``, ``depth`` and ``alpha``.
        time: scene time for dynamic methods (None: each view's own time).
        voxel_fraction: voxel size as a fraction of the training cameras' diameter (doubled for speed).

    Returns:
        ``trimesh.Trimesh`` with vertex colours, in the normalised frame.
    """
    from recon.geometry.tsdf import tsdf_fuse

    console = console or Console(stderr=True)
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
    return tsdf_fuse(torch.stack(depths), sel.viewmats().cpu(), sel.Ks().cpu(), colors=torch.stack(colors), voxel_size=extent * 2 * voxel_fraction * 2)
