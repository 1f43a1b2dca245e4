"""Swift4D's settings and its three-stage schedule.

Stage lengths are fractions of ``--max-steps`` so that a few-thousand-step CPU run and a long GPU run split their
budget the same way. The reference (gaussian_methods.md §1.1) runs 5000 canonical + 3000 d-score + ~13000 fine
steps; the d-score stage only fits one scalar per Gaussian with detached geometry (about a minute on a GPU), so
we give it a smaller share: 25 % canonical, 5 % d-score, 70 % spatio-temporal by default. Monocular data lays
these fractions out over the first ``mono_schedule_steps`` (2000) and gives every further step to the fine stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recon.gaussians import DensifyConfig, GaussianConfig
from recon.methods.base import MethodConfig


def _densify_defaults() -> DensifyConfig:
    # Reference: clone/split every 100 steps from step 500 to 10000 of ~21000 (≈ 0.03 .. 0.5 of the run), over the
    # canonical and the fine stage (not the d-score stage, which does not move geometry). No opacity reset: the
    # paper drops it in the fine stage, and in the canonical stage the reference's single reset (at 3000) is a
    # floater clean-up that temporal-importance pruning already does; on short CPU runs the recovery from a reset
    # would eat a large share of the budget.
    return DensifyConfig(refine_start=0.03, refine_stop=0.5, reset_every=0, max_gaussians=300_000)


@dataclass
class Swift4DConfig(GaussianConfig, MethodConfig):
    all_dynamic: bool = False
    """Baseline: skip the d-score stage and deform every Gaussian (the 4DGS-style design Swift4D improves on)."""
    canonical_fraction: float = 0.25
    """Share of the steps spent on the canonical stage (3DGS on frame 0 of every camera; all frames for
    monocular data)."""
    dscore_fraction: float = 0.05
    """Share of the steps spent on the d-score stage (only the dynamic score d is optimised)."""
    mono_schedule_steps: int = 2000
    """Monocular data: the canonical and d-score stages and the densification window are laid out as fractions of
    this many steps however long the run, and the steps beyond it extend the spatio-temporal stage (0: fractions of
    ``--max-steps``, as for multi-view video). Longer canonical stages fit the moving part's time-averaged smear
    better and leave smaller change masks; what a longer run needs on D-NeRF lego is more fine-stage steps."""
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
    appearance_deltas: str = "auto"
    """Whether the field also outputs Δopacity and ΔSH (the reference's five heads) or only Δxyz, Δlog-scale,
    Δquaternion: ``on``, ``off``, or ``auto`` (on for multi-view video, off for monocular data). Geometry-only
    deformation is the 4DGS/D-NeRF choice for monocular video: with one view per time the fading heads overfit
    the training views as soon as the run is longer than ~2000 steps, while the geometric ones keep improving
    (D-NeRF lego, docs/benchmarks.md)."""
    log2_hashmap_size: int = 15
    """log2 rows per hash-grid level (reference default 15); with ``auto_hashmap`` an upper bound."""
    auto_hashmap: bool = True
    """Size the table by the number of Gaussians it encodes (2 rows per Gaussian, the reference's operating point
    of ~1.6 rows per dynamic Gaussian on N3DV), between 2^12 and 2^log2_hashmap_size."""
    time_resolution: int = 0
    """Cap on the field's time resolution (cells along t at every level); 0 = auto: the number of distinct training
    times for multi-view video (finer cells cannot be supervised), and that number / ``mono_views_per_time_cell``
    for monocular data."""
    time_base_resolution: int = 0
    """Cells along t at the coarsest level of the field (doubling per level up to the time resolution above);
    0 = auto: 1 for multi-view video, the reference's 16 (the spatial axes' schedule) for monocular data. With
    every level at one cell per frame, as in the reference, the field's deltas at a time no view has shown yet are
    whatever its untrained table entries give; coarse time levels interpolate, and hence extrapolate, the motion of
    the times already learnt, so an object that travels is followed instead of faded (``time_ramp``)."""
    mono_views_per_time_cell: int = 4
    """Monocular data: training views that share one time cell of the field (auto ``time_resolution``). With one
    camera per time, a cell per frame lets the field fit each view on its own (no multi-view constraint: on D-NeRF
    lego 1 dB lower val PSNR at a higher train PSNR)."""
    time_ramp: float = 0.5
    """Multi-view video: share of the spatio-temporal stage over which the times it trains on grow from the canonical
    frame's to the whole clip (0: every time from the start). The canonical Gaussians sit where things were at
    frame 0; an object that travels further than its own size has no overlap between where it is rendered and
    where it is seen at a distant time, so photometric gradients cannot pull it there and the field fades it out
    instead. Growing the window a frame at a time keeps the next time's target overlapping the motion learnt so
    far, and the field's coarse time levels (``time_base_resolution``) carry that motion into the next frame.
    While the window grows, one of each step's views shows its newest time (the others replay the times before)
    and the field's learning rate holds at ``field_lr``; it decays over the rest of the stage."""
    opaque_background: str = "random"
    """What the renders of opaque training images (video: every pixel sees the scene) are composited over:
    ``random`` (a new colour each step) or ``data`` (the scene's background colour). The target does not depend on
    it, so a random one leaves no pixel that the model may cover with half-transparent Gaussians over a backdrop
    of the right colour; on the sparse camera rigs of multi-view video such a film is invisible from the training
    cameras and shows as a colour cast of the backdrop's hue from an unseen one. (RGBA data follows the trainer's
    ``--trainer.background``.)"""
    time_smoothness: float = 0.0
    """Weight of a temporal-smoothness term on the field (fine stage; multi-view video): the squared second
    difference of its geometric deltas over one time cell, at a random time. It penalises acceleration, not motion.
    Off for video, where every time is seen by every camera (on the built-in demo it changed nothing and cost 20 %
    more time per step)."""
    mono_time_smoothness: float = 0.01
    """The same weight for monocular data, where it ties a time that few views constrain (D-NeRF lego: t = 0.16 and
    0.18, from two high cameras) to its neighbours' trajectory instead of letting the field fit those views alone."""
    time_smoothness_share: float = 0.25
    """Share of the deformed Gaussians the temporal-smoothness term samples per step (1 = all; the term costs three
    field evaluations of the sampled Gaussians)."""
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
    mono_ssim_lambda: float = 0.0
    """D-SSIM weight of the photometric loss for monocular data (multi-view video uses ``ssim_lambda``, 0.2 as in
    3DGS and the paper). On D-NeRF lego plain L1 trains half as many Gaussians, a step costs about 0.6x, and val
    PSNR rose on all five seeds tried (+0.16 to +1.09 dB; mean 25.38 against 24.67), most on the early frames whose
    arm pose only two high views show (docs/benchmarks.md)."""
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
    densify: DensifyConfig = field(default_factory=_densify_defaults)


@dataclass(frozen=True)
class Stages:
    """Step boundaries: canonical [0, canonical_end), d-score [canonical_end, dscore_end), fine [dscore_end, max)."""

    canonical_end: int
    dscore_end: int
    max_steps: int

    @staticmethod
    def of(cfg: Swift4DConfig, max_steps: int, layout_steps: int | None = None) -> "Stages":
        """The stage fractions apply to ``layout_steps`` (default ``max_steps``); the fine stage runs to
        ``max_steps``."""
        n = max_steps if layout_steps is None else min(layout_steps, max_steps)
        c = max(1, int(round(cfg.canonical_fraction * n)))
        n_d = max(1, int(round(cfg.dscore_fraction * n)), min(cfg.dscore_min_steps, n // 4))
        d = c if cfg.all_dynamic else c + n_d
        return Stages(min(c, max_steps), min(d, max_steps), max_steps)

    def at(self, step: int) -> str:
        if step < self.canonical_end:
            return "canonical"
        if step < self.dscore_end:
            return "dscore"
        return "fine"
