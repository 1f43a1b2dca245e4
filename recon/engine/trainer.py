"""The training loop, generic over methods.

The trainer owns: the data loader (random views, images cached on the device), the step loop with its progress
bar, TensorBoard logging, periodic and final checkpoints (atomic), resume, Ctrl-C handling, the time budget, and
the evaluation at the end. Methods own their parameters, optimizers, losses and schedules (see
:class:`recon.methods.base.Method`).
"""

from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
import tyro
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from recon.data.scene import ImageCache, SceneData
from recon.engine import checkpoint as ckpt
from recon.errors import ReconError
from recon.eval.metrics import psnr, ssim
from recon.methods.base import Batch, Method


@dataclass
class TrainerConfig:
    # The first three are set from `recon train --max-steps/--max-minutes/--seed` (hidden here to avoid two flags).
    max_steps: tyro.conf.Suppress[int] = 7000
    """Number of optimisation steps."""
    max_minutes: tyro.conf.Suppress[Optional[float]] = None
    """Stop (with a checkpoint and the final evaluation) after this many minutes of training."""
    seed: tyro.conf.Suppress[int] = 0
    """Seed for every random number generator."""
    checkpoint_every: int = 1000
    """Write a checkpoint every N steps (and at the end, on Ctrl-C and when the time budget runs out)."""
    checkpoint_minutes: float = 5.0
    """Also write a checkpoint when this many minutes passed since the last one."""
    keep_checkpoints: int = 2
    """How many checkpoints to keep on disk."""
    log_every: int = 50
    """Write TensorBoard scalars every N steps."""
    image_every: int = 1000
    """Every N steps (0: never) render one test view into TensorBoard and renders/progress/, and log its PSNR, SSIM
    and LPIPS."""
    background: Literal["auto", "random", "white", "black"] = "auto"
    """Background behind RGBA training images: auto = random for RGBA data (teaches transparency), the data's
    own otherwise. A fixed background lets the model hide floaters of that colour from every training view: on
    D-NeRF lego, training on white scored 14.6 dB val PSNR against 23.8 with random backgrounds."""
    threads: int = 0
    """CPU threads for torch and recon's kernels (0: torch's default, all cores). On a machine busy with other
    work, 1 is often faster: idle-waiting worker threads stall every small operation."""
    eval_at_end: bool = True
    """Evaluate the test split when training ends and write metrics.json."""
    eval_every: int = 0
    """Every N steps (0: never) evaluate the whole test split and append the metrics, with the training time so far,
    to eval_curve.json (quality against wall time; the evaluations' own time is not counted as training time)."""
    lpips: Literal["alex", "vgg", "none"] = "alex"
    """LPIPS backbone of the evaluations during and after training (none: PSNR and SSIM only). Its weights come
    from the set-up (`python -m recon.eval.lpips --fetch`); without them LPIPS is reported as unavailable."""
    image_cache_gb: float = 4.0
    """Training images kept on the device, in GiB (float32; masks get another quarter of it); beyond it the least
    recently used are dropped and fetched again from the data's own decoded-image cache. Small data sets stay
    resident; full-resolution multi-view video does not have to fit. 0 keeps none on the device (every step
    copies its images again)."""


class _DeviceFrames:
    """The scene's images (or masks) as tensors on the device: an image source for :class:`ImageCache`."""

    def __init__(self, scene: SceneData, device: torch.device, masks: bool = False):
        self.scene, self.device, self.masks = scene, device, masks

    def __len__(self) -> int:
        return len(self.scene)

    def load(self, index: int) -> torch.Tensor:
        arr = self.scene.mask(index) if self.masks else self.scene.image(index)
        return torch.from_numpy(np.ascontiguousarray(arr)).to(self.device)

    def describe(self, index: int) -> str:
        return self.scene.describe_image(index)


class _Loader:
    """Random training views; their images stay on the device in an LRU cache of ``budget_bytes``."""

    def __init__(self, scene: SceneData, device: torch.device, seed: int, background: str, budget_bytes: int = 4 << 30):
        self.scene = scene
        self.device = device
        self.indices = scene.split("train")
        self.seed = seed
        self.epoch = 0  # each epoch's order comes from (seed, epoch), so a resumed run draws the same views
        self.order: list[int] = []
        self.images = ImageCache(_DeviceFrames(scene, device), budget_bytes)
        self.masks = ImageCache(_DeviceFrames(scene, device, masks=True), budget_bytes // 4) if scene.masks is not None else None
        self.background = background
        self.cameras = scene.cameras.to(device)
        self.bg_rng = torch.Generator().manual_seed(seed + 1)

    def state(self) -> dict:
        return {"order": torch.tensor(self.order, dtype=torch.int64), "epoch": self.epoch, "bg_rng": self.bg_rng.get_state()}

    def load_state(self, state: dict) -> None:
        self.order = [int(i) for i in state["order"].tolist()]
        self.epoch = int(state["epoch"])
        self.bg_rng.set_state(state["bg_rng"])

    def next(self) -> Batch:
        if not self.order:
            self.order = [int(i) for i in np.random.default_rng([self.seed, self.epoch]).permutation(self.indices)]
            self.epoch += 1
        index = self.order.pop()
        img = self.images.get(index)
        mask = self.masks.get(index) if self.masks is not None else None
        alpha = None
        scene_bg = torch.tensor(self.scene.background, dtype=torch.float32, device=self.device)
        if img.shape[-1] == 4:
            alpha = img[..., 3:4]
            mode = "random" if self.background == "auto" else self.background
            if mode == "random":
                bg = torch.rand(3, generator=self.bg_rng).to(self.device)
            elif mode == "white":
                bg = torch.ones(3, device=self.device)
            elif mode == "black":
                bg = torch.zeros(3, device=self.device)
            else:
                bg = scene_bg
        else:
            bg = scene_bg
        cam = self.cameras[index]
        t = None if cam.times is None else float(cam.times[0])
        return Batch(index=index, camera=cam, image=_composite(img, bg), alpha=alpha, mask=mask, background=bg, time=t, views=self)

    def image(self, index: int, background: torch.Tensor) -> torch.Tensor:
        """[H, W, 3] training image ``index`` (from the device cache), RGBA composited over ``background`` [3]
        (:class:`~recon.methods.base.ViewSource`: methods draw their extra views of a step from here)."""
        return _composite(self.images.get(index), background)


def _composite(img: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """[H, W, C] image (C = 1, 3 or 4) -> [H, W, 3]: RGBA over ``background`` [3], grey expanded to RGB."""
    if img.shape[-1] == 4:
        return img[..., :3] * img[..., 3:] + background * (1 - img[..., 3:])
    return img[..., :3] if img.shape[-1] >= 3 else img.expand(*img.shape[:-1], 3)


class Trainer:
    """Runs ``method`` on ``scene`` (already normalised) and writes everything into ``run_dir``."""

    def __init__(self, config: TrainerConfig, method: Method, scene: SceneData, run_dir: Path, console: Console | None = None, viewer=None):
        self.config = config
        self.method = method
        self.scene = scene
        self.run_dir = Path(run_dir)
        self.console = console or Console(stderr=True)
        if not config.image_cache_gb >= 0:  # (also NaN)
            raise ReconError(f"--trainer.image-cache-gb must be >= 0 (got {config.image_cache_gb})")
        self.loader = _Loader(scene, method.device_, config.seed, config.background, int(config.image_cache_gb * (1 << 30)))
        self.step = 0
        self.elapsed = 0.0  # training seconds over all sessions of this run
        self.history: list[dict] = []
        self.viewer = viewer
        self._stop_reason: str | None = None
        self.view_metrics: dict[str, float] = {}  # of the progress view, for the live viewer
        self._lpips, self._lpips_tried = None, False

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "elapsed": self.elapsed,
            "method": self.method.state_dict(),
            "method_extra": self.method.extra_state(),
            "optimizers": {k: o.state_dict() for k, o in self.method.optimizers().items()},
            "loader": self.loader.state(),
            "rng": ckpt.rng_state(),
            "history": {k: torch.tensor([h[k] for h in self.history], dtype=torch.float64) for k in (self.history[0] if self.history else {})},
        }

    def load_state_dict(self, state: dict, source: Path | None = None) -> None:
        """Restore the whole training state (``source``: the checkpoint file, named in errors)."""
        ckpt.load_method_state(self.method, state, source)
        for k, o in self.method.optimizers().items():
            o.load_state_dict(state["optimizers"][k])
        self.loader.load_state(state["loader"])
        ckpt.set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed", 0.0))
        hist = state.get("history", {})
        n = len(next(iter(hist.values()))) if hist else 0
        self.history = [{k: float(v[i]) for k, v in hist.items()} for i in range(n)]

    def save_checkpoint(self) -> Path:
        path = ckpt.checkpoint_path(self.run_dir, self.step)
        ckpt.atomic_save(self.state_dict(), path)
        ckpt.prune_checkpoints(self.run_dir, self.config.keep_checkpoints)
        return path

    def resume(self) -> bool:
        """Load the run's latest checkpoint if there is one; returns whether it did."""
        path = ckpt.latest_checkpoint(self.run_dir)
        if path is None:
            return False
        self.load_state_dict(ckpt.load_checkpoint(path, map_location=self.method.device_), path)
        self.console.print(f"[bold]recon[/]: resumed from {path} (step {self.step})")
        return True

    # ---------------------------------------------------------------- loop
    def train(self) -> dict:
        """Train from ``self.step`` until ``max_steps``, the time budget or Ctrl-C; then write the final checkpoint
        and training curves and (unless interrupted) evaluate the test split into metrics.json.

        Returns:
            ``step``, ``train_minutes``, ``stopped`` (why the loop ended), plus the test metrics when evaluated.
        """
        cfg = self.config
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        if self.step == 0:  # fresh run: seed everything (a resumed run restores the RNG states instead)
            seed_everything(cfg.seed)
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        with _CtrlC() as ctrl_c:
            self._run_steps(writer, ctrl_c)
        return self._finish(writer)

    def _run_steps(self, writer, ctrl_c: "_CtrlC") -> None:
        """The step loop: one optimisation step, then logging, progress, the viewer, stop checks and periodic
        checkpoints. Sets ``_stop_reason`` when it ends before ``max_steps``."""
        cfg = self.config
        session_start = last_ckpt_time = time.perf_counter()
        elapsed_at_start = self.elapsed
        stats = _RunningStats()
        with _ProgressDisplay(self.console, f"train {self.method.name}", cfg.max_steps, self.step) as display:
            while self.step < cfg.max_steps:
                if self.viewer is not None:
                    self.viewer.before_step(self.step)
                batch, out = self._optimization_step()
                self.step += 1
                now = time.perf_counter()
                self.elapsed = elapsed_at_start + (now - session_start)
                stats.add(out, batch)
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    self._log_scalars(writer, out, stats)
                if cfg.image_every and self.step % cfg.image_every == 0:
                    self._write_progress_image(writer)
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.max_steps:
                    self._append_eval_curve(self._evaluate_test(quiet=True))
                    session_start += time.perf_counter() - now  # the evaluation is not training time
                display.update(self.step, now, stats, self.method.log_scalars)
                if self.viewer is not None:
                    self.viewer.after_step(self.step, {"loss": stats.loss, "psnr": stats.psnr, **self.view_metrics, **self.method.log_scalars()})
                reason = self._stop_reason_now(ctrl_c)
                if reason is not None:
                    self._stop_reason = reason
                    break
                if self.step % cfg.checkpoint_every == 0 or now - last_ckpt_time > cfg.checkpoint_minutes * 60:
                    self.save_checkpoint()
                    last_ckpt_time = time.perf_counter()

    def _optimization_step(self) -> tuple[Batch, dict]:
        """One step on one batch: loss, backward, every optimizer, and the method's hooks around them (under the
        viewer's lock, so a render never sees half-updated parameters)."""
        with self._lock():
            batch = self.loader.next()
            out = self.method.train_step(batch, self.step)
            loss = out["loss"]
            if not torch.isfinite(loss):
                raise ReconError(f"loss became {float(loss)} at step {self.step}; last checkpoint kept in {self.run_dir / 'checkpoints'}")
            self.method.before_backward(self.step, out)
            loss.backward()
            self.method.after_backward(self.step, out)
            for opt in self.method.optimizers().values():
                opt.step()
                opt.zero_grad(set_to_none=True)
            self.method.after_optimizer_step(self.step, out)
        return batch, out

    def _log_scalars(self, writer, out: dict, stats: "_RunningStats") -> None:
        """TensorBoard scalars of this step and a point of the training curves (smoothed loss and PSNR)."""
        scalars = {"loss": stats.last_loss, **{k: float(v) for k, v in out.items() if k != "loss" and torch.is_tensor(v) and v.numel() == 1}}
        scalars.update(self.method.log_scalars())
        for k, v in scalars.items():
            writer.add_scalar(f"train/{k}", v, self.step)
        rec = {"step": float(self.step), "time": self.elapsed, "loss": stats.loss, "psnr": stats.psnr if stats.psnr is not None else float("nan")}
        rec.update({k: float(v) for k, v in self.method.log_scalars().items()})
        self.history.append(rec)

    def _stop_reason_now(self, ctrl_c: "_CtrlC") -> str | None:
        """Why training must stop after this step (Ctrl-C, time budget), or None to go on."""
        if ctrl_c.pressed:
            return "interrupted"
        if self.config.max_minutes is not None and self.elapsed >= self.config.max_minutes * 60.0:
            return f"time budget of {self.config.max_minutes:g} min reached"
        return None

    def _finish(self, writer) -> dict:
        """Final checkpoint, curves, and the test-split evaluation (skipped after Ctrl-C); returns the result."""
        path = self.save_checkpoint()
        self.console.print(f"[bold]recon[/]: step {self.step}, {self.elapsed / 60:.1f} min; checkpoint {path}")
        writer.flush()
        self._write_curves()
        result: dict = {"step": self.step, "train_minutes": self.elapsed / 60.0, "stopped": self._stop_reason or "max_steps"}
        if self._stop_reason == "interrupted":
            self.console.print(f"[yellow]interrupted[/]: resume with  recon train --resume {self.run_dir}")
            writer.close()
            return result
        if self.config.eval_at_end and "test" in self.scene.splits:
            from recon.eval.evaluate import write_metrics

            metrics = self._evaluate_test()
            if self.config.eval_every:
                self._append_eval_curve(metrics)
            metrics.update(result)
            metrics.update({k: v for k, v in self.method.log_scalars().items()})
            write_metrics(metrics, self.run_dir / "metrics.json")
            for k in ("psnr", "ssim", "lpips"):
                if k in metrics:
                    writer.add_scalar(f"test/{k}", metrics[k], self.step)
            summary = f"PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f}"
            summary += f", LPIPS ({metrics['lpips_net']}) {metrics['lpips']:.4f}" if "lpips" in metrics else f"; {metrics['lpips_note']}"
            if metrics.get("psnr_dynamic") is not None:
                summary += f"; moving part ({100 * metrics['dynamic_share']:.1f} % of pixels) PSNR {metrics['psnr_dynamic']:.2f} dB"
            self.console.print(f"recon: test ({metrics['num_images']} views): {summary}", highlight=False, soft_wrap=True, markup=False)
            result = metrics
        writer.close()
        return result

    # ---------------------------------------------------------------- helpers
    def _evaluate_test(self, quiet: bool = False) -> dict:
        """Metrics of the test split (images written at the end of training only)."""
        from recon.eval.evaluate import evaluate

        # (A quiet evaluation runs inside the training progress display: its own silent console, one live display each.)
        console = Console(stderr=True, quiet=True) if quiet else self.console
        return evaluate(self.method, self.scene, "test", out_dir=None if quiet else self.run_dir / "renders" / "test", console=console,
                        with_lpips=self.config.lpips != "none", lpips_net=self.config.lpips)  # fmt: skip

    def _append_eval_curve(self, metrics: dict) -> None:
        """One point of eval_curve.json: step, training seconds and the split's summary metrics (no per-image or
        per-time rows)."""
        from recon.eval.evaluate import write_metrics

        path = self.run_dir / "eval_curve.json"
        try:
            curve = json.loads(path.read_text()) if path.is_file() else []
        except ValueError:
            curve = []
        curve = [row for row in curve if row.get("step", 0) < self.step]  # a resumed run rewrites what followed
        row = {"step": self.step, "train_seconds": self.elapsed}
        row.update({k: v for k, v in metrics.items() if k != "per_image" and not k.startswith("per_time")})
        write_metrics(curve + [row], path)

    def _lock(self):
        if self.viewer is not None:
            return self.viewer.lock
        import contextlib

        return contextlib.nullcontext()

    def _write_progress_image(self, writer) -> None:
        split = "test" if "test" in self.scene.splits else "train"
        index = int(self.scene.split(split)[0])
        cam = self.loader.cameras[index]
        t = None if cam.times is None else float(cam.times[0])
        with torch.no_grad():
            out = self.method.render(cam, time=t, outputs=("rgb",))
            pred = out["rgb"].clamp(0, 1)
            gt = torch.from_numpy(self.scene.image_rgb(index)).to(pred)
            view = {"psnr": float(psnr(pred, gt)), "ssim": float(ssim(pred, gt))}
            lp = self._lpips_model()
            if lp is not None:
                view["lpips"] = float(lp(pred, gt))
        for k, v in view.items():
            writer.add_scalar(f"progress/{k}", v, self.step)
        self.view_metrics = {f"view {k}": v for k, v in view.items()}
        text = f"PSNR {view['psnr']:.2f} dB, SSIM {view['ssim']:.4f}" + (f", LPIPS ({self.config.lpips}) {view['lpips']:.4f}" if "lpips" in view else "")
        self.console.print(f"step {self.step}: {split} view {index}: {text}", highlight=False)
        panel = torch.cat([pred, gt], 1)
        writer.add_image("progress/rgb", panel.permute(2, 0, 1).cpu(), self.step)
        from recon.io.images import save_image

        save_image(panel, self.run_dir / "renders" / "progress" / f"step-{self.step:06d}.png")

    def _lpips_model(self):
        """The LPIPS model of the progress evaluations, loaded on first use; None (said once) when unavailable."""
        if not self._lpips_tried and self.config.lpips != "none":
            self._lpips_tried = True
            from recon.eval.lpips import LPIPSUnavailable, load_lpips

            try:
                self._lpips = load_lpips(self.config.lpips, self.method.device_)
            except LPIPSUnavailable as exc:
                self.console.print(str(exc), highlight=False, soft_wrap=True, markup=False)
        return self._lpips

    def _write_curves(self) -> None:
        if not self.history:
            return
        from recon.io.images import plot_curves

        plot_curves(self.history, self.run_dir / "training_curves.png")
        (self.run_dir / "history.json").write_text(json.dumps(self.history))


class _CtrlC:
    """Context: the first Ctrl-C only sets ``pressed`` (the loop stops after its step and checkpoints); a second
    one raises KeyboardInterrupt at once. Signal handlers can only be set from the main thread; elsewhere (the
    viewer's or a test's thread) Ctrl-C keeps its default meaning."""

    def __init__(self):
        self.pressed = False
        self._old_handler = None

    def _on_sigint(self, signum, frame):
        if self.pressed:  # second Ctrl-C: give up immediately
            raise KeyboardInterrupt
        self.pressed = True

    def __enter__(self) -> "_CtrlC":
        self._old_handler = signal.signal(signal.SIGINT, self._on_sigint) if _in_main_thread() else None
        return self

    def __exit__(self, *exc) -> None:
        if self._old_handler is not None:
            signal.signal(signal.SIGINT, self._old_handler)


class _RunningStats:
    """The last step's loss and exponential moving averages (0.9) of loss and training-view PSNR."""

    def __init__(self):
        self.last_loss = float("nan")
        self.loss: float | None = None
        self.psnr: float | None = None

    def add(self, out: dict, batch: Batch) -> None:
        self.last_loss = float(out["loss"].detach())
        self.loss = self.last_loss if self.loss is None else 0.9 * self.loss + 0.1 * self.last_loss
        if "rgb" in out:
            p = float(psnr(out["rgb"].detach(), batch.image))
            self.psnr = p if self.psnr is None else 0.9 * self.psnr + 0.1 * p


class _ProgressDisplay:
    """The progress bar (steps, it/s, ETA, smoothed loss/PSNR and the method's scalars), refreshed at most once a
    second; without a terminal (logs, CI) a plain line every 30 s instead."""

    def __init__(self, console: Console, description: str, total: int, completed: int):
        self.console, self.description, self.total, self.completed = console, description, total, completed
        columns = [
            TextColumn("[bold blue]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} it/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
        ]
        self.progress = Progress(*columns, console=console, transient=False, refresh_per_second=4)
        self.t_rate, self.s_rate = time.perf_counter(), completed
        self.last_line = time.perf_counter()

    def __enter__(self) -> "_ProgressDisplay":
        self.progress.__enter__()
        self.task = self.progress.add_task(self.description, total=self.total, completed=self.completed, rate="-", info="")
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def update(self, step: int, now: float, stats: _RunningStats, method_scalars) -> None:
        if now - self.t_rate > 1.0:
            rate = (step - self.s_rate) / (now - self.t_rate)
            self.t_rate, self.s_rate = now, step
            extra = " ".join(f"{k}={_fmt(v)}" for k, v in method_scalars().items())
            info = f"loss={stats.loss:.4f} psnr={stats.psnr or 0:.2f} {extra}"
            self.progress.update(self.task, rate=f"{rate:.2f}", info=info)
            if not self.console.is_terminal and now - self.last_line > 30:
                # Logs and CI have no live bar: a plain line every 30 s instead.
                left = (self.total - step) / max(rate, 1e-9)
                self.console.print(f"step {step}/{self.total} {rate:.2f} it/s ETA {left / 60:.1f} min {info}", highlight=False)
                self.last_line = now
        self.progress.update(self.task, completed=step)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _fmt(v: float) -> str:
    return f"{int(v)}" if float(v).is_integer() else f"{v:.3g}"


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
