"""Creating, resuming and loading runs: the glue between the CLI, the data layer, methods and the trainer.

A run directory holds ``config.yaml`` (plain YAML: method, data location and options, trainer and model config,
the scene normalisation), ``checkpoints/``, ``metrics.json``, ``renders/`` and TensorBoard logs. Everything that
reads a run (eval, render, export, view) goes through :func:`load_run`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

import recon
from recon.config import from_plain, new_run_dir, read_yaml, to_plain, write_yaml
from recon.data.normalize import SceneTransform, compute_normalization, normalize_scene
from recon.data.scene import SceneData
from recon.engine import checkpoint as ckpt
from recon.engine.distributed import Ranks, announce_run_dir
from recon.engine.trainer import Trainer, TrainerConfig, check_batch
from recon.errors import ReconError
from recon.methods import get_method


@dataclass
class DataConfig:
    path: str | None = None
    """Data folder (or ``demo:<name>``); empty: the built-in demo scene that suits the method."""
    format: str | None = None
    """Force a reader (nerfstudio, blender, dnerf, colmap, llff, neus, n3dv) instead of auto-detection."""
    downscale: int = 1
    """Integer image downscale factor (COLMAP/LLFF use images_N folders when present)."""
    test_every: int = 8
    """Hold out every N-th image as the test split when the format has no split of its own."""
    normalize: str = "cameras"
    """Scene normalisation: cameras (centre and scale the training cameras), aabb (the scene box) or none."""


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ReconError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


def load_data(data: DataConfig, method_name: str) -> SceneData:
    """Load the scene named by ``data`` (a folder, ``demo:<name>``, or the method's ``default_demo``)."""
    from recon.demo import load_demo

    if not data.path:
        return load_demo(get_method(method_name).default_demo)
    if str(data.path).startswith("demo:"):
        return load_demo(str(data.path)[5:])
    from recon.data import load_scene
    from recon.data.undistort import undistort_scene

    # recon's rasterizers render pinhole images: distorted captures are resampled once, lazily, on load.
    return undistort_scene(load_scene(Path(data.path), format=data.format, downscale=data.downscale, test_every=data.test_every))


def build_method(method_name: str, model_cfg, scene: SceneData | None, max_steps: int, device: torch.device):
    cls = get_method(method_name)
    return cls(model_cfg, scene, max_steps, device).to(device)


def start_training(
    method_name: str,
    data: DataConfig,
    trainer_cfg: TrainerConfig,
    model_cfg,
    output_dir: Path,
    device: str = "auto",
    console: Console | None = None,
    viewer: bool = False,
    viewer_port: int = 7007,
    ranks: Ranks | None = None,
) -> Path:
    """Train a new run; returns its directory. ``ranks``: this process's place in a data-parallel run (every rank
    calls this; rank 0 creates the run folder and writes, the others train beside it)."""
    console = console or Console(stderr=True)
    writer = ranks is None or ranks.is_writer
    if not writer:
        console = Console(stderr=True, quiet=True)
    dev = resolve_device(device) if ranks is None else ranks.device
    torch.manual_seed(trainer_cfg.seed)
    scene = load_data(data, method_name)
    for w in scene.warnings:
        console.print(f"[yellow]warning[/]: {w}")
    transform = compute_normalization(scene, data.normalize)
    scene_n = normalize_scene(scene, transform)
    # The method first: a setting it rejects must not leave an empty run folder behind.
    method = build_method(method_name, model_cfg, scene_n, trainer_cfg.max_steps, dev)
    check_batch(method, trainer_cfg.batch_size, 1 if ranks is None else ranks.world_size)
    method.setup(scene_n)
    method.to(dev)
    if ranks is not None:  # every rank starts from rank 0's parameters, whatever randomness its set-up used
        ranks.broadcast_tensors_(list(method.state_dict().values()))
    run_dir = new_run_dir(output_dir, scene.name, method_name) if writer else None
    if ranks is not None:
        run_dir = Path(ranks.broadcast_object(None if run_dir is None else str(run_dir)))
        if writer:
            announce_run_dir(run_dir)
    config = {
        "recon_version": recon.__version__,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "method": method_name,
        "device": device,
        "data": to_plain(dataclasses.replace(data, path=str(Path(data.path).resolve()) if data.path and not str(data.path).startswith("demo:") else data.path)),
        "scene": {"name": scene.name, "format": scene.format},
        "normalization": transform.to_dict(),
        "trainer": to_plain(trainer_cfg),
        "model": to_plain(model_cfg),
        "processes": 1 if ranks is None else ranks.world_size,
    }
    if writer:
        write_yaml(config, run_dir / "config.yaml")
    where = f"{dev}" if ranks is None else f"{ranks.world_size} processes ({dev.type}), {trainer_cfg.batch_size * ranks.world_size} views a step"
    console.print(f"[bold]recon[/]: training {method_name} on {scene.name} ({len(scene.split('train'))} train views) on {where} -> {run_dir}")
    for note in method.setup_notes():
        console.print(f"recon: {method_name}: {note}", highlight=False, markup=False)
    _run_trainer(trainer_cfg, method, scene_n, run_dir, console, viewer and writer, viewer_port, ranks=ranks)
    return run_dir


def resume_training(run_dir: Path, max_steps: int | None = None, max_minutes: float | None = None, console: Console | None = None, viewer: bool = False, viewer_port: int = 7007,
                    ranks: Ranks | None = None) -> Path:  # fmt: skip
    """Continue a run from its latest checkpoint (optionally with a new step or time budget), in one process or
    several (``ranks``), whatever the run was trained with: the step's batch stays what it was (views per process
    = the run's views per step / processes)."""
    console = console or Console(stderr=True)
    writer = ranks is None or ranks.is_writer
    if not writer:
        console = Console(stderr=True, quiet=True)
    run = load_run(run_dir, load_weights=False, device="auto" if ranks is None else str(ranks.device))
    cfg = run.trainer_config
    if max_steps is not None:
        cfg = dataclasses.replace(cfg, max_steps=max_steps)
    if max_minutes is not None:
        cfg = dataclasses.replace(cfg, max_minutes=max_minutes)
    world = 1 if ranks is None else ranks.world_size
    cfg = dataclasses.replace(cfg, batch_size=_batch_per_process(run, world))
    if writer and (cfg.batch_size, world) != (run.trainer_config.batch_size, int(run.config.get("processes", 1))):
        config = dict(run.config, processes=world, trainer={**run.config.get("trainer", {}), "batch_size": cfg.batch_size})
        write_yaml(config, run.run_dir / "config.yaml")
    if ranks is not None and writer:
        announce_run_dir(run.run_dir)
    if ckpt.latest_checkpoint(run.run_dir) is None:
        console.print(f"[yellow]warning[/]: {run.run_dir} has no checkpoint; starting it from scratch")
        run.method.setup(run.scene)
        if ranks is not None:
            ranks.broadcast_tensors_(list(run.method.state_dict().values()))
    _run_trainer(cfg, run.method, run.scene, run.run_dir, console, viewer and writer, viewer_port, resume=True, ranks=ranks)
    return run.run_dir


def _batch_per_process(run: "LoadedRun", world_size: int) -> int:
    """Views per process that keep the run's views per step on ``world_size`` processes."""
    step_views = run.trainer_config.batch_size * int(run.config.get("processes", 1))
    if step_views % world_size:
        raise ReconError(f"the run takes {step_views} views a step, which {world_size} processes cannot share evenly", run.run_dir / "config.yaml")
    return step_views // world_size


def _run_trainer(cfg, method, scene, run_dir, console, viewer, viewer_port, resume=False, ranks=None):
    live = None
    if viewer:
        from recon.viewer.live import LiveViewer

        live = LiveViewer(method, scene, port=viewer_port, console=console, output_dir=Path(run_dir) / "renders" / "viewer")
    trainer = Trainer(cfg, method, scene, run_dir, console=console, viewer=live, ranks=ranks)
    if resume:
        trainer.resume()
    try:
        trainer.train()
    finally:
        if live is not None:
            live.close()


@dataclass
class LoadedRun:
    run_dir: Path
    config: dict
    method: Any
    scene: SceneData  # normalised
    transform: SceneTransform
    trainer_config: TrainerConfig
    step: int


def find_run_dir(path: Path) -> Path:
    """Accept a run directory, its config.yaml or a checkpoint path."""
    path = Path(path)
    if not path.exists():
        raise ReconError("run directory does not exist", path)
    if path.is_file():
        path = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    if not (path / "config.yaml").is_file():
        raise ReconError("not a recon run directory (no config.yaml)", path)
    return path


def load_run(run_dir: Path, device: str = "auto", data_override: Path | None = None, load_weights: bool = True, console: Console | None = None) -> LoadedRun:
    """Rebuild a run's method (with its latest weights) and its normalised scene."""
    run_dir = find_run_dir(run_dir)
    config = read_yaml(run_dir / "config.yaml")
    try:
        method_name = config["method"]
        cls = get_method(method_name)
        model_cfg = from_plain(cls.config_cls, config.get("model", {}))
        trainer_cfg = from_plain(TrainerConfig, config.get("trainer", {}))
        data = from_plain(DataConfig, config.get("data", {}))
        transform = SceneTransform.from_dict(config["normalization"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ReconError(f"config is incomplete or invalid ({type(exc).__name__}: {exc})", run_dir / "config.yaml") from None
    if data_override is not None:
        data = dataclasses.replace(data, path=str(data_override), format=None)
    scene = normalize_scene(load_data(data, method_name), transform)
    dev = resolve_device(device if device != "auto" else config.get("device", "auto"))
    method = build_method(method_name, model_cfg, scene, trainer_cfg.max_steps, dev)
    step = 0
    if load_weights:
        path = ckpt.latest_checkpoint(run_dir)
        if path is None:
            raise ReconError("run has no checkpoint yet", run_dir / "checkpoints")
        state = ckpt.load_checkpoint(path, map_location=dev)
        ckpt.load_method_state(method, state, path)
        step = int(state["step"])
        method.eval()
    return LoadedRun(run_dir, config, method, scene, transform, trainer_cfg, step)
