"""Procedural solid textures for the demo scenes: evaluated at 3D texture-space points, no images involved.

Everything here is a pure function of its inputs (integer hashing, no random state), so a scene renders to the same
bytes on every machine. Colours are sRGB in [0, 1]; the renderer converts them to linear before shading.

Shapes: points ``p`` are [P, 3] float arrays; scalar fields return [P]; colour fields return [P, 3].
"""

from __future__ import annotations

import numpy as np


def hex_colors(*codes: str) -> np.ndarray:
    """'#rrggbb' strings -> [K, 3] sRGB floats (palettes read better as hex)."""
    return np.array([[int(c.lstrip("#")[i : i + 2], 16) / 255.0 for i in (0, 2, 4)] for c in codes])


# ---------------------------------------------------------------------------------------------------- noise
def _hash(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, seed: int) -> np.ndarray:
    """Integer lattice hash -> float in [0, 1). Same shape as the inputs.

    A multiply-xorshift mix on uint32 (wrapping arithmetic is what we want, hence the errstate), so the values do
    not depend on platform RNGs or library versions.
    """
    with np.errstate(over="ignore"):
        h = (ix.astype(np.uint32) * np.uint32(0x8DA6B343)) ^ (iy.astype(np.uint32) * np.uint32(0xD8163841))
        h ^= iz.astype(np.uint32) * np.uint32(0xCB1AB31F)
        h ^= np.uint32((seed * 0x9E3779B9) & 0xFFFFFFFF)
        h ^= h >> np.uint32(16)
        h *= np.uint32(0x7FEB352D)
        h ^= h >> np.uint32(15)
        h *= np.uint32(0x846CA68B)
        h ^= h >> np.uint32(16)
    return (h >> np.uint32(8)).astype(np.float64) / float(1 << 24)


def value_noise(p: np.ndarray, seed: int = 0) -> np.ndarray:
    """Smooth 3D value noise in [0, 1] with unit lattice spacing.

    Args:
        p: [P, 3] points (scale them to set the feature size).
        seed: selects an independent noise field.

    Returns:
        [P] values, C1-continuous (smoothstep-interpolated lattice values).
    """
    p = np.asarray(p, dtype=np.float64)
    base = np.floor(p)
    f = p - base
    f = f * f * (3.0 - 2.0 * f)  # smoothstep: no visible lattice creases
    i = base.astype(np.int64)
    out = np.zeros(len(p))
    for dx in (0, 1):
        wx = f[:, 0] if dx else 1.0 - f[:, 0]
        for dy in (0, 1):
            wy = f[:, 1] if dy else 1.0 - f[:, 1]
            for dz in (0, 1):
                wz = f[:, 2] if dz else 1.0 - f[:, 2]
                out += wx * wy * wz * _hash(i[:, 0] + dx, i[:, 1] + dy, i[:, 2] + dz, seed)
    return out


def fbm(p: np.ndarray, octaves: int = 3, seed: int = 0, lacunarity: float = 2.0, gain: float = 0.5) -> np.ndarray:
    """Fractal sum of :func:`value_noise` octaves, normalised to [0, 1]. ``p``: [P, 3] -> [P]."""
    total, amp, norm = np.zeros(len(p)), 1.0, 0.0
    q = np.asarray(p, dtype=np.float64)
    for o in range(octaves):
        total += amp * value_noise(q, seed + 101 * o)
        norm += amp
        amp *= gain
        q = q * lacunarity
    return total / norm


# ---------------------------------------------------------------------------------------------------- patterns
def checker(p: np.ndarray, size: float) -> np.ndarray:
    """3D checkerboard of cell edge ``size``: [P, 3] -> [P] in {0, 1}."""
    c = np.floor(np.asarray(p) / size).astype(np.int64)
    return (c.sum(axis=1) & 1).astype(np.float64)


def stripes(x: np.ndarray, period: float, duty: float = 0.5) -> np.ndarray:
    """Square wave of a scalar field: 1 on the first ``duty`` fraction of every ``period``. [P] -> [P]."""
    return ((np.asarray(x) / period) % 1.0 < duty).astype(np.float64)


def ramp(t: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Piecewise-linear colour ramp through ``colors`` ([K, 3]) for ``t`` in [0, 1]: [P] -> [P, 3]."""
    colors = np.asarray(colors, dtype=np.float64)
    x = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0) * (len(colors) - 1)
    i = np.minimum(np.floor(x).astype(np.int64), len(colors) - 2)
    w = (x - i)[:, None]
    return colors[i] * (1.0 - w) + colors[i + 1] * w


def mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-point blend of colour arrays [P, 3] (or [3]) by weights [P]: ``a`` at 0, ``b`` at 1."""
    t = np.asarray(t, dtype=np.float64)[:, None]
    return np.asarray(a) * (1.0 - t) + np.asarray(b) * t


def angle(p: np.ndarray, axis: int = 2) -> np.ndarray:
    """Azimuth in [0, 1) of points around the coordinate ``axis`` (for stripes that wrap around an object)."""
    a, b = [(1, 2), (2, 0), (0, 1)][axis]
    return (np.arctan2(p[:, b], p[:, a]) / (2.0 * np.pi)) % 1.0
