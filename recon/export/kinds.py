"""The export registry: kind -> (writer, the capabilities it needs).

A method lists the kinds it offers in ``Method.export_kinds``; each must be registered here and the method must
support everything the kind needs (``Method.supports``; a test checks every registered method). ``recon export
RUN --format KIND`` dispatches through :func:`export_run`.

Writers take ``(run, request)`` and return the written path. ``run`` is a :class:`recon.engine.run.LoadedRun`
(used only for its method, normalised scene, scene transform and run directory); every writer maps what it
writes back to the input data's frame.

``primitives`` (separate analytic parts, Blocks World's superquadrics) needs the ``primitives`` capability.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from rich.console import Console

from recon.errors import ReconError


@dataclass(frozen=True)
class ExportRequest:
    """What the user asked for besides the kind.

    Attributes:
        output: output file or folder (None: a default under ``RUN/exports/``).
        time: scene time in [0, 1] for dynamic methods, else None.
        all_frames: write every training time into a folder (Gaussian kinds of dynamic methods).
        console: where progress and the summary line go.
    """

    output: Path | None
    time: float | None
    all_frames: bool
    console: Console


@dataclass(frozen=True)
class ExportKind:
    """One registered export kind.

    Attributes:
        name: the ``--format`` value.
        needs: capabilities the method must support (``Method.supports`` names), all of them.
        writer: ``writer(run, request) -> Path`` (the written file or folder).
        description: one line for help texts.
    """

    name: str
    needs: tuple[str, ...]
    writer: Callable[..., Path]
    description: str


EXPORT_KINDS: dict[str, ExportKind] = {}


def register_export(name: str, needs: tuple[str, ...], description: str):
    """Decorator: register ``writer(run, request) -> Path`` as export kind ``name``."""

    def wrap(writer):
        if name in EXPORT_KINDS:
            raise ValueError(f"export kind {name!r} registered twice")
        EXPORT_KINDS[name] = ExportKind(name, tuple(needs), writer, description)
        return writer

    return wrap


def kinds_for(method) -> tuple[str, ...]:
    """The export kinds valid for ``method`` (its declared ``export_kinds`` that it can serve)."""
    return tuple(k for k in method.export_kinds if k in EXPORT_KINDS and all(method.supports(c) for c in EXPORT_KINDS[k].needs))


def export_run(run, kind: str, output: Path | None = None, time: float | None = None, all_frames: bool = False, console: Console | None = None) -> Path:
    """Export ``run`` (a :class:`recon.engine.run.LoadedRun`) as ``kind``; returns the written path.

    Raises:
        ReconError: ``kind`` is not one of the run's kinds (the message lists them), or ``time`` / ``all_frames``
            do not fit the method.
    """
    method = run.method
    valid = kinds_for(method)
    if kind not in valid:
        raise ReconError(f"method {method.name!r} cannot export {kind!r} (kinds for this run: {', '.join(valid) or 'none'})")
    if (time is not None or all_frames) and not method.is_dynamic:
        raise ReconError(f"--time/--all-frames need a dynamic method; {method.name!r} is static")
    if time is not None and not 0.0 <= time <= 1.0:
        raise ReconError(f"--time must be in [0, 1], got {time}")
    request = ExportRequest(None if output is None else Path(output), time, all_frames, console or Console(stderr=True))
    return EXPORT_KINDS[kind].writer(run, request)


# ---------------------------------------------------------------------------------------------------- writers
def _training_times(run) -> list[float]:
    return sorted({float(t) for t in run.scene.cameras.times.tolist()})


def _write_gaussian_frames(run, request: ExportRequest, suffix: str) -> Path:
    from recon.export import splats as splat_io

    writer = splat_io.write_ply if suffix == "ply" else splat_io.write_splat
    folder = request.output or run.run_dir / "exports" / f"frames-{suffix}"
    times = _training_times(run)
    for i, t in enumerate(times):
        writer(splat_io.splats_to_data_frame(run.method.gaussians(time=t), run.transform), folder / f"frame-{i:04d}.{suffix}")
    request.console.print(f"recon: wrote {len(times)} frames to {folder}")
    return folder


def _write_gaussians(run, request: ExportRequest, suffix: str) -> Path:
    from recon.export import splats as splat_io

    if request.all_frames:
        return _write_gaussian_frames(run, request, suffix)
    tag = f"-t{request.time:.3f}" if request.time is not None else ""
    path = request.output or run.run_dir / "exports" / f"splats{tag}.{suffix}"
    splats = splat_io.splats_to_data_frame(run.method.gaussians(time=request.time), run.transform)
    (splat_io.write_ply if suffix == "ply" else splat_io.write_splat)(splats, path)
    request.console.print(f"recon: wrote {splats['means'].shape[0]} Gaussians to {path}")
    return path


@register_export("ply", ("gaussians",), "standard 3DGS PLY of the Gaussians")
def write_ply_export(run, request: ExportRequest) -> Path:
    return _write_gaussians(run, request, "ply")


@register_export("splat", ("gaussians",), "antimatter15 .splat of the Gaussians (32 bytes each)")
def write_splat_export(run, request: ExportRequest) -> Path:
    return _write_gaussians(run, request, "splat")


@register_export("frames", ("time", "gaussians"), "the Gaussians at every training time, one PLY each, in a folder")
def write_frames_export(run, request: ExportRequest) -> Path:
    if request.time is not None:
        raise ReconError("--format frames writes every training time; --time does not apply (use --format ply --time T)")
    return _write_gaussian_frames(run, request, "ply")


def _one_time_only(request: ExportRequest, kind: str) -> None:
    if request.all_frames:
        raise ReconError(f"--all-frames applies to ply and splat; export {kind} one time at a time with --time T")


def surface_mesh(run, time: float | None, console: Console):
    """The method's surface in the normalised frame: its own ``mesh()`` when it declares one, else TSDF fusion of
    the depth it renders from the training views (``trimesh.Trimesh``)."""
    if run.method.capabilities.mesh:
        return run.method.mesh(time=time)
    from recon.export.depth_mesh import fuse_rendered_depth

    return fuse_rendered_depth(run.method, run.scene, time=time, console=console)


@register_export("mesh", ("geometry",), "triangle mesh (the method's own, or TSDF-fused rendered depth); PLY/OBJ/GLB by suffix")
def write_mesh_export(run, request: ExportRequest) -> Path:
    _one_time_only(request, "mesh")
    mesh = surface_mesh(run, request.time, request.console).copy()  # a copy: a method may keep its own mesh
    mesh.vertices = run.transform.invert_points(np.asarray(mesh.vertices))
    path = request.output or run.run_dir / "exports" / "mesh.ply"
    path.parent.mkdir(parents=True, exist_ok=True)
    mesh.export(path)
    request.console.print(f"recon: wrote mesh with {len(mesh.faces)} triangles to {path}")
    return path


@register_export("mesh-pbr", ("geometry", "materials"), "mesh with baked PBR textures (GLB, or OBJ + MTL by suffix)")
def write_pbr_mesh_export(run, request: ExportRequest) -> Path:
    from recon.export.mesh import export_pbr_mesh

    _one_time_only(request, "mesh-pbr")
    method = run.method
    mesh = surface_mesh(run, request.time, request.console)
    materials = method.materials()

    def material_fn(points):  # the baker works on the CPU; materials() answers on the method's device
        return {k: v.cpu() for k, v in materials(points.to(method.device_)).items() if v is not None}

    path = request.output or run.run_dir / "exports" / "mesh-pbr.glb"
    export_pbr_mesh(path, np.asarray(mesh.vertices), np.asarray(mesh.faces), material_fn, transform=np.linalg.inv(run.transform.matrix),
                    double_sided=not mesh.is_watertight)  # fmt: skip
    request.console.print(f"recon: wrote PBR mesh with {len(mesh.faces)} triangles to {path}")
    return path


@register_export("primitives", ("primitives",), "separate parts (blocks): textured GLB/OBJ each, convex hulls for physics, blocks.json, scene.glb")
def write_primitives_export(run, request: ExportRequest) -> Path:
    from recon.export.primitives import write_primitives

    _one_time_only(request, "primitives")
    folder = request.output or run.run_dir / "exports" / "primitives"
    path = write_primitives(run.method.primitives(), run.transform, folder)
    n = len(json.loads(path.read_text())["blocks"])
    request.console.print(f"recon: wrote {n} blocks (textured meshes, convex hulls, blocks.json, scene.glb) to {folder}")
    return Path(folder)
