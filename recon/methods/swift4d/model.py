"""Swift4D: 3DGS canonical stage, a learned per-Gaussian dynamic score, then a 4D hash deformation of the dynamic
Gaussians only (gaussian_methods.md §1; our choices where paper and code disagree are in the README-like notes of
each setting in :mod:`.config`).

Stages (:class:`~recon.methods.swift4d.config.Stages`):

1. **canonical** - vanilla 3DGS (the shared :class:`~recon.gaussians.GaussianModel`, as ``gs``) on frame 0 of every
   training camera, 2 views per step. Monocular data (one camera per time, D-NeRF) has no "frame 0 of every
   camera": a handful of frames near t = 0 from a moving camera cannot pin down the geometry, so the canonical stage
   uses *all* training frames and fits the time-averaged static scene; the fine stage then explains the
   differences.
2. **d-score** - only the per-Gaussian scalar ``d`` (init 0) is optimised: it is splatted as a one-channel feature
   with detached geometry and no background, and sigmoid(composite) is fitted with BCE to per-view change masks
   (:mod:`.masks`). One canonical-pool view per step, Adam lr 0.05. Gaussians with d > ζ are dynamic: the
   paper's ζ = 7 for multi-view video, 1 for monocular data, whose masks are a pseudo ground truth
   (``mono_dynamic_threshold``).
3. **fine** - ``d`` is frozen (it gets no gradient; it stays in the ParameterDict so that gsplat's densification
   copies it to children). Dynamic Gaussians inside the field's box pass through the 4D hash field + MLP heads
   (deltas on the raw parameters); static ones are rendered exactly as they are; both are rasterized together.
   The field has its own Adam with exponential decay. Its time axis has one cell per training time for multi-view
   video, but one cell per ``mono_views_per_time_cell`` (4) frames for monocular data, so that every cell is
   constrained from several directions instead of letting the field fit each view on its own. 2 views per step
   (their times evaluated in one field call).
   The reference's five heads for multi-view video; monocular data gets only the geometric ones
   (``--model.appearance-deltas``) and a temporal-smoothness term on them (``mono_time_smoothness``), and its
   stage lengths and densification window are laid out over the first 2000 steps (``mono_schedule_steps``):
   longer runs only lengthen the fine stage.

Throughout: L1 + 0.2 D-SSIM (plain L1 for monocular data, ``mono_ssim_lambda``), SH degree ramp, 3DGS
densification without opacity reset, and temporal-importance pruning (max α·T over training views and times < 0.02,
:func:`recon.render.gaussian_weights.gaussian_max_weights`).
In the fine stage, a depth-distortion term (``distortion_reg``) on the pixels outside each view's change mask
keeps the still part of the scene one surface deep (not in the paper; see the setting for why and what it gives).

``--model.all-dynamic`` is the baseline that deforms every Gaussian (no d-score stage).
"""

from __future__ import annotations

import bisect
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from recon.cameras import Cameras
from recon.data.scene import SceneData
from recon.errors import ReconError
from recon.gaussians import GaussianModel, focus_box, initial_points, scene_scale_of, set_lr, visible_box
from recon.losses import l1_dssim
from recon.methods import register
from recon.methods.base import Batch, Capabilities, Collective, Method, ViewSource
from recon.methods.swift4d import masks as mk
from recon.methods.swift4d.config import Stages, Swift4DConfig
from recon.methods.swift4d.field import DeformationField
from recon.render.gaussian_weights import gaussian_max_weights
from recon.render.gsplat_meta import merge_views
from recon.schedules import exponential_decay

#: The reference's d-score stage can move d by about lr x steps = 0.05 x 3000 = 150 (>> ζ = 7).
_DSCORE_REACH = 150.0


class _Views:
    """Cameras and times of the training views the method draws itself (the trainer hands over one per step;
    Swift4D wants two, and stage-dependent pools). Their images come from the trainer (``Batch.views``)."""

    def __init__(self, scene: SceneData, device: torch.device):
        self.scene = scene
        self.cameras = scene.cameras.to(device)

    def time(self, index: int) -> float:
        return float(self.scene.cameras.times[index])


@register
class Swift4D(Method):
    name = "swift4d"
    description = "Swift4D: static/dynamic split, 4D hash deformation of the dynamic Gaussians only"
    config_cls = Swift4DConfig
    render_outputs = ("rgb", "alpha", "depth", "dynamic_mask")
    export_kinds = ("ply", "splat", "frames")
    is_dynamic = True
    capabilities = Capabilities(gaussians=True)
    data_parallel = True
    default_demo = "dynamic"

    def __init__(self, config: Swift4DConfig, scene: SceneData | None, max_steps: int, device):
        super().__init__(config, scene, max_steps, device)
        self.config: Swift4DConfig = config
        # The shared Gaussian model plus d, the per-Gaussian dynamic score (zero-initialised): as an attribute of
        # the model, gsplat's densification clones/splits/prunes it with its Gaussian; its own Adam only ever steps
        # in the d-score stage, because d gets no gradient anywhere else.
        self.splats = GaussianModel(config)
        self.splats.add_attribute("d", lr=config.dscore_lr)
        self.register_buffer("scene_scale", torch.tensor(1.0))
        if scene is not None and not scene.is_dynamic:
            raise ReconError("swift4d needs dynamic data (frames with times: D-NeRF, N3DV video, demo:dynamic)", scene.root)
        self.scene = scene
        self._views = _Views(scene, self.device_) if scene is not None else None
        train = scene.split("train") if scene is not None else np.zeros(0, np.int64)
        times = scene.cameras.times[torch.from_numpy(train)] if scene is not None else torch.tensor([0.0, 1.0])
        # Fields filled at the start of the fine stage; buffers so that checkpoints carry them.
        self.register_buffer("time_range", torch.stack([times.min(), times.max()]).float())
        self.register_buffer("box_min", torch.zeros(3))
        self.register_buffer("box_max", torch.ones(3))
        self.register_buffer("field_log2", torch.tensor(config.log2_hashmap_size))
        self.register_buffer("fine_ready", torch.tensor(False))
        self._n_times = int(torch.unique(times).numel()) if scene is not None else None
        self._pools(scene)
        mono_layout = not self.multiview and config.mono_schedule_steps > 0
        #: Steps the stage fractions and the densification window are laid out over (see ``mono_schedule_steps``).
        self.layout_steps = min(config.mono_schedule_steps, max_steps) if mono_layout else max_steps
        self.stages = Stages.of(config, max_steps, self.layout_steps)
        self.appearance_deltas = _on_off_auto("appearance-deltas", config.appearance_deltas, auto=self.multiview)
        self.use_distortion = _on_off_auto("distortion", config.distortion, auto=not self.multiview)
        if config.opaque_background not in ("random", "data"):
            raise ReconError(f"--model.opaque-background must be random or data (got {config.opaque_background!r})")
        self.field = self._make_field(config.log2_hashmap_size)
        self._field_opt: torch.optim.Optimizer | None = None
        self._masks: dict[int, Tensor] | None = None  # view index -> bool [H, W] (d-score and fine stage; checkpointed)
        self._mask_share: float | None = None
        self._infos: list[dict] = []

    # ---------------------------------------------------------------- data pools
    def _pools(self, scene: SceneData | None) -> None:
        """Which views each stage draws from. Multi-view video: canonical/d-score use frame 0 of every training
        camera. Monocular (no camera ids, or one frame per camera): every training frame."""
        if scene is None:
            self.multiview, self.train_pool, self.canonical_pool = False, [], []
            return
        train = [int(i) for i in scene.split("train")]
        self.train_pool = train
        self.multiview = False
        self.frames_per_camera: dict[int, list[int]] = {}
        if scene.camera_ids is not None:
            key = scene.frame_ids if scene.frame_ids is not None else scene.cameras.times.numpy()
            for i in train:
                self.frames_per_camera.setdefault(int(scene.camera_ids[i]), []).append(i)
            for cam, idx in self.frames_per_camera.items():
                idx.sort(key=lambda i: float(key[i]))
            self.multiview = max(len(v) for v in self.frames_per_camera.values()) > 1
        if self.multiview:
            self.canonical_pool = [idx[0] for idx in self.frames_per_camera.values()]
            self._camera_of = {i: int(scene.camera_ids[i]) for i in train}
            # Training views by time, for the growing time window of the fine stage (``_pool_until``).
            time_of = scene.cameras.times.tolist()
            self._by_time = sorted(train, key=lambda i: time_of[i])
            self._times_sorted = [float(time_of[i]) for i in self._by_time]
        else:
            self.canonical_pool = list(train)

    def time_cells(self) -> int | None:
        """Time resolution cap of the field (see ``Swift4DConfig.time_resolution``)."""
        cfg = self.config
        if cfg.time_resolution > 0:
            return cfg.time_resolution
        if self._n_times is None:
            return None
        if self.multiview:
            return self._n_times
        return max(2, round(self._n_times / max(cfg.mono_views_per_time_cell, 1)))

    def _make_field(self, log2: int) -> DeformationField:
        cap = self.time_cells()
        base = self.config.time_base_resolution or (1 if self.multiview else None)
        return DeformationField((self.config.sh_degree + 1) ** 2, log2, cap, self.appearance_deltas, base).to(self.device_)

    # ---------------------------------------------------------------- setup
    def setup(self, scene: SceneData) -> None:
        """gs's initialisation, except that random points of data without a scene box (D-NeRF) fill the extent the
        training cameras see around the point they look at (:func:`~recon.gaussians.visible_box`)."""
        self.scene_scale.fill_(scene_scale_of(scene.cameras[torch.from_numpy(scene.split("train"))]))
        cfg = self.config
        box = focus_box(scene, cfg.init_extent) if scene.aabb is not None else visible_box(scene)
        pts, cols = initial_points(scene, cfg.init, cfg.init_num_points, box)
        self.splats.initialize(pts.to(self.device_), cols.to(self.device_))
        self._build_optimizers()

    def _build_optimizers(self) -> None:
        self.splats.build_optimizers(float(self.scene_scale), self.layout_steps)
        self._field_opt = torch.optim.Adam(self.field.parameters(), lr=self.config.field_lr, eps=1e-15)

    def optimizers(self):
        return {**self.splats.optimizers, "field": self._field_opt}

    # ---------------------------------------------------------------- the split and the deformation
    def dynamic(self) -> Tensor:
        """bool [N]: the Gaussians the field deforms (d > ζ; all in all-dynamic mode)."""
        if self.config.all_dynamic:
            return torch.ones(self.splats["means"].shape[0], dtype=torch.bool, device=self.device_)
        return self.splats["d"].detach() > self.zeta

    @property
    def zeta(self) -> float:
        """ζ, the dynamic threshold on d (``dynamic_threshold`` for multi-view video, ``mono_dynamic_threshold``
        for monocular data)."""
        return self.config.dynamic_threshold if self.multiview else self.config.mono_dynamic_threshold

    @property
    def ssim_lambda(self) -> float:
        """D-SSIM weight of the photometric loss (``ssim_lambda`` for multi-view video, ``mono_ssim_lambda`` for
        monocular data)."""
        return self.config.ssim_lambda if self.multiview else self.config.mono_ssim_lambda

    def _deformed_ids(self) -> Tensor:
        """long [M]: dynamic Gaussians inside the field's box (the others pass through unchanged)."""
        m = self.splats["means"].detach()
        inside = ((m >= self.box_min) & (m <= self.box_max)).all(-1)
        return torch.nonzero(self.dynamic() & inside).squeeze(-1)

    def deformed(self, times: Sequence[float | None]) -> list[dict[str, Tensor]]:
        """Pre-activation Gaussians at each time (differentiable; one field call for all times).

        Returns a list (one per time) of {means [N,3], scales [N,3], quats [N,4], opacities [N], sh0 [N,1,3],
        shN [N,K-1,3]}. Rows of non-deformed Gaussians are the canonical parameters themselves (bit-identical).
        Before the fine stage (or with time None) every entry is the canonical set.
        """
        s = self.splats
        canonical = s.gaussian_params()
        ids = self._deformed_ids() if bool(self.fine_ready) else None
        if ids is None or ids.numel() == 0 or all(t is None for t in times):
            return [canonical for _ in times]
        M = ids.numel()
        lo, hi = float(self.time_range[0]), float(self.time_range[1])
        # Times outside the training range (D-NeRF lego: val covers 0..1, train 0.16..0.95) hold the nearest
        # trained state rather than querying never-trained grid cells.
        ts = [min(max(float(t if t is not None else lo), lo), hi) for t in times]
        delta = self._field_at(ids, ts)
        K = s["sh0"].shape[1] + s["shN"].shape[1]
        out = []
        for k, t in enumerate(times):
            if t is None:
                out.append(canonical)
                continue
            dl = {name: v[k * M : (k + 1) * M] for name, v in delta.items()}
            p = dict(canonical)
            p["means"] = s["means"].index_copy(0, ids, s["means"][ids] + dl["xyz"])
            p["scales"] = s["scales"].index_copy(0, ids, s["scales"][ids] + dl["scale"])
            p["quats"] = s["quats"].index_copy(0, ids, s["quats"][ids] + dl["rotation"])
            if "opacity" in dl:
                dsh = dl["sh"].reshape(M, K, 3)
                p["opacities"] = s["opacities"].index_copy(0, ids, s["opacities"][ids] + dl["opacity"][:, 0])
                p["sh0"] = s["sh0"].index_copy(0, ids, s["sh0"][ids] + dsh[:, :1])
                p["shN"] = s["shN"].index_copy(0, ids, s["shN"][ids] + dsh[:, 1:])
            out.append(p)
        return out

    def _field_at(self, ids: Tensor, ts: Sequence[float]) -> dict[str, Tensor]:
        """Field deltas of the Gaussians ``ids`` [M] at each time of ``ts`` (one call): {name: [len(ts) * M, C]},
        time-major."""
        M = ids.numel()
        # The grid is keyed on where the canonical Gaussian is; it is not a path for position gradients.
        x = ((self.splats["means"].detach()[ids] - self.box_min) / (self.box_max - self.box_min).clamp_min(1e-9)).clamp(0, 1)
        inp = torch.cat([torch.cat([x, x.new_full((M, 1), t)], 1) for t in ts], 0)  # [T*M, 4]
        return self.field(inp)

    def _time_smoothness(self, rng: np.random.Generator, window: float | None = None) -> Tensor:
        """Second difference of the geometric deltas over one time cell h, at a random time t of the training range:
        mean over the deformed Gaussians of |Δ(t-h) - 2Δ(t) + Δ(t+h)|^2, with Δxyz in units of the field's box,
        the scale as its factor exp(Δlog-scale) (a hidden Gaussian's log-scale wanders between -6 and -14 without
        any visible effect) and Δquaternion. Constant-velocity motion costs nothing; what it ties together are the
        grid's time vertices, so that a time seen by few views (D-NeRF lego: t = 0.16, 0.18 from two high cameras,
        then nothing until 0.28) follows the trajectory of its neighbours instead of fitting those views alone.
        A random ``time_smoothness_share`` of the deformed Gaussians is drawn per step (three field calls on all
        of them would double the step time)."""
        ids = self._deformed_ids()
        share = self.config.time_smoothness_share
        if 0 < share < 1 and ids.numel() > 1:
            k = max(1, int(round(share * ids.numel())))
            ids = ids[torch.from_numpy(np.sort(rng.choice(ids.numel(), k, replace=False))).to(ids.device)]
        lo, hi = float(self.time_range[0]), float(self.time_range[1])
        h = min(1.0 / max(self.time_cells() or 1, 1), (hi - lo) / 2)
        if ids.numel() == 0 or h <= 0:
            return self.splats["means"].new_zeros(())
        top = hi - h if window is None else min(max(window + h, lo + h), hi - h)
        t = float(rng.uniform(lo + h, top))
        d = self._field_at(ids, [t - h, t, t + h])
        M = ids.numel()
        box = (self.box_max - self.box_min).clamp_min(1e-9)
        total = 0.0
        for name in ("xyz", "scale", "rotation"):
            v = d[name] / box if name == "xyz" else d[name].exp() if name == "scale" else d[name]
            second = v[:M] - 2 * v[M : 2 * M] + v[2 * M :]
            total = total + second.square().sum(-1).mean()
        return total

    def _start_fine(self) -> None:
        """Freeze the split: box of the deformed Gaussians' centres, table size, a fresh field and its Adam."""
        cfg = self.config
        m = self.splats["means"].detach()
        dyn = self.dynamic()
        pts = m[dyn] if bool(dyn.any()) else m
        lo, hi = pts.min(0).values, pts.max(0).values
        pad = (hi - lo).clamp_min(1e-6) * cfg.box_padding
        self.box_min.copy_(lo - pad)
        self.box_max.copy_(hi + pad)
        log2 = cfg.log2_hashmap_size
        if cfg.auto_hashmap:
            log2 = int(min(max(math.ceil(math.log2(max(2 * int(dyn.sum()), 1))), 12), cfg.log2_hashmap_size))
        self.field_log2.fill_(log2)
        self.field = self._make_field(log2)
        self._field_opt = torch.optim.Adam(self.field.parameters(), lr=cfg.field_lr, eps=1e-15)
        self.fine_ready.fill_(True)

    # ---------------------------------------------------------------- training
    def _rng(self, step: int, slot: int = 0) -> np.random.Generator:
        # Stateless per-step (and, in a batch, per-view) randomness: a resumed run draws the same extra views, and
        # so does a run whose batch is split over several processes.
        return np.random.default_rng([step, 7] if slot == 0 else [step, 7, slot])

    def train_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        stage = self.stages.at(step)
        if stage == "dscore":
            return self._dscore_step(batch, step)
        if stage == "fine" and not bool(self.fine_ready):
            self._start_fine()
        cfg = self.config
        self.splats.schedule_means_lr(step, self.max_steps)
        if stage == "fine":
            # The field learns at its full rate while the time window grows, then decays.
            start = self.stages.dscore_end + self.ramp_steps()
            k, n = max(step - start, 0), max(self.max_steps - start, 1)
            set_lr(self._field_opt, exponential_decay(k, cfg.field_lr, cfg.field_lr_final, n))
        pool = self.canonical_pool if stage == "canonical" else self.train_pool
        rng = self._rng(step, batch.slot)
        window = self.time_window(step) if stage == "fine" else None
        if window is not None:
            # One view of the step shows the window's newest time; the others replay the times learnt.
            pool, newest = self._pool_until(window)
            first = int(rng.choice(newest))
        else:
            first = batch.index if batch.index in self._pool_set(stage) else int(rng.choice(pool))
        views = [first] + [int(v) for v in rng.choice(pool, max(cfg.views_per_step - 1, 0))]
        times = [None] * len(views) if stage == "canonical" else [self._views.time(v) for v in views]
        params = self.deformed(times)
        sh = self.splats.active_sh_degree(step)
        bg = self._train_background(batch, rng)
        loss, infos, rgb0 = 0.0, [], None
        for v, p in zip(views, params):
            cam = self._views.cameras[v]
            colors, _, info = self.splats.rasterize(cam, bg, sh, render_mode="RGB", params=p)
            rgb = colors[0, ..., :3]
            target = batch.image if v == batch.index else batch.views.image(v, bg)
            loss = loss + l1_dssim(rgb, target, self.ssim_lambda) / len(views)
            if self.distortion_on(step) and not infos:  # one view per step
                loss = loss + cfg.distortion_reg * self._still_distortion(v, cam, p, batch.views)
            infos.append(info)
            rgb0 = rgb if rgb0 is None else rgb0
        loss = loss + self.splats.regularizer()  # MCMC's regularisers (0 with the default strategy)
        out = {}
        weight = cfg.time_smoothness if self.multiview else cfg.mono_time_smoothness
        if stage == "fine" and weight > 0:
            smooth = self._time_smoothness(rng, window)
            loss = loss + weight * smooth
            out["time_smoothness"] = smooth.detach()
        self._infos = infos
        out.update({"loss": loss, "infos": infos})
        if views[0] == batch.index:
            out["rgb"] = rgb0.detach()
        return out

    def _train_background(self, batch: Batch, rng: np.random.Generator) -> Tensor:
        """[3] background of this step's renders (see ``opaque_background``)."""
        if batch.alpha is not None or self.config.opaque_background == "data":
            return batch.background
        return torch.from_numpy(rng.random(3)).to(batch.background)

    def time_window(self, step: int) -> float | None:
        """Latest time the spatio-temporal stage trains on at ``step`` (None: the whole clip; see ``time_ramp``).
        It grows linearly from the first training time to the last over the first ``time_ramp`` of the stage."""
        n = self.ramp_steps()
        k = step - self.stages.dscore_end
        if n == 0 or k >= n:
            return None
        lo, hi = float(self.time_range[0]), float(self.time_range[1])
        return lo + (hi - lo) * (k + 1) / n

    def ramp_steps(self) -> int:
        """Steps of the spatio-temporal stage over which the time window grows (0: none; see ``time_ramp``)."""
        if not self.multiview or self.config.time_ramp <= 0:
            return 0
        return max(int(round(self.config.time_ramp * (self.max_steps - self.stages.dscore_end))), 1)

    def _pool_until(self, window: float) -> tuple[list[int], list[int]]:
        """Training views whose time is at most ``window``, and those of the latest such time (never empty: the
        first time's views at least)."""
        times = self._times_sorted
        n = max(bisect.bisect_right(times, window + 1e-6), bisect.bisect_right(times, times[0] + 1e-6))
        start = bisect.bisect_left(times, times[n - 1] - 1e-6)
        return self._by_time[:n], self._by_time[start:n]

    def distortion_on(self, step: int) -> bool:
        cfg = self.config
        return self.use_distortion and cfg.distortion_reg > 0 and step >= cfg.distortion_from * self.max_steps

    def _still_distortion(self, view: int, camera: Cameras, p: dict[str, Tensor], views: ViewSource) -> Tensor:
        """Depth distortion of all Gaussians ``p`` in ``camera`` on the pixels outside ``view``'s change mask
        (before the fine stage, when there are no masks yet: on every pixel)."""
        if not bool(self.fine_ready):
            return self.splats.depth_distortion(camera, p)
        still = ~self._change_mask(view, views)
        return self.splats.depth_distortion(camera, p, still.float())

    def _pool_set(self, stage: str) -> set:
        key = "_set_" + stage
        if not hasattr(self, key):
            setattr(self, key, set(self.canonical_pool if stage in ("canonical", "dscore") else self.train_pool))
        return getattr(self, key)

    def _change_mask(self, view: int, views: ViewSource) -> Tensor:
        """bool [H, W] change mask of training view ``view`` (multi-view video: that of its camera), computed on
        first use (d-score stage; fine stage of the all-dynamic baseline)."""
        if self._masks is None:
            self._masks = self.change_masks(views)
            self._mask_share = mk.mask_coverage(self._masks.values())
        if self.multiview:
            view = self.frames_per_camera[self._camera_of[view]][0]
        return self._masks[view]

    def _dscore_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        k, n = step - self.stages.canonical_end, max(self.stages.dscore_end - self.stages.canonical_end, 1)
        lr = max(self.config.dscore_lr, _DSCORE_REACH / n)
        set_lr(self.splats.optimizers["d"], exponential_decay(k, lr, 0.1 * lr, 10 * n))
        view = batch.index if batch.index in self._pool_set("dscore") else int(self._rng(step, batch.slot).choice(self.canonical_pool))
        logits = self._splat_d(self._views.cameras[view], self.splats)
        loss = F.binary_cross_entropy_with_logits(logits, self._change_mask(view, batch.views).float())
        return {"loss": loss, "dscore_bce": loss.detach()}

    def _splat_d(self, camera: Cameras, p: dict[str, Tensor]) -> Tensor:
        """[H, W] raw composite sum_i d_i α_i T_i of the Gaussians ``p`` with their geometry detached (only d
        learns from it) and no background term (empty pixels give logit 0)."""
        geometry = {k: p[k].detach() for k in ("means", "quats", "scales", "opacities")}
        out, _, _ = self.splats.rasterize(camera, None, None, render_mode="RGB", params=geometry, colors=self.splats["d"][:, None])
        return out[0, ..., 0]

    @torch.no_grad()
    def change_masks(self, views: ViewSource) -> dict[int, Tensor]:
        """Pseudo ground truth of the d-score stage: view index -> bool [H, W] on the device (see :mod:`.masks`);
        ``views``: the trainer's training images (monocular data compares them with canonical renders)."""
        cfg = self.config
        width = int(self.scene.cameras.widths[self.canonical_pool[0]])
        ksize = mk.blur_kernel_size(width, cfg.mask_blur)
        if self.multiview:
            per_cam = mk.multiview_masks(self.scene, self.frames_per_camera, cfg.mask_threshold, ksize)
            return {i: per_cam[self._camera_of[i]].to(self.device_) for i in self.canonical_pool}
        bg = torch.tensor(self.scene.background, dtype=torch.float32, device=self.device_)
        out = {}
        for i in self.canonical_pool:
            colors, _, _ = self.splats.rasterize(self._views.cameras[i], bg, self.config.sh_degree, render_mode="RGB")
            out[i] = mk.residual_masks(colors[:1, ..., :3], views.image(i, bg)[None], cfg.mono_mask_threshold, ksize)[0]
        return out

    def before_backward(self, step: int, outputs: dict) -> None:
        for info in outputs.get("infos", ()):
            self.splats.before_backward(step, info)

    def combine_outputs(self, outputs: list[dict], ranks: Collective | None) -> dict:
        infos = [info for o in outputs for info in o.get("infos", ())]
        combined = dict(outputs[0])
        if infos:  # (every rank is in the same stage: all of them gather, or none)
            combined["infos"] = infos
            combined["merged_info"] = merge_views(infos, gather=None if ranks is None else ranks.all_gather)
        return combined

    def after_optimizer_step(self, step: int, outputs: dict) -> None:
        stage = self.stages.at(step)
        infos = outputs.get("infos")
        if infos:
            # Densification statistics of all views of the step at once, as one batched gsplat render would give
            # them (n_cameras = number of views: the loss is their mean); several processes' views: already merged.
            merged = outputs["merged_info"] if "merged_info" in outputs else merge_views(infos)
            if merged is not None:
                self.splats.after_optimizer_step(step, merged)
        self._infos = []
        if self.stages.at(step + 1) == "fine" and not bool(self.fine_ready):
            # Here rather than in the first fine step's train_step: the new field's random initialisation must not
            # depend on which view of the step (and which process) gets there first.
            self._start_fine()
        every = int(round(self.config.importance_every * self.max_steps))
        s1 = step + 1
        # (Not with MCMC densification: it recycles dead Gaussians itself, and its state is not per-Gaussian.)
        if stage != "dscore" and every > 0 and s1 < self.max_steps and (s1 % every == 0 or s1 == self.stages.canonical_end) \
                and not self.splats.densifier.is_mcmc:
            self.prune_unimportant()

    @torch.no_grad()
    def max_weights(self) -> Tensor:
        """[N] max over the training views of :meth:`importance_views` (at their times) of each Gaussian's α·T."""
        stage_canonical = not bool(self.fine_ready)
        by_time: dict[float | None, list[int]] = {}
        for v in self.importance_views():
            by_time.setdefault(None if stage_canonical else self._views.time(v), []).append(v)
        N = self.splats["means"].shape[0]
        best = torch.zeros(N, device=self.device_)
        cams = self._views.cameras
        for t, vs in by_time.items():
            p = self.deformed([t])[0]
            sub = cams[torch.tensor(vs)]
            w = gaussian_max_weights(
                p["means"], p["quats"], torch.exp(p["scales"]), torch.sigmoid(p["opacities"]), sub.viewmats(), sub.Ks(),
                int(sub.widths[0]), int(sub.heights[0]), near_plane=self.config.near_plane, far_plane=self.config.far_plane,
                antialiased=self.config.antialiased,
            )  # fmt: skip
            best = torch.maximum(best, w)
        return best

    def importance_views(self) -> list[int]:
        """Training views of a pruning pass. Canonical stage: at most ``importance_max_views``, evenly spread (the
        Gaussians do not change with time). Fine stage: one view per distinct training time, cycling through the
        cameras that saw it, plus evenly spread extra views up to ``importance_max_views``; a pass that skipped a
        time would prune Gaussians the field shows only around that time (the field can fade a Gaussian in for a
        single frame), so every time is covered whatever the cap."""
        cap, fine = self.config.importance_max_views, bool(self.fine_ready)
        pool = self.train_pool if fine else self.canonical_pool
        spread = list(dict.fromkeys(pool[int(i)] for i in np.linspace(0, len(pool) - 1, min(cap, len(pool))).round()))
        if not fine:
            return spread
        per_time: dict[float, list[int]] = {}
        for v in pool:
            per_time.setdefault(self._views.time(v), []).append(v)
        views = [vs[k % len(vs)] for k, (_, vs) in enumerate(sorted(per_time.items()))]
        seen = set(views)
        return views + [v for v in spread if v not in seen][: max(cap - len(views), 0)]

    @torch.no_grad()
    def prune_unimportant(self) -> int:
        """Temporal-importance pruning (§1.4): drop Gaussians whose max α·T is below the threshold."""
        low = self.max_weights() < self.config.importance_threshold
        n = int(low.sum())
        if 0 < n < low.numel():
            self.splats.remove(low)
            return n
        return 0

    def log_scalars(self) -> dict[str, float]:
        n = self.splats["means"].shape[0]
        dyn = int(self.dynamic().sum()) if n else 0
        out = {"num_gaussians": float(n), "static_share": (n - dyn) / max(n, 1)}
        if getattr(self, "_mask_share", None) is not None:
            out["mask_share"] = float(self._mask_share)  # share of change-mask pixels (d-score targets)
        return out

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def render(self, camera: Cameras, time: float | None = None, outputs: Sequence[str] = ("rgb",), background: Tensor | None = None, **options) -> dict[str, Tensor]:
        p = self.deformed([time])[0]
        out = self.splats.render_maps(camera, background, p)
        if "dynamic_mask" in outputs:
            out["dynamic_mask"] = torch.sigmoid(self._splat_d(camera, p))[..., None]
        return {k: out[k] for k in outputs if k in out}

    @torch.no_grad()
    def gaussians(self, time: float | None = None) -> dict[str, Tensor]:
        """Pre-activation Gaussians (gsplat names, normalised frame) at ``time`` (canonical for None)."""
        return {k: v.detach() for k, v in self.deformed([time])[0].items()}

    # ---------------------------------------------------------------- state
    def extra_state(self) -> dict:
        """The densifier's state and the change masks, bit-packed (monocular masks come from the canonical fit,
        which the fine stage goes on changing: a resumed run must not recompute them)."""
        state = {"densifier": self.splats.densifier_state()}
        if self._masks is not None:
            state["change_masks"] = {str(v): mk.pack_mask(m) for v, m in self._masks.items()}
        return state

    def load_extra_state(self, state: dict) -> None:
        self.splats.load_densifier_state(state.get("densifier"))
        if state.get("change_masks"):
            self._masks = {int(v): mk.unpack_mask(packed).to(self.device_) for v, packed in state["change_masks"].items()}
            self._mask_share = mk.mask_coverage(self._masks.values())

    def resize_for_state_dict(self, state_dict: dict[str, Tensor]) -> None:
        log2 = state_dict.get("field_log2")
        if log2 is not None and int(log2) != int(self.field_log2):
            self.field_log2.fill_(int(log2))
            self.field = self._make_field(int(log2))
        self.splats.resize_like(state_dict, "splats.")
        self.splats.to(self.device_)
        if "scene_scale" in state_dict:
            self.scene_scale.copy_(state_dict["scene_scale"])
        self._build_optimizers()


def _on_off_auto(option: str, value: str, auto: bool) -> bool:
    """An ``on`` / ``off`` / ``auto`` setting as a bool (``auto`` -> ``auto``); anything else is a clear error."""
    if value not in ("auto", "on", "off"):
        raise ReconError(f"--model.{option} must be auto, on or off (got {value!r})")
    return value == "on" or (value == "auto" and auto)

