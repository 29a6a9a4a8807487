"""Layers import downward only: the engine knows nothing of the embedded world, and no module
imports itself back through another (a cycle makes import order matter)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "noise2art"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Modules of the package that `path` imports, at the top or inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("noise2art"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("noise2art"))
    modules = {module_name(p) for p in SRC.rglob("*.py")}
    return {m for m in found if m in modules}


def test_engine_imports_nothing_from_the_world():
    offenders = {module_name(p): sorted(m for m in imports(p) if m.startswith("noise2art.world"))
                 for p in (SRC / "engine").rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_import_cycles():
    # Imports inside functions count too: a deferred import back into a caller is still a cycle.
    graph = {module_name(p): imports(p) - {module_name(p)} for p in SRC.rglob("*.py")}
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


# Each layer and the packages it must never import (everything above it).
ABOVE = {
    "engine": ("noise2art.world", "noise2art.methods", "noise2art.service", "noise2art.store", "noise2art.cli"),
    "methods": ("noise2art.service", "noise2art.store", "noise2art.cli"),
    "store": ("noise2art.engine", "noise2art.methods", "noise2art.world", "noise2art.service", "noise2art.cli"),
    "service": ("noise2art.indexing", "noise2art.cluster", "noise2art.cli"),
    "indexing": ("noise2art.cluster", "noise2art.cli"),
    "cluster": ("noise2art.cli",),
}


@pytest.mark.parametrize("layer", sorted(ABOVE))
def test_layers_import_downward_only(layer):
    offenders = {module_name(p): sorted(m for m in imports(p) if m.startswith(ABOVE[layer]))
                 for p in (SRC / layer).rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}
