"""The training loop, generic over methods.

The trainer owns: the data loader (random views, images cached on the device), the step loop with its progress
bar, TensorBoard logging, periodic and final checkpoints (atomic), resume, Ctrl-C handling, the time budget, and
the evaluation at the end. Methods own their parameters, optimizers, losses and schedules (see
:class:`recon.methods.base.Method`).
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Optional

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

if TYPE_CHECKING:
    from recon.engine.distributed import Ranks


@dataclass
class TrainerConfig:
    # The first three are set from `recon train --max-steps/--max-minutes/--seed` (hidden here to avoid two flags).
    max_steps: tyro.conf.Suppress[int] = 7000
    """Number of optimisation steps."""
    max_minutes: tyro.conf.Suppress[Optional[float]] = None
    """Stop (with a checkpoint and the final evaluation) after this many minutes of training."""
    seed: tyro.conf.Suppress[int] = 0
    """Seed for every random number generator."""
    batch_size: int = 1
    """Training views per step and process (methods that train data-parallel: gs, swift4d). Their losses are
    averaged, and with ``--gpus N`` (or torchrun) each of the N processes renders its own share: the step's batch
    is N times this, and N processes with batch b take the same steps as one process with batch N x b. Learning
    rates are not rescaled with the batch."""
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
    """Random training views; their images stay on the device in an LRU cache of ``budget_bytes``.

    Each step draws the whole step's batch (``batch_size`` x ``world_size`` views, their random backgrounds
    included) on every rank, in the same order, and keeps the rank's own share: the views, and every random
    number, do not depend on how many processes share the step."""

    def __init__(self, scene: SceneData, device: torch.device, seed: int, background: str, budget_bytes: int = 4 << 30,
                 batch_size: int = 1, rank: int = 0, world_size: int = 1):  # fmt: skip
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
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.scene_bg = torch.tensor(self.scene.background, dtype=torch.float32, device=self.device)

    @property
    def step_views(self) -> int:
        """Views in a step, over all ranks."""
        return self.batch_size * self.world_size

    def state(self) -> dict:
        return {"order": torch.tensor(self.order, dtype=torch.int64), "epoch": self.epoch, "bg_rng": self.bg_rng.get_state()}

    def load_state(self, state: dict) -> None:
        self.order = [int(i) for i in state["order"].tolist()]
        self.epoch = int(state["epoch"])
        self.bg_rng.set_state(state["bg_rng"])

    def next(self) -> list[Batch]:
        """This rank's views of the next step (``batch_size`` of them)."""
        drawn = []
        for slot in range(self.step_views):
            if not self.order:
                self.order = [int(i) for i in np.random.default_rng([self.seed, self.epoch]).permutation(self.indices)]
                self.epoch += 1
            drawn.append((slot, self.order.pop(), self._random_background()))
        mine = drawn[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        return [self._batch(index, slot, bg) for slot, index, bg in mine]

    def _random_background(self) -> torch.Tensor | None:
        # Drawn for every view, RGBA or not (and whichever rank renders it), so the stream does not depend on images
        # this rank never loads.
        return torch.rand(3, generator=self.bg_rng) if self.background in ("auto", "random") else None

    def _batch(self, index: int, slot: int, random_bg: torch.Tensor | None) -> Batch:
        img = self.images.get(index)
        mask = self.masks.get(index) if self.masks is not None else None
        alpha = None
        if img.shape[-1] == 4:
            alpha = img[..., 3:4]
            if random_bg is not None:
                bg = random_bg.to(self.device)
            elif self.background == "white":
                bg = torch.ones(3, device=self.device)
            elif self.background == "black":
                bg = torch.zeros(3, device=self.device)
            else:
                bg = self.scene_bg
        else:
            bg = self.scene_bg
        cam = self.cameras[index]
        t = None if cam.times is None else float(cam.times[0])
        return Batch(index=index, camera=cam, image=_composite(img, bg), alpha=alpha, mask=mask, background=bg, time=t, views=self, slot=slot)

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

    def __init__(self, config: TrainerConfig, method: Method, scene: SceneData, run_dir: Path, console: Console | None = None, viewer=None,
                 ranks: "Ranks | None" = None):  # fmt: skip
        self.config = config
        self.method = method
        self.scene = scene
        self.run_dir = Path(run_dir)
        self.ranks = ranks
        #: only rank 0 writes (checkpoints, logs, TensorBoard, renders, metrics) and talks to the user.
        self.is_writer = ranks is None or ranks.is_writer
        self.console = (console or Console(stderr=True)) if self.is_writer else Console(stderr=True, quiet=True)
        if not config.image_cache_gb >= 0:  # (also NaN)
            raise ReconError(f"--trainer.image-cache-gb must be >= 0 (got {config.image_cache_gb})")
        check_batch(method, config.batch_size, 1 if ranks is None else ranks.world_size)
        self.loader = _Loader(scene, method.device_, config.seed, config.background, int(config.image_cache_gb * (1 << 30)),
                              config.batch_size, 0 if ranks is None else ranks.rank, 1 if ranks is None else ranks.world_size)  # fmt: skip
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
        """Write the training state (rank 0 only: every rank holds the same); returns its path."""
        path = ckpt.checkpoint_path(self.run_dir, self.step)
        if self.is_writer:
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
        elif self.ranks is not None and self.method.device_.type == "cpu":
            # CPU ranks of one machine share its cores (torch's default would give each of them all).
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.ranks.local_world_size))
        if self.step == 0:  # fresh run: seed everything (a resumed run restores the RNG states instead)
            seed_everything(cfg.seed)
        if self.is_writer:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        else:
            writer = _NoWriter()
        # The processes of a --gpus run get Ctrl-C twice, from the terminal and from the launcher passing it on.
        with _CtrlC(grace_s=2.0 if self.ranks is not None else 0.0) as ctrl_c:
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
                batch, out, loss = self._optimization_step()
                self.step += 1
                now = time.perf_counter()
                self.elapsed = elapsed_at_start + (now - session_start)
                reason = self._stop_reason_now(ctrl_c)
                if self.ranks is not None:  # one small all-reduce: the step's mean loss, and whether any rank stops
                    loss, reason = self._agree(loss, reason)
                stats.add(out, batch, loss)
                if self.is_writer:
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
                if reason is not None:
                    self._stop_reason = reason
                    break
                if self.ranks is not None and self.step % cfg.checkpoint_every == 0:
                    self._check_ranks_agree()
                if self.step % cfg.checkpoint_every == 0 or now - last_ckpt_time > cfg.checkpoint_minutes * 60:
                    self.save_checkpoint()
                    last_ckpt_time = time.perf_counter()

    def _optimization_step(self) -> tuple[Batch, dict, float]:
        """One step: for each of this rank's views, the loss and its backward pass (gradients accumulate, each
        loss weighted 1 / views in the step); the gradients summed over the ranks; every optimizer; and the
        method's hooks around them. Runs under the viewer's lock, so a render never sees half-updated parameters.

        Returns:
            the first view's batch and outputs (for the running PSNR and the logs), and this rank's mean loss.
        """
        with self._lock():
            batches = self.loader.next()
            step_views = self.loader.step_views
            outs, loss_sum = [], 0.0
            for batch in batches:
                with _per_view_random_state(self.config.seed, self.step, batch.slot, step_views > 1, self.method.device_):
                    out = self.method.train_step(batch, self.step)
                loss = out["loss"]
                if not torch.isfinite(loss):
                    raise ReconError(f"loss became {float(loss)} at step {self.step}; last checkpoint kept in {self.run_dir / 'checkpoints'}")
                self.method.before_backward(self.step, out)
                (loss if step_views == 1 else loss / step_views).backward()
                self.method.after_backward(self.step, out)
                outs.append(out)
                loss_sum += float(loss.detach())
            if self.ranks is not None:
                self.ranks.sum_gradients(_optimized_parameters(self.method))
            out = outs[0] if step_views == 1 else self.method.combine_outputs(outs, self.ranks)
            for opt in self.method.optimizers().values():
                opt.step()
                opt.zero_grad(set_to_none=True)
            self.method.after_optimizer_step(self.step, out)
        return batches[0], outs[0], loss_sum / len(batches)

    def _agree(self, loss: float, reason: str | None) -> tuple[float, str | None]:
        """The step's mean loss over the ranks, and why training stops if any rank stops (Ctrl-C, time budget)."""
        flags = torch.tensor([loss, reason == "interrupted", reason is not None and reason != "interrupted"], dtype=torch.float64, device=self.ranks.device)
        self.ranks.all_reduce_sum_(flags)
        world = self.ranks.world_size
        if reason is None and bool(flags[1] > 0):
            reason = "interrupted"
        elif reason is None and bool(flags[2] > 0):
            reason = f"time budget of {self.config.max_minutes:g} min reached"
        return float(flags[0]) / world, reason

    def _check_ranks_agree(self) -> None:
        """Fail loudly if the ranks' parameters drifted apart (a method that decided something from one rank's
        views alone): a data-parallel run that silently trains R different models would be worse."""
        if not self.ranks.parameters_agree(list(self.method.state_dict().values())):
            raise ReconError(f"the {self.ranks.world_size} training processes hold different parameters at step {self.step} "
                             f"(method {self.method.name!r} takes a decision from one process's views); last checkpoint kept in {self.run_dir / 'checkpoints'}")  # fmt: skip

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
        """Final checkpoint, curves, and the test-split evaluation (skipped after Ctrl-C); returns the result.
        Ranks other than 0 return at once (rank 0 evaluates alone)."""
        if not self.is_writer:
            return {"step": self.step, "train_minutes": self.elapsed / 60.0, "stopped": self._stop_reason or "max_steps"}
        path = self.save_checkpoint()
        self.console.print(f"[bold]recon[/]: step {self.step}, {self.elapsed / 60:.1f} min; checkpoint {path}")
        writer.flush()
        self._write_curves()
        result: dict = {"step": self.step, "train_minutes": self.elapsed / 60.0, "stopped": self._stop_reason or "max_steps"}
        if self._stop_reason == "interrupted":
            self.console.print(f"[yellow]interrupted[/]: resume with  recon train --resume {self.run_dir}{self._resume_hint()}")
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
    def _resume_hint(self) -> str:
        if self.ranks is None:
            return ""
        from recon.engine.distributed import LAUNCH_DIR_ENV

        return f" --gpus {self.ranks.world_size}" if os.environ.get(LAUNCH_DIR_ENV) else " (under torchrun as before, or on any number of processes)"

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
            # over the data's background, as the evaluation renders and as image_rgb composites RGBA data
            bg = torch.tensor(self.scene.background, dtype=torch.float32, device=self.method.device_)
            out = self.method.render(cam, time=t, outputs=("rgb",), background=bg)
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

    def __init__(self, grace_s: float = 0.0):
        self.pressed = False
        self._old_handler = None
        self.grace_s = grace_s  # a second Ctrl-C this soon after the first is the same one
        self._first = 0.0

    def _on_sigint(self, signum, frame):
        if self.pressed and time.monotonic() - self._first > self.grace_s:  # second Ctrl-C: give up immediately
            raise KeyboardInterrupt
        if not self.pressed:
            self.pressed, self._first = True, time.monotonic()

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

    def add(self, out: dict, batch: Batch, loss: float) -> None:
        """``loss``: the step's mean loss (over its views and ranks); the PSNR is the first view's."""
        self.last_loss = loss
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


class _NoWriter:
    """TensorBoard's writer on ranks other than 0: they write nothing."""

    def add_scalar(self, *args, **kwargs) -> None:
        pass

    add_image = add_scalar
    flush = close = add_scalar


def check_batch(method: Method, batch_size: int, world_size: int) -> None:
    """A clear error for a batch the method cannot train on (``--trainer.batch-size``, ``--gpus``)."""
    if batch_size < 1:
        raise ReconError(f"--trainer.batch-size must be at least 1 (got {batch_size})")
    if batch_size * world_size > 1 and not method.data_parallel:
        from recon.methods import available_methods, get_method

        able = ", ".join(m for m in available_methods() if get_method(m).data_parallel)
        what = f"{world_size} processes" if world_size > 1 else f"--trainer.batch-size {batch_size}"
        raise ReconError(f"method {method.name!r} trains on one view per step, so it cannot take {what} (data-parallel methods: {able})")


def _optimized_parameters(method: Method) -> list[torch.nn.Parameter]:
    """Every parameter the method's optimizers update, once each, in a fixed order (the same on every rank)."""
    seen, params = set(), []
    for name in sorted(method.optimizers()):
        for group in method.optimizers()[name].param_groups:
            for p in group["params"]:
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
    return params


class _per_view_random_state:
    """Context for one view's forward pass in a step of several views: torch's and numpy's global generators
    seeded from (seed, step, slot) and restored afterwards. Randomness a method draws there then depends on the
    view's place in the step's batch, not on the process that renders it nor on the other views, so that R
    processes with batch b train the same model as one with batch R x b. A step of one view is left alone."""

    def __init__(self, seed: int, step: int, slot: int, active: bool, device: torch.device):
        self.active = active
        self.key = [seed, step, slot]
        self.devices = [device] if device.type == "cuda" else []

    def __enter__(self):
        if self.active:
            self._fork = torch.random.fork_rng(devices=self.devices)
            self._fork.__enter__()
            self._np = np.random.get_state()
            derived = np.random.SeedSequence(self.key).generate_state(2)
            torch.manual_seed(int(derived[0]))
            np.random.seed(int(derived[1]))
        return self

    def __exit__(self, *exc):
        if self.active:
            np.random.set_state(self._np)
            self._fork.__exit__(*exc)


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
