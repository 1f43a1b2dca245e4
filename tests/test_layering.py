"""Imports point one way: shared layers < methods < engine, evaluator, exporters, viewer, CLI.

The imports are read from the source with ``ast`` (every ``import`` statement, also those inside functions), so a
lazy import that crosses a layer is caught as well as a top-level one. The folders map into the ``recon``
namespace as ``setup.py`` installs them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: folder -> the package it installs as (setup.py's MAPPED).
FOLDERS = {"recon": "recon", "cuda": "recon.kernels", "viewer": "recon.viewer", "datasets": "recon.demo"}

#: Packages that use methods only through the ``Method`` interface and the registry.
CONSUMERS = ("recon.engine", "recon.eval.evaluate", "recon.export", "recon.viewer", "recon.cli")
METHODS = "recon.methods"
#: What a consumer may import from ``recon.methods``: the registry and the interface, never a concrete method.
METHOD_INTERFACE = ("recon.methods", "recon.methods.base")


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _module_name(path: Path, folder: str) -> str:
    rel = path.relative_to(REPO / folder).with_suffix("")
    parts = [FOLDERS[folder], *rel.parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str, modules: set[str]) -> set[str]:
    """Absolute names of the ``recon`` modules that ``path`` imports (``from p import x`` counts as ``p.x`` when
    that is a module, else as ``p``)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
    return {m for m in found if _within(m, "recon")}


def _graph() -> dict[str, set[str]]:
    files = {_module_name(path, folder): path for folder in FOLDERS for path in sorted((REPO / folder).rglob("*.py"))}
    return {name: _imports(path, name, set(files)) for name, path in files.items()}


GRAPH = _graph()


def _layer(module: str) -> str:
    if any(_within(module, c) for c in CONSUMERS):
        return "consumer"
    if _within(module, METHODS):
        return "method"
    return "shared"


def _violations(rule) -> list[str]:
    return [f"{mod} imports {dep}" for mod, deps in sorted(GRAPH.items()) for dep in sorted(deps) if rule(mod, dep)]


def test_the_graph_sees_the_packages():
    # Guards the test itself: an empty or misread graph would pass every rule below.
    assert "recon.methods.gs.model" in GRAPH and "recon.viewer.app" in GRAPH and "recon.engine.trainer" in GRAPH
    assert {"recon.losses", "recon.gaussians"} <= GRAPH["recon.methods.gs.model"]


def test_methods_never_import_the_engine_or_anything_above_them():
    assert _violations(lambda mod, dep: _layer(mod) == "method" and _layer(dep) == "consumer") == []


def test_shared_layers_import_neither_methods_nor_what_sits_above_them():
    assert _violations(lambda mod, dep: _layer(mod) == "shared" and _layer(dep) != "shared") == []


def test_consumers_see_methods_only_through_the_interface():
    def crosses(mod, dep):
        return _layer(mod) == "consumer" and _within(dep, METHODS) and dep not in METHOD_INTERFACE

    assert _violations(crosses) == []


def test_a_method_folder_imports_no_other_method():
    def other_method(mod, dep):
        if _layer(mod) != "method" or not _within(dep, METHODS) or dep in METHOD_INTERFACE:
            return False
        return mod.split(".")[2] != dep.split(".")[2]

    assert _violations(other_method) == []


@pytest.mark.parametrize("module", ["recon.engine.losses", "recon.engine.schedules", "recon.export.images", "recon.splats"])
def test_moved_modules_left_no_shim_behind(module):
    assert module not in GRAPH
