"""Hash-grid encoding and MLP helpers: correctness against a naive per-point Python loop, gradients, chunking,
4D grids, the C++ CPU kernel against its torch twin, device parity, identity-at-init deformation heads. Small
grids only; runs in a few seconds on CPU."""

from __future__ import annotations

import math

import pytest
import torch

from recon.fields import (
    MLP,
    PRIMES,
    DeformationHeads,
    HashGridEncoding,
    HashGridLayout,
    grid_resolutions,
    hash_encode,
)

IMPLS = ["fused", "cpu", "torch", "autograd", "reference"]


def naive_encode(x: torch.Tensor, table: torch.Tensor, layout: HashGridLayout) -> torch.Tensor:
    """Point-by-point, level-by-level, corner-by-corner with Python ints (unbounded, so the hash is computed
    independently of the int64 tensor arithmetic under test)."""
    d, F = layout.n_dims, layout.n_features
    out = torch.zeros(x.shape[0], layout.n_levels * F, dtype=torch.float64)
    for n in range(x.shape[0]):
        p = [min(max(float(v), 0.0), 1.0) for v in x[n]]
        for level, res in enumerate(layout.resolutions):
            lo, frac = [], []
            for i in range(d):
                pos = p[i] * res[i]
                c = min(math.floor(pos), res[i] - 1)
                lo.append(c)
                frac.append(pos - c)
            acc = torch.zeros(F, dtype=torch.float64)
            for corner in range(1 << d):
                bits = [(corner >> (d - 1 - i)) & 1 for i in range(d)]
                c = [lo[i] + bits[i] for i in range(d)]
                if layout.dense[level]:
                    idx, stride = 0, 1
                    for i in range(d):
                        idx += c[i] * stride
                        stride *= res[i] + 1
                else:
                    h = 0
                    for i in range(d):
                        h ^= c[i] * PRIMES[i]
                    idx = h % (1 << layout.log2_hashmap_size)
                w = 1.0
                for i in range(d):
                    w *= frac[i] if bits[i] else 1.0 - frac[i]
                acc += w * table[layout.offsets[level] + idx].double()
            out[n, level * F:(level + 1) * F] = acc
    return out


def tiny_layout(d: int, n_levels: int = 4, F: int = 2, T: int | None = None) -> HashGridLayout:
    # Base 2, max 24 with 64 rows (128 in 4D): the first level(s) are dense, the rest hashed, so both paths run.
    T = T if T is not None else (6 if d < 4 else 7)
    res = grid_resolutions(d, n_levels, base_resolution=2, max_resolution=24)
    return HashGridLayout.create(res, F, T)


def random_table(layout: HashGridLayout, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(layout.n_rows, layout.n_features, generator=g, dtype=dtype)


# ------------------------------------------------------------------------------------------------------------
# Layout
# ------------------------------------------------------------------------------------------------------------


def test_resolutions_schedule():
    res = grid_resolutions(3, 16, base_resolution=16, max_resolution=2048)
    assert res[0] == (16, 16, 16) and res[-1] == (2048, 2048, 2048)
    assert all(a <= b for r0, r1 in zip(res, res[1:]) for a, b in zip(r0, r1))
    # tcnn/Swift4D style: fixed scale 2.0.
    res = grid_resolutions(4, 16, base_resolution=16, per_level_scale=2.0)
    assert res[3] == (128,) * 4 and res[-1] == (16 * 2**15,) * 4
    # Per-axis: time axis capped at 30 (fewer distinct time levels).
    res = grid_resolutions(4, 8, base_resolution=(16, 16, 16, 4), per_level_scale=2.0, max_resolution=(1e9, 1e9, 1e9, 30))
    assert [r[3] for r in res] == [4, 8, 16, 30, 30, 30, 30, 30]
    assert [r[0] for r in res] == [16 * 2**i for i in range(8)]


def test_layout_dense_then_hashed():
    layout = HashGridLayout.create(grid_resolutions(3, 16, 16, max_resolution=2048), 2, 19)
    # Level l is dense iff (R + 1)^3 <= 2^19, i.e. R <= 79; those tables are exactly (R + 1)^3 rows.
    for res, dense, size in zip(layout.resolutions, layout.dense, layout.table_sizes):
        n_vertices = (res[0] + 1) ** 3
        assert dense == (n_vertices <= 2**19)
        assert size == min(n_vertices, 2**19)
    assert layout.dense[0] and not layout.dense[-1]
    assert layout.offsets[0] == 0 and layout.n_rows == sum(layout.table_sizes)


# ------------------------------------------------------------------------------------------------------------
# Values
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [2, 3, 4])
@pytest.mark.parametrize("impl", IMPLS)
def test_matches_naive_loop(d, impl):
    layout = tiny_layout(d)
    assert any(layout.dense) and not all(layout.dense)
    table = random_table(layout)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(40, d, generator=g, dtype=torch.float64) * 1.2 - 0.1  # some points outside: clamped
    x[0] = 0.0
    x[1] = 1.0  # the upper boundary uses the last cell with frac 1
    ref = naive_encode(x, table, layout)
    out = hash_encode(x, table, layout, impl=impl)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_large_coordinates_hash_exactly():
    # Fine levels of Swift4D's schedule reach R = 2^19: products with the primes need > 32 bits.
    layout = HashGridLayout.create(grid_resolutions(4, 3, base_resolution=2**17, per_level_scale=2.0), 1, 12)
    table = random_table(layout)
    x = torch.rand(8, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(hash_encode(x, table, layout), naive_encode(x, table, layout), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("d", [2, 3, 4])
def test_vertices_return_table_entries_and_edges_are_linear(d):
    layout = HashGridLayout.create([(3,) * d], 2, 10)  # one dense level, 4 vertices per axis
    table = random_table(layout)
    g = torch.Generator().manual_seed(2)
    verts = torch.randint(0, 4, (30, d), generator=g)
    out = hash_encode(verts.double() / 3, table, layout)
    flat = (verts * torch.tensor([4**i for i in range(d)])).sum(-1)
    torch.testing.assert_close(out, table[flat], rtol=0, atol=1e-15)
    # Along an edge inside one cell the encoding is exactly linear in the coordinate.
    a = verts[:5].clamp(max=2)
    b = a.clone()
    b[:, 0] += 1
    fa, fb = table[(a * torch.tensor([4**i for i in range(d)])).sum(-1)], table[(b * torch.tensor([4**i for i in range(d)])).sum(-1)]
    for t in (0.25, 0.5, 0.9):
        x = (a.double() + torch.tensor([t] + [0.0] * (d - 1), dtype=torch.float64)) / 3
        torch.testing.assert_close(hash_encode(x, table, layout), (1 - t) * fa + t * fb, rtol=0, atol=1e-14)


def test_out_of_range_is_clamped():
    layout = tiny_layout(3)
    table = random_table(layout)
    x = torch.tensor([[-0.5, 0.3, 1.7], [0.2, 2.0, -3.0]], dtype=torch.float64, requires_grad=True)
    out = hash_encode(x, table, layout)
    torch.testing.assert_close(out, hash_encode(x.detach().clamp(0, 1), table, layout))
    out.sum().backward()
    assert x.grad[0, 0] == 0 and x.grad[0, 2] == 0 and x.grad[1, 1] == 0 and x.grad[1, 2] == 0
    assert x.grad[0, 1] != 0 and x.grad[1, 0] != 0


# ------------------------------------------------------------------------------------------------------------
# Gradients
# ------------------------------------------------------------------------------------------------------------


def interior_points(n: int, d: int, layout: HashGridLayout, seed: int = 0, margin: float = 1e-3) -> torch.Tensor:
    """Points at least ``margin`` (in cell units) away from every cell face, where the encoding is smooth."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(4 * n, d, generator=g, dtype=torch.float64) * 0.98 + 0.01
    ok = torch.ones(x.shape[0], dtype=torch.bool)
    for res in layout.resolutions:
        pos = x * torch.tensor(res, dtype=torch.float64)
        f = pos - pos.floor()
        ok &= ((f > margin) & (f < 1 - margin)).all(-1)
    return x[ok][:n]


@pytest.mark.parametrize("d", [2, 3, 4])
@pytest.mark.parametrize("impl", ["cpu", "torch", "autograd"])
def test_gradcheck(d, impl):
    layout = tiny_layout(d, n_levels=3, F=2)
    x = interior_points(6, d, layout).requires_grad_()
    table = (random_table(layout) * 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, t: hash_encode(x, t, layout, impl=impl), (x, table), eps=1e-6, atol=1e-6)


def test_gradgradcheck_autograd_impl():
    # The autograd path supports double backward (eikonal-style losses); the fused path is first-order only.
    layout = tiny_layout(3, n_levels=2, F=1)
    x = interior_points(4, 3, layout).requires_grad_()
    table = random_table(layout).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda x, t: hash_encode(x, t, layout, impl="autograd"), (x, table), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("d", [3, 4])
def test_fused_matches_autograd_float32(d):
    enc = HashGridEncoding(d, n_levels=8, n_features_per_level=2, log2_hashmap_size=12, base_resolution=4, max_resolution=300)
    with torch.no_grad():
        enc.table.normal_()
    x = torch.rand(500, d, generator=torch.Generator().manual_seed(0), requires_grad=True)
    w = torch.randn(500, enc.n_output_dims, generator=torch.Generator().manual_seed(1))
    grads = {}
    for impl in ("cpu", "torch", "autograd"):
        enc.impl = impl
        enc.table.grad, x.grad = None, None
        out = enc(x)
        (out * w).sum().backward()
        grads[impl] = (out.detach(), x.grad.clone(), enc.table.grad.clone())
    for impl in ("cpu", "torch"):
        for a, b in zip(grads[impl], grads["autograd"]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


@pytest.mark.parametrize("d,F,T", [(1, 3, 6), (2, 2, 8), (3, 4, 12), (4, 4, 15), (4, 8, 10), (4, 5, 12)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_kernel_matches_torch_twin(d, F, T, dtype):
    """The C++ kernel against its pure-torch twin: the same corner order and products, so in float64 the forward
    and the table gradient agree to the last bit; the input gradient sums in another order. Boundary and outside
    points included; F = 5 takes the kernel's runtime-F path, the others its unrolled ones."""
    enc = HashGridEncoding(d, n_levels=10, n_features_per_level=F, log2_hashmap_size=T, base_resolution=3,
                           per_level_scale=2.0, max_resolution=None, dtype=dtype)
    assert any(enc.layout.dense) and not all(enc.layout.dense)
    with torch.no_grad():
        enc.table.uniform_(-1, 1)
    g = torch.Generator().manual_seed(d * 10 + F)
    x0 = torch.rand(700, d, generator=g, dtype=dtype) * 1.2 - 0.1
    x0[:3] = torch.tensor([0.0, 1.0, 0.5], dtype=dtype)[:, None]
    w = torch.randn(700, enc.n_output_dims, generator=g, dtype=dtype)
    res = {}
    for impl in ("cpu", "torch"):
        x = x0.clone().requires_grad_()
        enc.table.grad = None
        out = hash_encode(x, enc.table, enc.layout, impl=impl)
        (out * w).sum().backward()
        res[impl] = (out.detach(), enc.table.grad.clone(), x.grad)
    if dtype == torch.float64:
        assert torch.equal(res["cpu"][0], res["torch"][0])
        assert torch.equal(res["cpu"][1], res["torch"][1])
    else:  # torch's float32 embedding_bag / index_add_ kernels may fuse multiply-adds
        for a, b in zip(res["cpu"][:2], res["torch"][:2]):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6 * b.abs().max().item())
    tol = 1e-10 if dtype == torch.float64 else 2e-4
    torch.testing.assert_close(res["cpu"][2], res["torch"][2], rtol=tol, atol=tol * res["torch"][2].abs().max().item())


def test_cpu_kernel_is_independent_of_the_thread_count():
    # The table gradient is split over levels (disjoint rows), so every row sums in point order on any thread count.
    enc = HashGridEncoding(4, n_levels=16, n_features_per_level=4, log2_hashmap_size=10, base_resolution=16, per_level_scale=2.0,
                           max_resolution=None)
    with torch.no_grad():
        enc.table.normal_()
    x = torch.rand(5000, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    w = torch.randn(5000, enc.n_output_dims, generator=torch.Generator().manual_seed(1))
    before = torch.get_num_threads()
    res = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            enc.table.grad, x.grad = None, None
            out = hash_encode(x, enc.table, enc.layout, impl="cpu")
            (out * w).sum().backward()
            res.append((out.detach(), enc.table.grad.clone(), x.grad.clone()))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*res):
        assert torch.equal(a, b)


def test_fused_falls_back_to_torch_without_the_kernel(monkeypatch):
    import recon.fields.hashgrid as hg

    layout = tiny_layout(3)
    table = random_table(layout)
    x = torch.rand(30, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with_kernel = hash_encode(x, table, layout, impl="fused")
    monkeypatch.setattr(hg, "_KERNEL_STATE", {"module": None, "error": RuntimeError("no compiler")})
    monkeypatch.setattr(hg._HashEncodeCpuFn, "apply", None)  # would raise if fused still chose the kernel
    torch.testing.assert_close(hash_encode(x, table, layout, impl="fused"), with_kernel, rtol=1e-12, atol=1e-12)
    with pytest.raises(RuntimeError, match="no compiler"):
        hg._cpu_kernel(required=True)


# ------------------------------------------------------------------------------------------------------------
# Chunking, module, presets
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [3, 4])
@pytest.mark.parametrize("impl", ["torch", "autograd"])
def test_chunked_equals_unchunked(d, impl):
    layout = tiny_layout(d, n_levels=5, F=3)
    table0 = random_table(layout)
    x0 = torch.rand(103, d, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    w = torch.randn(103, layout.n_output_dims, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    results = []
    # (chunk, save_budget): the fused path either keeps corner data from forward or recomputes it in backward.
    for chunk, budget in ((None, None), (7, None), (7, 0), (1000, 0)):
        x, table = x0.clone().requires_grad_(), table0.clone().requires_grad_()
        out = hash_encode(x, table, layout, impl=impl, chunk_size=chunk, save_budget=budget)
        (out * w).sum().backward()
        results.append((out.detach(), x.grad, table.grad))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_module_shapes_init_and_batch_dims():
    enc = HashGridEncoding(3, n_levels=4, n_features_per_level=2, log2_hashmap_size=10, base_resolution=4, max_resolution=64)
    assert enc.table.shape == (enc.layout.n_rows, 2)
    assert enc.table.abs().max() <= 1e-4 and enc.table.abs().max() > 0
    x = torch.rand(2, 5, 3)
    out = enc(x)
    assert out.shape == (2, 5, 8) and enc.n_output_dims == 8
    torch.testing.assert_close(out.view(10, 8), enc(x.view(10, 3)))
    assert enc(torch.zeros(0, 3)).shape == (0, 8)
    with pytest.raises(ValueError):
        enc(torch.rand(4, 4))


def test_unknown_impl_and_bad_table():
    layout = tiny_layout(3)
    with pytest.raises(ValueError):
        hash_encode(torch.rand(3, 3), random_table(layout), layout, impl="nope")
    with pytest.raises(ValueError):
        hash_encode(torch.rand(3, 3), torch.zeros(5, 2), layout)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("d", [3, 4])
@pytest.mark.parametrize("impl", ["fused", "autograd"])
def test_cpu_cuda_parity(d, impl):
    # On the CPU "fused" is the C++ kernel, on CUDA the torch twin: this is the kernel's parity test too.
    enc = HashGridEncoding(d, n_levels=8, n_features_per_level=2, log2_hashmap_size=14, base_resolution=4,
                           max_resolution=512, impl=impl, dtype=torch.float64)
    with torch.no_grad():
        enc.table.normal_()
    x = torch.rand(3000, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    w = torch.randn(3000, enc.n_output_dims, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    res = {}
    for dev in ("cpu", "cuda"):
        e = enc.to(dev)
        e.table.grad = None
        xd = x.to(dev).requires_grad_()
        out = e(xd)
        (out * w.to(dev)).sum().backward()
        res[dev] = [t.detach().cpu() for t in (out, xd.grad, e.table.grad)]
    for a, b in zip(res["cpu"], res["cuda"]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------------------------------------------
# MLP helpers
# ------------------------------------------------------------------------------------------------------------


def test_mlp_shapes_and_init():
    mlp = MLP(7, 32, 5, n_layers=3, activation="relu")
    assert len(mlp.linears) == 4
    assert mlp(torch.randn(4, 6, 7)).shape == (4, 6, 5)
    assert all((lin.bias == 0).all() for lin in mlp.linears)
    assert MLP(7, 32, 5, n_layers=0).linears[0].weight.shape == (5, 7)
    z = MLP(7, 32, 5, n_layers=2, zero_init_last=True)
    assert (z(torch.randn(3, 7)) == 0).all()
    with pytest.raises(ValueError):
        MLP(3, 8, 1, activation="swish-ish")


def test_deformation_heads_identity_at_init_and_trainable():
    enc = HashGridEncoding(4, n_levels=4, n_features_per_level=4, log2_hashmap_size=10, base_resolution=4, per_level_scale=2.0)
    widths = {"xyz": 3, "scale": 3, "rotation": 4, "opacity": 1, "sh": 16 * 3}
    heads = DeformationHeads(enc.n_output_dims, heads=widths)
    assert dict(heads.head_dims) == widths
    x = torch.rand(64, 4)
    feats = enc(x)
    out = heads(feats)
    assert set(out) == {"xyz", "scale", "rotation", "opacity", "sh"}
    assert out["xyz"].shape == (64, 3) and out["rotation"].shape == (64, 4) and out["sh"].shape == (64, 48)
    for v in out.values():
        assert (v == 0).all()  # identity deformation: canonical + 0
    # Gradients reach the zeroed last layers, so the deformation can move away from identity.
    sum(v.square().sum() + v.sum() for v in out.values()).backward()
    for head in heads.heads.values():
        assert head.linears[-1].weight.grad.abs().sum() > 0
    custom = DeformationHeads(8, heads={"xyz": 3, "sh": 4 * 3}, trunk_layers=None, head_layers=1, head_hidden=16)
    res = custom(torch.randn(5, 8))
    assert res["sh"].shape == (5, 12) and (res["sh"] == 0).all()
