"""``recon data process INPUT OUT``: photos or videos -> a posed COLMAP dataset that recon's COLMAP reader loads.

Stages: check the input, gather the images (copy photos; pick frames from videos), structure from motion
(:mod:`.sfm`), downscaled copies (``images_2/``, ``images_4/``), a report. Everything is written into a hidden
folder beside ``OUT`` and renamed to ``OUT`` only when every stage succeeded, so a failed or interrupted run never
leaves something that looks like a finished dataset.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.text import Text

from recon.errors import ReconError

from . import frames as framelib
from .inputs import check_images, collect
from .sfm import Progress as SfmProgress
from .sfm import SfmOptions, check_options, reconstruction_stats, run_sfm

REPORT = "process_report.json"


@dataclass
class ProcessConfig:
    matcher: str = "auto"
    """auto (sequential for video frames, exhaustive for photos), exhaustive, sequential, vocab (needs
    --vocab-tree)."""
    max_frames: int = 150
    """Video input: frames to keep over all videos (the sharpest of each equal stretch of time)."""
    downscale: tuple[int, ...] = (2, 4)
    """Also write images_N/ copies downscaled by these factors (recon train --data.downscale N uses them)."""
    camera_model: str = "radial"
    """COLMAP camera model: pinhole, simple_pinhole, simple_radial, radial (one focal length, k1, k2), opencv (fx,
    fy, k1, k2, p1, p2), full_opencv, opencv_fisheye. Why radial by default: docs/data_process.md."""
    single_camera: bool = True
    """One shared camera for all photos (one phone), one per video for videos; off: one camera per image."""
    masks: Path | None = None
    """Folder of masks (<image stem>.png, 0 = ignore) used to keep features off moving things; copied to
    OUT/masks/."""
    vocab_tree: Path | None = None
    """COLMAP vocabulary tree file, for --matcher vocab and loop detection in sequential matching."""
    seed: int = 0
    """Random seed of COLMAP's RANSAC and mapper."""
    undistort: bool = False
    """Write undistorted images and PINHOLE cameras (COLMAP's image undistorter) instead of the originals with the
    lens model (recon undistorts at load either way; other tools may want pinhole data)."""
    overwrite: bool = False
    """Replace OUT if it exists."""
    colmap_log: bool = False
    """Show COLMAP's own log (hundreds of lines; silent by default: recon reports what matters)."""


@dataclass
class _Bar(SfmProgress):
    """One rich progress line per stage; starting a stage marks the previous one complete."""

    progress: Progress
    task: int | None = None

    def stage(self, name: str, total: int | None) -> None:
        self.done()
        self.task = self.progress.add_task(name, total=total)

    def advance(self, n: int = 1) -> None:
        self.progress.advance(self.task, n)

    def done(self) -> None:
        if self.task is not None:
            t = self.progress.tasks[self.task]
            self.progress.update(self.task, total=t.total or 1, completed=t.total or 1)


class _Rate(ProgressColumn):
    """Items per second of a stage (blank until measured)."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:6.1f}/s" if task.speed else "", style="progress.data.speed")


def _progress(console: Console) -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(), _Rate(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console, transient=False)


def process(input_path: Path, out: Path, cfg: ProcessConfig, console: Console | None = None) -> dict:
    """Turn ``input_path`` into a posed dataset at ``out``; returns the report (also written to OUT/process_report.json)."""
    console = console or Console(stderr=True)
    out = Path(out)
    if out.exists() and not cfg.overwrite:
        raise ReconError("exists already (use --overwrite to replace it)", out)
    check_options(cfg.matcher, cfg.camera_model, cfg.vocab_tree)
    inputs = collect(Path(input_path))
    if cfg.masks is not None and not Path(cfg.masks).is_dir():
        raise ReconError("--masks: not a folder", cfg.masks)
    if any(int(d) < 2 for d in cfg.downscale):
        raise ReconError(f"--downscale factors must be 2 or more (got {list(cfg.downscale)})")
    tmp = out.parent / f".{out.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "images").mkdir(parents=True)
    t_all = time.perf_counter()
    try:
        report = _run(inputs, tmp, cfg, console)
        report["seconds"]["total"] = time.perf_counter() - t_all
        (tmp / REPORT).write_text(json.dumps(report, indent=2, default=str))
        shutil.rmtree(tmp / "colmap_work", ignore_errors=True)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print_report(report, out, console)
    return report


def _run(inputs, tmp: Path, cfg: ProcessConfig, console: Console) -> dict:
    images = tmp / "images"
    seconds: dict[str, float] = {}
    frames_info = None
    with _progress(console) as progress:
        bar = _Bar(progress)
        t = time.perf_counter()
        if inputs.kind == "images":
            if inputs.ignored:
                console.print(f"[yellow]recon data process[/]: ignoring {len(inputs.ignored)} non-image file(s), e.g. {inputs.ignored[0].name}")
            bar.stage("reading images", len(inputs.files))
            sizes = check_images(inputs.files)
            for f in inputs.files:
                shutil.copy2(f, images / f.name)
                bar.advance()
            names = [f.name for f in inputs.files]
            mode = "single" if cfg.single_camera and len(set(sizes)) == 1 else "per_image"
            if cfg.single_camera and mode != "single":
                console.print("[yellow]recon data process[/]: the photos differ in size; one camera per photo")
        else:
            infos = [framelib.probe(v) for v in inputs.files]
            budget = framelib.frame_budget(infos, cfg.max_frames)
            bar.stage("video frames", sum(i.frames for i in infos))
            frames_info, names = [], []
            # Several videos: a folder (and a camera) each; their stems are made unique for the folder names.
            sub = _unique_stems([i.path for i in infos]) if len(infos) > 1 else [""]
            for info, count, folder in zip(infos, budget, sub):
                kept = framelib.extract(info, count, images / folder, info.path.stem, on_frame=lambda _i: bar.advance())
                for k in kept:
                    k["name"] = f"{folder}/{k['name']}" if folder else k["name"]
                frames_info.append({"video": str(info.path), "frames": info.frames, "fps": info.fps, "size": list(info.size), "kept": kept})
                names += [k["name"] for k in kept]
            mode = "per_image" if not cfg.single_camera else ("single" if len(infos) == 1 else "per_folder")
        seconds["gather"] = time.perf_counter() - t
        mask_dir = _colmap_masks(Path(cfg.masks), names, tmp) if cfg.masks is not None else None
        opts = SfmOptions(matcher=cfg.matcher, camera_model=cfg.camera_model, camera_mode=mode, mask_dir=mask_dir,
                          vocab_tree=cfg.vocab_tree, seed=cfg.seed, colmap_log=cfg.colmap_log)
        try:
            result = run_sfm(images, names, tmp / "colmap_work", opts, bar, video=inputs.kind == "videos")
        except ReconError as exc:  # name what the user gave, not the hidden work folder
            raise ReconError(exc.message, inputs.source if exc.path is not None else None) from None
        seconds.update(result.seconds)
        bar.done()
        sparse = tmp / "sparse" / "0"
        sparse.mkdir(parents=True)
        result.reconstruction.write(str(sparse))
        if cfg.undistort:
            t = time.perf_counter()
            bar.stage("undistorting", None)
            result.reconstruction = _undistort(tmp, result.registered)
            seconds["undistort"] = time.perf_counter() - t
        written = result.registered if cfg.undistort else names  # the undistorter writes the posed images only
        t = time.perf_counter()
        if cfg.downscale:
            bar.stage("downscaled copies", len(written) * len(cfg.downscale))
            _downscale(images, written, cfg.downscale, bar.advance)
            bar.done()
        seconds["downscale"] = time.perf_counter() - t
    rec = result.reconstruction
    cams = [{"model": c.model.name, "width": c.width, "height": c.height, "params": [float(p) for p in c.params]} for c in rec.cameras.values()]
    return {
        "input": str(inputs.source),
        "kind": inputs.kind,
        "images": len(names),
        **reconstruction_stats(rec),
        "unregistered": result.unregistered,
        "models_found": result.models,
        "matcher": result.matcher,
        "features_per_image": result.features_per_image,
        "verified_pairs": result.verified_pairs,
        "cameras": cams,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "video_frames": frames_info,
        "seconds": seconds,
    }


def _undistort(tmp: Path, names: list[str]):
    """Replace images/ and sparse/0 by COLMAP's undistorted images and PINHOLE model; returns that model."""
    import pycolmap

    work = tmp / "colmap_work" / "undistorted"
    pycolmap.undistort_images(str(work), str(tmp / "sparse" / "0"), str(tmp / "images"), image_names=names)
    shutil.rmtree(tmp / "images")
    shutil.rmtree(tmp / "sparse" / "0")
    (work / "images").rename(tmp / "images")
    (work / "sparse").rename(tmp / "sparse" / "0")
    return pycolmap.Reconstruction(str(tmp / "sparse" / "0"))


def _unique_stems(paths: list[Path]) -> list[str]:
    """Folder names for videos: their stems, numbered where two are the same."""
    out, seen = [], {}
    for p in paths:
        k = seen[p.stem] = seen.get(p.stem, 0) + 1
        out.append(p.stem if k == 1 else f"{p.stem}_{k}")
    return out


def _colmap_masks(mask_dir: Path, names: list[str], tmp: Path) -> Path:
    """Masks named ``<stem>.png`` (recon's convention) -> ``masks/<stem>.png`` in the dataset and COLMAP's
    ``<image name>.png`` beside it for feature extraction."""
    colmap = tmp / "colmap_work" / "masks"
    colmap.mkdir(parents=True, exist_ok=True)
    (tmp / "masks").mkdir(exist_ok=True)
    found = 0
    for n in names:
        stem = Path(n).stem
        src = next((p for p in (mask_dir / f"{stem}.png", mask_dir / f"{n}.png") if p.is_file()), None)
        if src is None:
            continue
        shutil.copy2(src, tmp / "masks" / f"{stem}.png")
        (colmap / f"{n}.png").parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, colmap / f"{n}.png")
        found += 1
    if found == 0:
        raise ReconError(f"--masks: no mask matches any image (expected <image stem>.png, e.g. {Path(names[0]).stem}.png)", mask_dir)
    return colmap


def _downscale(images: Path, names: list[str], factors, advance) -> None:
    from PIL import Image

    for d in factors:
        folder = images.parent / f"images_{int(d)}"
        folder.mkdir(exist_ok=True)
        for n in names:
            (folder / n).parent.mkdir(parents=True, exist_ok=True)
            with Image.open(images / n) as im:
                w, h = im.size
                im.resize((max(1, round(w / d)), max(1, round(h / d))), Image.Resampling.LANCZOS).save(folder / n, quality=95)
            advance()


def print_report(report: dict, out: Path, console: Console) -> None:
    from rich.table import Table

    t = Table(title=f"recon data process -> {out}", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    t.add_row("registered", f"{report['registered_images']} of {report['images']} images" + (f" (not posed: {', '.join(report['unregistered'][:8])}{' ...' if len(report['unregistered']) > 8 else ''})" if report["unregistered"] else ""))
    t.add_row("points", f"{report['points3d']:,}; mean track length {report['mean_track_length']:.2f}")
    t.add_row("reprojection error", f"{report['mean_reprojection_error_px']:.3f} px (mean)")
    t.add_row("features", f"{report['features_per_image']:.0f} per image; {report['verified_pairs']} verified pairs ({report['matcher']} matching)")
    t.add_row("cameras", "; ".join(f"{c['model']} {c['width']}x{c['height']}" for c in report["cameras"]))
    t.add_row("time", ", ".join(f"{k} {v:.1f} s" for k, v in report["seconds"].items()))
    console.print(t)
    if report["models_found"] > 1:
        console.print(f"[yellow]recon data process[/]: the images fell apart into {report['models_found']} separate models; kept the largest")
