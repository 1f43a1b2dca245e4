"""GASP (Borycki et al.): flat Gaussians that a physics engine can move, and the playback of their simulation.

Training is 3DGS with flat Gaussians (GaMeS ``gs_flat``: two learnt scales, the third pinned; see
``recon.gaussians`` ``flat=True``), so every Gaussian is a triangle's worth of geometry. ``recon simulate RUN``
(``recon.engine.simulate``) maps them to triangles, moves the triangle vertices with a particle engine
(``recon.physics``) and writes a new run whose checkpoint carries the simulation (:class:`Playback` in this
method's ``extra_state``); such a run is dynamic: ``render``/``gaussians`` at ``time`` in [0, 1] show the simulation
at that time, so the viewer's time slider, ``recon render`` and the exports play it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from recon.cameras import Cameras
from recon.data.scene import SceneData
from recon.gaussians import FLAT_SCALE, GaussianConfig, GaussianModel
from recon.losses import l1_dssim
from recon.methods import register
from recon.methods.base import Batch, Capabilities, Collective, Method, MethodConfig
from recon.physics.gaussian_sim import Playback
from recon.render.gsplat_meta import merge_views


@dataclass
class GaspConfig(GaussianConfig, MethodConfig):
    """GASP: the shared Gaussian settings (:class:`~recon.gaussians.GaussianConfig`), trained as flat Gaussians."""


@register
class Gasp(Method):
    name = "gasp"
    description = "GASP: flat Gaussians for physics simulation (recon simulate)"
    config_cls = GaspConfig
    render_outputs = ("rgb", "alpha", "depth")
    export_kinds = ("ply", "splat", "mesh")
    capabilities = Capabilities(gaussians=True)
    data_parallel = True

    def __init__(self, config: GaspConfig, scene: SceneData | None, max_steps: int, device):
        super().__init__(config, scene, max_steps, device)
        self.config: GaspConfig = config
        self.splats = GaussianModel(config, flat=True)
        self.register_buffer("scene_scale", torch.tensor(1.0))
        self.playback: Playback | None = None
        #: a run written by ``recon simulate`` plays its simulation over time (the viewer reads this per instance).
        self.is_dynamic = False

    # ---------------------------------------------------------------- setup
    def setup(self, scene: SceneData) -> None:
        self.scene_scale.fill_(self.splats.setup_from_scene(scene, self.max_steps, self.device_))

    def optimizers(self):
        return self.splats.optimizers

    # ---------------------------------------------------------------- training
    def train_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        self.splats.schedule_means_lr(step, self.max_steps)
        colors, _, info = self.splats.rasterize(batch.camera, batch.background, self.splats.active_sh_degree(step), render_mode="RGB")
        rgb = colors[0, ..., :3]
        loss = l1_dssim(rgb, batch.image, self.config.ssim_lambda) + self.splats.regularizer()
        return {"loss": loss, "rgb": rgb.detach(), "info": info}

    def before_backward(self, step: int, outputs: dict) -> None:
        self.splats.before_backward(step, outputs["info"])

    def combine_outputs(self, outputs: list[dict], ranks: Collective | None) -> dict:
        info = merge_views([o["info"] for o in outputs], gather=None if ranks is None else ranks.all_gather)
        return {**outputs[0], "info": info}

    def after_optimizer_step(self, step: int, outputs: dict) -> None:
        if outputs["info"] is not None:
            self.splats.after_optimizer_step(step, outputs["info"])

    def log_scalars(self) -> dict[str, float]:
        return {"num_gaussians": float(self.splats.num_gaussians)}

    # ---------------------------------------------------------------- inference
    def _params(self, time: float | None) -> dict[str, Tensor]:
        params = {k: v.detach() for k, v in self.splats.gaussian_params().items()}
        scales = params["scales"].clone()
        scales[:, 2] = math.log(FLAT_SCALE)
        params["scales"] = scales
        if self.playback is None:
            return params
        return self.playback.gaussians_at(params, 0.0 if time is None else time)

    @torch.no_grad()
    def render(self, camera: Cameras, time: float | None = None, outputs: Sequence[str] = ("rgb",), background: Tensor | None = None, **options) -> dict[str, Tensor]:
        out = self.splats.render_maps(camera, background, params=self._params(time))
        return {k: out[k] for k in outputs if k in out}

    def gaussians(self, time: float | None = None) -> dict[str, Tensor]:
        """The flat Gaussians' pre-activation parameters (normalised frame; the third log-scale is the pinned
        thickness), at ``time`` of the simulation for runs written by ``recon simulate``."""
        return self._params(time)

    # ---------------------------------------------------------------- state
    def extra_state(self) -> dict:
        state = {"densifier": self.splats.densifier_state()}
        if self.playback is not None:
            state["simulation"] = self.playback.state()
        return state

    def load_extra_state(self, state: dict) -> None:
        self.splats.load_densifier_state(state.get("densifier"))
        if state.get("simulation") is not None:
            self.playback = Playback.from_state(state["simulation"]).to(self.device_)
            self.is_dynamic = True

    def resize_for_state_dict(self, state_dict: dict[str, Tensor]) -> None:
        if "scene_scale" in state_dict:
            self.scene_scale.copy_(state_dict["scene_scale"])
        self.splats.load_shapes(state_dict, "splats.", float(self.scene_scale), self.max_steps, self.device_)
