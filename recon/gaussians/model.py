"""The Gaussian model every Gaussian method composes: named per-Gaussian parameters with their learning rates, one
Adam per parameter, density control, and rasterization with the model's settings.

A method holds one :class:`GaussianModel` (as ``self.splats``) and adds what only it needs:

- extra per-Gaussian attributes (:meth:`GaussianModel.add_attribute`): a dynamic score (Swift4D), normals and BRDF
  parameters (R3DG), physics bindings (GASP). They live in the same dict as the 3DGS parameters, so gsplat's
  densification clones, splits, prunes and relocates them with their Gaussians, and each gets its own Adam;
- a flat variant (``flat=True``, 2D-Gaussian-like surfels, GASP): the third scale axis is pinned to
  :data:`FLAT_SCALE` when rasterizing, so each Gaussian is a disc in its local xy plane;
- its own losses, schedule and stages, calling the model's :meth:`~GaussianModel.rasterize`,
  :meth:`~GaussianModel.before_backward` and :meth:`~GaussianModel.after_optimizer_step`.

The model is an ``nn.ParameterDict`` (gsplat's strategies take a dict of parameters and rewrite its entries), so
its state-dict keys are ``<attribute>.<name>`` — ``splats.means``, ``splats.d``, ... as in checkpoints written
before it existed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from recon.cameras import Cameras
from recon.gaussians.densify import Densifier, DensifyConfig
from recon.gaussians.params import focus_box, init_splats, initial_points, make_adam, resize_like, scene_scale_of, set_lr
from recon.render.gaussians import rasterize_gaussians
from recon.schedules import exponential_decay

#: The 3DGS parameters (gsplat's names), in the order they are created.
GAUSSIAN_KEYS = ("means", "scales", "quats", "opacities", "sh0", "shN")
#: Thickness (activated scale of the local z axis) of flat Gaussians, in normalised scene units.
FLAT_SCALE = 1e-6


@dataclass
class GaussianConfig:
    """Settings every Gaussian method shares (its ``--model.*`` options): initialisation, learning rates, density
    control, rasterization and the 3DGS photometric loss."""

    sh_degree: int = 3
    """Maximum spherical-harmonic degree of the colours."""
    sh_degree_interval: int = 1000
    """Raise the active SH degree by one every N steps."""
    init: str = "auto"
    """Initial Gaussians: ``points`` (the data's point cloud), ``random`` (uniform in the scene box) or ``auto``
    (points when the data has them)."""
    init_num_points: int = 100_000
    """Number of random initial points."""
    init_extent: float = 0.33
    """Half-size of the random-initialisation cube, as a fraction of the cameras' mean distance to the point they
    look at (3DGS uses ±1.3 around Blender scenes seen from 4.03). Kept clear of the cameras: Gaussians right in
    front of a lens cover its whole image and stall training."""
    init_opacity: float = 0.1
    """Initial opacity."""
    init_scale: float = 1.0
    """Initial scale relative to the mean distance to the 3 nearest neighbours."""
    means_lr: float = 1.6e-4
    """Learning rate of the means (× scene scale), decayed exponentially to ``means_lr_final_ratio`` of it."""
    means_lr_final_ratio: float = 0.01
    """Final fraction of the means' learning rate."""
    scales_lr: float = 5e-3
    quats_lr: float = 1e-3
    opacities_lr: float = 5e-2
    sh0_lr: float = 2.5e-3
    shN_lr: float = 2.5e-3 / 20
    ssim_lambda: float = 0.2
    """Weight of D-SSIM in the photometric loss."""
    distortion_reg: float = 0.0
    """Weight of the depth-distortion regulariser (Mip-NeRF 360 / 2DGS, in its squared-distance form): the mean
    over pixels of sum_ij w_i w_j (z_i - z_j)^2 / 2 = alpha * E[z^2] - E[z]^2 (w: blending weights, z: camera depth
    in units of the scene scale). It pulls the Gaussians a ray passes through onto one surface instead of a slab
    of semi-transparent layers that only the training viewpoints blend right. Costs one extra 2-channel render of
    one view per step. 0 = off."""
    distortion_from: float = 0.25
    """Fraction of the run after which the depth-distortion term is on (2DGS starts at 3000 of 30000 steps). Earlier
    it wins against a random initialisation by making every Gaussian transparent: on D-NeRF lego from 10 % of a
    2000-step run, training PSNR was still 12 dB at step 800."""
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    """Adaptive density control."""
    antialiased: bool = False
    """Mip-Splatting's antialiased rasterization (opacity compensation of the 2D dilation)."""
    near_plane: float = 0.01
    far_plane: float = 1e10


@dataclass(frozen=True)
class Attribute:
    """A method's own per-Gaussian tensor: [N, *shape] starting at ``init``, optimised by Adam at ``lr``."""

    shape: tuple[int, ...] = ()
    lr: float = 0.0
    init: float = 0.0


class GaussianModel(nn.ParameterDict):
    """Per-Gaussian parameters (pre-activation, gsplat's names; shapes in :mod:`recon.gaussians.params`) plus the
    method's extra attributes, their optimizers and the densifier.

    Lifecycle: :meth:`initialize` (or :meth:`resize_like` from a checkpoint), then :meth:`build_optimizers`; each
    training step :meth:`rasterize` -> loss -> :meth:`before_backward` -> backward -> optimizer step ->
    :meth:`after_optimizer_step`.

    Args:
        config: the shared Gaussian settings (a method's config, which extends :class:`GaussianConfig`).
        flat: flat Gaussians (discs): the third scale axis is rendered at :data:`FLAT_SCALE`.
    """

    def __init__(self, config: GaussianConfig, flat: bool = False):
        super().__init__()
        self.config = config
        self.flat = flat
        self.attributes: dict[str, Attribute] = {}
        self.scene_scale = 1.0
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.densifier: Densifier | None = None

    # ---------------------------------------------------------------- parameters
    def add_attribute(self, name: str, shape: tuple[int, ...] = (), lr: float = 0.0, init: float = 0.0) -> None:
        """Declare a per-Gaussian attribute [N, *shape] (created now if the model has Gaussians, else by
        :meth:`initialize`); densification treats it like the 3DGS parameters."""
        if name in GAUSSIAN_KEYS or hasattr(type(self), name):
            raise ValueError(f"per-Gaussian attribute name {name!r} is taken")
        self.attributes[name] = Attribute(tuple(shape), lr, init)
        if "means" in self and name not in self:
            self._create(name)

    def _create(self, name: str) -> None:
        spec, means = self.attributes[name], self["means"]
        self[name] = nn.Parameter(torch.full((means.shape[0], *spec.shape), spec.init, device=means.device))

    def initialize(self, points: Tensor, colors: Tensor) -> None:
        """Gaussians at ``points`` [N, 3] with colours ``colors`` [N, 3] (see :func:`~recon.gaussians.init_splats`),
        and every declared attribute at its initial value."""
        c = self.config
        for name, p in init_splats(points, colors, c.sh_degree, c.init_opacity, c.init_scale).items():
            self[name] = p
        if self.flat:
            # The stored third log-scale is never rendered (it gets no gradient), but gsplat's split samples the
            # children's offsets with all three scales: pinning it keeps splits in the disc's plane.
            # Random orientations: discs that all start facing one axis are edge-on, so invisible, to half the views.
            with torch.no_grad():
                self["scales"][:, 2] = math.log(FLAT_SCALE)
                self["quats"].copy_(torch.nn.functional.normalize(torch.randn_like(self["quats"]), dim=-1))
        for name in self.attributes:
            self._create(name)

    def setup_from_scene(self, scene, max_steps: int, device) -> float:
        """The plain 3DGS set-up: Gaussians at the scene's points (or random in its focus box, as ``init`` says) on
        ``device``, optimizers and densifier laid out over ``max_steps``. Returns the scene scale (the training
        cameras' spread), which the method keeps in its state."""
        c = self.config
        # Rounded to float32 as the method's buffer keeps it: a resumed run rebuilds its optimizers from the
        # buffer, and a different last bit of the means' learning rate would make it diverge from an uninterrupted one.
        scale = float(torch.tensor(scene_scale_of(scene.cameras[torch.from_numpy(scene.split("train"))]), dtype=torch.float32))
        pts, cols = initial_points(scene, c.init, c.init_num_points, focus_box(scene, c.init_extent))
        self.initialize(pts.to(device), cols.to(device))
        self.build_optimizers(scale, max_steps)
        return scale

    def load_shapes(self, state_dict: dict[str, Tensor], prefix: str, scene_scale: float, max_steps: int, device) -> None:
        """Take a checkpoint's Gaussian count (:meth:`resize_like`), move to ``device`` and rebuild the optimizers
        and densifier for ``scene_scale`` and ``max_steps``: what a method's ``resize_for_state_dict`` does."""
        self.resize_like(state_dict, prefix)
        self.to(device)
        self.build_optimizers(scene_scale, max_steps)

    def resize_like(self, state_dict: dict[str, Tensor], prefix: str) -> None:
        """Take the shapes of the checkpoint entries ``prefix + name`` (the Gaussian count changes in training)."""
        if len(self) == 0:
            for key, value in state_dict.items():
                if key.startswith(prefix):
                    self[key[len(prefix):]] = nn.Parameter(torch.empty_like(value))
        else:
            resize_like(self, state_dict, prefix)

    @property
    def num_gaussians(self) -> int:
        return int(self["means"].shape[0]) if "means" in self else 0

    def gaussian_params(self) -> dict[str, Tensor]:
        """The 3DGS parameters only (what rasterization, exports and the viewer use), not detached."""
        return {k: self[k] for k in GAUSSIAN_KEYS}

    def activated_scales(self, params: dict[str, Tensor] | None = None) -> Tensor:
        """[N, 3] positive scales of ``params`` (default: this model's); flat models pin the third axis."""
        log_scales = (self if params is None else params)["scales"]
        if not self.flat:
            return torch.exp(log_scales)
        return torch.cat([torch.exp(log_scales[:, :2]), log_scales.new_full((log_scales.shape[0], 1), FLAT_SCALE)], 1)

    # ---------------------------------------------------------------- optimisation
    def learning_rates(self) -> dict[str, float]:
        """Initial learning rate of every parameter (the means' scaled by the scene scale)."""
        c = self.config
        lrs = {"means": c.means_lr * self.scene_scale, "scales": c.scales_lr, "quats": c.quats_lr,
               "opacities": c.opacities_lr, "sh0": c.sh0_lr, "shN": c.shN_lr}  # fmt: skip
        lrs.update({name: spec.lr for name, spec in self.attributes.items()})
        return lrs

    def build_optimizers(self, scene_scale: float, densify_steps: int) -> None:
        """One Adam per parameter and a fresh densifier whose window (``densify.refine_start`` / ``refine_stop``
        fractions) is laid out over ``densify_steps``; declared attributes missing from a checkpoint start at
        their initial value."""
        for name in self.attributes:
            if name not in self:
                self._create(name)
        self.scene_scale = float(scene_scale)
        self.optimizers = make_adam(self, self.learning_rates())
        self.densifier = Densifier(self.config.densify, self.scene_scale, densify_steps)
        self.densifier.check(self, self.optimizers)

    def schedule_means_lr(self, step: int, max_steps: int) -> None:
        """3DGS's exponential decay of the means' learning rate over ``max_steps``."""
        lr = self.learning_rates()["means"]
        set_lr(self.optimizers["means"], exponential_decay(step, lr, lr * self.config.means_lr_final_ratio, max_steps))

    def active_sh_degree(self, step: int | None) -> int:
        """SH degree in use at ``step`` (one more every ``sh_degree_interval``; the full degree for None)."""
        if step is None:
            return self.config.sh_degree
        return min(step // max(self.config.sh_degree_interval, 1), self.config.sh_degree)

    def regularizer(self) -> Tensor | float:
        """The densifier's regularisers (MCMC's opacity and scale terms; 0 for the default strategy)."""
        return self.densifier.regularizer(self)

    def before_backward(self, step: int, info: dict) -> None:
        self.densifier.pre_backward(self, self.optimizers, step, info)

    def after_optimizer_step(self, step: int, info: dict) -> None:
        # As in gsplat's trainer: gradient statistics and densification run after the optimizer step (the 2D-mean
        # gradient survives zero_grad because means2d is not a parameter).
        self.densifier.post_backward(self, self.optimizers, step, info, packed=False,
                                     means_lr=self.optimizers["means"].param_groups[0]["lr"])  # fmt: skip

    @torch.no_grad()
    def remove(self, mask: Tensor) -> None:
        """Drop the Gaussians where ``mask`` [N] is true, with their attributes, Adam moments and densifier state."""
        from gsplat.strategy.ops import remove

        remove(self, self.optimizers, self.densifier.state, mask)

    def densifier_state(self) -> dict:
        return self.densifier.state_dict() if self.densifier else {}

    def load_densifier_state(self, state: dict) -> None:
        if self.densifier is not None and state:
            self.densifier.load_state_dict(state)

    # ---------------------------------------------------------------- rendering
    def rasterize(self, camera: Cameras, background: Tensor | None, sh_degree: int | None, render_mode: str = "RGB+ED",
                  params: dict[str, Tensor] | None = None, colors: Tensor | None = None, **kw):  # fmt: skip
        """Rasterize ``params`` (pre-activation Gaussians with gsplat's names; default: this model's, methods pass
        e.g. deformed copies) into ``camera`` (a batch of one) with the model's settings. ``colors`` [N, D] with
        ``sh_degree`` None splats per-Gaussian features instead of the SH colours. Returns
        :func:`~recon.render.gaussians.rasterize_gaussians`' (colors, alphas, meta)."""
        s = self if params is None else params
        if colors is None:
            colors = torch.cat([s["sh0"], s["shN"]], 1)
        c = self.config
        return rasterize_gaussians(
            s["means"], s["quats"], self.activated_scales(s), torch.sigmoid(s["opacities"]), colors,
            camera.viewmats(), camera.Ks(), int(camera.widths[0]), int(camera.heights[0]), sh_degree=sh_degree,
            backgrounds=None if background is None else background[None], render_mode=render_mode,
            near_plane=c.near_plane, far_plane=c.far_plane, rasterize_mode="antialiased" if c.antialiased else "classic",
            absgrad=c.densify.absgrad, packed=False, **kw,
        )  # fmt: skip

    def render_maps(self, camera: Cameras, background: Tensor | None, params: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """{rgb [H, W, 3] clamped, alpha [H, W, 1], depth [H, W, 1]} of ``params`` (default: this model's) over
        ``background`` [3] (default black), at the full SH degree."""
        device = self["means"].device
        bg = background if background is not None else torch.zeros(3, device=device)
        colors, alphas, _ = self.rasterize(camera, bg.to(device), self.active_sh_degree(None), render_mode="RGB+ED", params=params)
        return {"rgb": colors[0, ..., :3].clamp(0, 1), "alpha": alphas[0], "depth": colors[0, ..., 3:4]}

    def depth_distortion(self, camera: Cameras, params: dict[str, Tensor] | None = None, pixel_weights: Tensor | None = None) -> Tensor:
        """Scalar: mean over the pixels of ``camera`` (a batch of one) of alpha * E[z^2] - E[z]^2, the spread of
        the rendered depths along each ray (see ``distortion_reg``), optionally weighted by ``pixel_weights``
        [H, W]; ``params`` as in :meth:`rasterize`."""
        s = self if params is None else params
        viewmat = camera.viewmats()[0]
        z = (s["means"] @ viewmat[2, :3] + viewmat[2, 3]) / self.scene_scale
        moments, alphas, _ = self.rasterize(camera, None, None, render_mode="RGB", params=s, colors=torch.stack([z, z * z], -1))
        ez, ez2 = moments[0, ..., 0], moments[0, ..., 1]
        spread = (alphas[0, ..., 0] * ez2 - ez * ez).clamp_min(0)
        return spread.mean() if pixel_weights is None else (spread * pixel_weights).mean()

