"""``dynamic``: a multi-view video (N3DV style) of a small courtyard where a few things move.

A tiled floor and a round planked wall enclose the scene (every pixel sees geometry, so images are opaque RGB).
Static props (a pillar, a crate, a flagpole) stand still; three things move over T frames:

- ``ball``: rolls without slipping along a circular arc (translation + rotation, texture sticks to it);
- ``cube``: spins about the vertical and bobs up and down (rotation + translation);
- ``flag``: waves on the pole (a non-rigid deformation of a sheet).

C fixed cameras on an arc in front of the scene film all T frames. Frames are ordered camera-major
(index = camera * T + frame); camera 0, the central one, is the test camera (the N3DV convention).

Ground truth includes a per-frame ``dynamic_mask``: pixels whose colour depends on the moving geometry (they see it,
or lie in a shadow it casts or would cast). Every other pixel is the same, byte for byte, in every frame of its
camera — the property that static/dynamic decompositions (Swift4D) assume.

Texture detail is sized to the 96-px images (version 2): the first version's wall grain, 120 planks with
0.08-wide gaps and floor grout came out finer than a pixel, which the supersampled ground truth shows as aliasing
that no view but the test camera's own can predict; it capped every method's held-out PSNR near 24 dB on the
still part of the scene whatever the training did. Version 3 widens what was still about a pixel at the back of
the room (plank gaps 0.12 instead of 0.06, 36 planks instead of 48; grout 0.08 instead of 0.05 on 0.6 tiles) and
films with 16 cameras instead of 8 (same test camera): the denser rig is what lifts a held-out camera's still
part most (docs/benchmarks.md, "The demo").
"""

from __future__ import annotations

import numpy as np
import trimesh
from trimesh.transformations import rotation_matrix, translation_matrix

from recon.cameras import look_at

from .common import make_cameras, mesh_arrays, pinhole, to_uint8
from .gt_raycaster import Lighting, Material, Part, RayScene, sample_parts
from .sequence import render_sequence
from .shapes import disc, open_cylinder, parametric_grid
from .textures import angle, checker, fbm, hex_colors, mix, ramp, stripes

NAME = "dynamic"
VERSION = "3"

SKY = np.array([0.78, 0.86, 0.95])
ROOM_RADIUS = 4.5
WALL_HEIGHT = 4.5

# Motion parameters (ground truth, also saved in the bundle).
BALL_RADIUS = 0.28
BALL_ORBIT = 1.05  # radius of the circular path around the z axis
BALL_ARC = (-0.35 * np.pi, 0.55 * np.pi)  # path angle at t = 0 and t = 1
CUBE_SIZE = 0.36
CUBE_CENTER = np.array([-1.35, -0.55, 0.45])
CUBE_SPIN = np.pi  # radians about z over the sequence
CUBE_BOB = 0.18  # vertical amplitude (one full period over the sequence)
FLAG_SIZE = (0.9, 0.55)  # length along the pole-to-tip direction, height
FLAG_POLE = np.array([1.3, 0.45])  # x, y of the pole
FLAG_TOP = 1.6
FLAG_WAVES = 1.5  # wavelengths along the flag
FLAG_AMPLITUDE = 0.12  # at the free edge
FLAG_CYCLES = 2.0  # wave periods over the sequence

# Texture scales (metres, fractions).
TILE = 0.6  # floor tile edge
GROUT = 0.07  # grout half-width as a fraction of a tile
PLANKS = 36  # wall planks around the room
PLANK_GAP = 0.15  # gap between planks as a fraction of a plank


# ---------------------------------------------------------------------------------------------------- textures
def floor_texture(p: np.ndarray) -> np.ndarray:
    """Stone tiles (``TILE``) in two tones with per-tile noise and dark grout lines."""
    tile = checker(p * np.array([1.0, 1.0, 0.0]), TILE)
    stone = fbm(p * 2.5, octaves=3, seed=21)
    col = mix(ramp(stone, hex_colors("#8d99ae", "#c9cfd8")), ramp(stone, hex_colors("#a4825a", "#dcc7a1")), tile)
    frac = (p[:, :2] / TILE) % 1.0
    grout = (np.minimum(frac, 1.0 - frac).min(axis=1) < GROUT).astype(np.float64)  # near a tile edge
    return mix(col, hex_colors("#3a3a3a")[0], 0.85 * grout)


def wall_texture(p: np.ndarray) -> np.ndarray:
    """Vertical planks (``PLANKS`` around), each a different shade, with grain and a painted band at mid height."""
    a = angle(p)
    plank = np.floor(a * PLANKS)
    shade = fbm(np.stack([plank * 3.7, np.zeros_like(plank), np.zeros_like(plank)], 1), octaves=1, seed=31)
    grain = fbm(p * np.array([6.0, 6.0, 1.5]), octaves=2, seed=32)
    col = ramp(0.6 * shade + 0.4 * grain, hex_colors("#6b4226", "#a9714b", "#d9a66b"))
    gaps = stripes(a * PLANKS, 1.0, duty=PLANK_GAP)
    band = ((p[:, 2] > 1.3) & (p[:, 2] < 1.65)).astype(np.float64)
    band_col = ramp(stripes(a * 24.0 + p[:, 2] * 4.0, 1.0), hex_colors("#2a9d8f", "#e9c46a"))
    col = mix(col, band_col, 0.9 * band)
    return mix(col, hex_colors("#2b1d14")[0], 0.8 * gaps)


def pillar_texture(p: np.ndarray) -> np.ndarray:
    s = stripes(p[:, 2] + 0.12 * angle(p), 0.12)
    return mix(hex_colors("#f1faee").repeat(len(p), 0), hex_colors("#e63946").repeat(len(p), 0), s)


def crate_texture(p: np.ndarray) -> np.ndarray:
    boards = stripes(p[:, 0] + p[:, 1] + 0.03 * fbm(p * 20.0, 2, seed=41), 0.08, duty=0.9)
    grain = fbm(p * np.array([20.0, 4.0, 4.0]), 2, seed=42)
    return mix(hex_colors("#4a3520")[0], ramp(grain, hex_colors("#b5834a", "#e0b27a")), boards)


def pole_texture(p: np.ndarray) -> np.ndarray:
    return np.broadcast_to(hex_colors("#6c757d")[0], (len(p), 3)).copy()


def ball_texture(p: np.ndarray) -> np.ndarray:
    """Beach ball: six coloured gores around its local z, with noise speckles; p is in ball-local coordinates."""
    gore = np.floor(angle(p) * 6.0).astype(np.int64)
    cols = hex_colors("#ff006e", "#ffbe0b", "#3a86ff", "#fb5607", "#8338ec", "#06d6a0")[gore]
    speck = (fbm(p * 12.0, 1, seed=51) > 0.72).astype(np.float64)
    return mix(cols, np.ones(3), 0.8 * speck)


def cube_texture(p: np.ndarray) -> np.ndarray:
    c = checker(p + 1e-3, CUBE_SIZE / 4)
    n = fbm(p * 12.0, 2, seed=61)
    return mix(ramp(n, hex_colors("#023047", "#219ebc")), ramp(n, hex_colors("#ffb703", "#fb8500")), c)


def flag_texture(p: np.ndarray) -> np.ndarray:
    """Rest-pose flag coordinates (x along the flag, z up): three horizontal bands and a checkered hoist."""
    h = (p[:, 2] - (FLAG_TOP - FLAG_SIZE[1])) / FLAG_SIZE[1]
    band = np.clip(np.floor(h * 3.0), 0, 2).astype(np.int64)
    col = hex_colors("#1d3557", "#f1faee", "#e63946")[band]
    hoist = ((p[:, 0] - FLAG_POLE[0]) < 0.22).astype(np.float64) * checker(p, 0.09)
    return mix(col, hex_colors("#ffd60a")[0], hoist)


# ---------------------------------------------------------------------------------------------------- geometry
def static_parts() -> list[Part]:
    floor_v, floor_f = disc(ROOM_RADIUS + 0.05, sections=120)  # a hair wider than the wall: no gap at its foot
    wall_v, wall_f = open_cylinder(ROOM_RADIUS, WALL_HEIGHT, sections=120, rings=2, inward=True)
    return [
        Part("floor", floor_v, floor_f, Material(floor_texture), smooth=False),
        Part("wall", wall_v, wall_f, Material(wall_texture), smooth=False),
        Part.from_trimesh("pillar", trimesh.creation.cylinder(radius=0.22, height=1.3, sections=48),
                          Material(pillar_texture), transform=translation_matrix([-0.95, 1.2, 0.65])),
        Part.from_trimesh("crate", trimesh.creation.box(extents=[0.55, 0.55, 0.55]), Material(crate_texture),
                          transform=translation_matrix([0.35, 1.75, 0.275]) @ rotation_matrix(0.4, [0, 0, 1]),
                          smooth=False),
        Part.from_trimesh("pole", trimesh.creation.cylinder(radius=0.03, height=FLAG_TOP + 0.1, sections=24),
                          Material(pole_texture, specular=0.3),
                          transform=translation_matrix([*FLAG_POLE, (FLAG_TOP + 0.1) / 2])),
    ]


def ball_transform(t: float) -> np.ndarray:
    """Ball-local -> world [4, 4] at time t in [0, 1]: rolling without slipping along its arc."""
    phi = BALL_ARC[0] + (BALL_ARC[1] - BALL_ARC[0]) * t
    center = np.array([BALL_ORBIT * np.cos(phi), BALL_ORBIT * np.sin(phi), BALL_RADIUS])
    tangent = np.array([-np.sin(phi), np.cos(phi), 0.0])
    axis = np.cross([0.0, 0.0, 1.0], tangent)  # rolling forward turns about up x forward
    roll = BALL_ORBIT * (phi - BALL_ARC[0]) / BALL_RADIUS  # arc length / radius
    return translation_matrix(center) @ rotation_matrix(roll, axis) @ rotation_matrix(0.5, [1, 0, 0])


def cube_transform(t: float) -> np.ndarray:
    """Cube-local -> world [4, 4] at time t: spin about z plus a sinusoidal bob."""
    center = CUBE_CENTER + np.array([0.0, 0.0, CUBE_BOB * np.sin(2 * np.pi * t)])
    return translation_matrix(center) @ rotation_matrix(CUBE_SPIN * t, [0, 0, 1]) @ rotation_matrix(0.3, [1, 1, 0])


def flag_rest() -> tuple[np.ndarray, np.ndarray]:
    """Rest-pose flag sheet [V, 3], [F, 3]: a vertical rectangle from the pole along +x."""
    length, height = FLAG_SIZE

    def fn(u, v):
        return np.stack([FLAG_POLE[0] + 0.03 + length * u, np.full_like(u, FLAG_POLE[1]),
                         FLAG_TOP - height + height * v], -1)

    return parametric_grid(fn, 24, 10)


def flag_vertices(rest: np.ndarray, t: float) -> np.ndarray:
    """Deformed flag [V, 3] at time t: a travelling wave whose amplitude grows from the pole to the free edge,
    with a slight droop, so the sheet keeps its attachment to the pole."""
    s = (rest[:, 0] - rest[:, 0].min()) / FLAG_SIZE[0]  # 0 at the pole, 1 at the tip
    phase = 2 * np.pi * (FLAG_WAVES * s - FLAG_CYCLES * t)
    out = rest.copy()
    out[:, 1] += FLAG_AMPLITUDE * s * np.sin(phase)
    out[:, 0] -= 0.25 * FLAG_AMPLITUDE * s * (1 - np.cos(phase))  # the wave shortens the flag a bit
    out[:, 2] -= 0.05 * s * s
    return out


def moving_parts(t: float) -> list[Part]:
    ball = trimesh.creation.icosphere(subdivisions=3, radius=BALL_RADIUS)
    cube = trimesh.creation.box(extents=[CUBE_SIZE] * 3)
    rest_v, rest_f = flag_rest()
    return [
        Part.from_trimesh("ball", ball, Material(ball_texture, specular=0.4, shininess=40.0),
                          transform=ball_transform(t), dynamic=True),
        Part.from_trimesh("cube", cube, Material(cube_texture), transform=cube_transform(t), smooth=False,
                          dynamic=True),
        Part("flag", flag_vertices(rest_v, t), rest_f, Material(flag_texture), tex_coords=rest_v, dynamic=True),
    ]


def camera_rig(n_cameras: int) -> np.ndarray:
    """[C, 4, 4] fixed cameras on an arc in front of the scene (-y side), camera 0 in the middle.

    Cameras alternate left/right of centre at growing azimuths and alternate in height, like a capture rig."""
    target = np.array([0.0, 0.0, 0.45])
    poses = []
    for c in range(n_cameras):
        k = (c + 1) // 2
        side = 1 if c % 2 else -1
        az = np.deg2rad(-90.0 + side * 70.0 * k / max((n_cameras - 1 + 1) // 2, 1))
        height = 1.35 if c == 0 else (1.05 if k % 2 else 1.85)
        eye = np.array([3.3 * np.cos(az), 3.3 * np.sin(az), height])
        poses.append(look_at(eye, target))
    return np.stack(poses).astype(np.float32)


def generate(resolution: int = 96, n_cameras: int = 16, n_frames: int = 24, ss: int = 2, n_points: int = 8000,
             incremental: bool = True) -> dict[str, np.ndarray]:
    """Render every camera at every frame; returns a bundle (see :mod:`.common`).

    ``incremental`` re-shades only the pixels moving parts can affect (:mod:`.sequence`); False renders every
    frame in full, with the same result.

    Ground truth: ``gt/dynamic_mask`` [N, H, W], ``gt/depth``, ``gt/normal``, ``gt/part`` (+ ``gt/part_names``),
    ``gt/static_mesh``, and per moving object ``gt/objects/<name>/``: ``mesh`` (rest pose, object-local for the
    rigid ones), ``transforms`` [T, 4, 4] (local -> world) or, for the flag, ``vertices`` [T, V, 3] (world).
    """
    T, C = n_frames, n_cameras
    times = np.arange(T) / max(T - 1, 1)
    statics = static_parts()
    lighting = Lighting(sun_dir=(0.35, -0.45, 0.82))
    rig = camera_rig(C)
    k = np.array(pinhole(resolution, resolution, 58.0), dtype=np.float32)
    cameras = make_cameras(rig, np.tile(k, (C, 1)), resolution, resolution)

    # [C, T, ...] -> camera-major [C * T, ...]: index = c * T + t.
    seq = render_sequence(statics, moving_parts, times, cameras, lighting, SKY, ROOM_RADIUS, ss=ss,
                          incremental=incremental)
    stack = {key: v.reshape(C * T, *v.shape[2:]) for key, v in seq.items()}

    scene0 = RayScene(statics + moving_parts(0.0), lighting, background=SKY, scale=ROOM_RADIUS)
    pts, nrm, pid, tex = sample_parts(scene0.parts, n_points, seed=11)
    colors = scene0.shade_points(pts, nrm, pid, tex)

    static_mesh = trimesh.util.concatenate([trimesh.Trimesh(p.vertices, p.faces, process=False) for p in statics])
    rest_v, rest_f = flag_rest()
    camera_ids = np.repeat(np.arange(C), T)
    frame_ids = np.tile(np.arange(T), C)
    names = [p.name for p in scene0.parts]
    return {
        "images": to_uint8(stack["rgb"]),
        "camtoworlds": np.repeat(rig, T, axis=0),
        "intrinsics": np.tile(k, (C * T, 1)),
        "times": times[frame_ids].astype(np.float32),
        "frame_ids": frame_ids,
        "camera_ids": camera_ids,
        "split/train": np.nonzero(camera_ids != 0)[0],
        "split/test": np.nonzero(camera_ids == 0)[0],
        "points": pts.astype(np.float32),
        "point_colors": colors,
        "aabb": np.array([[-ROOM_RADIUS - 0.05, -ROOM_RADIUS - 0.05, 0.0],
                          [ROOM_RADIUS + 0.05, ROOM_RADIUS + 0.05, WALL_HEIGHT]], np.float32),
        "background": SKY.astype(np.float32),
        "gt/dynamic_mask": stack["dynamic"],
        "gt/depth": stack["depth"],
        "gt/normal": stack["normal"],
        "gt/part": stack["part"],
        "gt/part_names": np.array(names),
        **mesh_arrays("gt/static_mesh", static_mesh),
        **mesh_arrays("gt/objects/ball/mesh", trimesh.creation.icosphere(subdivisions=3, radius=BALL_RADIUS)),
        "gt/objects/ball/transforms": np.stack([ball_transform(t) for t in times]).astype(np.float32),
        "gt/objects/ball/radius": np.float32(BALL_RADIUS),
        "gt/objects/ball/orbit_radius": np.float32(BALL_ORBIT),
        "gt/objects/ball/arc": np.array(BALL_ARC, np.float32),
        **mesh_arrays("gt/objects/cube/mesh", trimesh.creation.box(extents=[CUBE_SIZE] * 3)),
        "gt/objects/cube/transforms": np.stack([cube_transform(t) for t in times]).astype(np.float32),
        "gt/objects/cube/spin": np.float32(CUBE_SPIN),
        "gt/objects/cube/bob": np.float32(CUBE_BOB),
        **mesh_arrays("gt/objects/flag/mesh", (rest_v, rest_f)),
        "gt/objects/flag/vertices": np.stack([flag_vertices(rest_v, t) for t in times]).astype(np.float32),
        "gt/objects/flag/amplitude": np.float32(FLAG_AMPLITUDE),
        "gt/objects/flag/waves": np.float32(FLAG_WAVES),
        "gt/objects/flag/cycles": np.float32(FLAG_CYCLES),
    }
