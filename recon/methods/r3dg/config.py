"""Settings of Relightable 3D Gaussians (``--model.*``); defaults follow the released code's Synthetic4Relight
scripts (../shared/reference/gaussian_methods.md section 2), with its iteration counts as fractions of the run."""

from __future__ import annotations

from dataclasses import dataclass

from recon.gaussians import GaussianConfig
from recon.methods.base import MethodConfig


@dataclass
class R3DGConfig(GaussianConfig, MethodConfig):
    """R3DG: 3DGS with a normal per Gaussian (stage 1), then per-Gaussian PBR materials, local incident light, a
    learnable environment map and ray-traced visibility (stage 2)."""

    stage2_from: float = 0.6
    """Fraction of the run after which stage 2 (materials and light) starts; geometry is frozen from then on (the
    paper's Synthetic4Relight schedule: 30k of 50k iterations)."""
    normal_lr: float = 0.01
    """Learning rate of the per-Gaussian normals."""
    normal_weight: float = 0.01
    """Weight of the MSE between the rendered normal and the (detached) pseudo-normal of the rendered depth."""
    depth_var_weight: float = 0.01
    """Base weight of sqrt(E[d^2] - E[d]^2), ramped x10 per sixth of stage 1 up to x100 (the paper: 10^(iter/5000))."""
    normal_smooth_weight: float = 0.02
    """Weight of the edge-aware smoothness of the rendered normal (Synthetic4Relight: 0.02)."""
    mask_weight: float = 0.1
    """Weight of the BCE between rendered alpha and the data's alpha or mask (when the data has them)."""
    samples: int = 64
    """Incident directions per Gaussian (Fibonacci hemisphere around its normal)."""
    env_height: int = 16
    """Rows of the learnable lat-long environment map (width twice that; the paper: 16 x 32)."""
    env_init: float = 1.0
    """Initial radiance of the environment map."""
    env_lr: float = 0.1
    base_color_lr: float = 0.01
    roughness_lr: float = 0.01
    metallic_lr: float = 0.01
    """Learning rate of the metallic attribute (going past the paper, which fixes F0 = 0.04)."""
    light_lr: float = 1e-3
    """Learning rate of the per-Gaussian local incident light (SH degree 3; the DC term; the rest at a tenth)."""
    pbr_weight: float = 1.0
    """Weight of the PBR image's L1 + D-SSIM in stage 2 (the radiance image keeps training beside it)."""
    light_prior_weight: float = 0.01
    """Weight of the white-light prior: |diffuse incident light - its channel mean| per Gaussian."""
    env_tv_weight: float = 0.01
    """Weight of the environment map's total variation."""
    visibility_cutoff: float = 0.9
    """Rays whose transmittance falls below this are fully shadowed (the paper's early cut)."""
