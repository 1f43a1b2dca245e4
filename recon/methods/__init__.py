"""Method registry (threestudio style): a name -> Method class, imported lazily so `recon methods` stays fast."""

from __future__ import annotations

import importlib

from recon.errors import ReconError

#: method name -> (module path, one-line description). Modules register their class with :func:`register`.
_KNOWN = {
    "gs": ("recon.methods.gs", "vanilla 3D Gaussian Splatting (Kerbl et al. 2023) with gsplat's densification"),
    "blocks": ("recon.methods.blocks", "Differentiable Blocks World: a scene as a few textured superquadrics, ground and background"),
    "swift4d": ("recon.methods.swift4d", "Swift4D: static/dynamic split, 4D hash deformation of the dynamic Gaussians only"),
    "gasp": ("recon.methods.gasp", "GASP: flat Gaussians a physics engine moves (recon simulate: Newton MPM)"),
    "gshell": ("recon.methods.gshell", "G-Shell: watertight and open surfaces (SDF + manifold SDF on a tet grid), materials, light (in progress)"),
    "r3dg": ("recon.methods.r3dg", "Relightable 3D Gaussians: normals, PBR materials, ray-traced visibility, relighting (in progress)"),
}
_REGISTRY: dict[str, type] = {}


def register(cls):
    """Class decorator: add a Method subclass to the registry under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def available_methods() -> dict[str, str]:
    """Method name -> description (without importing the methods)."""
    return {k: v[1] for k, v in _KNOWN.items()}


def get_method(name: str):
    """The Method class called ``name`` (a known one, or one an already imported module registered); a clear error
    lists the choices."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name not in _KNOWN:
        raise ReconError(f"unknown method {name!r} (available: {', '.join(sorted(_KNOWN))})")
    if name not in _REGISTRY:
        importlib.import_module(_KNOWN[name][0])
    return _REGISTRY[name]
