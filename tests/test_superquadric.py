"""Superquadric geometry (recon.geometry.superquadric), the 6D rotations and the per-primitive texture sampler,
checked against independent constructions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.geometry.superquadric import make_template, pseudo_sdf, sample_in_boxes, superquadric_points, superquadric_volume
from recon.render.mesh_texture import sample_texture, sample_texture_stack
from recon.rotations import rot6d_to_rotmat, rotmat_to_rot6d


def test_template_uvs_never_span_the_seam():
    t = make_template(2)
    assert t.faces.shape == (320, 3) and t.eta.shape == (162,)
    uv = t.uvs[t.uv_faces]  # [F, 3, 2]
    assert float((uv[..., 0].max(1).values - uv[..., 0].min(1).values).max()) < 0.5
    assert float(uv[..., 1].min()) >= 0.0 and float(uv[..., 1].max()) <= 1.0
    # every UV corner belongs to exactly one position: the export splits vertices along the seams only
    pairs = {(int(u), int(p)) for u, p in zip(t.uv_faces.reshape(-1), t.faces.reshape(-1))}
    assert len({u for u, _ in pairs}) == len(pairs)


@pytest.mark.parametrize("e1,e2", [(1.0, 1.0), (0.3, 0.3), (0.2, 1.0), (1.5, 0.6)])
def test_surface_points_lie_on_the_implicit_surface(e1, e2):
    t = make_template(3)
    e = torch.tensor([[e1, e2]])
    s = torch.tensor([[0.5, 1.0, 2.0]])
    p = superquadric_points(t, e, s)
    assert float(pseudo_sdf(p, e, s).abs().max()) < 1e-4
    assert float(pseudo_sdf(p * 0.9, e, s).max()) < 0 and float(pseudo_sdf(p * 1.1, e, s).min()) > 0


@pytest.mark.parametrize("e1,e2", [(1.0, 1.0), (0.4, 0.4), (0.1, 1.0), (1.0, 0.25)])
def test_volume_matches_an_independent_mesh(e1, e2):
    from recon.demo.solids import superquadric  # the demo scene's own parametric mesh (pole along z)

    half = (0.3, 0.5, 0.8)
    mesh = superquadric(half, e1, e2, nu=256, nv=128)
    assert mesh.is_watertight
    analytic = superquadric_volume(np.array([[e1, e2]]), np.array([half]))[0]
    assert abs(mesh.volume - analytic) / analytic < 0.01
    # the same surface in this module's y-up convention: the demo's (x, y, z) is our (x, z, y), e1 on the pole axis
    pts = torch.as_tensor(np.asarray(mesh.vertices)[:, [0, 2, 1]], dtype=torch.float32)[None]
    sdf = pseudo_sdf(pts, torch.tensor([[e1, e2]]), torch.tensor([[half[0], half[2], half[1]]]))
    assert float(sdf.abs().median()) < 1e-3


def test_box_samples_stay_in_their_boxes():
    s = torch.tensor([[1.0, 2.0, 3.0], [0.1, 0.1, 0.1]])
    p = sample_in_boxes(500, s, torch.Generator().manual_seed(0))
    assert p.shape == (2, 500, 3)
    assert bool((p.abs() <= s[:, None, :]).all())


def test_rot6d_round_trip_and_orthonormality():
    g = torch.Generator().manual_seed(0)
    R = rot6d_to_rotmat(torch.randn(64, 6, generator=g))
    eye = torch.eye(3).expand(64, 3, 3)
    assert torch.allclose(R @ R.transpose(1, 2), eye, atol=1e-5)
    assert torch.allclose(torch.det(R), torch.ones(64), atol=1e-5)
    assert torch.allclose(rot6d_to_rotmat(rotmat_to_rot6d(R)), R, atol=1e-5)


def test_texture_stack_matches_single_texture_sampling_inside():
    g = torch.Generator().manual_seed(1)
    tex = torch.rand(3, 16, 16, 3, generator=g)
    uv = torch.rand(200, 2, generator=g) * 0.8 + 0.1  # away from the v edges, where the stack clamps instead of wrapping
    idx = torch.randint(0, 3, (200,), generator=g)
    got = sample_texture_stack(tex, idx, uv)
    want = torch.stack([sample_texture(tex[int(i)], uv[k:k + 1])[0] for k, i in enumerate(idx)])
    assert torch.allclose(got, want, atol=1e-6)
    # u wraps: u and u + 1 read the same texels; v clamps: no bleeding from the neighbouring texture
    assert torch.allclose(sample_texture_stack(tex, idx, uv + torch.tensor([1.0, 0.0])), got, atol=1e-5)
    top = sample_texture_stack(tex, torch.ones(1, dtype=torch.long), torch.tensor([[0.3, 0.0]]))
    assert torch.allclose(top, sample_texture(tex[1], torch.tensor([[0.3, 1 / 32]])), atol=1e-6)
