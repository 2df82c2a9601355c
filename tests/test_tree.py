"""The tests tree stays walkable: shared code lives in tests/helpers/, never in a test module."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def is_test_module(name: str) -> bool:
    parts = name.split(".")
    return parts[0] == "tests" and any(p.startswith("test_") or p == "conftest" for p in parts[1:])


def test_no_module_imports_a_test_module_or_conftest():
    offenders = {
        f"{path.relative_to(TESTS)} imports {name}"
        for path in TESTS.rglob("*.py")
        for name in imported_modules(path)
        if is_test_module(name)
    }
    assert offenders == set()


def test_the_checker_sees_both_import_forms(tmp_path):
    # The guard above must fail on either spelling of the imports it forbids.
    module = tmp_path / "test_x.py"
    module.write_text(
        "from tests.test_cli import run_cli\nimport tests.conftest\nfrom tests import test_squad\n"
    )
    assert {n for n in imported_modules(module) if is_test_module(n)} == {
        "tests.test_cli",
        "tests.test_cli.run_cli",
        "tests.conftest",
        "tests.test_squad",
    }
