"""Deferred PBR rendering of triangle meshes: rasterize -> interpolate -> material -> split-sum shading.

Used by the built-in PBR demo scene (ground truth), by export round-trip checks and by mesh-based methods that
want a ready-made forward pass.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from recon.geometry.mesh_utils import vertex_normals
from recon.render.envmap import SplitSumEnv
from recon.render.mesh import antialias, interpolate, mesh_topology, rasterize
from recon.render.pbr import shade_split_sum

MaterialFn = Callable[[dict], dict]


def render_pbr_mesh(
    verts: Tensor,
    faces: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    material: MaterialFn,
    light: SplitSumEnv,
    normals: Tensor | None = None,
    uvs: Tensor | None = None,
    uv_faces: Tensor | None = None,
    supersample: int = 1,
    tangents: Tensor | None = None,
) -> dict[str, Tensor]:
    """Render a PBR mesh under an environment light.

    Args:
        verts: [V, 3]; faces: [F, 3].
        viewmats: [C, 4, 4] world-to-camera; Ks: [C, 3, 3].
        material: callable receiving ``{"position": [P, 3], "uv": [P, 2] (if uvs given), "normal": [P, 3]}`` for the
            covered pixels and returning ``{"base_color": [P, 3] linear, "roughness": [P, 1], "metallic": [P, 1]}``.
            With ``tangents``, the query also holds ``"tangent"`` [P, 4] and ``"vertex_normal"`` [P, 3] (interpolated,
            *not* flipped towards the viewer) for decoding normal maps. An optional returned ``"normal"`` [P, 3]
            (world space, outward) replaces the interpolated normal for shading.
        light: pre-integrated environment (``prepare_split_sum``).
        normals: [V, 3] shading normals (area-weighted vertex normals when None).
        uvs, uv_faces: optional texture coordinates [T, 2] and their faces [F, 3] (``faces`` when None).
        supersample: render at this factor and box-filter down (plus edge antialiasing).
        tangents: optional [V, 4] vertex tangents (xyz, handedness w), indexed like ``uvs``.
    Returns:
        dict of [C, H, W, *]: ``rgb`` (linear, premultiplied by coverage), ``alpha`` [.., 1], ``albedo`` (linear base
        colour), ``roughness``, ``metallic``, ``normal`` (world, unit), ``depth`` [.., 1] (0 = background).
    """
    s = supersample
    Ks_s = Ks.clone()
    Ks_s[:, :2] *= s
    normals = vertex_normals(verts, faces) if normals is None else normals
    frags = rasterize(verts, faces, viewmats, Ks_s, width * s, height * s)
    mask = frags.mask[..., 0]
    n0 = torch.nn.functional.normalize(interpolate(normals, frags)[..., 0, :], dim=-1, eps=1e-12)
    pos = interpolate(verts, frags)[..., 0, :]
    cam_pos = -torch.einsum("cji,cj->ci", viewmats[:, :3, :3], viewmats[:, :3, 3])  # [C, 3]
    view = torch.nn.functional.normalize(cam_pos[:, None, None] - pos, dim=-1)
    # shade with normals facing the viewer (thin or open surfaces seen from behind)
    back = (n0 * view).sum(-1, keepdim=True) < 0
    n = torch.where(back, -n0, n0)
    query = {"position": pos[mask], "normal": n[mask]}
    if uvs is not None:
        query["uv"] = interpolate(uvs, frags, uv_faces if uv_faces is not None else faces)[..., 0, :][mask]
    if tangents is not None:
        query["tangent"] = interpolate(tangents, frags, uv_faces if uv_faces is not None else faces)[..., 0, :][mask]
        query["vertex_normal"] = n0[mask]
    mat = material(query)
    if mat.get("normal") is not None:  # e.g. from a normal map: outward normal, flipped like the interpolated one
        ns = torch.nn.functional.normalize(mat["normal"].to(n.dtype), dim=-1, eps=1e-12)
        n = n.clone()
        n[mask] = torch.where(back[mask], -ns, ns)
    out_sel = shade_split_sum(n[mask], view[mask], mat["base_color"], mat["roughness"], mat["metallic"], light)
    C, H, W = mask.shape

    def scatter(x: Tensor) -> Tensor:
        img = torch.zeros(C, H, W, x.shape[-1], dtype=x.dtype, device=x.device)
        img[mask] = x
        return img

    buffers = {
        "rgb": scatter(out_sel["rgb"]),
        "alpha": mask[..., None].to(verts.dtype),
        "albedo": scatter(mat["base_color"]),
        "roughness": scatter(mat["roughness"]),
        "metallic": scatter(mat["metallic"]),
        "normal": torch.where(mask[..., None], n, torch.zeros_like(n)),
        "depth": frags.depth[..., 0:1],
    }
    # antialias every buffer at once (rgb is premultiplied by coverage since the background is 0)
    keys = list(buffers)
    stacked = torch.cat([buffers[k] for k in keys], -1)
    stacked = antialias(stacked, frags, mesh_topology(faces))
    if s > 1:
        stacked = torch.nn.functional.avg_pool2d(stacked.permute(0, 3, 1, 2), s).permute(0, 2, 3, 1)
    out, i = {}, 0
    for k in keys:
        w = buffers[k].shape[-1]
        out[k] = stacked[..., i : i + w]
        i += w
    # geometry buffers are not premultiplied quantities: un-premultiply by coverage where partially covered
    a = out["alpha"].clamp_min(1e-6)
    for k in ("albedo", "roughness", "metallic", "depth"):
        out[k] = torch.where(out["alpha"] > 0, out[k] / a, out[k])
    out["normal"] = torch.nn.functional.normalize(out["normal"], dim=-1, eps=1e-12)
    return out
