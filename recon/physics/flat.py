"""Flat Gaussians as triangles and back (GASP / GaMeS), and GASP's size control.

A flat Gaussian (a disc: its local z scale pinned near zero, see ``recon.gaussians`` ``flat=True``) is mapped to a
triangle whose vertices a physics engine moves as three independent particles:

- vertex 1 = the mean; vertices 2 and 3 = the mean plus each in-plane axis times its scale, the axis with the larger
  scale first (GASP's order);
- back: mean = vertex 1, first axis along (v2 - v1) with scale |v2 - v1|, second axis the part of (v3 - v1)
  orthogonal to it (Gram-Schmidt) with that part's length as scale, normal = their cross product. Shear inside the
  triangle is discarded; SH colours are not rotated (as in GASP).

The round trip of an unmoved Gaussian gives the same covariance (the axes may come back swapped, with the normal
flipped, which is the same disc). recon's flat axis is the local z axis (third rotation column); GASP's is the
first: only the order of the columns differs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from recon.gaussians.model import FLAT_SCALE
from recon.rotations import quat_to_rotmat, rotmat_to_quat


def gaussians_to_triangles(means: Tensor, quats: Tensor, log_scales: Tensor) -> Tensor:
    """[N, 3, 3] triangles (vertex 1, 2, 3; xyz) of flat Gaussians: ``means`` [N, 3], ``quats`` [N, 4] (wxyz, any
    norm), ``log_scales`` [N, 3] whose first two entries are the in-plane scales (the third is ignored)."""
    rot = quat_to_rotmat(quats)  # [N, 3, 3], columns = local axes (normalises the quaternions)
    scales = torch.exp(log_scales[:, :2])
    first_larger = scales[:, 0] >= scales[:, 1]
    axis_a = torch.where(first_larger[:, None], rot[:, :, 0], rot[:, :, 1])
    axis_b = torch.where(first_larger[:, None], rot[:, :, 1], rot[:, :, 0])
    scale_a = torch.where(first_larger, scales[:, 0], scales[:, 1])
    scale_b = torch.where(first_larger, scales[:, 1], scales[:, 0])
    return torch.stack([means, means + scale_a[:, None] * axis_a, means + scale_b[:, None] * axis_b], 1)


def triangles_to_gaussians(triangles: Tensor, eps: float = 1e-12) -> dict[str, Tensor]:
    """Flat Gaussians of ``triangles`` [N, 3, 3]: ``means`` [N, 3], ``quats`` [N, 4] (wxyz, unit), ``scales`` [N, 3]
    (log; the third is log(FLAT_SCALE)). Degenerate triangles (collinear vertices) get an arbitrary normal."""
    v1, e1, e2 = triangles[:, 0], triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0]
    len1 = e1.norm(dim=-1).clamp_min(eps)
    r1 = e1 / len1[:, None]
    along = (e2 * r1).sum(-1, keepdim=True)
    ortho = e2 - along * r1
    len2 = ortho.norm(dim=-1).clamp_min(eps)
    r2 = ortho / len2[:, None]
    normal = torch.linalg.cross(r1, r2)
    rot = torch.stack([r1, r2, normal], -1)  # columns: in-plane axes, then the flat (normal) axis
    log_scales = torch.stack([len1.log(), len2.log(), torch.full_like(len1, math.log(FLAT_SCALE))], -1)
    return {"means": v1, "quats": rotmat_to_quat(rot), "scales": log_scales}


def clamp_edges(triangles: Tensor, rest: Tensor, tau: float) -> Tensor:
    """GASP's size control: [N, 3, 3] ``triangles`` whose edges from vertex 1 are pulled back along themselves so
    that each edge's length over its length in ``rest`` [N, 3, 3] stays within [1 / tau, tau] (tau >= 1; tau = 1
    keeps every edge at its rest length and lets only its direction change)."""
    if tau < 1:
        raise ValueError(f"size control threshold tau must be >= 1 (got {tau})")
    v1 = triangles[:, :1]
    edges = triangles[:, 1:] - v1
    length = edges.norm(dim=-1, keepdim=True)
    rest_length = (rest[:, 1:] - rest[:, :1]).norm(dim=-1, keepdim=True)
    target = length.clamp(rest_length / tau, rest_length * tau)
    edges = edges * (target / length.clamp_min(1e-12))
    return torch.cat([v1, v1 + edges], 1)
