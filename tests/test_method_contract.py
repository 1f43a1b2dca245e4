"""The contract every registered method meets, checked for each without a line written for it: train a few steps
on its default demo, checkpoint, resume, evaluate, render every output it declares, export every kind it declares,
and render a frame through the viewer's render path (no browser).

A new method that registers itself in ``recon.methods`` is covered by this file as it stands.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from recon.methods import available_methods, get_method

TRAIN_STEPS = 8  # first run (checkpointed), then resumed to RESUMED_STEPS
RESUMED_STEPS = 12


def train_and_resume(name: str, out_dir) -> Path:
    """Train method ``name`` with its default config on its default demo for TRAIN_STEPS (checkpointed), resume
    it to RESUMED_STEPS; returns the run directory."""
    from recon.engine.run import DataConfig, resume_training, start_training
    from recon.engine.trainer import TrainerConfig

    quiet = Console(stderr=True, quiet=True)
    trainer = TrainerConfig(max_steps=TRAIN_STEPS, checkpoint_every=TRAIN_STEPS, image_every=0, log_every=8, eval_at_end=False)
    run_dir = start_training(name, DataConfig(), trainer, get_method(name).config_cls(), out_dir, device="cpu", console=quiet)
    resume_training(run_dir, max_steps=RESUMED_STEPS, console=quiet)
    return run_dir


@pytest.fixture(scope="module", params=sorted(available_methods()))
def contract_run(request, tmp_path_factory):
    """(method name, run directory) after :func:`train_and_resume`."""
    return request.param, train_and_resume(request.param, tmp_path_factory.mktemp(request.param))


def test_trains_on_its_default_demo_checkpoints_and_resumes(contract_run):
    from recon.engine.checkpoint import latest_checkpoint
    from recon.engine.run import load_run

    name, run_dir = contract_run
    cls = get_method(name)
    run = load_run(run_dir, device="cpu")
    assert run.scene.name == f"demo-{cls.default_demo}"
    assert run.step == RESUMED_STEPS and latest_checkpoint(run_dir).name == f"step-{RESUMED_STEPS:06d}.pt"
    assert run.scene.is_dynamic or not cls.is_dynamic


@pytest.fixture(scope="module")
def loaded(contract_run):
    from recon.engine.run import load_run

    return load_run(contract_run[1], device="cpu")


def test_evaluates(loaded):
    from recon.eval.evaluate import evaluate

    metrics = evaluate(loaded.method, loaded.scene, "test", console=Console(stderr=True, quiet=True), with_lpips=False)
    assert metrics["num_images"] == len(loaded.scene.split("test")) > 0
    assert math.isfinite(metrics["psnr"]) and 0.0 < metrics["ssim"] <= 1.0


def test_renders_every_declared_output(loaded, tmp_path):
    from recon.export.render import render_run

    method = loaded.method
    folder = render_run(loaded, path="orbit", frames=2, outputs=method.render_outputs, output=tmp_path, console=Console(stderr=True, quiet=True))
    for output in method.render_outputs:
        assert len(list((folder / output).glob("*.png"))) == 2, output


def test_exports_every_declared_kind(loaded, tmp_path):
    from recon.errors import ReconError
    from recon.export import EXPORT_KINDS, export_run, kinds_for

    method = loaded.method
    assert kinds_for(method) == method.export_kinds  # every declared kind is registered and servable
    for kind in method.export_kinds:
        out = export_run(loaded, kind, console=Console(stderr=True, quiet=True))  # default paths under RUN/exports
        files = [out] if out.is_file() else [p for p in out.rglob("*") if p.is_file()]
        assert files and all(p.stat().st_size > 0 for p in files), kind
    if "frames" in method.export_kinds:
        with pytest.raises(ReconError, match="--time does not apply"):
            export_run(loaded, "frames", time=0.5)
    for kind in sorted(set(EXPORT_KINDS) - set(method.export_kinds)):
        with pytest.raises(ReconError, match="kinds for this run: " + ", ".join(method.export_kinds)):
            export_run(loaded, kind, output=tmp_path / "never")


def test_viewer_renders_a_frame(loaded):
    from recon.viewer.camera import ViewCamera, from_camtoworld, vertical_fov
    from recon.viewer.options import method_options
    from recon.viewer.render import RenderSettings, ViewRenderer

    method, cams = loaded.method, loaded.scene.cameras
    method_options(method)  # its own panel's controls are valid specs
    i = int(loaded.scene.split("train")[0])
    wxyz, pos = from_camtoworld(cams.camtoworlds[i].numpy())
    view = ViewCamera(tuple(wxyz), tuple(pos), vertical_fov(cams, i), int(cams.widths[i]), int(cams.heights[i]))
    renderer = ViewRenderer(method)
    for output in method.render_outputs:
        settings = RenderSettings(output=output, time=0.5 if method.is_dynamic else None, background=(1.0, 1.0, 1.0))
        image, depth = renderer.render_with_depth(view, 64, settings, depth="depth" in method.render_outputs)
        assert image.dtype == np.uint8 and image.ndim == 3 and max(image.shape[:2]) == 64, output
        assert depth is None or depth.shape == image.shape[:2]
    if method.capabilities.gaussians:
        from recon.viewer.splats import viser_splats

        with torch.no_grad():
            arrays = viser_splats(method.gaussians(time=0.5 if method.is_dynamic else None))
        assert len(arrays["centers"]) > 0
