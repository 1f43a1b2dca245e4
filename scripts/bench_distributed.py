#!/usr/bin/env python
"""Data-parallel training: steps/s, views/s and test PSNR after the same number of training views, for one
process against several (``recon train --gpus N``).

On the CPU (default) it compares, on the same cores:
  - 1 process x batch 1 (the usual run: one view a step),
  - 1 process x batch R (the same views per step as R processes, in one process),
  - R gloo processes x batch 1, with the cores split between them.
With R = 2 on a 2-core machine this measures the overhead of splitting a step over processes, not a speed-up:
the cores are the same. On a machine with GPUs, ``--device cuda --procs 1 2 4 8`` gives one process per GPU.

Usage:
    python scripts/bench_distributed.py [--data demo:static] [--views 2400] [--procs 2] [--device cpu]

Prints a table and writes JSON (default outputs/bench_distributed/bench_distributed.json).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import git_commit, recon_cli  # noqa: E402


def train(args, out: Path, procs: int, batch: int, threads: int, seed: int) -> dict:
    step_views = procs * batch
    steps = args.views // step_views
    cli = ["train", "--method", args.method, *( [args.data] if args.data else []), "--max-steps", str(steps), "--seed", str(seed),
           "--output-dir", str(out), "--trainer.batch-size", str(batch), "--trainer.lpips", "none",
           "--trainer.checkpoint-every", str(10**9), "--device", args.device, *args.extra]  # fmt: skip
    if threads:
        cli += ["--trainer.threads", str(threads)]
    if procs > 1:
        cli += ["--gpus", str(procs)]
    t0 = time.perf_counter()
    run_dir = Path(recon_cli(*cli).strip().splitlines()[-1])
    wall = time.perf_counter() - t0
    m = json.loads((run_dir / "metrics.json").read_text())
    train_s = m["train_minutes"] * 60
    return {"processes": procs, "threads_per_process": threads or None, "batch_per_process": batch, "views_per_step": step_views,
            "steps": steps, "views": steps * step_views, "seed": seed, "train_s": train_s, "steps_per_s": steps / train_s,
            "views_per_s": steps * step_views / train_s, "wall_s": wall, "test_psnr": m["psnr"], "run": str(run_dir)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="demo:static", help="data folder or demo:<name>")
    ap.add_argument("--method", default="gs")
    ap.add_argument("--views", type=int, default=2400, help="training views per run (steps = views / views per step)")
    ap.add_argument("--procs", type=int, nargs="+", default=[2], help="process counts to compare with one process")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--output", type=Path, default=Path("outputs/bench_distributed"))
    ap.add_argument("extra", nargs="*", help="more `recon train` options (after --)")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    configs = [(1, 1), *[c for r in args.procs if r > 1 for c in ((1, r), (r, 1))]]
    rows = []
    commit = git_commit()  # the code the numbers belong to, before anything runs
    for seed in args.seeds:
        for procs, batch in configs:
            threads = max(1, cores // procs) if args.device == "cpu" else 0
            row = train(args, args.output / f"p{procs}_b{batch}_s{seed}", procs, batch, threads, seed)
            rows.append(row)
            print(f"  {procs} process(es) x batch {batch}, seed {seed}: {row['steps_per_s']:.2f} steps/s, {row['views_per_s']:.1f} views/s, "
                  f"test PSNR {row['test_psnr']:.2f} dB", flush=True)  # fmt: skip
    summary = []
    for procs, batch in configs:
        mine = [r for r in rows if r["processes"] == procs and r["batch_per_process"] == batch]
        summary.append({"processes": procs, "batch_per_process": batch, "views_per_step": procs * batch,
                        "threads_per_process": mine[0]["threads_per_process"],
                        "views_per_s_median": statistics.median(r["views_per_s"] for r in mine),
                        "steps_per_s_median": statistics.median(r["steps_per_s"] for r in mine),
                        "test_psnr_median": statistics.median(r["test_psnr"] for r in mine)})  # fmt: skip
    base = summary[0]["views_per_s_median"]
    print(f"\n{args.method} on {args.data}, {args.views} training views per run, device {args.device}, {cores} cores, commit {commit}")
    print(f"{'processes':>9} {'batch/proc':>10} {'threads/proc':>12} {'views/step':>10} {'steps/s':>8} {'views/s':>8} {'vs 1x1':>7} {'test PSNR':>9}")
    for s in summary:
        print(f"{s['processes']:>9} {s['batch_per_process']:>10} {str(s['threads_per_process'] or '-'):>12} {s['views_per_step']:>10} "
              f"{s['steps_per_s_median']:>8.2f} {s['views_per_s_median']:>8.1f} {s['views_per_s_median'] / base:>6.2f}x {s['test_psnr_median']:>9.2f}")  # fmt: skip
    result = {"date": _dt.datetime.now().isoformat(timespec="seconds"), "commit": commit, "machine": platform.node(), "cores": cores,
              "device": args.device, "cuda_devices": _cuda_names(), "method": args.method, "data": args.data, "views": args.views,
              "extra": args.extra, "summary": summary, "runs": rows}  # fmt: skip
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "bench_distributed.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {args.output / 'bench_distributed.json'}")


def _cuda_names() -> list[str]:
    import torch

    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


if __name__ == "__main__":
    main()
