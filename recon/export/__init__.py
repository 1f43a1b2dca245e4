"""Exports of a trained run, dispatched by the kinds a method declares in ``Method.export_kinds``."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from recon.errors import ReconError


def export_run(run, kind: str, output: Path | None = None, time: float | None = None, all_frames: bool = False, console: Console | None = None) -> Path:
    """Export ``run`` (a :class:`recon.engine.run.LoadedRun`) as ``kind``; returns the written path."""
    from recon.export import splats as splat_io

    method = run.method
    console = console or Console(stderr=True)
    if kind not in method.export_kinds:
        raise ReconError(f"method {method.name!r} cannot export {kind!r} (it can: {', '.join(method.export_kinds) or 'nothing'})")
    if (time is not None or all_frames) and not method.is_dynamic:
        raise ReconError(f"--time/--all-frames need a dynamic method; {method.name!r} is static")
    if time is not None and not 0.0 <= time <= 1.0:
        raise ReconError(f"--time must be in [0, 1], got {time}")
    exports = run.run_dir / "exports"
    if kind in ("ply", "splat"):
        writer = splat_io.write_ply if kind == "ply" else splat_io.write_splat
        if all_frames:
            folder = Path(output) if output else exports / f"frames-{kind}"
            times = sorted({float(t) for t in run.scene.cameras.times.tolist()})
            for i, t in enumerate(times):
                writer(splat_io.splats_to_data_frame(method.gaussians(time=t), run.transform), folder / f"frame-{i:04d}.{kind}")
            console.print(f"recon: wrote {len(times)} frames to {folder}")
            return folder
        suffix = f"-t{time:.3f}" if time is not None else ""
        path = Path(output) if output else exports / f"splats{suffix}.{kind}"
        splats = splat_io.splats_to_data_frame(method.gaussians(time=time), run.transform)
        writer(splats, path)
        console.print(f"recon: wrote {splats['means'].shape[0]} Gaussians to {path}")
        return path
    if kind == "mesh":
        from recon.export.gaussian_mesh import export_tsdf_mesh

        path = Path(output) if output else exports / "mesh.ply"
        return export_tsdf_mesh(run, path, time=time, console=console)
    raise ReconError(f"unknown export kind {kind!r}")
