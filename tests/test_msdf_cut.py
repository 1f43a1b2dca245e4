"""G-Shell's mSDF cut (recon/geometry/msdf_cut.py) on analytic cases: a plane through a sphere leaves a cap whose
boundary is the expected circle, an all-positive mSDF leaves the template unchanged, a tube cut at both ends has two
loops, orientation is kept, and boundary positions have the analytic gradient."""

from __future__ import annotations

import math

import numpy as np
import torch

from recon.eval.surface import topology
from recon.geometry.mesh_utils import face_normals, to_trimesh
from recon.geometry.msdf_cut import msdf_cut
from recon.geometry.tets import marching_tets, tet_grid

R = 0.6


def _sphere_template(res: int = 20, plane_z: float = 0.2):
    verts, tets = tet_grid(res)
    sdf = verts.norm(dim=-1) - R
    # mSDF linear in position: marching tets' linear interpolation carries it onto the template exactly
    msdf = verts[:, 2:3] - plane_z
    mverts, faces, attrs = marching_tets(verts, tets, sdf, msdf)
    return mverts, faces, attrs[:, 0]


def test_all_positive_msdf_leaves_the_watertight_template_unchanged():
    verts, faces, _ = _sphere_template()
    out_v, out_f, boundary = msdf_cut(verts, faces, torch.ones(len(verts)))
    assert torch.equal(out_v, verts) and torch.equal(out_f, faces) and not bool(boundary.any())
    assert topology(to_trimesh(out_v, out_f))["watertight"]


def test_plane_cut_of_a_sphere_is_a_cap_bounded_by_the_expected_circle():
    plane_z = 0.2
    verts, faces, msdf = _sphere_template(plane_z=plane_z)
    out_v, out_f, boundary = msdf_cut(verts, faces, msdf)
    b = out_v[boundary]
    torch.testing.assert_close(b[:, 2], torch.full_like(b[:, 2], plane_z), atol=1e-5, rtol=0)
    radius = b[:, :2].norm(dim=-1)
    expected = math.sqrt(R * R - plane_z * plane_z)
    assert float((radius - expected).abs().max()) < 0.02  # marching tets' chordal error at 20 cells
    assert float(out_v[:, 2].min()) >= plane_z - 1e-5  # nothing of the cut part is left
    topo = topology(to_trimesh(out_v, out_f), min_component_fraction=0.0)
    assert topo["boundary_loops"] == 1 and topo["non_manifold_edges"] == 0 and topo["components"] == 1
    assert not topo["watertight"]
    # boundary length = the circle's circumference, within the polyline's error
    assert abs(topo["boundary_length"] - 2 * math.pi * expected) < 0.05 * 2 * math.pi * expected
    # orientation kept: normals still point away from the centre (faces of zero area, where the zero set passes
    # through a template vertex, have none)
    n = face_normals(out_v, out_f, normalize=False)
    area = n.norm(dim=-1)
    centres = out_v[out_f].mean(1)
    assert float((n * centres).sum(-1)[area > 1e-10].min()) > 0


def test_a_band_cut_leaves_two_boundary_loops():
    verts, faces, _ = _sphere_template()
    band = 0.3 - verts[:, 2].abs()  # keep |z| < 0.3: a tube-like band with two rims
    out_v, out_f, boundary = msdf_cut(verts, faces, band)
    topo = topology(to_trimesh(out_v, out_f), min_component_fraction=0.0)
    assert topo["boundary_loops"] == 2 and topo["non_manifold_edges"] == 0
    assert torch.allclose(out_v[boundary][:, 2].abs(), torch.full((int(boundary.sum()),), 0.3), atol=1e-5)


def test_boundary_vertices_have_the_analytic_gradient():
    # one triangle, corner 0 kept: the boundary vertex on edge 0-1 sits at t = m0 / (m0 - m1)
    verts = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    faces = torch.tensor([[0, 1, 2]])
    msdf = torch.tensor([0.3, -0.6, -0.2], dtype=torch.float64, requires_grad=True)
    out_v, out_f, boundary = msdf_cut(verts, faces, msdf)
    assert out_f.shape == (1, 3) and int(boundary.sum()) == 2
    torch.autograd.gradcheck(lambda m, v: msdf_cut(v, faces, m)[0], (msdf, verts))
    # d x / d m0 on edge 0-1: x = m0 / (m0 - m1) -> -m1 / (m0 - m1)^2
    x = out_v[boundary][:, 0].max()
    (g,) = torch.autograd.grad(x, msdf)
    np.testing.assert_allclose(float(g[0]), 0.6 / 0.9**2, rtol=1e-9)
