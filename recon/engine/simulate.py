"""``recon simulate``: GASP's physics on a trained run of flat Gaussians, written as a new run that plays it.

The run's Gaussians (through ``Method.gaussians``) are selected, grouped and simulated by ``recon.physics``
(:func:`~recon.physics.gaussian_sim.simulate_gaussians`); the result is a run folder of its own: the source run's
``config.yaml`` plus a ``simulation`` section, and a checkpoint holding the source weights and the playback in the
method's extra state, so ``recon view``, ``recon render --time-sweep`` and ``recon export --time`` show it. Beside
it: per-frame standard 3DGS PLYs, an MP4 and ``simulation.json`` (settings, counts, timings and the checks of
docs/gasp.md).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
import tyro
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from recon.config import read_yaml, write_yaml
from recon.engine import checkpoint as ckpt
from recon.engine.run import LoadedRun, load_run
from recon.errors import ReconError
from recon.gaussians import FLAT_SCALE
from recon.geometry.ground import camera_up, fit_ground_plane
from recon.physics.gaussian_sim import SimulationSettings, simulate_gaussians
from recon.physics.mpm import ENGINES, material


@dataclass
class SimulateArgs:
    run: tyro.conf.Positional[Path]
    """Run directory of a trained ``gasp`` run (flat Gaussians)."""
    engine: str = "newton"
    """Physics engine (newton: NVIDIA Newton's implicit MPM; CPU, or CUDA when present)."""
    material: Literal["elastic", "sand", "snow", "fluid"] = "elastic"
    """Material of the simulated Gaussians."""
    frames: int = 120
    """Simulated frames after the rest pose."""
    fps: float = 30.0
    """Frames per simulated second."""
    substeps: int = 0
    """Solver steps per frame; 0: enough that the object, falling onto the ground, moves at most one grid cell per
    step (faster, and particles tunnel into the ground)."""
    gravity: float = 9.81
    """m / s^2 along the scene's down (0: no gravity)."""
    size: float = 1.0
    """Height of the simulated object in metres (sets the scene's physical scale)."""
    ground: Literal["auto", "below", "none"] = "auto"
    """Ground plane: auto (the scene's dominant horizontal plane under the object when the Gaussians have one, else
    as below), below (a plane --drop object-heights under the object's lowest point), none."""
    ground_plane: Optional[tuple[float, float, float, float, float, float]] = None
    """PX PY PZ NX NY NZ: a ground plane through point P with up normal N, in the data's frame (overrides --ground;
    gravity pulls along -N)."""
    drop: float = 0.25
    """Height of the fall onto a ``below`` ground, in object heights."""
    select: Literal["all", "box", "groups"] = "all"
    """What moves: all Gaussians, those whose centre is inside --box, or the Birch groups --groups (see
    --list-groups); the others are static props the moving ones collide with."""
    box: Optional[tuple[float, float, float, float, float, float]] = None
    """XMIN YMIN ZMIN XMAX YMAX ZMAX in the data's frame (with --select box)."""
    groups: tuple[int, ...] = ()
    """Group numbers to move (with --select groups), as --list-groups prints them."""
    list_groups: bool = False
    """Print the run's Gaussians in Birch groups of --select-threshold (number, size, centre and box in the data
    frame; largest first) and exit."""
    select_threshold: float = 0.15
    """Birch subcluster radius of --list-groups / --select groups, as a fraction of the scene's size."""
    group: bool = True
    """GASP's grouping: simulate Birch-clustered core triangles, carry the other Gaussians along."""
    birch_threshold: float = 0.01
    """Birch subcluster radius, as a fraction of the object's size (GASP's 0.1 in its unit domain is about 0.2 of
    its objects: coarser, so fewer and stiffer groups; 0.01 keeps a 79k-Gaussian lego at 7.4k groups)."""
    tau: float = 1.0
    """Size control: each triangle edge stays within [1/tau, tau] times its rest length (1: rest lengths)."""
    cell_size: float = 1.0 / 32
    """MPM grid cell, as a fraction of the object's size."""
    young_modulus: Optional[float] = None
    """Override the material's Young's modulus (Pa)."""
    density: Optional[float] = None
    """Override the material's density (kg / m^3)."""
    friction: Optional[float] = None
    """Override the material's internal friction."""
    output: Optional[Path] = None
    """Output run folder (default: RUN/simulations/<material>-<timestamp>)."""
    ply_every: int = 1
    """Write a standard 3DGS PLY every N frames (0: none)."""
    video: Literal["test", "orbit", "none"] = "test"
    """MP4 of the simulation: from the first test camera, along the orbit, or none."""
    device: str = "auto"
    progress: Literal["bar", "lines"] = "bar"


def _check_flat(run: LoadedRun) -> dict[str, torch.Tensor]:
    method = run.method
    if not method.supports("gaussians"):
        raise ReconError(f"method {method.name!r} has no Gaussians to simulate; train with --method gasp", run.run_dir)
    g = method.gaussians()
    thick = int((g["scales"][:, 2] > math.log(FLAT_SCALE) + 1e-3).sum())
    if thick or method.name != "gasp":
        raise ReconError(f"recon simulate needs flat Gaussians (a gasp run); this {method.name!r} run has {thick:,} of "
                         f"{len(g['scales']):,} Gaussians with a third scale above {FLAT_SCALE:g}: train it with --method gasp", run.run_dir)  # fmt: skip
    return g


def _selection_groups(means: torch.Tensor, threshold: float) -> np.ndarray:
    """[N] group number of each Gaussian: Birch subclusters of the centres with radius ``threshold`` x the scene's
    size, numbered by size (0 = the largest)."""
    from sklearn.cluster import Birch

    pts = means.double().cpu().numpy()
    size = float(np.max(np.percentile(pts, 99.5, axis=0) - np.percentile(pts, 0.5, axis=0)))
    labels = Birch(threshold=threshold * size, n_clusters=None).fit_predict(pts)
    _, labels, counts = np.unique(labels, return_inverse=True, return_counts=True)
    rank = np.empty_like(counts)
    rank[np.argsort(-counts, kind="stable")] = np.arange(len(counts))
    return rank[labels.reshape(-1)]


def _print_groups(labels: np.ndarray, data_means: np.ndarray, most: int = 30) -> None:
    print("group  Gaussians  centre (data frame)            box min -> max")
    for k in range(min(int(labels.max()) + 1, most)):
        pts = data_means[labels == k]
        lo, hi, c = pts.min(0), pts.max(0), pts.mean(0)
        fmt = lambda v: " ".join(f"{x:7.3f}" for x in v)  # noqa: E731
        print(f"{k:5d}  {len(pts):9,d}  {fmt(c)}   {fmt(lo)} -> {fmt(hi)}")
    if labels.max() + 1 > most:
        print(f"... {int(labels.max()) + 1 - most} smaller groups")


def _progress(console: Console, mode: str) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=mode != "bar")  # fmt: skip


def simulate_run(args: SimulateArgs, console: Console) -> Path:
    """Run ``recon simulate``; returns the output run folder."""
    if args.engine not in ENGINES:
        raise ReconError(f"unknown physics engine {args.engine!r} (available: {', '.join(ENGINES)})")
    if args.frames < 1 or args.fps <= 0 or args.substeps < 0 or args.size <= 0 or args.tau < 1:
        raise ReconError("--frames must be >= 1, --substeps >= 0, --fps and --size > 0, --tau >= 1")
    if args.select == "box" and args.box is None:
        raise ReconError("--select box needs --box XMIN YMIN ZMIN XMAX YMAX ZMAX (data frame)")
    run = load_run(args.run, device=args.device)
    g = _check_flat(run)
    means = g["means"].float()

    # What moves, in the data frame the user knows.
    if args.list_groups or args.select == "groups":
        labels = _selection_groups(means, args.select_threshold)
        if args.list_groups:
            _print_groups(labels, np.asarray(run.transform.invert_points(means.double().cpu())))
            return run.run_dir
        bad = [k for k in args.groups if not 0 <= k <= int(labels.max())]
        if not args.groups or bad:
            raise ReconError(f"--select groups needs --groups from 0 to {int(labels.max())} (see --list-groups); got {list(args.groups)}")
        selected = torch.from_numpy(np.isin(labels, args.groups))
    elif args.select == "box":
        lo, hi = np.minimum(args.box[:3], args.box[3:]), np.maximum(args.box[:3], args.box[3:])
        data_means = np.asarray(run.transform.invert_points(means.double().cpu()))
        selected = torch.from_numpy(np.all((data_means >= lo) & (data_means <= hi), axis=1))
        if not bool(selected.any()):
            raise ReconError(f"--box {' '.join(f'{v:g}' for v in args.box)} holds no Gaussian centre (data frame)", run.run_dir)
    else:
        selected = torch.ones(len(means), dtype=torch.bool)

    scene = run.scene
    train = torch.from_numpy(scene.split("train"))
    up = camera_up(scene.cameras.camtoworlds[train].double().numpy())
    pts = means[selected.to(means.device)].double().cpu().numpy()
    height = pts @ up
    lo_h, hi_h = np.percentile(height, 0.5), np.percentile(height, 99.5)
    extent = np.percentile(pts, 99.5, axis=0) - np.percentile(pts, 0.5, axis=0)
    object_size = float(max(np.max(extent), 1e-6))
    object_height = float(max(hi_h - lo_h, 1e-6))
    ground, ground_note = None, "no ground"
    if args.ground_plane is not None:
        normal = run.transform.rotation @ np.asarray(args.ground_plane[3:], np.float64)
        if np.linalg.norm(normal) < 1e-9:
            raise ReconError("--ground-plane needs a non-zero normal NX NY NZ")
        up = normal / np.linalg.norm(normal)
        ground = float(run.transform.apply_points(np.asarray(args.ground_plane[:3], np.float64)) @ up)
        height = pts @ up
        ground_note = "ground: the plane given"
    elif args.ground == "auto":
        plane = fit_ground_plane(means.double().cpu().numpy(), up)
        if plane is not None and float(np.percentile(plane.height(pts), 5)) > -0.02 * object_height:
            up, ground = plane.normal, float(plane.point @ plane.normal)
            ground_note = f"ground: the scene's plane ({int(plane.inliers.sum()):,} Gaussians on it)"
    if args.ground_plane is None and (args.ground == "below" or (args.ground == "auto" and ground is None)):
        ground = float(np.min(height)) - args.drop * object_height
        ground_note = f"ground: {args.drop:g} object heights under the object"
    height = pts @ up
    if ground is not None and float(np.mean(height < ground)) > 0.01:
        console.print(f"recon: warning: {100 * float(np.mean(height < ground)):.1f} % of the simulated Gaussians start below the ground "
                      "(the engine pushes them out)", highlight=False, markup=False)  # fmt: skip
    metres = args.size / object_height
    substeps = args.substeps
    if substeps == 0:
        fall = (float(np.min(height)) - ground) * metres if ground is not None else 0.0
        speed = math.sqrt(2 * max(args.gravity, 0.0) * max(fall, 0.0))  # at impact
        substeps = max(1, math.ceil(speed / args.fps / (args.cell_size * object_size * metres)))

    settings = SimulationSettings(
        material=material(args.material, young_modulus=args.young_modulus, density=args.density, friction=args.friction),
        engine=args.engine, frames=args.frames, fps=args.fps, substeps=substeps, gravity=args.gravity, up=up,
        ground=ground, cell_size=args.cell_size * object_size, tau=args.tau, group=args.group,
        birch_threshold=args.birch_threshold * object_size, metres_per_unit=metres,
    )  # fmt: skip
    console.print(f"recon: simulating {int(selected.sum()):,} of {len(means):,} Gaussians ({args.material}, {args.engine}); {ground_note}; "
                  f"object {object_height * metres:.2f} m tall, cell {settings.cell_size * metres * 100:.1f} cm, {substeps} steps per frame", highlight=False, markup=False)  # fmt: skip

    with _progress(console, args.progress) as bar:
        task = bar.add_task("simulate", total=args.frames, rate="")
        started = [time.perf_counter()]

        def on_frame(frame: int, total: int) -> None:
            if frame == 0:
                started[0] = time.perf_counter()
                return
            rate = frame / max(time.perf_counter() - started[0], 1e-9)
            bar.update(task, completed=frame, rate=f"{rate:.2f} frames/s")
            if args.progress == "lines":
                console.print(f"simulate {frame}/{total} {rate:.2f} frames/s", highlight=False, markup=False)

        try:
            playback, report = simulate_gaussians(g, selected.to(means.device), settings, on_frame)
        except FloatingPointError as exc:
            raise ReconError(f"simulation failed: {exc}", run.run_dir) from None

    # The output run: the source config and weights, plus the playback.
    out = Path(args.output) if args.output else run.run_dir / "simulations" / f"{args.material}-{time.strftime('%Y-%m-%d_%H%M%S')}"
    if out.exists() and any(out.iterdir()):
        raise ReconError("output folder exists and is not empty", out)
    out.mkdir(parents=True, exist_ok=True)
    config = read_yaml(run.run_dir / "config.yaml")
    sim_info = {k: (v if not isinstance(v, Path) else str(v)) for k, v in asdict(args).items()}
    sim_info.update(substeps=substeps, source_run=str(run.run_dir.resolve()), up=[float(x) for x in up], ground_height=ground, metres_per_unit=metres)
    config["simulation"] = sim_info
    write_yaml(config, out / "config.yaml")
    source = ckpt.latest_checkpoint(run.run_dir)
    state = ckpt.load_checkpoint(source)
    state.setdefault("method_extra", {})["simulation"] = {k: (v.cpu() if torch.is_tensor(v) else v) for k, v in playback.state().items()}
    ckpt.atomic_save(state, ckpt.checkpoint_path(out, int(state.get("step", 0))))

    sim_run = load_run(out, device=args.device)
    checks, render_s = _write_frames(sim_run, playback, settings, args, console)
    frames_shown = playback.num_frames
    summary = {
        "settings": sim_info,
        "material": asdict(settings.material),
        "counts": {"gaussians": report.gaussians, "moved": report.moved, "simulated_triangles": report.simulated_triangles,
                   "particles": report.particles, "fixed_particles": report.fixed_particles,
                   "reduction": report.moved / max(report.simulated_triangles, 1)},  # fmt: skip
        "timing_s": {"setup": report.setup_s, "simulate": report.simulate_s, "per_frame_median": float(np.median(report.per_frame_s)),
                     "render_per_frame_mean": render_s / frames_shown if render_s is not None else None,
                     "fps_simulate_and_render": args.frames / (report.simulate_s + render_s) if render_s is not None else None},  # fmt: skip
        "checks": checks,
    }
    (out / "simulation.json").write_text(json.dumps(summary, indent=2))
    console.print(f"recon: {report.simulated_triangles:,} triangles ({report.particles:,} particles) simulated in {report.simulate_s:.1f} s "
                  f"({args.frames / report.simulate_s:.2f} frames/s); lowest centre {checks['lowest_centre_above_ground_cells']:.2f} cells above the ground, "
                  f"largest size ratio {checks['max_size_ratio']:.3f}, NaN: {checks['non_finite']}", highlight=False, markup=False)  # fmt: skip
    return out


def _write_frames(sim_run: LoadedRun, playback, settings: SimulationSettings, args: SimulateArgs, console: Console) -> tuple[dict, float | None]:
    """Per-frame PLYs, the MP4, and the acceptance checks measured on the Gaussians of every frame; returns the checks
    and the video's render time in seconds (None without a video)."""
    from recon.export import splats as splat_io
    from recon.export.render import render_run

    method = sim_run.method
    frames = playback.num_frames
    rest = method.gaussians(time=0.0)
    rest_size = torch.exp(rest["scales"][:, :2]).amax(-1)
    up = torch.as_tensor(np.asarray(settings.up), dtype=torch.float32, device=rest_size.device)
    lowest, worst_ratio, non_finite = math.inf, 0.0, 0
    moved = playback.moved
    with _progress(console, args.progress) as bar:
        task = bar.add_task("write frames", total=frames, rate="")
        for f in range(frames):
            t = f / max(frames - 1, 1)
            gf = method.gaussians(time=t)
            non_finite += int((~torch.isfinite(gf["means"])).any(-1).sum())
            if settings.ground is not None:
                lowest = min(lowest, float((gf["means"][moved] @ up).min()) - settings.ground)
            worst_ratio = max(worst_ratio, float((torch.exp(gf["scales"][moved, :2]).amax(-1) / rest_size[moved]).max()))
            if args.ply_every and f % args.ply_every == 0:
                splat_io.write_ply(splat_io.splats_to_data_frame(gf, sim_run.transform), sim_run.run_dir / "ply" / f"frame-{f:04d}.ply")
            bar.update(task, completed=f + 1)
    render_s = None
    if args.video != "none":
        t0 = time.perf_counter()
        render_run(sim_run, path="orbit" if args.video == "orbit" else None, frames=frames, time_sweep=True,
                   output=sim_run.run_dir / "video", fps=args.fps, console=console, progress=args.progress)  # fmt: skip
        render_s = time.perf_counter() - t0
    checks = {
        "lowest_centre_above_ground": lowest if settings.ground is not None else None,
        "lowest_centre_above_ground_cells": (lowest / settings.cell_size) if settings.ground is not None else math.nan,
        "cell_size": settings.cell_size,
        "max_size_ratio": worst_ratio,
        "tau": settings.tau,
        "non_finite": non_finite,
    }
    return checks, render_s
