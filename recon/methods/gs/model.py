"""Vanilla 3D Gaussian Splatting (Kerbl et al. 2023) on recon's rasterizer and gsplat's densification."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from recon.cameras import Cameras
from recon.data.scene import SceneData
from recon.losses import l1_dssim
from recon.schedules import exponential_decay
from recon.methods import register
from recon.methods.base import Batch, Capabilities, Method, MethodConfig
from recon.render.gaussians import rasterize_gaussians
from recon import gaussians as sp


@dataclass
class GSConfig(MethodConfig):
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
    densify: sp.DensifyConfig = field(default_factory=sp.DensifyConfig)
    """Adaptive density control."""
    antialiased: bool = False
    """Mip-Splatting's antialiased rasterization (opacity compensation of the 2D dilation)."""
    near_plane: float = 0.01
    far_plane: float = 1e10


@register
class GaussianSplatting(Method):
    name = "gs"
    description = "vanilla 3D Gaussian Splatting"
    config_cls = GSConfig
    render_outputs = ("rgb", "alpha", "depth")
    export_kinds = ("ply", "splat", "mesh")
    capabilities = Capabilities(gaussians=True)

    def __init__(self, config: GSConfig, scene: SceneData | None, max_steps: int, device):
        super().__init__(config, scene, max_steps, device)
        self.config: GSConfig = config
        self.splats = torch.nn.ParameterDict()
        self.register_buffer("scene_scale", torch.tensor(1.0))
        self._optimizers: dict[str, torch.optim.Optimizer] | None = None
        self._densifier: sp.Densifier | None = None
        self._info: dict | None = None

    # ---------------------------------------------------------------- setup
    def setup(self, scene: SceneData) -> None:
        cams = scene.cameras[torch.from_numpy(scene.split("train"))]
        centers = cams.centers()
        self.scene_scale.fill_(float((centers - centers.mean(0)).norm(dim=1).max()) * 1.1 or 1.0)
        pts, cols = self._initial_points(scene)
        self.splats = sp.init_splats(pts.to(self.device_), cols.to(self.device_), self.config.sh_degree, self.config.init_opacity, self.config.init_scale)
        self._build_optim()

    def _initial_points(self, scene: SceneData) -> tuple[Tensor, Tensor]:
        """Initial centres [P, 3] and colours [P, 3]: the data's points, or random ones in :meth:`_random_init_box`
        (which subclasses override to place random points better)."""
        cfg = self.config
        use_points = cfg.init == "points" or (cfg.init == "auto" and scene.points is not None and len(scene.points) > 0)
        if use_points:
            if scene.points is None or len(scene.points) == 0:
                from recon.errors import ReconError

                raise ReconError("--model.init points needs a point cloud, and this data has none", scene.root)
            pts = torch.as_tensor(scene.points, dtype=torch.float32)
            cols = torch.as_tensor(scene.point_colors, dtype=torch.float32) if scene.point_colors is not None else torch.rand(len(pts), 3)
        else:
            pts, cols = sp.random_points(cfg.init_num_points, *self._random_init_box(scene))
        return pts, cols

    def _random_init_box(self, scene: SceneData) -> tuple[Tensor, Tensor]:
        """Centre [3] and half-sizes [3] of the random-initialisation box: a cube around the point the training
        cameras look at, clipped to the data's scene box when it has one."""
        from recon.cameras import camera_focus

        c2w = scene.cameras.camtoworlds[torch.from_numpy(scene.split("train"))]
        focus = torch.as_tensor(camera_focus(c2w), dtype=torch.float32)
        half = self.config.init_extent * float((c2w[:, :3, 3] - focus).norm(dim=1).mean())
        lo, hi = focus - half, focus + half
        if scene.aabb is not None:
            a_lo, a_hi = (torch.as_tensor(a, dtype=torch.float32) for a in scene.aabb)
            c_lo, c_hi = torch.maximum(lo, a_lo), torch.minimum(hi, a_hi)
            if (c_hi > c_lo).all():  # else the box and the cameras disagree: trust the cameras
                lo, hi = c_lo, c_hi
        return (lo + hi) / 2, (hi - lo) / 2

    def _lrs(self) -> dict[str, float]:
        c = self.config
        return {
            "means": c.means_lr * float(self.scene_scale),
            "scales": c.scales_lr,
            "quats": c.quats_lr,
            "opacities": c.opacities_lr,
            "sh0": c.sh0_lr,
            "shN": c.shN_lr,
        }

    def _build_optim(self) -> None:
        self._optimizers = sp.make_adam(self.splats, self._lrs())
        self._densifier = sp.Densifier(self.config.densify, float(self.scene_scale), self._densify_steps())
        self._densifier.check(self.splats, self._optimizers)

    def _densify_steps(self) -> int:
        """Steps the densification window (``densify.refine_start`` / ``refine_stop`` fractions) is laid out over."""
        return self.max_steps

    def optimizers(self):
        return self._optimizers

    # ---------------------------------------------------------------- rendering
    def _active_sh_degree(self, step: int | None) -> int:
        if step is None:
            return self.config.sh_degree
        return min(step // max(self.config.sh_degree_interval, 1), self.config.sh_degree)

    def rasterize(self, camera: Cameras, background: Tensor | None, sh_degree: int | None, render_mode: str = "RGB+ED", params: dict[str, Tensor] | None = None, colors: Tensor | None = None, **kw):
        """Rasterize ``params`` (pre-activation Gaussians with gsplat's names; default: this model's ``splats``,
        other methods pass e.g. deformed copies) into ``camera``. ``colors`` [N, D] with ``sh_degree`` None
        splats per-Gaussian features instead of the SH colours."""
        s = self.splats if params is None else params
        if colors is None:
            colors = torch.cat([s["sh0"], s["shN"]], 1)
        w, h = int(camera.widths[0]), int(camera.heights[0])
        return rasterize_gaussians(
            s["means"],
            s["quats"],
            torch.exp(s["scales"]),
            torch.sigmoid(s["opacities"]),
            colors,
            camera.viewmats(),
            camera.Ks(),
            w,
            h,
            sh_degree=sh_degree,
            backgrounds=None if background is None else background[None],
            render_mode=render_mode,
            near_plane=self.config.near_plane,
            far_plane=self.config.far_plane,
            rasterize_mode="antialiased" if self.config.antialiased else "classic",
            absgrad=self.config.densify.absgrad,
            packed=False,
            **kw,
        )

    def _schedule_means_lr(self, step: int) -> None:
        """3DGS's exponential decay of the means' learning rate over the run."""
        lr = self._lrs()["means"]
        sp.set_lr(self._optimizers["means"], exponential_decay(step, lr, lr * self.config.means_lr_final_ratio, self.max_steps))

    def train_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        self._schedule_means_lr(step)
        colors, alphas, info = self.rasterize(batch.camera, batch.background, self._active_sh_degree(step), render_mode="RGB")
        rgb = colors[0, ..., :3]
        loss = l1_dssim(rgb, batch.image, self.config.ssim_lambda) + self._densifier.regularizer(self.splats)
        if self.distortion_on(step):
            loss = loss + self.config.distortion_reg * self.depth_distortion(batch.camera)
        self._info = info
        return {"loss": loss, "rgb": rgb.detach(), "info": info}

    def distortion_on(self, step: int) -> bool:
        return self.config.distortion_reg > 0 and step >= self.config.distortion_from * self.max_steps

    def depth_distortion(self, camera: Cameras, params: dict[str, Tensor] | None = None, pixel_weights: Tensor | None = None) -> Tensor:
        """Scalar: mean over the pixels of ``camera`` (a batch of one) of alpha * E[z^2] - E[z]^2, the spread of
        the rendered depths along each ray (see ``distortion_reg``), optionally weighted by ``pixel_weights``
        [H, W]; ``params`` as in :meth:`rasterize`."""
        s = self.splats if params is None else params
        viewmat = camera.viewmats()[0]
        z = (s["means"] @ viewmat[2, :3] + viewmat[2, 3]) / self.scene_scale
        moments, alphas, _ = self.rasterize(camera, None, None, render_mode="RGB", params=s, colors=torch.stack([z, z * z], -1))
        ez, ez2 = moments[0, ..., 0], moments[0, ..., 1]
        spread = (alphas[0, ..., 0] * ez2 - ez * ez).clamp_min(0)
        return spread.mean() if pixel_weights is None else (spread * pixel_weights).mean()

    def before_backward(self, step: int, outputs: dict) -> None:
        self._densifier.pre_backward(self.splats, self._optimizers, step, outputs["info"])

    def after_optimizer_step(self, step: int, outputs: dict) -> None:
        # As in gsplat's trainer: gradient statistics and densification run after the optimizer step (the 2D-mean
        # gradient survives zero_grad because means2d is not a parameter).
        self._densifier.post_backward(self.splats, self._optimizers, step, outputs["info"], packed=False,
                                      means_lr=self._optimizers["means"].param_groups[0]["lr"])
        self._info = None

    def log_scalars(self) -> dict[str, float]:
        return {"num_gaussians": float(self.splats["means"].shape[0])}

    @torch.no_grad()
    def render(self, camera: Cameras, time: float | None = None, outputs: Sequence[str] = ("rgb",), background: Tensor | None = None, **options) -> dict[str, Tensor]:
        out = self._render_maps(camera, background)
        return {k: out[k] for k in outputs if k in out}

    def _render_maps(self, camera: Cameras, background: Tensor | None, params: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """{rgb [H, W, 3] clamped, alpha [H, W, 1], depth [H, W, 1]} of ``params`` (default: the splats) over
        ``background`` [3] (default black), at the full SH degree."""
        bg = background if background is not None else torch.zeros(3, device=self.device_)
        colors, alphas, _ = self.rasterize(camera, bg.to(self.device_), self._active_sh_degree(None), render_mode="RGB+ED", params=params)
        return {"rgb": colors[0, ..., :3].clamp(0, 1), "alpha": alphas[0], "depth": colors[0, ..., 3:4]}

    def gaussians(self, time: float | None = None) -> dict[str, Tensor]:
        """The Gaussians' pre-activation parameters (normalised frame), for exports and the viewer."""
        return {k: v.detach() for k, v in self.splats.items()}

    # ---------------------------------------------------------------- state
    def extra_state(self) -> dict:
        return {"densifier": self._densifier.state_dict() if self._densifier else {}}

    def load_extra_state(self, state: dict) -> None:
        if self._densifier is not None and state.get("densifier"):
            self._densifier.load_state_dict(state["densifier"])

    def resize_for_state_dict(self, state_dict: dict[str, Tensor]) -> None:
        if len(self.splats) == 0:
            self.splats = torch.nn.ParameterDict(
                {k[len("splats."):]: torch.nn.Parameter(torch.empty_like(v, device=self.device_)) for k, v in state_dict.items() if k.startswith("splats.")}
            )
        else:
            sp.resize_like(self.splats, state_dict, "splats.")
        if "scene_scale" in state_dict:
            self.scene_scale.copy_(state_dict["scene_scale"])
        self._build_optim()
