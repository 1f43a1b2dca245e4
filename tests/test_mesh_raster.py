"""Mesh rasterizer: visibility against an independent ray caster, gradients, silhouette gradients, layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from recon.cameras import look_at as camera_to_world_look_at
from recon.render.mesh import antialias, composite_layers, interpolate, mesh_topology, rasterize


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, -1.0, 0.0)) -> np.ndarray:
    """World-to-camera (OpenCV axes) for a camera at ``eye`` looking at ``target``."""
    return np.linalg.inv(camera_to_world_look_at(eye, target, up))


def _scene_mesh() -> trimesh.Trimesh:
    sphere = trimesh.creation.icosphere(3, radius=1.0)
    box = trimesh.creation.box(extents=[0.6, 0.6, 0.6])
    box.apply_translation([0.8, 0.3, -0.9])
    return trimesh.util.concatenate([sphere, box])


def _cast(mesh, viewmat, K, W, H):
    """open3d ray casting through pixel centres -> (first ids, first t, all hits list)."""
    o3d = pytest.importorskip("open3d")
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(mesh.vertices.astype(np.float32)), o3d.core.Tensor(mesh.faces.astype(np.uint32)))
    v, u = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    d = np.stack([(u + 0.5 - K[0, 2]) / K[0, 0], (v + 0.5 - K[1, 2]) / K[1, 1], np.ones((H, W))], -1)
    Rw = viewmat[:3, :3].T
    o = -Rw @ viewmat[:3, 3]
    dw = d @ Rw.T  # keeps z_cam = 1 per unit t, so t_hit is the camera depth
    rays = np.concatenate([np.broadcast_to(o, dw.shape), dw], -1).astype(np.float32)
    ans = scene.cast_rays(o3d.core.Tensor(rays))
    ids = ans["primitive_ids"].numpy().astype(np.int64)
    ids[ids == scene.INVALID_ID] = -1
    return ids, ans["t_hit"].numpy(), scene, rays


def test_ids_and_depth_match_ray_caster():
    mesh = _scene_mesh()
    W, H = 96, 80
    eyes = [(0.3, 0.5, -3.0), (3.0, 1.0, 0.5), (-0.5, -2.5, 1.5)]
    vm = np.stack([look_at(e) for e in eyes])
    K = np.array([[100.0, 0, W / 2 - 3.3], [0, 95.0, H / 2 + 1.7], [0, 0, 1]])
    frags = rasterize(
        torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces), torch.tensor(vm, dtype=torch.float32),
        torch.tensor(K, dtype=torch.float32).expand(3, 3, 3), W, H, n_layers=2,
    )
    assert frags.tri_id.shape == (3, H, W, 2) and frags.bary.shape == (3, H, W, 2, 3)
    for c in range(3):
        ids, t_hit, scene, rays = _cast(mesh, vm[c], K, W, H)
        mine = frags.tri_id[c, ..., 0].numpy()
        assert (ids >= 0).sum() > 1000
        # exact agreement except possibly pixels whose centre lies on a shared edge (float ties)
        assert (ids == mine).mean() > 0.999
        hit = (ids >= 0) & (mine >= 0)
        np.testing.assert_allclose(frags.depth[c, ..., 0].numpy()[hit], t_hit[hit], atol=2e-3)
        # second layer = second intersection along the ray
        o3d = pytest.importorskip("open3d")
        li = scene.list_intersections(o3d.core.Tensor(rays.reshape(-1, 6)))
        splits = li["ray_splits"].numpy()
        t_all = li["t_hit"].numpy()
        n_hits = splits[1:] - splits[:-1]
        second = np.full(H * W, np.nan)
        two = n_hits >= 2
        for r in np.nonzero(two)[0]:  # hits are not sorted along the ray
            second[r] = np.sort(t_all[splits[r] : splits[r + 1]])[1]
        d1 = frags.depth[c, ..., 1].numpy().reshape(-1)
        has1 = frags.tri_id[c, ..., 1].numpy().reshape(-1) >= 0
        both = two & has1
        assert both.sum() > 500 and np.mean(has1 == two) > 0.995
        np.testing.assert_allclose(d1[both], second[both], atol=2e-3)
        # barycentrics reproduce the hit point
        b = frags.bary[c, ..., 0, :].numpy()
        assert np.allclose(b[mine >= 0].sum(-1), 1.0, atol=1e-5) and (b[mine >= 0] > -1e-5).all()


def test_triangle_crossing_camera_plane_and_culling():
    # a large ground quad passing under and behind the camera: no clipping artefacts expected
    verts = np.array([[-5, 1, -5], [5, 1, -5], [5, 1, 5], [-5, 1, 5]], dtype=np.float64)
    faces = np.array([[0, 1, 2], [0, 2, 3]])  # normal -y: towards the camera, which sits above (y < 1)
    mesh = trimesh.Trimesh(verts, faces, process=False)
    W, H = 40, 30
    vm = np.eye(4)
    K = np.array([[20.0, 0, W / 2], [0, 20.0, H / 2], [0, 0, 1]])
    args = (torch.tensor(verts), torch.tensor(faces), torch.tensor(vm)[None], torch.tensor(K)[None], W, H)
    frags = rasterize(*args)
    ids, t_hit, *_ = _cast(mesh, vm, K, W, H)
    assert ((frags.tri_id[0, ..., 0].numpy() >= 0) == (ids >= 0)).all()
    hit = ids >= 0
    np.testing.assert_allclose(frags.depth[0, ..., 0].numpy()[hit], t_hit[hit], rtol=1e-4)
    # seen from above (camera y < plane y means looking down onto its -y side) the quad is front facing
    assert (rasterize(*args, cull="back").tri_id >= 0).sum() == hit.sum()
    assert (rasterize(*args, cull="front").tri_id >= 0).sum() == 0


def _two_triangles():
    V = torch.tensor(
        [[-0.213, -0.247, 2.0], [0.2537, -0.2011, 2.1], [0.0123, 0.3071, 1.9], [0.3113, 0.2939, 2.03]],
        dtype=torch.float64,
    )
    F = torch.tensor([[0, 1, 2], [1, 3, 2]])
    K = torch.tensor([[[30.0, 0, 12], [0, 30, 12], [0, 0, 1]]], dtype=torch.float64)
    return V, F, torch.eye(4, dtype=torch.float64)[None], K


def test_gradcheck_interpolate_and_antialias():
    V, F, vm, K = _two_triangles()
    A = torch.rand(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    bg = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)

    def render(V, A):
        fr = rasterize(V, F, vm, K, 24, 24)
        img = torch.where(fr.mask[..., 0, None], interpolate(A, fr)[..., 0, :], bg)
        return antialias(img, fr), fr.depth

    V.requires_grad_(True)
    A.requires_grad_(True)
    assert torch.autograd.gradcheck(render, (V, A), eps=1e-6, atol=1e-6)
    # the antialiasing term alone must carry position gradients (silhouette pixels only)
    img, _ = render(V, A.detach())
    (g,) = torch.autograd.grad(img.sum(), V)
    assert g.abs().sum() > 0


def test_silhouette_gradient_pulls_triangle_back():
    V0, F, vm, K = _two_triangles()
    V0, K = V0.float(), K.float()
    vm = vm.float()
    W = H = 24

    def coverage(offset):
        fr = rasterize(V0 + offset, F, vm, K, W, H)
        return antialias(fr.mask[..., 0, None].float(), fr)

    target = coverage(torch.zeros(3))
    offset = torch.tensor([0.045, -0.03, 0.0], requires_grad=True)  # ~1.4 px and ~0.9 px in the image
    opt = torch.optim.Adam([offset], lr=0.004)
    for _ in range(150):
        loss = ((coverage(offset) - target) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    # back to within a tenth of a pixel (1 px = 2/30 ~ 0.067 world units at depth 2)
    assert offset[:2].detach().abs().max() < 0.1 * 2.0 / 30.0


def test_topology_and_compositing():
    mesh = trimesh.creation.icosphere(2)
    adj = mesh_topology(torch.tensor(mesh.faces))
    assert (adj >= 0).all()
    # adjacency is symmetric
    assert all((adj[adj[i, e]] == i).any() for i, e in [(0, 0), (5, 1), (17, 2)])
    open_adj = mesh_topology(torch.tensor(mesh.faces[:-1]))
    assert (open_adj < 0).sum() == 3  # removing one face opens its three edges

    colors = torch.rand(1, 2, 2, 3, 3)
    alphas = torch.tensor([0.5, 0.25, 1.0]).expand(1, 2, 2, 3)
    out, a = composite_layers(colors, alphas, background=torch.zeros(3))
    manual = 0.5 * colors[..., 0, :] + 0.5 * 0.25 * colors[..., 1, :] + 0.5 * 0.75 * colors[..., 2, :]
    assert torch.allclose(out, manual) and torch.allclose(a, torch.ones_like(a))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    mesh = _scene_mesh()
    vm = torch.tensor(look_at((0.3, 0.5, -3.0)), dtype=torch.float32)[None]
    K = torch.tensor([[[60.0, 0, 32], [0, 60, 32], [0, 0, 1]]])
    V, F = torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces)
    cpu = rasterize(V, F, vm, K, 64, 64, n_layers=2)
    gpu = rasterize(V.cuda(), F.cuda(), vm.cuda(), K.cuda(), 64, 64, n_layers=2)
    assert (gpu.tri_id.cpu() == cpu.tri_id).float().mean() > 0.999
    assert torch.allclose(gpu.depth.cpu(), cpu.depth, atol=1e-4)
