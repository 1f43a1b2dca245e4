"""End to end through the `recon` command: train on a demo scene, kill, resume, eval, render, export; bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

RECON = [sys.executable, "-m", "recon.cli"]


def run(args, **kw):
    return subprocess.run(RECON + [str(a) for a in args], capture_output=True, text=True, timeout=kw.pop("timeout", 600), **kw)


def test_methods_and_help():
    r = run(["methods"])
    assert r.returncode == 0 and "gs" in r.stdout
    for cmd in ["train", "eval", "render", "export", "view"]:
        r = run([cmd, "--help"])
        assert r.returncode == 0, (cmd, r.stderr)
        assert "--" in r.stdout
    r = run(["train", "--method", "gs", "--help"])
    assert "--model.sh-degree" in r.stdout


def test_reflow_docstring_joins_indented_continuation_lines():
    from recon.helptext import reflow_docstring

    text = "First line\n    (continued) here.\n\n    Second paragraph\n    - item one\n      wrapped\n    - item two"
    assert reflow_docstring(text) == "First line (continued) here.\n\nSecond paragraph\n- item one wrapped\n- item two"


def test_multiline_field_docstrings_are_one_paragraph_in_help():
    # Without the reflow (recon.helptext), tyro turns every indented continuation line of a field docstring into a hard break.
    r = run(["train", "--method", "swift4d", "--help"], env={**os.environ, "COLUMNS": "500"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if "--model.dscore-min-steps" in line)
    assert "(at most a quarter of the run): d must be able to travel past ζ, which takes" in lines[at + 1]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("outputs")
    r = run(["train", "--method", "gs", "demo:static", "--max-steps", "120", "--output-dir", out, "--trainer.image-every", "60"])
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir = Path(r.stdout.strip().splitlines()[-1])
    assert run_dir.is_dir() and run_dir.parent.parent.parent == out
    return run_dir


def test_train_writes_a_complete_run(trained_run):
    for name in ["config.yaml", "metrics.json", "training_curves.png"]:
        assert (trained_run / name).is_file(), name
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["num_images"] > 0 and metrics["psnr"] > 15
    assert any((trained_run / "renders" / "progress").iterdir())
    assert any((trained_run / "tensorboard").iterdir())


def test_eval_json_matches_metrics(trained_run):
    r = run(["eval", trained_run, "--json"])
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    ref = json.loads((trained_run / "metrics.json").read_text())
    assert abs(m["psnr"] - ref["psnr"]) < 1e-3


def test_eval_reports_lpips_per_image_or_says_why(trained_run, tmp_path):
    from recon.eval.lpips import LPIPSUnavailable, load_lpips

    ref = json.loads((trained_run / "metrics.json").read_text())
    try:
        load_lpips("alex")
    except LPIPSUnavailable:
        assert "python -m recon.eval.lpips --fetch" in ref["lpips_note"]
    else:  # the set-up fetched the weights: training's evaluation reported LPIPS, and `recon eval` agrees
        assert ref["lpips_net"] == "alex" and 0 < ref["lpips"] < 1
        r = run(["eval", trained_run, "--per-image"])
        assert r.returncode == 0, r.stderr
        assert "lpips (alex)" in r.stdout and f"{ref['lpips']:.4f}" in r.stdout
        assert r.stdout.count("lpips (alex)") == 2  # the per-image table and the summary
    # Bad weights: one line naming the file, the other metrics still there, exit code 0.
    bad = tmp_path / "lpips"
    bad.mkdir()
    (bad / "alex-v0.1.pt").write_bytes(b"PK\x03\x04 truncated")
    r = run(["eval", trained_run, "--json"], env={**os.environ, "RECON_LPIPS_WEIGHTS": str(bad)})
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    m = json.loads(r.stdout)
    assert "lpips" not in m and abs(m["psnr"] - ref["psnr"]) < 1e-3
    assert str(bad / "alex-v0.1.pt") in m["lpips_note"] and "\n" not in m["lpips_note"]


def test_render_orbit_and_export(trained_run, tmp_path):
    r = run(["render", trained_run, "--path", "orbit", "--frames", "8", "--outputs", "rgb", "depth", "--output", tmp_path / "orbit"])
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "orbit" / "rgb").glob("*.png"))) == 8
    assert (tmp_path / "orbit" / "rgb.mp4").stat().st_size > 1000
    r = run(["export", trained_run, "--format", "ply", "--output", tmp_path / "s.ply"])
    assert r.returncode == 0, r.stderr
    r = run(["export", trained_run, "--format", "splat", "--output", tmp_path / "s.splat"])
    assert r.returncode == 0 and (tmp_path / "s.splat").stat().st_size % 32 == 0
    r = run(["export", trained_run, "--format", "gltf"])
    assert r.returncode == 2 and "cannot export 'gltf' (kinds for this run: ply, splat, mesh)" in r.stderr and "Traceback" not in r.stderr


def test_hard_kill_then_resume(tmp_path):
    proc = subprocess.Popen(
        RECON + ["train", "--method", "gs", "demo:static", "--max-steps", "400", "--output-dir", str(tmp_path), "--trainer.checkpoint-every", "20", "--trainer.no-eval-at-end"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 300
    ckpts = []
    while time.time() < deadline and not ckpts:
        time.sleep(0.5)
        ckpts = list(tmp_path.glob("*/gs/*/checkpoints/step-*.pt"))
        assert proc.poll() is None, proc.communicate()[1][-2000:]  # it must still be training
    assert ckpts, "no checkpoint appeared"
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = ckpts[0].parent.parent
    step_at_kill = max(int(p.stem.split("-")[1]) for p in (run_dir / "checkpoints").glob("step-*.pt"))
    r = run(["train", "--resume", run_dir, "--max-steps", str(step_at_kill + 20)])
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resumed from" in r.stderr and f"(step {step_at_kill})" in r.stderr
    assert (run_dir / "checkpoints" / f"step-{step_at_kill + 20:06d}.pt").is_file()


def test_ctrl_c_writes_checkpoint_and_exits_cleanly(tmp_path):
    proc = subprocess.Popen(
        RECON + ["train", "--method", "gs", "demo:static", "--max-steps", "5000", "--output-dir", str(tmp_path), "--trainer.checkpoint-every", "100000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and not list(tmp_path.glob("*/gs/*/tensorboard")):
        time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
    time.sleep(3.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "resume with" in err
    run_dir = Path(out.strip().splitlines()[-1])
    assert list((run_dir / "checkpoints").glob("step-*.pt"))


@pytest.mark.parametrize(
    "args,needle",
    [
        (["eval", "/nonexistent/run"], "run directory does not exist"),
        (["train", "--method", "nosuch"], "unknown method 'nosuch'"),
        (["train", "/nonexistent/data", "--max-steps", "1"], "/nonexistent/data"),
        (["view", "/nonexistent/run"], "run directory does not exist"),
    ],
)
def test_bad_input_is_one_line(args, needle):
    r = run(args)
    assert r.returncode == 2
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_rejected_method_setting_leaves_no_run_folder(tmp_path):
    r = run(["train", "--method", "swift4d", "demo:dynamic", "--max-steps", "1", "--output-dir", tmp_path / "out", "--model.distortion", "maybe"])
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "distortion must be auto, on or off" in lines[0], r.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))


def test_debug_shows_traceback():
    r = run(["--debug", "eval", "/nonexistent/run"])
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_run_without_checkpoint_is_a_clear_error(tmp_path, trained_run):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    shutil.rmtree(copy / "checkpoints")
    r = run(["eval", copy])
    assert r.returncode == 2 and "no checkpoint" in r.stderr


def test_dynamic_region_metrics_of_a_static_run_say_it_has_no_time_axis(trained_run):
    r = run(["eval", trained_run, "--dynamic-region", "on"])
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "no time axis" in lines[0], r.stderr
    assert "Traceback" not in r.stderr


# ---------------------------------------------------------------------------- recon eval --mesh
# No registered method has a mesh of its own yet: a minimal one whose mesh is a known sphere in the normalised frame
# (one trained colour, so the trainer, checkpoints and the image metrics run as for any method).
SPHERE_RADIUS = 0.5  # normalised frame, centred on its origin


def _sphere_method():
    from dataclasses import dataclass

    import torch
    import trimesh

    from recon.methods.base import Capabilities, Method, MethodConfig

    @dataclass
    class SphereConfig(MethodConfig):
        pass

    class Sphere(Method):
        name = "test-sphere"
        config_cls = SphereConfig
        capabilities = Capabilities(mesh=True)

        def __init__(self, config, scene, max_steps, device):
            super().__init__(config, scene, max_steps, device)
            # Made here, not in setup(): loading a checkpoint skips setup() and needs the parameter to load into.
            self.colour = torch.nn.Parameter(torch.full((3,), 0.5, device=self.device_))
            self.adam = {"colour": torch.optim.Adam([self.colour], lr=0.01)}

        def setup(self, scene):
            pass

        def optimizers(self):
            return self.adam

        def train_step(self, batch, step):
            rgb = self.colour.expand_as(batch.image)
            return {"loss": (rgb - batch.image).abs().mean(), "rgb": rgb.detach()}

        def render(self, camera, time=None, outputs=("rgb",), background=None, **options):
            return {"rgb": self.colour.detach().expand(int(camera.heights[0]), int(camera.widths[0]), 3)}

        def mesh(self, time=None):
            return trimesh.creation.icosphere(subdivisions=4, radius=SPHERE_RADIUS)

    return Sphere


@pytest.fixture(scope="module")
def sphere_run(tmp_path_factory):
    """(run directory, its scene transform) of the sphere method trained a few steps through `recon train`."""
    import recon.methods
    from recon.cli import main
    from recon.engine.run import load_run

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(recon.methods._REGISTRY, "test-sphere", _sphere_method())
        out = tmp_path_factory.mktemp("sphere")
        args = ["train", "--method", "test-sphere", "demo:static", "--max-steps", "2", "--output-dir", out, "--trainer.no-eval-at-end"]
        assert main([str(a) for a in args]) == 0
        run_dir = next(out.glob("*/test-sphere/*"))
        yield run_dir, load_run(run_dir, device="cpu").transform


def test_eval_mesh_scores_the_methods_mesh_in_the_data_frame(sphere_run, tmp_path, capsys):
    import numpy as np
    import trimesh

    from recon.cli import main

    run_dir, transform = sphere_run
    assert transform.scale != 1  # else a missing frame mapping would go unnoticed
    # The method's sphere in the data frame, and a GT sphere about it 20 % larger in radius.
    centre, radius = transform.invert_points(np.zeros(3)), SPHERE_RADIUS / transform.scale
    gap = 0.2 * radius
    gt = trimesh.creation.icosphere(subdivisions=4, radius=radius + gap)
    gt.apply_translation(centre)
    gt.export(tmp_path / "gt.ply")
    capsys.readouterr()
    args = ["eval", run_dir, "--mesh", tmp_path / "gt.ply", "--mesh-points", "20000", "--fscore-threshold", 2 * gap, "--lpips", "none", "--json"]
    assert main([str(a) for a in args]) == 0
    m = json.loads(capsys.readouterr().out)
    g = m["geometry"]
    assert g["chamfer"] == pytest.approx(gap, rel=0.01) and g["accuracy"] == pytest.approx(gap, rel=0.01)
    assert g["normal_consistency"] > 0.999 and g["fscore"] == 1.0 and g["n_points"] == 20000
    assert g["pred"]["watertight"] and g["gt"]["boundary_loops"] == 0 and g["boundary_length_ratio"] is None
    assert "psnr" in m and m["num_images"] > 0  # the image metrics still run
    assert json.loads((run_dir / "eval-test.json").read_text())["geometry"] == g
    # Without --json: the image table and the geometry tables.
    assert main([str(a) for a in args[:-1]]) == 0
    printed = capsys.readouterr().out
    assert "psnr" in printed and "chamfer-L1" in printed and f"{g['chamfer']:.4g}" in printed and "boundary loops" in printed


def test_eval_mesh_errors_are_one_line(trained_run, sphere_run, tmp_path):
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"not a mesh at all")
    (tmp_path / "empty.obj").write_text("# nothing\n")
    sphere = tmp_path / "sphere.ply"
    __import__("trimesh").creation.icosphere(subdivisions=1).export(sphere)
    from recon.render.envmap import write_envmap

    env = write_envmap(tmp_path / "sky.hdr", __import__("numpy").ones((8, 16, 3), dtype="float32"))
    cases = [
        ([sphere_run[0], "--mesh", tmp_path / "missing.ply"], f"{tmp_path / 'missing.ply'}: mesh file does not exist"),
        ([sphere_run[0], "--mesh", bad], f"{bad}: cannot read a mesh from it (ValueError"),
        ([sphere_run[0], "--mesh", tmp_path / "empty.obj"], "empty.obj: the file holds no triangles with area"),
        ([trained_run, "--mesh", sphere], "method 'gs' has no mesh of its own"),
        ([trained_run, "--mesh", "gt:no_such_mesh"], "no ground-truth mesh 'no_such_mesh' in this data (it has: "),
        ([trained_run, "--materials"], "method 'gs' renders no base_color, roughness, metallic, normal: --materials scores"),
        ([trained_run, "--env", tmp_path / "missing.hdr"], f"{tmp_path / 'missing.hdr'}: environment map not found"),
        ([trained_run, "--env", env], "method 'gs' cannot relight: --env needs a method with the relight capability"),
    ]
    for args, needle in cases:
        r = run(["eval", *args, "--lpips", "none"])
        lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
        assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr


def test_train_seeds_keeps_the_best_training_fit(tmp_path, capsys):
    import yaml

    from recon.cli import main

    out = tmp_path / "runs"
    args = ["train", "--method", "blocks", "--max-steps", "4", "--seeds", "2", "--seed", "3", "--output-dir", out, "--trainer.no-eval-at-end"]
    assert main([str(a) for a in args]) == 0
    kept = Path(capsys.readouterr().out.strip().splitlines()[-1])
    summary = json.loads((out / "demo-solids" / "blocks" / "seeds.json").read_text())
    assert [r["seed"] for r in summary["runs"]] == [3, 4]
    assert summary["kept"]["train_psnr"] == max(r["train_psnr"] for r in summary["runs"]) and Path(summary["kept"]["run"]) == kept
    for r in summary["runs"]:  # both the trainer's and the method's own seed follow --seed
        cfg = yaml.safe_load((Path(r["run"]) / "config.yaml").read_text())
        assert cfg["trainer"]["seed"] == r["seed"] and cfg["model"]["seed"] == r["seed"]
    assert run(["train", "--method", "blocks", "--seeds", "0"]).returncode == 2
