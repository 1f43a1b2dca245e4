"""G-Shell's settings (``--model.*``). Defaults follow ../shared/reference/mesh_sdf_methods.md section 2 where the
CPU allows, and say where they do not."""

from __future__ import annotations

from dataclasses import dataclass

from recon.methods.base import MethodConfig


@dataclass
class GShellConfig(MethodConfig):
    """G-Shell: a tetrahedral grid with an SDF, a manifold SDF (mSDF) and vertex offsets; marching tets gives a
    watertight template, the mSDF cuts it into open surfaces; a material field and a learnable environment light
    shade it (split-sum)."""

    grid_res: int = 40
    """Cubes per axis of the tetrahedral grid (6 tets each) over the box the training cameras see. G-Shell uses
    128-256 on a GPU; the CPU time per step grows with the surface's triangle count."""
    grid_margin: float = 1.0
    """Scale of that box (1: the extent the cameras see at the focus distance)."""
    init_radius: float = 0.6
    """Radius of the initial sphere (SDF), as a fraction of the box's half-size."""
    train_scale: float = 0.5
    """Training images are downscaled by this factor (the loss is computed at the lower resolution)."""
    views_per_step: int = 2
    """Views per step (G-Shell: 2)."""
    lr_sdf: float = 3e-3
    lr_msdf: float = 3e-2
    lr_offsets: float = 3e-2
    lr_material: float = 1e-2
    lr_light: float = 3e-2
    lr_final_ratio: float = 0.1
    """Exponential decay of every learning rate to this fraction at the last step (G-Shell: 10^(-0.0002 i))."""
    max_offset: float = 0.45
    """Largest vertex offset in grid cells (below half a cell, so tets never invert)."""
    alpha_weight: float = 1.0
    """Weight of the alpha (mask) MSE."""
    msdf_image_weight: float = 0.5
    """Weight of each mSDF image loss (positive mSDF outside the mask; negative inside)."""
    sign_weight_start: float = 0.2
    sign_weight_end: float = 0.01
    """nvdiffrec's SDF sign regulariser (BCE across sign-changing grid edges), decayed over the first quarter."""
    msdf_smooth_weight: float = 0.0
    """Smoothness of the mSDF along grid edges near the surface (not in G-Shell; against speckled cuts, which
    show up as many small boundary loops). 0 = off."""
    open_weight: float = 1e-6
    """G-Shell's 'open' mSDF regulariser (Huber towards -1e-3 at every template vertex; x (64 / grid_res)^3)."""
    material_smooth_weight: float = 0.1
    """Smoothness of the material field under jitter (sigma 0.01 of the box)."""
    light_white_weight: float = 0.01
    """Keeps the learnt light grey on average (light / albedo colour ambiguity)."""
    env_height: int = 16
    """Rows of the learnable lat-long environment (2x as many columns)."""
    min_roughness: float = 0.08
    min_component: float = 0.01
    """The exported mesh drops edge-connected pieces with fewer than this fraction of its faces (floaters)."""
