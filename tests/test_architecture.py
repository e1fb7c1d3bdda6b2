"""The house's rules, read from the source: floors, import direction, sizes.

The floors, lowest first. A module may import from its own floor and the floors
below it, never from a higher one; ``pspnet/__init__.py``, the package's public
face, is exempt (it names the public things of every floor, lazily).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "pspnet"
FLOORS = ("ground", "data", "models", "inference", "training", "bench", "cli")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60  # a function's body: its lines after the docstring


def floor_of(module: str) -> str:
    """``pspnet.models.layers`` -> "models"; a top-level module such as ``pspnet.fileio`` -> "ground"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in FLOORS) else "ground"


def module_name(path: Path) -> str:
    relative = path.relative_to(REPO).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def imported_modules(source: str) -> list[tuple[int, str]]:
    """Every pspnet module that ``source`` imports (at any depth: lazy imports count), with its line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("pspnet")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("pspnet"):
            if node.module == "pspnet":  # from pspnet import models -> the subpackage itself
                found += [(node.lineno, f"pspnet.{alias.name}") for alias in node.names if alias.name in FLOORS]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level:
            found.append((node.lineno, f"relative import at level {node.level}"))
    return found


def sources() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if path != PACKAGE / "__init__.py")


def upward_imports(module: str, source: str) -> list[str]:
    """The imports of ``module`` (its ``source``) from a higher floor, or that are relative."""
    own = FLOORS.index(floor_of(module))
    wrong = []
    for line, target in imported_modules(source):
        if target.startswith("relative"):
            wrong.append(f"{module}:{line} {target}: spell the floor out")
        elif FLOORS.index(floor_of(target)) > own:
            wrong.append(f"{module}:{line} ({floor_of(module)}) imports {target} ({floor_of(target)})")
    return wrong


def test_every_module_lies_on_a_floor():
    folders = {path.parent.name for path in sources() if path.parent != PACKAGE}
    assert folders <= set(FLOORS), folders - set(FLOORS)


def test_no_module_imports_from_a_higher_floor():
    wrong = [line for path in sources() for line in upward_imports(module_name(path), path.read_text())]
    assert wrong == []


def test_the_check_catches_an_upward_or_relative_import():
    lazy = "def f():\n    from pspnet.training.config import TrainConfig\n"  # inside a function still counts
    assert upward_imports("pspnet.data.files", lazy) == [
        "pspnet.data.files:2 (data) imports pspnet.training.config (training)"
    ]
    assert upward_imports("pspnet.fileio", "from pspnet import models\n") == [
        "pspnet.fileio:1 (ground) imports pspnet.models (models)"
    ]
    assert upward_imports("pspnet.models.layers", "from . import presets\n") == [
        "pspnet.models.layers:1 relative import at level 1: spell the floor out"
    ]
    assert upward_imports("pspnet.cli.train", lazy + "import pspnet.fileio\n") == []  # the top may import anything


@pytest.mark.parametrize(
    "module, floor",
    [
        ("pspnet.fileio", "ground"),
        ("pspnet.data", "data"),
        ("pspnet.data.files", "data"),
        ("pspnet.cli.train", "cli"),
        ("pspnet.models", "models"),
    ],
)
def test_floor_of(module, floor):
    assert floor_of(module) == floor


def test_no_module_is_over_500_lines():
    long = {
        str(path.relative_to(REPO)): n
        for path in sources()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def body_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function's body after its docstring (nested functions included)."""
    body = function.body
    if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return function.end_lineno - body[0].lineno + 1


def test_body_lines_leave_out_the_docstring_only():
    function = ast.parse('def f():\n    """Doc."""\n    a = 1\n    return a\n').body[0]
    assert body_lines(function) == 2
    assert body_lines(ast.parse("def g():\n    return 1\n").body[0]) == 1


def test_no_function_is_over_60_lines():
    long = []
    for path in [*sources(), PACKAGE / "__init__.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and body_lines(node) > MAX_FUNCTION_LINES:
                long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({body_lines(node)} lines)")
    assert long == []
