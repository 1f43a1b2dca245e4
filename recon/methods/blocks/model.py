"""Differentiable Blocks World (Monnier et al., NeurIPS 2023) on recon's mesh rasterizer.

A scene is N textured superquadric blocks with one opacity each, a ground plane and a background, fitted to the
images by rendering. Where this differs from the paper's PyTorch3D renderer, and why:

- Coverage. PyTorch3D's soft rasterizer blurs every face over ~9 sigma of its neighbourhood; recon's rasterizer is
  exact (hard coverage, K depth-peeled layers) and gives vertex positions their image gradient through analytic
  edge antialiasing. Compositing is the paper's layered one: each of the K nearest surfaces covers a pixel with its
  block's opacity, front to back, over the hard-rendered environment. Back faces are culled: superquadrics with both
  exponents in (0.1, 1.9) are convex, so a ray meets one front face per block.
- Initialisation. The paper starts blocks at random in a hand-aligned frame; here the frame, the ground and the
  starting blocks are derived from the data (see :mod:`.layout`).
- Steps. One view per step (the trainer's), not four: the phases are fractions of the run, so they scale with it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
import trimesh
from PIL import Image
from torch import Tensor

from recon.cameras import Cameras
from recon.data.scene import SceneData
from recon.errors import ReconError
from recon.geometry.superquadric import make_template, superquadric_points, superquadric_volume
from recon.methods import register
from recon.methods.base import Batch, Capabilities, Method
from recon.render.mesh import antialias, composite_layers, mesh_topology, rasterize
from recon.render.mesh_texture import sample_texture_stack

from .config import BlocksConfig
from .environment import Environment
from .layout import derive_layout, initial_blocks
from .primitives import BlockSet

#: distinct colours for the "blocks" output and the viewer (tab10)
PALETTE = torch.tensor([
    [0.12, 0.47, 0.71], [1.00, 0.50, 0.05], [0.17, 0.63, 0.17], [0.84, 0.15, 0.16], [0.58, 0.40, 0.74],
    [0.55, 0.34, 0.29], [0.89, 0.47, 0.76], [0.50, 0.50, 0.50], [0.74, 0.74, 0.13], [0.09, 0.75, 0.81],
])
#: icosphere level of the meshes handed to exports, metrics and physics (smooth, 2562 vertices per block)
EXPORT_LEVEL = 4


@register
class BlocksWorld(Method):
    name = "blocks"
    description = "Differentiable Blocks World: a scene as a few textured superquadrics, a ground and a background"
    config_cls = BlocksConfig
    render_outputs = ("rgb", "blocks", "alpha", "depth", "normal")
    export_kinds = ("mesh", "primitives")
    capabilities = Capabilities(mesh=True, primitives=True)
    default_demo = "solids"

    def __init__(self, config: BlocksConfig, scene: SceneData | None, max_steps: int, device):
        super().__init__(config, scene, max_steps, device)
        self.config: BlocksConfig = config
        self.blocks = BlockSet(config.num_blocks, config.texture_size)
        self.env = Environment(config.env_texture_size)
        self.template = make_template(config.template_level)
        self._topology = mesh_topology(self.template.faces)
        self._gen = torch.Generator().manual_seed(config.seed)
        self._adam: torch.optim.Adam | None = None
        self._lpips = None

    # ---------------------------------------------------------------- setup
    def setup(self, scene: SceneData) -> None:
        cfg = self.config
        layout = derive_layout(scene, cfg.init, cfg.ground)
        self.layout_notes = layout.notes  # printed by ``recon train`` (setup_notes)
        init = initial_blocks(layout, cfg.num_blocks, cfg.init_scale, np.random.default_rng(cfg.seed))
        self.blocks.initialize(init.centers, init.rotations, init.scales, init.colors, layout.center, max(layout.radius, 1e-3), self._gen)
        if cfg.background not in ("auto", "sphere", "data"):
            raise ReconError(f"--model.background must be auto, sphere or data (got {cfg.background!r})")
        use_sky = cfg.background == "sphere" or (cfg.background == "auto" and not scene.has_alpha)
        ground_color = np.full(3, 0.5)
        if scene.points is not None and scene.point_colors is not None and len(scene.points):
            h = (np.asarray(scene.points) - layout.ground_point) @ layout.ground_normal
            near = np.abs(h) < 0.02 * layout.radius
            if near.any():
                ground_color = np.asarray(scene.point_colors)[near].mean(0)
        self.env.initialize(layout.ground_point, layout.ground_normal, layout.env_radius, layout.radius, layout.center,
                            use_sky, cfg.ground != "none", ground_color)

    def setup_notes(self) -> list[str]:
        return list(getattr(self, "layout_notes", []))

    def _build_adam(self) -> torch.optim.Adam:
        cfg = self.config
        b, e = self.blocks, self.env
        groups = [
            {"params": [b.raw_exponents, b.raw_scales, b.rot6d, b.offsets, b.opacity_logits], "lr": cfg.lr, "name": "shape"},
            {"params": [e.ground_rot6d, e.ground_offset], "lr": cfg.lr * cfg.ground_lr_scale, "name": "ground"},
            {"params": [b.texture_logits, e.ground_logits, e.sky_logits], "lr": cfg.texture_lr, "name": "texture"},
        ]
        return torch.optim.Adam(groups, lr=cfg.lr)

    def optimizers(self):
        if self._adam is None:
            self._adam = self._build_adam()
        return {"blocks": self._adam}

    # ---------------------------------------------------------------- phases
    def phase(self, step: int) -> dict:
        cfg = self.config
        frac = step / max(self.max_steps, 1)
        return {"decimate": cfg.decimate_factor if frac < cfg.decimate_until else 1, "coarse": frac < cfg.coarse_until}

    # ---------------------------------------------------------------- rendering
    def _block_mesh(self, alive: Tensor):
        """World vertices [b*V, 3], faces, uv faces [b*F, 3] and block index per face of the live blocks."""
        t = self.template.to(self.device_)
        verts = self.blocks.world_vertices(t)[alive]  # [b, V, 3]
        b, V = verts.shape[:2]
        Fn, Vuv = t.faces.shape[0], t.uvs.shape[0]
        offs = torch.arange(b, device=self.device_)
        faces = (t.faces[None] + (offs * V)[:, None, None]).reshape(-1, 3)
        uv_faces = (t.uv_faces[None] + (offs * Vuv)[:, None, None]).reshape(-1, 3)
        face_block = offs.repeat_interleave(Fn)
        return verts.reshape(-1, 3), faces, uv_faces, face_block, t.uvs.repeat(b, 1)

    def _render(self, camera: Cameras, background: Tensor, noise: Tensor | None = None, decimate: int = 1,
                detach_bary: bool = False, palette: bool = False, env_decimate: int = 1) -> dict[str, Tensor]:
        """Blocks composited over the environment for one camera: rgb [1, H, W, 3], alpha, depth [1, H, W, 1], and the
        fragments (for the normal output)."""
        viewmats, Ks = camera.viewmats().to(self.device_), camera.Ks().to(self.device_)
        W, H = int(camera.widths[0]), int(camera.heights[0])
        env_rgb, env_depth = self.env.render(viewmats, Ks, W, H, background, env_decimate)
        alive = self.blocks.alive
        if not bool(alive.any()):
            return {"rgb": env_rgb, "alpha": torch.zeros_like(env_depth), "depth": env_depth, "frags": None}
        verts, faces, uv_faces, face_block, uvs = self._block_mesh(alive)
        n_alive = int(alive.sum())
        frags = rasterize(verts, faces, viewmats, Ks, W, H, n_layers=min(self.config.n_layers, n_alive), cull="back")
        valid = frags.mask
        tri = frags.tri_id[valid]
        bary = frags.bary[valid]
        bary = bary.detach() if detach_bary else bary
        blk = face_block[tri]
        if palette:
            col = PALETTE.to(self.device_)[torch.nonzero(alive).squeeze(1)[blk] % len(PALETTE)]
        else:
            uv = (bary[..., None] * uvs[uv_faces[tri]]).sum(-2)
            col = sample_texture_stack(self.blocks.textures(decimate)[alive], blk, uv)
        colors = torch.zeros(*valid.shape, 3, device=self.device_).masked_scatter(valid[..., None], col)
        op = self.blocks.opacities(noise)[alive]
        alphas = torch.zeros(valid.shape, device=self.device_).masked_scatter(valid, op[blk])
        rgb, acc = composite_layers(colors, alphas, env_rgb)
        topo = self._topology.to(self.device_)
        Fn = topo.shape[0]
        offs = torch.arange(n_alive, device=self.device_)[:, None, None] * Fn
        topology = torch.where(topo[None] >= 0, topo[None] + offs, topo[None]).reshape(-1, 3)
        rgb = antialias(rgb, frags, topology)
        depth, _ = composite_layers(frags.depth[..., None], alphas, env_depth)  # expected depth, composited the same way
        return {"rgb": rgb, "alpha": acc[..., None], "depth": depth, "frags": frags, "faces": faces, "verts": verts}

    # ---------------------------------------------------------------- training
    def train_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        cfg = self.config
        ph = self.phase(step)
        camera, image = batch.camera, batch.image
        if cfg.train_scale != 1.0:
            camera = camera.scaled(cfg.train_scale)
            h, w = int(camera.heights[0]), int(camera.widths[0])
            image = F.interpolate(image.permute(2, 0, 1)[None], size=(h, w), mode="area")[0].permute(1, 2, 0)
        noise = None
        if ph["coarse"] and cfg.opacity_noise > 0:
            noise = torch.randn(self.blocks.alive.shape, generator=self._gen).to(self.device_) * cfg.opacity_noise
        env_decimate = cfg.env_decimate_factor if ph["decimate"] > 1 else 1
        out = self._render(camera, batch.background.to(self.device_), noise, ph["decimate"], cfg.detach_bary, env_decimate=env_decimate)
        rgb = out["rgb"][0]
        mse = (rgb - image).square().mean()
        late = 1.0 if ph["coarse"] else 0.1
        loss = mse + cfg.tv_weight * late * (self.blocks.texture_tv() + self.env.texture_tv())
        logs = {"mse": mse.detach()}
        if ph["coarse"]:
            pars = self.blocks.parsimony()
            over = self.blocks.overlap(cfg.overlap_points, cfg.overlap_temperature, cfg.overlap_limit, self._gen)
            loss = loss + cfg.parsimony_weight * pars + cfg.overlap_weight * over
            logs.update(parsimony=pars.detach(), overlap=over.detach())
        if cfg.perceptual_weight > 0:
            loss = loss + cfg.perceptual_weight * late * self._perceptual(rgb, image)
        return {"loss": loss, "rgb": rgb.detach(), **logs}

    def _perceptual(self, rgb: Tensor, image: Tensor) -> Tensor:
        if self._lpips is None:
            from recon.eval.lpips import load_lpips

            self._lpips = load_lpips("vgg", self.device_)
        return self._lpips(rgb, image)  # [H, W, 3] in [0, 1] -> a scalar distance

    @torch.no_grad()
    def after_optimizer_step(self, step: int, outputs: dict) -> None:
        cfg = self.config
        b = self.blocks
        if not bool(b.opaque):
            b.alive &= torch.sigmoid(b.opacity_logits) >= cfg.kill_opacity
            if not self.phase(step + 1)["coarse"]:
                # end of the coarse phase: the undecided go, the rest become solid
                b.alive &= torch.sigmoid(b.opacity_logits) > 0.5
                b.opaque.fill_(True)
        if step + 1 == int(cfg.lr_drop_at * self.max_steps):
            for g in self.optimizers()["blocks"].param_groups:
                g["lr"] *= 0.1

    def log_scalars(self) -> dict[str, float]:
        return {"blocks": float(self.blocks.count())}

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def render(self, camera: Cameras, time: float | None = None, outputs: Sequence[str] = ("rgb",), background: Tensor | None = None, **options) -> dict[str, Tensor]:
        """Outputs: rgb, blocks (each block in its own colour), alpha (block coverage), depth, normal. Options
        ``show_block_<i>=False`` hide block i (the viewer's per-block toggles)."""
        bg = background.to(self.device_) if background is not None else torch.ones(3, device=self.device_)
        saved = self.blocks.alive.clone()
        try:
            for i in range(saved.numel()):
                if not options.get(f"show_block_{i}", True):
                    self.blocks.alive[i] = False
            res = {}
            if {"rgb", "alpha", "depth", "normal"} & set(outputs):
                out = self._render(camera, bg)
                res.update(rgb=out["rgb"][0].clamp(0, 1), alpha=out["alpha"][0], depth=out["depth"][0])
                if "normal" in outputs:
                    res["normal"] = self._normals(out)
            if "blocks" in outputs:
                res["blocks"] = self._render(camera, bg, palette=True)["rgb"][0].clamp(0, 1)
        finally:
            self.blocks.alive.copy_(saved)
        return {k: res[k] for k in outputs if k in res}

    def _normals(self, out: dict) -> Tensor:
        """[H, W, 3] unit world normals (signed, normalised frame) of the front-most block surface, 0 elsewhere."""
        frags = out["frags"]
        H, W = out["rgb"].shape[1:3]
        if frags is None:
            return torch.zeros(H, W, 3, device=self.device_)
        v, f = out["verts"], out["faces"]
        fn = F.normalize(torch.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]], dim=-1), dim=-1)
        tri = frags.tri_id[0, ..., 0]
        return torch.where((tri >= 0)[..., None], fn[tri.clamp_min(0)], torch.zeros(H, W, 3, device=self.device_))

    def viewer_options(self) -> list[dict]:
        """One checkbox per surviving block (its colour in the ``blocks`` output is ``PALETTE[i % 10]``)."""
        return [{"name": f"show_block_{i}", "kind": "checkbox", "default": True, "label": f"block {i}"}
                for i in torch.nonzero(self.blocks.opacities() > 0.5).squeeze(1).tolist()]

    # ---------------------------------------------------------------- exports
    @torch.no_grad()
    def block_meshes(self, level: int = EXPORT_LEVEL, threshold: float = 0.5) -> list[dict]:
        """The surviving blocks (opacity >= ``threshold``), each ``{index, exponents [2], scale [3], rotation [3, 3],
        translation [3], opacity, volume, mesh}`` in the normalised frame; ``mesh`` is a textured ``trimesh.Trimesh``
        (UV seams split, the block's texture as its image)."""
        t = make_template(level).to(self.device_)
        b = self.blocks
        e, s, R, T, a = b.exponents(), b.scales(), b.rotations(), b.translations(), b.opacities()
        tex = b.textures()
        local = superquadric_points(t, e, s)
        # one vertex per UV corner: where a UV seam or pole splits a vertex, the copies share its position
        uv_to_pos = torch.zeros(t.uvs.shape[0], dtype=torch.long, device=self.device_)
        uv_to_pos[t.uv_faces.reshape(-1)] = t.faces.reshape(-1)
        out = []
        for i in torch.nonzero(a >= threshold).squeeze(1).tolist():
            mesh = _textured_mesh((local[i] @ R[i].T + T[i])[uv_to_pos], t.uv_faces, t.uvs, tex[i])
            out.append({
                "index": i, "exponents": e[i].cpu().numpy(), "scale": s[i].cpu().numpy(), "rotation": R[i].cpu().numpy(),
                "translation": T[i].cpu().numpy(), "opacity": float(a[i]),
                "volume": float(superquadric_volume(e[i:i + 1].cpu().numpy(), s[i:i + 1].cpu().numpy())[0]), "mesh": mesh,
            })
        return out

    def mesh(self, time: float | None = None) -> trimesh.Trimesh:
        """The surviving blocks as one mesh (no ground, no background), the surface the geometry metrics score, with
        each block's palette colour as vertex colours."""
        blocks = self.block_meshes()
        if not blocks:
            return trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64))
        # each block in its colour of the "blocks" output, so the viewer's mesh matches the per-block checkboxes
        merged = [trimesh.Trimesh(d["mesh"].vertices, d["mesh"].faces, process=False,
                                  vertex_colors=(PALETTE[d["index"] % len(PALETTE)].numpy() * 255).astype(np.uint8))
                  for d in blocks]
        mesh = trimesh.util.concatenate(merged)
        mesh.merge_vertices()  # the UV seam copies share positions: merging makes every block watertight
        return mesh

    @torch.no_grad()
    def primitives(self) -> dict:
        """Everything the ``primitives`` export writes: ``{"blocks": block_meshes(), "ground": {"point", "normal",
        "mesh" (textured trimesh, the patch of ground under the blocks)}, "up"}`` in the normalised frame."""
        blocks = self.block_meshes()
        point, normal = self.env.ground_plane()
        ground = None
        if bool(self.env.has_ground):
            around = torch.cat([torch.as_tensor(np.asarray(d["mesh"].vertices), dtype=torch.float32) for d in blocks]) if blocks else self.blocks.center[None]
            v, f, uv = self.env.ground_patch(around.to(self.device_))
            ground = {"point": point.cpu().numpy(), "normal": normal.cpu().numpy(),
                      "mesh": _textured_mesh(v, f, uv, torch.sigmoid(self.env.ground_logits)[..., :3])}
        return {"blocks": blocks, "ground": ground, "up": normal.cpu().numpy()}


def _textured_mesh(verts: Tensor, faces: Tensor, uvs: Tensor, texture: Tensor) -> trimesh.Trimesh:
    """A trimesh with one texture: vertices [V, 3], faces [F, 3], UVs [V, 2] (glTF's v down, as recon samples them),
    texture [T, T, 3] in [0, 1]."""
    uv = uvs.detach().cpu().numpy().copy()
    uv[:, 1] = 1.0 - uv[:, 1]  # trimesh's UVs have v up
    image = Image.fromarray((texture.detach().cpu().numpy() * 255).round().astype(np.uint8))
    return trimesh.Trimesh(verts.detach().cpu().numpy(), faces.cpu().numpy(), visual=trimesh.visual.TextureVisuals(uv=uv, image=image), process=False)
