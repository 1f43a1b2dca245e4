"""G-Shell's numbers on a trained run (issue 21): its cut (open) mesh against the GT and, from the same run, the
watertight template without the mSDF cut (recon's marching tets alone), plus extraction and training-step times.

    .venv/bin/python scripts/bench_gshell.py RUN --gt ../shared/data/open_surfaces_blender/gt_mesh.ply

Prints a table and writes JSON (``--output``, default bench_results/gshell.json) with the commit and machine.
Geometry metrics: ``recon.eval.surface.surface_metrics`` in the data frame (Chamfer-L1 both ways and mean, normal
consistency unsigned and signed, F-score at ``--threshold``, topology after dropping components under 1 % of the
faces). The template is scored with the same floater filter as the cut mesh (``--model.min-component``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import trimesh

sys.path.insert(0, str(Path(__file__).parent))
from benchlib import git_commit  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--gt", type=Path, required=True)
    ap.add_argument("--threshold", type=float, default=0.01, help="F-score threshold (data units)")
    ap.add_argument("--points", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--output", type=Path, default=Path("bench_results/gshell.json"))
    args = ap.parse_args()

    from recon.engine.run import load_run
    from recon.eval.surface import surface_metrics
    from recon.geometry.mesh_utils import to_trimesh
    from recon.methods.gshell.model import floater_free
    from recon.methods.base import Batch

    run = load_run(args.run, device="cpu")
    method, transform = run.method, run.transform
    gt = trimesh.load(args.gt, process=False, force="mesh")
    with torch.no_grad():
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            mesh = method.extract()
            times.append(time.perf_counter() - t)
    cut = method.mesh()
    to_data = lambda v: transform.invert_points(np.asarray(v, dtype=np.float64))  # noqa: E731
    template = floater_free(to_trimesh(mesh["template_verts"], mesh["template_faces"]), method.config.min_component)
    rows = {
        "G-Shell (mSDF cut)": surface_metrics(trimesh.Trimesh(to_data(cut.vertices), cut.faces, process=False), gt, args.points, args.threshold),
        "watertight template (no cut)": surface_metrics(trimesh.Trimesh(to_data(template.vertices), template.faces, process=False), gt, args.points, args.threshold),
    }

    # one training step's time at the run's grid resolution (forward + backward + optimizer), on a training view
    scene = run.scene
    idx = int(scene.split("train")[0])
    image = torch.from_numpy(scene.image_rgb(idx, (1.0, 1.0, 1.0))).float()
    rgba = scene.image(idx)
    alpha = torch.from_numpy(rgba[..., 3:4]).float() if rgba.shape[-1] == 4 else None
    batch = Batch(idx, scene.cameras[[idx]], image, alpha, None, torch.ones(3), None)
    method.train()
    opts = method.optimizers()
    step_times = []
    for i in range(args.repeats):
        t = time.perf_counter()
        out = method.train_step(batch, run.step)
        out["loss"].backward()
        for o in opts.values():
            o.zero_grad(set_to_none=True)  # measure, do not change the model
        step_times.append(time.perf_counter() - t)

    result = {"commit": git_commit(), "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "run": str(args.run), "date": time.strftime("%Y-%m-%d %H:%M"), "grid_res": method.config.grid_res, "step": run.step,
              "extract_s_median": statistics.median(times), "train_step_s_median": statistics.median(step_times),
              "faces": int(len(cut.faces)), "template_faces": int(len(template.faces)), "meshes": rows}  # fmt: skip
    print(f"\nG-Shell run {args.run} (step {run.step}, grid {method.config.grid_res}; {result['machine']}, {result['threads']} threads, commit {result['commit']})")
    print("| mesh | chamfer mean | acc (pred->gt) | comp (gt->pred) | normal consistency | F@%g | boundary loops (gt) | boundary length / gt | non-manifold edges | watertight |" % args.threshold)
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, m in rows.items():
        p, g = m["pred"], m["gt"]
        ratio = m["boundary_length_ratio"]
        print(f"| {name} | {m['chamfer']:.4f} | {m['accuracy']:.4f} | {m['completeness']:.4f} | {m['normal_consistency']:.3f} | {m['fscore']:.3f} | "
              f"{p['boundary_loops']} ({g['boundary_loops']}) | {'' if ratio is None else f'{ratio:.2f}'} | {p['non_manifold_edges']} | {p['watertight']} |")  # fmt: skip
    print(f"\nextraction (marching tets + cut): {result['extract_s_median'] * 1000:.0f} ms median; one training step: {result['train_step_s_median']:.2f} s median")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
