"""Method-specific viewer controls, declared by the method and passed back to its ``render`` as keywords.

A method that wants controls in the viewer (an environment map to relight with, its rotation, a simulation frame
...) overrides ``Method.viewer_options()`` (default: none) to return a list of specs. Specs are plain dicts (so that methods need not import
the viewer) or :class:`ViewerOption` objects::

    def viewer_options(self):
        return [
            {"name": "envmap", "kind": "dropdown", "choices": ["studio", "sunset"], "default": "studio"},
            {"name": "env_rotation", "kind": "slider", "min": 0.0, "max": 360.0, "step": 1.0, "default": 0.0,
             "label": "rotation (deg)"},
        ]

The viewer builds one control per spec and calls ``method.render(camera, ..., envmap="studio",
env_rotation=0.0)``. Values are passed as the control reports them: ``str`` for dropdowns and text, ``float`` /
``int`` for sliders and numbers, ``bool`` for checkboxes, and an ``(r, g, b)`` tuple of floats in [0, 1] for
colours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

OptionKind = Literal["dropdown", "slider", "checkbox", "number", "rgb", "text"]
KINDS = ("dropdown", "slider", "checkbox", "number", "rgb", "text")


@dataclass(frozen=True)
class ViewerOption:
    """One control a method adds to the viewer's render panel.

    Attributes:
        name: the keyword passed to ``method.render``.
        kind: dropdown | slider | checkbox | number | rgb | text.
        default: initial value.
        label: text shown next to the control (default: ``name``).
        choices: the values of a dropdown.
        min, max, step: range of a slider or number.
        hint: tooltip.
    """

    name: str
    kind: OptionKind
    default: Any = None
    label: str | None = None
    choices: tuple = field(default_factory=tuple)
    min: float | None = None
    max: float | None = None
    step: float | None = None
    hint: str | None = None

    def __post_init__(self):
        # A bad spec is a bug in the method, not a user error: fail loudly with the method's spec in the message.
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"viewer option needs a name: {self!r}")
        if self.kind not in KINDS:
            raise ValueError(f"viewer option {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "dropdown":
            if not self.choices:
                raise ValueError(f"viewer option {self.name!r}: a dropdown needs choices")
            object.__setattr__(self, "choices", tuple(str(c) for c in self.choices))
            if self.default is None:
                object.__setattr__(self, "default", self.choices[0])
        if self.kind == "slider" and (self.min is None or self.max is None):
            raise ValueError(f"viewer option {self.name!r}: a slider needs min and max")

    @property
    def title(self) -> str:
        return self.label or self.name.replace("_", " ")


def parse_options(specs) -> list[ViewerOption]:
    """Normalise a method's ``viewer_options()`` result (dicts or :class:`ViewerOption`) to ViewerOption."""
    out: list[ViewerOption] = []
    for spec in specs or ():
        if isinstance(spec, ViewerOption):
            out.append(spec)
        elif isinstance(spec, dict):
            out.append(ViewerOption(**spec))
        else:
            raise TypeError(f"viewer option spec must be a dict or ViewerOption, got {type(spec).__name__}")
    names = [o.name for o in out]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate viewer option names: {names}")
    return out


def method_options(method) -> list[ViewerOption]:
    """The viewer options a method declares in ``viewer_options()``, validated."""
    return parse_options(method.viewer_options())


def to_render_value(option: ViewerOption, value: Any) -> Any:
    """A control's value in the form documented for ``method.render`` keywords."""
    if option.kind == "rgb":
        return tuple(float(c) / 255.0 for c in value)
    if option.kind == "checkbox":
        return bool(value)
    return value
