"""Rigid-body engines for dropping exported blocks: MuJoCo (what ``recon.physics`` uses) against pybullet.

    .venv/bin/python scripts/bench_rigid.py                    # writes bench_results/rigid.json
    .venv/bin/python scripts/bench_rigid.py --seeds 1 --repeats 1

pybullet comes with the ``physics-bench`` extra (``pip install -e '.[physics-bench]'``); without it only MuJoCo runs.

Three scenes, each simulated for ``--seconds`` (3 s) and recorded at 30 fps, with the same time step, friction and
convex-hull collision shapes in both engines:

- ``solids4``: the four primitives of the built-in ``solids`` demo (cube, sphere hull, cylinder hull, superquadric
  hull), lifted 0.2 and tilted by a random ~11 degrees each; every body ends on the ground. ``solids4 x0.01``: the
  same a hundred times smaller, still at g = 9.81 (does the engine's contact handling follow the scene's scale?).
- ``pile10``: ten convex bodies (boxes, ellipsoid and superquadric hulls, 0.12-0.35 across) dropped from staggered
  heights onto a 1 x 1 patch, each 0.05 above the bodies under it, so that they land on each other.

Per engine and scene (median over ``--seeds`` random tilts): wall time of the simulation alone (median of
``--repeats``), the deepest interpenetration at the end measured without the engine
(``recon.physics.max_penetration``), the largest gap between a body's lowest point and the ground in ``solids4``
(positive: it floats), the fastest body at the end and how many bodies (over all seeds) are below the settle
speed ``0.01 sqrt(g L)`` then. Lengths and speeds in the table are divided by the scene's size ``L`` (the smallest
extent of any body's hull), so that scenes of different scale compare; the JSON has them in scene units. Also the
import time, the installed size of each engine's own distribution and its licence. A third engine row, MuJoCo
without rolling friction, shows why ``simulate_rigid`` has it.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import importlib.util
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import trimesh
from rich.console import Console
from rich.table import Table
from trimesh.transformations import quaternion_matrix, rotation_matrix

from recon.physics import RigidBody, max_penetration, simulate_rigid
from recon.physics.rigid import RigidResult

FPS = 30.0
UP = np.array([0.0, 0.0, 1.0])


def scene_solids4(seed: int) -> list[RigidBody]:
    from recon.demo.solids import build

    rng = np.random.default_rng(seed)
    bodies = []
    for mesh in build()[2]:
        m = mesh.copy()
        m.apply_transform(rotation_matrix(0.2 * rng.normal(), rng.normal(size=3), m.centroid))
        bodies.append(RigidBody(m.apply_translation(0.2 * UP), friction=0.8))
    return bodies


def scene_solids4_small(seed: int) -> list[RigidBody]:
    """``solids4`` a hundred times smaller (blocks 4-6 mm across at g = 9.81): the same drop at another scale."""
    return [RigidBody(b.mesh.copy().apply_scale(0.01), friction=b.friction) for b in scene_solids4(seed)]


def scene_pile10(seed: int) -> list[RigidBody]:
    from recon.demo.solids import superquadric

    rng = np.random.default_rng(100 + seed)
    bodies = []
    for i in range(10):
        half = rng.uniform(0.06, 0.175, size=3)
        kind = i % 3
        if kind == 0:
            m = trimesh.creation.box(extents=2 * half)
        elif kind == 1:
            m = trimesh.creation.icosphere(subdivisions=2).apply_scale(half)
        else:
            m = superquadric(tuple(half), 0.4, 0.4, nu=32, nv=16)
        m = m.convex_hull
        m.apply_transform(rotation_matrix(rng.uniform(0, 2 * np.pi), rng.normal(size=3)))
        m.apply_translation(np.append(rng.uniform(-0.5, 0.5, size=2), 0.0) - m.bounds[0] * [0, 0, 1])
        # 0.05 above the highest body already placed whose footprint (xy box) overlaps this one's: a heap of a few
        # layers whose bodies land on each other, not one tall tower
        below = [b.mesh.bounds[1, 2] for b in bodies
                 if np.all(b.mesh.bounds[0, :2] < m.bounds[1, :2]) and np.all(m.bounds[0, :2] < b.mesh.bounds[1, :2])]
        bodies.append(RigidBody(m.apply_translation([0.0, 0.0, max(below, default=0.0) + 0.05])))
    return bodies


def run_pybullet(bodies: list[RigidBody], seconds: float, dt: float, rolling: float) -> RigidResult:
    """The same drop in pybullet (Bullet's convex hull shapes, fixed step ``dt``, the same sliding friction; rolling
    and spinning friction ``rolling`` times each body's size, as in ``simulate_rigid``, though Bullet combines the two
    bodies' values differently)."""
    import pybullet as pb

    cid = pb.connect(pb.DIRECT)
    try:
        pb.setGravity(*(-9.81 * UP), physicsClientId=cid)
        pb.setPhysicsEngineParameter(fixedTimeStep=dt, numSubSteps=0, physicsClientId=cid)
        plane = pb.createCollisionShape(pb.GEOM_PLANE, planeNormal=UP.tolist(), physicsClientId=cid)
        ground = pb.createMultiBody(0, plane, physicsClientId=cid)
        pb.changeDynamics(ground, -1, lateralFriction=0.8, physicsClientId=cid)
        ids, centres, radii = [], [], []
        for b in bodies:
            hull = b.hull()
            c = np.asarray(hull.center_mass)
            shape = pb.createCollisionShape(pb.GEOM_MESH, vertices=(hull.vertices - c).tolist(), physicsClientId=cid)
            body = pb.createMultiBody(b.resolved_mass(), shape, basePosition=c.tolist(), physicsClientId=cid)
            size = rolling * hull.extents.min()
            pb.changeDynamics(body, -1, lateralFriction=b.friction, rollingFriction=size, spinningFriction=size,
                              physicsClientId=cid)
            ids.append(body)
            centres.append(c)
            radii.append(np.linalg.norm(hull.vertices - c, axis=1).max())
        substeps = round(1 / (FPS * dt))
        n = int(round(seconds * FPS)) + 1
        poses, speed = np.zeros((n, len(bodies), 4, 4)), np.zeros((n, len(bodies)))
        for t in range(n):
            if t:
                for _ in range(substeps):
                    pb.stepSimulation(physicsClientId=cid)
            for k, (body, c, r) in enumerate(zip(ids, centres, radii)):
                pos, quat = pb.getBasePositionAndOrientation(body, physicsClientId=cid)
                T = quaternion_matrix([quat[3], quat[0], quat[1], quat[2]])  # pybullet: xyzw
                T[:3, 3] = np.asarray(pos) - T[:3, :3] @ c
                poses[t, k] = T
                v, w = pb.getBaseVelocity(body, physicsClientId=cid)
                speed[t, k] = np.linalg.norm(v) + np.linalg.norm(w) * r
    finally:
        pb.disconnect(cid)
    length = min(b.hull().extents.min() for b in bodies)
    return RigidResult(poses, np.arange(n) / FPS, speed, np.zeros(n), dt, substeps, 0.01 * math.sqrt(9.81 * length))


def measure(engine: str, scene, seeds: int, repeats: int, seconds: float) -> dict:
    walls, pens, gaps, ends, settled = [], [], [], [], []
    for seed in range(seeds):
        bodies = scene(seed)
        meshes = [b.mesh for b in bodies]
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            ref = simulate_rigid(bodies, [0, 0, 0], UP, seconds=seconds, fps=FPS,
                                 rolling_friction=0.0 if engine == "mujoco, no rolling friction" else 0.02)
            if engine == "pybullet":
                t0 = time.perf_counter()  # the step recon's MuJoCo set-up chose
                res = run_pybullet(bodies, seconds, ref.timestep, 0.02)
            else:
                res = ref
            times.append(time.perf_counter() - t0)
        final = res.posed_meshes(meshes)
        walls.append(statistics.median(times))
        pens.append(max_penetration(final, [0, 0, 0], UP))
        gaps.append(max(float(m.vertices[:, 2].min()) for m in final))
        size = min(b.hull().extents.min() for b in bodies)
        ends.append(float(res.max_speed[-1]))
        settled.append(int((res.speed[-1] < res.settle_speed).sum()))
    return {"wall_s": statistics.median(walls), "penetration": statistics.median(pens),
            "penetration_max": max(pens), "ground_gap": statistics.median(gaps), "end_speed": statistics.median(ends),
            "size": size,
            "at_rest": f"{sum(settled)}/{seeds * len(meshes)}", "timestep": res.timestep, "bodies": len(meshes)}


def package(name: str, module: str) -> dict:
    dist = md.distribution(name)
    size = sum((Path(dist.locate_file(f)).stat().st_size for f in dist.files or []
                if Path(dist.locate_file(f)).is_file()), 0)
    t = subprocess.run([sys.executable, "-c", f"import time; t = time.perf_counter(); import {module}; "
                        "print(time.perf_counter() - t)"], capture_output=True, text=True, check=True)
    licence = dist.metadata.get("License-Expression") or dist.metadata.get("License") or "?"
    return {"version": dist.version, "installed_mb": size / 2**20, "licence": licence,
            "requires": [r.split(";")[0] for r in dist.requires or [] if "extra ==" not in r],
            "import_s": float(t.stdout.strip().splitlines()[-1])}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("bench_results/rigid.json"))
    args = ap.parse_args()
    engines = ["mujoco", "pybullet", "mujoco, no rolling friction"]
    if importlib.util.find_spec("pybullet") is None:
        print("pybullet is not installed (pip install -e '.[physics-bench]'): its rows are left out")
        engines.remove("pybullet")
    scenes = {"solids4": scene_solids4, "solids4 x0.01": scene_solids4_small, "pile10": scene_pile10}
    results = {"platform": platform.platform(), "processor": platform.processor(), "seconds": args.seconds,
               "packages": {name: package(name, name) for name in ("mujoco", "pybullet") if name in engines},
               "runs": {e: {s: measure(e, fn, args.seeds, args.repeats, args.seconds) for s, fn in scenes.items()}
                        for e in engines}}
    table = Table(title=f"rigid-body drop, {args.seconds:g} s simulated, median of {args.seeds} seeds")
    for col in ("engine", "scene", "bodies", "step", "wall", "penetration / L (max)", "ground gap / L", "end speed / L",
                "at rest"):
        table.add_column(col, justify="left" if col in ("engine", "scene") else "right")
    for e, by_scene in results["runs"].items():
        for s, r in by_scene.items():
            L = r["size"]
            table.add_row(e, s, str(r["bodies"]), f"{r['timestep'] * 1e3:.2f} ms", f"{r['wall_s']:.3f} s",
                          f"{r['penetration'] / L:.1e} ({r['penetration_max'] / L:.1e})",
                          f"{r['ground_gap'] / L:+.1e}" if s.startswith("solids4") else "-",
                          f"{r['end_speed'] / L:.3f}/s", r["at_rest"])
    console = Console(width=160)
    console.print(table)
    pk = Table(title="packages")
    for col in ("package", "version", "licence", "installed", "import", "requires"):
        pk.add_column(col)
    for name, p in results["packages"].items():
        pk.add_row(name, p["version"], p["licence"], f"{p['installed_mb']:.0f} MB", f"{p['import_s']:.2f} s",
                   ", ".join(p["requires"]))
    console.print(pk)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
