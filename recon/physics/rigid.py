"""Rigid bodies dropped on a ground plane, simulated with MuJoCo (why MuJoCo: docs/benchmarks.md, "Rigid-body engine
for exported blocks").

Geometry. Each body is a mesh given in the world frame at t = 0; MuJoCo collides the *convex hull* of a mesh (its
mesh-mesh and mesh-plane collisions are convex), so a concave collision mesh behaves like its hull, and a mass from
a density is the density times the hull's volume. The ground is an infinite plane through ``ground_point`` with up
normal ``ground_normal`` (any direction: gravity pulls along ``-ground_normal``). Results are rigid transforms in the
same world frame: ``poses[t, b] @ [x, 1]`` is where the point ``x`` of body ``b``'s input mesh is at frame ``t``
(``poses[0]`` is the identity).

Units. Whatever the scene uses: lengths in scene units, ``gravity`` in scene units / s^2 (9.81 makes one unit a
metre; a scene ten times larger with the same 9.81 falls like a ten times larger world, i.e. more slowly). Everything
scale-dependent is derived from the bodies' size ``L`` (the smallest axis-aligned extent of any hull) and ``g``, so
a scene behaves the same at any scale: the default time step is ``0.01 * sqrt(L / g)`` (2.3 ms for a 0.5 unit block
at 9.81), contacts are critically damped springs with time constant ``2 * timestep`` (the stiffest MuJoCo allows:
it clamps shorter ones), which makes resting penetration a fixed fraction of ``L`` (about 5e-5 L for the demo's
solids at L = 0.4 and at L = 0.004; docs/benchmarks.md), and the collision tolerance is ``1e-6 * L``. ``RigidResult.settle_speed`` (``0.01 * sqrt(g L)``) is the speed under which a body counts as at rest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import trimesh
from scipy.spatial import QhullError

__all__ = ["RigidBody", "RigidResult", "simulate_rigid"]


@dataclass
class RigidBody:
    """One rigid body.

    Attributes:
        mesh: collision mesh in the world frame at t = 0 (scene units); the engine uses its convex hull, so a
            watertight convex mesh (an exported ``physics/*.obj``) is what it expects.
        mass: mass (any unit; only ratios between bodies matter on a fixed ground); None: ``density`` times the
            hull's volume.
        density: used when ``mass`` is None (default 1.0 per cubic scene unit).
        friction: sliding friction coefficient (MuJoCo takes the larger of the two surfaces in contact).
        name: for tables and errors.
    """

    mesh: trimesh.Trimesh
    mass: float | None = None
    density: float = 1.0
    friction: float = 0.8
    name: str = ""

    def hull(self) -> trimesh.Trimesh:
        """The convex hull the engine collides."""
        try:
            hull = self.mesh.convex_hull
        except QhullError:  # fewer than 4 points, or all in a plane
            hull = None
        if hull is None or not hull.volume > 0:
            raise ValueError(f"rigid body {self.name or '?'}: its mesh has no volume (flat or fewer than 4 points)")
        return hull

    def resolved_mass(self) -> float:
        mass = self.density * self.hull().volume if self.mass is None else float(self.mass)
        if not mass > 0:
            raise ValueError(f"rigid body {self.name or '?'}: mass must be positive, got {mass}")
        return mass


@dataclass
class RigidResult:
    """Simulated trajectory, sampled at ``fps``.

    Attributes:
        poses: [T, B, 4, 4] float64 rigid transforms from the input (t = 0) frame to frame t.
        times: [T] seconds (times[0] = 0).
        speed: [T, B] upper bound of the fastest point of each hull, |v_com| + |omega| * r (scene units / s).
        kinetic_energy: [T] total kinetic energy (mass unit * scene units^2 / s^2), as MuJoCo computes it at the
            start of each frame's last step.
        timestep: the simulation step used (s); ``substeps`` steps make one frame.
        substeps: steps per frame.
        settle_speed: speed (scene units / s) under which a body counts as at rest: 0.01 * sqrt(g L).
    """

    poses: np.ndarray
    times: np.ndarray
    speed: np.ndarray
    kinetic_energy: np.ndarray
    timestep: float
    substeps: int
    settle_speed: float

    @property
    def max_speed(self) -> np.ndarray:
        """[T] speed of the fastest body in each frame."""
        return self.speed.max(1)

    def settled(self, speed_tol: float | None = None) -> bool:
        """Whether every body moves slower than ``speed_tol`` (default ``settle_speed``) in the last frame."""
        return bool(self.speed[-1].max() < (self.settle_speed if speed_tol is None else speed_tol))

    def posed_meshes(self, meshes: Sequence[trimesh.Trimesh], frame: int = -1) -> list[trimesh.Trimesh]:
        """Copies of ``meshes`` (given in the t = 0 frame, one per body) moved to ``frame``."""
        return [m.copy().apply_transform(self.poses[frame, b]) for b, m in enumerate(meshes)]


def _floats(a) -> str:
    return " ".join(f"{x:.17g}" for x in np.asarray(a, np.float64).ravel())


def _mjcf(hulls, centres, masses, frictions, rolling, ground_point, normal, gravity, dt, length, ground_friction) -> str:
    """MJCF text: one free body per hull (its frame at the hull's centre of mass), a plane for the ground."""
    timeconst = 2.0 * dt  # MuJoCo clamps anything shorter than 2 steps; critically damped (dampratio 1)
    assets, bodies = [], []

    def contact(mu, roll):  # condim 6: sliding, torsional and rolling friction (MuJoCo takes the larger of two geoms')
        return f'condim="6" friction="{mu:.17g} {roll:.17g} {roll:.17g}" solref="{timeconst:.17g} 1"'

    for i, (hull, c, mass, mu, roll) in enumerate(zip(hulls, centres, masses, frictions, rolling)):
        faces = " ".join(str(int(f)) for f in np.asarray(hull.faces).ravel())
        assets.append(f'<mesh name="m{i}" vertex="{_floats(hull.vertices - c)}" face="{faces}" inertia="convex"/>')
        bodies.append(f'<body name="b{i}" pos="{_floats(c)}"><freejoint/>'
                      f'<geom type="mesh" mesh="m{i}" mass="{mass:.17g}" {contact(mu, roll)}/></body>')
    g = -gravity * normal
    return (
        "<mujoco>"
        # implicitfast: the integrator MuJoCo's documentation recommends for most models; elliptic friction cones
        # with impratio 10, its documented setting for contacts that should not slip (blocks resting on blocks).
        f'<option timestep="{dt:.17g}" gravity="{_floats(g)}" integrator="implicitfast" cone="elliptic" '
        f'impratio="10" ccd_tolerance="{1e-6 * length:.17g}"><flag energy="enable"/></option>'
        f"<asset>{''.join(assets)}</asset>"
        f'<worldbody><geom name="ground" type="plane" size="0 0 1" pos="{_floats(ground_point)}" '
        f'zaxis="{_floats(normal)}" {contact(ground_friction, 0.0)}/>'
        f"{''.join(bodies)}</worldbody></mujoco>"
    )


def simulate_rigid(
    bodies: Sequence[RigidBody],
    ground_point: Sequence[float],
    ground_normal: Sequence[float],
    gravity: float = 9.81,
    seconds: float = 3.0,
    fps: float = 30.0,
    timestep: float | None = None,
    ground_friction: float = 0.8,
    rolling_friction: float = 0.02,
) -> RigidResult:
    """Drop ``bodies`` onto the ground plane and record their motion (MuJoCo; see the module docstring for units).

    Args:
        bodies: B rigid bodies, meshes in the world frame at t = 0 (they should not overlap each other or the ground).
        ground_point: [3] a point of the ground plane; ground_normal: [3] its up direction (any length).
        gravity: magnitude (scene units / s^2), pulling along ``-ground_normal``.
        seconds: simulated time; fps: frames recorded per second (T = round(seconds * fps) + 1 frames).
        timestep: upper bound of the simulation step in seconds; None: ``0.01 * sqrt(L / g)``. The step used divides
            a frame evenly (``RigidResult.timestep``).
        ground_friction: sliding friction coefficient of the ground.
        rolling_friction: rolling and torsional resistance as a fraction of each body's size (its hull's smallest
            axis-aligned extent; MuJoCo's are lengths: resisting torque = length x normal force, and a contact takes
            the larger of its two bodies'); 0.02 is about a hard rubber ball on concrete.
            Without it a rounded block rocks on its curved underside for many seconds, as nothing but impacts would
            take energy out of the rocking (measured in docs/benchmarks.md).
    Returns:
        ``RigidResult`` with poses [T, B, 4, 4], speeds [T, B] and kinetic energy [T].
    """
    try:
        import mujoco
    except ImportError as e:  # a declared dependency: say so instead of failing deep inside
        raise ImportError("recon.physics needs MuJoCo (pip install mujoco), a dependency of recon") from e

    if not bodies:
        raise ValueError("simulate_rigid needs at least one body")
    if not (gravity > 0 and seconds > 0 and fps > 0):
        raise ValueError(f"gravity, seconds and fps must be positive, got {gravity}, {seconds}, {fps}")
    normal = np.asarray(ground_normal, np.float64)
    if normal.shape != (3,) or not np.linalg.norm(normal) > 0:
        raise ValueError(f"ground_normal must be a non-zero 3-vector, got {ground_normal}")
    normal = normal / np.linalg.norm(normal)
    hulls = [b.hull() for b in bodies]
    masses = [b.resolved_mass() for b in bodies]
    centres = [np.asarray(h.center_mass, np.float64) for h in hulls]
    radii = np.array([np.linalg.norm(h.vertices - c, axis=1).max() for h, c in zip(hulls, centres)])
    length = float(min(h.extents.min() for h in hulls))
    natural = math.sqrt(length / gravity)  # the time a body takes to fall about its own size
    dt_max = 0.01 * natural if timestep is None else float(timestep)
    substeps = max(1, math.ceil(1.0 / (fps * dt_max)))
    dt = 1.0 / (fps * substeps)

    rolling = [float(rolling_friction) * h.extents.min() for h in hulls]
    xml = _mjcf(hulls, centres, masses, [b.friction for b in bodies], rolling, np.asarray(ground_point, np.float64),
                normal, float(gravity), dt, length, float(ground_friction))
    model = mujoco.MjModel.from_xml_string(xml)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)

    n_frames = int(round(seconds * fps)) + 1
    B = len(bodies)
    poses = np.zeros((n_frames, B, 4, 4))
    speed = np.zeros((n_frames, B))
    energy = np.zeros(n_frames)
    offset = np.stack(centres)  # body frame = hull centre of mass at t = 0, axes of the world

    def record(t):
        R = data.xmat[1:].reshape(B, 3, 3)
        poses[t, :, :3, :3] = R
        poses[t, :, :3, 3] = data.xpos[1:] - np.einsum("bij,bj->bi", R, offset)
        poses[t, :, 3, 3] = 1.0
        qvel = data.qvel.reshape(B, 6)  # free joint: linear velocity (world), angular velocity (body frame)
        speed[t] = np.linalg.norm(qvel[:, :3], axis=1) + np.linalg.norm(qvel[:, 3:], axis=1) * radii
        energy[t] = data.energy[1]

    record(0)
    for t in range(1, n_frames):
        mujoco.mj_step(model, data, nstep=substeps)
        record(t)
    return RigidResult(poses=poses, times=np.arange(n_frames) / fps, speed=speed, kinetic_energy=energy,
                       timestep=dt, substeps=substeps, settle_speed=0.01 * math.sqrt(gravity * length))
