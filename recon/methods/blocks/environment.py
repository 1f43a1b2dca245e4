"""What the blocks stand on and in front of: a textured ground plane with a learnable pose, and either a textured
background sphere (photos) or the data's own background behind a ground with an alpha channel (RGBA data).

Rendered hard (no blur), as the paper's "decoupled" rendering: the environment has no topology to discover, and a
sharp ground gives the blocks a sharp contact line. Both are intersected analytically with every pixel's ray (a plane
and a sphere need no rasterizer): exact, differentiable w.r.t. the ground's pose, and a fraction of the cost of
rasterizing large triangles.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from recon.geometry.superquadric import spherical_uv
from recon.render.mesh import pixel_rays
from recon.render.mesh_texture import decimate_texture, sample_texture_stack
from recon.rotations import rot6d_to_rotmat, rotmat_to_rot6d

def _plane_basis(normal: Tensor) -> tuple[Tensor, Tensor]:
    helper = torch.tensor([1.0, 0.0, 0.0], device=normal.device)
    if abs(float(normal @ helper)) > 0.9:
        helper = torch.tensor([0.0, 1.0, 0.0], device=normal.device)
    e1 = torch.nn.functional.normalize(torch.cross(normal, helper, dim=0), dim=0)
    return e1, torch.cross(normal, e1, dim=0)


class Environment(nn.Module):
    """Ground plane + background.

    Parameters: ``ground_rot6d`` [6] and ``ground_offset`` [3] (a rigid correction of the estimated plane, offset in
    units of ``scale``), ``ground_logits`` [T, T, 4] (RGB + alpha), ``sky_logits`` [T, T, 3] (background sphere).
    Buffers: ``ground_point``, ``ground_normal`` [3], ``radius`` (ground half-size and sphere radius), ``scale`` (the
    object region's radius), ``sky_center`` [3], ``use_sky`` (False: the data's background shows beyond the ground).
    """

    def __init__(self, texture_size: int):
        super().__init__()
        self.ground_rot6d = nn.Parameter(rotmat_to_rot6d(torch.eye(3)))
        self.ground_offset = nn.Parameter(torch.zeros(3))
        self.ground_logits = nn.Parameter(torch.zeros(texture_size, texture_size, 4))
        self.sky_logits = nn.Parameter(torch.zeros(texture_size, texture_size, 3))
        for name, value in (("ground_point", torch.zeros(3)), ("ground_normal", torch.tensor([0.0, 0.0, 1.0])),
                            ("radius", torch.tensor(10.0)), ("scale", torch.tensor(1.0)), ("sky_center", torch.zeros(3)),
                            ("use_sky", torch.tensor(True)), ("has_ground", torch.tensor(True))):
            self.register_buffer(name, value)

    @torch.no_grad()
    def initialize(self, point, normal, radius: float, scale: float, sky_center, use_sky: bool, has_ground: bool, ground_color) -> None:
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32, device=self.radius.device)  # noqa: E731
        self.ground_point.copy_(t(point))
        self.ground_normal.copy_(torch.nn.functional.normalize(t(normal), dim=0))
        self.radius.fill_(float(radius))
        self.scale.fill_(float(scale))
        self.sky_center.copy_(t(sky_center))
        self.use_sky.fill_(bool(use_sky))
        self.has_ground.fill_(bool(has_ground))
        self.ground_logits[..., :3] = torch.logit(t(ground_color).clamp(0.02, 0.98))
        self.ground_logits[..., 3] = 4.0  # opaque to start: the ground is there unless the data says otherwise

    # ------------------------------------------------------------------ geometry
    def ground_patch(self, around: Tensor, margin: float = 1.5) -> tuple[Tensor, Tensor, Tensor]:
        """A square piece of the ground under points ``around`` [P, 3] (half-size ``margin`` x their largest distance
        from their centre, in the plane): (vertices [4, 3], faces [2, 3], uvs [4, 2]) with the ground texture's UVs."""
        origin, _, e1, e2 = self._ground_frame()
        rel = around - origin
        g = torch.stack([rel @ e1, rel @ e2], -1) / self.radius  # ground coordinates, [-1, 1] over the whole ground
        c = g.mean(0)
        half = margin * float((g - c).norm(dim=-1).max().clamp_min(1e-3))
        corners = c + half * torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], device=g.device)
        verts = origin + self.radius * (corners[:, :1] * e1 + corners[:, 1:] * e2)
        faces = torch.tensor([[0, 1, 2], [0, 2, 3]], device=g.device)
        return verts, faces, corners * 0.5 + 0.5

    def ground_plane(self) -> tuple[Tensor, Tensor]:
        """(point [3], unit normal [3]) of the ground after its learnt correction."""
        p0, n, _, _ = self._ground_frame()
        return p0, n

    def textures(self, decimate: int = 1) -> tuple[Tensor, Tensor]:
        """(ground [T, T, 4], sky [T, T, 3]) in [0, 1]; ``decimate`` > 1 average-pools and upsamples back."""
        return (decimate_texture(torch.sigmoid(self.ground_logits), decimate),
                decimate_texture(torch.sigmoid(self.sky_logits), decimate))

    def _ground_frame(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(origin [3], normal [3], in-plane axes e1, e2 [3]) of the ground after its learnt correction."""
        R = rot6d_to_rotmat(self.ground_rot6d)
        e1, e2 = _plane_basis(self.ground_normal)
        return self.ground_point + self.scale * self.ground_offset, R @ self.ground_normal, R @ e1, R @ e2

    def render(self, viewmats: Tensor, Ks: Tensor, width: int, height: int, background: Tensor, decimate: int = 1) -> tuple[Tensor, Tensor]:
        """Render the environment for C cameras: (rgb [C, H, W, 3], depth [C, H, W, 1] camera z, 0 where nothing);
        ``background`` [3] fills what neither the ground nor the sphere covers (and shows through the ground's
        alpha); ``decimate`` as in :meth:`textures`."""
        ground_tex, sky_tex = self.textures(decimate)
        dev = viewmats.device
        C = viewmats.shape[0]
        py, px = torch.meshgrid(torch.arange(height, device=dev), torch.arange(width, device=dev), indexing="ij")
        rgbs, depths = [], []
        for c in range(C):
            K, R, t = Ks[c].float(), viewmats[c, :3, :3].float(), viewmats[c, :3, 3].float()
            d = pixel_rays(px, py, K) @ R  # world directions with camera z = 1: a ray's t is the depth
            o = -R.T @ t
            col = background.expand(height, width, 3)
            dep = torch.zeros(height, width, device=dev)
            if bool(self.use_sky):
                oc = o - self.sky_center
                a = (d * d).sum(-1)
                b = (d * oc).sum(-1)
                disc = (b * b - a * ((oc * oc).sum() - self.radius**2)).clamp_min(0)
                ts = (-b + disc.sqrt()) / a  # the far root: cameras are inside the sphere
                q = (oc + ts[..., None] * d) / self.radius
                eta = torch.asin(q[..., 1].clamp(-1, 1))
                omega = torch.atan2(q[..., 0], q[..., 2])
                uv = torch.stack(spherical_uv(eta, omega), -1).reshape(-1, 2)
                idx = torch.zeros(uv.shape[0], dtype=torch.long, device=dev)
                col = sample_texture_stack(sky_tex[None], idx, uv).reshape(height, width, 3)
                dep = ts
            if bool(self.has_ground):
                p0, n, e1, e2 = self._ground_frame()
                dn = d @ n
                tg = ((p0 - o) @ n) / torch.where(dn.abs() < 1e-9, torch.full_like(dn, 1e-9), dn)
                hit_p = o + tg[..., None] * d - p0
                g = torch.stack([hit_p @ e1, hit_p @ e2], -1) / self.radius  # [-1, 1] across the ground square
                hit = (tg > 1e-3) & (g.abs() <= 1).all(-1)
                idx = torch.zeros(height * width, dtype=torch.long, device=dev)
                tex = sample_texture_stack(ground_tex[None], idx, (g * 0.5 + 0.5).reshape(-1, 2)).reshape(height, width, 4)
                alpha = tex[..., 3:] if not bool(self.use_sky) else torch.ones_like(tex[..., 3:])
                alpha = alpha * hit[..., None]
                col = tex[..., :3] * alpha + col * (1 - alpha)
                dep = torch.where(hit, tg, dep)
            rgbs.append(col)
            depths.append(dep[..., None])
        return torch.stack(rgbs), torch.stack(depths)

    def texture_tv(self) -> Tensor:
        """Mean squared neighbour differences of the ground (RGB + alpha) and background textures."""
        out = 0.0
        for logits, on in ((self.ground_logits, self.has_ground), (self.sky_logits, self.use_sky)):
            if bool(on):
                t = torch.sigmoid(logits)
                out = out + (t[1:] - t[:-1]).square().mean() + (t[:, 1:] - t[:, :-1]).square().mean()
        return out if isinstance(out, Tensor) else self.ground_offset.sum() * 0.0
