"""Relightable 3D Gaussians (Gao et al., ECCV 2024) on recon's Gaussian model, PBR core and Gaussian ray tracer.

Stage 1 (geometry): 3DGS plus a normal per Gaussian. One rasterization per step splats [SH colour, normal, z, z^2];
the rendered normal learns from the pseudo-normal of the rendered depth (detached teacher), the depth variance
E[z^2] - E[z]^2 is pushed down with a ramped weight (thin surface shells), an edge-aware smoothness acts on the
rendered normal, and rendered alpha meets the data's alpha or mask.

Stage 2 (materials and light), from ``stage2_from`` of the run: geometry frozen; normals oriented towards the
training cameras; visibility baked once by tracing 64 hemisphere directions per Gaussian through all Gaussians
(recon/render/raytrace.py, the paper's rules and 0.9 cut); then each step shades the Gaussians in view
(:mod:`.shading`) and splats [SH colour, PBR colour]; the PBR image (divided by alpha, sRGB, over the background)
and the radiance image both meet the photo, with the white-light prior and the environment map's TV.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recon.cameras import Cameras
from recon.color import linear_to_srgb
from recon.data.scene import SceneData
from recon.errors import ReconError
from recon.gaussians import GaussianModel, focus_box, initial_points, scene_scale_of
from recon.gaussians.params import set_lr
from recon.losses import l1_dssim
from recon.methods import register
from recon.methods.base import Batch, Capabilities, Method
from recon.methods.r3dg.config import R3DGConfig
from recon.methods.r3dg.shading import shade
from recon.render.envmap import map_rotation
from recon.render.raytrace import build_bvh, hemisphere_directions, trace_gaussians
from recon.render.sh import eval_sh

GEOMETRY = ("means", "scales", "quats", "opacities", "normal")
#: The viewer's environment choices: the learnt map, recon's procedural skies (variant numbers), or a file.
ENVIRONMENTS = {"learnt": None, "procedural sun": 0, "procedural sunset": 1, "file": None}


def _inverse_softplus(x: float) -> float:
    return x + math.log(-math.expm1(-x))


@register
class RelightableGaussians(Method):
    name = "r3dg"
    description = "Relightable 3D Gaussians: per-Gaussian normals and PBR materials, ray-traced visibility, relighting"
    config_cls = R3DGConfig
    render_outputs = ("rgb", "rgb_radiance", "alpha", "depth", "normal", "base_color", "roughness", "metallic", "visibility",
                      "diffuse", "specular", "local_light")  # fmt: skip
    export_kinds = ("ply", "splat", "mesh", "mesh-pbr")
    capabilities = Capabilities(gaussians=True, materials=True, relight=True)
    default_demo = "pbr"

    def __init__(self, config: R3DGConfig, scene: SceneData | None, max_steps: int, device):
        super().__init__(config, scene, max_steps, device)
        self.config: R3DGConfig = config
        c = config
        self.splats = GaussianModel(c)
        for name, shape, lr, init in (("normal", (3,), c.normal_lr, 0.0), ("base_color", (3,), c.base_color_lr, 0.0),
                                      ("roughness", (1,), c.roughness_lr, 0.0), ("metallic", (1,), c.metallic_lr, -2.0),
                                      ("light", (16, 3), c.light_lr, 0.0)):  # fmt: skip
            self.splats.add_attribute(name, shape, lr, init)
        self.env_raw = nn.Parameter(torch.full((c.env_height, 2 * c.env_height, 3), _inverse_softplus(c.env_init)))
        self.register_buffer("scene_scale", torch.tensor(1.0))
        self.register_buffer("baked", torch.tensor(False))
        self.register_buffer("visibility", torch.zeros(0, c.samples))  # [N, S] once baked
        self.register_buffer("sample_dirs", torch.zeros(0, c.samples, 3))  # [N, S, 3]
        self.stage2_step = max(int(c.stage2_from * max_steps), 1)
        self._env_opt = torch.optim.Adam([self.env_raw], lr=c.env_lr, eps=1e-15)

    # ---------------------------------------------------------------- setup
    def setup(self, scene: SceneData) -> None:
        self.scene_scale.fill_(scene_scale_of(scene.cameras[torch.from_numpy(scene.split("train"))]))
        c = self.config
        pts, cols = initial_points(scene, c.init, c.init_num_points, focus_box(scene, c.init_extent))
        self.splats.initialize(pts.to(self.device_), cols.to(self.device_))
        with torch.no_grad():  # the paper: random unit normals without point normals
            self.splats["normal"].copy_(F.normalize(torch.randn(pts.shape[0], 3), dim=-1).to(self.device_))
        self.splats.build_optimizers(float(self.scene_scale), self.max_steps)
        self._train_cameras = scene.cameras[torch.from_numpy(scene.split("train"))].to(self.device_)

    def optimizers(self):
        return {**self.splats.optimizers, "env": self._env_opt}

    # ---------------------------------------------------------------- activations
    def base_color(self) -> Tensor:
        return torch.sigmoid(self.splats["base_color"]) * 0.77 + 0.03

    def roughness(self) -> Tensor:
        return torch.sigmoid(self.splats["roughness"]) * 0.9 + 0.09

    def metallic(self) -> Tensor:
        return torch.sigmoid(self.splats["metallic"])

    def envmap(self) -> Tensor:
        """[H, 2H, 3] the learnt environment map (linear radiance, normalised frame, +Z up convention)."""
        return F.softplus(self.env_raw)

    def normals(self) -> Tensor:
        return F.normalize(self.splats["normal"], dim=-1)

    # ---------------------------------------------------------------- rendering pieces
    def _features(self, feats: Tensor, camera: Cameras, frozen: bool) -> tuple[Tensor, Tensor, dict]:
        """Splat per-Gaussian ``feats`` [N, C] into ``camera``: ([H, W, C] alpha-weighted sums, [H, W, 1], meta)."""
        s = self.splats
        params = {k: v.detach() for k, v in s.gaussian_params().items()} if frozen else None
        colors, alphas, info = s.rasterize(camera, None, None, render_mode="RGB", params=params, colors=feats)
        return colors[0], alphas[0], info

    def _radiance(self, camera: Cameras, sh_degree: int) -> Tensor:
        """[N, 3] SH colour of each Gaussian seen from ``camera`` (gsplat's +0.5 and clamp)."""
        s = self.splats
        dirs = s["means"] - camera.centers()[0]
        return (eval_sh(sh_degree, dirs, torch.cat([s["sh0"], s["shN"]], 1)) + 0.5).clamp_min(0.0)

    def _facing_normals(self, camera: Cameras) -> Tensor:
        n = self.normals()
        to_cam = camera.centers()[0] - self.splats["means"].detach()
        return torch.where(((n * to_cam).sum(-1, keepdim=True) < 0), -n, n)

    def _camera_depth(self, camera: Cameras) -> Tensor:
        vm = camera.viewmats()[0]
        return self.splats["means"] @ vm[2, :3] + vm[2, 3]

    def _in_view(self, camera: Cameras, margin: float = 0.15) -> Tensor:
        """bool [N]: Gaussians whose centre projects into the image (with a margin) in front of the camera."""
        pix, depth = camera.project(self.splats["means"].detach())
        (u, v), z = pix[0].unbind(-1), depth[0]
        w, h = float(camera.widths[0]), float(camera.heights[0])
        return (z > self.config.near_plane) & (u > -margin * w) & (u < (1 + margin) * w) & (v > -margin * h) & (v < (1 + margin) * h)

    def _pbr_colors(self, camera: Cameras, env: Tensor, local: bool, to_env: Tensor | None = None, albedo_scale: Tensor | None = None) -> dict[str, Tensor]:
        """Per-Gaussian shading (zeros outside the view): rgb, diffuse, specular, irradiance, local [N, 3]."""
        n_all = self.splats["means"].shape[0]
        ids = torch.nonzero(self._in_view(camera)).squeeze(-1)
        n = self.normals()[ids].detach()
        view = F.normalize(camera.centers()[0] - self.splats["means"].detach()[ids], dim=-1)
        base = self.base_color()[ids]
        if albedo_scale is not None:
            base = (base * torch.as_tensor(albedo_scale, dtype=base.dtype, device=base.device)).clamp(0, 1)
        out = shade(n, view, self.sample_dirs[ids], self.visibility[ids], base, self.roughness()[ids], self.metallic()[ids],
                    env, self.splats["light"][ids] if local else None, to_env)  # fmt: skip
        full = {}
        for k, v in out.items():
            full[k] = v.new_zeros(n_all, 3).index_copy(0, ids, v)
        return full

    def _composite(self, linear_sum: Tensor, alpha: Tensor, background: Tensor) -> Tensor:
        """[H, W, 3] sRGB: the alpha-weighted linear colour sum divided by alpha, encoded, over ``background``."""
        lin = linear_sum / alpha.clamp_min(1e-6)
        return linear_to_srgb(lin) * alpha + background * (1 - alpha)

    # ---------------------------------------------------------------- training
    def train_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        if step >= self.stage2_step:
            if not bool(self.baked):
                self._start_stage2()
            return self._stage2_step(batch, step)
        return self._stage1_step(batch, step)

    def _stage1_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        c, s, cam = self.config, self.splats, batch.camera
        s.schedule_means_lr(step, self.max_steps)
        z = self._camera_depth(cam) / float(self.scene_scale)
        feats = torch.cat([self._radiance(cam, s.active_sh_degree(step)), self._facing_normals(cam), z[:, None], (z * z)[:, None]], 1)
        out, alpha, info = self._features(feats, cam, frozen=False)
        rgb = out[..., :3] + batch.background * (1 - alpha)
        loss = l1_dssim(rgb, batch.image, c.ssim_lambda) + s.regularizer()
        a = alpha.clamp_min(1e-6)
        normal = out[..., 3:6] / a
        ed, ed2 = out[..., 6:7] / a, out[..., 7:8] / a
        fg = (alpha.detach() > 0.5).float()
        pseudo = self._pseudo_normal(cam, (ed * float(self.scene_scale)).detach()[..., 0])
        n_loss = ((F.normalize(normal, dim=-1) - pseudo) ** 2 * fg).sum() / fg.sum().clamp_min(1.0) / 3
        var = (ed2 - ed * ed).clamp_min(0)
        ramp = min(10.0 ** (6.0 * step / self.stage2_step), 100.0)
        var_loss = ((var + 1e-8).sqrt() * fg).sum() / fg.sum().clamp_min(1.0)
        smooth = self._edge_aware_tv(normal, batch.image)
        loss = loss + c.normal_weight * n_loss + c.depth_var_weight * ramp * var_loss + c.normal_smooth_weight * smooth
        target = batch.alpha if batch.alpha is not None else batch.mask
        if target is not None and c.mask_weight > 0:
            loss = loss + c.mask_weight * F.binary_cross_entropy(alpha.clamp(1e-6, 1 - 1e-6), target.float().clamp(0, 1))
        return {"loss": loss, "rgb": rgb.detach(), "info": info, "normal_loss": n_loss.detach(), "depth_var": var_loss.detach()}

    def _stage2_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        c, cam = self.config, batch.camera
        env = self.envmap()
        shaded = self._pbr_colors(cam, env, local=True)
        feats = torch.cat([self._radiance(cam, self.splats.active_sh_degree(None)), shaded["rgb"]], 1)
        out, alpha, _ = self._features(feats, cam, frozen=True)
        radiance = out[..., :3] + batch.background * (1 - alpha)
        pbr = self._composite(out[..., 3:6], alpha, batch.background)
        irr = shaded["irradiance"][shaded["irradiance"].abs().sum(-1) > 0]
        prior = (irr - irr.mean(-1, keepdim=True)).abs().mean() if irr.numel() else env.new_zeros(())
        tv = (env[1:] - env[:-1]).abs().mean() + (env[:, 1:] - env[:, :-1]).abs().mean()
        pbr_loss = l1_dssim(pbr, batch.image, c.ssim_lambda)
        loss = l1_dssim(radiance, batch.image, c.ssim_lambda) + c.pbr_weight * pbr_loss + c.light_prior_weight * prior + c.env_tv_weight * tv
        return {"loss": loss, "rgb": pbr.detach(), "pbr_loss": pbr_loss.detach()}

    def _pseudo_normal(self, camera: Cameras, depth: Tensor) -> Tensor:
        """[H, W, 3] world normals of the surface of camera-space ``depth`` [H, W] (cross product of central
        differences, facing the camera; zeros on the border)."""
        H, W = depth.shape
        K, c2w = camera.Ks()[0], camera.camtoworlds[0]
        v, u = torch.meshgrid(torch.arange(H, device=depth.device) + 0.5, torch.arange(W, device=depth.device) + 0.5, indexing="ij")
        pts = torch.stack([(u - K[0, 2]) / K[0, 0] * depth, (v - K[1, 2]) / K[1, 1] * depth, depth], -1) @ c2w[:3, :3].T + c2w[:3, 3]
        dx = pts[1:-1, 2:] - pts[1:-1, :-2]
        dy = pts[2:, 1:-1] - pts[:-2, 1:-1]
        n = F.normalize(torch.cross(dx, dy, dim=-1), dim=-1)
        to_cam = c2w[:3, 3] - pts[1:-1, 1:-1]
        n = torch.where((n * to_cam).sum(-1, keepdim=True) < 0, -n, n)
        return F.pad(n.permute(2, 0, 1), (1, 1, 1, 1)).permute(1, 2, 0)

    @staticmethod
    def _edge_aware_tv(x: Tensor, image: Tensor) -> Tensor:
        gx = (image[:, 1:] - image[:, :-1]).abs().mean(-1, keepdim=True)
        gy = (image[1:] - image[:-1]).abs().mean(-1, keepdim=True)
        return ((x[:, 1:] - x[:, :-1]).abs() * torch.exp(-gx)).mean() + ((x[1:] - x[:-1]).abs() * torch.exp(-gy)).mean()

    def before_backward(self, step: int, outputs: dict) -> None:
        if "info" in outputs:
            self.splats.before_backward(step, outputs["info"])

    def after_optimizer_step(self, step: int, outputs: dict) -> None:
        if "info" in outputs:
            self.splats.after_optimizer_step(step, outputs["info"])
        if step + 1 >= self.stage2_step and not bool(self.baked):
            self._start_stage2()

    @torch.no_grad()
    def _start_stage2(self) -> None:
        """Freeze geometry, orient normals towards the training cameras, bake visibility."""
        for name in GEOMETRY:
            set_lr(self.splats.optimizers[name], 0.0)
        self._orient_normals()
        self.bake_visibility()
        self.baked.fill_(True)

    def _orient_normals(self) -> None:
        cams = getattr(self, "_train_cameras", None)
        if cams is None:
            return
        n, m = self.normals(), self.splats["means"]
        votes = torch.zeros(n.shape[0], device=n.device)
        for center in cams.centers():
            votes += torch.sign(((center - m) * n).sum(-1))
        self.splats["normal"].copy_(torch.where((votes < 0)[:, None], -n, n))

    @torch.no_grad()
    def bake_visibility(self) -> None:
        """Trace ``samples`` hemisphere directions per Gaussian from its centre through all Gaussians (BVH, the
        paper's rules) and keep the transmittance table [N, S] with the directions."""
        s = self.splats
        n = self.normals()
        dirs = hemisphere_directions(n, self.config.samples)
        bvh = build_bvh(s["means"], s["quats"], torch.exp(s["scales"]), torch.sigmoid(s["opacities"]), n)
        origins = s["means"][:, None, :].expand_as(dirs).reshape(-1, 3)
        vis, _ = trace_gaussians(bvh, origins, dirs.reshape(-1, 3), cutoff=self.config.visibility_cutoff)
        self.sample_dirs = dirs
        self.visibility = vis.reshape(n.shape[0], -1)

    def log_scalars(self) -> dict[str, float]:
        return {"num_gaussians": float(self.splats.num_gaussians)}

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def render(self, camera: Cameras, time: float | None = None, outputs: Sequence[str] = ("rgb",), background: Tensor | None = None,
               environment: str = "learnt", env_file: str = "", env_rotation: float = 0.0, **options) -> dict[str, Tensor]:  # fmt: skip
        """Outputs under the learnt light, or (the viewer's controls, :meth:`viewer_options`) relit under a bundled
        or file environment map turned by ``env_rotation`` degrees about +Z: re-shading only, no re-tracing."""
        spin = map_rotation(turn_deg=env_rotation).to(self.device_) if env_rotation else None
        if environment == "learnt":
            return self._render(camera, outputs, background, self.envmap(), local=True, to_env=spin)
        return self._render(camera, outputs, background, self._viewer_env(environment, env_file), local=False, to_env=spin)

    def viewer_options(self) -> list[dict]:
        return [
            {"name": "environment", "kind": "dropdown", "choices": list(ENVIRONMENTS), "default": "learnt", "label": "environment",
             "hint": "relight: the learnt map, a bundled procedural sky, or the .hdr file below"},
            {"name": "env_file", "kind": "text", "default": "", "label": "map file (.hdr)"},
            {"name": "env_rotation", "kind": "slider", "min": 0.0, "max": 360.0, "step": 1.0, "default": 0.0, "label": "rotation (deg)"},
        ]  # fmt: skip

    def _viewer_env(self, environment: str, env_file: str) -> Tensor:
        """The environment map a viewer choice names (cached: one file read, one procedural map)."""
        key = (environment, env_file if environment == "file" else "")
        cache = self.__dict__.setdefault("_env_cache", {})
        if key not in cache:
            if environment == "file":
                from recon.render.envmap import read_envmap

                env = read_envmap(Path(env_file).expanduser())
            elif environment in ENVIRONMENTS and environment != "learnt":
                from recon.demo.pbr_scene import procedural_envmap

                env = procedural_envmap(64, ENVIRONMENTS[environment])
            else:
                raise ReconError(f"unknown environment {environment!r} (choices: {', '.join(ENVIRONMENTS)})")
            cache.clear()
            cache[key] = env.float().to(self.device_)
        return cache[key]

    @torch.no_grad()
    def relight(self, camera: Cameras, envmap: Tensor, to_env: Tensor | None = None, time: float | None = None, outputs: Sequence[str] = ("rgb",),
                background: Tensor | None = None, albedo_scale: Tensor | None = None) -> dict[str, Tensor]:  # fmt: skip
        """Shade with ``envmap`` alone (the learnt local light, which holds this scene's indirect light, is left
        out), visibility unchanged: no re-tracing."""
        return self._render(camera, outputs, background, envmap.to(self.device_).float(), local=False, to_env=to_env, albedo_scale=albedo_scale)

    def _render(self, camera, outputs, background, env, local, to_env, albedo_scale=None) -> dict[str, Tensor]:
        bg = background.to(self.device_) if background is not None else torch.zeros(3, device=self.device_)
        baked = bool(self.baked)
        z = self._camera_depth(camera)
        parts = {"radiance": self._radiance(camera, self.splats.active_sh_degree(None)), "normal": self._facing_normals(camera), "z": z[:, None]}
        if baked:
            shaded = self._pbr_colors(camera, env, local, to_env, albedo_scale)
            parts.update({"pbr": shaded["rgb"], "base_color": self.base_color(), "roughness": self.roughness(), "metallic": self.metallic(),
                          "visibility": self.visibility.mean(-1, keepdim=True), "diffuse": shaded["diffuse"], "specular": shaded["specular"],
                          "local_light": shaded["local"]})  # fmt: skip
        names = list(parts)
        sizes = [parts[k].shape[1] for k in names]
        out, alpha, _ = self._features(torch.cat([parts[k] for k in names], 1), camera, frozen=True)
        maps = dict(zip(names, torch.split(out, sizes, -1)))
        a = alpha.clamp_min(1e-6)
        res = {"alpha": alpha, "depth": maps["z"] / a, "normal": F.normalize(maps["normal"], dim=-1) * (alpha > 1e-3),
               "rgb_radiance": (maps["radiance"] + bg * (1 - alpha)).clamp(0, 1)}  # fmt: skip
        if baked:
            res["rgb"] = self._composite(maps["pbr"], alpha, bg)
            for k in ("base_color", "roughness", "metallic", "visibility"):
                res[k] = maps[k] / a
            for k in ("diffuse", "specular", "local_light"):
                res[k] = linear_to_srgb(maps[k] / a)
        else:  # stage 1: the radiance image; materials not learnt yet
            res["rgb"] = res["rgb_radiance"]
            H, W = alpha.shape[:2]
            for k, ch in (("base_color", 3), ("roughness", 1), ("metallic", 1), ("visibility", 1), ("diffuse", 3), ("specular", 3), ("local_light", 3)):
                res[k] = alpha.new_zeros(H, W, ch)
        return {k: res[k] for k in outputs if k in res}

    def gaussians(self, time: float | None = None) -> dict[str, Tensor]:
        """The 3DGS parameters plus ``normals`` [N, 3] and the activated ``base_color`` [N, 3] (linear),
        ``roughness`` and ``metallic`` [N, 1] (the PLY export writes them as extra properties)."""
        out = {k: v.detach() for k, v in self.splats.gaussian_params().items()}
        out.update({"normals": self.normals().detach(), "base_color": self.base_color().detach(), "roughness": self.roughness().detach(),
                    "metallic": self.metallic().detach()})  # fmt: skip
        return out

    def materials(self):
        """Base colour, roughness, metallic and normal of the Gaussian nearest each query point."""
        from scipy.spatial import cKDTree

        means = self.splats["means"].detach().cpu().numpy()
        tree = cKDTree(means)
        table = {"base_color": self.base_color().detach(), "roughness": self.roughness().detach(), "metallic": self.metallic().detach(),
                 "normal": self.normals().detach()}  # fmt: skip

        def query(points: Tensor) -> dict:
            _, idx = tree.query(points.detach().cpu().numpy())
            ids = torch.as_tensor(idx, device=self.device_)
            return {k: v[ids].to(points.device) for k, v in table.items()}

        return query

    # ---------------------------------------------------------------- state
    def extra_state(self) -> dict:
        return {"densifier": self.splats.densifier_state()}

    def load_extra_state(self, state: dict) -> None:
        self.splats.load_densifier_state(state.get("densifier"))

    def resize_for_state_dict(self, state_dict: dict[str, Tensor]) -> None:
        self.splats.resize_like(state_dict, "splats.")
        self.splats.to(self.device_)
        for name in ("visibility", "sample_dirs"):
            if name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[name], device=self.device_))
        if "scene_scale" in state_dict:
            self.scene_scale.copy_(state_dict["scene_scale"])
        self.splats.build_optimizers(float(self.scene_scale), self.max_steps)
        if bool(state_dict.get("baked", torch.tensor(False))):
            for name in GEOMETRY:
                set_lr(self.splats.optimizers[name], 0.0)
