"""The ground-truth renderer of the demo scenes: a small CPU ray tracer (Open3D ray casting + procedural textures +
simple lighting) that makes their images, depth, normal and part maps.

Why our own renderer: the demo scenes must be reproducible byte for byte, need no GPU or Blender, and must come
with exact ground truth (depth, normals, masks, which geometry every pixel sees). It shares no code with what the
methods train with: rays come from :meth:`recon.cameras.Cameras.rays` (the camera convention every part of recon
uses), normals from :mod:`recon.geometry.mesh_utils`; Open3D's ``RaycastingScene`` (Embree) gives first hits fast
on CPU; everything else is a few numpy lines:

- geometry is a list of :class:`Part` (a triangle mesh with a :class:`Material`); a part carries per-vertex
  *texture coordinates* in 3D (by default its rest-pose vertices), interpolated with the hit's barycentrics, so a
  procedural solid texture moves and deforms with the surface;
- shading is view-independent Lambert (sun with soft shadows, a fill light, a sky/ground hemisphere ambient) plus an
  optional Blinn-Phong highlight, in linear space, written as sRGB;
- every pixel is supersampled ``ss x ss`` (antialiased colours and fractional alpha at silhouettes), and the sun
  direction is jittered over the samples, which softens shadow edges at no extra cost;
- depth, normal and part maps come from one extra ray through each pixel centre (pixel centres at +0.5, the
  convention of :class:`recon.cameras.Cameras`), so they are exact point samples rather than blends.

All surfaces are two-sided: normals are flipped to face the ray, which open sheets need and closed meshes never
notice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import open3d as o3d
import torch
from recon.cameras import Cameras
from recon.color import linear_to_srgb, srgb_to_linear
from recon.geometry.mesh_utils import face_normals
from recon.geometry.mesh_utils import vertex_normals as _vertex_normals


TextureFn = Callable[[np.ndarray], np.ndarray]
"""[P, 3] texture-space points -> [P, 3] sRGB albedo in [0, 1]."""


@dataclass
class Material:
    """Surface appearance.

    Attributes:
        texture: procedural albedo (sRGB) as a function of texture-space points.
        specular: Blinn-Phong highlight strength (linear radiance units); 0 keeps the surface purely diffuse.
        shininess: Blinn-Phong exponent.
    """

    texture: TextureFn
    specular: float = 0.0
    shininess: float = 48.0


@dataclass
class Part:
    """One triangle mesh of a scene, in world coordinates for the frame being rendered.

    Attributes:
        name: label used in ground truth (part maps index the scene's part list).
        vertices: [V, 3] world positions.
        faces: [F, 3] vertex indices.
        material: its :class:`Material`.
        tex_coords: [V, 3] texture-space position of every vertex (default: ``vertices``); pass the rest pose of a
            moving or deforming object so its texture sticks to it.
        smooth: interpolate vertex normals (curved shapes); False uses face normals (boxes, planes).
        dynamic: the part moves over time (dynamic scenes): pixels that see it, or whose shadow it changes, are
            reported in the render's ``dynamic`` map.
        casts_shadow: whether the part blocks the sun.
    """

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    material: Material
    tex_coords: np.ndarray | None = None
    smooth: bool = True
    dynamic: bool = False
    casts_shadow: bool = True
    vertex_normals: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        self.vertices = np.asarray(self.vertices, dtype=np.float64)
        self.faces = np.asarray(self.faces, dtype=np.int64)
        self.tex_coords = self.vertices.copy() if self.tex_coords is None else np.asarray(self.tex_coords, np.float64)
        self.vertex_normals = vertex_normals(self.vertices, self.faces)

    @staticmethod
    def from_trimesh(name: str, mesh, material: Material, transform: np.ndarray | None = None,
                     crease_deg: float | None = 35.0, **kwargs) -> "Part":
        """A part from a mesh given in its own (local) frame.

        The local vertices become the texture coordinates, so the texture is laid out in object space and follows
        ``transform`` (local -> world, [4, 4]). With smooth shading, vertices along edges sharper than
        ``crease_deg`` are split first, so cylinder rims and cube edges stay crisp.
        """
        if kwargs.get("smooth", True) and crease_deg is not None:
            import trimesh

            mesh = trimesh.graph.smooth_shade(mesh, angle=np.deg2rad(crease_deg), facet_minarea=None)
        local = np.asarray(mesh.vertices, dtype=np.float64)
        world = local if transform is None else local @ np.asarray(transform)[:3, :3].T + np.asarray(transform)[:3, 3]
        kwargs.setdefault("tex_coords", local)
        return Part(name, world, np.asarray(mesh.faces), material, **kwargs)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals [V, 3] float64 (zero for unreferenced vertices)."""
    return _vertex_normals(torch.as_tensor(np.ascontiguousarray(vertices)), torch.as_tensor(np.ascontiguousarray(faces))).numpy()


def triangle_normals(triangles: np.ndarray, normalize: bool = True) -> np.ndarray:
    """[F, 3] normals of triangles [F, 3 (corner), 3] (float64), unit or (``normalize=False``) of length 2 * area."""
    tri = torch.from_numpy(np.ascontiguousarray(triangles)).reshape(-1, 3)
    return face_normals(tri, torch.arange(len(tri)).reshape(-1, 3), normalize=normalize).numpy()


@dataclass
class Lighting:
    """Fixed lights (all view-independent except the highlight).

    Attributes:
        sun_dir: [3] direction *towards* the sun (normalised on use).
        sun: sun irradiance (linear).
        sun_radius_deg: angular radius of the sun disc; shadows get penumbrae this wide.
        fill_dir, fill: an unshadowed secondary light, so faces turned away from the sun keep their shape.
        sky, ground: hemisphere ambient, blended by the normal's z (world z is up).
        shadows: cast shadow rays at all.
    """

    sun_dir: Sequence[float] = (0.45, -0.35, 0.82)
    sun: float = 0.9
    sun_radius_deg: float = 3.0
    fill_dir: Sequence[float] = (-0.6, 0.7, 0.25)
    fill: float = 0.18
    sky: float = 0.32
    ground: float = 0.12
    shadows: bool = True

    def sun_dirs(self, k: int) -> np.ndarray:
        """[k, 3] unit directions spread over the sun disc (a fixed golden-angle spiral: deterministic)."""
        d = np.asarray(self.sun_dir, dtype=np.float64)
        d = d / np.linalg.norm(d)
        if k == 1 or self.sun_radius_deg <= 0:
            return np.repeat(d[None], k, 0)
        a = np.cross(d, [0.0, 0.0, 1.0] if abs(d[2]) < 0.9 else [1.0, 0.0, 0.0])
        a /= np.linalg.norm(a)
        b = np.cross(d, a)
        i = np.arange(k) + 0.5
        r = np.tan(np.deg2rad(self.sun_radius_deg)) * np.sqrt(i / k)
        phi = i * np.pi * (3.0 - np.sqrt(5.0))
        out = d + r[:, None] * (np.cos(phi)[:, None] * a + np.sin(phi)[:, None] * b)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def pinhole_rays(cameras: Cameras, index: int, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World rays (origins [R, 3], unit directions [R, 3], float64) through pixel positions [R, 2] of pinhole camera
    ``index``, from :meth:`Cameras.rays` in float64 (pixel centres at +0.5 are the caller's choice of ``pixels``)."""
    if int(cameras.models[index]) != 0 and float(cameras.distortion[index].abs().sum()) > 0:
        raise ValueError("the demo renderer only handles pinhole cameras")
    origins, dirs = cameras.rays(index, torch.from_numpy(np.asarray(pixels, dtype=np.float64)))
    # The poses are float32, so their rotations are orthonormal only to ~1e-8 and the rotated unit directions are
    # off unit length by as much; ray parameters are distances (depth = t * d.forward) only for unit directions.
    dirs = dirs.numpy()
    return origins.numpy().copy(), dirs / np.linalg.norm(dirs, axis=1, keepdims=True)


def sample_pixels(h: int, w: int, ss: int) -> np.ndarray:
    """[H * W, ss * ss, 2] (u, v) sample positions: a regular ss x ss grid inside every pixel (ss = 1: the pixel
    centre, u + 0.5, v + 0.5)."""
    offs = (np.arange(ss) + 0.5) / ss
    oy, ox = np.meshgrid(offs, offs, indexing="ij")
    v, u = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    pix = np.stack([u[..., None] + ox.ravel(), v[..., None] + oy.ravel()], -1)
    return pix.reshape(h * w, ss * ss, 2)


def _o3d_scene(parts: Sequence[Part], keep: Callable[[Part], bool]
               ) -> tuple[o3d.t.geometry.RaycastingScene, np.ndarray]:
    """Build a RaycastingScene of the parts ``keep`` accepts; returns it and a geometry-id -> part-index table."""
    scene = o3d.t.geometry.RaycastingScene()
    table = []
    for i, part in enumerate(parts):
        if not keep(part):
            continue
        gid = scene.add_triangles(
            o3d.core.Tensor(part.vertices.astype(np.float32)), o3d.core.Tensor(part.faces.astype(np.uint32))
        )
        table += [-1] * (gid + 1 - len(table))
        table[gid] = i
    return scene, np.asarray(table + [-1], dtype=np.int64)  # trailing -1: misses map here (see _cast)


class RayScene:
    """The geometry of one frame, ready for ray casting and shading.

    Args:
        parts: the scene's parts (world coordinates for this frame).
        lighting: the lights.
        background: sRGB colour [3] of pixels that hit nothing.
        scale: a length of the scene's size (e.g. its radius); sets the self-intersection offset of shadow rays.
    """

    def __init__(self, parts: Sequence[Part], lighting: Lighting, background=(1.0, 1.0, 1.0), scale: float = 1.0):
        self.parts = list(parts)
        self.lighting = lighting
        self.background = np.asarray(background, dtype=np.float64)
        self.eps = 2e-4 * scale
        self.scene, self.table = _o3d_scene(self.parts, lambda p: True)
        self.shadow_scene, _ = _o3d_scene(self.parts, lambda p: p.casts_shadow)
        # Shadows of moving parts change static pixels; comparing against a scene without them finds those pixels.
        self.has_dynamic = any(p.dynamic for p in self.parts)
        if self.has_dynamic:
            self.static_shadow_scene, _ = _o3d_scene(self.parts, lambda p: p.casts_shadow and not p.dynamic)

    # ------------------------------------------------------------------ casting
    def _cast(self, origins: np.ndarray, dirs: np.ndarray) -> dict[str, np.ndarray]:
        """First hits of rays [R, 3] x [R, 3]: ``t`` [R] (inf on miss), ``part`` [R] (-1 on miss), ``prim`` [R],
        ``uv`` [R, 2] barycentrics (hit = (1-u-v) v0 + u v1 + v v2)."""
        rays = o3d.core.Tensor(np.concatenate([origins, dirs], 1).astype(np.float32))
        r = self.scene.cast_rays(rays)
        gid = r["geometry_ids"].numpy().astype(np.int64)
        gid = np.where(gid == self.scene.INVALID_ID, len(self.table) - 1, gid)
        return {
            "t": r["t_hit"].numpy().astype(np.float64),
            "part": self.table[gid],
            "prim": r["primitive_ids"].numpy().astype(np.int64),
            "uv": r["primitive_uvs"].numpy().astype(np.float64),
        }

    def _surface(self, hits: dict, origins: np.ndarray, dirs: np.ndarray) -> dict[str, np.ndarray]:
        """Surface attributes at hits (all [R, ...], only rows with ``part >= 0`` meaningful): world ``point``,
        texture-space ``tex``, geometric normal ``ng`` and shading normal ``ns`` (both facing the ray's origin), and
        ``back``: the ray hit the side opposite the faces' winding normal."""
        n = len(origins)
        point = origins + dirs * np.where(np.isfinite(hits["t"]), hits["t"], 0.0)[:, None]
        tex, ng, ns = np.zeros((n, 3)), np.zeros((n, 3)), np.zeros((n, 3))
        for i, part in enumerate(self.parts):
            sel = np.nonzero(hits["part"] == i)[0]
            if len(sel) == 0:
                continue
            f = part.faces[hits["prim"][sel]]
            u, v = hits["uv"][sel, 0:1], hits["uv"][sel, 1:2]
            w0 = 1.0 - u - v

            def interp(attr):
                return w0 * attr[f[:, 0]] + u * attr[f[:, 1]] + v * attr[f[:, 2]]

            tex[sel] = interp(part.tex_coords)
            g = triangle_normals(part.vertices[f])
            s = interp(part.vertex_normals) if part.smooth else g
            s /= np.maximum(np.linalg.norm(s, axis=1, keepdims=True), 1e-20)
            ng[sel], ns[sel] = g, s
        # Two-sided: face the viewer; keep the shading normal on the geometric normal's side.
        flip = np.sum(ng * dirs, axis=1) > 0
        ng[flip] *= -1
        ns[flip] *= -1
        ns = np.where((np.sum(ns * ng, axis=1) < 0)[:, None], ng, ns)
        return {"point": point, "tex": tex, "ng": ng, "ns": ns, "back": flip}

    def _albedo(self, part_ids: np.ndarray, tex: np.ndarray) -> np.ndarray:
        """Linear albedo [R, 3] from each part's texture (zeros where ``part_ids`` is -1)."""
        out = np.zeros((len(tex), 3))
        for i, part in enumerate(self.parts):
            sel = part_ids == i
            if sel.any():
                out[sel] = srgb_to_linear(part.material.texture(tex[sel]))
        return out

    def _visibility(self, point, ng, sun_dirs, hit) -> tuple[np.ndarray, np.ndarray]:
        """Sun visibility [R] in {0, 1} along per-ray sun directions [R, 3], and whether moving parts change it."""
        vis = np.ones(len(point))
        changed = np.zeros(len(point), dtype=bool)
        facing = hit & (np.sum(ng * sun_dirs, axis=1) > 0)
        vis[~facing] = 0.0  # self-shadowed: the ray would start under the surface
        if not self.lighting.shadows or not facing.any():
            return vis, changed
        idx = np.nonzero(facing)[0]
        rays = o3d.core.Tensor(
            np.concatenate([point[idx] + ng[idx] * self.eps, sun_dirs[idx]], 1).astype(np.float32)
        )
        occ = self.shadow_scene.test_occlusions(rays).numpy().astype(bool)
        vis[idx[occ]] = 0.0
        if self.has_dynamic:
            occ_static = self.static_shadow_scene.test_occlusions(rays).numpy().astype(bool)
            changed[idx] = occ != occ_static
        return vis, changed

    def _radiance(self, part_ids, surf, albedo, vis, sun_dirs, view_dirs) -> np.ndarray:
        """Linear radiance [R, 3]: hemisphere ambient + sun (shadowed) + fill, plus a highlight if ``view_dirs``."""
        L = self.lighting
        ns = surf["ns"]
        fill_dir = np.asarray(L.fill_dir, dtype=np.float64)
        fill_dir = fill_dir / np.linalg.norm(fill_dir)
        up = 0.5 + 0.5 * ns[:, 2]
        irr = (
            L.sky * up
            + L.ground * (1.0 - up)
            + L.sun * np.clip(np.sum(ns * sun_dirs, axis=1), 0.0, None) * vis
            + L.fill * np.clip(ns @ fill_dir, 0.0, None)
        )
        rad = albedo * irr[:, None]
        if view_dirs is not None:
            spec = np.zeros(len(part_ids))
            shin = np.ones(len(part_ids))
            for i, part in enumerate(self.parts):
                sel = part_ids == i
                spec[sel], shin[sel] = part.material.specular, part.material.shininess
            if (spec > 0).any():
                h = sun_dirs - view_dirs
                h /= np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)
                hl = np.clip(np.sum(ns * h, axis=1), 0.0, None) ** shin
                rad += (spec * L.sun * hl * vis)[:, None]
        return rad

    # ------------------------------------------------------------------ public
    def render(self, cameras: Cameras, index: int, ss: int = 2, pixels: np.ndarray | None = None
               ) -> dict[str, np.ndarray]:
        """Render camera ``index`` (all pixels, or only those where the bool mask ``pixels`` [H, W] is set; the
        others keep background/zero values). A pixel's result does not depend on which other pixels are rendered.

        Returns:
            ``rgb`` [H, W, 3] sRGB in [0, 1] (not premultiplied; background colour where nothing is hit),
            ``alpha`` [H, W] fraction of the ss x ss samples that hit geometry,
            ``depth`` [H, W] camera-z depth through the pixel centre (0 on miss),
            ``normal`` [H, W, 3] unit world normal at the pixel centre facing the camera (0 on miss),
            ``part`` [H, W] int16 part index at the pixel centre (-1 on miss),
            ``backface`` [H, W] bool: the pixel centre sees the back of a face (against its winding normal),
            ``dynamic`` [H, W] bool: some sample sees a dynamic part or lies in a shadow that a dynamic part changes.
        """
        h, w = int(cameras.heights[index]), int(cameras.widths[index])
        k = ss * ss
        sel = np.arange(h * w) if pixels is None else np.flatnonzero(pixels)
        m = len(sel)
        o, d = pinhole_rays(cameras, index, sample_pixels(h, w, ss)[sel].reshape(-1, 2))

        hits = self._cast(o, d)
        hit = hits["part"] >= 0
        surf = self._surface(hits, o, d)
        sun_dirs = np.tile(self.lighting.sun_dirs(k), (m, 1))  # sample j of every pixel uses sun sample j
        vis, shadow_changed = self._visibility(surf["point"], surf["ng"], sun_dirs, hit)
        albedo = self._albedo(hits["part"], surf["tex"])
        rad = self._radiance(hits["part"], surf, albedo, vis, sun_dirs, d)
        # Average in linear space over the samples that hit (straight alpha), then encode.
        hitf = hit.astype(np.float64).reshape(m, k)
        alpha = hitf.mean(-1)
        rad = (rad * hit[:, None]).reshape(m, k, 3).sum(1) / np.maximum(hitf.sum(-1), 1.0)[..., None]
        rgb = np.where((alpha > 0)[:, None], linear_to_srgb(rad), self.background)
        dyn_part = np.array([p.dynamic for p in self.parts] + [False])
        dynamic = (dyn_part[hits["part"]] | shadow_changed).reshape(m, k).any(-1)

        # Exact point samples through the pixel centres.
        oc, dc = pinhole_rays(cameras, index, sample_pixels(h, w, 1)[sel, 0])
        hc = self._cast(oc, dc)
        sc = self._surface(hc, oc, dc)
        hitc = hc["part"] >= 0
        fwd = cameras.camtoworlds[index, :3, 2].double().numpy()
        depth = np.where(hitc, np.where(hitc, hc["t"], 0.0) * (dc @ fwd), 0.0)

        def full(values, fill, dtype):
            out = np.full((h * w, *values.shape[1:]), fill, dtype=dtype)
            out[sel] = values
            return out.reshape(h, w, *values.shape[1:])

        return {
            "rgb": full(rgb, 0.0, np.float32) if pixels is not None else rgb.reshape(h, w, 3).astype(np.float32),
            "alpha": full(alpha, 0.0, np.float32),
            "depth": full(depth, 0.0, np.float32),
            "normal": full(sc["ns"] * hitc[:, None], 0.0, np.float32),
            "part": full(hc["part"], -1, np.int16),
            "backface": full(sc["back"] & hitc, False, bool),
            "dynamic": full(dynamic, False, bool),
        }

    def first_hits(self, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """Part index [R] of the first hit of each ray (-1 on miss)."""
        return self._cast(origins, dirs)["part"]

    def shadow_rays(self, origins: np.ndarray, dirs: np.ndarray, ss: int) -> tuple[np.ndarray, np.ndarray]:
        """The sun-visibility rays :meth:`render` casts for its samples (``origins``/``dirs``: [P * ss * ss, 3] in
        :func:`sample_pixels` order): returns rays [R, 6] and the sample index [R] of each."""
        hits = self._cast(origins, dirs)
        hit = hits["part"] >= 0
        surf = self._surface(hits, origins, dirs)
        sun_dirs = np.tile(self.lighting.sun_dirs(ss * ss), (len(origins) // (ss * ss), 1))
        facing = np.flatnonzero(hit & (np.sum(surf["ng"] * sun_dirs, axis=1) > 0))
        rays = np.concatenate([surf["point"][facing] + surf["ng"][facing] * self.eps, sun_dirs[facing]], 1)
        return rays, facing

    def shade_points(self, points: np.ndarray, normals: np.ndarray, part_ids: np.ndarray, tex: np.ndarray,
                     n_sun: int = 8) -> np.ndarray:
        """View-independent sRGB colour [P, 3] of surface points (for initial point clouds).

        Args:
            points: [P, 3] world points on part surfaces.
            normals: [P, 3] their normals (the side to shade).
            part_ids: [P] index of the part each point lies on.
            tex: [P, 3] their texture-space coordinates.
            n_sun: sun samples averaged for soft shadows.
        """
        p = len(points)
        ng = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        surf = {"point": points, "ng": ng, "ns": ng}
        albedo = self._albedo(part_ids, tex)
        rad = np.zeros((p, 3))
        for sd in self.lighting.sun_dirs(n_sun):
            dirs = np.broadcast_to(sd, (p, 3))
            vis, _ = self._visibility(points, ng, dirs, np.ones(p, dtype=bool))
            rad += self._radiance(part_ids, surf, albedo, vis, dirs, None)
        return linear_to_srgb(rad / n_sun).astype(np.float32)


def sample_parts(parts: Sequence[Part], count: int, seed: int, keep: Callable[[Part], bool] = lambda p: True):
    """Sample points uniformly by area over the parts ``keep`` accepts.

    Returns:
        points [P, 3], face normals [P, 3], part indices [P], texture coordinates [P, 3] (P = ``count``).
    """
    rng = np.random.default_rng(seed)
    idx = [i for i, p in enumerate(parts) if keep(p)]
    tris = [parts[i].vertices[parts[i].faces] for i in idx]
    areas = np.concatenate([0.5 * np.linalg.norm(triangle_normals(t, normalize=False), axis=1) for t in tris])
    owner = np.concatenate([np.full(len(t), i) for i, t in zip(idx, tris)])
    local = np.concatenate([np.arange(len(t)) for t in tris])
    pick = rng.choice(len(areas), size=count, p=areas / areas.sum())
    r1, r2 = rng.random(count), rng.random(count)
    s = np.sqrt(r1)
    w = np.stack([1.0 - s, s * (1.0 - r2), s * r2], 1)  # uniform barycentrics
    points, normals, tex = np.zeros((count, 3)), np.zeros((count, 3)), np.zeros((count, 3))
    for i in idx:
        sel = np.nonzero(owner[pick] == i)[0]
        f = parts[i].faces[local[pick[sel]]]
        tri = parts[i].vertices[f]
        points[sel] = np.einsum("pk,pkj->pj", w[sel], tri)
        tex[sel] = np.einsum("pk,pkj->pj", w[sel], parts[i].tex_coords[f])
        normals[sel] = triangle_normals(tri)
    return points, normals, owner[pick], tex
