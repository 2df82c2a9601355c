"""The package's layering, read from its imports with ast (issue #22): arrows point down only.

core imports nothing of lit_lora but lit_lora.errors; data and methods never import models; no import
cycle between top-level subpackages (imports inside functions count: a cycle broken only by a late
import is still a cycle), nor between modules as they load.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lit_lora"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path, at_load_only: bool = False) -> set[str]:
    """Every lit_lora module ``path`` imports (``from pkg import module``: the module); with
    ``at_load_only``, only the imports that run when the module loads (not those inside functions)."""
    found: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    nodes = list(ast.iter_child_nodes(ast.parse(path.read_text())))
    while nodes:
        node = nodes.pop()
        if not (at_load_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))):
            nodes.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "lit_lora")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] != "lit_lora":
                continue
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return found


IMPORTS = {name: imported_modules(path) for name, path in MODULES.items()}
IMPORTS_AT_LOAD = {name: imported_modules(path, at_load_only=True) for name, path in MODULES.items()}


def layer(module: str) -> str:
    """The top-level subpackage or module: lit_lora.models.lm.greedy -> models, lit_lora -> lit_lora."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def violations(source_layer: str, forbidden: set[str]) -> list[str]:
    return [
        f"{module} imports {target}"
        for module, targets in IMPORTS.items()
        if layer(module) == source_layer
        for target in sorted(targets)
        if layer(target) in forbidden
    ]


def test_the_package_has_the_layers_this_test_reads():
    layers = {layer(m) for m in MODULES}
    assert {"core", "runtime", "methods", "data", "models", "metrics", "callbacks"} <= layers
    assert {"merge", "matrix", "sweep", "report"} <= layers


def test_core_imports_nothing_of_lit_lora_but_errors():
    bad = [
        f"{module} imports {target}"
        for module, targets in IMPORTS.items()
        if layer(module) == "core"
        for target in sorted(targets)
        if layer(target) not in ("core", "errors")
    ]
    assert bad == []


@pytest.mark.parametrize("source", ["data", "methods"])
def test_data_and_methods_never_import_models(source):
    assert violations(source, {"models"}) == []


def test_methods_import_neither_data_nor_runtime():
    assert violations("methods", {"data", "runtime", "callbacks", "cli"}) == []


def test_no_cycle_between_top_level_subpackages():
    graph: dict[str, set[str]] = {}
    for module, targets in IMPORTS.items():
        graph.setdefault(layer(module), set()).update(layer(t) for t in targets if layer(t) != layer(module))
    assert find_cycle(graph) is None


def test_no_cycle_between_modules_when_they_load():
    # Imports inside functions are left out here (a cycle within one subpackage may be closed by one),
    # but count above between subpackages.
    assert find_cycle(IMPORTS_AT_LOAD) is None


def test_imports_are_read_inside_functions_too():
    late = {m: IMPORTS[m] - IMPORTS_AT_LOAD[m] for m in IMPORTS}
    assert "lit_lora.cli" in late["lit_lora.__main__"]


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
