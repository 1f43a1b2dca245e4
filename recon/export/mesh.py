"""Textured PBR mesh export: GLB (glTF 2.0 metallic-roughness, primary) and OBJ + MTL (compatibility).

Texture conventions (glTF 2.0): base colour stored sRGB-encoded; ``metallicRoughnessTexture`` linear with
roughness in G and metallic in B (R = 255, no occlusion texture is emitted, so nothing gets darkened by a fake AO).
The GLB is written here directly (JSON chunk + binary chunk) rather than through trimesh, whose exporter has had
channel-packing bugs for metallic-roughness; the material is spelled out explicitly.

When ``material_fn`` also returns ``normal`` (world space), a tangent-space ``normalTexture`` is baked (linear,
``n * 0.5 + 0.5``, glTF / OpenGL convention: green = +Y = "up" in the image) and the GLB carries a ``TANGENT``
attribute (VEC4, w = handedness) so viewers use the exact frames the map was baked in instead of regenerating them;
the OBJ gets ``norm`` and ``map_Bump`` lines pointing at the same PNG.

    export_pbr_mesh("out/model.glb", verts, faces, material_fn, texture_size=1024, transform=T_data_from_train)
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from recon.color import linear_to_srgb
from recon.errors import ReconError
from recon.export.textures import BakedMesh, bake_pbr_textures

__all__ = ["export_pbr_mesh", "write_glb", "write_obj", "BakedMesh", "bake_pbr_textures", "pack_textures",
           "encode_normal_map", "decode_normal_map"]


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def encode_normal_map(ts: np.ndarray) -> np.ndarray:
    """Unit tangent-space normals [..., 3] -> 8-bit linear RGB ``round((n * 0.5 + 0.5) * 255)``."""
    return _u8(np.asarray(ts, np.float64) * 0.5 + 0.5)


def decode_normal_map(rgb: np.ndarray) -> np.ndarray:
    """8-bit normal-map texels [..., 3] -> unit tangent-space normals [..., 3] (float64)."""
    s = np.asarray(rgb, np.float64) / 255.0 * 2.0 - 1.0
    return s / np.linalg.norm(s, axis=-1, keepdims=True).clip(1e-12)


def pack_textures(baked: BakedMesh, normal: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """8-bit images: ``base_color`` [T, T, 3] sRGB; ``metallic_roughness`` [T, T, 3] (R=255, G=roughness, B=metallic);
    ``roughness`` and ``metallic`` [T, T] (single-channel maps for OBJ); ``normal`` [T, T, 3] linear tangent-space
    normal map, only when one was baked (``normal`` overrides ``baked.normal``, e.g. re-encoded for a transform)."""
    mr = np.stack([np.ones_like(baked.roughness), baked.roughness, baked.metallic], -1)
    out = {
        "base_color": _u8(linear_to_srgb(baked.base_color)),
        "metallic_roughness": _u8(mr),
        "roughness": _u8(baked.roughness),
        "metallic": _u8(baked.metallic),
    }
    normal = baked.normal if normal is None else normal
    if normal is not None:
        out["normal"] = encode_normal_map(normal)
    return out


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _baked_tangents(baked: BakedMesh) -> np.ndarray:
    if baked.tangents is not None:
        return baked.tangents
    from recon.export.textures import vertex_tangents

    return vertex_tangents(baked.verts, baked.faces, baked.uvs, baked.normals)


def _apply_transform(baked: BakedMesh, transform):
    """-> (verts [V, 3], unit normals [V, 3], unit tangents [V, 4], faces [F, 3], normal map or None) in the output
    frame, float32 (faces int64). ``baked`` is left untouched."""
    v, n = baked.verts.astype(np.float64), baked.normals.astype(np.float64)
    n = n / np.linalg.norm(n, axis=-1, keepdims=True).clip(1e-12)
    tan = _baked_tangents(baked).astype(np.float64)
    faces = baked.faces
    if transform is None:
        return v.astype(np.float32), n.astype(np.float32), tan.astype(np.float32), faces, baked.normal
    T = transform.detach().cpu().numpy() if isinstance(transform, torch.Tensor) else np.asarray(transform, np.float64)
    T = T.astype(np.float64)
    if T.shape != (4, 4):
        raise ReconError(f"export transform must be 4x4, got {T.shape}")
    M = T[:3, :3]
    bit = tan[:, 3:4] * np.cross(n, tan[:, :3])  # the bitangent the map was baked against, before the transform
    v = v @ M.T + T[:3, 3]
    n2 = n @ np.linalg.inv(M)  # inverse transpose for normals
    n2 /= np.linalg.norm(n2, axis=-1, keepdims=True).clip(1e-12)
    # tangents and bitangents are surface directions: they map with M; re-orthogonalize against the new normal and
    # recompute the handedness (a mirroring transform flips it)
    t2, b2 = tan[:, :3] @ M.T, bit @ M.T
    t2 -= n2 * (n2 * t2).sum(-1, keepdims=True)
    t2 /= np.linalg.norm(t2, axis=-1, keepdims=True).clip(1e-12)
    w2 = np.where((np.cross(n2, t2) * b2).sum(-1) < 0, -1.0, 1.0)
    if np.linalg.det(M) < 0:  # a mirroring transform flips the winding
        faces = faces[:, ::-1].copy()
    tan2 = np.concatenate([t2, w2[:, None]], -1)
    nmap = baked.normal
    G = M.T @ M
    if nmap is not None and not np.allclose(G, np.eye(3) * np.trace(G) / 3, rtol=0, atol=1e-6 * np.trace(G)):
        from recon.export.textures import reencode_normal_map

        nmap = reencode_normal_map(baked, M, n2, tan2)
    return v.astype(np.float32), n2.astype(np.float32), tan2.astype(np.float32), faces, nmap


def write_glb(path: str | Path, baked: BakedMesh, transform=None, name: str = "recon_mesh", double_sided: bool = False) -> Path:
    """Write a single-mesh, single-material GLB with embedded PNG textures.

    Args:
        path: output ``.glb``.
        baked: from ``bake_pbr_textures``.
        transform: optional 4x4 applied to positions (and normals, tangents) first, e.g. back to the input data's
            frame.
    """
    path = Path(path)
    verts, normals, tangents, faces, nmap = _apply_transform(baked, transform)
    tex = pack_textures(baked, nmap)
    images = [_png(tex["base_color"]), _png(tex["metallic_roughness"])]
    if "normal" in tex:
        images.append(_png(tex["normal"]))
    chunks: list[bytes] = []
    views, accessors = [], []
    offset = 0

    def add_view(data: bytes, target: int | None = None) -> int:
        nonlocal offset
        pad = (-offset) % 4
        if pad:
            chunks.append(b"\x00" * pad)
            offset += pad
        view = {"buffer": 0, "byteOffset": offset, "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        views.append(view)
        chunks.append(data)
        offset += len(data)
        return len(views) - 1

    def add_accessor(arr: np.ndarray, ctype: int, typ: str, target: int, minmax: bool = False) -> int:
        acc = {"bufferView": add_view(arr.tobytes(), target), "componentType": ctype, "count": int(arr.shape[0]),
               "type": typ}
        if minmax:
            acc["min"] = [float(x) for x in arr.min(0)]
            acc["max"] = [float(x) for x in arr.max(0)]
        accessors.append(acc)
        return len(accessors) - 1

    ARRAY, ELEMENT, FLOAT, UINT = 34962, 34963, 5126, 5125
    a_pos = add_accessor(np.ascontiguousarray(verts, np.float32), FLOAT, "VEC3", ARRAY, minmax=True)
    a_nrm = add_accessor(np.ascontiguousarray(normals, np.float32), FLOAT, "VEC3", ARRAY)
    attributes = {"POSITION": a_pos, "NORMAL": a_nrm}
    if "normal" in tex:
        attributes["TANGENT"] = add_accessor(np.ascontiguousarray(tangents, np.float32), FLOAT, "VEC4", ARRAY)
    attributes["TEXCOORD_0"] = add_accessor(np.ascontiguousarray(baked.uvs, np.float32), FLOAT, "VEC2", ARRAY)
    idx = np.ascontiguousarray(faces.reshape(-1), np.uint32)
    acc = {"bufferView": add_view(idx.tobytes(), ELEMENT), "componentType": UINT, "count": int(idx.size),
           "type": "SCALAR"}
    accessors.append(acc)
    a_idx = len(accessors) - 1
    img_views = [add_view(b) for b in images]
    pad = (-offset) % 4
    if pad:
        chunks.append(b"\x00" * pad)
        offset += pad
    material = {
        "name": f"{name}_material",
        "pbrMetallicRoughness": {
            "baseColorTexture": {"index": 0, "texCoord": 0},
            "metallicRoughnessTexture": {"index": 1, "texCoord": 0},
            "baseColorFactor": [1.0, 1.0, 1.0, 1.0],
            "metallicFactor": 1.0,
            "roughnessFactor": 1.0,
        },
        "doubleSided": bool(double_sided),  # open surfaces are seen from both sides
    }
    if "normal" in tex:
        material["normalTexture"] = {"index": 2, "texCoord": 0, "scale": 1.0}
    gltf = {
        "asset": {"version": "2.0", "generator": "recon"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": name}],
        "meshes": [{"name": name, "primitives": [{
            "attributes": attributes,
            "indices": a_idx, "material": 0, "mode": 4}]}],
        "materials": [material],
        "samplers": [{"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}],
        "images": [{"bufferView": v, "mimeType": "image/png"} for v in img_views],
        "textures": [{"sampler": 0, "source": i} for i in range(len(images))],
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": offset}],
    }
    js = json.dumps(gltf, separators=(",", ":")).encode("utf-8")
    js += b" " * ((-len(js)) % 4)
    binary = b"".join(chunks)
    total = 12 + 8 + len(js) + 8 + len(binary)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<4sII", b"glTF", 2, total))
        f.write(struct.pack("<I4s", len(js), b"JSON"))
        f.write(js)
        f.write(struct.pack("<I4s", len(binary), b"BIN\x00"))
        f.write(binary)
    return path


def write_obj(path: str | Path, baked: BakedMesh, transform=None, name: str = "recon_mesh") -> Path:
    """Write ``name.obj`` + ``.mtl`` + PNG textures: ``map_Kd`` (sRGB base colour), ``map_Pr`` / ``map_Pm`` (linear
    roughness / metallic, the PBR extension read by Blender, tinyobjloader and assimp) and, with a baked normal map,
    ``norm`` (PBR extension) plus ``map_Bump`` (what older readers look for) naming the same tangent-space PNG. OBJ
    texture coordinates have their origin at the bottom-left, hence ``1 - v``; OBJ carries no tangents, so readers
    regenerate them (MikkTSpace in Blender), which matches the baked frames up to interpolation details."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    verts, normals, _, faces, nmap = _apply_transform(baked, transform)
    tex = pack_textures(baked, nmap)
    stem = path.stem
    files = {"map_Kd": f"{stem}_basecolor.png", "map_Pr": f"{stem}_roughness.png", "map_Pm": f"{stem}_metallic.png"}
    Image.fromarray(tex["base_color"]).save(path.parent / files["map_Kd"])
    Image.fromarray(tex["roughness"]).save(path.parent / files["map_Pr"])
    Image.fromarray(tex["metallic"]).save(path.parent / files["map_Pm"])
    if "normal" in tex:
        files["norm"] = files["map_Bump"] = f"{stem}_normal.png"
        Image.fromarray(tex["normal"]).save(path.parent / files["norm"])
    mtl = path.with_suffix(".mtl")
    mtl.write_text(
        f"newmtl {name}\nKd 1.000 1.000 1.000\nKs 0.000 0.000 0.000\nPr 1.000\nPm 1.000\nd 1.0\nillum 2\n"
        + "".join(f"{k} {v}\n" for k, v in files.items())
    )
    buf = io.StringIO()
    buf.write(f"# recon PBR mesh\nmtllib {mtl.name}\no {name}\n")
    np.savetxt(buf, verts, fmt="v %.7g %.7g %.7g")
    uv = baked.uvs.astype(np.float64).copy()
    uv[:, 1] = 1.0 - uv[:, 1]
    np.savetxt(buf, uv, fmt="vt %.7g %.7g")
    np.savetxt(buf, normals, fmt="vn %.6f %.6f %.6f")
    buf.write(f"usemtl {name}\n")
    f1 = faces + 1
    np.savetxt(buf, np.repeat(f1, 3, axis=1), fmt="f %d/%d/%d %d/%d/%d %d/%d/%d")
    path.write_text(buf.getvalue())
    return path


def export_pbr_mesh(
    path: str | Path,
    verts,
    faces,
    material_fn,
    texture_size: int = 1024,
    transform=None,
    normals=None,
    padding: int = 4,
    double_sided: bool = False,
) -> Path:
    """Unwrap, bake and write a PBR mesh; the format follows the suffix (``.glb`` or ``.obj``).

    Args:
        path: output file.
        verts: [V, 3]; faces: [F, 3] (training frame).
        material_fn: ``points [P, 3] -> dict(base_color [P, 3] linear, roughness, metallic, normal [P, 3] optional)``;
            a returned ``normal`` (unit, world space, training frame) is baked into a tangent-space normal map.
        texture_size: texture resolution.
        transform: optional 4x4 mapping the training frame to the input data's frame.
        normals: optional [V, 3] vertex normals.
        double_sided: glTF ``doubleSided`` (open surfaces, whose back faces are seen).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".glb", ".obj"):
        raise ReconError(f"unsupported mesh format {suffix!r} (use .glb or .obj)", path)
    if len(faces) == 0:
        raise ReconError("cannot export an empty mesh", path)
    baked = bake_pbr_textures(verts, faces, material_fn, texture_size, padding, normals)
    return write_glb(path, baked, transform, double_sided=double_sided) if suffix == ".glb" else write_obj(path, baked, transform)
