"""Server-side rendering of one browser view: browser camera + GUI settings -> an RGB image to display.

Generic over methods: it only uses ``method.render`` and ``method.render_outputs``. Scalar outputs (depth, alpha,
roughness, ...) go through a colormap; three-channel outputs are shown as colours (signed ones, such as normals
in [-1, 1], are mapped to [0, 1]).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from recon.io.images import colormap, to_uint8
from .camera import ViewCamera, render_size, to_cameras


#: depth given to uncovered pixels: beyond anything in a normalised scene, and within what viser's depth encoding
#: holds (up to ~167 units).
FAR_DEPTH = 160.0


@dataclass(frozen=True)
class RenderSettings:
    """What to render, independent of the camera (a snapshot of the render panel).

    Attributes:
        output: one of ``method.render_outputs``.
        time: scene time in [0, 1] (dynamic methods), else None.
        background: RGB in [0, 1] behind the model, or None for the method's default.
        colormap: matplotlib colormap for scalar outputs.
        options: extra ``method.render`` keywords from the method's viewer options.
    """

    output: str = "rgb"
    time: float | None = None
    background: tuple[float, float, float] | None = None
    colormap: str = "turbo"
    options: dict[str, Any] = field(default_factory=dict)


class ViewRenderer:
    """Renders browser views of a method; thread-safe through ``lock`` (shared with training when live)."""

    def __init__(self, method, lock: threading.RLock | threading.Lock | None = None):
        self.method = method
        self.lock = lock if lock is not None else contextlib.nullcontext()
        self.device = method.device_

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(self.method.render_outputs)

    def render_raw(self, view: ViewCamera, max_side: int, settings: RenderSettings, extra: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
        """The method's outputs for ``view`` at a size whose longer side is ``max_side`` (tensors on the CPU).

        ``extra``: more outputs to request in the same call (when the method offers them)."""
        w, h = render_size(view.aspect, max_side)
        cam = to_cameras(view, w, h, self.device)
        wanted = [settings.output]
        # Scalar outputs are masked by coverage (so that, e.g., depth of empty space does not stretch the colour
        # range); ask for alpha in the same pass when the method offers it.
        for name in ("alpha", *extra):
            if name in self.outputs and name not in wanted:
                wanted.append(name)
        bg = None if settings.background is None else torch.tensor(settings.background, dtype=torch.float32, device=self.device)
        with self.lock:
            out = self.method.render(cam, time=settings.time, outputs=tuple(wanted), background=bg, **settings.options)
            # Copy to the CPU inside the lock: on CUDA the tensors may alias buffers the training step reuses.
            return {k: v.detach().float().cpu() for k, v in out.items()}

    def render(self, view: ViewCamera, max_side: int, settings: RenderSettings) -> np.ndarray:
        """[H, W, 3] uint8 image of ``view`` as the viewer displays it."""
        return self.render_with_depth(view, max_side, settings, depth=False)[0]

    def render_with_depth(self, view: ViewCamera, max_side: int, settings: RenderSettings, depth: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """The displayed image and, when asked for and the method renders ``depth``, an [H, W] float32 camera-z
        depth for the browser to composite its own scene nodes (frustums, meshes) with: uncovered pixels
        (alpha < 0.5) are pushed to the far end so that nodes behind empty space stay visible."""
        out = self.render_raw(view, max_side, settings, extra=("depth",) if depth else ())
        if settings.output not in out:
            raise KeyError(f"method did not return output {settings.output!r} (it returned {sorted(out)})")
        image = to_uint8(to_display(out[settings.output], out.get("alpha") if settings.output != "alpha" else None, settings.colormap))
        z = None
        if depth and "depth" in out:
            z = out["depth"][..., 0].numpy().astype(np.float32)
            far = ~np.isfinite(z) | (z <= 0)
            if "alpha" in out:
                far |= out["alpha"][..., 0].numpy() < 0.5
            z = np.where(far, FAR_DEPTH, z).astype(np.float32)
        return image, z


def to_display(value: torch.Tensor, alpha: torch.Tensor | None = None, cmap: str = "turbo") -> torch.Tensor:
    """Map one output [H, W, C] to a displayable RGB image [H, W, 3] in [0, 1].

    C = 1: colour-mapped over its 1st-99th percentile range, restricted to covered pixels (alpha > 0.5) when
    ``alpha`` is given; C = 3: shown as is, or mapped from [-1, 1] when it has negative values (normals);
    C = 2 or C > 3: the first channels, zero-padded.
    """
    value = value.float()
    c = value.shape[-1]
    if c == 1:
        mask = None if alpha is None else (alpha > 0.5).float()
        if mask is not None and not bool(mask.any()):
            mask = None
        return colormap(value, mask=mask, name=cmap)
    if c == 3:
        return (value * 0.5 + 0.5).clamp(0, 1) if float(value.min()) < -1e-3 else value.clamp(0, 1)
    rgb = value[..., :3]
    if rgb.shape[-1] < 3:
        rgb = torch.cat([rgb, torch.zeros(*rgb.shape[:-1], 3 - rgb.shape[-1])], -1)
    return rgb.clamp(0, 1)
