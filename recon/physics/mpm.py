"""Particle simulation behind one interface: rest particles + material + boundary conditions -> positions per frame.

GASP moves the vertices of flat-Gaussian triangles as material-point-method (MPM) particles; any engine that moves
points will do. An engine is a :class:`ParticleEngine` registered in :data:`ENGINES`; the one shipped is NVIDIA
Newton's implicit MPM (``newton_mpm.py``, chosen by measurement: docs/benchmarks.md, "GASP"). Units are the scene's:
lengths in scene units, taken as metres; time in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Callable, Protocol

import numpy as np

from recon.errors import ReconError


@dataclass(frozen=True)
class Material:
    """Constitutive parameters of the simulated particles (SI units; the names of Newton's implicit MPM, whose
    rheology covers elastic, granular, snow-like and fluid matter with one set of fields)."""

    density: float = 1000.0
    """kg / m^3."""
    young_modulus: float = 1.0e15
    """Pa; 1e15 is effectively rigid grains (granular flow then comes from plasticity)."""
    poisson_ratio: float = 0.3
    friction: float = 0.5
    """Internal friction coefficient (Drucker-Prager); 0 for fluids."""
    yield_pressure: float = 1.0e15
    """Pa; compressive yield (1e15: never)."""
    tensile_yield_ratio: float = 0.0
    """Tensile yield as a fraction of the compressive one (0: no cohesion, as dry sand; 1: an elastic solid)."""
    yield_stress: float = 0.0
    """Deviatoric yield stress, Pa."""
    viscosity: float = 0.0
    """Pa s."""
    damping: float = 0.0
    """Elastic damping relaxation time, s."""
    hardening: float = 0.0
    dilatancy: float = 0.0


#: The materials ``recon simulate --material`` offers (Newton's examples' settings for sand, snow and water; a soft
#: solid for elastic).
MATERIALS: dict[str, Material] = {
    # No yield anywhere (with yield_stress 0 the Drucker-Prager surface has no shear strength and the "solid" flows).
    "elastic": Material(young_modulus=2.0e5, poisson_ratio=0.3, tensile_yield_ratio=1.0, yield_stress=1.0e15, damping=0.01),
    "sand": Material(density=1600.0, friction=0.5),
    "snow": Material(density=400.0, young_modulus=1.4e6, friction=0.5, damping=0.01, yield_pressure=1.4e6,
                     tensile_yield_ratio=0.2, hardening=5.0, dilatancy=1.0),  # fmt: skip
    "fluid": Material(friction=0.0, tensile_yield_ratio=1.0, viscosity=0.0),
}


def material(name: str, **overrides: float | None) -> Material:
    """The named material with non-None ``overrides`` (field names of :class:`Material`)."""
    if name not in MATERIALS:
        raise ReconError(f"unknown material {name!r} (available: {', '.join(MATERIALS)})")
    known = {f.name for f in fields(Material)}
    bad = set(overrides) - known
    if bad:
        raise ValueError(f"unknown material fields {sorted(bad)}")
    return replace(MATERIALS[name], **{k: float(v) for k, v in overrides.items() if v is not None})


@dataclass
class ParticleSystem:
    """What an engine simulates.

    Attributes:
        positions: [P, 3] rest positions (scene units).
        fixed: [P] bool, particles that do not move (static props; they still push the others).
        material: the moving particles' material.
        up: [3] unit up vector (gravity pulls along -up).
        gravity: m / s^2 (0: none).
        ground: height of the ground plane along ``up`` (a collider), or None for no ground.
        cell_size: MPM grid cell size (scene units).
        ground_friction: friction coefficient of the ground.
    """

    positions: np.ndarray
    fixed: np.ndarray
    material: Material
    up: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))
    gravity: float = 9.81
    ground: float | None = None
    cell_size: float = 1.0 / 32
    ground_friction: float = 0.5

    def particle_volumes(self) -> np.ndarray:
        """[P] volume of each particle: every occupied grid cell's volume shared by the particles in it (the points
        come from surfaces, so a fixed per-particle volume would make thin and dense parts equally heavy)."""
        cells = np.floor(self.positions / self.cell_size).astype(np.int64)
        _, inverse, counts = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
        return self.cell_size**3 / counts[inverse.reshape(-1)]


#: ``on_frame(frame, positions [P, 3])``; called for frame 0 (the rest pose) and after every simulated frame.
FrameCallback = Callable[[int, np.ndarray], None]


class ParticleEngine(Protocol):
    """A physics engine behind :func:`simulate_particles`."""

    name: str

    def run(self, system: ParticleSystem, frames: int, frame_dt: float, substeps: int, on_frame: FrameCallback) -> None:
        """Simulate ``frames`` frames of ``frame_dt`` seconds (``substeps`` solver steps each), calling
        ``on_frame`` with the positions of frame 0 (rest) and of every frame after it."""
        ...


def _newton() -> ParticleEngine:
    from recon.physics.newton_mpm import NewtonMPM

    return NewtonMPM()


#: engine name -> factory (imported on use: engines are heavy imports).
ENGINES: dict[str, Callable[[], ParticleEngine]] = {"newton": _newton}


def get_engine(name: str) -> ParticleEngine:
    if name not in ENGINES:
        raise ReconError(f"unknown physics engine {name!r} (available: {', '.join(ENGINES)})")
    return ENGINES[name]()
