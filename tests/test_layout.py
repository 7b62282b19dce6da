"""The architecture of the packages, read from their imports with ``ast`` (no third-party tool).

The rules of the house (README, "Layout"): no import circle anywhere in ``benchmarks`` or
``flows``; ``flows`` imports no ``benchmarks``; ``benchmarks.core`` and
``benchmarks.reporting`` know no task family; a task imports ``core``, ``reporting`` and its
own folder (plus :mod:`benchmarks.tasks.base`), never another task; the tables and the
measurements never import the run; no folder of ``benchmarks`` holds more than 12 modules.
Every import counts: at module level, inside a function and under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("benchmarks", "flows")
MAX_MODULES_PER_FOLDER = 12


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {
        module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    }


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement: at module level, inside functions and under TYPE_CHECKING."""
    return [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports (``from a import b`` counts ``a.b`` when it is a
    module, else ``a``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            candidates = [f"{base}.{alias.name}" for alias in node.names] + [base]
            candidates = [c for c in candidates[:-1] if c in modules] or [base]
        targets.update(c for c in candidates if c in modules and c != name)
    return targets


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def family_of(module: str) -> str | None:
    """``classification`` for ``benchmarks.tasks.classification.task``; None outside a family."""
    parts = module.split(".")
    if parts[:2] == ["benchmarks", "tasks"] and len(parts) > 2 and parts[2] != "base":
        return parts[2]
    return None


def test_the_walker_sees_cycles_and_every_import() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    tree = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x\n"
        "def f():\n    import y\n"
    )
    names = [alias.name for node in _import_nodes(tree) for alias in node.names]
    assert sorted(names) == ["TYPE_CHECKING", "x", "y"]


def test_no_import_circle() -> None:
    assert cycles(import_graph()) == []


def test_flows_imports_no_benchmarks() -> None:
    graph = import_graph()
    wrong = {
        (module, target)
        for module, targets in graph.items()
        if within(module, "flows")
        for target in targets
        if within(target, "benchmarks")
    }
    assert wrong == set()


@pytest.mark.parametrize("layer", ["benchmarks.core", "benchmarks.reporting"])
def test_core_and_reporting_know_no_task(layer: str) -> None:
    allowed = ("benchmarks.core", "benchmarks.config", "benchmarks.errors", layer, "flows")
    graph = import_graph()
    wrong = {
        (module, target)
        for module, targets in graph.items()
        if within(module, layer)
        for target in targets
        if not any(within(target, package) for package in allowed)
    }
    assert wrong == set()


def test_a_task_imports_no_other_task_nor_the_runner() -> None:
    shared = (
        "benchmarks.core",
        "benchmarks.reporting",
        "benchmarks.config",
        "benchmarks.errors",
        "benchmarks.tasks.base",
        "flows",
    )
    graph = import_graph()
    wrong = set()
    for module, targets in graph.items():
        family = family_of(module)
        if family is None:
            continue
        for target in targets:
            own = family_of(target) == family
            if not own and not any(within(target, package) for package in shared):
                wrong.add((module, target))
    assert wrong == set()


def test_tables_and_measurements_import_no_run_code() -> None:
    graph = import_graph()
    readers = [m for m in graph if m == "benchmarks.tables" or within(m, "benchmarks.measure")]
    assert readers
    wrong = {
        (module, target)
        for module in readers
        for target in graph[module]
        if target in ("benchmarks.run", "benchmarks.cli")
    }
    assert wrong == set()


def test_every_family_folder_is_registered() -> None:
    from benchmarks.tasks import TASKS

    folders = {
        path.name
        for path in (ROOT / "benchmarks" / "tasks").iterdir()
        if (path / "task.py").is_file()
    }
    registered = {type(task).__module__.split(".")[2] for task in TASKS.values()}
    assert registered == folders


def test_no_folder_of_benchmarks_holds_more_than_twelve_modules() -> None:
    folders: dict[Path, int] = {}
    for path in all_modules().values():
        if path.name != "__init__.py" and path.is_relative_to(ROOT / "benchmarks"):
            folders[path.parent] = folders.get(path.parent, 0) + 1
    crowded = {
        str(f.relative_to(ROOT)): n for f, n in folders.items() if n > MAX_MODULES_PER_FOLDER
    }
    assert crowded == {}
