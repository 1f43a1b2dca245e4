"""Benchmark the per-Gaussian max-weight pass (Swift4D's temporal-importance pruning): the C++ kernel (one
colourless tile forward with a per-element running max of α·T) vs its pure-torch twin, on the raster benchmark's
scene model (``bench_raster.make_scene``), several cameras per call as the pruning pass batches them.

    python scripts/bench_max_weights.py [--sizes 10000,100000] [--resolutions 128,256] [--views 4] [--repeats 5]
                                        [--threads N] [--out bench_results/max_weights.json]

Prints a table (median wall seconds per call and the ratio, measured in the same run) and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_raster import make_scene, time_fn  # noqa: E402

from recon.render.gaussian_weights import gaussian_max_weights  # noqa: E402


def _cameras(view: torch.Tensor, K: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n cameras: the benchmark camera yawed by a few degrees each (all see most of the scene)."""
    views = []
    for i in range(n):
        a = math.radians(3.0 * (i - (n - 1) / 2))
        R = torch.tensor([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]])
        v = view[0].clone()
        v[:3, :3] = R @ v[:3, :3]
        views.append(v)
    return torch.stack(views), K.expand(n, 3, 3).contiguous()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--resolutions", default="128,256")
    ap.add_argument("--views", type=int, default=4, help="cameras per call")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="bench_results/max_weights.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    print(f"{'N':>8} {'res':>5} {'views':>5} {'kernel s':>9} {'torch s':>9} {'ratio':>7} {'max |diff|':>11}")
    for n in [int(s) for s in args.sizes.split(",")]:
        for res in [int(r) for r in args.resolutions.split(",")]:
            scene, view, K = make_scene(n, res)
            g = {k: v.detach() for k, v in scene.items()}
            views, Ks = _cameras(view, K, args.views)
            call = lambda backend: gaussian_max_weights(  # noqa: E731
                g["means"], g["quats"], g["scales"], g["opacities"], views, Ks, res, res, backend=backend)
            t_k, _ = time_fn(lambda: call("cpu"), args.repeats)
            t_t, _ = time_fn(lambda: call("torch"), max(1, args.repeats // 2))
            diff = float((call("cpu") - call("torch")).abs().max())
            rows.append({"n": n, "res": res, "views": args.views, "kernel_s": t_k, "torch_s": t_t,
                         "ratio": t_t / t_k, "max_abs_diff": diff})  # fmt: skip
            print(f"{n:>8} {res:>5} {args.views:>5} {t_k:>9.4f} {t_t:>9.4f} {t_t / t_k:>6.1f}x {diff:>11.2e}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(), "load_avg_1m": os.getloadavg()[0], "torch": torch.__version__}  # fmt: skip
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
