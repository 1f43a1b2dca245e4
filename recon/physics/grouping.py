"""GASP's Gaussian grouping: simulate a few core triangles, carry every other Gaussian along in its core's frame.

- :func:`birch_cores`: scikit-learn's Birch over the Gaussian centres (no final clustering: every subcluster is a
  group). A group of several Gaussians gets one core triangle, from a flat Gaussian at the group's centre whose axes
  and scales are the principal axes and square-rooted variances of all its members' triangle vertices (the smallest
  forced flat); a group of one keeps its own triangle.
- :func:`bind` / :func:`apply_binding` (GaMeS mesh-bound Gaussians): each member vertex is written once, at rest, as
  vertex 1 of its core plus coefficients on the core's frame {unit normal, unit edge 1, unit edge 2}; after the
  simulation moves the core, the same coefficients on the moved core's frame give the vertex. GASP uses the moved
  edge directions as they are (a sheared frame); here the frame is re-orthonormalised (Gram-Schmidt, as the
  triangle -> Gaussian mapping does), so members move rigidly with their core and keep their rest size. The rest
  pose comes back exactly, up to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from recon.physics.flat import gaussians_to_triangles
from recon.rotations import rotmat_to_quat


@dataclass
class Groups:
    """The simulated triangles of a grouped model.

    Attributes:
        core_triangles: [C, 3, 3] the triangles the engine moves (cores of groups, and single Gaussians' own).
        core_of: [N] long, the core triangle each Gaussian follows.
        sizes: [C] long, how many Gaussians follow each core.
    """

    core_triangles: Tensor
    core_of: Tensor
    sizes: Tensor


def birch_cores(triangles: Tensor, threshold: float, branching_factor: int = 50) -> Groups:
    """Groups of flat Gaussians given as ``triangles`` [N, 3, 3] (vertex 1 = the centre), by Birch with
    ``threshold`` (the largest radius of a subcluster, in scene units; GASP uses 0.1 in its own scene units)."""
    from sklearn.cluster import Birch

    centres = triangles[:, 0].detach().cpu().double().numpy()
    labels = Birch(threshold=threshold, branching_factor=branching_factor, n_clusters=None).fit_predict(centres)
    _, labels = np.unique(labels, return_inverse=True)
    labels_t = torch.from_numpy(labels).to(triangles.device)
    count = int(labels.max()) + 1
    sizes = torch.bincount(labels_t, minlength=count)

    verts = triangles.detach().double()
    core = torch.empty(count, 3, 3, dtype=torch.float64, device=triangles.device)
    single = sizes[labels_t] == 1
    core[labels_t[single]] = verts[single]

    multi = (~single).nonzero()[:, 0]
    if len(multi):
        lab = labels_t[multi]
        pts = verts[multi].reshape(-1, 3)  # every vertex of every member
        lab3 = lab.repeat_interleave(3)
        n3 = torch.zeros(count, dtype=torch.float64, device=pts.device).index_add_(0, lab3, torch.ones_like(pts[:, 0]))
        mean = torch.zeros(count, 3, dtype=torch.float64, device=pts.device).index_add_(0, lab3, pts)
        mean = mean / n3.clamp_min(1)[:, None]
        centred = pts - mean[lab3]
        cov = torch.zeros(count, 3, 3, dtype=torch.float64, device=pts.device)
        cov.index_add_(0, lab3, centred[:, :, None] * centred[:, None, :])
        cov = cov / (n3 - 1).clamp_min(1)[:, None, None]
        groups = torch.unique(lab)
        evals, evecs = torch.linalg.eigh(cov[groups])  # ascending: the last two axes span the core's plane
        rot = torch.stack([evecs[:, :, 2], evecs[:, :, 1], torch.linalg.cross(evecs[:, :, 2], evecs[:, :, 1])], -1)
        scales = evals[:, [2, 1]].clamp_min(1e-18).sqrt()
        # The group's centre: the mean of its members' centres (Birch's subcluster centroid).
        centre = torch.zeros(count, 3, dtype=torch.float64, device=pts.device).index_add_(0, lab, verts[multi, 0])
        centre = centre[groups] / sizes[groups, None].double()
        log_scales = torch.cat([scales.log(), torch.zeros_like(scales[:, :1])], 1)
        core[groups] = gaussians_to_triangles(centre, rotmat_to_quat(rot), log_scales)
    return Groups(core.to(triangles.dtype), labels_t, sizes)


def _frame(triangles: Tensor) -> tuple[Tensor, Tensor]:
    """(origin [N, 3], basis [N, 3, 3] with columns unit normal, unit edge 1, the unit part of edge 2 orthogonal to
    edge 1) of ``triangles``: orthonormal, so members keep their rest size whatever shear the core picks up (a core
    at rest has orthogonal edges, where this is GASP's frame)."""
    e1 = torch.nn.functional.normalize(triangles[:, 1] - triangles[:, 0], dim=-1)
    e2 = triangles[:, 2] - triangles[:, 0]
    e2 = torch.nn.functional.normalize(e2 - (e2 * e1).sum(-1, keepdim=True) * e1, dim=-1)
    return triangles[:, 0], torch.stack([torch.linalg.cross(e1, e2), e1, e2], -1)


def bind(triangles: Tensor, core_triangles: Tensor, core_of: Tensor) -> Tensor:
    """[N, 3, 3] coefficients of each vertex of ``triangles`` [N, 3, 3] in the frame of its core triangle
    ``core_triangles[core_of]`` (solved in float64)."""
    origin, basis = _frame(core_triangles.double())
    rel = triangles.double() - origin[core_of][:, None]  # [N, 3 vertices, 3]
    coeffs = torch.linalg.solve(basis[core_of][:, None].expand(-1, 3, 3, 3), rel[..., None])[..., 0]
    return coeffs.to(triangles.dtype)


def apply_binding(core_triangles: Tensor, core_of: Tensor, coeffs: Tensor) -> Tensor:
    """[N, 3, 3] member triangles from moved ``core_triangles`` [C, 3, 3] and :func:`bind`'s ``coeffs``."""
    origin, basis = _frame(core_triangles)
    return origin[core_of][:, None] + torch.einsum("nij,nvj->nvi", basis[core_of], coeffs)
