"""Texture baking: xatlas UV unwrapping, UV-space rasterization, material queries per texel, seam dilation.

Tangent space (normal maps). Per-vertex tangents follow MikkTSpace closely enough for viewers that read the exported
``TANGENT`` attribute: per face, ``dP/du`` and the image-"up" direction ``-dP/dv`` (glTF UVs have v pointing down the
image) are solved from the UV derivatives, projected on each corner's vertex normal plane, normalized and
accumulated with corner-angle weights; the vertex tangent is Gram-Schmidt orthogonalized against the vertex normal
and ``w = +-1`` records whether ``w * (n x t)`` is the accumulated bitangent (mirrored charts get -1). Per texel /
pixel the frame is rebuilt the way a shader does: ``n = normalize(lerp(N))``, ``t = normalize(lerp(T) - n (n .
lerp(T)))``, ``b = sign(lerp(w)) * (n x t)``. Tangent-space normals use glTF's convention (+X = tangent = +u,
+Y = "up" in the image = OpenGL-style green, +Z = out of the surface), stored linear as ``n * 0.5 + 0.5``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from recon.render.mesh import interpolate, rasterize

MaterialFn = Callable[[Tensor], dict]


@dataclass
class BakedMesh:
    """A UV-unwrapped mesh with baked PBR textures (numpy, ready to write).

    Attributes:
        verts: [V, 3] float32 positions (vertices split at UV seams).
        faces: [F, 3] int64.
        uvs: [V, 2] float32, glTF convention (origin top-left, v down).
        normals: [V, 3] float32 unit vertex normals.
        vmapping: [V] int64 index of each vertex in the input mesh.
        base_color: [T, T, 3] float32 *linear* base colour.
        roughness, metallic: [T, T] float32 linear.
        mask: [T, T] bool, texels covered by a triangle (before dilation).
        tangents: [V, 4] float32 unit tangents (xyz) and handedness w = +-1 (see the module docstring).
        normal: [T, T, 3] float32 unit *tangent-space* normals, or None when ``material_fn`` returns no ``normal``.
    """

    verts: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    normals: np.ndarray
    vmapping: np.ndarray
    base_color: np.ndarray
    roughness: np.ndarray
    metallic: np.ndarray
    mask: np.ndarray
    tangents: np.ndarray | None = None
    normal: np.ndarray | None = None


def unwrap_uv(verts: np.ndarray, faces: np.ndarray, texture_size: int = 1024, padding: int = 4):
    """xatlas parametrization. Returns (vmapping [V'], faces [F, 3], uvs [V', 2] in [0, 1])."""
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(verts, np.float32), np.ascontiguousarray(faces, np.uint32))
    po = xatlas.PackOptions()
    po.resolution = int(texture_size)
    po.padding = int(padding)
    po.bilinear = True
    atlas.generate(xatlas.ChartOptions(), po)
    vmapping, indices, uvs = atlas[0]
    return vmapping.astype(np.int64), indices.astype(np.int64), uvs.astype(np.float32)


def _any_perpendicular(n: np.ndarray) -> np.ndarray:
    """Unit vectors perpendicular to unit vectors n [..., 3]."""
    a = np.where(np.abs(n[..., :1]) < 0.9, np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]))
    t = a - n * (n * a).sum(-1, keepdims=True)
    return t / np.linalg.norm(t, axis=-1, keepdims=True)


def _normalize_np(x: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    ln = np.linalg.norm(x, axis=-1, keepdims=True)
    ok = np.isfinite(ln) & (ln > 1e-12)
    return np.where(ok, x / np.where(ok, ln, 1.0), fallback)


def vertex_tangents(verts: np.ndarray, faces: np.ndarray, uvs: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Per-vertex tangents [V, 4] (unit xyz, w = +-1) from UV derivatives (glTF UVs: u right, v down the image).

    ``xyz`` follows +u, and ``w * (n x xyz)`` follows image "up" (-v), the frame glTF normal maps are authored in.
    Vertices whose faces all have degenerate UVs get an arbitrary tangent perpendicular to their normal.
    """
    v = np.asarray(verts, np.float64)
    f = np.asarray(faces, np.int64)
    w = np.asarray(uvs, np.float64)
    n = _normalize_np(np.asarray(normals, np.float64), np.array([0.0, 0.0, 1.0]))
    p = v[f]  # [F, 3, 3]
    q = w[f]  # [F, 3, 2]
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    d1, d2 = q[:, 1] - q[:, 0], q[:, 2] - q[:, 0]
    det = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]
    ok = np.abs(det) > 1e-20
    r = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)[:, None]
    dpdu = (e1 * d2[:, 1:2] - e2 * d1[:, 1:2]) * r
    up = -(e2 * d1[:, 0:1] - e1 * d2[:, 0:1]) * r  # -dP/dv
    t_acc = np.zeros_like(v)
    b_acc = np.zeros_like(v)
    for k in range(3):
        a, b = p[:, (k + 1) % 3] - p[:, k], p[:, (k + 2) % 3] - p[:, k]
        cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)).clip(1e-30)
        ang = np.where(ok, np.arccos(np.clip(cos, -1.0, 1.0)), 0.0)[:, None]
        nk = n[f[:, k]]
        for vec, acc in ((dpdu, t_acc), (up, b_acc)):
            proj = vec - nk * (nk * vec).sum(-1, keepdims=True)
            ln = np.linalg.norm(proj, axis=-1, keepdims=True)
            np.add.at(acc, f[:, k], np.where(ln > 1e-30, proj / ln.clip(1e-30), 0.0) * ang)
    t = t_acc - n * (n * t_acc).sum(-1, keepdims=True)
    t = _normalize_np(t, _any_perpendicular(n))
    sign = np.where((np.cross(n, t) * b_acc).sum(-1) < 0, -1.0, 1.0)
    return np.concatenate([t, sign[:, None]], -1).astype(np.float32)


def tangent_frames(normals: Tensor, tangents: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Orthonormal per-sample frames from *interpolated* vertex normals [..., 3] and tangents [..., 4].

    Returns (t, b, n), each [..., 3]: ``n = normalize(normals)``, ``t`` = tangent Gram-Schmidt against n,
    ``b = sign(w) * (n x t)``. Decode a tangent-space normal ``s`` as ``s.x t + s.y b + s.z n``.
    """
    n = torch.nn.functional.normalize(normals, dim=-1, eps=1e-12)
    t = tangents[..., :3] - n * (n * tangents[..., :3]).sum(-1, keepdim=True)
    ln = t.norm(dim=-1, keepdim=True)
    # degenerate (tangent along the normal): any perpendicular keeps the frame orthonormal
    alt = torch.where(n[..., :1].abs() < 0.9, n.new_tensor([1.0, 0.0, 0.0]), n.new_tensor([0.0, 1.0, 0.0]))
    alt = alt - n * (n * alt).sum(-1, keepdim=True)
    t = torch.where(ln > 1e-8, t / ln.clamp_min(1e-8), torch.nn.functional.normalize(alt, dim=-1, eps=1e-12))
    w = torch.where(tangents[..., 3:4] < 0, -torch.ones_like(ln), torch.ones_like(ln))
    b = w * torch.linalg.cross(n, t, dim=-1)
    return t, b, n


def world_to_tangent(world: Tensor, t: Tensor, b: Tensor, n: Tensor) -> Tensor:
    """Unit world normals [..., 3] -> unit tangent-space normals [..., 3] in the frames (t, b, n)."""
    s = torch.stack([(world * t).sum(-1), (world * b).sum(-1), (world * n).sum(-1)], -1)
    return torch.nn.functional.normalize(s, dim=-1, eps=1e-12)


def tangent_to_world(s: Tensor, t: Tensor, b: Tensor, n: Tensor) -> Tensor:
    """Tangent-space normals [..., 3] (e.g. ``rgb * 2 - 1`` of a normal map) -> unit world normals [..., 3]."""
    return torch.nn.functional.normalize(s[..., :1] * t + s[..., 1:2] * b + s[..., 2:3] * n, dim=-1, eps=1e-12)


def dilate(values: Tensor, mask: Tensor, iterations: int = 16) -> Tensor:
    """Grow texture content into empty texels (seams / gutters) so bilinear filtering and mip-maps do not bleed
    background. Each pass gives every empty texel with filled 8-neighbours their mean; texels still empty after
    ``iterations`` passes get the mean of all filled texels.

    Args:
        values: [T, T, C]; mask: [T, T] bool.
    """
    x = values.permute(2, 0, 1)[None] * mask[None, None]
    m = mask[None, None].to(values.dtype)
    k = torch.ones(1, 1, 3, 3, dtype=values.dtype, device=values.device)
    C = x.shape[1]
    for _ in range(iterations):
        s = torch.nn.functional.conv2d(x, k.expand(C, 1, 3, 3), padding=1, groups=C)
        n = torch.nn.functional.conv2d(m, k, padding=1)
        grow = (m == 0) & (n > 0)
        if not grow.any():
            break
        x = torch.where(grow, s / n.clamp_min(1), x)
        m = torch.where(grow, torch.ones_like(m), m)
    mean = (values * mask[..., None]).sum((0, 1)) / mask.sum().clamp_min(1)
    out = x[0].permute(1, 2, 0)
    return torch.where(m[0, 0][..., None] > 0, out, mean.expand_as(out))


def _uv_fragments(uvs: np.ndarray, faces: np.ndarray, size: int):
    """Rasterize in UV space: identity camera, K = I, so pixel coordinates are (u T, v T); row 0 = v 0 (top)."""
    uv_t = torch.from_numpy(np.asarray(uvs)).double()
    p = torch.cat([uv_t * size, torch.ones(len(uv_t), 1, dtype=torch.float64)], -1)
    eye4, eye3 = torch.eye(4, dtype=torch.float64)[None], torch.eye(3, dtype=torch.float64)[None]
    return rasterize(p, torch.from_numpy(np.asarray(faces, np.int64)), eye4, eye3, size, size)


def reencode_normal_map(baked: "BakedMesh", M: np.ndarray, normals: np.ndarray, tangents: np.ndarray,
                        iterations: int = 16) -> np.ndarray:
    """Tangent-space normal map for the mesh mapped by a linear ``M`` [3, 3] (vertex ``normals`` / ``tangents`` already
    transformed). Needed only when ``M`` is not a similarity: rotations, mirrors and uniform scales leave tangent-space
    values unchanged, but an anisotropic scale changes slopes, so each covered texel is decoded in the source frames,
    mapped with ``M^-T`` and re-encoded in the new frames (gutters re-dilated)."""
    T = baked.normal.shape[0]
    frags = _uv_fragments(baked.uvs, baked.faces, T)
    mask = frags.mask[0, ..., 0]

    def frames(n, t):
        ni = interpolate(torch.as_tensor(np.asarray(n, np.float64)), frags)[0, ..., 0, :][mask]
        ti = interpolate(torch.as_tensor(np.asarray(t, np.float64)), frags)[0, ..., 0, :][mask]
        return tangent_frames(ni, ti)

    src_tan = baked.tangents
    if src_tan is None:
        src_tan = vertex_tangents(baked.verts, baked.faces, baked.uvs, baked.normals)
    src = torch.as_tensor(baked.normal, dtype=torch.float64)[mask]
    world = tangent_to_world(src, *frames(baked.normals, src_tan))
    world = torch.nn.functional.normalize(world @ torch.as_tensor(np.linalg.inv(M), dtype=torch.float64), dim=-1)
    vals = torch.zeros(T, T, 3, dtype=torch.float64)
    vals[mask] = world_to_tangent(world, *frames(normals, tangents))
    vals = dilate(vals, mask, iterations=iterations)
    ln = vals.norm(dim=-1, keepdim=True)
    return torch.where(ln > 1e-6, vals / ln.clamp_min(1e-6), vals.new_tensor([0.0, 0.0, 1.0])).float().numpy()


def bake_pbr_textures(
    verts: np.ndarray | Tensor,
    faces: np.ndarray | Tensor,
    material_fn: MaterialFn,
    texture_size: int = 1024,
    padding: int = 4,
    normals: np.ndarray | Tensor | None = None,
    chunk: int = 1 << 16,
) -> BakedMesh:
    """Unwrap a mesh and bake a volumetric material into 2-D textures.

    Args:
        verts: [V, 3]; faces: [F, 3].
        material_fn: ``material_fn(points [P, 3] torch float32) -> {"base_color": [P, 3] linear, "roughness": [P, 1]
            or [P], "metallic": [P, 1] or [P], "normal": [P, 3] optional}``, queried at the world position of every
            covered texel centre. ``normal`` (unit, world space, pointing out of the surface) is baked into a
            tangent-space normal map (``BakedMesh.normal``).
        texture_size: T, square texture resolution.
        padding: gutter between charts, in texels (seams are dilated further).
        normals: [V, 3] vertex normals (area-weighted normals when None).
    """
    from recon.geometry.mesh_utils import vertex_normals

    V = torch.as_tensor(np.asarray(verts.detach().cpu() if isinstance(verts, Tensor) else verts), dtype=torch.float32)
    F = torch.as_tensor(np.asarray(faces.detach().cpu() if isinstance(faces, Tensor) else faces), dtype=torch.int64)
    N = vertex_normals(V, F) if normals is None else torch.tensor(np.array(normals, dtype=np.float32))
    N = torch.nn.functional.normalize(N, dim=-1, eps=1e-12)
    vmap, f_uv, uvs = unwrap_uv(V.numpy(), F.numpy(), texture_size, padding)
    vm = torch.from_numpy(vmap)
    tangents = vertex_tangents(V[vm].numpy(), f_uv, uvs, N[vm].numpy())
    T = texture_size
    frags = _uv_fragments(uvs, f_uv, T)
    mask = frags.mask[0, ..., 0]
    pos = interpolate(V[vm].double(), frags)[0, ..., 0, :][mask].float()
    bc, ro, me, nw = [], [], [], []
    with torch.no_grad():
        for s in range(0, pos.shape[0], chunk):
            out = material_fn(pos[s : s + chunk])
            bc.append(out["base_color"].reshape(-1, 3).float())
            ro.append(out["roughness"].reshape(-1, 1).float())
            me.append(out["metallic"].reshape(-1, 1).float())
            if out.get("normal") is not None:
                nw.append(out["normal"].reshape(-1, 3).float())
    if nw and len(nw) != len(bc):
        raise ValueError("material_fn returned 'normal' for some chunks of points but not for others")
    vals = torch.zeros(T, T, 8 if nw else 5)
    vals[mask, :5] = torch.cat([torch.cat(bc), torch.cat(ro), torch.cat(me)], -1).clamp(0, 1)
    if nw:
        # world normals -> tangent space in the per-texel frames a viewer rebuilds from the exported tangents
        n_i = interpolate(N[vm].double(), frags)[0, ..., 0, :][mask]
        t_i = interpolate(torch.from_numpy(tangents).double(), frags)[0, ..., 0, :][mask]
        t, b, n = tangent_frames(n_i, t_i)
        world = torch.cat(nw).double()
        ok = torch.isfinite(world).all(-1, keepdim=True) & (world.norm(dim=-1, keepdim=True) > 1e-8)
        world = torch.where(ok, torch.nn.functional.normalize(torch.nan_to_num(world), dim=-1, eps=1e-12), n)
        vals[mask, 5:] = world_to_tangent(world, t, b, n).float()
    vals = dilate(vals, mask, iterations=max(16, 2 * padding))
    normal_map = None
    if nw:
        ts = vals[..., 5:]
        ln = ts.norm(dim=-1, keepdim=True)
        normal_map = torch.where(ln > 1e-6, ts / ln.clamp_min(1e-6), ts.new_tensor([0.0, 0.0, 1.0])).numpy()
    return BakedMesh(
        verts=V[vm].numpy(),
        faces=f_uv,
        uvs=uvs,
        normals=N[vm].numpy(),
        vmapping=vmap,
        base_color=vals[..., :3].numpy(),
        roughness=vals[..., 3].numpy(),
        metallic=vals[..., 4].numpy(),
        mask=mask.numpy(),
        tangents=tangents,
        normal=normal_map,
    )
