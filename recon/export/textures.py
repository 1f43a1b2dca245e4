"""Texture baking: xatlas UV unwrapping, UV-space rasterization, material queries per texel, seam dilation."""

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
            or [P], "metallic": [P, 1] or [P]}``, queried at the world position of every covered texel centre.
        texture_size: T, square texture resolution.
        padding: gutter between charts, in texels (seams are dilated further).
        normals: [V, 3] vertex normals (area-weighted normals when None).
    """
    from recon.geometry.mesh_utils import vertex_normals

    V = torch.as_tensor(np.asarray(verts.detach().cpu() if isinstance(verts, Tensor) else verts), dtype=torch.float32)
    F = torch.as_tensor(np.asarray(faces.detach().cpu() if isinstance(faces, Tensor) else faces), dtype=torch.int64)
    N = vertex_normals(V, F) if normals is None else torch.tensor(np.array(normals, dtype=np.float32))
    vmap, f_uv, uvs = unwrap_uv(V.numpy(), F.numpy(), texture_size, padding)
    T = texture_size
    # rasterize in UV space: identity camera, K = I, so pixel coordinates are (u T, v T); row 0 = v 0 (top)
    uv_t = torch.from_numpy(uvs).double()
    p = torch.cat([uv_t * T, torch.ones(len(uvs), 1, dtype=torch.float64)], -1)
    eye4, eye3 = torch.eye(4, dtype=torch.float64)[None], torch.eye(3, dtype=torch.float64)[None]
    fu = torch.from_numpy(f_uv)
    frags = rasterize(p, fu, eye4, eye3, T, T)
    mask = frags.mask[0, ..., 0]
    pos = interpolate(V[torch.from_numpy(vmap)].double(), frags)[0, ..., 0, :][mask].float()
    bc, ro, me = [], [], []
    with torch.no_grad():
        for s in range(0, pos.shape[0], chunk):
            out = material_fn(pos[s : s + chunk])
            bc.append(out["base_color"].reshape(-1, 3).float())
            ro.append(out["roughness"].reshape(-1, 1).float())
            me.append(out["metallic"].reshape(-1, 1).float())
    vals = torch.zeros(T, T, 5)
    vals[mask] = torch.cat([torch.cat(bc), torch.cat(ro), torch.cat(me)], -1).clamp(0, 1)
    vals = dilate(vals, mask, iterations=max(16, 2 * padding))
    return BakedMesh(
        verts=V[torch.from_numpy(vmap)].numpy(),
        faces=f_uv,
        uvs=uvs,
        normals=N[torch.from_numpy(vmap)].numpy(),
        vmapping=vmap,
        base_color=vals[..., :3].numpy(),
        roughness=vals[..., 3].numpy(),
        metallic=vals[..., 4].numpy(),
        mask=mask.numpy(),
    )
