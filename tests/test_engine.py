"""Training engine: learning happens, checkpoints are atomic and complete, runs resume exactly."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from recon.data.normalize import compute_normalization, normalize_scene
from recon.engine import checkpoint as ckpt
from recon.engine.trainer import Trainer, TrainerConfig
from recon.errors import ReconError
from recon.eval.evaluate import evaluate
from recon.methods import get_method
from tests.helpers import blob_scene


def _setup(tmp_path, max_steps=60, **trainer_kw):
    scene = blob_scene()
    scene = normalize_scene(scene, compute_normalization(scene))
    cls = get_method("gs")
    cfg = cls.config_cls(sh_degree=1, sh_degree_interval=20)
    cfg.densify = dataclasses.replace(cfg.densify, refine_start=0.2, refine_stop=0.8, refine_every=10, reset_every=0)
    method = cls(cfg, scene, max_steps, "cpu")
    method.setup(scene)
    tcfg = TrainerConfig(max_steps=max_steps, log_every=10, image_every=0, checkpoint_every=20, eval_at_end=False, **trainer_kw)
    return scene, method, Trainer(tcfg, method, scene, tmp_path / "run")


def test_training_improves_psnr_and_writes_checkpoints(tmp_path):
    scene, method, trainer = _setup(tmp_path, max_steps=150)
    before = evaluate(method, scene, "test", with_lpips=False)["psnr"]
    trainer.train()
    after = evaluate(method, scene, "test", with_lpips=False)["psnr"]
    assert after > before + 5.0, (before, after)
    files = ckpt.list_checkpoints(trainer.run_dir)
    assert files and files[-1].name == "step-000150.pt"
    assert len(files) <= trainer.config.keep_checkpoints
    state = torch.load(files[-1], weights_only=True)  # no pickled objects
    assert state["step"] == 150 and "optimizers" in state and "rng" in state
    assert (trainer.run_dir / "training_curves.png").is_file()
    # Densification ran through gsplat's strategy on the CPU path.
    assert method.splats["means"].shape[0] != 400


def test_resume_continues_exactly(tmp_path):
    _, m_full, t_full = _setup(tmp_path / "a", max_steps=40)
    t_full.train()
    _, m_half, t_half = _setup(tmp_path / "b", max_steps=40)
    t_half.config = dataclasses.replace(t_half.config, max_steps=20)
    t_half.train()
    # A fresh process would rebuild everything from the run directory: emulate with new objects.
    _, m_res, t_res = _setup(tmp_path / "b", max_steps=40)
    assert t_res.resume() and t_res.step == 20
    t_res.train()
    assert t_res.step == 40
    for k in m_full.splats:
        a, b = m_full.splats[k], m_res.splats[k]
        assert a.shape == b.shape, k
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-3), k


def test_small_device_image_cache_trains_identically(tmp_path):
    """A device-image budget of two images (evicting and re-fetching all the time) gives the same run as a budget
    that holds the whole training set."""
    _, m_all, t_all = _setup(tmp_path / "a", max_steps=30)
    t_all.train()
    one = blob_scene().image(0).nbytes  # every image of the scene has this size
    scene, m_small, t_small = _setup(tmp_path / "b", max_steps=30, image_cache_gb=2.5 * one / (1 << 30))
    t_small.train()
    assert len(t_all.loader.images._items) == len(scene.split("train"))
    assert len(t_small.loader.images._items) == 2 and t_small.loader.images._bytes <= 2.5 * one
    _, m_none, t_none = _setup(tmp_path / "c", max_steps=30, image_cache_gb=0)
    t_none.train()
    assert not t_none.loader.images._items  # 0: nothing stays on the device
    for k in m_all.splats:
        assert torch.equal(m_all.splats[k], m_small.splats[k]), k
        assert torch.equal(m_all.splats[k], m_none.splats[k]), k


@pytest.mark.parametrize("gb", [-1.0, float("nan")])
def test_negative_image_cache_is_a_clear_error(tmp_path, gb):
    with pytest.raises(ReconError, match="image-cache-gb must be >= 0"):
        _setup(tmp_path, max_steps=10, image_cache_gb=gb)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "checkpoints" / "step-000001.pt"
    ckpt.atomic_save({"x": torch.ones(3)}, target)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        ckpt.atomic_save({"x": torch.zeros(3)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["x"], torch.ones(3))
    assert [p.name for p in target.parent.iterdir()] == ["step-000001.pt"]


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    from recon.errors import ReconError

    bad = tmp_path / "step-000005.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ReconError, match="corrupt"):
        ckpt.load_checkpoint(bad)


def test_checkpoint_of_another_method_is_a_clear_error_on_resume(tmp_path):
    """Resume and load_run share one loader (ckpt.load_method_state): a mismatch names the file in one line."""
    _, _, trainer = _setup(tmp_path, max_steps=20)
    trainer.train()
    path = ckpt.latest_checkpoint(trainer.run_dir)
    state = ckpt.load_checkpoint(path)
    state["method"] = {k: v for k, v in state["method"].items() if "means" not in k}  # not this method's state
    ckpt.atomic_save(state, path)
    _, _, fresh = _setup(tmp_path, max_steps=40)
    with pytest.raises(ReconError, match="does not match the run's method") as err:
        fresh.resume()
    assert err.value.path == path


def test_eval_every_writes_a_quality_curve_without_counting_its_time(tmp_path, monkeypatch):
    import json
    import time

    import recon.eval.evaluate as ev

    real = ev.evaluate

    def slow_evaluate(*a, **kw):  # an evaluation that takes a known, long time
        time.sleep(3.0)
        return real(*a, **kw)

    monkeypatch.setattr(ev, "evaluate", slow_evaluate)
    scene, method, trainer = _setup(tmp_path, max_steps=30, eval_every=10, lpips="none")
    trainer.config.eval_at_end = True
    trainer.train()
    curve = json.loads((trainer.run_dir / "eval_curve.json").read_text())
    assert [row["step"] for row in curve] == [10, 20, 30]
    assert all("psnr" in row and "per_image" not in row for row in curve)
    seconds = [row["train_seconds"] for row in curve]
    assert seconds == sorted(seconds)
    # An evaluation of over 3 s ran between each two points; none of it is training time (10 steps of this scene
    # take a fraction of that, about 1.5 s at most on a loaded 2-core machine).
    assert all(b - a < 3.0 for a, b in zip(seconds, seconds[1:])), seconds
    assert curve[-1]["psnr"] == pytest.approx(json.loads((trainer.run_dir / "metrics.json").read_text())["psnr"])
