"""Dense brute-force Gaussian rasterizer in pure torch (autograd): the test oracle.

Deliberately independent of `recon.render.gaussians`: projection and SH come from gsplat's own pure-torch
reference implementations (`gsplat.cuda._torch_impl`, pinned gsplat 1.5.3, CPU-capable), and compositing is a
plain sequential loop, Gaussian by Gaussian in (depth, index) order, over *every* pixel of the image - no tiles,
no boxes, no pair lists. Culling keeps only what changes the picture: camera z outside [near, far] and
radius_clip (every other gsplat cull - opacity < 1/255, off-screen, beyond the opacity-aware radius - only
removes pixels whose alpha is < 1/255, which the alpha test drops anyway).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci, _spherical_harmonics
from torch import Tensor

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
TRANS_MIN = 1e-4


def rasterize_dense(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [N, D] or [N, K, 3] with sh_degree
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    sh_degree: Optional[int] = None,
    backgrounds: Optional[Tensor] = None,  # [C, D]
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    antialiased: bool = False,
    radius_clip: float = 0.0,
) -> Dict[str, Tensor]:
    """Returns colors [C,H,W,D], alphas [C,H,W,1], depth_acc (sum w z) [C,H,W,1], depth_exp [C,H,W,1],
    median [C,H,W,1] (depth of the last Gaussian drawn with front transmittance > 0.5, else 0)."""
    C = viewmats.shape[0]
    covars, _ = _quat_scale_to_covar_preci(quats, scales, True, False, triu=False)
    # Which (camera, Gaussian) pairs are drawn is decided without gradients; the projection is then re-run on
    # the drawn Gaussians only, so that behind-the-camera ones (z ~ 0) cannot inject inf/NaN gradients.
    with torch.no_grad():
        R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
        z_all = torch.einsum("cij,nj->cn", R[:, 2:3, :], means) + t[:, 2:3]
    out = {k: [] for k in ("colors", "alphas", "depth_acc", "depth_exp", "median")}
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=means.dtype), torch.arange(width, dtype=means.dtype), indexing="ij"
    )
    px, py = xs.reshape(-1) + 0.5, ys.reshape(-1) + 0.5  # pixel centres [P]
    for c in range(C):
        sel = torch.nonzero((z_all[c] >= near_plane) & (z_all[c] <= far_plane)).squeeze(-1)
        radii, means2d, depths, conics, comp = _fully_fused_projection(
            means[sel], covars[sel], viewmats[c : c + 1], Ks[c : c + 1], width, height, eps2d=eps2d,
            near_plane=near_plane, far_plane=far_plane, calc_compensations=antialiased,
        )  # fmt: skip
        means2d, depths, conics = means2d[0], depths[0], conics[0]
        opac = opacities[sel] * (comp[0] if antialiased else 1.0)
        if radius_clip > 0:
            # gsplat's radius is opacity aware; only matters through radius_clip here.
            with torch.no_grad():
                o = opac.detach()
                ext = torch.sqrt(2.0 * torch.log(torch.clamp(o / ALPHA_MIN, min=1.0))).clamp(max=3.33)
                a = conics[:, 2] / (conics[:, 0] * conics[:, 2] - conics[:, 1] ** 2)
                cc = conics[:, 0] / (conics[:, 0] * conics[:, 2] - conics[:, 1] ** 2)
                keep = ~((torch.ceil(ext * a.sqrt()) <= radius_clip) & (torch.ceil(ext * cc.sqrt()) <= radius_clip))
            sel_k = torch.nonzero(keep).squeeze(-1)
            sel, means2d, depths, conics, opac = sel[sel_k], means2d[sel_k], depths[sel_k], conics[sel_k], opac[sel_k]
        if sh_degree is None:
            feats = colors[sel]
        else:
            campos = torch.inverse(viewmats[c])[:3, 3]
            feats = torch.clamp_min(_spherical_harmonics(sh_degree, means[sel] - campos, colors[sel]) + 0.5, 0.0)
        order = torch.argsort(depths.detach(), stable=True)  # ties: lower index first
        P = px.numel()
        T = torch.ones(P, dtype=means.dtype)
        done = torch.zeros(P, dtype=torch.bool)
        acc = torch.zeros(P, feats.shape[-1], dtype=means.dtype)
        dacc = torch.zeros(P, dtype=means.dtype)
        median = torch.zeros(P, dtype=means.dtype)
        for g in order.tolist():
            dx = means2d[g, 0] - px
            dy = means2d[g, 1] - py
            sigma = 0.5 * (conics[g, 0] * dx * dx + conics[g, 2] * dy * dy) + conics[g, 1] * dx * dy
            alpha = torch.clamp(opac[g] * torch.exp(-sigma), max=ALPHA_MAX)
            hit = (sigma >= 0) & (alpha >= ALPHA_MIN) & ~done
            next_T = T * (1.0 - alpha)
            stop = hit & (next_T <= TRANS_MIN)
            done = done | stop
            draw = hit & ~stop
            w = torch.where(draw, alpha * T, torch.zeros_like(T))
            acc = acc + w[:, None] * feats[g]
            dacc = dacc + w * depths[g]
            median = torch.where(draw & (T > 0.5), depths[g].expand(P), median)
            T = torch.where(draw, next_T, T)
        alpha_img = 1.0 - T
        col = acc
        if backgrounds is not None:
            col = col + T[:, None] * backgrounds[c]
        shape = (height, width)
        out["colors"].append(col.reshape(*shape, -1))
        out["alphas"].append(alpha_img.reshape(*shape, 1))
        out["depth_acc"].append(dacc.reshape(*shape, 1))
        out["depth_exp"].append((dacc / alpha_img.clamp(min=1e-10)).reshape(*shape, 1))
        out["median"].append(median.reshape(*shape, 1))
    return {k: torch.stack(v) for k, v in out.items()}


def random_scene(
    n: int = 120,
    n_cameras: int = 2,
    width: int = 40,
    height: int = 32,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    sh_degree: Optional[int] = None,
    channels: int = 3,
) -> Tuple[Dict[str, Tensor], int, int]:
    """A small scene with the awkward cases in it: Gaussians behind the camera, off screen, sub-pixel,
    huge, and several at exactly the same depth (camera 0 has an identity rotation, so equal world z gives
    exactly equal camera z). Returns (tensors requiring grad, width, height)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.rand(*s, generator=g, dtype=dtype)  # noqa: E731
    rn = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    means = torch.cat([(r(n, 2) - 0.5) * 3.0, 2.0 + r(n, 1) * 4.0], dim=-1)
    log_s = -3.0 + r(n, 3) * 2.0  # scales 0.05 .. 0.37 world units
    k = n // 12
    means[:k, 2] = -1.0 - r(k)  # behind camera 0
    means[k : 2 * k, 0] += 6.0  # off screen to the right
    log_s[2 * k : 3 * k] = -7.5  # sub-pixel
    log_s[3 * k : 3 * k + 3] = 0.0  # huge: scale 1 at depth 2..6
    means[4 * k : 4 * k + 5, 2] = 3.25  # five at exactly the same depth, overlapping
    means[4 * k : 4 * k + 5, :2] = means[4 * k, :2] + 0.05 * rn(5, 2)
    quats = rn(n, 4)
    opac = 0.05 + 0.9 * r(n)
    if sh_degree is None:
        colors = r(n, channels)
    else:
        colors = 0.3 * rn(n, (sh_degree + 1) ** 2, 3)
    # cameras: 0 = identity looking down +z; 1 = slightly rotated and shifted
    f = 0.9 * width
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=dtype)
    views = [torch.eye(4, dtype=dtype)]
    for i in range(1, n_cameras):
        ang = 0.15 * i
        Rz = torch.tensor(
            [[1, 0, 0], [0, torch.cos(torch.tensor(ang)), -torch.sin(torch.tensor(ang))],
             [0, torch.sin(torch.tensor(ang)), torch.cos(torch.tensor(ang))]], dtype=dtype,
        )  # fmt: skip
        V = torch.eye(4, dtype=dtype)
        V[:3, :3] = Rz
        V[:3, 3] = torch.tensor([0.2 * i, -0.1 * i, 0.3], dtype=dtype)
        views.append(V)
    scene = {
        "means": means,
        "quats": quats,
        "scales": log_s.exp(),
        "opacities": opac,
        "colors": colors,
        "viewmats": torch.stack(views),
        "Ks": K[None].repeat(n_cameras, 1, 1),
        "backgrounds": r(n_cameras, colors.shape[-1]),
    }
    for key in ("means", "quats", "scales", "opacities", "colors", "backgrounds"):
        scene[key] = scene[key].clone().requires_grad_(True)
    return scene, width, height
