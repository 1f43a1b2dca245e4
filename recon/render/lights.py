"""Learnable distant-light representations.

Each light is an ``nn.Module`` with ``radiance(dirs [..., 3]) -> [..., 3]`` (linear, non-negative) and
``envmap(height) -> [height, 2 height, 3]``, so every light plugs into the same shading paths
(``prepare_split_sum`` + ``shade_split_sum``, or ``shade_mc``) and can be exported as an ``.hdr`` probe.

- ``EnvMapLight``: a low-resolution lat-long map (most expressive; what nvdiffrec / G-Shell optimise).
- ``SHLight``: real spherical harmonics up to degree 2 or 3 (smooth, very few parameters; good for diffuse).
- ``SGLight``: a mixture of spherical Gaussians (PhySG-style; compact and able to represent a sun).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from recon.render.envmap import envmap_directions, resize_envmap, sample_envmap

__all__ = ["LightField", "EnvMapLight", "SHLight", "SGLight", "sh_basis"]


class LightField(nn.Module):
    """Base class: subclasses implement ``radiance``; ``envmap`` samples it on a lat-long grid."""

    def radiance(self, dirs: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def envmap(self, height: int = 32) -> Tensor:
        """[height, 2 height, 3] linear radiance (differentiable w.r.t. the parameters)."""
        p = next(self.parameters())
        return self.radiance(envmap_directions(height, device=p.device, dtype=p.dtype))


class EnvMapLight(LightField):
    """Lat-long map stored as log-radiance (positivity without clamping, multiplicative updates).

    Args:
        height: rows of the map (width = 2 height).
        init: initial constant radiance (scalar or [3]), or an initial map [H, W, 3].
    """

    def __init__(self, height: int = 32, init: float | Tensor = 0.5):
        super().__init__()
        if isinstance(init, Tensor) and init.dim() == 3:
            base = resize_envmap(init.float(), height)
        else:
            base = torch.ones(height, 2 * height, 3) * torch.as_tensor(init, dtype=torch.float32)
        self.log_radiance = nn.Parameter(base.clamp_min(1e-6).log())

    def envmap(self, height: int | None = None) -> Tensor:
        env = self.log_radiance.exp()
        return env if height is None or height == env.shape[0] else resize_envmap(env, height)

    def radiance(self, dirs: Tensor) -> Tensor:
        return sample_envmap(self.log_radiance.exp(), dirs)


def sh_basis(dirs: Tensor, degree: int) -> Tensor:
    """Real orthonormal spherical harmonics for unit directions [..., 3] -> [..., (degree + 1)^2], degree <= 3."""
    if not 0 <= degree <= 3:
        raise ValueError("sh_basis supports degree 0..3")
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, 0.28209479177387814)]
    if degree >= 1:
        c = 0.4886025119029199
        out += [-c * y, c * z, -c * x]
    if degree >= 2:
        out += [
            1.0925484305920792 * x * y,
            -1.0925484305920792 * y * z,
            0.31539156525252005 * (3 * z * z - 1),
            -1.0925484305920792 * x * z,
            0.5462742152960396 * (x * x - y * y),
        ]
    if degree >= 3:
        out += [
            -0.5900435899266435 * y * (3 * x * x - y * y),
            2.890611442640554 * x * y * z,
            -0.4570457994644658 * y * (5 * z * z - 1),
            0.3731763325901154 * z * (5 * z * z - 3),
            -0.4570457994644658 * x * (5 * z * z - 1),
            1.445305721320277 * z * (x * x - y * y),
            -0.5900435899266435 * x * (x * x - 3 * y * y),
        ]
    return torch.stack(out, -1)


class SHLight(LightField):
    """Radiance as a real SH expansion (per RGB channel), clamped at 0 when evaluated.

    Args:
        degree: 0..3.
        init: initial constant radiance.
    """

    def __init__(self, degree: int = 2, init: float = 0.5):
        super().__init__()
        self.degree = degree
        coeffs = torch.zeros((degree + 1) ** 2, 3)
        coeffs[0] = init / 0.28209479177387814
        self.coeffs = nn.Parameter(coeffs)

    def radiance(self, dirs: Tensor) -> Tensor:
        return (sh_basis(dirs, self.degree) @ self.coeffs.to(dirs.dtype)).clamp_min(0.0)

    @torch.no_grad()
    def fit_envmap(self, env: Tensor) -> "SHLight":
        """Set the coefficients to the (solid-angle weighted) projection of ``env`` [H, W, 3]."""
        from recon.render.envmap import envmap_solid_angles

        H, W, _ = env.shape
        d = envmap_directions(H, W, env.device, env.dtype)
        w = envmap_solid_angles(H, W, env.device, env.dtype)[:, None, None]
        Y = sh_basis(d, self.degree)  # [H, W, B]
        self.coeffs.copy_(torch.einsum("hwb,hwc->bc", Y * w, env).to(self.coeffs.dtype))
        return self


class SGLight(LightField):
    """Mixture of spherical Gaussians: L(d) = sum_k a_k exp(s_k (d . mu_k - 1)).

    Args:
        n_lobes: number of lobes (axes start on a Fibonacci sphere).
        init: initial total radiance level (roughly constant).
        sharpness: initial lobe sharpness s.
    """

    def __init__(self, n_lobes: int = 16, init: float = 0.5, sharpness: float = 5.0):
        super().__init__()
        i = torch.arange(n_lobes, dtype=torch.float32) + 0.5
        z = 1 - 2 * i / n_lobes
        phi = math.pi * (1 + 5**0.5) * i
        r = torch.sqrt(1 - z * z)
        self.axis = nn.Parameter(torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1))
        self.log_sharpness = nn.Parameter(torch.full((n_lobes,), math.log(sharpness)))
        # integral of one lobe ~ 2 pi / s; spread the constant init over the lobes
        amp = init * 4 * math.pi / (n_lobes * 2 * math.pi / sharpness)
        self.log_amplitude = nn.Parameter(torch.full((n_lobes, 3), math.log(amp)))

    def radiance(self, dirs: Tensor) -> Tensor:
        mu = torch.nn.functional.normalize(self.axis.to(dirs.dtype), dim=-1)
        s = self.log_sharpness.to(dirs.dtype).exp()
        g = torch.exp(s * (dirs @ mu.T - 1.0))  # [..., K]
        return g @ self.log_amplitude.to(dirs.dtype).exp()
