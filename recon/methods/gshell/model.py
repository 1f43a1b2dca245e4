"""G-Shell (Liu et al., ICLR 2024): watertight and open surfaces from one tetrahedral grid.

Per grid vertex: an SDF, a manifold SDF (mSDF) and a bounded offset. Each step extracts the watertight template with
marching tetrahedra on the SDF (``recon.geometry.tets``) and cuts it where the mSDF is negative
(``recon.geometry.msdf_cut``): open boundaries are the mSDF's zero isoline, differentiable in both fields. The cut
mesh is rasterised by recon's mesh rasterizer (two-sided; analytic edge antialiasing gives silhouettes their
gradient) and shaded with a material field (hash grid + MLP: base colour, roughness, metallic) under a learnable
environment map (split-sum). Losses and weights: ../shared/reference/mesh_sdf_methods.md section 2.5, with the raw
per-vertex SDF of G-Shell's option (nvdiffrec's sign regulariser instead of an Eikonal term on an SDF MLP).

Differences forced by the CPU, all in ``config.py``: a coarser grid (40 cubes per axis against 128-256), training
at half resolution, one view per step (G-Shell: 2) and split-sum shading without shadows (G-Shell's default is
Monte-Carlo with OptiX shadow rays).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import trimesh
import torch.nn.functional as F
from torch import Tensor, nn

from recon.cameras import Cameras
from recon.color import linear_to_srgb
from recon.data.scene import SceneData
from recon.fields import MLP, HashGridEncoding
from recon.geometry.mesh_utils import to_trimesh, vertex_normals
from recon.geometry.msdf_cut import msdf_cut
from recon.geometry.tets import marching_tets, tet_grid
from recon.gaussians.params import visible_box
from recon.methods import register
from recon.methods.base import Batch, Capabilities, Method
from recon.methods.gshell.config import GShellConfig
from recon.render.envmap import prepare_split_sum
from recon.render.mesh import antialias, interpolate, mesh_topology, rasterize
from recon.render.pbr import shade_split_sum
from recon.schedules import exponential_decay


def _grid_edges(tets: Tensor) -> Tensor:
    """[E, 2] the distinct edges of a tet grid."""
    pairs = tets[:, [0, 0, 0, 1, 1, 2, 1, 2, 3, 2, 3, 3]].reshape(-1, 2, 6).permute(0, 2, 1).reshape(-1, 2)
    pairs = torch.sort(pairs, -1).values
    n = int(tets.max()) + 1
    key = torch.unique(pairs[:, 0] * n + pairs[:, 1])
    return torch.stack([torch.div(key, n, rounding_mode="floor"), key % n], -1)


def floater_free(mesh: trimesh.Trimesh, min_fraction: float) -> trimesh.Trimesh:
    """``mesh`` (modified in place and returned) without zero-area faces (where the cut passes through a template
    vertex) and without edge-connected pieces holding fewer than ``min_fraction`` of its faces (floaters; open
    boundaries belong to the large pieces). Vertices are not welded: the cut's topology is kept as extracted."""
    mesh.update_faces(mesh.area_faces > 1e-14)
    mesh.remove_unreferenced_vertices()
    if min_fraction > 0 and len(mesh.faces):
        labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))
        sizes = np.bincount(labels)
        mesh.update_faces(sizes[labels] >= min_fraction * len(mesh.faces))
        mesh.remove_unreferenced_vertices()
    return mesh


@register
class GShell(Method):
    name = "gshell"
    description = "G-Shell: watertight and open surfaces (SDF + manifold SDF on a tet grid), materials and light"
    config_cls = GShellConfig
    render_outputs = ("rgb", "alpha", "depth", "normal", "base_color", "roughness", "metallic", "msdf")
    export_kinds = ("mesh", "mesh-pbr")
    capabilities = Capabilities(mesh=True, materials=True)
    default_demo = "open_surface"

    def __init__(self, config: GShellConfig, scene: SceneData | None, max_steps: int, device):
        super().__init__(config, scene, max_steps, device)
        self.config: GShellConfig = config
        n = (config.grid_res + 1) ** 3
        self.register_buffer("box_center", torch.zeros(3, device=self.device_))
        self.register_buffer("box_half", torch.ones(3, device=self.device_))
        self.sdf = nn.Parameter(torch.zeros(n, device=self.device_))
        self.msdf = nn.Parameter(torch.ones(n, device=self.device_))
        self.offsets = nn.Parameter(torch.zeros(n, 3, device=self.device_))
        self.encoding = HashGridEncoding(3, n_levels=12, n_features_per_level=2, log2_hashmap_size=17, base_resolution=8, max_resolution=512).to(self.device_)
        self.material_mlp = MLP(self.encoding.n_output_dims, 32, 5, n_layers=2).to(self.device_)
        h = config.env_height
        self.env_raw = nn.Parameter(torch.full((h, 2 * h, 3), math.log(math.expm1(0.5)), device=self.device_))
        self._grid_cache: tuple | None = None
        self._optimizers: dict[str, torch.optim.Optimizer] = {}

    # ---------------------------------------------------------------- grid and meshes
    def _grid(self) -> tuple[Tensor, Tensor, Tensor, float]:
        """(rest vertices [N, 3], tets [T, 4], grid edges [E, 2], cell size) for the current box (cached)."""
        key = (tuple(self.box_center.tolist()), tuple(self.box_half.tolist()))
        if self._grid_cache is None or self._grid_cache[0] != key:
            lo, hi = self.box_center - self.box_half, self.box_center + self.box_half
            verts, tets = tet_grid(self.config.grid_res, lo.tolist(), hi.tolist(), device=self.device_)
            cell = float((2 * self.box_half / self.config.grid_res).max())
            self._grid_cache = (key, verts, tets, _grid_edges(tets), cell)
        return self._grid_cache[1:]

    def _vertices(self) -> Tensor:
        verts, _, _, cell = self._grid()
        return verts + torch.tanh(self.offsets) * (self.config.max_offset * cell)

    def extract(self) -> dict[str, Tensor]:
        """The template (watertight) and the cut (open) mesh: ``template_verts`` [V, 3], ``template_faces``,
        ``template_msdf`` [V], ``verts`` [V', 3], ``faces`` [F', 3], ``boundary`` [V'] bool (normalised frame)."""
        _, tets, _, _ = self._grid()
        tv, tf, tm = marching_tets(self._vertices(), tets, self.sdf, self.msdf[:, None])
        cv, cf, boundary = msdf_cut(tv, tf, tm[:, 0])
        return {"template_verts": tv, "template_faces": tf, "template_msdf": tm[:, 0], "verts": cv, "faces": cf, "boundary": boundary}

    # ---------------------------------------------------------------- set-up
    def setup(self, scene: SceneData) -> None:
        center, half = visible_box(scene)
        self.box_center.copy_(center.to(self.device_))
        self.box_half.copy_(half.to(self.device_) * self.config.grid_margin)
        verts, _, _, _ = self._grid()
        radius = self.config.init_radius * float(self.box_half.min())
        with torch.no_grad():
            self.sdf.copy_((verts - self.box_center).norm(dim=-1) - radius)
            # G-Shell: uniform in about [-0.01, 0.99): almost all of the shell is kept at the start
            self.msdf.copy_(torch.rand(len(verts), generator=torch.Generator().manual_seed(0)).to(self.device_) - 0.01)

    def optimizers(self):
        if not self._optimizers:
            c = self.config
            self._optimizers = {
                "geometry": torch.optim.Adam([{"params": [self.sdf], "lr": c.lr_sdf}, {"params": [self.msdf], "lr": c.lr_msdf},
                                              {"params": [self.offsets], "lr": c.lr_offsets}], eps=1e-15),
                "material": torch.optim.Adam([*self.encoding.parameters(), *self.material_mlp.parameters()], lr=c.lr_material, eps=1e-15),
                "light": torch.optim.Adam([self.env_raw], lr=c.lr_light),
            }  # fmt: skip
            for opt in self._optimizers.values():
                for g in opt.param_groups:
                    g["initial_lr"] = g["lr"]
        return self._optimizers

    # ---------------------------------------------------------------- fields
    def _unit(self, points: Tensor) -> Tensor:
        return ((points - self.box_center) / (2 * self.box_half) + 0.5).clamp(0, 1)

    def _material(self, points: Tensor) -> dict[str, Tensor]:
        out = self.material_mlp(self.encoding(self._unit(points)))
        return {
            "base_color": torch.sigmoid(out[:, :3]),
            "roughness": self.config.min_roughness + (1 - self.config.min_roughness) * torch.sigmoid(out[:, 3:4]),
            "metallic": torch.sigmoid(out[:, 4:5] - 2.0),
        }

    def envmap(self) -> Tensor:
        return F.softplus(self.env_raw)

    # ---------------------------------------------------------------- rendering
    def _render(self, camera: Cameras, background: Tensor, mesh: dict | None = None, aux: bool = False) -> dict[str, Tensor]:
        mesh = self.extract() if mesh is None else mesh
        viewmats, Ks = camera.viewmats().to(self.device_), camera.Ks().to(self.device_)
        W, H = int(camera.widths[0]), int(camera.heights[0])
        verts, faces = mesh["verts"], mesh["faces"]
        bg = background.to(self.device_).expand(1, H, W, 3)
        if len(faces) == 0:
            return {"rgb": bg[0], "alpha": torch.zeros(H, W, 1, device=self.device_), "frags": None}
        frags = rasterize(verts, faces, viewmats, Ks, W, H)
        covered = frags.mask[0, ..., 0]
        pos = interpolate(verts, frags)[0, ..., 0, :][covered]
        normal = F.normalize(interpolate(vertex_normals(verts, faces), frags)[0, ..., 0, :][covered], dim=-1)
        eye = torch.linalg.inv(viewmats[0])[:3, 3]
        view = F.normalize(eye - pos, dim=-1)
        normal = torch.where(((normal * view).sum(-1, keepdim=True) < 0), -normal, normal)  # two-sided
        mat = self._material(pos)
        light = prepare_split_sum(self.envmap(), base_height=32)
        shaded = shade_split_sum(normal, view, mat["base_color"], mat["roughness"], mat["metallic"], light)
        srgb = linear_to_srgb(shaded["rgb"].clamp(0, 1))
        color = bg.clone()
        color[0][covered] = srgb
        alpha = covered.float()[None, ..., None]
        image = antialias(torch.cat([color, alpha], -1), frags, mesh_topology(faces))[0]
        out = {"rgb": image[..., :3], "alpha": image[..., 3:], "frags": frags, "covered": covered}
        if aux:
            def scatter(values: Tensor) -> Tensor:
                full = torch.zeros(H, W, values.shape[-1], device=self.device_)
                full[covered] = values
                return full

            out.update(normal=scatter(normal), base_color=scatter(mat["base_color"]), roughness=scatter(mat["roughness"]),
                       metallic=scatter(mat["metallic"]), depth=frags.depth[0, ..., :1].clamp_min(0))  # fmt: skip
        return out

    def _template_msdf_image(self, camera: Cameras, mesh: dict) -> tuple[Tensor, Tensor]:
        """([H, W] mSDF of the template's front surface, [H, W] bool coverage)."""
        viewmats, Ks = camera.viewmats().to(self.device_), camera.Ks().to(self.device_)
        W, H = int(camera.widths[0]), int(camera.heights[0])
        frags = rasterize(mesh["template_verts"], mesh["template_faces"], viewmats, Ks, W, H)
        m = interpolate(mesh["template_msdf"][:, None], frags)[0, ..., 0, 0]
        return m, frags.mask[0, ..., 0]

    # ---------------------------------------------------------------- training
    def train_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        c = self.config
        self._schedule(step)
        camera, image, alpha = batch.camera, batch.image, batch.alpha
        if c.train_scale != 1.0:
            camera = camera.scaled(c.train_scale)
            h, w = int(camera.heights[0]), int(camera.widths[0])

            def down(x: Tensor) -> Tensor:
                return F.interpolate(x.permute(2, 0, 1)[None], size=(h, w), mode="area")[0].permute(1, 2, 0)

            image = down(image)
            alpha = None if alpha is None else down(alpha)
        mesh = self.extract()
        out = self._render(camera, batch.background, mesh)
        rgb = out["rgb"]
        loss_rgb = (rgb - image).abs().mean()
        loss = loss_rgb
        logs = {"l1": loss_rgb.detach(), "faces": torch.tensor(float(len(mesh["faces"])))}
        target_alpha = alpha if alpha is not None else (batch.mask.float() if batch.mask is not None else None)
        if target_alpha is not None:
            if c.train_scale != 1.0 and batch.mask is not None and alpha is None:
                target_alpha = down(target_alpha)
            loss_alpha = (out["alpha"] - target_alpha).square().mean()
            loss = loss + c.alpha_weight * loss_alpha
            m, cov = self._template_msdf_image(camera, mesh)
            inside = target_alpha[..., 0] > 0.5
            pos_out = F.relu(m)[cov & ~inside]
            neg_in = F.relu(-m)[cov & inside]
            loss_m = (pos_out.mean() if len(pos_out) else m.sum() * 0) + (neg_in.mean() if len(neg_in) else m.sum() * 0)
            loss = loss + c.msdf_image_weight * loss_m
            logs.update(alpha_mse=loss_alpha.detach(), msdf_image=loss_m.detach())
        loss = loss + self._sign_weight(step) * self._sign_regularizer()
        if c.msdf_smooth_weight > 0:
            loss = loss + c.msdf_smooth_weight * self._msdf_smoothness()
        tm = mesh["template_msdf"]
        loss = loss + c.open_weight * (64 / c.grid_res) ** 3 * F.huber_loss(tm, torch.full_like(tm, -1e-3), reduction="sum", delta=0.1)
        if c.material_smooth_weight > 0 and len(mesh["verts"]):
            pts = mesh["verts"][torch.randint(len(mesh["verts"]), (min(4096, len(mesh["verts"])),), device=self.device_)].detach()
            jitter = pts + torch.randn_like(pts) * 0.01 * float(self.box_half.max())
            a, b = self._material(pts), self._material(jitter)
            smooth = sum((a[k] - b[k]).abs().mean() for k in a)
            loss = loss + c.material_smooth_weight * smooth
        env = self.envmap()
        white = env.mean((0, 1))
        loss = loss + c.light_white_weight * (white - white.mean()).abs().sum()
        shown = rgb.detach()
        if shown.shape != batch.image.shape:  # the trainer's running PSNR compares with the full-size image
            shown = F.interpolate(shown.permute(2, 0, 1)[None], size=batch.image.shape[:2], mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
        return {"loss": loss, "rgb": shown, **logs}

    def _sign_weight(self, step: int) -> float:
        c = self.config
        f = min(step / max(0.25 * self.max_steps, 1), 1.0)
        return c.sign_weight_start + (c.sign_weight_end - c.sign_weight_start) * f

    def _sign_regularizer(self) -> Tensor:
        """nvdiffrec: on grid edges whose ends disagree in sign, each end's sigmoid(SDF) is pushed to the other
        end's side, which keeps the zero set from breaking up into floaters."""
        _, _, edges, _ = self._grid()
        sa, sb = self.sdf[edges[:, 0]], self.sdf[edges[:, 1]]
        diff = (sa > 0) != (sb > 0)
        if not bool(diff.any()):
            return self.sdf.sum() * 0
        sa, sb = sa[diff], sb[diff]
        return F.binary_cross_entropy_with_logits(sa, (sb > 0).float()) + F.binary_cross_entropy_with_logits(sb, (sa > 0).float())

    def _msdf_smoothness(self) -> Tensor:
        """Mean squared mSDF difference along grid edges within two cells of the SDF's zero set."""
        _, _, edges, cell = self._grid()
        near = (self.sdf.detach()[edges].abs() < 2 * cell).any(-1)
        e = edges[near]
        return (self.msdf[e[:, 0]] - self.msdf[e[:, 1]]).square().mean() if len(e) else self.msdf.sum() * 0

    def _schedule(self, step: int) -> None:
        for opt in self.optimizers().values():
            for g in opt.param_groups:
                g["lr"] = exponential_decay(step, g["initial_lr"], g["initial_lr"] * self.config.lr_final_ratio, self.max_steps)

    @torch.no_grad()
    def after_backward(self, step: int, outputs: dict) -> None:
        # Guard: a degenerate cut (faces of zero area at the boundary, crossings at an end of an edge) can give a
        # non-finite gradient entry; one such entry would make Adam's moments, then every parameter, NaN. Such
        # entries are zeroed (counted in the log as bad_grads).
        bad = 0
        for p in self.parameters():
            if p.grad is not None:
                finite = torch.isfinite(p.grad)
                if not bool(finite.all()):
                    bad += int((~finite).sum())
                    p.grad.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
        self._bad_grads = bad

    def log_scalars(self) -> dict[str, float]:
        return {"bad_grads": float(getattr(self, "_bad_grads", 0))}

    @torch.no_grad()
    def after_optimizer_step(self, step: int, outputs: dict) -> None:
        self.msdf.clamp_(-2.0, 2.0)
        # The grid's outer vertices stay outside: a surface that reaches the box would be clipped open by it.
        verts, _, _, cell = self._grid()
        outer = ((verts - self.box_center).abs() >= self.box_half - 0.5 * cell).any(-1)
        self.sdf[outer] = self.sdf[outer].clamp_min(cell)

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def render(self, camera: Cameras, time: float | None = None, outputs: Sequence[str] = ("rgb",), background: Tensor | None = None, **options) -> dict[str, Tensor]:
        bg = background if background is not None else torch.zeros(3)
        mesh = self.extract()
        out = self._render(camera, bg, mesh, aux=True)
        if "msdf" in outputs:
            m, cov = self._template_msdf_image(camera, mesh)
            out["msdf"] = torch.where(cov, m, torch.zeros_like(m))[..., None]
        return {k: out[k] for k in outputs if k in out}

    @torch.no_grad()
    def mesh(self, time: float | None = None):
        m = self.extract()
        return floater_free(to_trimesh(m["verts"], m["faces"]), self.config.min_component)

    def materials(self):
        @torch.no_grad()
        def query(points: Tensor) -> dict[str, Tensor]:
            return self._material(points.to(self.device_))

        return query
