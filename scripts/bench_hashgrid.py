#!/usr/bin/env python
"""Benchmark the hash-grid encoding implementations: the C++ CPU kernel (cpu), its pure-torch twin (torch), the
plain-autograd path and the per-level reference.

Times median forward (no grad) and forward+backward (gradients for both the points and the table, as in a
deformation field where the Gaussian centres are optimised too; ``--no-input-grad`` for the table only, as in
Swift4D, whose field input is detached) for several point counts, 3D and 4D, and table sizes. Prints a rich
table and writes JSON (default bench_results/hashgrid.json).

    .venv/bin/python scripts/bench_hashgrid.py                       # CPU, default grid of configs
    .venv/bin/python scripts/bench_hashgrid.py --quick               # 16k points only
    .venv/bin/python scripts/bench_hashgrid.py --device cuda         # the torch twin on a GPU
    .venv/bin/python scripts/bench_hashgrid.py --dims 4 --features 4 --log2-sizes 12 15 --sizes 8192 65536 \
        --no-input-grad --threads 1                                  # Swift4D's field

Notes on CPU numbers:
  * the 16 x 2 x 2^19 table is 67 MB; its dense gradient is allocated per backward, and first-touch page faults
    on that allocation cost ~10-25 ms. ``THP_MEM_ALLOC_ENABLE=1`` (read by torch's CPU allocator) backs large
    allocations with transparent huge pages and removes most of it; the script reports the env it ran under.
  * on a shared 2-core machine medians are noisy; run with --threads 1 for stable ratios.

On CUDA the same code runs unchanged (index_add_ becomes atomicAdd scatter, embedding_bag a fused gather
kernel); expect it to be launch-bound at 16k points (tens of small kernels per level group) and bandwidth-bound
above. tcnn's fused CUDA kernel would still be several times faster there; this path is the portable fallback.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from recon.fields.hashgrid import HashGridEncoding


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn, device: torch.device, repeats: int, warmup: int = 1) -> tuple[float, float]:
    """(median wall ms, median process-CPU ms) over ``repeats`` calls.

    The CPU-time column is what to compare on a shared machine: with --threads 1 it is the work done by this
    process, unaffected by time spent descheduled while other jobs hold the cores (wall time on an
    oversubscribed 2-core box can be 2-5x the CPU time and swings between runs). On CUDA only wall time counts.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    wall, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        sync(device)
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return statistics.median(wall), statistics.median(cpu)


def bench_one(d: int, n_points: int, log2_size: int, impl: str, args, device: torch.device) -> dict:
    enc = HashGridEncoding(d, n_levels=args.levels, n_features_per_level=args.features, log2_hashmap_size=log2_size,
                           base_resolution=16, max_resolution=args.max_res, impl=impl).to(device)
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(n_points, d, generator=g).to(device).requires_grad_(not args.no_input_grad)
    upstream = torch.randn(n_points, enc.n_output_dims, generator=g).to(device)

    def fwd():
        with torch.no_grad():
            enc(x)

    def fwd_bwd():
        enc.table.grad = None  # like optimizer.zero_grad(set_to_none=True)
        x.grad = None
        enc(x).backward(upstream)

    repeats = args.repeats if impl != "reference" or n_points <= 65536 else max(1, args.repeats // 2)
    t_f, c_f = timeit(fwd, device, repeats)
    t_fb, c_fb = timeit(fwd_bwd, device, repeats)
    return {
        "device": device.type, "dims": d, "n_points": n_points, "levels": args.levels, "features": args.features,
        "log2_hashmap_size": log2_size, "n_params": enc.table.numel(), "impl": impl,
        "fwd_ms": round(t_f, 2), "fwd_bwd_ms": round(t_fb, 2),
        "fwd_cpu_ms": round(c_f, 2), "fwd_bwd_cpu_ms": round(c_fb, 2),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[16384, 65536, 262144])
    p.add_argument("--dims", type=int, nargs="+", default=[3, 4])
    p.add_argument("--log2-sizes", type=int, nargs="+", default=[15, 19])
    p.add_argument("--levels", type=int, default=16)
    p.add_argument("--features", type=int, default=2)
    p.add_argument("--max-res", type=float, default=2048)
    p.add_argument("--impls", nargs="+", default=["cpu", "torch", "autograd", "reference"],
                   help="cpu (C++ kernel; CPU only), torch (fused torch twin), autograd, reference")
    p.add_argument("--no-input-grad", action="store_true", help="backward computes the table gradient only")
    p.add_argument("--ref-max-points", type=int, default=65536,
                   help="skip the slow per-level reference above this many points (memory/time)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, or auto (cuda if available)")
    p.add_argument("--quick", action="store_true", help="16k points, 2^19 table only")
    p.add_argument("--out", default="bench_results/hashgrid.json")
    args = p.parse_args(argv)

    if args.quick:
        args.sizes, args.log2_sizes = [16384], [19]
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = []
    if args.device in ("cpu", "auto"):
        devices.append(torch.device("cpu"))
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            print("CUDA not available", file=sys.stderr)
            return 1
        devices = [torch.device("cuda")] if args.device == "cuda" else devices + [torch.device("cuda")]

    rows = []
    for device in devices:
        for d in args.dims:
            for log2_size in args.log2_sizes:
                for n in args.sizes:
                    group = {}
                    for impl in args.impls:
                        if (impl == "reference" and n > args.ref_max_points) or (impl == "cpu" and device.type != "cpu"):
                            continue
                        r = bench_one(d, n, log2_size, impl, args, device)
                        group[impl] = r
                        rows.append(r)
                        print(f"{device.type} d={d} T={log2_size} N={n} {impl}: fwd {r['fwd_ms']} ms "
                              f"(cpu {r['fwd_cpu_ms']}), fwd+bwd {r['fwd_bwd_ms']} ms (cpu {r['fwd_bwd_cpu_ms']})",
                              file=sys.stderr, flush=True)
                    # Ratios from CPU time on CPU (robust to other jobs on the machine), wall time on CUDA.
                    key = "cpu_ms" if device.type == "cpu" else "ms"
                    for r in group.values():
                        for name in ("reference", "torch"):
                            base = group.get(name)
                            if base is not None:
                                r[f"speedup_fwd_vs_{name}"] = round(base[f"fwd_{key}"] / r[f"fwd_{key}"], 2)
                                r[f"speedup_fwd_bwd_vs_{name}"] = round(base[f"fwd_bwd_{key}"] / r[f"fwd_bwd_{key}"], 2)

    meta = {
        "torch": torch.__version__, "threads": torch.get_num_threads(), "platform": platform.platform(),
        "processor": platform.processor(), "cpu_count": os.cpu_count(),
        "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE"),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "repeats": args.repeats,
        "note": "medians of wall and process-CPU time; fwd+bwd computes grads for "
                + ("the table only" if args.no_input_grad else "points and table"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))

    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # rich is a dependency, but keep the script usable without it
        print(json.dumps(rows, indent=2))
        return 0
    grads = "table grad only" if args.no_input_grad else "point + table grads"
    table = Table(title=f"hash grid encoding ({args.levels} levels x {args.features} features, {grads}, "
                        f"threads={torch.get_num_threads()}, torch {torch.__version__})")
    for col in ("device", "d", "T", "N", "impl", "fwd ms", "fwd cpu", "fwd+bwd ms", "fwd+bwd cpu", "x ref fwd",
                "x ref f+b", "x torch fwd", "x torch f+b"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["device"], str(r["dims"]), str(r["log2_hashmap_size"]), str(r["n_points"]), r["impl"],
                      f"{r['fwd_ms']:.1f}", f"{r['fwd_cpu_ms']:.1f}", f"{r['fwd_bwd_ms']:.1f}",
                      f"{r['fwd_bwd_cpu_ms']:.1f}",
                      str(r.get("speedup_fwd_vs_reference", "")), str(r.get("speedup_fwd_bwd_vs_reference", "")),
                      str(r.get("speedup_fwd_vs_torch", "")), str(r.get("speedup_fwd_bwd_vs_torch", "")))
    Console().print(table)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
