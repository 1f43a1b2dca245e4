"""Vanilla 3D Gaussian Splatting (Kerbl et al. 2023) on recon's rasterizer and gsplat's densification."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from recon.cameras import Cameras
from recon.data.scene import SceneData
from recon.gaussians import GaussianConfig, GaussianModel
from recon.losses import l1_dssim
from recon.methods import register
from recon.methods.base import Batch, Capabilities, Collective, Method, MethodConfig
from recon.render.gsplat_meta import merge_views


@dataclass
class GSConfig(GaussianConfig, MethodConfig):
    """3DGS: the shared Gaussian settings (:class:`~recon.gaussians.GaussianConfig`) and nothing else."""


@register
class GaussianSplatting(Method):
    name = "gs"
    description = "vanilla 3D Gaussian Splatting"
    config_cls = GSConfig
    render_outputs = ("rgb", "alpha", "depth")
    export_kinds = ("ply", "splat", "mesh")
    capabilities = Capabilities(gaussians=True)
    data_parallel = True

    def __init__(self, config: GSConfig, scene: SceneData | None, max_steps: int, device):
        super().__init__(config, scene, max_steps, device)
        self.config: GSConfig = config
        self.splats = GaussianModel(config)
        self.register_buffer("scene_scale", torch.tensor(1.0))

    # ---------------------------------------------------------------- setup
    def setup(self, scene: SceneData) -> None:
        self.scene_scale.fill_(self.splats.setup_from_scene(scene, self.max_steps, self.device_))

    def optimizers(self):
        return self.splats.optimizers

    # ---------------------------------------------------------------- training
    def train_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        self.splats.schedule_means_lr(step, self.max_steps)
        colors, alphas, info = self.splats.rasterize(batch.camera, batch.background, self.splats.active_sh_degree(step), render_mode="RGB")
        rgb = colors[0, ..., :3]
        loss = l1_dssim(rgb, batch.image, self.config.ssim_lambda) + self.splats.regularizer()
        if self.distortion_on(step):
            loss = loss + self.config.distortion_reg * self.splats.depth_distortion(batch.camera)
        return {"loss": loss, "rgb": rgb.detach(), "info": info}

    def distortion_on(self, step: int) -> bool:
        return self.config.distortion_reg > 0 and step >= self.config.distortion_from * self.max_steps

    def before_backward(self, step: int, outputs: dict) -> None:
        self.splats.before_backward(step, outputs["info"])

    def combine_outputs(self, outputs: list[dict], ranks: Collective | None) -> dict:
        # Densification statistics of every view of the step, on every rank, as one batched render gives them.
        info = merge_views([o["info"] for o in outputs], gather=None if ranks is None else ranks.all_gather)
        return {**outputs[0], "info": info}

    def after_optimizer_step(self, step: int, outputs: dict) -> None:
        if outputs["info"] is not None:
            self.splats.after_optimizer_step(step, outputs["info"])

    def log_scalars(self) -> dict[str, float]:
        return {"num_gaussians": float(self.splats.num_gaussians)}

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def render(self, camera: Cameras, time: float | None = None, outputs: Sequence[str] = ("rgb",), background: Tensor | None = None, **options) -> dict[str, Tensor]:
        out = self.splats.render_maps(camera, background)
        return {k: out[k] for k in outputs if k in out}

    def gaussians(self, time: float | None = None) -> dict[str, Tensor]:
        """The Gaussians' pre-activation parameters (normalised frame), for exports and the viewer."""
        return {k: v.detach() for k, v in self.splats.items()}

    # ---------------------------------------------------------------- state
    def extra_state(self) -> dict:
        return {"densifier": self.splats.densifier_state()}

    def load_extra_state(self, state: dict) -> None:
        self.splats.load_densifier_state(state.get("densifier"))

    def resize_for_state_dict(self, state_dict: dict[str, Tensor]) -> None:
        if "scene_scale" in state_dict:
            self.scene_scale.copy_(state_dict["scene_scale"])
        self.splats.load_shapes(state_dict, "splats.", float(self.scene_scale), self.max_steps, self.device_)
