"""Iso-surfaces, marching tetrahedra, mesh utilities and TSDF fusion."""

from __future__ import annotations

import math

import numpy as np
import torch
import trimesh

from recon.cameras import look_at
from recon.geometry import (
    clean_mesh, marching_cubes, marching_tets, simplify_mesh, tet_grid, to_trimesh, tsdf_fuse, vertex_normals,
)
from recon.render.mesh import rasterize


def _sphere_sdf(points, r=0.6, c=(0.05, -0.03, 0.02)):
    return np.linalg.norm(points - np.asarray(c), axis=-1) - r


def test_marching_cubes_sphere():
    n = 48
    ax = np.linspace(-1, 1, n)
    g = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1)
    v, f = marching_cubes(_sphere_sdf(g), (-1, -1, -1), (1, 1, 1))
    m = to_trimesh(v, f)
    assert m.is_watertight and m.volume > 0  # outward orientation
    assert np.abs(np.abs(_sphere_sdf(v))).max() < 0.01
    assert abs(m.volume - 4 / 3 * math.pi * 0.6**3) / m.volume < 0.02


def test_tet_grid_is_conforming():
    verts, tets = tet_grid(3)
    assert verts.shape == (64, 3) and tets.shape == (6 * 27, 4)
    p = verts[tets].double()
    vol = torch.det(torch.stack([p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], p[:, 3] - p[:, 0]], 1)).abs() / 6
    assert torch.allclose(vol.sum(), torch.tensor(8.0, dtype=torch.float64))  # tiles the box exactly
    # every interior triangle is shared by exactly two tets, boundary ones by one: 2 per boundary square
    faces = torch.cat([tets[:, [0, 1, 2]], tets[:, [0, 1, 3]], tets[:, [0, 2, 3]], tets[:, [1, 2, 3]]])
    _, counts = torch.unique(torch.sort(faces, 1).values, dim=0, return_counts=True)
    assert counts.max() == 2 and (counts == 1).sum() == 6 * 9 * 2


def test_marching_tets_sphere_watertight_and_oriented():
    verts, tets = tet_grid(20)
    sdf = torch.from_numpy(_sphere_sdf(verts.numpy())).float()
    mv, mf, _ = marching_tets(verts, tets, sdf)
    m = clean_mesh(to_trimesh(mv, mf))
    assert m.is_watertight and m.volume > 0
    assert np.abs(_sphere_sdf(m.vertices)).max() < 0.02
    # vertex normals of a sphere point away from its centre
    vn = vertex_normals(torch.tensor(m.vertices), torch.tensor(m.faces))
    radial = torch.nn.functional.normalize(torch.tensor(m.vertices) - torch.tensor([0.05, -0.03, 0.02]), dim=-1)
    assert (vn * radial).sum(-1).min() > 0.9


def test_marching_tets_gradients():
    verts, tets = tet_grid(2)
    verts = verts.double()
    g = torch.Generator().manual_seed(0)
    sdf = (torch.linalg.norm(verts, dim=-1) - 0.7 + 0.05 * torch.rand(verts.shape[0], generator=g, dtype=torch.float64))
    msdf = torch.rand(verts.shape[0], 1, generator=g, dtype=torch.float64)
    sdf.requires_grad_(True)
    verts.requires_grad_(True)
    msdf.requires_grad_(True)

    def f(verts, sdf, msdf):
        v, _, a = marching_tets(verts, tets, sdf, msdf)
        return v, a

    assert torch.autograd.gradcheck(f, (verts, sdf, msdf), eps=1e-6, atol=1e-6, fast_mode=True)
    # optimising the SDF values grows the surface towards a larger target radius
    sdf = sdf.detach().clone().requires_grad_(True)
    verts = verts.detach()
    opt = torch.optim.SGD([sdf], lr=0.05)
    r0 = None
    for _ in range(20):
        v, _, _ = marching_tets(verts, tets, sdf)
        r = v.norm(dim=-1).mean()
        r0 = r.item() if r0 is None else r0
        loss = (r - 0.8) ** 2
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert r.item() > r0 + 0.02


def test_clean_and_simplify():
    m = trimesh.creation.icosphere(4)
    junk = trimesh.creation.icosphere(0, radius=0.05)
    junk.apply_translation([3, 0, 0])
    both = trimesh.util.concatenate([m, junk])
    cleaned = clean_mesh(both, min_component_ratio=0.1)
    assert len(cleaned.faces) == len(m.faces)
    s = simplify_mesh(cleaned, 1000)
    assert 900 <= len(s.faces) <= 1000
    assert np.abs(np.linalg.norm(s.vertices, axis=-1) - 1).max() < 0.02


def _look_at(eye):
    """World-to-camera matrix of a camera at ``eye`` looking at the origin, z up."""
    return np.linalg.inv(look_at(eye, np.zeros(3)))


def test_tsdf_fuse_rendered_depth():
    sphere = trimesh.creation.icosphere(4, radius=0.5)
    box = trimesh.creation.box(extents=[0.3, 0.3, 0.3])
    box.apply_translation([0.7, 0, 0])  # separate from the sphere: no hidden inner surfaces
    mesh = trimesh.util.concatenate([sphere, box])
    eyes = [(2 * math.cos(a) * math.cos(e), 2 * math.sin(a) * math.cos(e), 2 * math.sin(e))
            for a in np.linspace(0, 2 * math.pi, 8, endpoint=False) for e in (-0.5, 0.4, 1.0)]
    vm = torch.tensor(np.stack([_look_at(e) for e in eyes]), dtype=torch.float32)
    W = H = 64
    K = torch.tensor([[70.0, 0, 32], [0, 70, 32], [0, 0, 1]]).expand(len(eyes), 3, 3)
    fr = rasterize(torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces), vm, K, W, H)
    depth = fr.depth[..., 0]
    out = tsdf_fuse(depth, vm, K, voxel_size=0.02)
    assert len(out.faces) > 1000
    dist, _ = _closest(mesh, out.vertices)
    assert np.median(dist) < 0.01 and np.percentile(dist, 99) < 0.03
    # completeness: samples of the true surface are close to the fused mesh
    d2, _ = _closest(out, mesh.sample(2000))
    assert np.percentile(d2, 95) < 0.03
    # outward faces: normals agree with the reference mesh's normals at the closest points
    _, tri = _closest(mesh, out.triangles_center)
    assert (np.sum(out.face_normals * mesh.face_normals[tri], -1) > 0).mean() > 0.95


def _closest(mesh, pts):
    """Unsigned distance and closest triangle (open3d; trimesh's proximity needs rtree)."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(mesh.vertices.astype(np.float32)), o3d.core.Tensor(mesh.faces.astype(np.uint32)))
    q = o3d.core.Tensor(np.asarray(pts, np.float32))
    ans = scene.compute_closest_points(q)
    d = np.linalg.norm(ans["points"].numpy() - np.asarray(pts), axis=-1)
    return d, ans["primitive_ids"].numpy().astype(np.int64)
