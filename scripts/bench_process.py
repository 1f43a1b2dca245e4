"""`recon data process` on real photos, graded against independent reference poses.

On a dataset that ships its own poses (default: ../shared/data/fox, 50 phone photos with instant-ngp's
transforms.json), this script

1. runs ``recon data process DATA/images OUT`` (pycolmap SfM on the CPU) and reads its report;
2. aligns the estimated camera centres to the reference ones (similarity, ``recon/eval/poses.py``) and reports the
   median / max rotation error (degrees) and centre error (fraction of the camera spread);
3. trains ``gs`` for ``--steps`` on the processed folder and on the reference poses (same seed, same held-out
   images: every 8th by name in both), and compares test PSNR.

    .venv/bin/python scripts/bench_process.py --steps 3000           # writes bench_results/process.json
    .venv/bin/python scripts/bench_process.py --skip-train             # poses only (about half a minute)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from benchlib import ROOT, git_commit, recon_cli


def recon(*args: str, threads: int) -> str:
    """The last line ``recon ARGS`` prints (a run directory, an output folder)."""
    return recon_cli(*args, threads=threads).strip().splitlines()[-1]


def compare_poses(ref_dir: Path, est_dir: Path) -> dict:
    from recon.data.readers import load_scene
    from recon.eval.poses import pose_errors

    ref, est = load_scene(ref_dir), load_scene(est_dir)
    rn = [Path(p).name for p in ref.images.paths]
    en = [Path(p).name for p in est.images.paths]
    common = [n for n in rn if n in en]
    e = pose_errors(ref.cameras.camtoworlds[[rn.index(n) for n in common]].double().numpy(),
                    est.cameras.camtoworlds[[en.index(n) for n in common]].double().numpy())
    test_ref = [rn[i] for i in ref.split("test")]
    test_est = [en[i] for i in est.split("test")]
    return {"compared": len(common), "rotation_deg_median": e["rotation_deg_median"], "rotation_deg_max": float(e["rotation_deg"].max()),
            "center_rel_median": e["center_rel_median"], "center_rel_max": float(e["center_rel"].max()), "spread": e["spread"],
            "same_test_images": test_ref == test_est, "test_images": test_est}


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fox")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="OpenMP threads of the training runs (0: torch's default)")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "bench_results" / "process.json")
    args = ap.parse_args()
    console = Console()
    if not (args.data / "images").is_dir():
        raise SystemExit(f"{args.data}: no images/ folder")
    result = {"benchmark": "data_process", "data": str(args.data), "commit": git_commit(), "date": time.strftime("%Y-%m-%d"),
              "machine": platform.platform(), "cpu_count": os.cpu_count(), "steps": args.steps, "seed": args.seed}
    with tempfile.TemporaryDirectory(prefix="bench-process-") as tmp:
        out = Path(tmp) / "processed"
        t = time.perf_counter()
        recon("data", "process", str(args.data / "images"), str(out), "--seed", str(args.seed), threads=0)
        result["process_wall_s"] = time.perf_counter() - t
        report = json.loads((out / "process_report.json").read_text())
        result["report"] = {k: report[k] for k in ("images", "registered_images", "points3d", "mean_track_length", "mean_reprojection_error_px",
                                                    "features_per_image", "verified_pairs", "seconds", "cameras")}
        result["poses"] = compare_poses(args.data, out)
        if not args.skip_train:
            for name, folder in (("processed", out), ("reference", args.data)):
                t = time.perf_counter()
                run_dir = recon("train", "--method", "gs", str(folder), "--max-steps", str(args.steps), "--seed", str(args.seed),
                                "--output-dir", str(Path(tmp) / f"runs-{name}"), threads=args.threads)
                metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
                result[f"gs_{name}"] = {"psnr": metrics["psnr"], "ssim": metrics["ssim"], "lpips": metrics.get("lpips"), "wall_s": time.perf_counter() - t}
    p = result["poses"]
    table = Table(title=f"recon data process on {args.data.name} (commit {result['commit']}, {result['date']})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    r = result["report"]
    table.add_row("registered", f"{r['registered_images']} / {r['images']}")
    table.add_row("SfM wall time (s)", f"{result['process_wall_s']:.1f}  (" + ", ".join(f"{k} {v:.1f}" for k, v in r["seconds"].items()) + ")")
    table.add_row("mean reprojection error (px)", f"{r['mean_reprojection_error_px']:.3f}")
    table.add_row("points / mean track length", f"{r['points3d']} / {r['mean_track_length']:.2f}")
    table.add_row("rotation error median / max (deg)", f"{p['rotation_deg_median']:.3f} / {p['rotation_deg_max']:.3f}")
    table.add_row("centre error median / max (% of spread)", f"{100 * p['center_rel_median']:.3f} / {100 * p['center_rel_max']:.3f}")
    for name in ("processed", "reference"):
        if f"gs_{name}" in result:
            g = result[f"gs_{name}"]
            table.add_row(f"gs test PSNR, {name} poses ({args.steps} steps)", f"{g['psnr']:.2f} dB  ({g['wall_s'] / 60:.1f} min)")
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
