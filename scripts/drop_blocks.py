"""Drop exported blocks onto their ground with a rigid-body engine, check that they settle without interpenetrating,
and film it.

    .venv/bin/python scripts/drop_blocks.py PRIMITIVES_DIR [--lift 0.2] [--seconds 3] [--out drop.mp4]
    .venv/bin/python scripts/drop_blocks.py --from-demo-solids OUT     # the demo:solids ground truth as such a folder

PRIMITIVES_DIR is an exported primitives folder (``blocks.json``; format in ``recon/physics/primitives.py``). Every
block is lifted by ``--lift`` scene units along the folder's ``up`` (and, with ``--tilt``, turned by up to that many
degrees about a random axis through its centre; ``--seed``), then dropped onto the ground plane with
``recon.physics.simulate_rigid`` (MuJoCo, convex hulls of the collision meshes, gravity 9.81 scene units / s^2).

Printed: per block its mass, how far its centre ends above (+) or below (-) where the export put it (along up), its
speed at the end, and its deepest interpenetration at the end (with any other block or the ground, measured without
the engine by ``recon.physics.penetration_per_mesh``). Checks: every block below the settle speed at the end, and the
deepest interpenetration below ``--tol`` (default 1 % of the smallest block's smallest extent); the exit code is 1
when a check fails, 2 for a bad folder.

Written: ``--out`` (MP4, ``--fps``) rendered with recon's mesh rasterizer (``recon.render.mesh``) from a camera ~35
degrees above the ground looking at the blocks, Lambert-shaded with each block's base-colour texture (its mean
colour when the GLB has no usable texture) on a grey ground quad with the blocks' shadows, and three stills beside
it (``<out>_start.png``, ``_fall.png`` at the fastest moment, just before the first landing, ``_end.png``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import trimesh
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, \
    TimeRemainingColumn
from rich.table import Table
from rich.text import Text
from trimesh.transformations import rotation_matrix

from recon.cameras import look_at
from recon.color import linear_to_srgb, srgb_to_linear
from recon.errors import ReconError
from recon.io.images import VideoWriter, save_image
from recon.physics import RigidBody, penetration_per_mesh, simulate_rigid
from recon.physics.primitives import FORMAT, VERSION, Primitives, read_primitives
from recon.render.mesh import antialias, interpolate, mesh_topology, rasterize
from recon.render.mesh_texture import sample_texture

GROUND_GREY = 0.45  # linear albedo of the ground quad
BACKGROUND = 0.9  # linear
SHADOW_RES = 512  # shadow map texels per side


# ---------------------------------------------------------------------------------------------------- demo folder
def write_demo_solids(out: Path, texture_size: int = 256) -> Path:
    """Write the ``solids`` demo's ground truth (four solids on the z = 0 plane, up +z) as a primitives folder:
    textured GLBs baked from the demo's procedural textures, convex hulls as collision meshes, mass = volume."""
    from recon.demo.shapes import quad
    from recon.demo.solids import GROUND_SIZE, PRIMITIVES, TEXTURES, build, ground_texture
    from recon.export.mesh import export_pbr_mesh

    def material(texture, world_to_local):
        def fn(points: torch.Tensor) -> dict:
            local = points.double().numpy() @ world_to_local[:3, :3].T + world_to_local[:3, 3]
            n = len(local)
            return {"base_color": torch.from_numpy(srgb_to_linear(np.clip(texture(local), 0, 1))).float(),
                    "roughness": torch.full((n, 1), 0.8), "metallic": torch.zeros(n, 1)}
        return fn

    out = Path(out)
    (out / "physics").mkdir(parents=True, exist_ok=True)
    _, poses, meshes = build()
    blocks = []
    for i, ((kind, _, _, half, exponents), pose, mesh) in enumerate(zip(PRIMITIVES, poses, meshes)):
        name = f"block_{i:02d}"
        export_pbr_mesh(out / f"{name}.glb", mesh.vertices, mesh.faces, material(TEXTURES[kind], np.linalg.inv(pose)),
                        texture_size=texture_size)
        hull = mesh.convex_hull
        hull.export(out / "physics" / f"{name}.obj")
        blocks.append({"name": name, "type": "superquadric", "exponents": list(exponents), "scale": list(half),
                       "rotation": pose[:3, :3].tolist(), "translation": pose[:3, 3].tolist(), "opacity": 1.0,
                       "mesh": f"{name}.glb", "collision": f"physics/{name}.obj", "volume": float(hull.volume),
                       "mass": float(hull.volume), "source": f"demo:solids ground truth ({kind})"})
    gv, gf = quad(GROUND_SIZE, GROUND_SIZE)
    export_pbr_mesh(out / "ground.glb", gv, gf, material(ground_texture, np.eye(4)), texture_size=texture_size)
    doc = {"format": FORMAT, "version": VERSION, "frame": "data", "up": [0.0, 0.0, 1.0],
           "ground": {"point": [0.0, 0.0, 0.0], "normal": [0.0, 0.0, 1.0], "mesh": "ground.glb"}, "blocks": blocks}
    (out / "blocks.json").write_text(json.dumps(doc, indent=1))
    return out


# ---------------------------------------------------------------------------------------------------- rendering
@dataclass
class RenderMesh:
    """A block's render mesh in the data frame: verts [V, 3], faces [F, 3], normals [V, 3], uv [V, 2] (glTF
    convention, v down) with texture [H, W, 3] linear float32 tensor, or None and None; colour [3] linear (the
    mean)."""

    verts: np.ndarray
    faces: np.ndarray
    normals: np.ndarray
    uv: np.ndarray | None
    texture: torch.Tensor | None
    colour: np.ndarray


def load_render_mesh(path: Path) -> RenderMesh:
    """A GLB's geometry (transforms applied) with its base-colour texture; several primitives or no texture: the
    mesh with its mean colour."""
    try:
        geoms = [g for g in trimesh.load(path, force="scene").dump() if isinstance(g, trimesh.Trimesh) and len(g.faces)]
    except Exception as e:  # trimesh raises many types for a damaged file
        raise ReconError(f"cannot read the render mesh: {e}", path) from e
    if not geoms:
        raise ReconError("the render mesh has no triangles", path)
    mesh = trimesh.util.concatenate(geoms) if len(geoms) > 1 else geoms[0]
    texture = uv = None
    colours = []
    for g in geoms:
        material = getattr(g.visual, "material", None)
        image = getattr(material, "baseColorTexture", None)
        if image is not None:
            texture = torch.from_numpy(srgb_to_linear(np.asarray(image.convert("RGB"), np.float32) / 255.0))
            colours.append(texture.reshape(-1, 3).double().mean(0).numpy())
        elif material is not None and hasattr(material, "main_color"):
            colours.append(srgb_to_linear(np.asarray(material.main_color[:3], np.float64) / 255.0))
        elif g.visual.kind == "vertex":
            colours.append(srgb_to_linear(np.asarray(g.visual.vertex_colors[:, :3], np.float64) / 255.0).mean(0))
    if len(geoms) == 1 and texture is not None and getattr(mesh.visual, "uv", None) is not None:
        uv = np.asarray(mesh.visual.uv, np.float64) * [1.0, -1.0] + [0.0, 1.0]  # trimesh flips glTF's v on load
    else:
        texture = None
    colour = np.mean(colours, 0) if colours else np.full(3, 0.6)
    return RenderMesh(np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64),
                      np.asarray(mesh.vertex_normals, np.float64), uv, texture, colour)


def ground_quad(prim: Primitives, centre: np.ndarray, half: float) -> tuple[np.ndarray, np.ndarray]:
    """A square of side 2 * half on the ground plane under ``centre`` -> (verts [4, 3], faces [2, 3])."""
    n = prim.ground_normal
    c = centre - ((centre - prim.ground_point) @ n) * n
    a = np.eye(3)[np.argmin(np.abs(n))]
    e1 = np.cross(n, a)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(n, e1)
    verts = np.stack([c + half * (s1 * e1 + s2 * e2) for s1, s2 in ((-1, -1), (1, -1), (1, 1), (-1, 1))])
    return verts, np.array([[0, 1, 2], [0, 2, 3]])


class BlockRenderer:
    """Lambert-shaded, textured blocks on a grey ground quad, one camera (recon's mesh rasterizer, CPU)."""

    def __init__(self, meshes: list[RenderMesh], prim: Primitives, lifted: list[trimesh.Trimesh], width: int,
                 height: int, elevation_deg: float = 35.0, fov_deg: float = 40.0):
        up = prim.up
        points = np.concatenate([m.vertices for m in lifted])
        lo, hi = points.min(0), points.max(0)
        target = 0.5 * (lo + hi)
        radius = float(np.linalg.norm(points - target, axis=1).max())
        # horizontal direction: the world axis least aligned with up, made perpendicular, turned 30 degrees
        a = np.eye(3)[np.argmin(np.abs(up))]
        h = a - (a @ up) * up
        h = rotation_matrix(np.deg2rad(30.0), up)[:3, :3] @ (h / np.linalg.norm(h))
        el = np.deg2rad(elevation_deg)
        focal = 0.5 * height / math.tan(np.deg2rad(fov_deg) / 2)
        half_fov = math.atan(0.5 * min(width, height) / focal)
        eye = target + radius / math.sin(half_fov) * 1.05 * (math.cos(el) * h + math.sin(el) * up)
        self.eye = eye
        # float32 throughout: half the rasterizer's time of float64, and ample for a picture
        self.viewmat = torch.from_numpy(np.linalg.inv(look_at(eye, target, up))).float()[None]
        self.K = torch.tensor([[[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]]], dtype=torch.float32)
        self.width, self.height = width, height
        self.light = up * 0.8 + np.cross(up, h) * 0.35 + h * 0.25
        self.light /= np.linalg.norm(self.light)
        gv, gf = ground_quad(prim, target, 4.0 * radius)
        # shadow map: the blocks' depth seen from far along the light (nearly parallel rays), SHADOW_RES texels
        light_eye = target + 20.0 * radius * self.light
        self.light_view = torch.from_numpy(np.linalg.inv(look_at(light_eye, target, h))).float()[None]
        f_light = 0.5 * SHADOW_RES * 20.0 / 1.2
        self.light_K = torch.tensor([[[f_light, 0, SHADOW_RES / 2], [0, f_light, SHADOW_RES / 2], [0, 0, 1]]])
        self.shadow_bias = 0.01 * radius
        self.meshes = meshes
        self.ground, self.ground_normal = (gv, gf), prim.ground_normal
        offsets = np.cumsum([0] + [len(m.verts) for m in meshes])
        self.faces = torch.from_numpy(np.concatenate([m.faces + o for m, o in zip(meshes, offsets)] + [gf + offsets[-1]]))
        self.face_obj = torch.from_numpy(np.concatenate([np.full(len(m.faces), i) for i, m in enumerate(meshes)]
                                                        + [np.full(2, len(meshes))]))
        self.uv = torch.from_numpy(np.concatenate([m.uv if m.uv is not None else np.zeros((len(m.verts), 2))
                                                   for m in meshes] + [np.zeros((4, 2))])).float()
        self.topology = mesh_topology(self.faces)

    @torch.no_grad()
    def render(self, transforms: np.ndarray) -> np.ndarray:
        """transforms: [B, 4, 4] world poses of the render meshes -> [H, W, 3] sRGB image in [0, 1]."""
        R, t = transforms[:, :3, :3], transforms[:, :3, 3]
        verts = [m.verts @ R[i].T + t[i] for i, m in enumerate(self.meshes)] + [self.ground[0]]
        normals = [m.normals @ R[i].T for i, m in enumerate(self.meshes)] + [np.tile(self.ground_normal, (4, 1))]
        V = torch.from_numpy(np.concatenate(verts)).float()
        N = torch.from_numpy(np.concatenate(normals)).float()
        frags = rasterize(V, self.faces, self.viewmat, self.K, self.width, self.height)
        tri = frags.tri_id[0, ..., 0]
        hit = tri >= 0
        obj = torch.where(hit, self.face_obj[tri.clamp_min(0)], torch.full_like(tri, -1))
        # shading normal: the interpolated vertex normal, or the face's own where they disagree by over 30 degrees
        # (a box exported with shared corner normals would otherwise look rounded); facing the camera
        fv = V[self.faces[tri.clamp_min(0)]]
        face_n = torch.nn.functional.normalize(torch.cross(fv[..., 1, :] - fv[..., 0, :], fv[..., 2, :] - fv[..., 0, :],
                                                           dim=-1), dim=-1)
        n = torch.nn.functional.normalize(interpolate(N, frags)[0, ..., 0, :], dim=-1)
        n = torch.where(((n * face_n).sum(-1, keepdim=True) > math.cos(math.radians(30))), n, face_n)
        pos = interpolate(V, frags)[0, ..., 0, :]
        n = torch.where(((torch.from_numpy(self.eye).float() - pos) * n).sum(-1, keepdim=True) < 0, -n, n)
        albedo = torch.full((self.height, self.width, 3), GROUND_GREY)
        uv = interpolate(self.uv, frags)[0, ..., 0, :]
        for i, m in enumerate(self.meshes):
            sel = obj == i
            if not sel.any():
                continue
            albedo[sel] = (sample_texture(m.texture, uv[sel]) if m.texture is not None
                           else torch.from_numpy(m.colour).float())
        lambert = (n @ torch.from_numpy(self.light).float()).clamp_min(0)
        # shadows on the ground only (they show where a block touches it); on the blocks' own curved faces a shadow
        # map this coarse would speckle
        on_ground = obj == len(self.meshes)
        lambert = torch.where(on_ground, lambert * self._lit(V, pos), lambert)[..., None]
        colour = albedo * (0.3 + 0.75 * lambert)
        image = torch.where(hit[..., None], colour, torch.full_like(colour, BACKGROUND))
        image = antialias(image[None], frags, self.topology)[0]
        return linear_to_srgb(image.clamp(0, 1)).numpy()


    def _lit(self, V: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """[H, W] 1 where the light reaches ``pos`` [H, W, 3], 0 in a block's shadow (a 2 x 2 texel average)."""
        n_block = int((self.face_obj < len(self.meshes)).sum())
        frags = rasterize(V, self.faces[:n_block], self.light_view, self.light_K, SHADOW_RES, SHADOW_RES)
        depth = torch.where(frags.mask[0, ..., 0], frags.depth[0, ..., 0], torch.full_like(frags.depth[0, ..., 0], 1e30))
        p = pos @ self.light_view[0, :3, :3].T + self.light_view[0, :3, 3]
        uv = (p[..., :2] / p[..., 2:].clamp_min(1e-6)) * self.light_K[0, 0, 0] + SHADOW_RES / 2 - 0.5
        lit = torch.zeros(pos.shape[:2])
        for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
            x = (uv[..., 0].floor().long() + dx).clamp(0, SHADOW_RES - 1)
            y = (uv[..., 1].floor().long() + dy).clamp(0, SHADOW_RES - 1)
            lit += (p[..., 2] <= depth[y, x] + self.shadow_bias).float() / 4
        return lit


class _Rate(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:5.1f} frames/s" if task.speed else "", style="progress.data.speed")


def film(renderer: BlockRenderer, poses: np.ndarray, out: Path, fps: float, console: Console, fall: int) -> list[Path]:
    """Render every frame of ``poses`` [T, B, 4, 4] (render-mesh world poses) into ``out`` and save three stills:
    the first frame, frame ``fall`` and the last."""
    T = len(poses)
    stills = {0: "start", fall: "fall", T - 1: "end"}
    written = []
    columns = (TextColumn("rendering"), BarColumn(), MofNCompleteColumn(), _Rate(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with VideoWriter(out, fps) as video, Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("frames", total=T)
        for t in range(T):
            image = renderer.render(poses[t])
            video.append(image)
            if t in stills:
                path = out.with_name(f"{out.stem}_{stills[t]}.png")
                save_image(image, path)
                written.append(path)
            bar.advance(task)
    return written


# ---------------------------------------------------------------------------------------------------- the drop
def lift_transforms(prim: Primitives, lift: float, tilt_deg: float, seed: int) -> np.ndarray:
    """[B, 4, 4]: each block turned by up to ``tilt_deg`` about a random axis through its centre, then raised by
    ``lift`` along up."""
    rng = np.random.default_rng(seed)
    out = []
    for block in prim.blocks:
        angle = np.deg2rad(tilt_deg) * rng.uniform() if tilt_deg > 0 else 0.0
        T = rotation_matrix(angle, rng.normal(size=3), block.collision.centroid)
        T[:3, 3] += lift * prim.up
        out.append(T)
    return np.stack(out)


def drop(args, console: Console) -> int:
    prim = read_primitives(args.primitives)
    lifts = lift_transforms(prim, args.lift, args.tilt, args.seed)
    lifted = [b.collision.copy().apply_transform(T) for b, T in zip(prim.blocks, lifts)]
    sizes = np.array([b.collision.convex_hull.extents.min() for b in prim.blocks])
    tol = 0.01 * float(sizes.min()) if args.tol is None else args.tol
    initial = penetration_per_mesh([b.collision for b in prim.blocks], prim.ground_point, prim.ground_normal)
    if initial.max() > tol:
        console.print(f"note: the exported blocks already interpenetrate by up to {initial.max():.3g} "
                      f"(before lifting); the engine will push them apart")
    bodies = [RigidBody(m, mass=b.mass, friction=args.friction, name=b.name) for m, b in zip(lifted, prim.blocks)]
    res = simulate_rigid(bodies, prim.ground_point, prim.ground_normal, gravity=args.gravity, seconds=args.seconds,
                         fps=args.fps)
    final = res.posed_meshes(lifted)
    pen = penetration_per_mesh(final, prim.ground_point, prim.ground_normal)
    table = Table(title=f"{len(bodies)} blocks dropped from {args.lift:g} for {args.seconds:g} s "
                        f"(step {res.timestep * 1e3:.2f} ms)")
    for col in ("block", "mass", "rest height change", "speed at end", "penetration"):
        table.add_column(col, justify="left" if col == "block" else "right")
    for i, (b, body) in enumerate(zip(prim.blocks, bodies)):
        rise = float((final[i].centroid - b.collision.centroid) @ prim.up)
        table.add_row(b.name, f"{body.resolved_mass():.4g}", f"{rise:+.4f}", f"{res.speed[-1, i]:.4f}", f"{pen[i]:.2e}")
    console.print(table)
    settled = res.settled()
    ok_pen = float(pen.max()) <= tol
    console.print(f"settled: {'yes' if settled else 'NO'} (fastest {res.speed[-1].max():.4f} against "
                  f"{res.settle_speed:.4f} scene units/s); deepest interpenetration {pen.max():.2e} "
                  f"({'within' if ok_pen else 'OVER'} the tolerance {tol:.2e} scene units)")
    if args.out is not None:
        meshes = [load_render_mesh(b.mesh_path) for b in prim.blocks]
        renderer = BlockRenderer(meshes, prim, lifted, *args.size)
        fall = int(np.argmax(res.max_speed))  # the fastest moment: just before the first block lands
        stills = film(renderer, res.poses @ lifts[None], args.out, args.fps, console, fall)
        console.print(f"wrote {args.out} ({len(res.poses)} frames) and {', '.join(p.name for p in stills)}")
    return 0 if settled and ok_pen else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("primitives", type=Path, nargs="?", help="exported primitives folder (blocks.json)")
    ap.add_argument("--from-demo-solids", type=Path, metavar="OUT",
                    help="write the demo:solids ground truth as a primitives folder OUT and stop")
    ap.add_argument("--texture-size", type=int, default=256, help="with --from-demo-solids: texture resolution")
    ap.add_argument("--lift", type=float, default=0.2, help="raise every block this far along up (scene units)")
    ap.add_argument("--tilt", type=float, default=0.0, help="turn each block by up to this many degrees")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random tilts")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--gravity", type=float, default=9.81, help="scene units / s^2")
    ap.add_argument("--friction", type=float, default=0.8)
    ap.add_argument("--tol", type=float, default=None,
                    help="largest interpenetration allowed (scene units; default 1%% of the smallest block)")
    ap.add_argument("--out", type=Path, default=Path("drop.mp4"), help="MP4 to write")
    ap.add_argument("--no-video", dest="out", action="store_const", const=None)
    ap.add_argument("--size", type=int, nargs=2, default=(640, 480), metavar=("W", "H"))
    # One thread by default: a 640x480 frame took 0.25 s on one thread and 0.95 s on two on the 2-core development
    # machine while other jobs used it (the rasterizer's many small ops oversubscribe a busy machine).
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for rendering (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console()
    try:
        if args.from_demo_solids is not None:
            console.print(f"wrote {write_demo_solids(args.from_demo_solids, args.texture_size) / 'blocks.json'}")
            return 0
        if args.primitives is None:
            ap.error("give a primitives folder (or --from-demo-solids OUT)")
        return drop(args, console)
    except ReconError as e:
        print(f"error: {e}", file=sys.stderr)  # one line, as the recon CLI prints it
        return 2


if __name__ == "__main__":
    sys.exit(main())
