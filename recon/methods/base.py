"""The one interface every method speaks, so the CLI, trainer, viewer, evaluator and exporters never special-case
a method by name.

A method is an ``nn.Module`` built from its config and the (normalised) training scene. The trainer owns the loop;
the method owns its parameters, optimizers, losses and schedule (stage switches, densification) through the hooks
below.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol, Sequence

import torch
from torch import Tensor, nn

from recon.cameras import Cameras
from recon.data.scene import SceneData

if TYPE_CHECKING:
    import trimesh

#: ``material_fn(points [P, 3]) -> {"base_color": [P, 3], "roughness": [P, 1], "metallic": [P, 1], "normal": [P, 3]
#: (optional)}``, the shape of :meth:`Method.materials` (see there).
MaterialFn = Callable[[Tensor], dict]


@dataclass
class MethodConfig:
    """Base of every method's config (fields with docstrings become ``--model.*`` CLI options)."""


class ViewSource(Protocol):
    """The trainer's training images, for methods that use several views per step (the trainer keeps them on the
    training device in a bounded cache; a method must not keep a second copy)."""

    def image(self, index: int, background: Tensor) -> Tensor:
        """[H, W, 3] training image ``index`` in [0, 1], RGBA composited over ``background`` [3]."""
        ...


class Collective(Protocol):
    """The other training processes of a data-parallel run (``recon train --gpus N``, torchrun), as the trainer
    hands them to :meth:`Method.combine_outputs`. Every call is collective: each rank must make the same calls, in
    the same order, with tensors of the same shapes."""

    rank: int
    world_size: int

    def all_gather(self, tensor: Tensor) -> Tensor:
        """[R * n, ...] every rank's ``tensor`` [n, ...] concatenated along dim 0 in rank order."""
        ...


@dataclass(frozen=True)
class Capabilities:
    """What a method offers beyond :meth:`Method.render`, declared once on the class (``capabilities =
    Capabilities(gaussians=True)``) so that the viewer, evaluator and exporters read it instead of probing.

    Every flag set promises that the class overrides the :class:`Method` method of the same name, and every such
    override must be declared: :class:`Method` checks both when a subclass is defined.
    """

    gaussians: bool = False
    """:meth:`Method.gaussians`: 3D Gaussians (PLY / .splat exports, splats rendered in the browser)."""
    mesh: bool = False
    """:meth:`Method.mesh`: a triangle mesh of the surface (mesh exports, the viewer's mesh node)."""
    materials: bool = False
    """:meth:`Method.materials`: PBR materials queried at surface points (``mesh-pbr`` exports)."""
    relight: bool = False
    """:meth:`Method.relight`: renders under an environment light it was not trained with."""
    primitives: bool = False
    """:meth:`Method.primitives`: the scene as separate analytic parts (``primitives`` export, physics)."""


#: derived capabilities :meth:`Method.supports` answers besides the :class:`Capabilities` flags.
DERIVED_CAPABILITIES = {
    "time": "the method models time (``is_dynamic``)",
    "geometry": "a surface can be had: its own mesh, or TSDF fusion of the depth and alpha it renders",
}


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
        slot: the view's place in the step's global batch (0 .. batch size x ranks - 1); a method's own per-view
            randomness is drawn from (step, slot), so that it does not depend on which rank renders the view.
    """

    index: int
    camera: Cameras
    image: Tensor
    alpha: Tensor | None
    mask: Tensor | None
    background: Tensor
    time: float | None
    views: ViewSource | None = None
    slot: int = 0


class Method(nn.Module):
    """Base class. Subclasses set ``name``, ``config_cls``, ``description``, implement the training and inference
    methods, and declare what else they offer in ``capabilities`` (with the matching methods below)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    config_cls: ClassVar[type] = MethodConfig
    #: output names :meth:`render` can produce (the viewer offers these). Names with a shared meaning: ``rgb``
    #: [H, W, 3] sRGB in [0, 1]; ``alpha``, ``depth`` [H, W, 1]; ``normal`` [H, W, 3] unit world normals, signed,
    #: in the normalised frame (0 where empty); ``base_color`` [H, W, 3] linear in [0, 1], ``roughness``,
    #: ``metallic`` [H, W, 1] (``recon eval --materials`` scores these four against ground truth).
    render_outputs: ClassVar[tuple[str, ...]] = ("rgb",)
    #: export kinds, names from the registry in :mod:`recon.export.kinds` (``ply``, ``splat``, ``mesh``,
    #: ``mesh-pbr``, ``frames``); a test checks each against the registry and the capabilities it needs.
    export_kinds: ClassVar[tuple[str, ...]] = ()
    #: whether the method models time (the viewer shows a time slider; the ``time`` capability).
    is_dynamic: ClassVar[bool] = False
    #: what the method offers beyond ``render`` (see :class:`Capabilities`).
    capabilities: ClassVar[Capabilities] = Capabilities()
    #: the built-in demo scene it trains on when no data is given (a key of ``recon.demo.DEMO_SCENES``).
    default_demo: ClassVar[str] = "static"
    #: whether the method trains on several views per step, split over processes if asked
    #: (``--trainer.batch-size``, ``recon train --gpus N``, torchrun): it implements :meth:`combine_outputs`, and
    #: its :meth:`train_step` creates no state from random numbers or from the view it is given (it would differ
    #: between processes, e.g. a network initialised at a stage switch: switch in :meth:`after_optimizer_step`).
    data_parallel: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # A flag without its method (or a method without its flag) is a bug in the method: fail at import time,
        # not when a user opens the viewer or exports.
        for flag in fields(Capabilities):
            declared = bool(getattr(cls.capabilities, flag.name))
            implemented = getattr(cls, flag.name) is not getattr(Method, flag.name)
            if declared != implemented:
                what = "declares" if declared else "overrides"
                missing = f"does not override {flag.name}()" if declared else f"does not declare capabilities.{flag.name}"
                raise TypeError(f"method class {cls.__name__} {what} {flag.name!r} but {missing}")
        if cls.data_parallel and cls.combine_outputs is Method.combine_outputs:
            raise TypeError(f"method class {cls.__name__} declares data_parallel but does not override combine_outputs()")

    @classmethod
    def supports(cls, capability: str) -> bool:
        """Whether the method offers ``capability``: a :class:`Capabilities` flag (``gaussians``, ``mesh``,
        ``materials``, ``relight``) or a derived one (``time``, ``geometry``; see :data:`DERIVED_CAPABILITIES`)."""
        if capability == "time":
            return bool(cls.is_dynamic)
        if capability == "geometry":
            return cls.capabilities.mesh or {"depth", "alpha"} <= set(cls.render_outputs)
        if capability not in {f.name for f in fields(Capabilities)}:
            raise ValueError(f"unknown capability {capability!r}")
        return bool(getattr(cls.capabilities, capability))

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

    def combine_outputs(self, outputs: list[dict[str, Any]], ranks: Collective | None) -> dict[str, Any]:
        """Data-parallel methods (``data_parallel``): the :meth:`train_step` outputs of this process's views of a
        step (after their backward passes; the trainer has already summed the parameter gradients over every rank)
        as the one ``outputs`` dict :meth:`after_optimizer_step` receives. Whatever statistics drive decisions
        (densification's 2D-gradient statistics) must be gathered here from every rank through ``ranks`` (None
        in a single process), so that every rank takes the same decisions and keeps identical parameters.
        Called only when a step has more than one view in all."""
        raise NotImplementedError(f"method {self.name!r} trains on one view per step")

    def setup_notes(self) -> list[str]:
        """Lines ``recon train`` prints after :meth:`setup`: choices the method made from the data (e.g. where it
        found the ground). Default: none."""
        return []

    def log_scalars(self) -> dict[str, float]:
        """Extra values for the progress bar and TensorBoard (e.g. the number of Gaussians)."""
        return {}

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def render(self, camera: Cameras, time: float | None = None, outputs: Sequence[str] = ("rgb",), **options) -> dict[str, Tensor]:
        """Render one camera. Returns the requested outputs, each [H, W, C] (rgb [H, W, 3] in [0, 1])."""
        raise NotImplementedError

    # ---------------------------------------------------------------- capabilities (declared in ``capabilities``)
    def gaussians(self, time: float | None = None) -> dict[str, Tensor]:
        """The 3D Gaussians at ``time`` (None: static, or the canonical frame), detached, in the normalised frame,
        pre-activation with gsplat's names: ``means`` [N, 3], ``scales`` [N, 3] (log), ``quats`` [N, 4] (wxyz,
        unnormalised), ``opacities`` [N] (logit), ``sh0`` [N, 1, 3], ``shN`` [N, K, 3]; optionally ``normals`` [N, 3]
        and other per-Gaussian entries [N] / [N, C] (materials), which the PLY export writes as extra properties.
        Capability ``gaussians``."""
        raise NotImplementedError(f"method {self.name!r} has no Gaussians")

    def mesh(self, time: float | None = None) -> "trimesh.Trimesh":
        """A triangle mesh of the surface at ``time`` in the normalised frame (vertex colours optional).
        Capability ``mesh``."""
        raise NotImplementedError(f"method {self.name!r} has no mesh")

    def materials(self) -> MaterialFn:
        """PBR materials as a query at points: ``fn(points [P, 3] float32, normalised frame, on the method's
        device) -> {"base_color": [P, 3] linear in [0, 1], "roughness": [P, 1], "metallic": [P, 1], "normal":
        [P, 3] unit, world space (optional)}``. Methods with per-point (Gaussian) or per-texel (textured mesh)
        materials answer with what they store at or nearest to each point. Capability ``materials``."""
        raise NotImplementedError(f"method {self.name!r} has no materials")

    @torch.no_grad()
    def relight(self, camera: Cameras, envmap: Tensor, to_env: Tensor | None = None, time: float | None = None, outputs: Sequence[str] = ("rgb",), background: Tensor | None = None,
                albedo_scale: Tensor | None = None) -> dict[str, Tensor]:  # fmt: skip
        """Render ``camera`` lit by ``envmap`` [He, We, 3] (linear radiance, lat-long as in
        :mod:`recon.render.envmap`; ``to_env`` [3, 3] rotates normalised-frame directions into the map's frame).
        ``albedo_scale`` [3] multiplies the base colour (the per-channel factor of ``recon eval --materials``, which
        settles the light / albedo ambiguity before relighting under a known map). Returns outputs as
        :meth:`render` does (``rgb`` [H, W, 3] sRGB in [0, 1]). Capability ``relight``."""
        raise NotImplementedError(f"method {self.name!r} cannot relight")

    def primitives(self) -> dict:
        """The scene as separate parts in the normalised frame: ``{"blocks": [{"index", "exponents" [2], "scale" [3]
        (semi-axes), "rotation" [3, 3] (local -> world), "translation" [3], "opacity", "volume", "mesh" (a textured,
        watertight ``trimesh.Trimesh``)}], "ground": {"point" [3], "normal" [3], "mesh"} or None, "up" [3]}`` (numpy
        arrays). The local frame is y-up as in :mod:`recon.geometry.superquadric`. Capability ``primitives``."""
        raise NotImplementedError(f"method {self.name!r} has no primitives")

    def viewer_options(self) -> list[dict]:
        """Controls for the method's own panel in the viewer, each passed back to :meth:`render` as a keyword
        (specs as documented in ``recon.viewer.options``: plain dicts, so that methods need not import the
        viewer). Default: none."""
        return []

    # ---------------------------------------------------------------- state
    def extra_state(self) -> dict:
        """Non-parameter state to checkpoint (tensors and plain values only)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def resize_for_state_dict(self, state_dict: dict[str, Tensor]) -> None:
        """Reshape parameters to match a checkpoint (methods whose parameter count changes, e.g. densification)."""
