"""Tetrahedral grids and differentiable marching tetrahedra (the extraction step of DMTet / G-Shell).

``marching_tets`` places every surface vertex at the linear zero crossing of the SDF along a grid edge, so the
vertex positions are differentiable w.r.t. both the SDF values and the (possibly deformed) grid vertices; extra
per-vertex fields (e.g. G-Shell's manifold SDF) are interpolated with the same weights.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

# the 6 edges of a tetrahedron (local vertex pairs)
_TET_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


def _build_table() -> list[list[tuple[int, int, int]]]:
    """For each of the 16 inside/outside patterns: triangles as triples of local edge indices.

    Orientation is not encoded here; ``marching_tets`` orients every triangle outwards at run time.
    """
    edge_of = {frozenset(e): i for i, e in enumerate(_TET_EDGES)}
    table = []
    for case in range(16):
        inside = [v for v in range(4) if case >> v & 1]
        outside = [v for v in range(4) if not case >> v & 1]
        if len(inside) in (0, 4):
            table.append([])
        elif len(inside) in (1, 3):
            lone = inside[0] if len(inside) == 1 else outside[0]
            others = [v for v in range(4) if v != lone]
            table.append([tuple(edge_of[frozenset((lone, o))] for o in others)])
        else:
            a, b = inside
            c, d = outside
            # quad a-c, a-d, b-d, b-c (consecutive quad corners share a tet vertex)
            q = [edge_of[frozenset(p)] for p in ((a, c), (a, d), (b, d), (b, c))]
            table.append([(q[0], q[1], q[2]), (q[0], q[2], q[3])])
    return table


_TABLE = _build_table()


def tet_grid(resolution: int, bbox_min=(-1.0, -1.0, -1.0), bbox_max=(1.0, 1.0, 1.0), device=None):
    """Regular tetrahedral grid: every cube of a (res)^3 lattice split into 6 tets along its main diagonal
    (Kuhn / Freudenthal subdivision, conforming across cube faces).

    Args:
        resolution: number of cubes per axis.
        bbox_min, bbox_max: world-space extent.
    Returns:
        (verts [(res+1)^3, 3] float32, tets [6 res^3, 4] int64).
    """
    r = resolution
    lo = torch.tensor(bbox_min, dtype=torch.float32, device=device)
    hi = torch.tensor(bbox_max, dtype=torch.float32, device=device)
    ax = torch.arange(r + 1, device=device)
    g = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    verts = lo + g.float() / r * (hi - lo)

    def vid(i, j, k):
        return (i * (r + 1) + j) * (r + 1) + k

    c = torch.stack(torch.meshgrid(*(torch.arange(r, device=device),) * 3, indexing="ij"), -1).reshape(-1, 3)
    tets = []
    for perm in itertools.permutations(range(3)):
        p = c.clone()
        path = [vid(*p.unbind(-1))]
        for axis in perm:
            p = p.clone()
            p[:, axis] += 1
            path.append(vid(*p.unbind(-1)))
        tets.append(torch.stack(path, -1))
    return verts, torch.cat(tets).long()


def marching_tets(
    verts: Tensor, tets: Tensor, sdf: Tensor, vertex_attrs: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Differentiable marching tetrahedra.

    Args:
        verts: [N, 3] grid vertex positions (may be deformed and require grad).
        tets: [T, 4] vertex indices.
        sdf: [N] signed distance (negative inside), may require grad.
        vertex_attrs: optional [N, D] extra fields interpolated like the positions (e.g. a manifold SDF).
    Returns:
        (mesh_verts [V, 3], faces [F, 3] int64 oriented outwards, mesh_attrs [V, D] or None).
    """
    tets = tets.long()
    device = verts.device
    with torch.no_grad():
        inside = sdf < 0
        occ = inside[tets]  # [T, 4]
        cnt = occ.sum(-1)
        valid = (cnt > 0) & (cnt < 4)
        tv = tets[valid]
        occ = occ[valid]
        edges = tv[:, torch.tensor(_TET_EDGES, device=device)]  # [Tv, 6, 2]
        edges = torch.sort(edges, -1).values
        crossing = inside[edges[..., 0]] != inside[edges[..., 1]]
        N = verts.shape[0]
        key = edges[..., 0] * N + edges[..., 1]
        uniq, inv = torch.unique(key[crossing], return_inverse=True)
        edge_map = torch.full(crossing.shape, -1, dtype=torch.long, device=device)
        edge_map[crossing] = inv
        ua, ub = torch.div(uniq, N, rounding_mode="floor"), uniq % N
        case = (occ.long() * torch.tensor([1, 2, 4, 8], device=device)).sum(-1)
        # table as a tensor [16, 2, 3] of local edges, -1 = no triangle
        tab = torch.full((16, 2, 3), -1, dtype=torch.long, device=device)
        for i, tris in enumerate(_TABLE):
            for j, t in enumerate(tris):
                tab[i, j] = torch.tensor(t)
        local = tab[case]  # [Tv, 2, 3]
        has = local[..., 0] >= 0
        tet_idx = torch.arange(tv.shape[0], device=device)[:, None].expand(-1, 2)[has]
        local = local[has]  # [F, 3]
        faces = edge_map[tet_idx[:, None], local]  # [F, 3]

    sa, sb = sdf[ua], sdf[ub]
    denom = sa - sb
    # floor |sa - sb| (sign kept): near-equal values would give the weight an overflowing gradient
    denom = torch.where(denom.abs() < 1e-6, torch.where(denom < 0, -1e-6, 1e-6).to(denom), denom)
    t = (sa / denom)[:, None]  # zero crossing along a -> b
    mesh_verts = verts[ua] + t * (verts[ub] - verts[ua])
    attrs = None
    if vertex_attrs is not None:
        attrs = vertex_attrs[ua] + t * (vertex_attrs[ub] - vertex_attrs[ua])

    with torch.no_grad():
        # orient outwards: the normal must point from the tet's inside vertices to its outside vertices
        p = mesh_verts[faces]
        n = torch.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], dim=-1)
        tv_f, occ_f = tv[tet_idx], occ[tet_idx].float()
        vp = verts[tv_f]  # [F, 4, 3]
        c_in = (vp * occ_f[..., None]).sum(1) / occ_f.sum(1, keepdim=True)
        c_out = (vp * (1 - occ_f)[..., None]).sum(1) / (1 - occ_f).sum(1, keepdim=True)
        flip = (n * (c_out - c_in)).sum(-1) < 0
        faces = torch.where(flip[:, None], faces[:, [0, 2, 1]], faces)
    return mesh_verts, faces, attrs
