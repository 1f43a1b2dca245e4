"""Differentiable Blocks World over several seeds, reported as the paper does: "random" (the mean over seeds) and
"auto" (the seed with the lowest training loss, i.e. the highest PSNR on the training views: no test data used).

``recon train --method blocks DATA --seeds K`` trains seeds 0 .. K-1 and picks "auto" by the training-view PSNR it
writes to seeds.json; then for each run ``recon eval`` on the test split (PSNR/SSIM of renders; with ``--gt``,
Chamfer-L1 of the blocks against a ground-truth mesh) and ``recon export --format primitives`` (the number of
blocks is the number written). "minutes" is each run's training time (its metrics.json). The auto run is linked as
OUT_DIR/auto.

    .venv/bin/python scripts/bench_blocks.py --data demo:solids --gt gt:objects_mesh --seeds 3
    .venv/bin/python scripts/bench_blocks.py --data ../shared/data/dtu_scan65 --steps 5000 --seeds 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from benchlib import ROOT, git_commit, recon_cli


def train_seeds(args) -> dict:
    """``recon train --seeds K`` (which keeps the run with the highest training-view PSNR): ``{"kept", "runs"}`` as
    in its seeds.json; one seed writes none, so its training-view PSNR is measured here the same way."""
    extra = [a for a in (args.train_args or "").split() if a]
    kept = Path(recon_cli("train", "--method", "blocks", args.data, "--max-steps", str(args.steps), "--seed", "0", "--seeds",
                          str(args.seeds), "--output-dir", str(args.out_dir), *extra).strip().splitlines()[-1])
    if args.seeds > 1:
        return json.loads((kept.parent / "seeds.json").read_text())
    train = json.loads(recon_cli("eval", str(kept), "--split", "train", "--lpips", "none", "--dynamic-region", "off", "--json"))
    row = {"seed": 0, "run": str(kept), "train_psnr": train["psnr"]}
    return {"kept": row, "runs": [row]}


def score_run(args, seed: int, run_dir: Path, train_psnr: float) -> dict:
    test = json.loads(recon_cli("eval", str(run_dir), "--split", "test", "--json", *(["--mesh", args.gt] if args.gt else [])))
    recon_cli("export", str(run_dir), "--format", "primitives")
    blocks = json.loads((run_dir / "exports" / "primitives" / "blocks.json").read_text())["blocks"]
    minutes = json.loads((run_dir / "metrics.json").read_text())["train_minutes"]
    row = {"seed": seed, "run": str(run_dir), "minutes": minutes, "blocks": len(blocks), "train_psnr": train_psnr,
           "test_psnr": test["psnr"], "test_ssim": test["ssim"], "test_lpips": test.get("lpips")}
    if "geometry" in test:
        g = test["geometry"]
        row.update(chamfer=g["chamfer"], accuracy=g["accuracy"], completeness=g["completeness"], fscore=g["fscore"],
                   normal_consistency=g["normal_consistency"])
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="demo:solids", help="data folder or demo:NAME")
    p.add_argument("--gt", default=None, help="ground-truth mesh for Chamfer (a file, or gt:NAME for one the data ships)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0 .. K-1)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--train-args", default="", help="extra `recon train` options, quoted (e.g. \"--model.num-blocks 8 --trainer.threads 1\")")
    p.add_argument("--out-dir", type=Path, default=ROOT / "bench_results" / "blocks_runs")
    p.add_argument("--json", type=Path, default=ROOT / "bench_results" / "blocks.json")
    args = p.parse_args()
    commit = git_commit()  # the code the runs use (taken before they start: the tree may change while they train)
    seeds = train_seeds(args)
    rows = []
    for trained in seeds["runs"]:
        r = score_run(args, trained["seed"], Path(trained["run"]), trained["train_psnr"])
        rows.append(r)
        print(f"seed {r['seed']}: {r['blocks']} blocks, test PSNR {r['test_psnr']:.2f} dB, train PSNR {r['train_psnr']:.2f} dB"
              + (f", Chamfer {r['chamfer']:.4f}" if "chamfer" in r else "") + f", {r['minutes']:.1f} min", flush=True)
    auto = next(r for r in rows if r["seed"] == seeds["kept"]["seed"])
    keys = [k for k in ("blocks", "test_psnr", "test_ssim", "chamfer", "fscore", "minutes") if k in rows[0]]
    random = {k: sum(r[k] for r in rows) / len(rows) for k in keys}
    print("\n| seed | " + " | ".join(keys) + " | train PSNR |")
    print("|---" * (len(keys) + 2) + "|")
    for r in rows:
        print(f"| {r['seed']}{' (auto)' if r is auto else ''} | " + " | ".join(f"{r[k]:.4g}" for k in keys) + f" | {r['train_psnr']:.2f} |")
    print("| random (mean) | " + " | ".join(f"{random[k]:.4g}" for k in keys) + " | |")
    link = args.out_dir / "auto"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(Path(auto["run"]).resolve())
    out = {"data": args.data, "gt": args.gt, "steps": args.steps, "train_args": args.train_args, "seeds": rows, "auto": auto["seed"],
           "random": random, "commit": commit, "machine": f"{platform.machine()} {os.cpu_count()} cpus",
           "date": time.strftime("%Y-%m-%d")}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    print(f"\nwrote {args.json}; auto run linked as {link}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
