"""Data-parallel training (torch.distributed, gloo on this machine's loopback): R processes with batch b train the
same model as one process with batch R x b, densification included; rank 0 alone writes; checkpoints resume on
any number of processes; a killed rank ends the run in one line.

The multi-process tests are marked ``distributed`` (each starts 2-3 short runs); the others are quick.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

RECON = [sys.executable, "-m", "recon.cli"]

# Densification inside 30 steps (refine at steps 5, 10 and 15), one thread per process: the CPU rasterizer's
# reductions then add in the same order in every process, so the comparison can be exact.
GS = ["train", "--method", "gs", "demo:static", "--max-steps", "30", "--trainer.lpips", "none", "--trainer.no-eval-at-end",
      "--model.densify.refine-every", "5", "--model.densify.refine-start", "0.1", "--model.densify.grow-grad2d", "0.00005",
      "--trainer.checkpoint-every", "10", "--trainer.keep-checkpoints", "5", "--trainer.threads", "1"]  # fmt: skip


def run(args, **kw):
    return subprocess.run(RECON + [str(a) for a in args], capture_output=True, text=True, timeout=kw.pop("timeout", 600), **kw)


def run_dir_of(output: Path) -> Path:
    (found,) = list(output.glob("*/*/*/config.yaml"))
    return found.parent


def checkpoint(run_dir: Path, step: int) -> dict:
    return torch.load(run_dir / "checkpoints" / f"step-{step:06d}.pt", weights_only=True)


def assert_same_training_state(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    assert a["method"].keys() == b["method"].keys()
    for k in a["method"]:
        assert a["method"][k].shape == b["method"][k].shape, k
        torch.testing.assert_close(a["method"][k], b["method"][k], rtol=0, atol=1e-6, msg=k)
    for k, v in a["method_extra"]["densifier"].items():
        if torch.is_tensor(v):
            torch.testing.assert_close(v, b["method_extra"]["densifier"][k], rtol=0, atol=1e-6, msg=k)
    for name, opt in a["optimizers"].items():
        for pid, st in opt["state"].items():
            for k in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(st[k], b["optimizers"][name]["state"][pid][k], rtol=0, atol=1e-6)
    assert a["loader"]["order"].tolist() == b["loader"]["order"].tolist()


# ---------------------------------------------------------------------------- two processes, one model
@pytest.fixture(scope="module")
def gs_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dp")
    one = run(GS + ["--output-dir", root / "one", "--trainer.batch-size", "2"])
    assert one.returncode == 0, one.stderr[-3000:]
    two = run(GS + ["--output-dir", root / "two", "--gpus", "2", "--device", "cpu"])
    assert two.returncode == 0, two.stderr[-3000:]
    return {"one": run_dir_of(root / "one"), "two": run_dir_of(root / "two"), "two_proc": two, "root": root}


@pytest.mark.distributed
def test_two_processes_train_the_model_one_process_trains_with_the_doubled_batch(gs_runs):
    for step in (10, 20, 30):
        assert_same_training_state(checkpoint(gs_runs["one"], step), checkpoint(gs_runs["two"], step))
    n0 = checkpoint(gs_runs["one"], 10)["method"]["splats.means"].shape[0]
    assert n0 > 6000, "densification did not run in the compared window"  # the demo starts from 6000 points


@pytest.mark.distributed
def test_only_rank_zero_writes(gs_runs):
    r = gs_runs["two_proc"]
    assert r.stdout.strip().splitlines() == [str(gs_runs["two"])]  # the run folder, printed once
    assert list((gs_runs["root"] / "two").glob("*/*/*")) == [gs_runs["two"]]  # rank 1 made no folder of its own
    assert len(list((gs_runs["two"] / "tensorboard").iterdir())) == 1
    assert r.stderr.count("recon: training gs") == 1 and "Traceback" not in r.stderr
    assert "processes: 2" in (gs_runs["two"] / "config.yaml").read_text()


@pytest.mark.distributed
def test_a_distributed_checkpoint_resumes_on_one_process_and_back(gs_runs, tmp_path):
    import shutil

    # two processes' checkpoint of step 10, continued on one process ...
    two = tmp_path / "two"
    shutil.copytree(gs_runs["two"], two)
    for s in (20, 30):
        (two / "checkpoints" / f"step-{s:06d}.pt").unlink()
    r = run(["train", "--resume", two])
    assert r.returncode == 0 and "(step 10)" in r.stderr, r.stderr[-3000:]
    assert_same_training_state(checkpoint(gs_runs["one"], 30), checkpoint(two, 30))
    # ... and one process's checkpoint of step 20 continued on two
    one = tmp_path / "one"
    shutil.copytree(gs_runs["one"], one)
    (one / "checkpoints" / "step-000030.pt").unlink()
    r = run(["train", "--resume", one, "--gpus", "2", "--device", "cpu"])
    assert r.returncode == 0 and "(step 20)" in r.stderr, r.stderr[-3000:]
    assert_same_training_state(checkpoint(gs_runs["one"], 30), checkpoint(one, 30))
    assert "batch_size: 1" in (one / "config.yaml").read_text() and "processes: 2" in (one / "config.yaml").read_text()


@pytest.mark.distributed
def test_swift4d_on_two_processes_equals_one_process(tmp_path):
    # 40 steps cross all of Swift4D's stages (canonical, d-score, the deformation field's start, fine).
    args = ["train", "--method", "swift4d", "--max-steps", "40", "--trainer.lpips", "none", "--trainer.no-eval-at-end",
            "--trainer.checkpoint-every", "20", "--trainer.threads", "1"]  # fmt: skip
    one = run(args + ["--output-dir", tmp_path / "one", "--trainer.batch-size", "2"])
    assert one.returncode == 0, one.stderr[-3000:]
    two = run(args + ["--output-dir", tmp_path / "two", "--gpus", "2", "--device", "cpu"])
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = checkpoint(run_dir_of(tmp_path / "one"), 40), checkpoint(run_dir_of(tmp_path / "two"), 40)
    assert bool(a["method"]["fine_ready"])
    assert_same_training_state(a, b)


@pytest.mark.distributed
def test_a_killed_rank_ends_the_run_in_one_line_and_keeps_the_checkpoint(tmp_path):
    proc = subprocess.Popen(RECON + ["train", "--method", "gs", "--max-steps", "3000", "--trainer.lpips", "none", "--trainer.checkpoint-every", "20",
                                     "--output-dir", str(tmp_path), "--gpus", "2", "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and not list(tmp_path.glob("*/gs/*/checkpoints/step-*.pt")):
        time.sleep(0.3)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
    rank1 = _pid_with_env("RANK", "1")
    assert rank1 is not None
    os.kill(rank1, signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("recon: error: training process rank 1") and "SIGKILL" in errors[0], err[-3000:]
    assert "--resume" in errors[0] and "Traceback" not in err
    run_dir = run_dir_of(tmp_path)
    last = sorted((run_dir / "checkpoints").glob("step-*.pt"))[-1]
    assert torch.load(last, weights_only=True)["step"] > 0


def _pid_with_env(key: str, value: str) -> int | None:
    """A `recon train` rank of this test's launch, by an environment variable the launcher gave it."""
    me = os.getpid()
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if pid != me and b"recon.cli" in cmd and f"{key}={value}".encode() in env:
            return pid
    return None


# ---------------------------------------------------------------------------- gradient sums across processes
def _sum_gradients_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from recon.engine.distributed import Ranks

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    ranks = Ranks(rank, 2, rank, 2, torch.device("cpu"))
    both, only_rank1, nobody = (torch.nn.Parameter(torch.zeros(3)) for _ in range(3))
    both.grad = torch.full((3,), float(rank + 1))
    if rank == 1:
        only_rank1.grad = torch.ones(3)
    ranks.sum_gradients([both, only_rank1, nobody])
    gathered = ranks.all_gather(torch.tensor([[rank, 10 + rank]]))
    torch.save({"both": both.grad, "only_rank1": only_rank1.grad, "nobody": nobody.grad, "gathered": gathered}, f"{out}.{rank}")
    ranks.close()


@pytest.mark.distributed
def test_sum_gradients_and_all_gather(tmp_path):
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_sum_gradients_worker, args=(port, str(tmp_path / "r")), nprocs=2)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"r.{rank}", weights_only=True)
        assert torch.equal(got["both"], torch.full((3,), 3.0))
        assert torch.equal(got["only_rank1"], torch.ones(3))  # rank 0 counted zeros
        assert got["nobody"] is None  # no rank had one: Adam must skip it, as in one process
        assert got["gathered"].tolist() == [[0, 10], [1, 11]]


# ---------------------------------------------------------------------------- quick: refusals, randomness, merging
@pytest.mark.parametrize("extra", [["--trainer.batch-size", "2"], ["--gpus", "2", "--device", "cpu"]])
def test_a_method_without_data_parallel_training_refuses_in_one_line(tmp_path, extra):
    r = run(["train", "--method", "blocks", "--max-steps", "1", "--output-dir", tmp_path] + extra)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = [x for x in r.stderr.splitlines() if x.strip()]
    assert line.startswith("recon: error: method 'blocks' trains on one view per step") and "gs, swift4d" in line
    assert not list(tmp_path.glob("**/config.yaml"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_gpus_without_cuda_says_so(tmp_path):
    r = run(["train", "--method", "gs", "--max-steps", "1", "--output-dir", tmp_path, "--gpus", "2"])
    assert r.returncode == 2 and "CUDA is not available" in r.stderr and "--device cpu" in r.stderr and "Traceback" not in r.stderr


def test_per_view_random_state_depends_on_the_slot_only_and_restores_the_generators():
    from recon.engine.trainer import _per_view_random_state

    torch.manual_seed(5)
    np.random.seed(5)
    before_t, before_n = torch.get_rng_state(), np.random.get_state()[1].copy()
    draws = {}
    for slot in (0, 1, 0):
        with _per_view_random_state(seed=3, step=7, slot=slot, active=True, device=torch.device("cpu")):
            draws.setdefault(slot, []).append((torch.rand(2), np.random.rand()))
    assert torch.equal(draws[0][0][0], draws[0][1][0]) and draws[0][0][1] == draws[0][1][1]
    assert not torch.equal(draws[0][0][0], draws[1][0][0])
    assert torch.equal(torch.get_rng_state(), before_t) and np.array_equal(np.random.get_state()[1], before_n)
    with _per_view_random_state(seed=3, step=7, slot=0, active=False, device=torch.device("cpu")):
        torch.rand(1)  # a single-view step draws from the run's own stream
    assert not torch.equal(torch.get_rng_state(), before_t)


def test_data_parallel_flag_needs_combine_outputs():
    from recon.methods.base import Method

    with pytest.raises(TypeError, match="combine_outputs"):

        class _Broken(Method):  # noqa: F841
            data_parallel = True
