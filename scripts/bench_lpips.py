"""What LPIPS adds to `recon eval`'s time, and what it measures on a run.

Runs ``recon eval RUN --lpips none`` and ``recon eval RUN --lpips NET`` (alex by default) in turn, ``--repeats``
times each, interleaved so that both see the same machine load, and reports the median wall time of each, the
overhead in percent, and the run's PSNR / SSIM / LPIPS. Also times, in-process, loading the weights and the LPIPS
forward alone on the run's test (rendering, image) pairs after one warm-up: on a shared machine the difference of
two wall times is noisy, this part is not.

Usage::

    python scripts/bench_lpips.py outputs/nerf_synthetic_lego/gs/<timestamp> --repeats 3 --net alex

Writes/updates ``bench_results/lpips.json`` (one entry per run and backbone) and prints the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _eval(run: str, lpips: str, threads: int) -> tuple[float, dict]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "recon.cli", "eval", run, "--lpips", lpips, "--json", "--device", "cpu"],
                          capture_output=True, text=True, env=env, cwd=ROOT)  # fmt: skip
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"recon eval failed:\n{proc.stderr[-2000:]}")
    return wall, json.loads(proc.stdout)


def _lpips_alone(run_dir: str, net: str, threads: int) -> dict:
    """In-process: seconds to load the weights, and of the LPIPS forward alone over the run's test (rendering,
    image) pairs after one warm-up."""
    import torch

    from recon.engine.run import load_run
    from recon.eval.lpips import load_lpips

    torch.set_num_threads(threads)
    run = load_run(Path(run_dir), device="cpu")
    scene, method = run.scene, run.method
    bg = torch.tensor(scene.background, dtype=torch.float32)
    pairs = []
    with torch.no_grad():
        for i in scene.split("test"):
            cam = scene.cameras[int(i)]
            t = None if cam.times is None else float(cam.times[0])
            pred = method.render(cam, time=t, outputs=("rgb",), background=bg)["rgb"].clamp(0, 1)
            pairs.append((pred, torch.from_numpy(scene.image_rgb(int(i))).to(pred)))
        t0 = time.perf_counter()
        model = load_lpips(net)
        load_s = time.perf_counter() - t0
        model(*pairs[0])
        t0 = time.perf_counter()
        for pred, gt in pairs:
            model(pred, gt)
        forward_s = time.perf_counter() - t0
    h, w = pairs[0][0].shape[:2]
    return {"load_s": load_s, "forward_s": forward_s, "forward_ms_per_image": 1000 * forward_s / len(pairs), "image_size": f"{w}x{h}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--net", default="alex", choices=["alex", "vgg"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=str(ROOT / "bench_results" / "lpips.json"))
    args = ap.parse_args()

    walls: dict[str, list[float]] = {"none": [], args.net: []}
    metrics = {}
    loads = []
    for _ in range(args.repeats):
        for mode in walls:
            wall, m = _eval(args.run, mode, args.threads)
            walls[mode].append(wall)
            metrics[mode] = m
            loads.append(os.getloadavg()[0])
    alone = _lpips_alone(args.run, args.net, args.threads)
    base, with_lp = statistics.median(walls["none"]), statistics.median(walls[args.net])
    m = metrics[args.net]
    entry = {
        "run": args.run,
        "net": args.net,
        "num_images": m["num_images"],
        "wall_s_without_lpips": walls["none"],
        "wall_s_with_lpips": walls[args.net],
        "median_without_s": base,
        "median_with_s": with_lp,
        "overhead_percent": 100.0 * (with_lp - base) / base,
        "psnr": m["psnr"],
        "ssim": m["ssim"],
        "lpips": m.get("lpips"),
        "lpips_note": m.get("lpips_note"),
        **alone,
        "load_avg_median": statistics.median(loads),
        "threads": args.threads,
        "machine": f"{os.cpu_count()}-core CPU",
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    allres = json.loads(path.read_text()) if path.is_file() else {}
    allres[f"{args.run}:{args.net}"] = entry
    path.write_text(json.dumps(allres, indent=2))
    print(f"{m['num_images']} images; recon eval median {base:.2f} s without LPIPS, {with_lp:.2f} s with LPIPS ({args.net}): "
          f"{entry['overhead_percent']:+.1f} % (load average {entry['load_avg_median']:.1f})")  # fmt: skip
    print(f"LPIPS alone: weights loaded and verified in {alone['load_s']:.2f} s, forward {alone['forward_ms_per_image']:.1f} ms "
          f"per {alone['image_size']} image ({alone['forward_s']:.2f} s for {m['num_images']}; {100 * (alone['load_s'] + alone['forward_s']) / base:.1f} % of recon eval)")  # fmt: skip
    print(f"PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f}, LPIPS ({args.net}) {m.get('lpips')}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
