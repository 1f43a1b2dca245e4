"""The one interface every method speaks, so the CLI, trainer, viewer, evaluator and exporters never special-case
a method by name.

A method is an ``nn.Module`` built from its config and the (normalised) training scene. The trainer owns the loop;
the method owns its parameters, optimizers, losses and schedule (stage switches, densification) through the hooks
below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Sequence

import torch
from torch import Tensor, nn

from recon.cameras import Cameras
from recon.data.scene import SceneData


@dataclass
class MethodConfig:
    """Base of every method's config (fields with docstrings become ``--model.*`` CLI options)."""


class ViewSource(Protocol):
    """The trainer's training images, for methods that use several views per step (the trainer keeps them on the
    training device in a bounded cache; a method must not keep a second copy)."""

    def image(self, index: int, background: Tensor) -> Tensor:
        """[H, W, 3] training image ``index`` in [0, 1], RGBA composited over ``background`` [3]."""
        ...


@dataclass
class Batch:
    """One training sample: a single view (methods that use several views per step draw more from ``views``).

    Attributes:
        index: frame index into the scene.
        camera: the view's camera (a batch of one), on the training device.
        image: [H, W, 3] target RGB in [0, 1] (RGBA data composited over ``background``).
        alpha: [H, W, 1] target alpha for RGBA data, else None.
        mask: [H, W, 1] foreground mask when the data has one, else None.
        background: [3] the background ``image`` was composited over.
        time: the frame's time in [0, 1] for dynamic scenes, else None.
        views: the trainer's image source for further training views (None outside a trainer).
    """

    index: int
    camera: Cameras
    image: Tensor
    alpha: Tensor | None
    mask: Tensor | None
    background: Tensor
    time: float | None
    views: ViewSource | None = None


class Method(nn.Module):
    """Base class. Subclasses set ``name``, ``config_cls``, ``description`` and implement the abstract methods."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    config_cls: ClassVar[type] = MethodConfig
    #: output names :meth:`render` can produce (the viewer offers these).
    render_outputs: ClassVar[tuple[str, ...]] = ("rgb",)
    #: export kinds (``gaussians-ply``, ``splat``, ``mesh``, ``mesh-pbr``, ``frames`` ...).
    export_kinds: ClassVar[tuple[str, ...]] = ()
    #: whether the method models time (the viewer shows a time slider).
    is_dynamic: ClassVar[bool] = False

    def __init__(self, config: MethodConfig, scene: SceneData | None, max_steps: int, device: torch.device):
        super().__init__()
        self.config = config
        self.max_steps = max_steps
        self.device_ = torch.device(device)

    # ---------------------------------------------------------------- training
    def setup(self, scene: SceneData) -> None:
        """Create parameters from the (normalised) training scene. Not called when loading a checkpoint."""
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimizers by name (their states are checkpointed)."""
        raise NotImplementedError

    def train_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        """Forward pass and losses for one step. Must return ``loss`` (scalar to backpropagate); other entries
        (scalars) are logged; an ``rgb`` entry [H, W, 3] is used for the running PSNR."""
        raise NotImplementedError

    def before_backward(self, step: int, outputs: dict[str, Any]) -> None:
        """Hook between the forward pass and ``loss.backward()`` (e.g. retain 2D-mean gradients)."""

    def after_backward(self, step: int, outputs: dict[str, Any]) -> None:
        """Hook after ``loss.backward()``, before the optimizer step (densification statistics)."""

    def after_optimizer_step(self, step: int, outputs: dict[str, Any]) -> None:
        """Hook after the optimizer step (densification/pruning, learning-rate schedules, stage switches)."""

    def log_scalars(self) -> dict[str, float]:
        """Extra values for the progress bar and TensorBoard (e.g. the number of Gaussians)."""
        return {}

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def render(self, camera: Cameras, time: float | None = None, outputs: Sequence[str] = ("rgb",), **options) -> dict[str, Tensor]:
        """Render one camera. Returns the requested outputs, each [H, W, C] (rgb [H, W, 3] in [0, 1])."""
        raise NotImplementedError

    # ---------------------------------------------------------------- state
    def extra_state(self) -> dict:
        """Non-parameter state to checkpoint (tensors and plain values only)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def resize_for_state_dict(self, state_dict: dict[str, Tensor]) -> None:
        """Reshape parameters to match a checkpoint (methods whose parameter count changes, e.g. densification)."""
