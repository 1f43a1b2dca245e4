"""GASP's pipeline from trained flat Gaussians to moved Gaussians: triangles, grouping, engine, size control, back.

:func:`simulate_gaussians` runs a :class:`~recon.physics.mpm.ParticleEngine` on the triangles of the selected
Gaussians (or on their groups' core triangles) and returns a :class:`Playback`, which rebuilds the Gaussians at any
time of the simulation (:meth:`Playback.gaussians_at`). The playback is plain tensors (:meth:`Playback.state`), so a
method keeps it in its checkpoint and every recon command (view, render, export) can show the simulation.

Two deliberate choices, both documented in docs/gasp.md:

- size control (:func:`~recon.physics.flat.clamp_edges`) is applied to the recorded frames, not fed back into the
  engine: the engine sees plain particles, whatever engine it is;
- a group's members follow an orthonormal frame of their moved core (Gram-Schmidt, as the triangle -> Gaussian
  mapping itself does), so grouped Gaussians keep their rest size exactly (GASP re-applies the coefficients to the
  raw, possibly sheared edge directions).
"""

from __future__ import annotations

import time as _time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from recon.physics.flat import clamp_edges, gaussians_to_triangles, triangles_to_gaussians
from recon.physics.grouping import apply_binding, bind, birch_cores
from recon.physics.mpm import Material, ParticleSystem, get_engine


def to_edges(triangles: Tensor) -> Tensor:
    """[N, 3, 3] triangles as (vertex 1, vertex 2 - vertex 1, vertex 3 - vertex 1)."""
    return torch.cat([triangles[:, :1], triangles[:, 1:] - triangles[:, :1]], 1)


def from_edges(stored: Tensor) -> Tensor:
    """Inverse of :func:`to_edges`."""
    return torch.cat([stored[:, :1], stored[:, :1] + stored[:, 1:]], 1)


@dataclass
class SimulationSettings:
    """How to simulate (lengths in scene units; see :class:`~recon.physics.mpm.ParticleSystem`)."""

    material: Material
    engine: str = "newton"
    frames: int = 120
    fps: float = 30.0
    substeps: int = 1
    gravity: float = 9.81
    up: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))
    ground: float | None = None
    cell_size: float = 1.0 / 32
    tau: float = 1.0
    group: bool = True
    birch_threshold: float = 0.01
    metres_per_unit: float = 1.0
    """Physical size of one scene unit: the engine runs in metres (gravity, stiffness and density are SI)."""


@dataclass
class Playback:
    """A simulation of flat Gaussians, ready to render.

    Attributes:
        moved: [M] long, indices of the simulated Gaussians in the model (the others stay where they are).
        core_frames: [T + 1, C, 3, 3] float32, the simulated triangles at every frame (size control applied; frame
            0 = rest) as vertex 1 and the two edges from it: edges stored relative keep float32's relative precision
            for the tiniest Gaussians, whose absolute vertex positions would not resolve their size.
        core_of: [M] long, each moved Gaussian's triangle in ``core_frames`` (itself when not grouped).
        coeffs: [M, 3, 3] float64, each moved Gaussian's vertices in its core's frame (grouping; None when not
            grouped).
        fps: frames per second of the simulation (for videos).
    """

    moved: Tensor
    core_frames: Tensor
    core_of: Tensor
    coeffs: Tensor | None
    fps: float

    @property
    def num_frames(self) -> int:
        return int(self.core_frames.shape[0])

    def triangles_at(self, time: float) -> Tensor:
        """[M, 3, 3] float64, the moved Gaussians' triangles at ``time`` in [0, 1] (linear between frames)."""
        f = min(max(float(time), 0.0), 1.0) * (self.num_frames - 1)
        i = min(int(np.floor(f)), self.num_frames - 2) if self.num_frames > 1 else 0
        w = f - i
        stored = self.core_frames[i].double()
        if w > 0 and self.num_frames > 1:
            stored = torch.lerp(stored, self.core_frames[i + 1].double(), w)
        cores = from_edges(stored)
        if self.coeffs is None:
            return cores[self.core_of]
        return apply_binding(cores, self.core_of, self.coeffs)

    def gaussians_at(self, params: dict[str, Tensor], time: float) -> dict[str, Tensor]:
        """``params`` (pre-activation flat Gaussians, gsplat's names) with the moved ones at ``time``."""
        moved = triangles_to_gaussians(self.triangles_at(time))
        out = dict(params)
        for key in ("means", "quats", "scales"):
            out[key] = params[key].index_put((self.moved.to(params[key].device),), moved[key].to(params[key]))
        return out

    def state(self) -> dict:
        return {"moved": self.moved, "core_frames": self.core_frames, "core_of": self.core_of, "coeffs": self.coeffs, "fps": float(self.fps)}

    @classmethod
    def from_state(cls, state: dict) -> "Playback":
        return cls(state["moved"], state["core_frames"], state["core_of"], state.get("coeffs"), float(state["fps"]))

    def to(self, device) -> "Playback":
        coeffs = None if self.coeffs is None else self.coeffs.to(device)
        return Playback(self.moved.to(device), self.core_frames.to(device), self.core_of.to(device), coeffs, self.fps)


@dataclass
class SimulationReport:
    """What a simulation did: counts, timings (seconds) and the checks GASP's acceptance asks for."""

    gaussians: int
    moved: int
    simulated_triangles: int
    particles: int
    fixed_particles: int
    frames: int
    setup_s: float = 0.0
    simulate_s: float = 0.0
    per_frame_s: list[float] = field(default_factory=list)


def simulate_gaussians(
    params: dict[str, Tensor], selected: Tensor, settings: SimulationSettings,
    on_frame: Callable[[int, int], None] | None = None,
) -> tuple[Playback, SimulationReport]:  # fmt: skip
    """Simulate the ``selected`` [N] bool flat Gaussians of ``params`` (``means`` [N, 3], ``quats`` [N, 4], ``scales``
    [N, 3] log, first two in-plane); the others are static props (their centres are fixed particles the moving
    ones collide with). ``on_frame(frame, frames)`` reports progress."""
    t0 = _time.perf_counter()
    device = params["means"].device
    means, quats, scales = (params[k].detach().double().cpu() for k in ("means", "quats", "scales"))
    moved = selected.cpu().nonzero()[:, 0]
    if len(moved) == 0:
        raise ValueError("no Gaussian is selected for simulation")
    tris = gaussians_to_triangles(means[moved], quats[moved], scales[moved])
    if settings.group:
        groups = birch_cores(tris, settings.birch_threshold)
        cores, core_of = groups.core_triangles, groups.core_of
        coeffs = bind(tris, cores, core_of)
    else:
        cores, core_of, coeffs = tris, torch.arange(len(moved)), None

    static = means[~selected.cpu()]
    m = float(settings.metres_per_unit)
    positions = torch.cat([cores.reshape(-1, 3), static]).double().numpy() * m
    fixed = np.zeros(len(positions), bool)
    fixed[cores.shape[0] * 3 :] = True
    system = ParticleSystem(positions, fixed, settings.material, up=np.asarray(settings.up, np.float64), gravity=settings.gravity,
                            ground=None if settings.ground is None else settings.ground * m, cell_size=settings.cell_size * m)  # fmt: skip
    frames = torch.empty(settings.frames + 1, *cores.shape)  # float32, as to_edges gives them
    n_core_pts = cores.shape[0] * 3
    report = SimulationReport(len(means), len(moved), cores.shape[0], len(positions), int(fixed.sum()), settings.frames)
    last = [_time.perf_counter()]

    def record(frame: int, pos: np.ndarray) -> None:
        tri = torch.from_numpy(np.ascontiguousarray(pos[:n_core_pts]) / m).reshape(cores.shape)
        frames[frame] = to_edges(clamp_edges(tri, cores, settings.tau)).float()
        now = _time.perf_counter()
        if frame > 0:
            report.per_frame_s.append(now - last[0])
        last[0] = now
        if on_frame is not None:
            on_frame(frame, settings.frames)

    report.setup_s = _time.perf_counter() - t0
    t1 = _time.perf_counter()
    get_engine(settings.engine).run(system, settings.frames, 1.0 / settings.fps, settings.substeps, record)
    report.simulate_s = _time.perf_counter() - t1
    if not torch.isfinite(frames).all():
        raise FloatingPointError("the simulation produced non-finite particle positions (try a smaller cell size or more substeps)")
    playback = Playback(moved, frames, core_of, coeffs, settings.fps)
    return playback.to(device), report
