"""Swift4D vs its all-dynamic baseline, same code, same data, same budgets.

Runs ``recon train --method swift4d DATA`` twice (default and ``--model.all-dynamic``) with equal
``--max-steps`` / ``--max-minutes``, then reports per variant: test PSNR / SSIM / LPIPS (alex; None when its weights
are not fetched), seconds per iteration (median over the logged intervals of the spatio-temporal stage, where the
two differ, and over the whole run), total training time, model size on disk (the model's state_dict: canonical
Gaussians + d + hash field, fp32; the checkpoint, which adds optimizer moments, is listed too), number of
Gaussians and static share; plus the ratios measured in the same run and how loaded the machine was (1-minute load
average sampled every 10 s, and the share of the machine's cores the training process got: its CPU time / (wall
time x cores)).

With ``--eval-every N`` each run also evaluates the whole test split every N steps (not counted as training time;
``--trainer.eval-every``), and the script plots PSNR of the whole image and of the moving part (the data's dynamic
masks, or the test camera's temporal change) against training time, one curve per variant, into ``--plot``.

Usage::

    python scripts/bench_swift4d.py demo:dynamic --max-steps 2000 --eval-every 250 --parallel --threads 1
    python scripts/bench_swift4d.py ../shared/data/dnerf_lego --max-minutes 20 --max-steps 4000

Writes/updates ``bench_results/swift4d.json`` (one entry per dataset, labelled by date and commit) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchlib import ROOT, git_commit
VARIANTS = {"swift4d": [], "all-dynamic": ["--model.all-dynamic"]}


def _command(data: str, variant: str, args, out_dir: Path) -> list[str]:
    cmd = [sys.executable, "-m", "recon.cli", "train", "--method", "swift4d", data, "--output-dir", str(out_dir),
           "--max-steps", str(args.max_steps), "--trainer.image-every", "0", "--seed", str(args.seed)]  # fmt: skip
    if args.max_minutes:
        cmd += ["--max-minutes", str(args.max_minutes)]
    if args.eval_every:
        cmd += ["--trainer.eval-every", str(args.eval_every)]
    return cmd + VARIANTS[variant] + list(args.extra)


def _train_all(data: str, variants: list[str], args, out_dir: Path) -> dict[str, dict]:
    """Train the variants (one after the other, or side by side with --parallel so that both see the same machine
    load); returns per variant the run directory, wall and CPU seconds and the sampled load averages."""
    loads: list[float] = []
    stop = threading.Event()

    def sample():
        while not stop.wait(10.0):
            loads.append(os.getloadavg()[0])

    threading.Thread(target=sample, daemon=True).start()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    out: dict[str, dict] = {}
    groups = [variants] if args.parallel else [[v] for v in variants]
    for group in groups:
        procs = {}
        for v in group:
            log = open(Path(tempfile.gettempdir()) / f"bench_swift4d_{v}.log", "w")
            procs[v] = (subprocess.Popen(_command(data, v, args, out_dir), stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT, env=env), time.perf_counter(), log)
        for v, (proc, t0, log) in procs.items():
            stdout = proc.stdout.read()
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
            log.close()
            if status != 0:
                raise SystemExit(f"{v} failed; see {log.name}")
            out[v] = {"run_dir": stdout.strip().splitlines()[-1], "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
                      "loads": list(loads)}  # fmt: skip
    stop.set()
    return out


def _measure(run_dir: Path) -> dict:
    import torch

    from recon.engine import checkpoint as ckpt
    from recon.engine.run import load_run

    metrics = json.loads((run_dir / "metrics.json").read_text())
    hist = json.loads((run_dir / "history.json").read_text())
    run = load_run(run_dir, device="cpu")
    m = run.method
    fine_start = m.stages.dscore_end
    per_it_all, per_it_fine = [], []
    for a, b in zip(hist, hist[1:]):
        rate = (b["time"] - a["time"]) / max(b["step"] - a["step"], 1)
        per_it_all.append(rate)
        if a["step"] >= fine_start + 1:
            per_it_fine.append(rate)
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "model.pt"
        torch.save({k: v.detach().cpu() for k, v in m.state_dict().items()}, p)
        model_mb = p.stat().st_size / 2**20
    n_field = sum(p.numel() for p in m.field.parameters())
    curve_path = run_dir / "eval_curve.json"
    curve = json.loads(curve_path.read_text()) if curve_path.is_file() else []
    return {
        "psnr": metrics["psnr"],
        "ssim": metrics["ssim"],
        "psnr_dynamic": metrics.get("psnr_dynamic"),  # the moving part (None: the data defines none)
        "ssim_dynamic": metrics.get("ssim_dynamic"),
        "psnr_static": metrics.get("psnr_static"),
        "dynamic_share": metrics.get("dynamic_share"),
        "curve": [{k: row.get(k) for k in ("step", "train_seconds", "psnr", "psnr_dynamic", "psnr_static")} for row in curve],
        "lpips": metrics.get("lpips"),  # None when the weights are missing (metrics["lpips_note"] says why)
        "lpips_net": metrics.get("lpips_net"),
        "steps": metrics["step"],
        "fine_stage_start": fine_start,
        "stopped": metrics.get("stopped"),
        "train_minutes": metrics["train_minutes"],
        "s_per_it_fine": statistics.median(per_it_fine) if per_it_fine else None,
        "s_per_it_all": statistics.median(per_it_all) if per_it_all else None,
        "model_mb": model_mb,
        "checkpoint_mb": ckpt.latest_checkpoint(run_dir).stat().st_size / 2**20,
        "field_params": n_field,
        "field_log2_hashmap": int(m.field_log2),
        "num_gaussians": int(m.splats["means"].shape[0]),
        "num_dynamic": int(m.dynamic().sum()),
        "static_share": float(1.0 - m.dynamic().float().mean()),
        "per_time_psnr": metrics.get("per_time_psnr"),
        "per_time_psnr_dynamic": metrics.get("per_time_psnr_dynamic"),
        "per_time_lpips": metrics.get("per_time_lpips"),
    }


def _plot(results: dict, title: str, path: Path) -> None:
    """PSNR (whole image, solid; moving part, dashed) against training minutes, one colour per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for (variant, res), colour in zip(results.items(), ("tab:blue", "tab:orange", "tab:green", "tab:red")):
        pts = [r for r in res["curve"] if r.get("train_seconds") is not None]
        if not pts:
            continue
        minutes = [r["train_seconds"] / 60 for r in pts]
        ax.plot(minutes, [r["psnr"] for r in pts], "-o", color=colour, ms=3, label=f"{variant}: whole image")
        if all(r.get("psnr_dynamic") is not None for r in pts):
            ax.plot(minutes, [r["psnr_dynamic"] for r in pts], "--s", color=colour, ms=3, label=f"{variant}: moving part")
    ax.set_xlabel("training time (min)")
    ax.set_ylabel("test PSNR (dB)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="?", default="demo:dynamic")
    ap.add_argument("--max-steps", type=int, default=1500)
    ap.add_argument("--max-minutes", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default="swift4d,all-dynamic")
    ap.add_argument("--parallel", action="store_true", help="train the variants side by side (same machine load)")
    ap.add_argument("--output-dir", default=str(ROOT / "outputs" / "bench_swift4d"))
    ap.add_argument("--json", default=str(ROOT / "bench_results" / "swift4d.json"))
    ap.add_argument("--eval-every", type=int, default=0, help="evaluate the test split every N steps (quality curve)")
    ap.add_argument("--plot", default=str(ROOT / "bench_results" / "swift4d_curve.png"), help="PNG of the quality curves")
    ap.add_argument("extra", nargs="*", help="extra `recon train` options for both variants (after --)")
    args = ap.parse_args()

    results = {}
    commit = git_commit()  # the code the runs use (taken before they start: the tree may change while they train)
    variants = args.variants.split(",")
    print(f"[bench_swift4d] training {', '.join(variants)} on {args.data} ({'side by side' if args.parallel else 'in turn'}) ...", flush=True)
    runs = _train_all(args.data, variants, args, Path(args.output_dir))
    for variant in variants:
        run = runs[variant]
        res = _measure(Path(run["run_dir"]))
        res["run_dir"] = run["run_dir"]
        res["load_avg_median"] = statistics.median(run["loads"]) if run["loads"] else os.getloadavg()[0]
        res["cpu_share_of_machine"] = run["cpu_s"] / max(run["wall_s"] * (os.cpu_count() or 1), 1e-9)
        results[variant] = res
        print(f"[bench_swift4d]   {variant}: PSNR {res['psnr']:.2f}  LPIPS {'n/a' if res['lpips'] is None else format(res['lpips'], '.4f')}  fine s/it {res['s_per_it_fine']}", flush=True)

    ratios = {}
    if "swift4d" in results and "all-dynamic" in results:
        a, b = results["swift4d"], results["all-dynamic"]
        ratios = {
            "speedup_fine_s_per_it": (b["s_per_it_fine"] / a["s_per_it_fine"]) if a["s_per_it_fine"] and b["s_per_it_fine"] else None,
            "speedup_all_s_per_it": (b["s_per_it_all"] / a["s_per_it_all"]) if a["s_per_it_all"] and b["s_per_it_all"] else None,
            "speedup_train_time": b["train_minutes"] / a["train_minutes"],
            "psnr_gain_db": a["psnr"] - b["psnr"],
            "dynamic_psnr_gain_db": (a["psnr_dynamic"] - b["psnr_dynamic"]) if a["psnr_dynamic"] is not None and b["psnr_dynamic"] is not None else None,
            "size_ratio": a["model_mb"] / b["model_mb"],
        }
    entry = {
        "data": args.data,
        "machine": f"{os.cpu_count()}-core CPU (no GPU)",
        "max_steps": args.max_steps,
        "max_minutes": args.max_minutes,
        "parallel": args.parallel,
        "threads_per_run": args.threads,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "commit": commit,
        "seed": args.seed,
        "variants": results,
        "ratios": ratios,
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    allres = json.loads(path.read_text()) if path.is_file() else {}
    allres[Path(args.data).name if not args.data.startswith("demo:") else args.data] = entry
    path.write_text(json.dumps(allres, indent=2))

    if any(r["curve"] for r in results.values()):
        _plot(results, f"{args.data}, {args.max_steps} steps, seed {args.seed} ({entry['date']}, {entry['commit']})", Path(args.plot))
        print(f"wrote {args.plot}")
    cols = ["psnr", "psnr_dynamic", "psnr_static", "ssim", "lpips", "s_per_it_fine", "s_per_it_all", "train_minutes", "steps", "model_mb", "num_gaussians", "static_share", "load_avg_median", "cpu_share_of_machine"]
    print(f"\n{args.data}  (max_steps={args.max_steps}, max_minutes={args.max_minutes})")
    print("variant".ljust(12) + "".join(c.rjust(16) for c in cols))
    for v, r in results.items():
        print(v.ljust(12) + "".join(f"{r[c]:16.4g}" if isinstance(r[c], (int, float)) else str(r[c]).rjust(16) for c in cols))
    print("(psnr_dynamic / psnr_static: inside / outside the moving part; train_minutes exclude the curve's evaluations)")
    for k, v in ratios.items():
        print(f"  {k}: {v:.3f}" if v is not None else f"  {k}: n/a")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
