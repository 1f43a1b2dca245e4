"""Superquadrics (superellipsoids): a differentiable mesh from a fixed template, texture UVs, the implicit form,
analytic volume and sampling, as used by primitive-based reconstruction (Differentiable Blocks World).

Local frame, y up (the convention of the Blocks World code, kept so its parameters read the same). A template
vertex with latitude ``eta`` in [-pi/2, pi/2] and longitude ``omega`` in (-pi, pi] maps to

    x = sx * c(eta)^e1 * s(omega)^e2,   y = sy * s(eta)^e1,   z = sz * c(eta)^e1 * c(omega)^e2

with signed powers ``sign(t) |t|^e``. ``e1`` shapes the latitude profile, ``e2`` the cross-section around y; 1 is
round, near 0 square, 2 a diamond. Within (0, 2] every superellipsoid is convex, which the renderer relies on
(back faces can be culled) and which makes the convex hull an exact collision shape.

The angles come from a subdivided icosphere rather than a latitude-longitude grid: icosphere vertices are spread
evenly, so no region of the surface is starved of vertices while exponents change during optimisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import trimesh
from torch import Tensor

__all__ = [
    "SuperquadricTemplate",
    "make_template",
    "signed_pow",
    "spherical_uv",
    "superquadric_points",
    "pseudo_sdf",
    "superquadric_volume",
    "sample_in_boxes",
]


def spherical_uv(eta, omega):
    """Texture coordinates (u, v) of latitude ``eta`` and longitude ``omega`` (numpy arrays or tensors): u = omega /
    2pi + 1/2 around, v = 1/2 - eta / pi downwards (glTF's v), so the north pole is the top row."""
    return omega / (2 * math.pi) + 0.5, 0.5 - eta / math.pi


def signed_pow(x: Tensor, e: Tensor) -> Tensor:
    """``sign(x) |x|^e`` with a gradient that stays finite at ``x = 0`` (|x| floored at 1e-6)."""
    return torch.sign(x) * x.abs().clamp_min(1e-6) ** e


@dataclass
class SuperquadricTemplate:
    """A unit icosphere's angles plus a seam- and pole-safe UV layout (shared by every block).

    Attributes:
        eta: [V] latitudes; omega: [V] longitudes (radians).
        faces: [F, 3] int64 position indices, counter-clockwise seen from outside.
        uvs: [V', 3 -> 2] texture coordinates (u right, v down, glTF convention) and ``uv_faces`` [F, 3] their
            indices: faces crossing the u seam and faces touching a pole get their own UV vertices.
    """

    eta: Tensor
    omega: Tensor
    faces: Tensor
    uvs: Tensor
    uv_faces: Tensor

    def to(self, device) -> "SuperquadricTemplate":
        return SuperquadricTemplate(*(getattr(self, k).to(device) for k in ("eta", "omega", "faces", "uvs", "uv_faces")))


def make_template(level: int = 2) -> SuperquadricTemplate:
    """The template of an icosphere subdivided ``level`` times (level 1: 42 vertices / 80 faces, level 2: 162 / 320).

    UVs: u = omega / 2pi + 1/2 and v = 1/2 - eta / pi. A face whose u values span more than a half turn crosses the
    seam: its vertices with small u get u + 1 (the sampler wraps u), so the face does not smear the whole texture.
    A pole vertex has no longitude: in each face touching it, it takes the mean u of the face's other vertices.
    """
    ico = trimesh.creation.icosphere(subdivisions=level)
    v = np.asarray(ico.vertices, dtype=np.float64)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    faces = np.asarray(ico.faces, dtype=np.int64)
    eta = np.arcsin(np.clip(v[:, 1], -1.0, 1.0))
    omega = np.arctan2(v[:, 0], v[:, 2])
    pole = np.abs(v[:, 1]) > 1 - 1e-9
    omega[pole] = 0.0
    u, vv = spherical_uv(eta, omega)
    fu = u[faces].copy()  # [F, 3]
    nonpole = ~pole[faces]
    # seam: shift the small u of faces spanning more than half a turn (poles excluded from the test)
    lo = np.where(nonpole, fu, np.inf).min(1)
    hi = np.where(nonpole, fu, -np.inf).max(1)
    crossing = (hi - lo) > 0.5
    fu = np.where(crossing[:, None] & (fu < 0.5) & nonpole, fu + 1.0, fu)
    # poles: the mean u of the face's other corners
    mean_other = np.where(nonpole, fu, 0.0).sum(1) / np.maximum(nonpole.sum(1), 1)
    fu = np.where(nonpole, fu, mean_other[:, None])
    fv = vv[faces]
    uvs = np.stack([fu, fv], -1).reshape(-1, 2)
    uv_faces = np.arange(len(faces) * 3, dtype=np.int64).reshape(-1, 3)
    # merge identical UV corners so shared vertices stay shared in UV space (smaller interpolation tables)
    merged, inv = np.unique(np.round(uvs, 9), axis=0, return_inverse=True)
    return SuperquadricTemplate(
        torch.from_numpy(eta).float(), torch.from_numpy(omega).float(), torch.from_numpy(faces),
        torch.from_numpy(merged).float(), torch.from_numpy(inv.reshape(-1, 3).astype(np.int64)),
    )


def _angles(template: SuperquadricTemplate, exponents: Tensor) -> tuple[Tensor, ...]:
    e1, e2 = exponents[..., 0:1], exponents[..., 1:2]  # [B, 1]
    ce, se = torch.cos(template.eta), torch.sin(template.eta)
    cw, sw = torch.cos(template.omega), torch.sin(template.omega)
    return ce, se, cw, sw, e1, e2


def superquadric_points(template: SuperquadricTemplate, exponents: Tensor, scales: Tensor) -> Tensor:
    """Local-frame surface points of B superquadrics.

    Args:
        exponents: [B, 2] (e1, e2), each in (0, 2].
        scales: [B, 3] semi-axes along local x, y, z.
    Returns:
        [B, V, 3], differentiable w.r.t. both.
    """
    ce, se, cw, sw, e1, e2 = _angles(template, exponents)
    c1 = signed_pow(ce, e1)
    x = c1 * signed_pow(sw, e2)
    y = signed_pow(se, e1).expand_as(x)
    z = c1 * signed_pow(cw, e2)
    return torch.stack([x, y, z], -1) * scales[:, None, :]


def pseudo_sdf(points: Tensor, exponents: Tensor, scales: Tensor) -> Tensor:
    """Inside-outside value ``F^(e1/2) - 1`` (negative inside, 0 on the surface), the overlap term's soft occupancy.

    ``F = ((x^2)^(1/e2) + (z^2)^(1/e2))^(e2/e1) + (y^2)^(1/e1)`` on points divided by the semi-axes; the power
    ``e1/2`` makes it roughly proportional to the radial distance. Points are clamped to [-5, 5] (in units of the
    semi-axes) and squares floored, so neither the value nor its gradient overflows far away or at the axes.

    Args:
        points: [B, P, 3] in each block's local frame (or [P, 3], broadcast to every block).
        exponents: [B, 2]; scales: [B, 3].
    Returns:
        [B, P].
    """
    if points.dim() == 2:
        points = points.expand(exponents.shape[0], -1, -1)
    q = (points / scales[:, None, :]).clamp(-5.0, 5.0)
    e1, e2 = exponents[:, 0:1], exponents[:, 1:2]
    sq = (q * q).clamp_min(1e-12)
    xz = sq[..., 0] ** (1.0 / e2) + sq[..., 2] ** (1.0 / e2)
    F = xz ** (e2 / e1) + sq[..., 1] ** (1.0 / e1)
    return F ** (e1 / 2.0) - 1.0


def _beta(a: float, b: float) -> float:
    return math.exp(math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))


def superquadric_volume(exponents: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Analytic volumes [B] of superellipsoids (Jaklic et al. 2000): ``2 a1 a2 a3 e1 e2 B(e1/2 + 1, e1) B(e2/2, e2/2)``.

    Args:
        exponents: [B, 2]; scales: [B, 3] semi-axes.
    """
    exponents = np.atleast_2d(np.asarray(exponents, np.float64))
    scales = np.atleast_2d(np.asarray(scales, np.float64))
    out = []
    for (e1, e2), (a, b, c) in zip(exponents, scales):
        out.append(2.0 * a * b * c * e1 * e2 * _beta(e1 / 2 + 1, e1) * _beta(e2 / 2, e2 / 2))
    return np.asarray(out)


def sample_in_boxes(n: int, scales: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """[B, n, 3] points uniform in each block's local bounding box ``[-s, s]`` (the overlap term's samples)."""
    u = torch.rand(scales.shape[0], n, 3, generator=generator, device=scales.device) * 2 - 1
    return u * scales[:, None, :]
