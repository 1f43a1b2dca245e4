"""Built-in PBR demo scene: procedural, deterministic, small, rendered by recon itself.

Four objects (three spheres and a bumpy blob) with spatially varying base colour, roughness and metallic given by
analytic functions of the world position, lit by a procedural HDR sky (sun, sky gradient, ground, a coloured
"window"). World frame: +Z up (the environment map convention of ``recon.render.envmap``), objects around the origin
inside a radius of ~1.3. Cameras: two rings looking at the origin (OpenCV axes).

Ground truth comes from the same renderer the methods use (``recon.render.mesh`` + split-sum shading,
``recon.render.pbr`` BRDFs), rendered with supersampling. That makes this scene a quick test only (does a method
run, converge, export?), never a measurement: a PBR method that shades with the same approximations can score well
here by matching recon's own shading rather than the light transport of a real scene. PBR methods are measured on
``../shared/data/pbr_blender_trio``, path-traced by an independent renderer (Blender Cycles; its layout, splits
and ground-truth passes are described in its ``meta.json``).

    scene = make_pbr_scene()            # ~2-4 s on a laptop CPU at the default 96 px, 32 views
    scene["images"]                     # [N, H, W, 4] sRGB RGBA float32
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch
import trimesh
from torch import Tensor

from recon.cameras import orbit_poses
from recon.data.readers.common import rigid_inverse
from recon.render.envmap import envmap_directions, prepare_split_sum
from recon.render.mesh_shading import render_pbr_mesh
from recon.render.pbr import linear_to_srgb

__all__ = ["make_pbr_scene", "scene_meshes", "scene_material", "procedural_envmap", "orbit_cameras"]

# (centre, radius, bump amplitude) of each object
_OBJECTS = (
    ((-0.55, -0.35, 0.0), 0.45, 0.0),
    ((0.6, -0.3, -0.05), 0.4, 0.0),
    ((0.05, 0.6, 0.05), 0.42, 0.0),
    ((0.0, 0.0, -0.75), 0.35, 0.06),
)


def scene_meshes(subdivisions: int = 4) -> trimesh.Trimesh:
    """All objects as one mesh (float64 vertices, outward faces); per-face object id in ``face_attributes['object']``."""
    parts, ids = [], []
    for k, (c, r, bump) in enumerate(_OBJECTS):
        m = trimesh.creation.icosphere(subdivisions, radius=1.0)
        d = m.vertices
        rr = r * (1 + bump * np.sin(5 * d[:, 0]) * np.sin(5 * d[:, 1]) * np.sin(5 * d[:, 2] + 1.0))
        m = trimesh.Trimesh(d * rr[:, None] + np.asarray(c), m.faces, process=False)
        parts.append(m)
        ids.append(np.full(len(m.faces), k))
    mesh = trimesh.util.concatenate(parts)
    mesh.face_attributes["object"] = np.concatenate(ids)
    return mesh


def scene_material(points: Tensor) -> dict[str, Tensor]:
    """Ground-truth material at surface points [P, 3] -> base_color [P, 3] (linear), roughness [P, 1], metallic [P, 1].

    Each point is assigned to the nearest object (objects are well separated), then the object's procedural
    pattern is evaluated.
    """
    c = torch.tensor([o[0] for o in _OBJECTS], dtype=points.dtype, device=points.device)
    r = torch.tensor([o[1] for o in _OBJECTS], dtype=points.dtype, device=points.device)
    obj = ((points[:, None] - c).norm(dim=-1) / r).argmin(-1)
    p = points - c[obj]
    x, y, z = p.unbind(-1)
    one = torch.ones_like(x)
    # 0: red/cream stripes, dielectric, roughness bands
    s0 = 0.5 + 0.5 * torch.sin(14 * z + 3 * x)
    bc0 = torch.stack([0.75 * one, 0.15 + 0.6 * s0, 0.1 + 0.5 * s0], -1)
    r0 = 0.3 + 0.4 * (0.5 + 0.5 * torch.sin(9 * y))
    m0 = 0.0 * one
    # 1: gold / steel checker, metallic with smoothly varying roughness
    chk = (torch.sin(10 * x) * torch.sin(10 * y) * torch.sin(10 * z + 0.5) > 0).to(points.dtype)
    bc1 = chk[:, None] * torch.tensor([1.0, 0.78, 0.34]) + (1 - chk)[:, None] * torch.tensor([0.62, 0.64, 0.66])
    r1 = 0.25 + 0.35 * (0.5 + 0.5 * torch.sin(6 * z))
    m1 = 0.85 + 0.15 * chk
    # 2: blue-green gradient, metallic spots on a dielectric
    g = 0.5 + 0.5 * torch.tanh(3 * y)
    bc2 = torch.stack([0.1 + 0.2 * g, 0.35 + 0.3 * g, 0.8 - 0.4 * g], -1)
    spot = torch.sigmoid(20 * (torch.sin(12 * x) * torch.sin(12 * z) - 0.5))
    r2 = 0.6 - 0.3 * spot
    m2 = spot
    # 3: bumpy blob, matte orange fading to white, very rough
    t = (0.5 + 0.5 * torch.sin(8 * x + 6 * y))
    bc3 = torch.stack([0.9 * one, 0.45 + 0.45 * t, 0.15 + 0.75 * t], -1)
    r3 = 0.8 * one
    m3 = 0.0 * one
    bc = torch.stack([bc0, bc1.to(points.dtype), bc2, bc3])[obj, torch.arange(len(obj))]
    rough = torch.stack([r0, r1, r2, r3])[obj, torch.arange(len(obj))]
    metal = torch.stack([m0, m1, m2, m3])[obj, torch.arange(len(obj))]
    return {"base_color": bc.clamp(0, 1), "roughness": rough[:, None], "metallic": metal[:, None].clamp(0, 1)}


def procedural_envmap(height: int = 64, variant: int = 0) -> Tensor:
    """Procedural HDR sky [height, 2 height, 3] (linear). ``variant=1`` is a different light for relighting tests."""
    d = envmap_directions(height)
    z = d[..., 2:3]
    if variant == 0:
        sun_dir, sun_col, sky_top, horizon, ground = (0.5, -0.4, 0.77), (28.0, 24.0, 18.0), (0.25, 0.45, 0.9), \
            (0.9, 0.8, 0.7), (0.25, 0.2, 0.15)
        win_dir, win_col = (-0.8, 0.5, 0.3), (1.5, 2.5, 3.5)
    else:
        sun_dir, sun_col, sky_top, horizon, ground = (-0.6, 0.55, 0.35), (30.0, 16.0, 8.0), (0.08, 0.1, 0.25), \
            (0.8, 0.45, 0.3), (0.1, 0.1, 0.12)
        win_dir, win_col = (0.7, 0.6, 0.4), (0.5, 3.0, 1.5)
    T = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    up = z.clamp_min(0)
    sky = T(horizon) * (1 - up) ** 3 + T(sky_top) * (1 - (1 - up) ** 3)
    gnd = T(ground) * (0.6 + 0.4 * torch.sigmoid(-30 * z))
    env = torch.where(z >= 0, sky, gnd)
    sdir = torch.nn.functional.normalize(T(sun_dir), dim=0)
    env = env + T(sun_col) * torch.exp(400 * ((d @ sdir)[..., None] - 1))  # ~3 degree soft disk
    wdir = torch.nn.functional.normalize(T(win_dir), dim=0)
    env = env + T(win_col) * torch.sigmoid(80 * ((d @ wdir)[..., None] - 0.95))
    return env


def orbit_cameras(n_views: int, radius: float = 4.0, elevations=(0.25, 0.7), offset: float = 0.0) -> np.ndarray:
    """World-to-camera matrices [n, 4, 4] on rings at the given elevations (radians), looking at the origin; the
    views are shared out over the rings, each ring turned half a step against the one before."""
    per = [n_views // len(elevations) + (i < n_views % len(elevations)) for i in range(len(elevations))]
    rings = [orbit_poses(k, radius, math.degrees(elev), phase=offset + math.pi * ring / k)
             for ring, (elev, k) in enumerate(zip(elevations, per)) if k > 0]
    return rigid_inverse(np.concatenate(rings)) if rings else np.zeros((0, 4, 4))


def make_pbr_scene(
    n_views: int = 32,
    resolution: int = 96,
    n_relit: int = 4,
    supersample: int = 2,
    subdivisions: int = 4,
    fov_deg: float = 40.0,
    cache_dir: str | Path | None = None,
) -> dict:
    """Render the demo scene.

    Args:
        n_views: number of training/eval views (two rings).
        resolution: image width = height (<= 128 recommended on CPU).
        n_relit: views (a separate ring) rendered under the second environment map.
        supersample: ground-truth antialiasing factor.
        subdivisions: icosphere level of every object (4 -> 5,120 triangles each).
        fov_deg: horizontal field of view.
        cache_dir: if given, results are stored there as ``.npz`` keyed by the arguments and reused.
    Returns:
        dict of numpy arrays (float32 unless stated):
            ``images`` [N, H, W, 4] sRGB RGBA; ``linear`` [N, H, W, 3] linear premultiplied radiance;
            ``alpha`` [N, H, W]; ``albedo`` [N, H, W, 3] linear base colour; ``roughness``, ``metallic`` [N, H, W];
            ``normal`` [N, H, W, 3] world-space; ``depth`` [N, H, W] camera z (0 = background);
            ``viewmats`` [N, 4, 4]; ``Ks`` [N, 3, 3]; ``width``, ``height`` (int);
            ``envmap`` [h, 2h, 3] and ``envmap_relight`` (linear); ``relit_images`` [M, H, W, 4] sRGB RGBA,
            ``relit_viewmats`` [M, 4, 4], ``relit_Ks`` [M, 3, 3], ``relit_linear``;
            ``verts`` [V, 3], ``faces`` [F, 3] int64, ``vertex_normals`` [V, 3], ``face_object`` [F] int64;
            plus ``material_fn`` (``scene_material``: torch points [P, 3] -> dict), not cached.
    """
    args = dict(n_views=n_views, resolution=resolution, n_relit=n_relit, supersample=supersample,
                subdivisions=subdivisions, fov_deg=fov_deg, version=1)
    cache = None
    if cache_dir is not None:
        key = hashlib.sha1(json.dumps(args, sort_keys=True).encode()).hexdigest()[:12]
        cache = Path(cache_dir) / f"pbr_scene_{key}.npz"
        if cache.exists():
            with np.load(cache) as z:
                out = {k: z[k] for k in z.files}
            out["width"], out["height"] = int(out["width"]), int(out["height"])
            out["material_fn"] = scene_material
            return out

    mesh = scene_meshes(subdivisions)
    verts = torch.tensor(mesh.vertices, dtype=torch.float32)
    faces = torch.tensor(mesh.faces, dtype=torch.int64)
    normals = torch.tensor(np.asarray(mesh.vertex_normals), dtype=torch.float32)
    W = H = resolution
    f = 0.5 * W / math.tan(math.radians(fov_deg) / 2)
    K = torch.tensor([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]], dtype=torch.float32)
    vm = torch.tensor(orbit_cameras(n_views), dtype=torch.float32)
    vm_relit = torch.tensor(orbit_cameras(n_relit, elevations=(0.45,), offset=0.3), dtype=torch.float32)
    env0 = procedural_envmap(64, 0)
    env1 = procedural_envmap(64, 1)

    def material(q):
        return scene_material(q["position"])

    def render(vms, env):
        light = prepare_split_sum(env)
        outs = [render_pbr_mesh(verts, faces, vms[i : i + 8], K.expand(len(vms[i : i + 8]), 3, 3), W, H, material,
                                light, normals=normals, supersample=supersample) for i in range(0, len(vms), 8)]
        return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}

    with torch.no_grad():
        gt = render(vm, env0)
        rel = render(vm_relit, env1) if n_relit > 0 else None

    def srgba(o):
        a = o["alpha"]
        rgb = linear_to_srgb(o["rgb"] / a.clamp_min(1e-6))  # straight (un-premultiplied) colour
        return torch.cat([torch.where(a > 0, rgb, torch.zeros_like(rgb)), a], -1).numpy().astype(np.float32)

    out = {
        "images": srgba(gt),
        "linear": gt["rgb"].numpy(),
        "alpha": gt["alpha"][..., 0].numpy(),
        "albedo": gt["albedo"].numpy(),
        "roughness": gt["roughness"][..., 0].numpy(),
        "metallic": gt["metallic"][..., 0].numpy(),
        "normal": gt["normal"].numpy(),
        "depth": gt["depth"][..., 0].numpy(),
        "viewmats": vm.numpy(),
        "Ks": K.expand(n_views, 3, 3).numpy().copy(),
        "width": W,
        "height": H,
        "envmap": env0.numpy(),
        "envmap_relight": env1.numpy(),
        "relit_images": srgba(rel) if rel is not None else np.zeros((0, H, W, 4), np.float32),
        "relit_linear": rel["rgb"].numpy() if rel is not None else np.zeros((0, H, W, 3), np.float32),
        "relit_viewmats": vm_relit.numpy(),
        "relit_Ks": K.expand(n_relit, 3, 3).numpy().copy(),
        "verts": mesh.vertices.astype(np.float32),
        "faces": mesh.faces.astype(np.int64),
        "vertex_normals": normals.numpy(),
        "face_object": mesh.face_attributes["object"].astype(np.int64),
    }
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **out)
        tmp.replace(cache)
    out["material_fn"] = scene_material
    return out
