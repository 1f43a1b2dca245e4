"""Physically based shading: glTF metallic-roughness BRDF, environment lighting (split-sum and Monte Carlo); the
sRGB <-> linear curve is re-exported from :mod:`recon.color`.

BRDF (the glTF 2.0 metallic-roughness model, as in nvdiffrec):

- diffuse: Lambert, ``kd / pi`` with ``kd = base_color * (1 - metallic)``;
- specular: Cook-Torrance ``D F V`` with
  - ``D``: GGX / Trowbridge-Reitz with ``alpha = roughness^2`` (perceptual roughness clamped to >= 0.08);
  - ``V = G2 / (4 (n.l) (n.v))``: Smith **height-correlated** masking-shadowing (Heitz 2014) -- the more accurate
    of the two Smith forms and the one the glTF spec's reference implementation uses;
  - ``F``: Schlick with ``F0 = lerp(0.04, base_color, metallic)``.

The diffuse lobe is not weighted by ``1 - F`` (as in nvdiffrec / most inverse-rendering work), so a white
dielectric can reflect slightly more than it receives; metals and the diffuse lobe alone conserve energy, which
the white-furnace tests check.

Everything is linear radiance; convert with ``linear_to_srgb`` before comparing with sRGB photographs.
Directions: ``normal`` and ``view`` are unit vectors pointing *away* from the surface (``view`` towards the camera).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from recon.color import linear_to_srgb, srgb_to_linear
from recon.render.envmap import EnvSampler, SplitSumEnv, sample_envmap, sample_split_sum_specular

__all__ = [
    "MIN_ROUGHNESS",
    "srgb_to_linear",
    "linear_to_srgb",
    "ggx_ndf",
    "smith_visibility",
    "fresnel_schlick",
    "material_terms",
    "eval_brdf",
    "brdf_lut",
    "lookup_brdf_lut",
    "reflect",
    "shade_split_sum",
    "shade_mc",
]

MIN_ROUGHNESS = 0.08
_LUM = (0.2126, 0.7152, 0.0722)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(-1, keepdim=True)


def reflect(view: Tensor, normal: Tensor) -> Tensor:
    """Mirror ``view`` about ``normal``: 2 (n.v) n - v. [..., 3]"""
    return 2 * _dot(normal, view) * normal - view


def ggx_ndf(n_dot_h: Tensor, alpha: Tensor) -> Tensor:
    """GGX normal distribution D(h), alpha = roughness^2."""
    a2 = alpha * alpha
    d = n_dot_h * n_dot_h * (a2 - 1.0) + 1.0
    return a2 / (math.pi * d * d).clamp_min(1e-12)


def smith_visibility(n_dot_v: Tensor, n_dot_l: Tensor, alpha: Tensor) -> Tensor:
    """Height-correlated Smith visibility V = G2 / (4 n.l n.v)."""
    a2 = alpha * alpha
    gv = n_dot_l * torch.sqrt(n_dot_v * n_dot_v * (1.0 - a2) + a2)
    gl = n_dot_v * torch.sqrt(n_dot_l * n_dot_l * (1.0 - a2) + a2)
    return 0.5 / (gv + gl).clamp_min(1e-12)


def fresnel_schlick(f0: Tensor, cos_theta: Tensor) -> Tensor:
    """Schlick's Fresnel: F0 + (1 - F0) (1 - cos)^5."""
    return f0 + (1.0 - f0) * (1.0 - cos_theta).clamp(0.0, 1.0) ** 5


def material_terms(base_color: Tensor, metallic: Tensor) -> tuple[Tensor, Tensor]:
    """glTF metallic-roughness -> (kd diffuse albedo [..., 3], F0 specular reflectance at normal incidence [..., 3])."""
    kd = base_color * (1.0 - metallic)
    f0 = 0.04 * (1.0 - metallic) + base_color * metallic
    return kd, f0


def _alpha(roughness: Tensor) -> Tensor:
    r = roughness.clamp(MIN_ROUGHNESS, 1.0)
    return r * r


def eval_brdf(
    normal: Tensor, view: Tensor, light: Tensor, base_color: Tensor, roughness: Tensor, metallic: Tensor
) -> tuple[Tensor, Tensor]:
    """Evaluate the BRDF (without the cosine).

    Args:
        normal, view, light: [..., 3] unit vectors pointing away from the surface.
        base_color: [..., 3] linear; roughness, metallic: [..., 1].
    Returns:
        (diffuse [..., 3], specular [..., 3]), zero where n.l <= 0 or n.v <= 0.
    """
    kd, f0 = material_terms(base_color, metallic)
    nl, nv = _dot(normal, light), _dot(normal, view)
    h = torch.nn.functional.normalize(view + light, dim=-1)
    nh, vh = _dot(normal, h).clamp_min(0.0), _dot(view, h).clamp_min(0.0)
    a = _alpha(roughness)
    ok = (nl > 0) & (nv > 0)
    nlc, nvc = nl.clamp_min(1e-6), nv.clamp_min(1e-6)
    spec = ggx_ndf(nh, a) * smith_visibility(nvc, nlc, a) * fresnel_schlick(f0, vh)
    diff = kd / math.pi
    zero = torch.zeros_like(spec)
    return torch.where(ok, diff.expand_as(spec), zero), torch.where(ok, spec, zero)


# ----------------------------------------------------------------------------------------------------------------
# split-sum


def _hammersley(n: int) -> np.ndarray:
    """Deterministic low-discrepancy 2-D points [n, 2] (radical inverse in base 2)."""
    i = np.arange(n, dtype=np.uint64)
    b = i.copy()
    b = ((b << np.uint64(16)) | (b >> np.uint64(16))) & np.uint64(0xFFFFFFFF)
    b = ((b & np.uint64(0x55555555)) << np.uint64(1)) | ((b & np.uint64(0xAAAAAAAA)) >> np.uint64(1))
    b = ((b & np.uint64(0x33333333)) << np.uint64(2)) | ((b & np.uint64(0xCCCCCCCC)) >> np.uint64(2))
    b = ((b & np.uint64(0x0F0F0F0F)) << np.uint64(4)) | ((b & np.uint64(0xF0F0F0F0)) >> np.uint64(4))
    b = ((b & np.uint64(0x00FF00FF)) << np.uint64(8)) | ((b & np.uint64(0xFF00FF00)) >> np.uint64(8))
    return np.stack([(i.astype(np.float64) + 0.5) / n, b.astype(np.float64) / 2.0**32], -1)


@lru_cache(maxsize=2)
def _brdf_lut_np(size: int, n_samples: int) -> np.ndarray:
    nv = (np.arange(size) + 0.5) / size
    r = MIN_ROUGHNESS + (1.0 - MIN_ROUGHNESS) * (np.arange(size) + 0.5) / size
    NV, R = np.meshgrid(nv, r, indexing="ij")
    a = (R * R)[..., None]
    a2 = a * a
    xi = _hammersley(n_samples)
    # GGX importance sampling of h around n = +z; v in the xz-plane
    cos_h = np.sqrt((1.0 - xi[:, 0]) / (1.0 + (a2 - 1.0) * xi[:, 0]))  # [size, size, n]
    sin_h = np.sqrt(1.0 - cos_h**2)
    phi = 2 * np.pi * xi[:, 1]
    hx, hz = sin_h * np.cos(phi), cos_h
    vx, vz = np.sqrt(1 - NV**2)[..., None], NV[..., None]
    vh = vx * hx + vz * hz
    lz = 2 * vh * hz - vz
    ok = (lz > 0) & (vh > 0)
    nl = np.clip(lz, 1e-8, 1)
    vis = 0.5 / (nl * np.sqrt(vz**2 * (1 - a2) + a2) + vz * np.sqrt(nl**2 * (1 - a2) + a2))
    # estimator of integral f_s(no F) cos = V * 4 * n.l * (v.h) / (n.h) under pdf D (n.h) / (4 v.h)
    w = np.where(ok, vis * 4 * nl * vh / hz, 0.0)
    fc = (1 - np.clip(vh, 0, 1)) ** 5
    A = ((1 - fc) * w).mean(-1)
    B = (fc * w).mean(-1)
    return np.stack([A, B], -1).astype(np.float32)


def brdf_lut(size: int = 64, n_samples: int = 1024) -> Tensor:
    """Split-sum BRDF table [size (n.v), size (roughness), 2] = (A, B), with directional specular albedo F0 A + B.

    Rows sample n.v at texel centres in (0, 1); columns perceptual roughness in (MIN_ROUGHNESS, 1). Computed here by
    deterministic GGX importance sampling with height-correlated Smith visibility (cached).
    """
    return torch.from_numpy(_brdf_lut_np(size, n_samples))


def lookup_brdf_lut(n_dot_v: Tensor, roughness: Tensor, lut: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Bilinear lookup of (A, B) for n.v [..., 1] and roughness [..., 1]. Returns two [..., 1] tensors."""
    lut = brdf_lut() if lut is None else lut
    lut = lut.to(device=n_dot_v.device, dtype=n_dot_v.dtype)
    S = lut.shape[0]
    x = (n_dot_v.clamp(0, 1) * S - 0.5).clamp(0, S - 1)
    y = ((roughness.clamp(MIN_ROUGHNESS, 1) - MIN_ROUGHNESS) / (1 - MIN_ROUGHNESS) * S - 0.5).clamp(0, S - 1)
    x0, y0 = x.floor().long().clamp(max=S - 2), y.floor().long().clamp(max=S - 2)
    fx, fy = x - x0, y - y0
    flat = lut.reshape(S * S, 2)

    def g(i, j):
        return flat[(i * S + j).squeeze(-1)]

    out = (g(x0, y0) * (1 - fx) * (1 - fy) + g(x0 + 1, y0) * fx * (1 - fy) + g(x0, y0 + 1) * (1 - fx) * fy
           + g(x0 + 1, y0 + 1) * fx * fy)
    return out[..., :1], out[..., 1:]


def shade_split_sum(
    normal: Tensor, view: Tensor, base_color: Tensor, roughness: Tensor, metallic: Tensor, light: SplitSumEnv
) -> dict[str, Tensor]:
    """Image-based lighting with the split-sum approximation (no shadows, no inter-reflection).

    Args:
        normal, view: [..., 3] unit vectors (view points towards the camera).
        base_color: [..., 3] linear; roughness, metallic: [..., 1].
        light: from ``recon.render.envmap.prepare_split_sum``.
    Returns:
        dict with ``rgb``, ``diffuse``, ``specular``: [..., 3] linear radiance.
    """
    kd, f0 = material_terms(base_color, metallic)
    nv = _dot(normal, view).clamp_min(1e-4)
    irr = sample_envmap(light.irradiance, normal, light.to_env)
    diffuse = kd * irr
    refl = reflect(view, normal)
    pref = sample_split_sum_specular(light, refl, roughness.clamp(MIN_ROUGHNESS, 1.0))
    A, B = lookup_brdf_lut(nv, roughness)
    specular = pref * (f0 * A + B)
    return {"rgb": diffuse + specular, "diffuse": diffuse, "specular": specular}


# ----------------------------------------------------------------------------------------------------------------
# Monte Carlo


def tangent_frame(n: Tensor) -> tuple[Tensor, Tensor]:
    """Orthonormal tangents for normals [..., 3] (Duff et al. 2017, branchless)."""
    sign = torch.where(n[..., 2] >= 0, torch.ones_like(n[..., 2]), -torch.ones_like(n[..., 2]))
    a = -1.0 / (sign + n[..., 2])
    b = n[..., 0] * n[..., 1] * a
    t = torch.stack([1.0 + sign * n[..., 0] ** 2 * a, sign * b, -sign * n[..., 0]], -1)
    s = torch.stack([b, sign + n[..., 1] ** 2 * a, -n[..., 1]], -1)
    return t, s


def shade_mc(
    normal: Tensor,
    view: Tensor,
    base_color: Tensor,
    roughness: Tensor,
    metallic: Tensor,
    env: Tensor,
    n_samples: int = 64,
    to_env: Tensor | None = None,
    sampler: EnvSampler | None = None,
    generator: torch.Generator | None = None,
    points: Tensor | None = None,
    visibility_fn=None,
    chunk: int = 1 << 15,
) -> dict[str, Tensor]:
    """Monte-Carlo environment lighting with multiple importance sampling.

    ``n_samples`` directions per pixel come from the environment map (luminance importance sampling) and
    ``n_samples`` from the BSDF (GGX-distributed half vectors or cosine-weighted, chosen per sample); they are
    combined with the balance heuristic. The environment is evaluated piecewise-constant (nearest texel) so that its
    pdf matches exactly. Gradients flow to the material, normals (through the BRDF) and ``env``; sample directions
    and pdfs are treated as constants (an unbiased gradient of the estimator with a fixed proposal).

    Args:
        normal, view: [..., 3] unit vectors (view towards the camera).
        base_color: [..., 3]; roughness, metallic: [..., 1].
        env: [H, W, 3] linear lat-long radiance.
        n_samples: samples per strategy per pixel.
        to_env: optional [3, 3] world -> env rotation.
        sampler: a prebuilt ``EnvSampler`` for ``env`` (built when None).
        generator: torch.Generator for reproducible noise.
        points, visibility_fn: optional shadows: ``visibility_fn(points [M, 3], dirs [M, 3]) -> [M]`` in [0, 1].
    Returns:
        dict with ``rgb``, ``diffuse``, ``specular``: [..., 3] linear radiance.
    """
    shape = normal.shape[:-1]
    n = normal.reshape(-1, 3)
    v = view.reshape(-1, 3)
    bc = base_color.reshape(-1, 3)
    rough = roughness.reshape(-1, 1)
    metal = metallic.reshape(-1, 1)
    pts = None if points is None else points.reshape(-1, 3)
    sampler = EnvSampler(env, to_env) if sampler is None else sampler
    outs_d, outs_s = [], []
    per = max(1, chunk // max(1, n_samples))
    for s in range(0, n.shape[0], per):
        sl = slice(s, s + per)
        d, sp = _mc_chunk(n[sl], v[sl], bc[sl], rough[sl], metal[sl], env, n_samples, to_env, sampler, generator,
                          None if pts is None else pts[sl], visibility_fn)
        outs_d.append(d)
        outs_s.append(sp)
    diffuse = torch.cat(outs_d).reshape(*shape, 3)
    specular = torch.cat(outs_s).reshape(*shape, 3)
    return {"rgb": diffuse + specular, "diffuse": diffuse, "specular": specular}


def _mc_chunk(n, v, bc, rough, metal, env, ns, to_env, sampler, generator, pts, visibility_fn):
    P = n.shape[0]
    dev, dt = n.device, n.dtype
    with torch.no_grad():
        kd, f0 = material_terms(bc, metal)
        lum = torch.tensor(_LUM, device=dev, dtype=dt)
        p_spec = ((f0 * lum).sum(-1) / ((f0 + kd) * lum).sum(-1).clamp_min(1e-8)).clamp(0.2, 0.9)[:, None]  # [P,1]
        a = _alpha(rough)  # [P, 1]
        # strategy 1: environment samples
        l_env, _ = sampler.sample(P * ns, generator)
        l_env = l_env.view(P, ns, 3).to(dt)
        # strategy 2: BSDF samples
        xi = torch.rand(P, ns, 3, generator=generator, dtype=torch.float64).to(device=dev, dtype=dt)
        t, b = tangent_frame(n)
        a2 = (a * a)
        cos_h = torch.sqrt((1 - xi[..., 0]) / (1 + (a2 - 1) * xi[..., 0]))
        cos_d = torch.sqrt(xi[..., 0])  # cosine-weighted hemisphere: cos theta = sqrt(xi)
        use_spec = xi[..., 2] < p_spec
        cos_t = torch.where(use_spec, cos_h, cos_d)
        sin_t = torch.sqrt((1 - cos_t * cos_t).clamp_min(0))
        phi = 2 * math.pi * xi[..., 1]
        local = (sin_t * torch.cos(phi))[..., None] * t[:, None] + (sin_t * torch.sin(phi))[..., None] * b[:, None] \
            + cos_t[..., None] * n[:, None]
        l_spec = 2 * (local * v[:, None]).sum(-1, keepdim=True) * local - v[:, None]  # reflect v about h
        l_bsdf = torch.where(use_spec[..., None], l_spec, local)
        L_dirs = torch.cat([l_env, l_bsdf], 1)  # [P, 2ns, 3]
        # pdfs of both strategies for every sample (balance heuristic)
        nl = (L_dirs * n[:, None]).sum(-1)
        h = torch.nn.functional.normalize(L_dirs + v[:, None], dim=-1)
        nh = (h * n[:, None]).sum(-1).clamp_min(0)
        vh = (h * v[:, None]).sum(-1).clamp_min(1e-8)
        pdf_spec = ggx_ndf(nh, a) * nh / (4 * vh)
        pdf_bsdf = p_spec * pdf_spec + (1 - p_spec) * nl.clamp_min(0) / math.pi
        pdf_env = sampler.pdf(L_dirs)
        weight = 1.0 / (ns * (pdf_env + pdf_bsdf).clamp_min(1e-12))  # [P, 2ns]
        if visibility_fn is not None and pts is not None:
            vis = visibility_fn(pts[:, None].expand(-1, 2 * ns, -1).reshape(-1, 3), L_dirs.reshape(-1, 3))
            weight = weight * vis.reshape(P, 2 * ns).to(dt)
    Li = sample_envmap(env, L_dirs, to_env, mode="nearest").to(dt)  # [P, 2ns, 3], differentiable w.r.t. env
    fd, fs = eval_brdf(n[:, None], v[:, None], L_dirs, bc[:, None], rough[:, None], metal[:, None])
    cos = (L_dirs * n[:, None]).sum(-1, keepdim=True).clamp_min(0)
    w = weight[..., None] * cos * Li
    return (fd * w).sum(1), (fs * w).sum(1)
