"""TSDF fusion of rendered (or sensor) depth maps into a mesh, with open3d's VoxelBlockGrid.

The Gaussian methods' ``--format mesh`` export renders depth from the training views and calls ``tsdf_fuse``.
(open3d's legacy ``ScalableTSDFVolume`` produced empty meshes in our tests; the tensor ``VoxelBlockGrid`` does not.)
"""

from __future__ import annotations

import numpy as np
import trimesh
from torch import Tensor

from recon.errors import ReconError


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def tsdf_fuse(
    depths: Tensor | np.ndarray,
    viewmats: Tensor | np.ndarray,
    Ks: Tensor | np.ndarray,
    voxel_size: float,
    sdf_trunc: float | None = None,
    depth_max: float = 100.0,
    colors: Tensor | np.ndarray | None = None,
    masks: Tensor | np.ndarray | None = None,
    block_count: int = 40000,
    weight_threshold: float = 0.5,
) -> trimesh.Trimesh:
    """Fuse depth maps into a TSDF volume and extract its zero level set.

    Args:
        depths: [C, H, W] camera-space z (same units as the poses); 0 or non-finite = no measurement.
        viewmats: [C, 4, 4] world-to-camera (OpenCV axes).
        Ks: [C, 3, 3] intrinsics.
        voxel_size: voxel edge length in world units.
        sdf_trunc: truncation distance (default 4 voxels).
        depth_max: ignore depth beyond this.
        colors: optional [C, H, W, 3] in [0, 1] -> vertex colours.
        masks: optional [C, H, W] bool; pixels outside are ignored.
        block_count: hash-map capacity (blocks of 8^3 voxels); raise for large scenes.
        weight_threshold: voxels whose accumulated weight (1 per observing view) is not above this are ignored;
            open3d's default of 3 silently drops every surface seen by fewer than three views.
    Returns:
        ``trimesh.Trimesh`` in world coordinates (vertex colours when ``colors`` is given).
    """
    import open3d as o3d
    import open3d.core as o3c

    depths = _np(depths).astype(np.float32)
    viewmats = _np(viewmats).astype(np.float64)
    Ks = _np(Ks).astype(np.float64)
    if depths.ndim != 3 or viewmats.shape != (depths.shape[0], 4, 4) or Ks.shape != (depths.shape[0], 3, 3):
        raise ReconError(f"tsdf_fuse: expected depths [C,H,W], viewmats [C,4,4], Ks [C,3,3]; got "
                         f"{depths.shape}, {viewmats.shape}, {Ks.shape}")
    sdf_trunc = 4 * voxel_size if sdf_trunc is None else sdf_trunc
    names, dtypes, channels = ["tsdf", "weight"], [o3c.float32, o3c.float32], [1, 1]
    if colors is not None:
        colors = _np(colors).astype(np.float32)
        names.append("color")
        dtypes.append(o3c.float32)
        channels.append(3)
    vbg = o3d.t.geometry.VoxelBlockGrid(names, dtypes, channels, voxel_size=voxel_size, block_resolution=8,
                                        block_count=block_count, device=o3c.Device("CPU:0"))
    for c in range(depths.shape[0]):
        d = np.where(np.isfinite(depths[c]) & (depths[c] > 0), depths[c], 0.0).astype(np.float32)
        if masks is not None:
            d = np.where(_np(masks[c]).astype(bool), d, 0.0).astype(np.float32)
        if not (d > 0).any():
            continue
        depth = o3d.t.geometry.Image(o3c.Tensor(d))
        intr = o3c.Tensor(Ks[c])
        extr = o3c.Tensor(viewmats[c])
        coords = vbg.compute_unique_block_coordinates(depth, intr, extr, depth_scale=1.0, depth_max=depth_max,
                                                      trunc_voxel_multiplier=sdf_trunc / voxel_size)
        if colors is not None:
            color = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(colors[c])))
            vbg.integrate(coords, depth, color, intr, intr, extr, depth_scale=1.0, depth_max=depth_max,
                          trunc_voxel_multiplier=sdf_trunc / voxel_size)
        else:
            vbg.integrate(coords, depth, intr, extr, depth_scale=1.0, depth_max=depth_max,
                          trunc_voxel_multiplier=sdf_trunc / voxel_size)
    try:
        mesh = vbg.extract_triangle_mesh(weight_threshold=weight_threshold).to_legacy()
    except RuntimeError:  # open3d raises on an empty surface (e.g. no valid depth at all)
        return trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64), process=False)
    verts = np.asarray(mesh.vertices)
    faces = np.asarray(mesh.triangles)
    vc = np.asarray(mesh.vertex_colors) if colors is not None and mesh.has_vertex_colors() else None
    out = trimesh.Trimesh(verts, faces, vertex_colors=None if vc is None else (np.clip(vc, 0, 1) * 255).astype(np.uint8),
                          process=False)
    # open3d's marching cubes winds triangles inward-facing relative to our convention; fix so normals point out
    if len(out.faces) and out.is_volume and out.volume < 0:
        out.invert()
    return out
