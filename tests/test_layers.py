"""The import layers of src/tomoformer: a lower layer never imports a higher one, no two files import each other
(directly or round a longer loop), and no module reaches into another package's private names.

Every `import` and `from ... import` in every module is read with `ast` (top-level and inside functions, so a
lazy import cannot hide an upward arrow or a circle) and resolved to the tomoformer subpackage it names. The layers,
lowest first, are the ones the README's "How it is built" section draws; modules in the same layer may import each
other, but not round a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tomoformer

PACKAGE_ROOT = Path(tomoformer.__file__).parent

# Lowest first. `perf` measures models and data paths end to end, so it sits with the other pipelines above tasks.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"errors", "io", "locks", "safe_yaml", "validation"}),
    frozenset({"outputs"}),
    frozenset({"sim"}),
    frozenset({"data"}),
    frozenset({"geometry"}),
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


# The one file-level circle allowed: the model registry imports the built-in model modules lazily (so that
# `build_model` knows them by name), and each of them registers itself through the registry. Those arrows, from the
# registry to the modules it registers, are left out; any other circle fails.
REGISTRY = "tomoformer.models.registry"


def module_edges(modules: dict[str, tuple[bool, str]]) -> dict[str, set[str]]:
    """module -> the tomoformer modules (files) it imports. `from a.b import c` names the module a.b.c when that is
    a file, else a.b; an import of a package from inside that same package (its own __init__) is not an edge, and
    neither are the registry's imports of the models it registers (the one allowed loop)."""
    edges: dict[str, set[str]] = {}
    for module, (is_package, source) in modules.items():
        targets: set[str] = set()
        package = module.split(".") if is_package else module.split(".")[:-1]
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(package[: len(package) - (node.level - 1)] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for name in names:
                while name and name not in modules:
                    name = name.rpartition(".")[0]
                if name.startswith("tomoformer.") and name != module and not module.startswith(name + "."):
                    targets.add(name)
        edges[module] = set() if module == REGISTRY else targets
    return edges


def import_circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of two or more files (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(groups)


def private_reaches(modules: dict[str, tuple[bool, str]]) -> list[str]:
    """One line per `from tomoformer.<pkg>... import _name` where <pkg> is not the importing module's own package."""
    problems = []
    for module, (_, source) in modules.items():
        own = top_package(module)
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.ImportFrom) or node.level or not (node.module or "").startswith("tomoformer"):
                continue
            target = top_package(node.module or "")
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__") and target != own:
                    problems.append(f"{module}:{node.lineno}: imports {node.module}.{alias.name} (private to {target})")
    return sorted(problems)


def test_no_file_level_import_circle() -> None:
    circles = import_circles(module_edges(_sources()))
    assert not circles, "files that import each other (round a loop):\n" + "\n".join(" <-> ".join(c) for c in circles)


def test_no_private_name_is_imported_across_packages() -> None:
    problems = private_reaches(_sources())
    assert not problems, "make these public or keep them in their package:\n" + "\n".join(problems)


def test_a_circle_and_a_private_reach_are_found() -> None:
    modules = {
        "tomoformer.sim.a": (False, "def f():\n    from tomoformer.sim.b import g\n"),  # lazy: still a circle
        "tomoformer.sim.b": (False, "from tomoformer.sim import a\n"),
        "tomoformer.sim.c": (False, "from tomoformer.sim.a import f\n"),
        "tomoformer.data.d": (False, "from tomoformer.sim.a import _hidden, f\nfrom tomoformer.data.e import _x\n"),
        "tomoformer.data.e": (False, "_x = 1\n"),
    }
    assert import_circles(module_edges(modules)) == [["tomoformer.sim.a", "tomoformer.sim.b"]]
    assert private_reaches(modules) == ["tomoformer.data.d:1: imports tomoformer.sim.a._hidden (private to sim)"]
    # the registry's own loop is the one allowed circle; the same loop through any other module is not
    registry = {
        "tomoformer.models.registry": (False, "def f():\n    from tomoformer.models import unet\n"),
        "tomoformer.models.unet": (False, "from tomoformer.models.registry import register_model\n"),
    }
    assert import_circles(module_edges(registry)) == []
    other = {
        "tomoformer.models.zoo": registry["tomoformer.models.registry"],
        "tomoformer.models.unet": (False, "from tomoformer.models.zoo import f\n"),
    }
    assert import_circles(module_edges(other)) == [["tomoformer.models.unet", "tomoformer.models.zoo"]]
