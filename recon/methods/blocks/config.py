"""Settings of Differentiable Blocks World (Monnier et al. 2023); defaults follow the paper's DTU configuration except
where the CPU budget or recon's renderer asks otherwise (each such default says why)."""

from __future__ import annotations

from dataclasses import dataclass

from recon.methods.base import MethodConfig


@dataclass
class BlocksConfig(MethodConfig):
    num_blocks: int = 10
    """Number of superquadric blocks at the start (the transparency terms decide how many survive)."""
    template_level: int = 2
    """Icosphere subdivisions of the block template (1: 42 vertices as in the paper; 2: 162, sharper boxes)."""
    texture_size: int = 128
    """Side of each block's square texture (the paper: 256; 128 halves the CPU cost and the images here are small)."""
    env_texture_size: int = 256
    """Side of the ground's and the background's textures."""
    n_layers: int = 5
    """Surfaces composited per pixel (front faces only: blocks are convex, so one layer per block on a ray)."""
    train_scale: float = 1.0
    """Render and compare at this fraction of the image resolution (e.g. 0.5 for large images on a CPU)."""

    # ---- schedule, as fractions of the run (the paper's DTU epochs 750 / 1500 / 1700 of 1800)
    decimate_until: float = 0.417
    """Textures average-pooled by ``decimate_factor`` until this fraction: low frequencies first, so blocks cannot
    explain geometry with texture detail."""
    decimate_factor: int = 8
    """Pooling factor of the coarse texture phase."""
    env_decimate_factor: int = 32
    """Pooling factor of the ground's and background's textures in the same phase. They span the whole environment,
    so the blocks' factor would still let the ground paint the objects' colours where it shows through
    half-transparent blocks (and win against blocks that never get opaque)."""
    coarse_until: float = 0.833
    """End of the coarse phase: opacity noise, parsimony and overlap stop, blocks with opacity <= 0.5 go, the rest
    become opaque."""
    lr_drop_at: float = 0.944
    """Learning rates times 0.1 from this fraction on."""

    # ---- learning rates (Adam)
    lr: float = 1e-2
    """Shape, pose, opacity and ground-pose parameters (the paper: 5e-3 over ~22k four-view steps; twice that here,
    where a run is 2000-5000 single-view steps: on demo:solids it turned the cube's block from a rounded blob into a
    box, Chamfer 0.034 -> 0.026, seed 1)."""
    ground_lr_scale: float = 1.0
    """Multiplier of ``lr`` for the ground's pose correction. Below 1 keeps a ground estimated without points (from
    the cameras alone) from turning into a wall; the blocks then take the table's place instead (DTU scan65)."""
    texture_lr: float = 5e-2
    """Texture logits."""

    # ---- losses (the paper's weights)
    parsimony_weight: float = 0.002
    """Mean over blocks of sqrt(opacity), coarse phase only: fewer blocks. The paper's 0.01 balances the photometric
    pull of DTU objects that fill much of the frame; on the solids demo (each solid a few % of the image) it removed
    every block but one or two, 0.002 kept one per solid (docs/benchmarks.md)."""
    overlap_weight: float = 1.0
    """Summed soft occupancy above ``overlap_limit`` at points sampled in the blocks, coarse phase only."""
    overlap_limit: float = 1.95
    """Summed occupancy a point may have before the overlap term charges it."""
    overlap_points: int = 1000
    """Points drawn per block for the overlap term."""
    overlap_temperature: float = 0.005
    """Soft occupancy = sigmoid(-pseudo SDF / temperature)."""
    tv_weight: float = 0.1
    """Total variation of the textures (x0.1 after the coarse phase)."""
    perceptual_weight: float = 0.0
    """LPIPS (VGG) weight (the paper: 0.1, x0.1 after the coarse phase). Off by default: on the CPU it costs more than
    the rest of a step (about 5x a step's time on demo:solids); the weights come from recon's set-up
    (``python -m recon.eval.lpips --fetch``)."""
    opacity_noise: float = 1.0
    """Std of the Gaussian noise added to opacity logits in the coarse phase (pushes opacities to 0 or 1)."""
    kill_opacity: float = 0.01
    """Blocks below this opacity leave rendering and losses for good."""
    detach_bary: bool = True
    """No gradient through barycentrics (as the paper): geometry learns from silhouettes and coverage only, not from
    sliding textures."""

    # ---- initialisation
    init: str = "auto"
    """Block initialisation: ``points`` (k-means of the points above the ground), ``hull`` (k-means of a visual hull
    from the masks), ``random`` (uniform in the object region, as the paper), or ``auto`` (points, else hull, else
    random)."""
    init_scale: float = 1.2
    """Initial blocks are balls of radius ``init_scale`` x 2 x the largest standard deviation of their cluster (random
    init: x half the region's radius). Above 1, neighbouring clusters of one object start overlapping, so the
    overlap and parsimony terms merge them instead of leaving side-by-side pieces."""
    ground: str = "auto"
    """Ground plane: ``points`` (RANSAC on the points), ``cameras`` (below the objects, normal = the cameras' mean
    up), ``none`` or ``auto`` (points, else cameras)."""
    background: str = "auto"
    """What lies beyond the ground: ``sphere`` (a textured background sphere, for photos), ``data`` (the data's
    transparent background: the ground gets an alpha channel) or ``auto`` (``data`` for RGBA images)."""
    seed: int = 0
    """Seed of the initialisation and the coarse-phase noise (the trainer's seed also shuffles views)."""
