"""Where does a trained Swift4D run lose PSNR? Splits the squared error of each evaluation image into the region the
dynamic Gaussians cover and the rest, and measures how far the field actually moves the dynamic Gaussians.

    python scripts/swift4d_error_analysis.py RUN [--split test] [--out bench_results/swift4d_errors.json]

Prints, per split (the evaluation split and train):

* PSNR, the dynamic region's share of the pixels and of the squared error, PSNR inside / outside it, and the PSNR a
  perfect dynamic (or perfect static) part would give, and (RGBA data, or data with masks) the share of the squared
  error on pixels the ground truth leaves empty. When the split's images share one camera (D-NeRF val), the same
  split over the pixels where the ground truth changes over time: a region that depends on the data only, so that
  runs can be compared on the same pixels. The dynamic region is where the splatted score ``d`` says
  "dynamic" with confidence (sigmoid > 0.97), dilated by 4 px.
* Motion: per time, the median / 90th percentile displacement of the deformed Gaussians from their canonical
  centres, the displacement between the first and last training time, and the mean absolute opacity change. Small
  displacements with large opacity changes mean the field explains motion by fading Gaussians in and out.

Writes the same numbers as JSON. This is how the D-NeRF lego analysis in docs/benchmarks.md was made.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recon.engine.run import load_run  # noqa: E402
from recon.errors import ReconError  # noqa: E402


def _psnr(mse: float) -> float:
    return -10 * math.log10(max(mse, 1e-12))


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """bool [H, W] grown by ``radius`` pixels (square structuring element)."""
    return F.max_pool2d(mask.float()[None, None], 2 * radius + 1, 1, radius)[0, 0] > 0


def moving_pixels(scene, indices: list[int], threshold: float = 0.05, dilate: int = 4) -> torch.Tensor | None:
    """bool [H, W]: where the ground truth changes over ``indices`` (std over the images > ``threshold``, mean over
    RGB, dilated) when they all share one camera pose (D-NeRF val, a fixed test camera of a video); else None. The
    region depends on the data only, so runs can be compared on the same pixels."""
    poses = scene.cameras.camtoworlds[torch.tensor(indices)]
    if len(indices) < 2 or not torch.allclose(poses, poses[:1].expand_as(poses), atol=1e-5):
        return None
    stack = torch.stack([torch.from_numpy(scene.image_rgb(i)) for i in indices])
    return _dilate(stack.std(0).mean(-1) > threshold, dilate)


@torch.no_grad()
def region_errors(method, scene, split: str, confidence: float = 0.97, dilate: int = 4) -> dict:
    """Squared error inside / outside the dynamic region over every image of ``split`` (and, for a fixed camera,
    inside / outside the pixels where the ground truth moves)."""
    bg = torch.tensor(scene.background, dtype=torch.float32, device=method.device_)
    cams = scene.cameras.to(method.device_)
    indices = [int(j) for j in scene.split(split)]
    moving = moving_pixels(scene, indices, dilate=dilate)
    err_in = err_out = err_bg = err_moving = 0.0
    n_in = n_all = 0
    has_mask = False
    per_image = []
    for i in indices:
        cam = cams[i]
        t = None if cam.times is None else float(cam.times[0])
        out = method.render(cam, time=t, outputs=("rgb", "dynamic_mask"), background=bg)
        gt = torch.from_numpy(scene.image_rgb(i)).to(out["rgb"])
        se = ((out["rgb"] - gt) ** 2).mean(-1)
        fg = scene.mask(i)  # alpha channel or mask files
        if fg is not None:  # error where the ground truth is empty (floaters, ghosts, overhangs)
            has_mask = True
            err_bg += float(se[torch.from_numpy(fg[..., 0] < 0.01).to(se.device)].sum())
        if moving is not None:
            err_moving += float(se[moving.to(se.device)].sum())
        region = _dilate(out["dynamic_mask"][..., 0] > confidence, dilate)
        err_in += float(se[region].sum())
        err_out += float(se[~region].sum())
        n_in += int(region.sum())
        n_all += se.numel()
        per_image.append({"index": i, "time": t, "psnr": _psnr(float(se.mean())), "dynamic_area": float(region.float().mean())})
    total = err_in + err_out
    return {
        "psnr": sum(r["psnr"] for r in per_image) / max(len(per_image), 1),
        "psnr_pooled": _psnr(total / n_all),  # of the pooled squared error (what the two parts below add up to)
        "dynamic_area": n_in / n_all,
        "dynamic_error_share": err_in / total if total > 0 else 0.0,
        "psnr_inside": _psnr(err_in / max(n_in, 1)),
        "psnr_outside": _psnr(err_out / max(n_all - n_in, 1)),
        "psnr_if_dynamic_perfect": _psnr(err_out / n_all),
        "psnr_if_static_perfect": _psnr(err_in / n_all),
        "background_error_share": err_bg / total if has_mask and total > 0 else None,
        "moving_pixels": None if moving is None else {
            "area": float(moving.float().mean()),
            "error_share": err_moving / total if total > 0 else 0.0,
            "psnr_inside": _psnr(err_moving / max(int(moving.sum()) * len(indices), 1)),
            "psnr_outside": _psnr((total - err_moving) / max(n_all - int(moving.sum()) * len(indices), 1)),
            "psnr_if_moving_perfect": _psnr((total - err_moving) / n_all),
        },
        "per_image": per_image,
    }


@torch.no_grad()
def motion(method, times: list[float]) -> dict:
    """Displacements and opacity changes of the deformed Gaussians at ``times`` (normalised scene units)."""
    ids = method._deformed_ids()
    if ids.numel() == 0:
        return {"deformed": 0}
    canon = {k: v.detach() for k, v in method.splats.items()}
    extent = (method.box_max - method.box_min).tolist()
    rows = []
    for t in times:
        p = method.gaussians(t)
        d = (p["means"][ids] - canon["means"][ids]).norm(dim=-1)
        dop = (torch.sigmoid(p["opacities"][ids]) - torch.sigmoid(canon["opacities"][ids])).abs()
        rows.append({"time": t, "median": float(d.median()), "p90": float(d.quantile(0.9)), "opacity_change": float(dop.mean())})
    a, b = method.gaussians(times[0]), method.gaussians(times[-1])
    d = (a["means"][ids] - b["means"][ids]).norm(dim=-1)
    return {"deformed": int(ids.numel()), "box_extent": extent, "per_time": rows,
            "first_to_last": {"median": float(d.median()), "p90": float(d.quantile(0.9)), "max": float(d.max())}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--out", type=Path, default=ROOT / "bench_results" / "swift4d_errors.json")
    args = ap.parse_args()
    try:
        run = load_run(args.run, device="cpu")
    except ReconError as exc:  # bad run folder: one line, no traceback
        sys.exit(f"error: {exc}")
    method, scene = run.method, run.scene
    if not getattr(method, "is_dynamic", False) or not hasattr(method, "_deformed_ids"):
        sys.exit(f"error: {run.run_dir}: not a swift4d run")
    result = {"run": str(run.run_dir), "step": run.step}
    for split in (args.split, "train"):
        r = region_errors(method, scene, split)
        result[split] = r
        print(f"{split:>6}: PSNR {r['psnr']:.2f}  dynamic region {100 * r['dynamic_area']:.1f}% of pixels, "
              f"{100 * r['dynamic_error_share']:.1f}% of squared error; inside {r['psnr_inside']:.2f} dB, outside "
              f"{r['psnr_outside']:.2f} dB; perfect dynamic part -> {r['psnr_if_dynamic_perfect']:.2f} dB, "
              f"perfect static part -> {r['psnr_if_static_perfect']:.2f} dB"
              + ("" if r["background_error_share"] is None else
                 f"; {100 * r['background_error_share']:.1f}% of the squared error on empty (alpha or mask 0) pixels"))
        mv = r["moving_pixels"]
        if mv is not None:
            print(f"        pixels where the ground truth moves ({100 * mv['area']:.1f}% of the image): "
                  f"{100 * mv['error_share']:.1f}% of squared error; inside {mv['psnr_inside']:.2f} dB, outside "
                  f"{mv['psnr_outside']:.2f} dB; perfect moving pixels -> {mv['psnr_if_moving_perfect']:.2f} dB")
    t_lo, t_hi = (float(v) for v in method.time_range)
    times = [t_lo + (t_hi - t_lo) * k / 4 for k in range(5)]
    m = motion(method, times)
    result["motion"] = m
    if m["deformed"]:
        print(f"motion: {m['deformed']} deformed Gaussians, box extent " + " x ".join(f"{e:.2f}" for e in m["box_extent"]))
        for r in m["per_time"]:
            print(f"  t={r['time']:.2f}: displacement median {r['median']:.4f}, p90 {r['p90']:.4f}; "
                  f"mean |opacity change| {r['opacity_change']:.3f}")
        f = m["first_to_last"]
        print(f"  t={times[0]:.2f} -> {times[-1]:.2f}: median {f['median']:.4f}, p90 {f['p90']:.4f}, max {f['max']:.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
