"""Swift4D's settings and its three-stage schedule.

Stage lengths are fractions of ``--max-steps`` so that a few-thousand-step CPU run and a long GPU run split their
budget the same way. The reference (gaussian_methods.md §1.1) runs 5000 canonical + 3000 d-score + ~13000 fine
steps; the d-score stage only fits one scalar per Gaussian with detached geometry (about a minute on a GPU), so
we give it a smaller share: 25 % canonical, 5 % d-score, 70 % spatio-temporal by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recon import splats as sp
from recon.methods.gs.model import GSConfig


def _densify_defaults() -> sp.DensifyConfig:
    # Reference: clone/split every 100 steps from step 500 to 10000 of ~21000 (≈ 0.03 .. 0.5 of the run), over the
    # canonical and the fine stage (not the d-score stage, which does not move geometry). No opacity reset: the
    # paper drops it in the fine stage, and in the canonical stage the reference's single reset (at 3000) is a
    # floater clean-up that temporal-importance pruning already does; on short CPU runs the recovery from a reset
    # would eat a large share of the budget.
    return sp.DensifyConfig(refine_start=0.03, refine_stop=0.5, reset_every=0, max_gaussians=300_000)


@dataclass
class Swift4DConfig(GSConfig):
    all_dynamic: bool = False
    """Baseline: skip the d-score stage and deform every Gaussian (the 4DGS-style design Swift4D improves on)."""
    canonical_fraction: float = 0.25
    """Share of the steps spent on the canonical stage (3DGS on frame 0 of every camera; all frames for
    monocular data)."""
    dscore_fraction: float = 0.05
    """Share of the steps spent on the d-score stage (only the dynamic score d is optimised)."""
    views_per_step: int = 2
    """Views rendered per step in the canonical and spatio-temporal stages (the reference's batch of 2)."""
    dscore_min_steps: int = 150
    """The d-score stage lasts at least this many steps (at most a quarter of the run): d must be able to travel
    past ζ, which takes Adam ~ζ/lr consistent steps."""
    dscore_lr: float = 0.05
    """Adam learning rate of d (reference: 0.05 for 3000 steps, decaying barely: towards 0.1x over 10x the stage).
    Shorter stages scale it up to keep the reference's reach lr x steps = 150 (so d can still pass ζ)."""
    dynamic_threshold: float = 7.0
    """ζ: Gaussians with d > ζ are dynamic (multi-view video; the paper's value)."""
    mono_dynamic_threshold: float = 1.0
    """ζ for monocular data. Its change masks are a pseudo ground truth (the residual of a static fit) and its moving
    parts are fitted as a smear of semi-transparent Gaussians along the path, each over masked and unmasked pixels,
    so their d scores are diluted; a smear Gaussian left static cannot fade with time. On D-NeRF lego (five seeds)
    ζ = 1 beats the paper's 7 by 0.44 dB val PSNR on the mean (docs/benchmarks.md)."""
    mask_threshold: float = 0.02
    """γ: a pixel is dynamic when its blurred temporal std (mean over RGB) is >= γ (multi-view video)."""
    mask_blur: int = 31
    """Blur kernel size at N3DV's 1352-px width (the reference's 31x31); scaled with the image width (1 = off)."""
    mono_mask_threshold: float = 0.08
    """Monocular data: a pixel is dynamic when the blurred residual of the canonical static fit is >= this (on
    D-NeRF lego after the canonical stage the blurred residual of static texture is mostly < 0.07 (90 % quantile),
    while the averaged-out moving bucket is > 0.2; 0.08 marks ~7 % of the pixels)."""
    field_lr: float = 2e-3
    """Adam learning rate of the hash grid + MLPs at the start of the fine stage (paper: 2e-3; code: 2e-4 x extent)."""
    field_lr_final: float = 2e-5
    """Final learning rate of the field (exponential decay over the fine stage)."""
    appearance_deltas: str = "on"
    """Whether the field also outputs Δopacity and ΔSH (the reference's five heads) or only Δxyz, Δlog-scale,
    Δquaternion: ``on``, ``off``, or ``auto`` (on for multi-view video, off for monocular data). Geometry-only
    deformation is the 4DGS/D-NeRF choice for monocular video. On D-NeRF lego it scored about 1 dB below the five
    heads at 2000 steps, and about 0.4 dB above them (five-seed mean) with 6000 steps, where the fading heads
    overfit (docs/benchmarks.md); the reference's heads are the default."""
    log2_hashmap_size: int = 15
    """log2 rows per hash-grid level (reference default 15); with ``auto_hashmap`` an upper bound."""
    auto_hashmap: bool = True
    """Size the table by the number of Gaussians it encodes (2 rows per Gaussian, the reference's operating point
    of ~1.6 rows per dynamic Gaussian on N3DV), between 2^12 and 2^log2_hashmap_size."""
    time_resolution: int = 0
    """Cap on the field's time resolution (cells along t at every level); 0 = auto: the number of distinct training
    times for multi-view video (finer cells cannot be supervised), and that number / ``mono_views_per_time_cell``
    for monocular data."""
    mono_views_per_time_cell: int = 4
    """Monocular data: training views that share one time cell of the field (auto ``time_resolution``). With one
    camera per time, a cell per frame lets the field fit each view on its own (no multi-view constraint: on D-NeRF
    lego 1 dB lower val PSNR at a higher train PSNR)."""
    box_padding: float = 0.05
    """Pad the field's xyz box (min/max of the deformed Gaussians' centres at fine-stage start) by this fraction."""
    importance_threshold: float = 0.02
    """Temporal-importance pruning: remove Gaussians whose max α·T over training views and times is below this."""
    importance_every: float = 0.25
    """Temporal-importance pruning every this fraction of the steps (and once at the end of the canonical stage);
    0 disables it."""
    importance_max_views: int = 16
    """Views of a pruning pass: at most this many in the canonical stage (evenly spread); in the fine stage one per
    distinct training time (always, even above this cap) topped up with evenly spread views to this many."""
    distortion_reg: float = 100.0
    """Weight of the depth-distortion regulariser (see ``gs``), which Swift4D applies in the fine stage to every
    Gaussian but only on the pixels outside each view's change mask: a ray there should meet one surface. Inside
    the masks it is off, because a monocular fit shows the moving part through semi-transparent Gaussians along
    its path that the term would flatten. Masked, it gave +0.4 to +0.7 dB val PSNR on D-NeRF lego (three seeds,
    docs/benchmarks.md). Which data it is used on: ``distortion``."""
    distortion: str = "auto"
    """Whether the fine stage uses the masked depth-distortion term: ``on``, ``off``, or ``auto`` (on for
    monocular data, where the val views extrapolate from one view per time; off for multi-view video: on the
    built-in demo, whose cameras sit inside the scene, the term is 35-120x larger for the same weight and cost
    0.4 to 4.9 dB)."""
    sh_degree_interval: int = 500
    init_num_points: int = 30_000
    """Random initial points (data without a point cloud), in the box the training cameras look at."""
    densify: sp.DensifyConfig = field(default_factory=_densify_defaults)


@dataclass(frozen=True)
class Stages:
    """Step boundaries: canonical [0, canonical_end), d-score [canonical_end, dscore_end), fine [dscore_end, max)."""

    canonical_end: int
    dscore_end: int
    max_steps: int

    @staticmethod
    def of(cfg: Swift4DConfig, max_steps: int) -> "Stages":
        c = max(1, int(round(cfg.canonical_fraction * max_steps)))
        n_d = max(1, int(round(cfg.dscore_fraction * max_steps)), min(cfg.dscore_min_steps, max_steps // 4))
        d = c if cfg.all_dynamic else c + n_d
        return Stages(min(c, max_steps), min(d, max_steps), max_steps)

    def at(self, step: int) -> str:
        if step < self.canonical_end:
            return "canonical"
        if step < self.dscore_end:
            return "dscore"
        return "fine"
