"""CPU kernel vs gsplat.rasterization on CUDA (forward + gradients). Skipped without a CUDA device.

Each run records when and where it ran in bench_results/raster_cuda_parity.json (and prints it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from raster_reference import random_scene

from recon.render.gaussians import rasterize_gaussians

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (gsplat)"),
]
KEYS = ("means", "quats", "scales", "opacities", "colors")


def _run(scene, W, H, device, backend, **kw):
    s = {k: (v.detach().to(device).requires_grad_(v.requires_grad) if torch.is_tensor(v) else v) for k, v in scene.items()}
    out, alphas, meta = rasterize_gaussians(
        *[s[k] for k in KEYS], s["viewmats"], s["Ks"], W, H, backgrounds=s["backgrounds"], backend=backend, **kw
    )
    w = torch.linspace(-1, 1, out.numel(), device=device).reshape(out.shape)
    grads = torch.autograd.grad((out * w).sum() + alphas.sum(), [s[k] for k in KEYS] + [s["backgrounds"]])
    return [t.detach().cpu() for t in (out, alphas, *grads)], meta


@pytest.mark.parametrize(
    "kw", [dict(render_mode="RGB+ED"), dict(sh_degree=3, packed=True), dict(rasterize_mode="antialiased")]
)
def test_cpu_kernel_matches_gsplat(kw):
    sh = kw.get("sh_degree")
    scene, W, H = random_scene(n=400, n_cameras=2, dtype=torch.float32, width=96, height=64, sh_degree=sh, seed=41)
    t0 = time.time()
    ours, _ = _run(scene, W, H, "cpu", "cpu", **kw)
    theirs, meta = _run(scene, W, H, "cuda", "gsplat", **kw)
    assert meta["backend"] == "gsplat"
    names = ["colors", "alphas", *KEYS, "backgrounds"]
    errs = {}
    for name, a, b in zip(names, ours, theirs):
        errs[name] = ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()
    record = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "device": torch.cuda.get_device_name(0),
        "gsplat": __import__("gsplat").__version__,
        "torch": torch.__version__,
        "config": {k: v for k, v in kw.items()},
        "max_rel_err": errs,
        "seconds": time.time() - t0,
    }
    print(json.dumps(record))
    out = Path(__file__).resolve().parents[1] / "bench_results" / "raster_cuda_parity.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(out.read_text()) if out.exists() else []
    out.write_text(json.dumps(runs + [record], indent=2))
    assert errs["colors"] < 1e-4 and errs["alphas"] < 1e-4
    for name in (*KEYS, "backgrounds"):
        assert errs[name] < 2e-2, (name, errs[name])
