"""Splines through keyframes: Kochanek-Bartels (tension only) cubic Hermite segments, as nerfstudio's viewer uses.

Every keyframe quantity (position, quaternion, field of view, time) is a row of ``points`` [K, D]. The spline
parameter ``s`` runs from 0 at keyframe 0 to ``K - 1`` at the last keyframe (``K`` for a closed loop, which comes
back to keyframe 0); segment ``i`` joins keyframe ``i`` to ``i + 1`` over ``s`` in ``[i, i + 1]``.

Tangents are the Kochanek-Bartels ones with continuity and bias 0: ``m_i = (1 - tension) / 2 (p_{i+1} - p_{i-1})``
(tension 0 is Catmull-Rom; 1 stops at every keyframe). The same tangent is used on both sides of a keyframe, so
the curve passes exactly through the keyframes and is C1 there. Open ends are padded by reflecting the neighbour
(``p_{-1} = 2 p_0 - p_1``), which makes the end tangent point along the first segment.

Orientations: unit quaternions are first put on one hemisphere one after the other (``q`` and ``-q`` are the same
rotation; flipping the sign where a neighbour's dot product is negative keeps each step the short way round), then
interpolated with the same Hermite spline in R^4 and renormalised. That passes through the keyframes, is C1, and
never flips sign along a path that turns 360 degrees in several keyframes; between keyframes it differs from a
true quaternion (SO(3)) spline by a small, smooth reparametrisation.
"""

from __future__ import annotations

import numpy as np


def align_quaternions(quats: np.ndarray) -> np.ndarray:
    """[K, 4] quaternions with signs flipped so that consecutive ones have a non-negative dot product."""
    q = np.array(quats, dtype=np.float64)
    for i in range(1, len(q)):
        if float(q[i] @ q[i - 1]) < 0.0:
            q[i] = -q[i]
    return q


def _padded(points: np.ndarray, loop: bool, quaternion: bool) -> np.ndarray:
    """[K + 3, D] control points: one before the first keyframe, the keyframes, and two after (the closing
    keyframe and one beyond for a loop, or reflections for an open path)."""
    p = np.asarray(points, dtype=np.float64)
    if loop:
        ext = np.concatenate([p[-1:], p, p[:2]], 0)
        return align_quaternions(ext) if quaternion else ext
    if quaternion:
        p = align_quaternions(p)
    return np.concatenate([2 * p[:1] - p[1:2], p, 2 * p[-1:] - p[-2:-1], 3 * p[-1:] - 2 * p[-2:-1]], 0)


def num_segments(num_keyframes: int, loop: bool) -> int:
    """How many segments a spline through ``num_keyframes`` keyframes has (the spline parameter's range)."""
    return num_keyframes if loop else num_keyframes - 1


def hermite(points: np.ndarray, s: np.ndarray, tension: float = 0.0, loop: bool = False, quaternion: bool = False,
            derivative: bool = False) -> np.ndarray:
    """Evaluate the spline through ``points`` at spline parameters ``s``.

    Args:
        points: [K, D] keyframe values, K >= 2.
        s: [M] spline parameters in [0, num_segments(K, loop)] (clipped).
        tension: Kochanek-Bartels tension in [0, 1].
        loop: closed curve (segment K - 1 goes back to keyframe 0).
        quaternion: ``points`` are wxyz quaternions: align their signs and renormalise the result.
        derivative: return d/ds instead of the value (not renormalised; for tests and arc lengths).

    Returns:
        [M, D] values (unit quaternions when ``quaternion``).
    """
    ext = _padded(points, loop, quaternion)
    n = num_segments(len(points), loop)
    s = np.clip(np.asarray(s, dtype=np.float64), 0.0, n)
    seg = np.minimum(np.floor(s).astype(np.int64), n - 1)
    u = (s - seg)[:, None]
    # ext[j + 1] is keyframe j; tangents at keyframe j from its neighbours ext[j] and ext[j + 2].
    p0, p1 = ext[seg + 1], ext[seg + 2]
    k = 0.5 * (1.0 - float(tension))
    m0, m1 = k * (ext[seg + 2] - ext[seg]), k * (ext[seg + 3] - ext[seg + 1])
    if derivative:
        h00, h10, h01, h11 = 6 * u**2 - 6 * u, 3 * u**2 - 4 * u + 1, -6 * u**2 + 6 * u, 3 * u**2 - 2 * u
    else:
        h00, h10, h01, h11 = 2 * u**3 - 3 * u**2 + 1, u**3 - 2 * u**2 + u, -2 * u**3 + 3 * u**2, u**3 - u**2
    out = h00 * p0 + h10 * m0 + h01 * p1 + h11 * m1
    if quaternion and not derivative:
        out /= np.linalg.norm(out, axis=-1, keepdims=True)
    return out


def constant_speed_parameters(points: np.ndarray, fractions: np.ndarray, tension: float = 0.0, loop: bool = False,
                              samples_per_segment: int = 64) -> np.ndarray:
    """Spline parameters at which the position curve has covered ``fractions`` of its length.

    Args:
        points: [K, 3] keyframe positions.
        fractions: [M] in [0, 1].

    Returns:
        [M] spline parameters; evenly spaced ones (constant speed per segment) when the curve has no length
        (e.g. a camera turning on the spot).
    """
    n = num_segments(len(points), loop)
    fractions = np.clip(np.asarray(fractions, dtype=np.float64), 0.0, 1.0)
    dense = np.linspace(0.0, n, n * samples_per_segment + 1)
    pts = hermite(points, dense, tension, loop)
    length = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=-1))])
    if length[-1] < 1e-9:
        return fractions * n
    return np.interp(fractions * length[-1], length, dense)
