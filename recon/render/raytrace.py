"""Ray tracing through 3D Gaussians: transmittance (visibility) along rays, over a BVH of their 3-sigma boxes.

The tracer of Relightable 3D Gaussians (visibility baking): a Gaussian takes part where a ray crosses its 3-sigma
box (the axis-aligned box of ``mean ± 3 s_k r_k``) at t >= 0, unless it is less opaque than ``alpha_min``, faces
away (``normal · direction > 0``, when normals are given) or its point of maximum density along the ray,
``t* = ((mu - o)^T Sigma^-1 d) / (d^T Sigma^-1 d)``, is closer than ``t_min`` (the ray's own Gaussian). Then
``alpha = opacity · exp(-m²/2)`` with m the Mahalanobis distance at t*, and the transmittance is the product of
``1 - alpha`` (no sorting needed). With ``cutoff`` (0.9 in the paper) a ray whose transmittance drops below it
reports 0: a hard shadow. With ``hit_alpha`` > 0 it also reports the smallest t* of a Gaussian with alpha >=
hit_alpha (a depth), visiting every Gaussian it crosses (no cutoff then).

Why a linear BVH (Morton order, Karras' tree) rather than SAH: it builds in O(N log N) with no cost model, is
deterministic, and is what the paper's GPU tracer uses; Gaussians of a trained scene are small and evenly spread
on surfaces, where SAH's better trees matter less than for triangle meshes of very uneven sizes. The tree is
built once on the CPU (``recon.kernels`` ``raytrace_build``) and traversed by one of three implementations with
one meaning (``cuda/raytrace_common.h`` holds the traversal the C++ and CUDA kernels share):

- ``cpu``: C++/OpenMP kernel (CPU tensors);
- ``cuda``: CUDA kernel, compiled on first use (``recon.kernels.raytrace_cuda``);
- ``torch``: a wavefront traversal of the same tree in plain torch, on any device (every ray pops one node per
  iteration); slow on the CPU, for parity and for devices without a kernel.

:func:`trace_gaussians_reference` is the independent all-pairs oracle (float64, every ray against every Gaussian,
boxes from their eight corners, Sigma^-1 formed explicitly).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from recon.render.pbr import tangent_frame
from recon.rotations import quat_to_rotmat

#: Floats per Gaussian in the packed layout the kernels read (``cuda/raytrace_common.h``).
PRIM_STRIDE = 24
#: Gaussians per BVH leaf (8: fastest of 1-32 on the CPU benchmark, docs/benchmarks.md).
LEAF_SIZE = 8
#: Box half-size in standard deviations.
SIGMAS = 3.0


@dataclass
class GaussianBVH:
    """Gaussians packed for tracing and their BVH (shapes in ``cuda/raytrace_common.h``), on one device.

    Attributes:
        prims: [N, 24] float32 per Gaussian: mean, S^-1 R^T, opacity, normal, 3-sigma box.
        boxes: [M, 6] float32 node boxes (min, max); node 0 is the root.
        links: [M, 2] int32 children (internal nodes) or (first, -count) into ``order`` (leaves).
        order: [N] int32 Gaussian ids in leaf order.
        has_normals: whether ``prims`` holds normals (the facing test applies).
    """

    prims: Tensor
    boxes: Tensor
    links: Tensor
    order: Tensor
    has_normals: bool

    def to(self, device: torch.device | str) -> "GaussianBVH":
        return GaussianBVH(self.prims.to(device), self.boxes.to(device), self.links.to(device), self.order.to(device), self.has_normals)

    @property
    def num_nodes(self) -> int:
        return int(self.boxes.shape[0])


def pack_gaussians(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, normals: Tensor | None = None) -> Tensor:
    """[N, 24] float32 packed Gaussians (see :class:`GaussianBVH`).

    Args:
        means: [N, 3]. quats: [N, 4] wxyz (any norm). scales: [N, 3] activated (positive) standard deviations.
        opacities: [N] activated, in [0, 1]. normals: [N, 3] or None (unit or not; only their sign is used).
    """
    n = means.shape[0]
    R = quat_to_rotmat(quats.float())  # [N, 3, 3], columns are the local axes
    s = scales.float().clamp_min(1e-12)
    A = R.transpose(1, 2) / s[:, :, None]  # row i = r_i / s_i: local = A (x - mean)
    half = SIGMAS * (R.abs() * s[:, None, :]).sum(-1)  # [N, 3]: the box of mean ± 3 s_k r_k
    m = means.float()
    nrm = normals.float() if normals is not None else m.new_zeros(n, 3)
    return torch.cat([m, A.reshape(n, 9), opacities.float().reshape(n, 1), nrm, m - half, m + half, m.new_zeros(n, 2)], 1).contiguous()


def build_bvh(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, normals: Tensor | None = None,
              leaf_size: int = LEAF_SIZE) -> GaussianBVH:  # fmt: skip
    """Pack the Gaussians (see :func:`pack_gaussians` for the shapes) and build their linear BVH on the CPU (at most
    ``leaf_size`` Gaussians a leaf); the result lives on the Gaussians' device."""
    from recon.kernels.build import load_cpu_rasterizer

    with torch.no_grad():
        prims = pack_gaussians(means.detach(), quats.detach(), scales.detach(), opacities.detach(), None if normals is None else normals.detach())
        boxes, links, order = load_cpu_rasterizer().raytrace_build(prims[:, 16:22].cpu(), leaf_size)
    dev = means.device
    return GaussianBVH(prims, boxes.to(dev), links.to(dev), order.to(dev), normals is not None)


def trace_gaussians(bvh: GaussianBVH, origins: Tensor, directions: Tensor, *, alpha_min: float = 1 / 255, t_min: float = 0.01,
                    cutoff: float = 0.9, hit_alpha: float = 0.0, backend: str = "auto") -> tuple[Tensor, Tensor | None]:  # fmt: skip
    """Transmittance of rays through the Gaussians of ``bvh`` (rules in the module docstring).

    Args:
        bvh: from :func:`build_bvh`.
        origins, directions: [R, 3] (directions need not be unit; t is in units of their length).
        alpha_min: skip Gaussians less opaque than this (the paper: 1/255).
        t_min: skip Gaussians whose t* is closer than this (the ray's own Gaussian; the paper: 0.01).
        cutoff: a ray whose transmittance falls below it reports 0 (the paper: 0.9); 0 disables.
        hit_alpha: > 0 also returns the smallest t* of a Gaussian with alpha >= hit_alpha (cutoff then unused).
        backend: ``auto`` (the kernel of the rays' device: ``cpu`` or ``cuda``), ``cpu``, ``cuda`` or ``torch``.

    Returns:
        transmittance [R] float32 in [0, 1]; hit distance [R] (-1: none) when ``hit_alpha`` > 0, else None.
    """
    if backend == "auto":
        backend = "cuda" if origins.is_cuda else "cpu"
    args = (bvh.prims, bvh.boxes, bvh.links, bvh.order, origins.float(), directions.float(), float(alpha_min), float(t_min),
            float(cutoff), float(hit_alpha), bvh.has_normals)  # fmt: skip
    with torch.no_grad():
        if backend == "cpu":
            from recon.kernels.build import load_cpu_rasterizer

            trans, hit = load_cpu_rasterizer().raytrace_trace(*(a.cpu() if torch.is_tensor(a) else a for a in args))
            trans, hit = trans.to(origins.device), hit.to(origins.device)
        elif backend == "cuda":
            from recon.kernels.raytrace_cuda import load_cuda_tracer

            trans, hit = load_cuda_tracer().raytrace_trace_cuda(*args)
        elif backend == "torch":
            trans, hit = _trace_torch(*args)
        else:
            raise ValueError(f"unknown ray-tracing backend {backend!r} (auto, cpu, cuda, torch)")
    return trans, (hit if hit_alpha > 0 else None)


def hemisphere_directions(normals: Tensor, n: int = 64, min_elevation_deg: float = 10.0) -> Tensor:
    """[N, n, 3] unit directions on a Fibonacci spiral over the hemisphere around each of ``normals`` [N, 3]
    (Relightable 3D Gaussians' visibility samples: cos(theta) uniform in [sin(min elevation), 1], so each
    direction stands for an equal share of that band's solid angle). The same spiral, rotated into each normal's
    frame."""
    k = torch.arange(n, dtype=torch.float32, device=normals.device) + 0.5
    zmin = float(torch.sin(torch.deg2rad(torch.tensor(min_elevation_deg))))
    z = 1.0 - k / n * (1.0 - zmin)
    phi = k * (torch.pi * (3.0 - 5.0**0.5))
    r = (1.0 - z * z).clamp_min(0).sqrt()
    local = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)  # [n, 3]
    nz = torch.nn.functional.normalize(normals.float(), dim=-1)
    tx, ty = tangent_frame(nz)
    return local[None, :, :1] * tx[:, None] + local[None, :, 1:2] * ty[:, None] + local[None, :, 2:] * nz[:, None]


# ---------------------------------------------------------------------------- torch twin
def _box_entry(o: Tensor, inv_d: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """[R] entry t >= 0 into boxes [R, 3] (lo, hi), -1 where missed; as ``box_entry`` in raytrace_common.h."""
    a, b = (lo - o) * inv_d, (hi - o) * inv_d
    t0 = torch.minimum(a, b).amax(-1).clamp_min(0.0)
    t1 = torch.maximum(a, b).amin(-1).clamp_max(3.4e38)
    return torch.where(t0 <= t1, t0, torch.full_like(t0, -1.0))


def _gaussian_factor(g: Tensor, o: Tensor, d: Tensor, inv_d: Tensor, alpha_min: float, t_min: float, use_normals: bool):
    """(factor [K], t* [K], alpha [K]) of Gaussians ``g`` [K, 24] on rays [K, 3]; factor 1 where they do not take
    part; as ``gaussian_factor`` in raytrace_common.h."""
    take = g[:, 12] >= alpha_min
    if use_normals:
        take &= (g[:, 13:16] * d).sum(-1) <= 0
    take &= _box_entry(o, inv_d, g[:, 16:19], g[:, 19:22]) >= 0
    A = g[:, 3:12].reshape(-1, 3, 3)
    lo = (A * (o - g[:, :3])[:, None, :]).sum(-1)
    ld = (A * d[:, None, :]).sum(-1)
    dd = (ld * ld).sum(-1)
    take &= dd > 0
    t = -(lo * ld).sum(-1) / torch.where(dd > 0, dd, torch.ones_like(dd))
    take &= t >= t_min
    p = lo + t[:, None] * ld
    alpha = g[:, 12] * torch.exp(-0.5 * (p * p).sum(-1))
    factor = torch.where(take, 1.0 - alpha, torch.ones_like(alpha))
    return factor, t, torch.where(take, alpha, torch.zeros_like(alpha))


def _trace_torch(prims, boxes, links, order, origins, dirs, alpha_min, t_min, cutoff, hit_alpha, use_normals):
    """The traversal of raytrace_common.h as a wavefront: each iteration pops one node of every live ray."""
    dev = origins.device
    links, order = links.long().to(dev), order.long().to(dev)
    prims, boxes = prims.to(dev), boxes.to(dev)
    r = origins.shape[0]
    o, d = origins, dirs
    inv_d = 1.0 / torch.where(d == 0, torch.full_like(d, 1e-30), d)  # as safe_inverse
    want_hit = hit_alpha > 0
    cut = 0.0 if want_hit else cutoff
    trans = torch.ones(r, device=dev)
    hit = torch.full((r,), 3.4e38, device=dev)
    depth = 130
    stack = torch.zeros(r, depth, dtype=torch.long, device=dev)
    sp = (_box_entry(o, inv_d, boxes[0, :3].expand(r, 3), boxes[0, 3:].expand(r, 3)) >= 0).long()
    live = torch.nonzero(sp > 0).squeeze(-1)
    leaf_size = int((-links[:, 1]).clamp_min(0).max()) if bool((links[:, 1] < 0).any()) else 0
    while live.numel():
        sp[live] -= 1
        node = stack[live, sp[live]]
        a, b = links[node, 0], links[node, 1]
        leaf = b < 0
        rays = live[leaf]
        if rays.numel():
            first, count = a[leaf], -b[leaf]
            for j in range(leaf_size):
                valid = j < count
                ids = order[(first + j).clamp_max(order.numel() - 1)]
                f, t, alpha = _gaussian_factor(prims[ids], o[rays], d[rays], inv_d[rays], alpha_min, t_min, use_normals)
                f = torch.where(valid, f, torch.ones_like(f))
                trans[rays] = trans[rays] * f
                if want_hit:
                    better = valid & (f != 1.0) & (alpha >= hit_alpha) & (t < hit[rays])
                    hit[rays] = torch.where(better, t, hit[rays])
            stopped = trans[rays] < cut
            trans[rays[stopped]] = 0.0
            sp[rays[stopped]] = 0
        rays = live[~leaf]
        if rays.numel():
            ca, cb = a[~leaf], b[~leaf]
            ta = _box_entry(o[rays], inv_d[rays], boxes[ca, :3], boxes[ca, 3:])
            tb = _box_entry(o[rays], inv_d[rays], boxes[cb, :3], boxes[cb, 3:])
            ha, hb = ta >= 0, tb >= 0
            both = ha & hb
            near = torch.where(ta <= tb, ca, cb)
            far = torch.where(ta <= tb, cb, ca)
            # first push: the far child (both hit) or the only child hit; second push: the near child
            first = torch.where(both, far, torch.where(ha, ca, cb))
            one = ha | hb
            r1 = rays[one]
            stack[r1, sp[r1]] = first[one]
            sp[r1] += 1
            r2 = rays[both]
            stack[r2, sp[r2]] = near[both]
            sp[r2] += 1
        live = live[sp[live] > 0]
    hit = torch.where(hit < 3.4e38, hit, torch.full_like(hit, -1.0))
    return trans, hit


# ---------------------------------------------------------------------------- all-pairs oracle
def trace_gaussians_reference(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, origins: Tensor, directions: Tensor,
                              normals: Tensor | None = None, *, alpha_min: float = 1 / 255, t_min: float = 0.01, cutoff: float = 0.9,
                              hit_alpha: float = 0.0, chunk: int | None = None) -> tuple[Tensor, Tensor | None]:  # fmt: skip
    """:func:`trace_gaussians` by brute force in float64: every ray against every Gaussian (no BVH), Sigma^-1 =
    R S^-2 R^T formed explicitly and the 3-sigma boxes from their eight corners. Same arguments and results (the
    Gaussians as in :func:`pack_gaussians`)."""
    f64 = torch.float64
    R = quat_to_rotmat(quats.to(f64))
    s = scales.to(f64)
    inv_sigma = R @ torch.diag_embed(1.0 / (s * s)) @ R.transpose(1, 2)  # [N, 3, 3]
    signs = torch.tensor([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=f64)  # [8, 3]
    corners = means.to(f64)[:, None, :] + torch.einsum("ck,nk,njk->ncj", signs, SIGMAS * s, R)  # [N, 8, 3]
    lo, hi = corners.amin(1), corners.amax(1)
    mu, op = means.to(f64), opacities.to(f64).reshape(-1)
    chunk = chunk or max(1, 4_000_000 // max(means.shape[0], 1))  # rays at once: [chunk, N, 3, 3] float64 stays < 300 MB
    out_t, out_h = [], []
    for k in range(0, origins.shape[0], chunk):
        o = origins[k : k + chunk].to(f64)[:, None, :]  # [r, 1, 3]
        d = directions[k : k + chunk].to(f64)[:, None, :]
        with torch.no_grad():
            inv = 1.0 / d
            a, b = (lo[None] - o) * inv, (hi[None] - o) * inv
            near = torch.nan_to_num(torch.minimum(a, b), nan=-torch.inf).amax(-1).clamp_min(0)
            far = torch.nan_to_num(torch.maximum(a, b), nan=torch.inf).amin(-1)
            take = (near <= far) & (op[None] >= alpha_min)  # [r, N]
            if normals is not None:
                take &= (normals.to(f64)[None] * d).sum(-1) <= 0
            diff = mu[None] - o  # [r, N, 3]
            sd = torch.einsum("nij,rj->rni", inv_sigma, d[:, 0])  # Sigma^-1 d
            num = (diff * sd).sum(-1)
            den = (d * sd).sum(-1)
            t = num / den
            take &= t >= t_min
            x = o + t[..., None] * d - mu[None]
            m2 = torch.einsum("rni,nij,rnj->rn", x, inv_sigma, x)
            alpha = op[None] * torch.exp(-0.5 * m2)
            factor = torch.where(take, 1 - alpha, torch.ones_like(alpha))
            trans = factor.prod(-1)
            if hit_alpha > 0:
                th = torch.where(take & (alpha >= hit_alpha), t, torch.full_like(t, torch.inf)).amin(-1)
                out_h.append(torch.where(torch.isfinite(th), th, torch.full_like(th, -1.0)))
            elif cutoff > 0:
                trans = torch.where(trans < cutoff, torch.zeros_like(trans), trans)
            out_t.append(trans)
    trans = torch.cat(out_t).float().to(origins.device)
    return trans, (torch.cat(out_h).float().to(origins.device) if hit_alpha > 0 else None)
