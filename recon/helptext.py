"""CLI help from config dataclasses: each field's docstring, reflowed, handed to tyro through its public API.

tyro reads attribute docstrings itself, but it joins a docstring's wrapped lines only where the next line starts
with a letter, so every continuation line starting with a bracket, a quote or a digit became a hard break in
``--help``. Instead of changing how tyro formats text, :func:`parse` reads the docstrings here, reflows them
(:func:`reflow_docstring`), and gives tyro a twin of each config dataclass whose fields carry the text as
``tyro.conf.arg(help=...)`` (the route tyro documents for dataclasses built at run time). The parsed twin is turned
back into the original classes, so callers only ever see their own config types.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import re
import textwrap
from typing import Annotated, Any, get_type_hints


def reflow_docstring(text: str) -> str:
    """A docstring as help text: common indentation removed, each paragraph (blank-line separated) joined into one
    line for the terminal to wrap; lines starting with ``- `` or ``* `` stay list items."""
    paragraphs = re.split(r"\n\s*\n", inspect.cleandoc(text))
    out = []
    for paragraph in paragraphs:
        lines: list[str] = []
        for line in (raw.strip() for raw in paragraph.splitlines()):
            if lines and not line.startswith(("- ", "* ")):
                lines[-1] += " " + line
            else:
                lines.append(line)
        out.append("\n".join(lines))
    return "\n\n".join(out)


@functools.lru_cache(maxsize=None)
def _own_field_docs(cls: type) -> dict[str, str]:
    """Field name -> docstring of the fields ``cls`` itself declares (the string right after ``name: type``)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for node, after in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr) \
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):  # fmt: skip
            docs[node.target.id] = after.value.value
    return docs


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> reflowed docstring; a field redeclared without one keeps its base class's docstring."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_own_field_docs(klass))
    return {name: reflow_docstring(doc) for name, doc in docs.items()}


@functools.lru_cache(maxsize=None)
def _twin(cls: type) -> type:
    """A dataclass with ``cls``' fields, defaults and docstring whose field types carry their help text (nested
    config dataclasses become twins too)."""
    import tyro

    hints = get_type_hints(cls, include_extras=True)
    docs = field_docs(cls)
    fields = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        nested = dataclasses.is_dataclass(tp) and isinstance(tp, type)
        if nested:
            tp = _twin(tp)
        if f.name in docs:
            tp = Annotated[tp, tyro.conf.arg(help=docs[f.name])]
        if f.default is not dataclasses.MISSING:
            spec = dataclasses.field(default=f.default)
        elif f.default_factory is not dataclasses.MISSING:
            factory = f.default_factory
            spec = dataclasses.field(default_factory=(lambda fac=factory: _to_twin(fac())) if nested else factory)
        else:
            spec = dataclasses.field()
        fields.append((f.name, tp, spec))
    twin = dataclasses.make_dataclass(cls.__name__, fields)
    twin.__doc__ = cls.__doc__
    twin.__recon_original__ = cls
    return twin


def _to_twin(obj: Any) -> Any:
    if not (dataclasses.is_dataclass(obj) and not isinstance(obj, type)):
        return obj
    twin = _twin(type(obj))
    return twin(**{f.name: _to_twin(getattr(obj, f.name)) for f in dataclasses.fields(twin)})


def _from_twin(obj: Any) -> Any:
    original = getattr(type(obj), "__recon_original__", None)
    if original is None:
        return obj
    return original(**{f.name: _from_twin(getattr(obj, f.name)) for f in dataclasses.fields(obj)})


def parse(cls: type, argv: list[str], **tyro_kwargs) -> Any:
    """``tyro.cli(cls, args=argv, ...)`` with reflowed field docstrings as help; returns an instance of ``cls``."""
    import tyro

    return _from_twin(tyro.cli(_twin(cls), args=argv, **tyro_kwargs))
