"""Rigid-body physics for exported primitives (a shared layer: imports no method, engine, viewer or exporter).

- ``rigid.py``: ``RigidBody``, ``simulate_rigid`` (MuJoCo; convex hulls on a ground plane of any orientation) and
  its ``RigidResult`` (per-frame poses, speeds, kinetic energy).
- ``penetration.py``: ``max_penetration`` / ``penetration_per_mesh``, an engine-independent check of how deep posed
  meshes sink into one another and below the ground.
- ``primitives.py``: ``read_primitives``, the reader of an exported primitives folder (``blocks.json``).

Units are the scene's own: lengths in scene units, gravity in scene units per second squared (see ``rigid.py``).
"""

from .penetration import max_penetration, penetration_per_mesh
from .rigid import RigidBody, RigidResult, simulate_rigid

__all__ = ["RigidBody", "RigidResult", "simulate_rigid", "max_penetration", "penetration_per_mesh"]
