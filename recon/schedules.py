"""Learning-rate schedules shared by every method."""

from __future__ import annotations

import math


def exponential_decay(step: int, lr_init: float, lr_final: float, max_steps: int, delay_steps: int = 0, delay_mult: float = 1.0) -> float:
    """Log-linear interpolation from ``lr_init`` to ``lr_final`` over ``max_steps`` (the 3DGS position schedule).

    With ``delay_steps`` the rate is scaled by a cosine ramp from ``delay_mult`` to 1 over the first steps (Plenoxels).
    """
    if max_steps <= 0:
        return lr_init
    t = min(max(step / max_steps, 0.0), 1.0)
    lr = math.exp(math.log(lr_init) * (1 - t) + math.log(lr_final) * t)
    if delay_steps > 0:
        lr *= delay_mult + (1 - delay_mult) * math.sin(0.5 * math.pi * min(step / delay_steps, 1.0))
    return lr
