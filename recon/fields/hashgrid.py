"""Multi-resolution hash-grid encoding (Instant-NGP) for 1D to 4D inputs.

Two implementations of the same maths, one entry point (:func:`hash_encode`, ``impl="fused"`` picks the fastest):

* CPU tensors: a C++/OpenMP kernel (``cuda/hashgrid_cpu.cpp``, compiled with the rasterizer) that computes each
  (point, level)'s 2^d corners on the fly, 16 points at a time with prefetched gathers, and stores nothing for
  backward; the table gradient is split over levels, which own disjoint rows, so it needs no atomics and sums in
  the same order whatever the thread count.
* Any device (its reference twin, and the CUDA path): a pure-torch custom autograd Function that computes all
  levels of a chunk of points with one fused gather-and-weight (``embedding_bag``) from a flattened parameter
  table and, in backward, one ``index_add_`` into the table gradient plus an analytic input gradient. Nothing of
  size [N, L, 2^d, F] is ever materialised. Between forward and backward it keeps the corner indices and weights
  ([N, L, 2^d], ~12 B each) while they fit a budget; above it, backward recomputes them chunk by chunk and
  autograd holds only ``x`` and the table.

Conventions (shapes in brackets):

* Inputs ``x`` [N, d] are expected in [0, 1]^d. Values outside are clamped to the boundary, and the clamped
  coordinates get zero gradient (the encoding is constant outside the box). Normalise with the scene's
  bounding box first (Swift4D: per-axis min/max of the Gaussian centres, and t = frame / n_frames).
* Level ``l`` has per-axis resolution ``R[l, i]``: a grid of ``R + 1`` vertices per axis with spacing ``1 / R``,
  vertex 0 on 0 and vertex R on 1 (no half-cell offset, unlike tcnn; the encodings are equivalent up to a shift).
* A level whose vertex count ``prod(R + 1)`` fits in ``2^log2_hashmap_size`` is indexed densely (row-major with
  axis 0 fastest) and gets a table of exactly that size; finer levels are hashed with the Instant-NGP spatial hash
  ``(c_0 * 1) xor (c_1 * 2654435761) xor (c_2 * 805459861) xor (c_3 * 3674653429) mod 2^T``.
* The tables of all levels are concatenated into one parameter ``table`` [P, F] (level l owns rows
  ``offsets[l]:offsets[l+1]``), so a single gather serves every level.
* Output [N, L * F], level-major (features of level 0 first), like tcnn.

The 2^d corner weights are the d-linear interpolation weights ``prod_i (f_i if bit_i else 1 - f_i)``; corner ``c``
has bit ``i`` at position ``d - 1 - i`` of ``c`` (axis 0 is the most significant bit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor, nn

__all__ = [
    "PRIMES",
    "HashGridLayout",
    "HashGridEncoding",
    "hash_encode",
    "hash_encode_reference",
    "grid_resolutions",
]

# Instant-NGP's primes; the first is 1 so that axis 0 keeps coherent memory access along x.
PRIMES = (1, 2654435761, 805459861, 3674653429)

# Default number of (point, level, corner) triples processed per chunk. 2^21 triples is ~8 MB of int64
# indices + ~8 MB of weights + 2^21 * F * 4 B of gathered features: big enough to amortise per-op overhead,
# small enough to stay cache-friendly and bounded in memory.
DEFAULT_CHUNK_ELEMS = 1 << 21

# The fused path keeps corner indices + weights for backward while N * L * 2^d <= this many triples
# (2^24 triples ~ 200-270 MB); above it backward recomputes them per chunk instead of holding them.
DEFAULT_SAVE_BUDGET = 1 << 24


# ----------------------------------------------------------------------------------------------------------
# Layout: resolutions, per-level table sizes and offsets
# ----------------------------------------------------------------------------------------------------------


def _per_axis(value, n_dims: int, name: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return (float(value),) * n_dims
    value = tuple(float(v) for v in value)
    if len(value) != n_dims:
        raise ValueError(f"{name} has {len(value)} entries, expected 1 or n_dims={n_dims}")
    return value


def grid_resolutions(
    n_dims: int,
    n_levels: int,
    base_resolution: float | Sequence[float] = 16,
    per_level_scale: float | Sequence[float] | None = None,
    max_resolution: float | Sequence[float] | None = None,
) -> tuple[tuple[int, ...], ...]:
    """Per-level, per-axis grid resolutions ``R[l][i] = floor(base_i * scale_i ** l)``.

    Exactly one of the two schedules applies per call:

    * ``per_level_scale`` given: geometric growth with that factor (tcnn/Swift4D style). If ``max_resolution``
      is also given, each axis saturates at it, which gives an axis (e.g. time) fewer distinct levels.
    * only ``max_resolution`` given: the growth factor per axis is derived so that the last level hits it,
      ``scale_i = (max_i / base_i) ** (1 / (L - 1))`` (nerfstudio style).

    Scalars apply to every axis; sequences of length ``n_dims`` give per-axis values (e.g. a coarser time axis).

    Returns:
        ``n_levels`` tuples of ``n_dims`` ints, each >= 1 and non-decreasing over levels.
    """
    if n_levels < 1:
        raise ValueError("n_levels must be >= 1")
    base = _per_axis(base_resolution, n_dims, "base_resolution")
    scale = _per_axis(per_level_scale, n_dims, "per_level_scale")
    cap = _per_axis(max_resolution, n_dims, "max_resolution")
    if scale is None:
        if cap is None:
            raise ValueError("give per_level_scale or max_resolution")
        scale = tuple(
            math.exp((math.log(m) - math.log(b)) / (n_levels - 1)) if n_levels > 1 else 1.0 for b, m in zip(base, cap)
        )
    if any(s < 1.0 for s in scale):
        raise ValueError(f"per-level scale must be >= 1 (got {scale}); max_resolution below base_resolution?")
    out = []
    for level in range(n_levels):
        # The 1e-9 relative slack makes e.g. 16 * (2048/16)^(15/15) land on 2048, not 2047.
        res = [max(1, int(math.floor(b * s**level * (1 + 1e-9)))) for b, s in zip(base, scale)]
        if cap is not None:
            res = [min(r, max(1, int(round(m)))) for r, m in zip(res, cap)]
        out.append(tuple(res))
    return tuple(out)


@dataclass(frozen=True)
class HashGridLayout:
    """Static description of a hash grid: which rows of the flat table belong to which level, and how indexed.

    Build with :meth:`HashGridLayout.create`. Hashable, so device-side constants are cached per layout.

    Attributes:
        n_dims: input dimension d (2, 3 or 4).
        n_features: features per level F.
        log2_hashmap_size: T; hashed levels have 2^T rows.
        resolutions: [L][d] per-level per-axis resolution.
        dense: [L] True where the level is indexed densely (its vertex count fits in 2^T rows).
        table_sizes: [L] rows owned by each level.
        offsets: [L + 1] first row of each level in the flat table; offsets[-1] is the total row count P.
    """

    n_dims: int
    n_features: int
    log2_hashmap_size: int
    resolutions: tuple[tuple[int, ...], ...]
    dense: tuple[bool, ...]
    table_sizes: tuple[int, ...]
    offsets: tuple[int, ...]

    @staticmethod
    def create(resolutions: Sequence[Sequence[int]], n_features: int, log2_hashmap_size: int) -> "HashGridLayout":
        resolutions = tuple(tuple(int(r) for r in res) for res in resolutions)
        n_dims = len(resolutions[0])
        if not 1 <= n_dims <= len(PRIMES):
            raise ValueError(f"n_dims must be in 1..{len(PRIMES)}, got {n_dims}")
        if log2_hashmap_size > 31:
            # int64 hashing is exact for any T <= 32, but tables beyond 2^31 rows per level are not useful.
            raise ValueError("log2_hashmap_size must be <= 31")
        hashmap = 1 << log2_hashmap_size
        dense, sizes = [], []
        for res in resolutions:
            n_vertices = math.prod(r + 1 for r in res)
            dense.append(n_vertices <= hashmap)
            sizes.append(min(n_vertices, hashmap))
        offsets = [0]
        for s in sizes:
            offsets.append(offsets[-1] + s)
        return HashGridLayout(n_dims, n_features, log2_hashmap_size, resolutions, tuple(dense), tuple(sizes), tuple(offsets))

    @property
    def n_levels(self) -> int:
        return len(self.resolutions)

    @property
    def n_rows(self) -> int:
        return self.offsets[-1]

    @property
    def n_output_dims(self) -> int:
        return self.n_levels * self.n_features

    def multipliers(self, level: int) -> tuple[int, ...]:
        """Per-axis index multipliers of ``level``: row-major strides (axis 0 fastest) if dense, else the primes."""
        res = self.resolutions[level]
        if not self.dense[level]:
            return PRIMES[: self.n_dims]
        return tuple(math.prod(r + 1 for r in res[:i]) for i in range(self.n_dims))


@dataclass
class _Group:
    """Device constants for a run of levels that share an indexing mode (all dense or all hashed).

    Everything is laid out axis-major ([d, Lg, 1]) so that the per-point arithmetic runs over long contiguous
    rows of points: elementwise ops with a tiny innermost dimension (2 corners, 3 axes) are several times slower
    in torch's CPU kernels than the same ops over rows of n points.
    """

    levels: list[int]  # which levels, in output order
    hashed: bool
    res: Tensor  # [d, Lg, 1] float: resolution per axis and level
    res_m1: Tensor  # [d, Lg, 1] float: resolution - 1 (clamp bound for the lower corner)
    mult: Tensor  # [d, Lg, 1] int64: dense strides or hash primes
    offset: Tensor  # [Lg, 1] int64: first table row of each level
    mask: int  # 2^T - 1 for hashed groups


@lru_cache(maxsize=64)
def _groups(layout: HashGridLayout, device: torch.device, dtype: torch.dtype) -> tuple[_Group, ...]:
    """Split levels into contiguous runs of equal indexing mode and put their constants on ``device``.

    Resolutions grow with the level, so in practice this is [coarse dense levels] + [fine hashed levels]: two
    groups, each handled with one vectorised pass over all of its levels.
    """
    runs: list[list[int]] = []
    for level, is_dense in enumerate(layout.dense):
        if runs and layout.dense[runs[-1][0]] == is_dense:
            runs[-1].append(level)
        else:
            runs.append([level])
    groups = []
    for levels in runs:
        hashed = not layout.dense[levels[0]]
        res = torch.tensor([layout.resolutions[lv] for lv in levels], dtype=torch.float64).t()  # [d, Lg]
        mult = torch.tensor([layout.multipliers(lv) for lv in levels], dtype=torch.int64).t()  # [d, Lg]
        groups.append(
            _Group(
                levels=levels,
                hashed=hashed,
                res=res.to(device=device, dtype=dtype).unsqueeze(-1).contiguous(),
                res_m1=(res - 1).to(device=device, dtype=dtype).unsqueeze(-1).contiguous(),
                mult=mult.to(device).unsqueeze(-1).contiguous(),
                offset=torch.tensor([layout.offsets[lv] for lv in levels], dtype=torch.int64, device=device).view(-1, 1),
                mask=(1 << layout.log2_hashmap_size) - 1,
            )
        )
    return tuple(groups)


# ----------------------------------------------------------------------------------------------------------
# Corner indices and weights (corner-major: [2^d, Lg, n])
# ----------------------------------------------------------------------------------------------------------


def _outer(parts: list[Tensor], op) -> Tensor:
    """Combine per-axis pairs [2, ...] into all 2^d corners [2^d, ...] (axis 0 = most significant bit).

    The corner dimension leads, so every op broadcasts over whole contiguous rows.
    """
    acc = parts[0]
    for p in parts[1:]:
        acc = op(acc.unsqueeze(1), p.unsqueeze(0)).flatten(0, 1)
    return acc


def _cell(xa: Tensor, g: _Group) -> tuple[Tensor, Tensor]:
    """Lower cell corner (int64) and fractional position, both [d, Lg, n], for points ``xa`` [d, n] in [0, 1]."""
    pos = xa.unsqueeze(1) * g.res  # [d, Lg, n]
    # Clamp the lower corner to R - 1 so that x == 1 lands in the last cell with frac 1 (never out of range).
    lo = torch.minimum(pos.floor(), g.res_m1)
    return lo.long(), pos.sub_(lo)


def _corner_index(lo: Tensor, g: _Group) -> Tensor:
    """Flat table rows of the 2^d corners: [2^d, Lg, n] int64."""
    t0 = lo * g.mult  # [d, Lg, n]: term of the lower corner per axis
    # The upper corner's term is (lo + 1) * mult = t0 + mult. For hashed levels the products can reach ~2^52;
    # int64 keeps them exact and their low T bits equal tcnn's uint32 wrap-around arithmetic.
    parts = [torch.stack((t0[i], t0[i] + g.mult[i])) for i in range(lo.shape[0])]
    if g.hashed:
        idx = _outer(parts, torch.bitwise_xor).bitwise_and_(g.mask)
    else:
        idx = _outer(parts, torch.add)
    return idx.add_(g.offset)


def _axis_weights(frac: Tensor) -> list[Tensor]:
    """Per-axis linear weights, each [2, Lg, n] = (1 - f_i, f_i)."""
    return [torch.stack((1 - frac[i], frac[i])) for i in range(frac.shape[0])]


# ----------------------------------------------------------------------------------------------------------
# Fused path: custom autograd Function, chunked; corner data kept (within budget) or recomputed in backward
# ----------------------------------------------------------------------------------------------------------


def _chunk_size(layout: HashGridLayout, chunk_size: int | None) -> int:
    if chunk_size is not None:
        return max(1, int(chunk_size))
    per_point = layout.n_levels * (1 << layout.n_dims)
    return max(1, DEFAULT_CHUNK_ELEMS // per_point)


def _point_major(t: Tensor) -> Tensor:
    """[C, Lg, n] -> [Lg * n, C] contiguous: one row per (level, point) bag, the layout embedding_bag wants.

    The gathers/scatters then touch a point's 2^d corners back to back; corners that differ only along x hash to
    neighbouring rows (prime 1), so they share cache lines. That is ~25% faster than corner-major access.
    """
    # stack of the C contiguous rows: ~5x faster than t().contiguous() for int64 on CPU (generic strided copy).
    return torch.stack(t.flatten(1).unbind(0), dim=1)


def _prepare(xa: Tensor, g: _Group, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """Corner rows [M, C] (int64), corner weights [M, C] (``dtype``) and fractions [d, Lg, n]; M = Lg * n."""
    lo, frac = _cell(xa, g)
    idx = _point_major(_corner_index(lo, g))
    w = _point_major(_outer(_axis_weights(frac), torch.mul)).to(dtype)
    return idx, w, frac


def _forward_chunk(xa: Tensor, table: Tensor, groups, keep: list | None) -> Tensor:
    """Encode one chunk: xa [d, n] in [0, 1] (already clamped) -> [L, n, F].

    If ``keep`` is a list, the (idx, w, frac) of every group are appended to it for backward.
    """
    n, F = xa.shape[1], table.shape[1]
    outs = []
    for g in groups:
        idx, w, frac = _prepare(xa, g, table.dtype)
        # embedding_bag fuses the gather with the weighted sum over corners and never materialises the
        # [Lg * n, C, F] gathered block; on CPU it is ~2x faster than index_select + weighted sum.
        out = torch.nn.functional.embedding_bag(idx, table, per_sample_weights=w, mode="sum")
        outs.append(out.view(len(g.levels), n, F))
        if keep is not None:
            keep.append((idx, w, frac))
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)  # groups are runs in level order


def _backward_chunk(xa: Tensor, table: Tensor, grad: Tensor, grad_table: Tensor | None, need_x: bool,
                    groups, kept: list | None) -> Tensor | None:
    """Accumulate d(loss)/d(table) into ``grad_table``; return d(loss)/d(x) as [d, n] (axis-major) or None.

    xa: [d, n] clamped points; grad: [n, L, F] upstream gradient of this chunk; kept: what forward saved for
    this chunk (one (idx, w, frac) per group) or None to recompute it.
    """
    d, n = xa.shape
    F = table.shape[1]
    grad_x = xa.new_zeros(d, n) if need_x else None
    start = 0
    for k, g in enumerate(groups):
        Lg = len(g.levels)
        gl = grad[:, start:start + Lg].transpose(0, 1).reshape(Lg * n, F).to(table.dtype)  # [M, F], M = Lg * n
        start += Lg
        idx, w, frac = kept[k] if kept is not None else _prepare(xa, g, table.dtype)
        C = idx.shape[1]
        if grad_table is not None:
            # d out[m, f] / d table[idx[m, c], f] = w[m, c]: one scatter-add for all levels and corners.
            # Build the [M, C, F] source one feature at a time into a strided output: the one-shot broadcast
            # (gl[:, None] * w[..., None]) has innermost extents 1 and F, which is ~7x slower on CPU.
            src = torch.empty(Lg * n, C, F, dtype=table.dtype, device=table.device)
            for f in range(F):
                torch.mul(w, gl[:, f:f + 1], out=src[..., f])
            grad_table.index_add_(0, idx.view(-1), src.view(-1, F))
        if need_x:
            vals = table.index_select(0, idx.view(-1)).view(Lg * n, C, F)
            # s[m, c] = <grad_out[m, :], table[corner c of m]>: the loss sensitivity to corner weight c.
            # A short loop over F beats (vals * gl[:, None]).sum(-1), whose innermost dimension is only F long.
            s = vals[..., 0] * gl[:, :1]
            for f in range(1, F):
                s.addcmul_(vals[..., f], gl[:, f:f + 1])
            s = s.to(xa.dtype).t().view(*([2] * d), Lg, n)  # corner-major view
            axis_w = _axis_weights(frac)
            for i in range(d):
                # d w_c / d f_i = (+1 if bit_i(c) else -1) * prod_{j != i} w_j: the difference of s along axis i,
                # weighted by the other axes' linear weights and summed over them.
                diff = (s.select(i, 1) - s.select(i, 0)).reshape(-1, Lg, n)
                others = [axis_w[j] for j in range(d) if j != i]
                if others:
                    diff = (diff * _outer(others, torch.mul)).sum(0)
                else:
                    diff = diff[0]
                # d f_i / d x_i = R_i (the floor is piecewise constant); then sum over this group's levels.
                grad_x[i] += (diff * g.res[i]).sum(0)
    return grad_x


def _zero_where_clamped(grad_x: Tensor, x: Tensor) -> Tensor:
    """Clamped coordinates get zero gradient: the encoding is constant outside [0, 1]. Both [N, d]."""
    return grad_x * ((x >= 0) & (x <= 1)).to(x.dtype)


class _HashEncodeFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, table: Tensor, layout: HashGridLayout, chunk: int, save_budget: int):
        groups = _groups(layout, x.device, x.dtype)
        xa = x.detach().clamp(0.0, 1.0).t().contiguous()  # [d, N]
        N = x.shape[0]
        # Keep the corner indices/weights for backward only while they fit the budget (~12-16 B per
        # (point, level, corner) triple); beyond it backward recomputes them chunk by chunk, which costs ~10-15%
        # of a training step but keeps autograd memory at O(N * d) instead of O(N * L * 2^d).
        triples = N * layout.n_levels * (1 << layout.n_dims)
        keep = [] if triples <= save_budget else None
        out = torch.empty(N, layout.n_levels, layout.n_features, dtype=table.dtype, device=x.device)
        for s in range(0, N, chunk):
            out[s:s + chunk] = _forward_chunk(xa[:, s:s + chunk], table, groups, keep).transpose(0, 1)
        flat = [t for trio in keep for t in trio] if keep is not None else []
        ctx.save_for_backward(x, table, *flat)
        ctx.layout, ctx.chunk, ctx.saved = layout, chunk, keep is not None
        return out.view(N, -1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        x, table, *flat = ctx.saved_tensors
        layout, chunk = ctx.layout, ctx.chunk
        need_x, need_table = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        groups = _groups(layout, x.device, x.dtype)
        N = x.shape[0]
        grad = grad_out.reshape(N, layout.n_levels, layout.n_features)
        grad_table = torch.zeros_like(table) if need_table else None
        grad_xa = x.new_empty(x.shape[1], N) if need_x else None
        xa = x.clamp(0.0, 1.0).t().contiguous()
        per_chunk = 3 * len(groups)
        for k, s in enumerate(range(0, N, chunk)):
            kept = None
            if ctx.saved:
                t = flat[k * per_chunk:(k + 1) * per_chunk]
                kept = [tuple(t[3 * j:3 * j + 3]) for j in range(len(groups))]
            gx = _backward_chunk(xa[:, s:s + chunk], table, grad[s:s + chunk], grad_table, need_x, groups, kept)
            if need_x:
                grad_xa[:, s:s + chunk] = gx
        grad_x = _zero_where_clamped(grad_xa.t(), x) if need_x else None
        return grad_x, grad_table, None, None, None



# ----------------------------------------------------------------------------------------------------------
# CPU kernel path: cuda/hashgrid_cpu.cpp (C++/OpenMP); the torch fused path above is its reference twin
# ----------------------------------------------------------------------------------------------------------

_KERNEL_STATE: dict[str, object] = {}


def _cpu_kernel(required: bool = False):
    """The compiled CPU extension, or None when it cannot be built (then the torch path serves, after one
    warning). With ``required`` the build error is raised instead."""
    if "module" not in _KERNEL_STATE:
        from recon.kernels.build import KernelBuildError, load_cpu_rasterizer

        try:
            _KERNEL_STATE["module"] = load_cpu_rasterizer()
        except KernelBuildError as e:
            _KERNEL_STATE["module"] = None
            _KERNEL_STATE["error"] = e
            if not required:
                import warnings

                warnings.warn(f"recon: hash grid falls back to the pure-torch path ({str(e).splitlines()[0]})")
    if required and _KERNEL_STATE["module"] is None:
        raise _KERNEL_STATE["error"]
    return _KERNEL_STATE["module"]


@lru_cache(maxsize=64)
def _kernel_constants(layout: HashGridLayout) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """(res [L, d], mult [L, d] dense strides or primes, offsets [L], hashed [L] bool, hash mask) on the CPU."""
    return (
        torch.tensor(layout.resolutions, dtype=torch.int64),
        torch.tensor([layout.multipliers(lv) for lv in range(layout.n_levels)], dtype=torch.int64),
        torch.tensor(layout.offsets[:-1], dtype=torch.int64),
        torch.tensor([not dense for dense in layout.dense], dtype=torch.bool),
        (1 << layout.log2_hashmap_size) - 1,
    )


class _HashEncodeCpuFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, table: Tensor, layout: HashGridLayout):
        xa = x.detach().clamp(0.0, 1.0).contiguous()
        out = _cpu_kernel(required=True).hashgrid_fwd(xa, table.detach(), *_kernel_constants(layout))
        ctx.save_for_backward(x, table)
        ctx.layout = layout
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        x, table = ctx.saved_tensors
        need_x, need_table = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        xa = x.clamp(0.0, 1.0).contiguous()
        grad_table, grad_x = _cpu_kernel(required=True).hashgrid_bwd(
            xa, table, grad_out, *_kernel_constants(ctx.layout), need_table, need_x)
        return (_zero_where_clamped(grad_x, x) if need_x else None), (grad_table if need_table else None), None


def _kernel_applies(x: Tensor, table: Tensor) -> bool:
    return (x.device.type == "cpu" and table.device.type == "cpu" and x.dtype == table.dtype
            and x.dtype in (torch.float32, torch.float64) and _cpu_kernel() is not None)


# ----------------------------------------------------------------------------------------------------------
# Autograd path: plain differentiable torch ops (supports double backward)
# ----------------------------------------------------------------------------------------------------------


def _encode_autograd(x: Tensor, table: Tensor, layout: HashGridLayout, chunk: int) -> Tensor:
    """Same maths as the fused path, built from differentiable ops (index_select + weighted sum).

    Autograd keeps the gathered [Lg * n, C, F] block of every chunk, so memory is O(N * L * 2^d * F).
    """
    groups = _groups(layout, x.device, x.dtype)
    xa = x.clamp(0.0, 1.0).t()
    outs = []
    for s in range(0, x.shape[0], chunk):
        xs = xa[:, s:s + chunk]
        n = xs.shape[1]
        per_group = []
        for g in groups:
            pos = xs.unsqueeze(1) * g.res  # [d, Lg, n]
            with torch.no_grad():
                lo = torch.minimum(pos.floor(), g.res_m1)
                idx = _point_major(_corner_index(lo.long(), g))  # [M, C]
            w = _point_major(_outer(_axis_weights(pos - lo), torch.mul)).to(table.dtype)  # [M, C]
            vals = table.index_select(0, idx.view(-1)).view(*idx.shape, -1)  # [M, C, F]
            per_group.append((vals * w.unsqueeze(-1)).sum(1).view(len(g.levels), n, -1))
        outs.append(torch.cat(per_group, 0).transpose(0, 1).reshape(n, -1))
    return outs[0] if len(outs) == 1 else torch.cat(outs, 0)



def hash_encode_reference(x: Tensor, table: Tensor, layout: HashGridLayout) -> Tensor:
    """Straightforward vectorised reference: a Python loop over levels, plain autograd (nerfstudio-like).

    Kept as the baseline for benchmarks and as readable documentation of the maths. Same conventions as
    :func:`hash_encode`. x [N, d] -> [N, L * F].
    """
    d = layout.n_dims
    xc = x.clamp(0.0, 1.0)
    corners = torch.tensor([[(c >> (d - 1 - i)) & 1 for i in range(d)] for c in range(1 << d)], device=x.device)
    outs = []
    for level, res in enumerate(layout.resolutions):
        r = torch.tensor(res, dtype=x.dtype, device=x.device)
        pos = xc * r
        lo = torch.minimum(pos.floor(), r - 1).detach()
        frac = pos - lo
        c = lo.long().unsqueeze(1) + corners  # [N, C, d]
        if layout.dense[level]:
            stride = torch.tensor([math.prod(rr + 1 for rr in res[:i]) for i in range(d)], device=x.device)
            idx = (c * stride).sum(-1)
        else:
            idx = c[..., 0] * PRIMES[0]
            for i in range(1, d):
                idx = idx ^ (c[..., i] * PRIMES[i])
            idx = idx & ((1 << layout.log2_hashmap_size) - 1)
        w = torch.where(corners.bool(), frac.unsqueeze(1), 1 - frac.unsqueeze(1)).prod(-1)  # [N, C]
        vals = table[layout.offsets[level]:layout.offsets[level + 1]][idx]  # [N, C, F]
        outs.append((vals * w.unsqueeze(-1)).sum(1))
    return torch.cat(outs, -1)


# ----------------------------------------------------------------------------------------------------------
# Public functional entry point and module
# ----------------------------------------------------------------------------------------------------------


def hash_encode(
    x: Tensor,
    table: Tensor,
    layout: HashGridLayout,
    impl: str = "fused",
    chunk_size: int | None = None,
    save_budget: int | None = None,
) -> Tensor:
    """Multi-resolution hash encoding.

    Args:
        x: [N, d] points, expected in [0, 1]^d (clamped; outside points get zero input gradient).
        table: [P, F] flat parameter table, P = ``layout.n_rows`` (level l owns rows offsets[l]:offsets[l+1]).
        layout: the grid description, see :class:`HashGridLayout`.
        impl: ``"fused"`` (fastest available, first-order gradients only: the C++ kernel for CPU tensors,
            ``"torch"`` elsewhere or when the kernel cannot be compiled), ``"cpu"`` (the C++/OpenMP kernel
            ``cuda/hashgrid_cpu.cpp``; raises if it cannot be built), ``"torch"`` (the pure-torch fused custom
            Function, the kernel's twin; runs on any device), ``"autograd"`` (plain torch ops; slower, supports
            double backward e.g. for eikonal losses) or ``"reference"`` (per-level loop baseline).
        chunk_size: torch paths: points per chunk; default keeps each chunk at ~2^21 (point, level, corner) triples.
        save_budget: torch fused path only: keep corner indices/weights from forward for backward while
            N * L * 2^d <= save_budget (default 2^24), otherwise recompute them in backward. 0 = always recompute.

    Returns:
        [N, L * F] features, level-major.
    """
    if x.dim() != 2 or x.shape[1] != layout.n_dims:
        raise ValueError(f"x must be [N, {layout.n_dims}], got {tuple(x.shape)}")
    if table.dim() != 2 or table.shape != (layout.n_rows, layout.n_features):
        raise ValueError(f"table must be [{layout.n_rows}, {layout.n_features}], got {tuple(table.shape)}")
    if x.shape[0] == 0:
        return x.new_zeros(0, layout.n_output_dims, dtype=table.dtype)
    if impl == "cpu" or (impl == "fused" and _kernel_applies(x, table)):
        return _HashEncodeCpuFn.apply(x, table, layout)
    chunk = _chunk_size(layout, chunk_size)
    if impl in ("fused", "torch"):
        budget = DEFAULT_SAVE_BUDGET if save_budget is None else save_budget
        if not (torch.is_grad_enabled() and (x.requires_grad or table.requires_grad)):
            budget = -1  # inference: nothing to keep for backward
        return _HashEncodeFn.apply(x, table, layout, chunk, budget)
    if impl == "autograd":
        return _encode_autograd(x, table, layout, chunk)
    if impl == "reference":
        return hash_encode_reference(x, table, layout)
    raise ValueError(f"unknown impl {impl!r}")


class HashGridEncoding(nn.Module):
    """Multi-resolution hash-grid encoding module: [N, d] in [0, 1]^d -> [N, n_levels * n_features].

    Args:
        n_input_dims: d, 2..4 (4 = (x, y, z, t) as in Swift4D).
        n_levels: L.
        n_features_per_level: F.
        log2_hashmap_size: T; each hashed level has 2^T rows (coarse levels that fit are dense and smaller).
        base_resolution: resolution of level 0; scalar or per-axis.
        per_level_scale: growth factor per level; scalar or per-axis. If None it is derived from max_resolution.
        max_resolution: finest resolution; scalar or per-axis. With per_level_scale it is a per-axis cap.
        impl: see :func:`hash_encode`.
        chunk_size: see :func:`hash_encode`.

    Defaults (16 levels, 2 features, 2^19, base 16, finest 2048) are Instant-NGP's NeRF setting; methods keep their
    own settings (Swift4D's 4D grid: ``recon/methods/swift4d/field.py``).
    """

    def __init__(
        self,
        n_input_dims: int = 3,
        n_levels: int = 16,
        n_features_per_level: int = 2,
        log2_hashmap_size: int = 19,
        base_resolution: float | Sequence[float] = 16,
        per_level_scale: float | Sequence[float] | None = None,
        max_resolution: float | Sequence[float] | None = 2048,
        impl: str = "fused",
        chunk_size: int | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        res = grid_resolutions(n_input_dims, n_levels, base_resolution, per_level_scale, max_resolution)
        self.layout = HashGridLayout.create(res, n_features_per_level, log2_hashmap_size)
        self.impl = impl
        self.chunk_size = chunk_size
        self.table = nn.Parameter(torch.empty(self.layout.n_rows, n_features_per_level, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Instant-NGP init: tiny uniform values, so the encoding starts near zero but with non-zero gradients
        # flowing to the MLP.
        nn.init.uniform_(self.table, -1e-4, 1e-4)

    @property
    def n_output_dims(self) -> int:
        return self.layout.n_output_dims

    def forward(self, x: Tensor) -> Tensor:
        """x: [..., d] in [0, 1]^d -> [..., L * F]."""
        shape = x.shape[:-1]
        out = hash_encode(x.reshape(-1, x.shape[-1]), self.table, self.layout, self.impl, self.chunk_size)
        return out.view(*shape, self.n_output_dims)

    def extra_repr(self) -> str:
        lay = self.layout
        return (f"d={lay.n_dims}, levels={lay.n_levels}, features={lay.n_features}, T={lay.log2_hashmap_size}, "
                f"res={lay.resolutions[0]}..{lay.resolutions[-1]}, dense_levels={sum(lay.dense)}, "
                f"params={lay.n_rows * lay.n_features}, impl={self.impl}")
