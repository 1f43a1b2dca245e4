"""Benchmark the Gaussian rasterizer: CPU C++ kernel vs the pure-torch twin vs the dense reference (and, on CUDA,
gsplat direct vs our dispatch).

    python scripts/bench_raster.py [--quick] [--out bench_results/raster.json] [--repeats 5] [--threads N]
                                   [--sizes 100000 --resolutions 256] [--no-baselines]

Scene model (`make_scene`). It is meant to look like a trained 3DGS scene seen at that resolution:
  * one pinhole camera, focal = image width (53 deg field of view), Gaussians spread over the frustum at depths
    2..6 (uniform), covering the image plus a 10 % margin;
  * per-axis log-normal scales (sigma_log = 0.6, so Gaussians are anisotropic and some are flat), median
    0.02 * sqrt(1e5 / N) world units: trained scenes with more Gaussians have smaller ones (surface area per
    Gaussian ~ 1 / N). At 256x256 and 100k that is a median footprint sigma of ~1.3 px (3-sigma box ~8x8 px) and
    ~80 layers of Gaussians per pixel before early termination; it doubles in pixels at 512^2;
  * opacities sigmoid(N(0, 2)) (bimodal, like trained scenes), RGB colours (D=3) and, separately, SH degree 3.
Timing: forward + backward of sum(render * random weights) + sum(alphas) through means, quats, scales,
opacities and colours, after one warm-up, median of --repeats (halved for the 1M x 512^2 config); "CPU-s" is the
process CPU time of one step summed over threads, which is less sensitive than wall time to other processes
sharing the machine (the 1-minute load average is recorded per row). Memory: peak growth of the resident set during one
forward+backward step (sampled every 2 ms), i.e. what the step allocates on top of the scene.
Baselines: the torch twin runs where it has <= 6M (Gaussian, pixel) pairs (its memory is ~200 B per pair); the
dense oracle (O(N * pixels), a Python loop over Gaussians) is timed on one extra small row, 1k Gaussians at 64^2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from recon.render.gaussians import rasterize_gaussians  # noqa: E402


def make_scene(n: int, res: int, device="cpu", sh_degree=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = 2.0 + 4.0 * torch.rand(n, generator=g)
    half = 0.5 * 1.1  # tan(half fov) = 0.5 for focal = width, plus 10 % margin
    x = (2 * torch.rand(n, generator=g) - 1) * half * z
    y = (2 * torch.rand(n, generator=g) - 1) * half * z
    means = torch.stack([x, y, z], -1)
    s0 = 0.02 * math.sqrt(1e5 / n)
    scales = torch.exp(math.log(s0) + 0.6 * torch.randn(n, 3, generator=g))
    quats = torch.randn(n, 4, generator=g)
    opac = torch.sigmoid(2.0 * torch.randn(n, generator=g))
    if sh_degree is None:
        colors = torch.rand(n, 3, generator=g)
    else:
        colors = 0.2 * torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g)
    K = torch.tensor([[float(res), 0, res / 2], [0, float(res), res / 2], [0, 0, 1]])[None]
    view = torch.eye(4)[None]
    t = {"means": means, "quats": quats, "scales": scales, "opacities": opac, "colors": colors}
    t = {k: v.to(device).requires_grad_(True) for k, v in t.items()}
    return t, view.to(device), K.to(device)


class PeakRSS:
    """Peak resident-set growth (MB) while the block runs, sampled from /proc/self/statm every 2 ms."""

    def __enter__(self):
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())
        self.delta_mb = round(self.peak - self.base, 1)


def time_fn(fn, repeats: int, sync=lambda: None, cpu_times: list | None = None):
    """Median wall time after one warm-up; optionally also collects process CPU time per run."""
    fn()  # warm-up (also compiles the kernel on first use)
    sync()
    ts = []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
        if cpu_times is not None:
            cpu_times.append(time.process_time() - c0)
    return statistics.median(ts), ts


def step_fn(scene, view, K, res, backend, sh_degree=None, fwd_only=False):
    weights = torch.rand(1, res, res, 3, generator=torch.Generator().manual_seed(1)).to(view.device)
    params = list(scene.values())

    def fn():
        out, alphas, _ = rasterize_gaussians(
            scene["means"], scene["quats"], scene["scales"], scene["opacities"], scene["colors"], view, K,
            res, res, sh_degree=sh_degree, backend=backend,
        )  # fmt: skip
        if fwd_only:
            return
        loss = (out * weights).sum() + alphas.sum()
        torch.autograd.grad(loss, params)

    return fn


def dense_fn(scene, view, K, res):
    from raster_reference import rasterize_dense

    params = list(scene.values())

    def fn():
        out = rasterize_dense(
            scene["means"], scene["quats"], scene["scales"], scene["opacities"], scene["colors"], view, K, res, res
        )
        torch.autograd.grad(out["colors"].sum() + out["alphas"].sum(), params)

    return fn


def main():
    # Large buffers must go back to the OS when freed, otherwise glibc keeps them after the warm-up and the RSS
    # peak of later steps shows nothing. A fixed mmap threshold does that; it has to be set before start-up.
    # OMP_WAIT_POLICY=PASSIVE: idle OpenMP workers sleep instead of spinning. On a machine shared with other jobs
    # the spinning costs more than the second core gives (measured: 100k @ 256^2, 2 threads, load ~4: 0.43 s
    # spinning vs 0.22 s passive). libgomp reads it once at start-up, hence the re-exec; a user value is kept.
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only 10k/100k at 128/256, 3 repeats")
    ap.add_argument("--out", default="bench_results/raster.json")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sizes", default=None, help="comma list of Gaussian counts, e.g. 10000,100000")
    ap.add_argument("--resolutions", default=None, help="comma list, e.g. 128,256")
    ap.add_argument("--no-baselines", action="store_true", help="skip the torch twin and the dense reference")
    ap.add_argument("--threads", type=int, default=None, help="torch/OpenMP threads (default: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    sizes = [10_000, 100_000, 1_000_000]
    resolutions = [128, 256, 512]
    repeats = args.repeats
    if args.quick:
        sizes, resolutions, repeats = [10_000, 100_000], [128, 256], min(repeats, 3)
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    if args.resolutions:
        resolutions = [int(s) for s in args.resolutions.split(",")]

    from recon.kernels.build import kernel_info, load_cpu_rasterizer

    ext = load_cpu_rasterizer()
    rows = []
    for n in sizes:
        for res in resolutions:
            scene, view, K = make_scene(n, res)
            row = {"n_gaussians": n, "resolution": res, "threads": ext.num_threads()}
            row["cpu_fwd_s"], _ = time_fn(step_fn(scene, view, K, res, "cpu", fwd_only=True), repeats)
            with PeakRSS() as mem:
                step_fn(scene, view, K, res, "cpu")()
            row["cpu_peak_rss_delta_mb"] = mem.delta_mb
            cpu_t: list = []
            reps = repeats if n * res * res < 1e6 * 512 * 512 else max(2, repeats // 2)
            row["cpu_fwdbwd_s"], row["cpu_fwdbwd_all_s"] = time_fn(step_fn(scene, view, K, res, "cpu"), reps, cpu_times=cpu_t)
            row["cpu_fwdbwd_cputime_s"] = statistics.median(cpu_t)  # summed over threads
            row["load_avg_1min"] = os.getloadavg()[0]
            with torch.no_grad():
                _, _, meta = rasterize_gaussians(
                    scene["means"], scene["quats"], scene["scales"], scene["opacities"], scene["colors"], view, K,
                    res, res,
                )  # fmt: skip
            # size of the problem: (Gaussian, pixel) pairs inside the radius boxes
            r = meta["radii"][0].float()
            row["visible"] = int((meta["radii"][0] > 0).all(-1).sum())
            row["box_pixel_pairs"] = int(((2 * r[:, 0] + 1) * (2 * r[:, 1] + 1) * (r > 0).all(-1)).sum())
            scene_sh, _, _ = make_scene(n, res, sh_degree=3)
            row["cpu_fwdbwd_sh3_s"], _ = time_fn(step_fn(scene_sh, view, K, res, "cpu", sh_degree=3), repeats)
            # baselines where they fit in memory and time
            if not args.no_baselines and row["box_pixel_pairs"] <= 6e6:
                row["torch_fwdbwd_s"], _ = time_fn(step_fn(scene, view, K, res, "torch"), max(1, min(repeats, 3)))
                with PeakRSS() as mem:
                    step_fn(scene, view, K, res, "torch")()
                row["torch_peak_rss_delta_mb"] = mem.delta_mb
                row["speedup_vs_torch"] = row["torch_fwdbwd_s"] / row["cpu_fwdbwd_s"]
            else:
                row["torch_note"] = "skipped (too many pairs for the pair-list twin)"
            row["dense_note"] = "see the oracle row (dense reference is O(N * pixels), sequential over Gaussians)"
            if torch.cuda.is_available():
                sc, vc, kc = make_scene(n, res, device="cuda")
                sync = torch.cuda.synchronize
                import gsplat

                def direct():
                    out, al, _ = gsplat.rasterization(
                        sc["means"], sc["quats"], sc["scales"], sc["opacities"], sc["colors"], vc, kc, res, res,
                        packed=False,
                    )  # fmt: skip
                    torch.autograd.grad(out.sum() + al.sum(), list(sc.values()))

                def ours():
                    out, al, _ = rasterize_gaussians(
                        sc["means"], sc["quats"], sc["scales"], sc["opacities"], sc["colors"], vc, kc, res, res
                    )
                    torch.autograd.grad(out.sum() + al.sum(), list(sc.values()))

                row["gsplat_direct_s"], _ = time_fn(direct, repeats * 4, sync)
                row["gsplat_dispatch_s"], _ = time_fn(ours, repeats * 4, sync)
                row["dispatch_overhead"] = row["gsplat_dispatch_s"] / row["gsplat_direct_s"] - 1.0
            rows.append(row)
            print(json.dumps(row), flush=True)
            del scene, scene_sh

    # The dense oracle loops over Gaussians in Python (O(N * pixels)): 10k @ 128^2 takes ~4 minutes, so its ratio
    # is measured on one small extra row only.
    if not args.no_baselines:
        n, res = 1000, 64
        scene, view, K = make_scene(n, res)
        row = {"n_gaussians": n, "resolution": res, "threads": ext.num_threads(), "oracle_row": True}
        row["cpu_fwd_s"], _ = time_fn(step_fn(scene, view, K, res, "cpu", fwd_only=True), repeats)
        row["cpu_fwdbwd_s"], _ = time_fn(step_fn(scene, view, K, res, "cpu"), repeats)
        row["cpu_fwdbwd_sh3_s"] = None
        row["cpu_peak_rss_delta_mb"] = None
        with torch.no_grad():
            r = rasterize_gaussians(*[scene[k] for k in ("means", "quats", "scales", "opacities", "colors")],
                                    view, K, res, res)[2]["radii"][0].float()  # fmt: skip
        row["box_pixel_pairs"] = int(((2 * r[:, 0] + 1) * (2 * r[:, 1] + 1) * (r > 0).all(-1)).sum())
        row["torch_fwdbwd_s"], _ = time_fn(step_fn(scene, view, K, res, "torch"), repeats)
        row["speedup_vs_torch"] = row["torch_fwdbwd_s"] / row["cpu_fwdbwd_s"]
        row["dense_fwdbwd_s"], _ = time_fn(dense_fn(scene, view, K, res), 1)
        row["speedup_vs_dense"] = row["dense_fwdbwd_s"] / row["cpu_fwdbwd_s"]
        rows.append(row)
        print(json.dumps(row), flush=True)

    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "repeats": repeats,
        "load_avg_1min_at_end": os.getloadavg()[0],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "recon_cpu_threads": os.environ.get("RECON_CPU_THREADS"),
        # which build of the kernels ran (installed or run-time, portable or native, flags, compiler)
        "kernels": {k: v for k, v in kernel_info().items() if k in ("kind", "arch", "flags", "compiler", "path")},
        "scene": "see scripts/bench_raster.py docstring (log-normal scales, median 0.02*sqrt(1e5/N), depth 2..6)",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))

    from rich.console import Console
    from rich.table import Table

    tab = Table(title=f"Gaussian rasterizer, forward+backward median ({meta['torch_threads']} threads)")
    for col in ("N", "res", "box pairs", "fwd s", "fwd+bwd s", "(min)", "CPU s", "fwd+bwd SH3", "peak MB", "load",
                "twin s", "x twin", "twin MB", "dense s", "x dense"):  # fmt: skip
        tab.add_column(col, justify="right")
    if torch.cuda.is_available():
        tab.add_column("gsplat direct", justify="right")
        tab.add_column("dispatch ovh", justify="right")
    f = lambda v, fmt="{:.3f}": "-" if v is None else fmt.format(v)  # noqa: E731
    for r in rows:
        cells = [
            f"{r['n_gaussians']:,}", str(r["resolution"]), f"{r['box_pixel_pairs'] / 1e6:.1f}M",
            f(r["cpu_fwd_s"]), f(r["cpu_fwdbwd_s"]), f(min(r["cpu_fwdbwd_all_s"]) if "cpu_fwdbwd_all_s" in r else None),
            f(r.get("cpu_fwdbwd_cputime_s")), f(r["cpu_fwdbwd_sh3_s"]),
            f(r["cpu_peak_rss_delta_mb"], "{:.0f}"), f(r.get("load_avg_1min"), "{:.1f}"),
            f(r.get("torch_fwdbwd_s")), f(r.get("speedup_vs_torch"), "{:.1f}x"), f(r.get("torch_peak_rss_delta_mb"), "{:.0f}"),
            f(r.get("dense_fwdbwd_s")), f(r.get("speedup_vs_dense"), "{:.0f}x"),
        ]  # fmt: skip
        if torch.cuda.is_available():
            cells += [f(r.get("gsplat_direct_s"), "{:.4f}"), f(r.get("dispatch_overhead"), "{:+.1%}")]
        tab.add_row(*cells)
    Console(width=200).print(tab)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
