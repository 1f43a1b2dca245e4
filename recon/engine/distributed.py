"""Data-parallel training with torch.distributed: the processes of one run, and the ``--gpus N`` launcher.

A data-parallel run has R processes (ranks), on one machine (``recon train --gpus N``, launched here through
torch's elastic launcher, as torchrun would) or on several (``torchrun ... recon train ...``; a rank finds its
place in the environment variables torchrun sets: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``). Every rank holds the whole model; each step, every rank renders its share of
the step's views, the gradients are summed over the ranks (one all-reduce of all of them) and the method gathers
the statistics its decisions depend on (:meth:`recon.methods.base.Method.combine_outputs`), so every rank takes
the same optimizer steps and densification decisions and keeps identical parameters. Rank 0 alone writes.

NCCL on CUDA (one GPU per process: ``cuda:LOCAL_RANK``), gloo on the CPU.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

from recon.errors import ReconError

#: Environment variable of the ``--gpus`` launcher: a folder where rank 0 names the run and each rank leaves the
#: one-line error it stopped with, so that the launcher prints one line for the whole run.
LAUNCH_DIR_ENV = "RECON_LAUNCH_DIR"
#: What a rank says when a collective fails because another rank is gone (the launcher prefers the other's story).
PEER_LOST = "another training process stopped"


#: How long a rank waits in a collective: the others wait this long while rank 0 evaluates the test split alone
#: (``--trainer.eval-every``). A rank that dies is noticed at once on gloo; on NCCL after this.
COLLECTIVE_TIMEOUT = _dt.timedelta(minutes=60)


def in_distributed_environment() -> bool:
    """Whether this process is a rank of a multi-process run (torchrun's variables, ``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass
class Ranks:
    """This process's place in a data-parallel run, and the collectives the trainer and methods use (the
    :class:`~recon.methods.base.Collective` methods see). Collective failures (a rank that died) become one
    :class:`ReconError`."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    # ---------------------------------------------------------------- collectives
    def all_gather(self, tensor: Tensor) -> Tensor:
        """[R * n, ...] every rank's ``tensor`` [n, ...] (same shape and dtype on every rank), in rank order."""
        src = tensor.detach().contiguous().to(self.device)
        parts = [torch.empty_like(src) for _ in range(self.world_size)]
        self._call(dist.all_gather, parts, src)
        return torch.cat(parts, 0).to(tensor.device)

    def all_reduce_sum_(self, tensor: Tensor) -> Tensor:
        """Sum ``tensor`` over the ranks, in place (returns it)."""
        self._call(dist.all_reduce, tensor)
        return tensor

    def sum_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Replace each parameter's gradient by its sum over the ranks, with one all-reduce per dtype. A parameter
        no rank gave a gradient keeps ``grad = None`` (Adam then skips it, as in one process); one that only some
        ranks reached counts zeros from the others."""
        by_dtype: dict[torch.dtype, list[torch.nn.Parameter]] = {}
        for p in params:
            if p.grad is not None and p.grad.is_sparse:
                raise ReconError("data-parallel training does not support sparse gradients")
            by_dtype.setdefault(p.dtype, []).append(p)
        for dtype, group in by_dtype.items():
            has = [p.grad is not None for p in group]
            flat = torch.cat([(p.grad if h else torch.zeros_like(p)).reshape(-1) for p, h in zip(group, has)]
                             + [torch.tensor(has, dtype=dtype, device=group[0].device)])  # fmt: skip
            self.all_reduce_sum_(flat)
            flags = flat[-len(group):]
            offset = 0
            for i, p in enumerate(group):
                n = p.numel()
                p.grad = flat[offset : offset + n].view_as(p) if bool(flags[i] > 0) else None
                offset += n

    def broadcast_tensors_(self, tensors: list[Tensor]) -> None:
        """Overwrite ``tensors`` (in place) with rank 0's."""
        for t in tensors:
            buf = t.detach().to(self.device).contiguous()
            self._call(dist.broadcast, buf, 0)
            if buf.data_ptr() != t.data_ptr():
                t.data.copy_(buf)

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` (picklable) on every rank."""
        box = [obj]
        self._call(dist.broadcast_object_list, box, 0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def parameters_agree(self, tensors: list[Tensor]) -> bool:
        """Whether every rank holds the same ``tensors`` (compared through their sizes and float64 sums)."""
        if not tensors:
            return True
        sizes = torch.tensor([float(t.numel()) for t in tensors], dtype=torch.float64)
        sums = torch.stack([t.detach().double().sum().cpu() for t in tensors] + [t.detach().double().abs().sum().cpu() for t in tensors])
        sums = torch.cat([sizes, sums])
        every = self.all_gather(sums[None].to(self.device)).cpu()
        return bool((every == every[0]).all())

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (RuntimeError, dist.DistBackendError) as exc:
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ReconError(f"{PEER_LOST} ({detail}); rank {self.rank} stops too") from None

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def from_environment(device: str) -> Ranks | None:
    """Join the run described by torchrun's environment variables (None when this is a single process).

    ``device``: ``auto`` (CUDA when available), ``cpu`` or ``cuda``; each CUDA rank takes GPU ``LOCAL_RANK``.
    """
    if not in_distributed_environment():
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        for key in ("MASTER_ADDR", "MASTER_PORT"):
            os.environ[key]  # noqa: B018  (env:// needs them; say which is missing)
    except (KeyError, ValueError) as exc:
        raise ReconError(f"WORLD_SIZE > 1 but torchrun's environment is incomplete ({type(exc).__name__}: {exc}); launch with torchrun or recon train --gpus N") from None
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise ReconError(f"device {device!r} requested but CUDA is not available")
        if local_rank >= torch.cuda.device_count():
            raise ReconError(f"rank {rank} needs GPU {local_rank} but this machine has {torch.cuda.device_count()}")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        dist.init_process_group("nccl", init_method="env://", device_id=dev, timeout=COLLECTIVE_TIMEOUT)
    else:
        dev = torch.device("cpu")
        dist.init_process_group("gloo", init_method="env://", timeout=COLLECTIVE_TIMEOUT)
    return Ranks(rank, world, local_rank, local_world, dev)


# -------------------------------------------------------------------- the --gpus launcher
def launch(train_argv: list[str], nproc: int, device: str, console) -> int:
    """Run ``recon train train_argv`` as ``nproc`` ranks on this machine (torch's elastic launcher, as
    ``torchrun --standalone --nproc-per-node nproc`` would) and report a failed run in one line.

    Returns the exit code (0: every rank finished).
    """
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise ReconError(f"--gpus must be at least 1 (got {nproc})")
    if device != "cpu":
        if not torch.cuda.is_available():
            raise ReconError(f"--gpus {nproc}: CUDA is not available on this machine (--device cpu trains {nproc} CPU processes with gloo instead)")
        if nproc > torch.cuda.device_count():
            raise ReconError(f"--gpus {nproc}: this machine has {torch.cuda.device_count()} GPU(s)")
    from torch.distributed.elastic.multiprocessing.api import SignalException

    # The elastic agent's own log lines (start-up, the closing of the other ranks) are not for users: recon says
    # what happened in one line (its loggers set their own levels, so each is quietened).
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    launch_dir = Path(tempfile.mkdtemp(prefix="recon-launch-"))
    env_before = os.environ.get(LAUNCH_DIR_ENV)
    os.environ[LAUNCH_DIR_ENV] = str(launch_dir)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()), rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.2)  # fmt: skip
    try:
        elastic_launch(config, sys.executable)("-m", "recon.cli", "train", *train_argv)
        return 0
    except ChildFailedError as exc:
        console.print(f"recon: error: {_failure_line(exc, launch_dir, nproc)}", highlight=False, markup=False, soft_wrap=True)
        return 1
    except SignalException as exc:
        # The agent passed the signal on. Ctrl-C: rank 0 checkpointed and said how to resume (as one process does,
        # that is a clean end); other signals end the processes where they are.
        import signal

        return 0 if int(exc.sigval) == signal.SIGINT else 128 + int(exc.sigval)
    finally:
        if env_before is None:
            os.environ.pop(LAUNCH_DIR_ENV, None)
        else:
            os.environ[LAUNCH_DIR_ENV] = env_before
        for f in launch_dir.iterdir():
            f.unlink()
        launch_dir.rmdir()


def _failure_line(exc, launch_dir: Path, nproc: int) -> str:
    """One line for a failed launch: the error a rank stopped with (not one that only says another rank went
    away), else how the first failed rank ended; then where the run stands."""
    errors = {}
    for f in sorted(launch_dir.glob("error-rank*.txt")):
        errors[int(f.stem.removeprefix("error-rank"))] = f.read_text().strip()
    own = [(r, e) for r, e in sorted(errors.items()) if not e.startswith(PEER_LOST)]
    if own:
        rank, text = own[0]
        line = f"rank {rank}: {text}" if len({e for _, e in own}) > 1 or rank != 0 else text
    else:
        root = exc.get_first_failure()[1]
        died = f"killed by {root.signal_name()}" if root.exitcode < 0 else f"exited with code {root.exitcode}"
        line = f"training process rank {root.local_rank} (pid {root.pid}) {died}"
    info = launch_dir / "run.json"
    if info.is_file():
        run_dir = Path(json.loads(info.read_text())["run_dir"])
        from recon.engine import checkpoint as ckpt

        last = ckpt.latest_checkpoint(run_dir)
        where = f"last checkpoint {last}" if last is not None else "no checkpoint was written"
        line += f"; the run stopped ({where}; resume: recon train --resume {run_dir} --gpus {nproc})"
    return line


def announce_run_dir(run_dir: Path) -> None:
    """Rank 0 of a ``--gpus`` launch: tell the launcher which run this is (for its failure message)."""
    folder = os.environ.get(LAUNCH_DIR_ENV)
    if folder:
        (Path(folder) / "run.json").write_text(json.dumps({"run_dir": str(Path(run_dir).resolve())}))


def leave_error(rank: int, message: str) -> bool:
    """A rank of a ``--gpus`` launch stops with ``message``: leave it for the launcher, which prints one line for
    the whole run. Returns False outside such a launch (the rank then prints it itself)."""
    folder = os.environ.get(LAUNCH_DIR_ENV)
    if not folder or not Path(folder).is_dir():
        return False
    (Path(folder) / f"error-rank{rank}.txt").write_text(message)
    return True
