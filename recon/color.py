"""The sRGB transfer curve (IEC 61966-2-1), once, for torch tensors and numpy arrays alike.

PBR shading works in linear radiance and compares in sRGB; the demo scenes' procedural textures are sRGB and their
renderer shades in linear; texture exports write sRGB base colour. All of them call these two functions. Tensors
are computed with torch ops (differentiable), arrays with numpy ops (so numpy callers keep their exact bytes); the
curve itself is written once below.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import numpy as np
import torch
from torch import Tensor

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, Tensor)


def _ops(x: Any) -> tuple[Callable, Callable]:
    """``where(cond, a, b)`` and ``clip(x, lo, hi)`` (either bound may be None) for ``x``'s library."""
    if isinstance(x, Tensor):
        return torch.where, lambda v, lo, hi: v.clamp(lo, hi)
    return np.where, np.clip


def srgb_to_linear(x: ArrayOrTensor) -> ArrayOrTensor:
    """sRGB-encoded values (clamped to [0, 1] first) -> linear, any shape."""
    where, clip = _ops(x)
    x = clip(x, 0.0, 1.0)
    return where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: ArrayOrTensor, clamp: bool = True) -> ArrayOrTensor:
    """Linear -> sRGB-encoded, any shape. Values are clamped to [0, 1] first (HDR highlights saturate) unless
    ``clamp=False`` (then only negatives are cut and values above 1 stay above 1)."""
    where, clip = _ops(x)
    x = clip(x, 0.0, 1.0 if clamp else None)
    # The clip inside the power keeps the unused branch finite at 0 (and its gradient, for tensors).
    return where(x <= 0.0031308, x * 12.92, 1.055 * clip(x, 0.0031308, None) ** (1 / 2.4) - 0.055)
