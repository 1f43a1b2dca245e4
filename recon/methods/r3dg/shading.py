"""Per-Gaussian physically based shading of Relightable 3D Gaussians (forward shading: every Gaussian is a surface
point with a normal; its outgoing radiance is then splatted as a colour).

    L_o = sum over S hemisphere directions w of (f_d + f_s)(n, v, w) L_i(w) max(n.w, 0) dw,
    L_i(w) = V(w) L_env(w) + L_local(w),

with recon's glTF BRDF (Lambert + GGX, F0 = lerp(0.04, base colour, metallic): going past the paper's fixed 0.04 so
that metals can be represented), V the baked visibility of each direction, L_env the environment map and L_local
the Gaussian's own incident light (SH degree 3, clamped at 0: indirect light and other residuals). The directions
are a Fibonacci spiral with cos(theta) uniform over [sin 10°, 1], so each stands for dw = 2 pi (1 - sin 10°) / S.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from recon.render.envmap import sample_envmap
from recon.render.lights import sh_basis
from recon.render.pbr import MIN_ROUGHNESS, fresnel_schlick, ggx_ndf, material_terms, smith_visibility

#: Lowest elevation of the sample directions (the paper clamps z to sin 10°).
MIN_ELEVATION_DEG = 10.0


def solid_angle_per_sample(samples: int) -> float:
    return 2.0 * math.pi * (1.0 - math.sin(math.radians(MIN_ELEVATION_DEG))) / samples


def local_light(coeffs: Tensor, dirs: Tensor) -> Tensor:
    """[G, S, 3] incident radiance of each Gaussian's SH light ``coeffs`` [G, 16, 3] in ``dirs`` [G, S, 3], >= 0."""
    return torch.einsum("gsk,gkc->gsc", sh_basis(dirs, 3), coeffs).clamp_min(0.0)


def shade(normals: Tensor, view: Tensor, dirs: Tensor, visibility: Tensor, base_color: Tensor, roughness: Tensor, metallic: Tensor,
          env: Tensor, local: Tensor | None, to_env: Tensor | None = None) -> dict[str, Tensor]:  # fmt: skip
    """Outgoing radiance of G Gaussians.

    Args:
        normals: [G, 3] unit, facing ``view``. view: [G, 3] unit, towards the camera.
        dirs: [G, S, 3] unit incident directions (hemisphere of each normal). visibility: [G, S] in [0, 1].
        base_color: [G, 3] linear. roughness, metallic: [G, 1].
        env: [He, We, 3] linear lat-long radiance (``to_env``: [3, 3] rotation into its frame).
        local: [G, 16, 3] SH incident light, or None (relighting uses the new environment alone).

    Returns:
        ``rgb``, ``diffuse``, ``specular`` [G, 3] linear radiance; ``irradiance`` [G, 3] (cosine-weighted incident
        light / pi: the light a white Lambertian surface would reflect); ``local`` [G, 3] the local light's share.
    """
    g, s = dirs.shape[:2]
    dw = solid_angle_per_sample(s)
    env_in = sample_envmap(env, dirs.reshape(-1, 3), to_env).reshape(g, s, 3) * visibility[..., None]
    loc = local_light(local, dirs) if local is not None else None
    light = env_in if loc is None else env_in + loc
    n = normals[:, None, :]
    cos = (dirs * n).sum(-1, keepdim=True).clamp_min(0.0)  # [G, S, 1]
    weighted = light * (cos * dw)  # L cos dw
    kd, f0 = material_terms(base_color, metallic)
    irradiance = weighted.sum(1)  # [G, 3]
    # The same BRDF as recon.render.pbr.eval_brdf, arranged for many light directions per point: the Lambert
    # lobe is constant, so it multiplies the summed light; only the specular lobe is evaluated per direction.
    # One difference: a Gaussian whose normal faces slightly away from the camera (at silhouettes, where the
    # splats of a curved surface turn away) is shaded as at grazing view (n.v clamped at 1e-6) instead of black.
    diffuse = kd / math.pi * irradiance
    v = view[:, None, :]
    h = F.normalize(v + dirs, dim=-1)
    nh = (n * h).sum(-1, keepdim=True).clamp_min(0.0)
    vh = (v * h).sum(-1, keepdim=True).clamp_min(0.0)
    a = roughness.clamp(MIN_ROUGHNESS, 1.0) ** 2  # [G, 1]
    nv = (normals * view).sum(-1, keepdim=True).clamp_min(1e-6)
    dv = ggx_ndf(nh, a[:, None, :]) * smith_visibility(nv[:, None, :], cos.clamp_min(1e-6), a[:, None, :])  # [G, S, 1]
    specular = (fresnel_schlick(f0[:, None, :], vh) * dv * weighted).sum(1)
    out = {"rgb": diffuse + specular, "diffuse": diffuse, "specular": specular, "irradiance": irradiance / math.pi}
    out["local"] = (loc * (cos * dw)).sum(1) / math.pi if loc is not None else torch.zeros_like(irradiance)
    return out
