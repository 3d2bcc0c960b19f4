"""The import layers of src/tomoformer: a lower layer never imports a higher one.

Every `import` and `from ... import` in every module is read with `ast` (top-level and inside functions, so a
lazy import cannot hide an upward arrow) and resolved to the tomoformer subpackage it names. The layers, lowest
first, are the ones the README's development section draws; modules in the same layer may import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tomoformer

PACKAGE_ROOT = Path(tomoformer.__file__).parent

# Lowest first. `perf` measures models and data paths end to end, so it sits with the other pipelines above tasks.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"errors", "io", "locks", "outputs", "safe_yaml", "validation"}),
    frozenset({"sim"}),
    frozenset({"data", "geometry"}),
    frozenset({"models", "evaluation"}),
    frozenset({"checkpoint", "export", "pretrained"}),
    frozenset({"tasks"}),
    frozenset({"classify", "experts", "perf"}),
    frozenset({"cli"}),
)
# The package's own __init__ (it re-exports the errors and the version) and the `python -m tomoformer` entry.
EXEMPT = frozenset({"__init__", "__main__"})
LAYER_OF = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    """Dotted module name of a file under src/tomoformer, e.g. 'tomoformer.data.stream' (a package drops __init__)."""
    parts = ["tomoformer", *path.relative_to(PACKAGE_ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(module: str, is_package: bool, source: str) -> list[tuple[str, int]]:
    """Every dotted name `source` (the text of `module`) imports, relative imports resolved, with line numbers."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                imported = ".".join(base + ([node.module] if node.module else []))
            else:
                imported = node.module or ""
            if imported == "tomoformer":  # `from tomoformer import data`: the subpackage is in the alias
                found += [(f"{imported}.{alias.name}", node.lineno) for alias in node.names]
            else:
                found.append((imported, node.lineno))
    return found


def top_package(dotted: str) -> str:
    """The tomoformer subpackage or top-level module a dotted name lies in ('__init__' for the package itself)."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def upward_imports(modules: dict[str, tuple[bool, str]]) -> list[str]:
    """One line per import from a lower layer to a higher one: 'module:line: imports name (a is below b)'.

    `modules` maps a dotted module name to (is_package, source text).
    """
    problems = set()
    for module, (is_package, source) in modules.items():
        own = top_package(module)
        if own in EXEMPT:
            continue
        for name, line in imported_names(module, is_package, source):
            if not name.startswith("tomoformer."):
                continue
            target = top_package(name)
            if target in LAYER_OF and LAYER_OF[target] > LAYER_OF[own]:
                problems.add(f"{module}:{line}: imports {name} ({own} is below {target})")
    return sorted(problems)


def _sources() -> dict[str, tuple[bool, str]]:
    return {
        module_name(path): (path.name == "__init__.py", path.read_text(encoding="utf-8"))
        for path in sorted(PACKAGE_ROOT.rglob("*.py"))
    }


def test_every_module_has_a_layer() -> None:
    unknown = sorted({top_package(module) for module in _sources()} - set(LAYER_OF) - EXEMPT)
    assert not unknown, f"give these tomoformer modules a layer in tests/test_layers.py: {unknown}"


def test_no_lower_layer_imports_a_higher_one() -> None:
    problems = upward_imports(_sources())
    assert not problems, "upward imports:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import tomoformer.cli.train_cmd\n", ["tomoformer.cli.train_cmd"]),
        ("def f():\n    from tomoformer.tasks import train\n", ["tomoformer.tasks"]),
        ("from ..tasks.mapping import Task\n", ["tomoformer.tasks.mapping"]),
        ("from . import stream\n", ["tomoformer.data"]),
        ("from .. import cli, errors\n", ["tomoformer.cli", "tomoformer.errors"]),
        ("from tomoformer import __version__\n", ["tomoformer.__version__"]),
    ],
)
def test_imports_are_found_at_any_depth_and_resolved(source: str, expected: list[str]) -> None:
    # the walker must see lazy (function-level) and relative imports, or an upward arrow could hide in them
    assert [name for name, _ in imported_names("tomoformer.data.probe", False, source)] == expected


def test_an_upward_import_is_reported_with_module_line_and_name() -> None:
    lazy = "import numpy\n\n\ndef load():\n    from tomoformer.data.format import open_dataset\n"
    same_or_lower = "from tomoformer.errors import DataError\nfrom tomoformer.sim import config\n"
    assert upward_imports({"tomoformer.sim.probe": (False, lazy), "tomoformer.sim.ok": (False, same_or_lower)}) == [
        "tomoformer.sim.probe:5: imports tomoformer.data.format (sim is below data)",
    ]
    # the exempt package __init__ may import anything; a relative import inside a package resolves from it
    assert upward_imports({"tomoformer": (True, "from tomoformer.cli import main\n")}) == []
    assert upward_imports({"tomoformer.models": (True, "from .. import errors, tasks\n")}) == [
        "tomoformer.models:1: imports tomoformer.tasks (models is below tasks)",
    ]
