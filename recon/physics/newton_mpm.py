"""NVIDIA Newton's implicit material point method (``newton.solvers.SolverImplicitMPM``, on NVIDIA Warp) as a
:class:`~recon.physics.mpm.ParticleEngine`.

Why Newton (measured, docs/benchmarks.md "GASP"): it takes the particles exactly where we put them (GASP had to
patch Genesis for that), covers elastic, granular, snow-like and fluid matter with one rheology, runs on the CPU
through Warp's LLVM backend and on CUDA unchanged, and adds about a tenth of Genesis' install size.

The engine frame is z-up with the ground at z = 0 (Newton's ground plane); particles are rotated and shifted into it
and back.
"""

from __future__ import annotations

import numpy as np

from recon.physics.mpm import FrameCallback, ParticleSystem


def _to_engine_frame(up: np.ndarray) -> np.ndarray:
    """[3, 3] rotation taking ``up`` to +z (the shortest rotation)."""
    up = np.asarray(up, np.float64) / np.linalg.norm(up)
    z = np.array([0.0, 0.0, 1.0])
    v, c = np.cross(up, z), float(np.dot(up, z))
    if c < -1 + 1e-9:  # up = -z: half a turn about x
        return np.diag([1.0, -1.0, -1.0])
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


class NewtonMPM:
    name = "newton"

    def __init__(self, device: str | None = None, max_iterations: int = 250, tolerance: float = 1e-4):
        self.device = device
        self.max_iterations = max_iterations
        self.tolerance = tolerance

    def run(self, system: ParticleSystem, frames: int, frame_dt: float, substeps: int, on_frame: FrameCallback) -> None:
        import warp as wp

        wp.config.quiet = True  # no start-up banner
        wp.config.log_level = 30  # warnings only: no line per compiled or loaded kernel module
        import newton
        from newton.solvers import SolverImplicitMPM

        device = self.device or ("cuda:0" if wp.is_cuda_available() else "cpu")
        rot = _to_engine_frame(system.up)
        shift = np.array([0.0, 0.0, -(system.ground if system.ground is not None else 0.0)])
        pos = system.positions.astype(np.float64) @ rot.T + shift

        volumes = system.particle_volumes()
        mat = system.material
        builder = newton.ModelBuilder()
        SolverImplicitMPM.register_custom_attributes(builder)
        n = len(pos)
        builder.add_particles(pos=[tuple(p) for p in pos.astype(np.float32)], vel=[(0.0, 0.0, 0.0)] * n,
                              mass=(mat.density * volumes).astype(np.float32).tolist(),
                              radius=(0.5 * np.cbrt(volumes)).astype(np.float32).tolist())  # fmt: skip
        if system.ground is not None:
            builder.add_ground_plane(cfg=newton.ModelBuilder.ShapeConfig(mu=system.ground_friction))
        model = builder.finalize(device=device)
        model.set_gravity((0.0, 0.0, -float(system.gravity)))
        for name in ("young_modulus", "poisson_ratio", "friction", "yield_pressure", "tensile_yield_ratio",
                     "yield_stress", "viscosity", "damping", "hardening", "dilatancy"):  # fmt: skip
            getattr(model.mpm, name).fill_(float(getattr(mat, name)))
        fixed = np.flatnonzero(system.fixed)
        if len(fixed):
            model.particle_mass[wp.array(fixed, dtype=int, device=device)].fill_(0.0)  # kinematic: never moves

        config = SolverImplicitMPM.Config()
        config.voxel_size = float(system.cell_size)
        config.max_iterations = self.max_iterations
        config.tolerance = self.tolerance
        state, state_next = model.state(), model.state()
        solver = SolverImplicitMPM(model, config=config)

        back = rot  # engine -> scene: x_scene = rot.T @ (x - shift), i.e. (x - shift) @ rot
        on_frame(0, system.positions.copy())
        dt = frame_dt / substeps
        for frame in range(1, frames + 1):
            for _ in range(substeps):
                solver.step(state, state_next, None, None, dt)
                solver.project_outside(state_next, state_next, dt)
                state, state_next = state_next, state
            q = state.particle_q.numpy().astype(np.float64)
            on_frame(frame, ((q - shift) @ back).astype(system.positions.dtype))
