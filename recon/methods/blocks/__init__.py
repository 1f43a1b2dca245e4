"""Differentiable Blocks World (``--method blocks``): a scene as a few textured superquadrics."""

from .model import BlocksWorld

__all__ = ["BlocksWorld"]
