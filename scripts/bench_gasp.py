"""GASP's acceptance measurements on a trained ``gasp`` run (issue 23), through ``recon simulate`` itself.

    .venv/bin/python scripts/bench_gasp.py RUN [--gs GS_RUN] [--frames 60] [--short-frames 8]

- quality: test PSNR / SSIM / LPIPS of RUN (and of GS_RUN, trained with the same command) from their metrics.json;
- zero force (no gravity, no ground): the playback against the trained model on ``--views`` test cameras at every
  frame, grouped (``--frames``) and ungrouped (``--short-frames``): the lowest PSNR over frames and views;
- a drop onto a ground plane under the object (``--drop`` object heights, ``--material``), grouped
  (``--frames``; MP4 from the first test camera, a contact sheet of five frames into ``--figure``) and ungrouped
  (``--short-frames``): the lowest Gaussian centre relative to the ground in MPM cells, the largest size ratio to
  the rest size, non-finite values;
- grouping: simulated triangles against moved Gaussians, and the grouped rest pose against the ungrouped model;
- speed: frames per second of simulation + rendering (``recon simulate``'s ``fps_simulate_and_render``, the paper's
  measure), and of the simulation alone, grouped and ungrouped.

Prints a table and writes JSON (``--output``, default bench_results/gasp.json) with the commit and machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from benchlib import git_commit  # noqa: E402


def _metrics(run: Path) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    test = m.get("test", m)
    return {k: test.get(k) for k in ("psnr", "ssim", "lpips")} | {"train_minutes": m.get("train_minutes"), "steps": m.get("step")}


def _simulate(run: Path, out: Path, **kw) -> tuple[Path, dict]:
    from rich.console import Console

    from recon.engine.simulate import SimulateArgs, simulate_run

    args = SimulateArgs(run=run, output=out, progress="lines", ply_every=0, **kw)
    path = simulate_run(args, Console(stderr=True))
    return path, json.loads((path / "simulation.json").read_text())


def _playback_psnr(sim: Path, source, views: list[int], frames: int) -> list[float]:
    """Lowest PSNR over ``views`` at every frame of the simulation run ``sim`` against ``source``'s renders."""
    from recon.engine.run import load_run
    from recon.eval.metrics import psnr

    played = load_run(sim, device="cpu")
    cams = source.scene.cameras
    refs = {v: source.method.render(cams[[v]])["rgb"] for v in views}
    out = []
    for f in range(frames + 1):
        t = f / frames
        out.append(min(float(psnr(played.method.render(cams[[v]], time=t)["rgb"], refs[v])) for v in views))
    return out


def _contact_sheet(sim: Path, figure: Path, count: int = 5) -> None:
    import imageio.v3 as iio

    pngs = sorted((sim / "video").rglob("*.png"))
    if not pngs:
        return
    picks = [pngs[round(i * (len(pngs) - 1) / (count - 1))] for i in range(count)]
    figure.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(figure, np.concatenate([iio.imread(p)[..., :3] for p in picks], 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--gs", type=Path, default=None, help="a gs run trained with the same command, for the quality row")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--short-frames", type=int, default=8, help="frames of the ungrouped simulations")
    ap.add_argument("--views", type=int, default=3, help="test cameras the playback is compared on")
    ap.add_argument("--material", default="elastic")
    ap.add_argument("--drop", type=float, default=0.25)
    ap.add_argument("--figure", type=Path, default=Path("docs/images/gasp_drop.png"))
    ap.add_argument("--work", type=Path, default=None, help="folder for the simulation runs (default: a temporary one)")
    ap.add_argument("--output", type=Path, default=Path("bench_results/gasp.json"))
    args = ap.parse_args()

    from recon.engine.run import load_run
    from recon.eval.metrics import psnr

    torch.set_grad_enabled(False)
    work = args.work or Path(tempfile.mkdtemp(prefix="recon-bench-gasp-"))
    source = load_run(args.run, device="cpu")
    views = [int(v) for v in source.scene.split("test")[: args.views]]
    result: dict = {"commit": git_commit(), "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "run": str(args.run), "date": time.strftime("%Y-%m-%d %H:%M"), "quality": {"gasp": _metrics(args.run)}}  # fmt: skip
    if args.gs is not None:
        result["quality"]["gs"] = _metrics(args.gs)

    rows = {}
    for name, group, frames in (("zero-force grouped", True, args.frames), ("zero-force ungrouped", False, args.short_frames)):
        sim, info = _simulate(args.run, work / name.replace(" ", "-"), gravity=0.0, ground="none", frames=frames, group=group, video="none")
        curve = _playback_psnr(sim, source, views, frames)
        rows[name] = {"frames": frames, "min_psnr": min(curve), "psnr_per_frame": curve, "counts": info["counts"], "timing_s": info["timing_s"]}
    for name, group, frames in (("drop grouped", True, args.frames), ("drop ungrouped", False, args.short_frames)):
        sim, info = _simulate(args.run, work / name.replace(" ", "-"), ground="below", drop=args.drop, material=args.material,
                              frames=frames, group=group, video="test")  # fmt: skip
        rows[name] = {"frames": frames, "checks": info["checks"], "counts": info["counts"], "timing_s": info["timing_s"], "substeps": info["settings"]["substeps"]}
        if group:
            _contact_sheet(sim, args.figure)
            rows[name]["video"] = [str(p) for p in (sim / "video").rglob("*.mp4")]
            played = load_run(sim, device="cpu")
            rest = min(float(psnr(played.method.render(source.scene.cameras[[v]], time=0.0)["rgb"], source.method.render(source.scene.cameras[[v]])["rgb"])) for v in views)
            rows[name]["rest_pose_psnr_vs_ungrouped"] = rest
    result["simulations"] = rows

    print(f"\nGASP on {args.run} ({result['machine']}, {result['threads']} threads, commit {result['commit']})")
    for k, q in result["quality"].items():
        print(f"  {k:5s} test PSNR {q['psnr']:.2f} dB  SSIM {q['ssim']:.4f}  LPIPS {q['lpips']}  ({q['train_minutes']} min, {q['steps']} steps)")
    print("\n| simulation | frames | moved | simulated triangles | particles | substeps | lowest centre (cells) | max size ratio | NaN | min PSNR vs trained | sim s/frame | sim+render fps |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        c, t, ch = r["counts"], r["timing_s"], r.get("checks", {})
        low = ch.get("lowest_centre_above_ground_cells")
        fps = t.get("fps_simulate_and_render")
        playback = f"{r['min_psnr']:.2f}" if "min_psnr" in r else ""
        print(f"| {name} | {r['frames']} | {c['moved']:,} | {c['simulated_triangles']:,} | {c['particles']:,} | {r.get('substeps', '')} | "
              f"{'' if low is None else f'{low:.2f}'} | {ch.get('max_size_ratio', float('nan')):.4f} | {ch.get('non_finite', '')} | "
              f"{playback} | {t['per_frame_median']:.2f} | {'' if fps is None else f'{fps:.3f}'} |")  # fmt: skip
    g = rows["drop grouped"]
    print(f"\ngrouping: {g['counts']['moved'] / g['counts']['simulated_triangles']:.1f}x fewer simulated triangles; rest pose vs ungrouped {g['rest_pose_psnr_vs_ungrouped']:.2f} dB")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
