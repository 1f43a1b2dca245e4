#!/usr/bin/env python
"""Gaussian ray tracer (recon/render/raytrace.py): BVH build time and rays/s of visibility tracing.

The workload of Relightable 3D Gaussians' visibility baking: N Gaussians on surfaces, one ray per Gaussian and
direction (64 Fibonacci directions over the hemisphere of its normal) starting at its centre, t_min 0.01, cutoff
0.9, facing test on. The scene (``--scene surfaces``, default) is N flat Gaussians spread evenly over three spheres
standing on a ground plane (about a third of the rays see open sky, the rest are shadowed or hit a neighbour), or
the Gaussians of a trained run (``--run RUN``: normals = each Gaussian's shortest axis, turned towards the
training cameras' centre; no facing test, since those normals are guesses).

Reports, in one run: the C++/OpenMP kernel on all rays; the torch twin and the all-pairs reference on a subset of
rays (their rays/s extrapolate, they are far slower); the CUDA kernel where CUDA is present; the parity of each
against the reference on the subset. Median of ``--repeats`` timings. Prints a table and writes JSON.

Usage:
    python scripts/bench_raytrace.py [--gaussians 100000] [--directions 64] [--repeats 3] [--output FILE]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import git_commit  # noqa: E402

from recon.render.raytrace import build_bvh, hemisphere_directions, trace_gaussians, trace_gaussians_reference  # noqa: E402
from recon.render.pbr import tangent_frame  # noqa: E402
from recon.rotations import rotmat_to_quat  # noqa: E402


def surface_scene(n: int, seed: int = 0):
    """N flat Gaussians on three spheres on a ground plane: means, quats, scales, opacities, normals."""
    g = torch.Generator().manual_seed(seed)
    spheres = torch.tensor([[-0.6, 0.35, 0.0, 0.35], [0.4, 0.25, 0.3, 0.25], [0.2, 0.2, -0.5, 0.2]])
    area_ground = 4.0  # a 2 x 2 ground at y = 0
    areas = torch.cat([4 * torch.pi * spheres[:, 3] ** 2, torch.tensor([area_ground])])
    counts = torch.round(areas / areas.sum() * n).long()
    counts[-1] = n - counts[:-1].sum()
    pts, nrm = [], []
    for (cx, cy, cz, r), k in zip(spheres.tolist(), counts[:-1].tolist()):
        v = torch.nn.functional.normalize(torch.randn(k, 3, generator=g), dim=-1)
        pts.append(torch.tensor([cx, cy, cz]) + r * v)
        nrm.append(v)
    k = int(counts[-1])
    xz = torch.rand(k, 2, generator=g) * 2 - 1
    pts.append(torch.stack([xz[:, 0], torch.zeros(k), xz[:, 1]], -1))
    nrm.append(torch.tensor([0.0, 1.0, 0.0]).expand(k, 3))
    means, normals = torch.cat(pts), torch.cat(nrm)
    spacing = (areas.sum() / n) ** 0.5  # mean distance between neighbours
    t1, t2 = tangent_frame(normals)
    quats = rotmat_to_quat(torch.stack([t1, t2, normals], -1))
    scales = torch.stack([torch.full((n,), 0.6 * float(spacing)), torch.full((n,), 0.6 * float(spacing)), torch.full((n,), 0.05 * float(spacing))], -1)
    opacities = 0.5 + 0.5 * torch.rand(n, generator=g)
    return means, quats, scales, opacities, normals


def run_scene(run: Path):
    from recon.engine.run import load_run
    from recon.rotations import quat_to_rotmat

    loaded = load_run(run, device="cpu")
    gs = loaded.method.gaussians()
    scales = torch.exp(gs["scales"])
    R = quat_to_rotmat(gs["quats"])
    shortest = R[torch.arange(len(scales)), :, scales.argmin(-1)]
    centre = loaded.scene.cameras.camtoworlds[:, :3, 3].float().mean(0)
    flip = ((centre - gs["means"]) * shortest).sum(-1) < 0
    normals = torch.where(flip[:, None], -shortest, shortest)
    return gs["means"], gs["quats"], scales, torch.sigmoid(gs["opacities"]), normals


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gaussians", type=int, default=100_000)
    ap.add_argument("--directions", type=int, default=64)
    ap.add_argument("--run", type=Path, default=None, help="trace the Gaussians of a trained gs run instead")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--subset", type=int, default=20_000, help="rays for the torch twin and the all-pairs reference")
    ap.add_argument("--threads", type=int, default=0, help="torch / kernel threads (0: all cores)")
    ap.add_argument("--output", type=Path, default=Path("outputs/bench_raytrace.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    commit = git_commit()
    if args.run is not None:
        means, quats, scales, opacities, normals = run_scene(args.run)
        facing = False
    else:
        means, quats, scales, opacities, normals = surface_scene(args.gaussians)
        facing = True
    n = means.shape[0]
    dirs = hemisphere_directions(normals, args.directions).reshape(-1, 3)
    origins = means[:, None, :].expand(n, args.directions, 3).reshape(-1, 3).contiguous()
    rays = dirs.shape[0]
    nrm = normals if facing else None
    rows = []
    build_s, bvh = timed(lambda: build_bvh(means, quats, scales, opacities, nrm), args.repeats)
    cpu_s, (trans, _) = timed(lambda: trace_gaussians(bvh, origins, dirs, backend="cpu"), args.repeats)
    rows.append({"implementation": "C++/OpenMP (cpu)", "rays": rays, "seconds": cpu_s, "rays_per_s": rays / cpu_s})
    # The subset: every k-th ray, so it mixes all Gaussians and directions.
    step = max(rays // args.subset, 1)
    sub = torch.arange(0, rays, step)[: args.subset]
    so, sd = origins[sub], dirs[sub]
    ref_s, (ref, _) = timed(lambda: trace_gaussians_reference(means, quats, scales, opacities, so, sd, nrm), 1)
    tw_s, (twin, _) = timed(lambda: trace_gaussians(bvh, so, sd, backend="torch"), 1)
    parity = {"cpu_vs_reference_max_abs": float((trans[sub] - ref).abs().max()), "torch_vs_reference_max_abs": float((twin - ref).abs().max()),
              "cpu_vs_torch_max_abs": float((trans[sub] - twin).abs().max())}  # fmt: skip
    rows.append({"implementation": "torch twin (wavefront)", "rays": len(sub), "seconds": tw_s, "rays_per_s": len(sub) / tw_s})
    rows.append({"implementation": "all-pairs reference (float64)", "rays": len(sub), "seconds": ref_s, "rays_per_s": len(sub) / ref_s})
    if torch.cuda.is_available():
        gbvh = bvh.to("cuda")
        go, gd = origins.cuda(), dirs.cuda()
        trace_gaussians(gbvh, go[:1000], gd[:1000])  # compile / warm up
        gpu_s, (gtrans, _) = timed(lambda: trace_gaussians(gbvh, go, gd, backend="cuda"), args.repeats)
        rows.append({"implementation": f"CUDA ({torch.cuda.get_device_name(0)})", "rays": rays, "seconds": gpu_s, "rays_per_s": rays / gpu_s})
        parity["cuda_vs_cpu_max_abs"] = float((gtrans.cpu() - trans).abs().max())
    stats = {"mean_visibility": float(trans.mean()), "shadowed_share": float((trans == 0).float().mean()), "bvh_nodes": bvh.num_nodes}
    print(f"\n{n} Gaussians x {args.directions} directions = {rays} rays; {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, commit {commit}")
    print(f"BVH build (pack + LBVH, CPU): {build_s * 1000:.1f} ms, {bvh.num_nodes} nodes")
    print(f"{'implementation':<34} {'rays':>9} {'seconds':>9} {'rays/s':>12}")
    for r in rows:
        print(f"{r['implementation']:<34} {r['rays']:>9} {r['seconds']:>9.3f} {r['rays_per_s']:>12,.0f}")
    print(f"mean visibility {stats['mean_visibility']:.3f}, shadowed (cut at 0.9) {100 * stats['shadowed_share']:.1f} %")
    print("parity (max |difference| of transmittance): " + ", ".join(f"{k} {v:.2e}" for k, v in parity.items()))
    result = {"date": _dt.datetime.now().isoformat(timespec="seconds"), "commit": commit, "machine": platform.node(), "cores": os.cpu_count(),
              "torch_threads": torch.get_num_threads(), "scene": str(args.run) if args.run else "surfaces", "gaussians": n, "directions": args.directions,
              "facing_test": facing, "build_s": build_s, "rows": rows, "parity": parity, **stats}  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
