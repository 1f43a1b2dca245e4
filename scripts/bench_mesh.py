"""Benchmark the mesh rasterizer and PBR shading (CPU, and CUDA when available).

    .venv/bin/python scripts/bench_mesh.py                 # writes bench_results/mesh.json
    .venv/bin/python scripts/bench_mesh.py --faces 20000 --res 128 --repeats 2

Measures: rasterize + interpolate + antialias forward and backward for a ~100k-triangle mesh at 256x256; split-sum
and Monte-Carlo shading throughput in pixels per second; split-sum pre-filtering time.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
import trimesh
from rich.console import Console
from rich.table import Table

from recon.render.envmap import prepare_split_sum
from recon.render.mesh import antialias, interpolate, mesh_topology, rasterize
from recon.render.pbr import shade_mc, shade_split_sum


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timeit(fn, device, repeats):
    fn()  # warm-up (caches, allocator, kernels)
    _sync(device)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def _mesh(target_faces):
    level = max(1, int(round(math.log(target_faces / 20) / math.log(4))))
    m = trimesh.creation.icosphere(level)
    d = m.vertices
    r = 1 + 0.15 * np.sin(4 * d[:, 0]) * np.sin(4 * d[:, 1]) * np.sin(4 * d[:, 2])
    return torch.tensor(d * r[:, None], dtype=torch.float32), torch.tensor(m.faces, dtype=torch.int64)


def bench_raster(device, faces_target, res, repeats):
    V, F = _mesh(faces_target)
    V, F = V.to(device), F.to(device)
    vm = torch.eye(4, device=device)[None]
    vm[0, 2, 3] = 3.0
    f = 0.5 * res / math.tan(math.radians(25))
    K = torch.tensor([[[f, 0, res / 2], [0, f, res / 2], [0, 0, 1]]], device=device)
    colors = torch.rand(V.shape[0], 3, device=device)
    topo = mesh_topology(F)
    Vp = V.clone().requires_grad_(True)
    cp = colors.clone().requires_grad_(True)

    def fwd():
        with torch.no_grad():
            fr = rasterize(V, F, vm, K, res, res)
            antialias(interpolate(colors, fr)[..., 0, :], fr, topo)

    def fwd_bwd():
        fr = rasterize(Vp, F, vm, K, res, res)
        img = antialias(interpolate(cp, fr)[..., 0, :], fr, topo)
        img.sum().backward()

    def raster_only():
        with torch.no_grad():
            rasterize(V, F, vm, K, res, res)

    def layers4():
        with torch.no_grad():
            rasterize(V, F, vm, K, res, res, n_layers=4)

    return {
        "faces": int(F.shape[0]),
        "resolution": res,
        "rasterize_s": _timeit(raster_only, device, repeats),
        "rasterize_4layers_s": _timeit(layers4, device, repeats),
        "forward_s": _timeit(fwd, device, repeats),
        "forward_backward_s": _timeit(fwd_bwd, device, repeats),
    }


def bench_shading(device, n_pixels, mc_samples, repeats):
    g = torch.Generator().manual_seed(0)
    n = torch.nn.functional.normalize(torch.randn(n_pixels, 3, generator=g), dim=-1).to(device)
    v = torch.nn.functional.normalize(n + 0.5 * torch.randn(n_pixels, 3, generator=g).to(device), dim=-1)
    bc = torch.rand(n_pixels, 3, generator=g).to(device)
    r = torch.rand(n_pixels, 1, generator=g).to(device)
    m = (torch.rand(n_pixels, 1, generator=g) > 0.5).float().to(device)
    env = (torch.rand(64, 128, 3, generator=g) * 2).to(device)
    prep = _timeit(lambda: prepare_split_sum(env), device, repeats)
    light = prepare_split_sum(env)
    t_ss = _timeit(lambda: shade_split_sum(n, v, bc, r, m, light), device, repeats)
    n_mc = max(1, n_pixels // 16)
    t_mc = _timeit(lambda: shade_mc(n[:n_mc], v[:n_mc], bc[:n_mc], r[:n_mc], m[:n_mc], env, n_samples=mc_samples),
                   device, repeats)
    return {
        "prefilter_s": prep,
        "split_sum_pixels_per_s": n_pixels / t_ss,
        "mc_samples_per_strategy": mc_samples,
        "mc_pixels_per_s": n_mc / t_mc,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=100_000)
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--pixels", type=int, default=65536)
    ap.add_argument("--mc-samples", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--out", type=Path, default=Path("bench_results/mesh.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    results = {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "devices": {}}
    for dev in devices:
        name = torch.cuda.get_device_name() if dev.type == "cuda" else platform.processor() or "cpu"
        results["devices"][dev.type] = {
            "name": name,
            "raster": bench_raster(dev, args.faces, args.res, args.repeats),
            "shading": bench_shading(dev, args.pixels, args.mc_samples, args.repeats),
        }
    table = Table(title=f"recon mesh/PBR benchmark (threads={results['threads']})")
    table.add_column("device")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for d, r in results["devices"].items():
        ra, sh = r["raster"], r["shading"]
        rows = [
            (f"rasterize {ra['faces']} tris @ {ra['resolution']}^2", f"{ra['rasterize_s'] * 1e3:.1f} ms"),
            ("rasterize, 4 depth layers", f"{ra['rasterize_4layers_s'] * 1e3:.1f} ms"),
            ("raster+interp+antialias fwd", f"{ra['forward_s'] * 1e3:.1f} ms"),
            ("raster+interp+antialias fwd+bwd", f"{ra['forward_backward_s'] * 1e3:.1f} ms"),
            ("split-sum prefilter (64x128 env)", f"{sh['prefilter_s'] * 1e3:.1f} ms"),
            ("split-sum shading", f"{sh['split_sum_pixels_per_s'] / 1e6:.2f} Mpx/s"),
            (f"MC shading ({sh['mc_samples_per_strategy']}+{sh['mc_samples_per_strategy']} spp)",
             f"{sh['mc_pixels_per_s'] / 1e3:.1f} kpx/s"),
        ]
        for i, (k, v) in enumerate(rows):
            table.add_row(d if i == 0 else "", k, v)
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
