"""G-Shell's second extraction pass: cut a watertight template mesh along the zero set of a manifold SDF (mSDF).

The template comes from :func:`recon.geometry.tets.marching_tets` on the SDF, with the mSDF interpolated onto its
vertices by the same edge weights. Faces keep the part where the mSDF is positive; the zero isoline becomes the open
boundary. Each triangle is classified by the signs at its corners (8 cases: none kept -> dropped, all kept -> kept,
one kept -> one triangle, two kept -> a quad split in two); every edge whose ends disagree gets one new vertex at
the linear zero crossing, shared by the two faces on that edge, so the cut mesh stays conforming and manifold and
each boundary is a closed polyline. Boundary positions are differentiable with respect to the mSDF (through the
interpolation weight) and to the template vertices (so to the SDF and grid offsets behind them).

G-Shell also cuts marching tets' quads as units with a 16-case table; cutting their two triangles separately places
the same boundary vertices (the diagonal's crossing is shared), and only splits the kept region of an alternating
quad differently.
"""

from __future__ import annotations

import torch
from torch import Tensor


def msdf_cut(verts: Tensor, faces: Tensor, msdf: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor, Tensor]:
    """Keep the part of a triangle mesh where ``msdf`` > 0.

    Args:
        verts: [V, 3] template vertices (may require grad).
        faces: [F, 3] int64 triangles, consistently oriented (the cut keeps their orientation).
        msdf: [V] manifold SDF at the vertices (may require grad); > 0 keeps.
    Returns:
        (out_verts [V', 3], out_faces [F', 3] int64, on_boundary [V'] bool): unused template vertices are dropped;
        the vertices created on the zero isoline are flagged.
    """
    device = verts.device
    faces = faces.long()
    with torch.no_grad():
        keep = msdf > 0
        k = keep[faces]  # [F, 3]
        count = k.sum(-1)
        # Rotate each partly kept triangle (cyclically, so its orientation is unchanged) so that its odd corner is
        # first: the one kept corner (count 1) or the one dropped corner (count 2).
        odd = torch.where(count == 1, k.long().argmax(-1), (~k).long().argmax(-1))
        rot = (torch.arange(3, device=device)[None] + odd[:, None]) % 3
        partial = (count == 1) | (count == 2)
        tri = torch.gather(faces[partial], 1, rot[partial])  # [P, 3]: a = odd corner, b, c
        one_kept = count[partial] == 1
        # the two cut edges of each partial triangle: a-b and a-c
        ends = torch.stack([tri[:, [0, 1]], tri[:, [0, 2]]], 1)  # [P, 2, 2]
        ends_sorted = torch.sort(ends, -1).values
        n = verts.shape[0]
        key = ends_sorted[..., 0] * n + ends_sorted[..., 1]
        uniq, inv = torch.unique(key.reshape(-1), return_inverse=True)
        inv = inv.reshape(-1, 2)
        ea, eb = torch.div(uniq, n, rounding_mode="floor"), uniq % n

    # New boundary vertices at the mSDF zero crossing of each cut edge (differentiable).
    ma, mb = msdf[ea], msdf[eb]
    # The ends disagree in sign, so |ma - mb| > 0; its floor (sign kept) bounds dt/dm (= -mb / d^2, ma / d^2), which
    # for values near zero on both ends would otherwise overflow to inf and turn Adam's step into NaN.
    denom = ma - mb
    denom = torch.where(denom.abs() < eps, torch.where(denom < 0, -eps, eps).to(denom), denom)
    t = (ma / denom)[:, None]
    cut_verts = verts[ea] + t * (verts[eb] - verts[ea])

    with torch.no_grad():
        ab, ac = n + inv[:, 0], n + inv[:, 1]  # indices of the new vertices in the concatenated array
        a, b, c = tri.unbind(-1)
        # one kept corner a: triangle (a, ab, ac); two kept corners b, c: quad (ab, b, c, ac) in the same winding
        single = torch.stack([a, ab, ac], -1)[one_kept]
        quad = torch.stack([ab, b, c, ac], -1)[~one_kept]
        quad_tris = torch.cat([quad[:, [0, 1, 2]], quad[:, [0, 2, 3]]])
        out_faces = torch.cat([faces[count == 3], single, quad_tris])
        used = torch.zeros(n + len(uniq), dtype=torch.bool, device=device)
        used[out_faces.reshape(-1)] = True
        remap = torch.cumsum(used.long(), 0) - 1
        on_boundary = torch.zeros(n + len(uniq), dtype=torch.bool, device=device)
        on_boundary[n:] = True

    all_verts = torch.cat([verts, cut_verts])
    return all_verts[used], remap[out_faces], on_boundary[used]
