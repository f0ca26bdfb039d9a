"""The shape of the imports, read from the source with `ast` (function-level imports count too):
no package imports another package's private module, and no import cycle between packages or
between modules. Dependencies point one way:
core -> storage -> data -> model -> trial_files -> search -> fleet -> bundle -> cli.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# the repository folders that install as histosweep.<name> (pyproject's package-dir)
FOLDERS = ("storage", "data", "model", "trial_files", "search", "fleet", "bundle")
# core: the import root's own modules everyone may use; cli: the commands, the demo, __main__
ORDER = ("core", "storage", "data", "model", "trial_files", "search", "fleet", "bundle", "cli")
CORE = {"histosweep", "histosweep.constants", "histosweep.exceptions"}
ALLOWED_MODULE_CYCLES: list[set[str]] = []  # none: model's two old cycles are gone (InputSpec)


def _modules() -> dict[str, Path]:
    """Dotted module name -> source file, for every module we install."""
    found: dict[str, Path] = {}
    for path in sorted((ROOT / "histosweep").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        found[".".join(rel.parts).removesuffix(".__init__")] = path
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            name = ".".join(("histosweep", folder, *rel.parts)).removesuffix(".__init__")
            found[name] = path
    return found


MODULES = _modules()


def package_of(module: str) -> str:
    parts = module.split(".")
    if module in CORE:
        return "core"
    if len(parts) > 1 and parts[1] in FOLDERS:
        return parts[1]
    return "cli"


def _imports(path: Path) -> list[tuple[str, int]]:
    """(imported histosweep module, line) of every import in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("histosweep")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.startswith("histosweep"):
            # `from histosweep.x import _y` may name a module: that module, not x's __init__
            submodules = [f"{node.module}.{a.name}" for a in node.names
                          if f"{node.module}.{a.name}" in MODULES]
            found += [(m, node.lineno) for m in submodules]
            if len(submodules) < len(node.names):
                found.append((node.module, node.lineno))
    return found


def _graph() -> dict[str, set[str]]:
    return {m: {t for t, _ in _imports(p) if t in MODULES and t != m} for m, p in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_the_walk_sees_every_package():
    assert {package_of(m) for m in MODULES} == set(ORDER)
    assert "histosweep.fleet._supervisor" in MODULES and "histosweep.cli._worker" in MODULES


def test_no_package_imports_another_packages_private_module():
    wrong = []
    for module, path in MODULES.items():
        for target, line in _imports(path):
            private = any(part.startswith("_") for part in target.split(".")[1:])
            if private and target != "histosweep.__main__" \
                    and package_of(target) != package_of(module):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert wrong == [], "import the package's public face instead:\n" + "\n".join(wrong)


def test_no_import_cycle_between_packages():
    graph: dict[str, set[str]] = {p: set() for p in ORDER}
    for module, targets in _graph().items():
        graph[package_of(module)] |= {package_of(t) for t in targets} - {package_of(module)}
    assert _cycles(graph) == []


def test_packages_depend_one_way_in_the_documented_order():
    upward = []
    for module, path in MODULES.items():
        for target, line in _imports(path):
            if target in MODULES and ORDER.index(package_of(target)) > ORDER.index(package_of(module)):
                upward.append(f"{path.relative_to(ROOT)}:{line} ({package_of(module)}) imports "
                              f"{target} ({package_of(target)})")
    assert upward == [], "\n".join(upward)


def test_no_import_cycle_between_modules():
    cycles = [c for c in _cycles(_graph()) if c not in ALLOWED_MODULE_CYCLES]
    assert cycles == [], [sorted(c) for c in cycles]


def test_the_walk_finds_a_cycle_and_a_private_import():
    """The checks themselves can fail: a two-module cycle is found, a private path is private."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [{"a", "b"}]
    assert package_of("histosweep.search._study") == "search"
    assert package_of("histosweep._demo") == "cli" and package_of("histosweep.exceptions") == "core"
