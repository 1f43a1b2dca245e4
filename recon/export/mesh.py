"""Textured PBR mesh export: GLB (glTF 2.0 metallic-roughness, primary) and OBJ + MTL (compatibility).

Texture conventions (glTF 2.0): base colour stored sRGB-encoded; ``metallicRoughnessTexture`` linear with
roughness in G and metallic in B (R = 255, no occlusion texture is emitted, so nothing gets darkened by a fake AO).
The GLB is written here directly (JSON chunk + binary chunk) rather than through trimesh, whose exporter has had
channel-packing bugs for metallic-roughness; the material is spelled out explicitly.

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

from recon.errors import ReconError
from recon.export.textures import BakedMesh, bake_pbr_textures

__all__ = ["export_pbr_mesh", "write_glb", "write_obj", "BakedMesh", "bake_pbr_textures", "pack_textures"]


def _linear_to_srgb_np(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(np.maximum(x, 0.0031308), 1 / 2.4) - 0.055)


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def pack_textures(baked: BakedMesh) -> dict[str, np.ndarray]:
    """8-bit images: ``base_color`` [T, T, 3] sRGB; ``metallic_roughness`` [T, T, 3] (R=255, G=roughness, B=metallic);
    ``roughness`` and ``metallic`` [T, T] (single-channel maps for OBJ)."""
    mr = np.stack([np.ones_like(baked.roughness), baked.roughness, baked.metallic], -1)
    return {
        "base_color": _u8(_linear_to_srgb_np(baked.base_color)),
        "metallic_roughness": _u8(mr),
        "roughness": _u8(baked.roughness),
        "metallic": _u8(baked.metallic),
    }


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _apply_transform(baked: BakedMesh, transform) -> tuple[np.ndarray, np.ndarray]:
    v, n = baked.verts.astype(np.float64), baked.normals.astype(np.float64)
    if transform is None:
        return v.astype(np.float32), n.astype(np.float32)
    T = transform.detach().cpu().numpy() if isinstance(transform, torch.Tensor) else np.asarray(transform, np.float64)
    if T.shape != (4, 4):
        raise ReconError(f"export transform must be 4x4, got {T.shape}")
    v = v @ T[:3, :3].T + T[:3, 3]
    n = n @ np.linalg.inv(T[:3, :3])  # inverse transpose for normals
    n /= np.linalg.norm(n, axis=-1, keepdims=True).clip(1e-12)
    if np.linalg.det(T[:3, :3]) < 0:  # a mirroring transform flips the winding
        baked.faces = baked.faces[:, ::-1].copy()
    return v.astype(np.float32), n.astype(np.float32)


def write_glb(path: str | Path, baked: BakedMesh, transform=None, name: str = "recon_mesh") -> Path:
    """Write a single-mesh, single-material GLB with embedded PNG textures.

    Args:
        path: output ``.glb``.
        baked: from ``bake_pbr_textures``.
        transform: optional 4x4 applied to positions (and normals) first, e.g. back to the input data's frame.
    """
    path = Path(path)
    verts, normals = _apply_transform(baked, transform)
    tex = pack_textures(baked)
    images = [_png(tex["base_color"]), _png(tex["metallic_roughness"])]
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
    a_uv = add_accessor(np.ascontiguousarray(baked.uvs, np.float32), FLOAT, "VEC2", ARRAY)
    idx = np.ascontiguousarray(baked.faces.reshape(-1), np.uint32)
    acc = {"bufferView": add_view(idx.tobytes(), ELEMENT), "componentType": UINT, "count": int(idx.size),
           "type": "SCALAR"}
    accessors.append(acc)
    a_idx = len(accessors) - 1
    img_views = [add_view(b) for b in images]
    pad = (-offset) % 4
    if pad:
        chunks.append(b"\x00" * pad)
        offset += pad
    gltf = {
        "asset": {"version": "2.0", "generator": "recon"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": name}],
        "meshes": [{"name": name, "primitives": [{
            "attributes": {"POSITION": a_pos, "NORMAL": a_nrm, "TEXCOORD_0": a_uv},
            "indices": a_idx, "material": 0, "mode": 4}]}],
        "materials": [{
            "name": f"{name}_material",
            "pbrMetallicRoughness": {
                "baseColorTexture": {"index": 0, "texCoord": 0},
                "metallicRoughnessTexture": {"index": 1, "texCoord": 0},
                "baseColorFactor": [1.0, 1.0, 1.0, 1.0],
                "metallicFactor": 1.0,
                "roughnessFactor": 1.0,
            },
            "doubleSided": False,
        }],
        "samplers": [{"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}],
        "images": [{"bufferView": v, "mimeType": "image/png"} for v in img_views],
        "textures": [{"sampler": 0, "source": 0}, {"sampler": 0, "source": 1}],
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
    roughness / metallic, the PBR extension read by Blender, tinyobjloader and assimp). OBJ texture coordinates have
    their origin at the bottom-left, hence ``1 - v``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    verts, normals = _apply_transform(baked, transform)
    tex = pack_textures(baked)
    stem = path.stem
    files = {"map_Kd": f"{stem}_basecolor.png", "map_Pr": f"{stem}_roughness.png", "map_Pm": f"{stem}_metallic.png"}
    Image.fromarray(tex["base_color"]).save(path.parent / files["map_Kd"])
    Image.fromarray(tex["roughness"]).save(path.parent / files["map_Pr"])
    Image.fromarray(tex["metallic"]).save(path.parent / files["map_Pm"])
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
    f1 = baked.faces + 1
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
) -> Path:
    """Unwrap, bake and write a PBR mesh; the format follows the suffix (``.glb`` or ``.obj``).

    Args:
        path: output file.
        verts: [V, 3]; faces: [F, 3] (training frame).
        material_fn: ``points [P, 3] -> dict(base_color [P, 3] linear, roughness, metallic)``.
        texture_size: texture resolution.
        transform: optional 4x4 mapping the training frame to the input data's frame.
        normals: optional [V, 3] vertex normals.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".glb", ".obj"):
        raise ReconError(f"unsupported mesh format {suffix!r} (use .glb or .obj)", path)
    if len(faces) == 0:
        raise ReconError("cannot export an empty mesh", path)
    baked = bake_pbr_textures(verts, faces, material_fn, texture_size, padding, normals)
    return write_glb(path, baked, transform) if suffix == ".glb" else write_obj(path, baked, transform)
