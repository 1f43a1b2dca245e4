"""Textured PBR export: glTF validity, texture channel packing, OBJ+MTL, and a render round trip."""

from __future__ import annotations

import io
import json
import math
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from recon.demo.pbr_scene import orbit_cameras, procedural_envmap, scene_material, scene_meshes
from recon.errors import ReconError
from recon.export.mesh import export_pbr_mesh
from recon.render.envmap import prepare_split_sum
from recon.render.mesh_shading import render_pbr_mesh
from recon.render.mesh_texture import sample_texture
from recon.render.pbr import linear_to_srgb, srgb_to_linear


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    mesh = scene_meshes(3)
    glb = export_pbr_mesh(out / "scene.glb", mesh.vertices, mesh.faces, scene_material, texture_size=1024,
                          normals=mesh.vertex_normals)
    return mesh, glb


def _load_glb(path):
    """Independent reader (trimesh) -> verts, faces, uvs, normals, base colour (sRGB 8-bit), MR image."""
    scene = trimesh.load(path, process=False)
    (geom,) = scene.geometry.values()
    mat = geom.visual.material
    bc = np.asarray(mat.baseColorTexture.convert("RGB"))
    mr = np.asarray(mat.metallicRoughnessTexture.convert("RGB"))
    uv = np.asarray(geom.visual.uv, np.float64).copy()
    uv[:, 1] = 1.0 - uv[:, 1]  # trimesh stores OBJ-style UVs (origin bottom-left); back to glTF's top-left
    return geom, uv, bc, mr


def test_glb_passes_khronos_validator(exported):
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not available")
    from recon.export.gltf_validator import validate_gltf

    try:
        report = validate_gltf(exported[1])
    except ReconError as e:  # offline machine: the validator cannot be installed
        pytest.skip(str(e))
    assert report["issues"]["numErrors"] == 0, report["issues"]["messages"][:5]


def test_glb_channel_packing(exported):
    mesh, glb = exported
    geom, uv, bc, mr = _load_glb(glb)
    assert geom.faces.shape[0] == mesh.faces.shape[0]
    # ground-truth material at triangle centroids vs the texel at the centroid's UV: G = roughness, B = metallic
    pts = torch.tensor(geom.vertices[geom.faces].mean(1), dtype=torch.float32)
    gt = scene_material(pts)
    H, W = mr.shape[:2]
    px = np.clip((uv[geom.faces].mean(1) * [W, H]).astype(int), 0, [W - 1, H - 1])
    rough = mr[px[:, 1], px[:, 0], 1] / 255.0
    metal = mr[px[:, 1], px[:, 0], 2] / 255.0
    assert np.median(np.abs(rough - gt["roughness"][:, 0].numpy())) < 0.03
    assert np.median(np.abs(metal - gt["metallic"][:, 0].numpy())) < 0.03
    assert (mr[..., 0] == 255).all()  # no fake occlusion
    # base colour is sRGB-encoded
    lin = srgb_to_linear(torch.tensor(bc[px[:, 1], px[:, 0]] / 255.0)).numpy()
    assert np.median(np.abs(lin - gt["base_color"].numpy())) < 0.03


def test_round_trip_render_psnr(exported):
    """Render the source (material at exact surface points) and the re-loaded GLB (textures via UV) under the same
    light; they must agree to >= 30 dB PSNR."""
    mesh, glb = exported
    geom, uv, bc, mr = _load_glb(glb)
    light = prepare_split_sum(procedural_envmap(64))
    W = H = 96
    f = 0.5 * W / math.tan(math.radians(40) / 2)
    vm = torch.tensor(orbit_cameras(4), dtype=torch.float32)
    K = torch.tensor([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]]).expand(4, 3, 3)
    src = render_pbr_mesh(torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces), vm, K, W, H,
                          lambda q: scene_material(q["position"]), light,
                          normals=torch.tensor(mesh.vertex_normals, dtype=torch.float32))
    bc_t = srgb_to_linear(torch.tensor(bc / 255.0, dtype=torch.float32))
    mr_t = torch.tensor(mr / 255.0, dtype=torch.float32)

    def textured(q):
        m = sample_texture(mr_t, q["uv"], wrap=False)
        return {"base_color": sample_texture(bc_t, q["uv"], wrap=False), "roughness": m[:, 1:2], "metallic": m[:, 2:3]}

    rt = render_pbr_mesh(torch.tensor(geom.vertices, dtype=torch.float32), torch.tensor(geom.faces), vm, K, W, H,
                         textured, light, normals=torch.tensor(np.asarray(geom.vertex_normals), dtype=torch.float32),
                         uvs=torch.tensor(uv, dtype=torch.float32))
    a, b = linear_to_srgb(src["rgb"]), linear_to_srgb(rt["rgb"])
    mse = ((a - b) ** 2).mean().item()
    psnr = 10 * math.log10(1.0 / mse)
    print(f"round-trip PSNR {psnr:.2f} dB")
    assert psnr >= 30.0, psnr


def test_obj_mtl_and_transform(tmp_path):
    mesh = trimesh.creation.icosphere(2)
    T = np.diag([2.0, 2.0, 2.0, 1.0])
    T[:3, 3] = [1.0, -2.0, 0.5]

    def material(p):
        return {"base_color": (p * 0 + 0.5), "roughness": torch.full((len(p), 1), 0.25),
                "metallic": torch.full((len(p), 1), 1.0)}

    obj = export_pbr_mesh(tmp_path / "m.obj", mesh.vertices, mesh.faces, material, texture_size=128, transform=T)
    mtl = (tmp_path / "m.mtl").read_text()
    for key in ("map_Kd m_basecolor.png", "map_Pr m_roughness.png", "map_Pm m_metallic.png"):
        assert key in mtl
    from PIL import Image

    assert abs(np.asarray(Image.open(tmp_path / "m_roughness.png")).mean() / 255 - 0.25) < 0.01
    back = trimesh.load(obj, process=False, force="mesh")
    c = back.vertices.mean(0)
    assert np.allclose(c, [1.0, -2.0, 0.5], atol=0.05)
    assert np.allclose(np.linalg.norm(back.vertices - [1.0, -2.0, 0.5], axis=1), 2.0, atol=1e-4)
    glb = export_pbr_mesh(tmp_path / "m.glb", mesh.vertices, mesh.faces, material, texture_size=128, transform=T)
    g, *_ = _load_glb(glb)
    assert np.allclose(np.linalg.norm(g.vertices - [1.0, -2.0, 0.5], axis=1), 2.0, atol=1e-4)
    with pytest.raises(ReconError):
        export_pbr_mesh(tmp_path / "m.ply", mesh.vertices, mesh.faces, material)


# --------------------------------------------------------------------------------------------------------------------
# tangent-space normal maps


def test_open_surfaces_export_double_sided(tmp_path):
    """An open mesh (a hemisphere) gets glTF doubleSided, so viewers draw its inside; the default stays one-sided."""
    sphere = trimesh.creation.icosphere(2)
    keep = sphere.triangles_center[:, 2] > 0
    bowl = trimesh.Trimesh(sphere.vertices, sphere.faces[keep], process=False)

    def material(p):
        return {"base_color": p * 0 + 0.5, "roughness": torch.full((len(p), 1), 0.5), "metallic": torch.zeros(len(p), 1)}

    for flag in (True, False):
        path = export_pbr_mesh(tmp_path / f"bowl_{flag}.glb", bowl.vertices, bowl.faces, material, texture_size=64, double_sided=flag)
        assert _read_glb(path)[0]["materials"][0]["doubleSided"] is flag


def _read_glb(path):
    """Minimal independent GLB reader -> (json, attributes {name: array}, faces [F, 3], material, image(tex_index))."""
    data = Path(path).read_bytes()
    magic, version, total = struct.unpack_from("<4sII", data, 0)
    assert magic == b"glTF" and version == 2 and total == len(data)
    jlen, jtype = struct.unpack_from("<I4s", data, 12)
    assert jtype == b"JSON"
    js = json.loads(data[20 : 20 + jlen])
    blen, btype = struct.unpack_from("<I4s", data, 20 + jlen)
    assert btype == b"BIN\x00"
    binary = data[28 + jlen : 28 + jlen + blen]

    def view(i):
        bv = js["bufferViews"][i]
        o = bv.get("byteOffset", 0)
        return binary[o : o + bv["byteLength"]]

    def accessor(i):
        a = js["accessors"][i]
        dtype = {5126: np.float32, 5125: np.uint32}[a["componentType"]]
        ncomp = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[a["type"]]
        arr = np.frombuffer(view(a["bufferView"]), dtype, count=a["count"] * ncomp, offset=a.get("byteOffset", 0))
        return arr.reshape(a["count"], ncomp)

    prim = js["meshes"][0]["primitives"][0]
    attrs = {k: accessor(v).astype(np.float64) for k, v in prim["attributes"].items()}
    faces = accessor(prim["indices"]).reshape(-1, 3).astype(np.int64)

    def image(tex_index):
        src = js["textures"][tex_index]["source"]
        return np.asarray(Image.open(io.BytesIO(view(js["images"][src]["bufferView"]))).convert("RGB"))

    return js, attrs, faces, js["materials"][prim["material"]], image


def _decode_world(nmap_u8, uv, vn, tan):
    """glTF-spec decode, written independently of the exporter: bilinear texel -> s = 2 c - 1; per sample
    n = normalize(N), t = Gram-Schmidt(T.xyz, n), b = sign(T.w) (n x t); world = normalize(s.x t + s.y b + s.z n)."""
    tex = torch.tensor(nmap_u8 / 255.0, dtype=torch.float64)
    s = sample_texture(tex, torch.tensor(uv, dtype=torch.float64), wrap=False).numpy() * 2.0 - 1.0
    n = vn / np.linalg.norm(vn, axis=-1, keepdims=True)
    t = tan[:, :3] - n * (n * tan[:, :3]).sum(-1, keepdims=True)
    t /= np.linalg.norm(t, axis=-1, keepdims=True)
    b = np.sign(tan[:, 3:4]) * np.cross(n, t)
    w = s[:, :1] * t + s[:, 1:2] * b + s[:, 2:3] * n
    return w / np.linalg.norm(w, axis=-1, keepdims=True)


def _interior_samples(attrs, faces, per_face=3, seed=0):
    """Random points well inside every triangle (barycentrics >= 0.1): dict of interpolated vertex attributes."""
    rng = np.random.default_rng(seed)
    bary = rng.dirichlet([3.0, 3.0, 3.0], size=(len(faces), per_face))
    bary = 0.1 + 0.7 * bary  # sums to 1, every weight >= 0.1
    return {k: np.einsum("fpk,fkd->fpd", bary, v[faces]).reshape(-1, v.shape[1]) for k, v in attrs.items()}


def _constant_material(normal_fn=None):
    def material(p):
        P = len(p)
        out = {"base_color": torch.full((P, 3), 0.5), "roughness": torch.full((P, 1), 0.5),
               "metallic": torch.zeros(P, 1)}
        if normal_fn is not None:
            out["normal"] = normal_fn(p)
        return out

    return material


def _angle_deg(a, b):
    return np.degrees(np.arccos(np.clip((a * b).sum(-1), -1.0, 1.0)))


def _bumpy(p: torch.Tensor) -> torch.Tensor:
    """Procedural outward normals for the demo scene: radial from the nearest object centre, perturbed."""
    c = torch.tensor([[-0.55, -0.35, 0.0], [0.6, -0.3, -0.05], [0.05, 0.6, 0.05], [0.0, 0.0, -0.75]], dtype=p.dtype)
    r = torch.tensor([0.45, 0.4, 0.42, 0.35], dtype=p.dtype)
    k = ((p[:, None] - c).norm(dim=-1) / r).argmin(-1)
    radial = torch.nn.functional.normalize(p - c[k], dim=-1)
    wob = 0.3 * torch.stack([torch.sin(9 * p[:, 1] + 1), torch.sin(9 * p[:, 2]), torch.sin(9 * p[:, 0] + 2)], -1)
    return torch.nn.functional.normalize(radial + wob, dim=-1)


def _bumpy_material(p):
    return {**scene_material(p), "normal": _bumpy(p)}


@pytest.fixture(scope="module")
def exported_normals(tmp_path_factory):
    out = tmp_path_factory.mktemp("export_normals")
    mesh = scene_meshes(3)
    glb = export_pbr_mesh(out / "bumpy.glb", mesh.vertices, mesh.faces, _bumpy_material, texture_size=512,
                          normals=mesh.vertex_normals)
    return mesh, glb


# a similarity with a mirror (tangent-space values unchanged, handedness flips) and an anisotropic mirror (the map
# has to be re-encoded: slopes change)
_MIRROR = np.array([[0.0, -2.0, 0.0, 0.3], [2.0, 0.0, 0.0, -1.0], [0.0, 0.0, -2.0, 2.0], [0.0, 0.0, 0.0, 1.0]])
_SHEAR = np.array([[0.0, -2.0, 0.0, 0.3], [1.0, 0.0, 0.0, -1.0], [0.0, 0.0, -1.5, 2.0], [0.0, 0.0, 0.0, 1.0]])


@pytest.mark.parametrize("transform", [None, _MIRROR, _SHEAR], ids=["identity", "mirror", "anisotropic-mirror"])
def test_normal_map_flat_quad_tilted(tmp_path, transform):
    """A flat quad with a constant tilted normal: every covered texel holds the same tangent-space value, and
    decoding through the exported TANGENT attribute gives back the (transformed) world normal."""
    xs = np.linspace(0.0, 1.0, 5)
    gx, gy = np.meshgrid(xs, xs, indexing="xy")
    verts = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], -1)
    i = np.arange(4)[:, None] * 5 + np.arange(4)[None]
    faces = np.concatenate([np.stack([i, i + 1, i + 6], -1).reshape(-1, 3),
                            np.stack([i, i + 6, i + 5], -1).reshape(-1, 3)])
    g = np.array([0.35, -0.25, 1.0]) / np.linalg.norm([0.35, -0.25, 1.0])
    material = _constant_material(lambda p: torch.tensor(g, dtype=p.dtype).expand(len(p), 3))
    glb = export_pbr_mesh(tmp_path / "quad.glb", verts, faces, material, texture_size=64, transform=transform,
                          padding=2)
    js, attrs, gfaces, mat, image = _read_glb(glb)
    assert "TANGENT" in attrs and "normalTexture" in mat
    tan = attrs["TANGENT"]
    assert np.allclose(np.linalg.norm(tan[:, :3], axis=-1), 1.0, atol=1e-5) and set(np.unique(tan[:, 3])) <= {-1.0, 1.0}
    nmap = image(mat["normalTexture"]["index"])
    # constant over the quad (it is planar, so one tangent frame everywhere)
    uvpx = (attrs["TEXCOORD_0"] * 64).astype(int).clip(0, 63)
    lo, hi = uvpx.min(0), uvpx.max(0)
    inner = nmap[lo[1] + 2 : hi[1] - 1, lo[0] + 2 : hi[0] - 1].reshape(-1, 3).astype(int)
    assert inner.size and (np.abs(inner - inner[0]).max() <= 1)
    # decode at interior samples with the exported tangents
    smp = _interior_samples(attrs, gfaces)
    world = _decode_world(nmap, smp["TEXCOORD_0"], smp["NORMAL"], smp["TANGENT"])
    if transform is None:
        expect = g
    else:
        expect = g @ np.linalg.inv(transform[:3, :3])
        expect /= np.linalg.norm(expect)
    err = _angle_deg(world, expect[None])
    assert err.max() < 1.0, err.max()


def test_normal_map_sphere_geometric_is_flat(tmp_path):
    """Material normal = the sphere's own normal -> tangent-space (0, 0, 1) everywhere, i.e. RGB (128, 128, 255)."""
    sphere = trimesh.creation.icosphere(3)
    material = _constant_material(lambda p: torch.nn.functional.normalize(p, dim=-1))
    glb = export_pbr_mesh(tmp_path / "sphere.glb", sphere.vertices, sphere.faces, material, texture_size=256,
                          normals=sphere.vertex_normals)
    js, attrs, gfaces, mat, image = _read_glb(glb)
    nmap = image(mat["normalTexture"]["index"]).astype(int)
    dev = np.abs(nmap - [128, 128, 255]).max(-1)
    # covered texels exactly (up to rounding); gutters are dilated from the same value
    assert np.mean(dev <= 1) > 0.995, np.mean(dev <= 1)
    assert np.percentile(dev, 99.9) <= 2
    tan = attrs["TANGENT"]
    n = attrs["NORMAL"]
    assert np.abs((tan[:, :3] * n).sum(-1)).max() < 1e-4  # tangents orthogonal to the normals


def test_normal_map_glb_validator_and_obj(tmp_path, exported_normals):
    mesh, glb = exported_normals
    js, attrs, gfaces, mat, image = _read_glb(glb)
    prim = js["meshes"][0]["primitives"][0]
    acc = js["accessors"][prim["attributes"]["TANGENT"]]
    assert acc["type"] == "VEC4" and acc["componentType"] == 5126
    assert mat["normalTexture"]["texCoord"] == 0
    # OBJ: norm + map_Bump point at the same normal map PNG
    obj = export_pbr_mesh(tmp_path / "b.obj", mesh.vertices, mesh.faces, _bumpy_material, texture_size=128)
    mtl = obj.with_suffix(".mtl").read_text()
    assert "norm b_normal.png" in mtl and "map_Bump b_normal.png" in mtl
    assert np.asarray(Image.open(tmp_path / "b_normal.png")).shape == (128, 128, 3)
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not available")
    from recon.export.gltf_validator import validate_gltf

    try:
        report = validate_gltf(glb)
    except ReconError as e:  # offline machine: the validator cannot be installed
        pytest.skip(str(e))
    issues = report["issues"]
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"][:5]


def test_no_normal_map_without_material_normals(exported):
    js, attrs, gfaces, mat, image = _read_glb(exported[1])
    assert "TANGENT" not in attrs and "normalTexture" not in mat and len(js["images"]) == 2


def test_normal_map_round_trip_angles(exported_normals):
    """Decode the exported map with the exported tangents at random interior points and compare with the material's
    normals there (the decode is the glTF one, independent of the exporter)."""
    mesh, glb = exported_normals
    js, attrs, gfaces, mat, image = _read_glb(glb)
    nmap = image(mat["normalTexture"]["index"])
    smp = _interior_samples(attrs, gfaces, per_face=2, seed=1)
    world = _decode_world(nmap, smp["TEXCOORD_0"], smp["NORMAL"], smp["TANGENT"])
    gt = _bumpy(torch.tensor(smp["POSITION"], dtype=torch.float64)).numpy()
    err = _angle_deg(world, gt)
    print(f"normal map round trip: mean {err.mean():.3f} deg, p99 {np.percentile(err, 99):.3f} deg")
    assert err.mean() < 2.0 and np.percentile(err, 99) < 6.0
    # the perturbation is not a no-op: without the map the error would be large
    assert _angle_deg(smp["NORMAL"] / np.linalg.norm(smp["NORMAL"], axis=-1, keepdims=True), gt).mean() > 8.0


def test_normal_map_round_trip_render_psnr(exported_normals):
    """Shade with the material normals on the source mesh and with the decoded normal map (exported tangents) on the
    re-loaded GLB; the renders must agree to >= 30 dB."""
    from recon.export.textures import tangent_frames, tangent_to_world

    mesh, glb = exported_normals
    js, attrs, gfaces, mat, image = _read_glb(glb)
    bc = image(mat["pbrMetallicRoughness"]["baseColorTexture"]["index"])
    mr = image(mat["pbrMetallicRoughness"]["metallicRoughnessTexture"]["index"])
    nm = image(mat["normalTexture"]["index"])
    light = prepare_split_sum(procedural_envmap(64))
    W = H = 96
    f = 0.5 * W / math.tan(math.radians(40) / 2)
    vm = torch.tensor(orbit_cameras(4), dtype=torch.float32)
    K = torch.tensor([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]]).expand(4, 3, 3)
    src = render_pbr_mesh(torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces), vm, K, W, H,
                          lambda q: _bumpy_material(q["position"]), light,
                          normals=torch.tensor(mesh.vertex_normals, dtype=torch.float32))
    bc_t = srgb_to_linear(torch.tensor(bc / 255.0, dtype=torch.float32))
    mr_t = torch.tensor(mr / 255.0, dtype=torch.float32)
    nm_t = torch.tensor(nm / 255.0 * 2.0 - 1.0, dtype=torch.float32)

    def textured(q):
        m = sample_texture(mr_t, q["uv"], wrap=False)
        t, b, n = tangent_frames(q["vertex_normal"], q["tangent"])
        normal = tangent_to_world(sample_texture(nm_t, q["uv"], wrap=False), t, b, n)
        return {"base_color": sample_texture(bc_t, q["uv"], wrap=False), "roughness": m[:, 1:2], "metallic": m[:, 2:3],
                "normal": normal}

    f32 = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    rt = render_pbr_mesh(f32(attrs["POSITION"]), torch.tensor(gfaces), vm, K, W, H, textured, light,
                         normals=f32(attrs["NORMAL"]), uvs=f32(attrs["TEXCOORD_0"]), tangents=f32(attrs["TANGENT"]))
    flat = render_pbr_mesh(f32(attrs["POSITION"]), torch.tensor(gfaces), vm, K, W, H,
                           lambda q: {k: v for k, v in textured(q).items() if k != "normal"}, light,
                           normals=f32(attrs["NORMAL"]), uvs=f32(attrs["TEXCOORD_0"]), tangents=f32(attrs["TANGENT"]))

    def psnr(x, y):
        return 10 * math.log10(1.0 / ((linear_to_srgb(x["rgb"]) - linear_to_srgb(y["rgb"])) ** 2).mean().item())

    p, p_flat = psnr(src, rt), psnr(src, flat)
    print(f"normal-mapped round-trip PSNR {p:.2f} dB (ignoring the normal map: {p_flat:.2f} dB)")
    assert p >= 30.0 and p > p_flat + 3.0, (p, p_flat)
