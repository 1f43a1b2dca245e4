"""The Gaussian ray tracer: C++ kernel, torch twin and CUDA kernel against the all-pairs float64 reference; the
BVH's invariants; the paper's rules one at a time; the hemisphere directions."""

from __future__ import annotations

import math

import pytest
import torch

from recon.render.raytrace import build_bvh, hemisphere_directions, trace_gaussians, trace_gaussians_reference


def random_scene(n=1500, seed=0, size=0.05):
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g) * 2 - 1
    quats = torch.randn(n, 4, generator=g)
    scales = torch.rand(n, 3, generator=g) * size + 0.004
    opacities = torch.rand(n, generator=g)
    normals = torch.randn(n, 3, generator=g)
    return means, quats, scales, opacities, normals


def random_rays(r=1500, seed=1):
    g = torch.Generator().manual_seed(seed)
    o = torch.rand(r, 3, generator=g) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(r, 3, generator=g), dim=-1)
    # some rays along the axes: zero direction components
    d[:30] = torch.eye(3).repeat(10, 1) * torch.tensor([1.0, -1.0]).repeat_interleave(15)[:, None]
    return o, d


BACKENDS = ["cpu", "torch"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("with_normals", [False, True])
@pytest.mark.parametrize("mode", [{}, {"cutoff": 0.0}, {"hit_alpha": 0.3}, {"t_min": 0.2, "alpha_min": 0.3}])
def test_matches_the_all_pairs_reference(backend, with_normals, mode):
    m, q, s, o_, n = random_scene()
    normals = n if with_normals else None
    rays_o, rays_d = random_rays()
    dev = "cuda" if backend == "cuda" else "cpu"
    bvh = build_bvh(m.to(dev), q.to(dev), s.to(dev), o_.to(dev), None if normals is None else normals.to(dev))
    trans, hit = trace_gaussians(bvh, rays_o.to(dev), rays_d.to(dev), backend=backend, **mode)
    ref_t, ref_h = trace_gaussians_reference(m, q, s, o_, rays_o, rays_d, normals, **mode)
    # float32 against float64; a ray whose product lands within rounding of the cutoff may flip: none here
    torch.testing.assert_close(trans.cpu(), ref_t, rtol=0, atol=2e-5)
    assert 0.05 < float((ref_t < 1).float().mean()) < 0.98, "the scene must make rays both pass and hit"
    if mode.get("cutoff", 0.9) > 0 and "hit_alpha" not in mode:
        assert bool((ref_t == 0).any()), "the cutoff must have been exercised"
    if "hit_alpha" in mode:
        assert bool((ref_h > 0).any()) and bool((ref_h < 0).any())
        torch.testing.assert_close(hit.cpu(), ref_h, rtol=0, atol=2e-5)
    else:
        assert hit is None


def test_cpu_kernel_and_torch_twin_agree_exactly():
    m, q, s, o_, n = random_scene(seed=3)
    rays_o, rays_d = random_rays(seed=4)
    bvh = build_bvh(m, q, s, o_, n)
    a, _ = trace_gaussians(bvh, rays_o, rays_d, backend="cpu")
    b, _ = trace_gaussians(bvh, rays_o, rays_d, backend="torch")
    assert torch.equal(a, b)


def test_bvh_holds_every_gaussian_once_and_boxes_nest():
    m, q, s, o_, _ = random_scene(n=777)
    bvh = build_bvh(m, q, s, o_)
    assert sorted(bvh.order.tolist()) == list(range(777))
    boxes, links = bvh.boxes, bvh.links.long()
    prim_lo, prim_hi = bvh.prims[:, 16:19], bvh.prims[:, 19:22]
    seen = 0
    for node in range(bvh.num_nodes):
        a, b = int(links[node, 0]), int(links[node, 1])
        lo, hi = boxes[node, :3], boxes[node, 3:]
        if b < 0:
            ids = bvh.order[a : a - b].long()
            assert 1 <= len(ids) <= 8
            seen += len(ids)
            assert torch.equal(lo, prim_lo[ids].amin(0)) and torch.equal(hi, prim_hi[ids].amax(0))
        else:
            assert a > node and b > node  # children after their parent
            assert torch.equal(lo, torch.minimum(boxes[a, :3], boxes[b, :3])) and torch.equal(hi, torch.maximum(boxes[a, 3:], boxes[b, 3:]))
    assert seen == 777


def _one_gaussian(opacity=0.8, normal=None):
    m = torch.tensor([[0.0, 0.0, 1.0]])
    q = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    s = torch.tensor([[0.1, 0.1, 0.1]])
    return build_bvh(m, q, s, torch.tensor([opacity]), normal)


def test_the_rules_one_at_a_time():
    o = torch.tensor([[0.0, 0.0, 0.0], [0.05, 0.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 1.0], [0.5, 0.0, 0.0]])
    d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    t, hit = trace_gaussians(_one_gaussian(), o, d, cutoff=0.0, hit_alpha=0.5)
    # through the centre: 1 - 0.8; offset by half a sigma: 1 - 0.8 exp(-1/8); behind: untouched; from the centre
    # itself (its own Gaussian, t* = 0 < t_min): untouched; 5 sigma away: outside its 3-sigma box
    expect = torch.tensor([0.2, 1 - 0.8 * math.exp(-0.125), 1.0, 1.0, 1.0])
    torch.testing.assert_close(t, expect, rtol=0, atol=1e-6)
    torch.testing.assert_close(hit, torch.tensor([1.0, 1.0, -1.0, -1.0, -1.0]), rtol=0, atol=1e-6)
    # the paper's cutoff: below 0.9 is a hard shadow
    t, _ = trace_gaussians(_one_gaussian(), o[:2], d[:2])
    assert t.tolist() == [0.0, 0.0]
    t, _ = trace_gaussians(_one_gaussian(opacity=0.05), o[:1], d[:1])
    torch.testing.assert_close(t, torch.tensor([0.95]))
    # below alpha_min: ignored
    t, _ = trace_gaussians(_one_gaussian(opacity=0.003), o[:1], d[:1], cutoff=0.0)
    assert t.tolist() == [1.0]
    # facing away from the ray (normal . d > 0): ignored; facing it: counted
    t, _ = trace_gaussians(_one_gaussian(normal=torch.tensor([[0.0, 0.0, 1.0]])), o[:1], d[:1], cutoff=0.0)
    assert t.tolist() == [1.0]
    t, _ = trace_gaussians(_one_gaussian(normal=torch.tensor([[0.0, 0.0, -1.0]])), o[:1], d[:1], cutoff=0.0)
    torch.testing.assert_close(t, torch.tensor([0.2]))


def test_hemisphere_directions():
    normals = torch.nn.functional.normalize(torch.randn(50, 3), dim=-1)
    normals[0] = torch.tensor([1.0, 0.0, 0.0])  # the helper-axis switch
    d = hemisphere_directions(normals, 64)
    assert d.shape == (50, 64, 3)
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(50, 64))
    cos = (d * normals[:, None]).sum(-1)
    assert float(cos.min()) >= math.sin(math.radians(10)) - 1e-5 and float(cos.max()) <= 1.0
    # the same spiral in every frame: the cosines do not depend on the normal
    torch.testing.assert_close(cos, cos[:1].expand(50, 64), rtol=0, atol=1e-5)
