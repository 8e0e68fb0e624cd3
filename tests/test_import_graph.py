"""The module import graph of the ``flatkit`` package has no cycle.

The graph is built statically with ``ast``: one node per module of ``flatkit/`` (a package is its
``__init__``), one edge per module-level import of another flatkit module. Module level means every statement
that runs (or, for ``if TYPE_CHECKING:``, that a type checker follows) when the module is imported: the body,
``if`` / ``try`` / ``with`` blocks and class bodies, but not function bodies; an import inside a function is the
sanctioned way to defer a heavy or optional dependency and is not an edge.

Resolution: relative imports are made absolute; ``import flatkit.a.b`` and ``from flatkit.a import b`` with
``b`` a submodule give an edge to ``flatkit.a.b``; ``from flatkit.a import name`` with ``name`` not a submodule
gives an edge to ``flatkit.a``. Only the named module is an edge target, not the parent packages Python also
initialises on the way: counting those would make every package ``__init__`` that re-exports its submodules
(``flatkit/diffusion/__init__.py``) a cycle with each submodule, which is no structural problem. No other
edge is excluded.

``if TYPE_CHECKING:`` imports count: they are how the package's modules name each other's types, and a cycle
through them is the same knot in the design even though Python does not execute it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "flatkit"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package."""
    modules: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _child_blocks(node: ast.stmt) -> list[list[ast.stmt]]:
    """The statement lists nested in ``node`` that run when it runs (none for a function definition)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return []
    blocks = [getattr(node, f) for f in ("body", "orelse", "finalbody") if isinstance(getattr(node, f, None), list)]
    blocks += [h.body for h in getattr(node, "handlers", [])]  # try / except
    blocks += [c.body for c in getattr(node, "cases", [])]  # match / case
    return blocks


def _module_level_imports(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """Import statements run at import time: recurse into blocks and class bodies, not into functions."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for block in _child_blocks(node):
            found.extend(_module_level_imports(block))
    return found


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names (before looking at the imported names)."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_edges(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The flatkit modules that ``module`` imports at module level."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in _module_level_imports(tree.body):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        source = _resolve_from(module, is_package, node)
        for alias in node.names:
            sub = f"{source}.{alias.name}"
            targets.add(sub if sub in modules else source)
    return {t for t in targets if t in modules and t != module}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = module_files(root)
    return {name: import_edges(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a closed path a -> ... -> a) per strongly connected component with a cycle (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(graph, comp) for comp in components]


def _cycle_in(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest closed path through the component's first module (breadth-first within the component)."""
    members = set(component)
    start = component[0]
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    return component  # unreachable for a strongly connected component


def test_graph_sees_the_package() -> None:
    graph = import_graph()
    assert "flatkit" in graph and "flatkit.diffusion.gaussian" in graph
    # a known module-level edge, so an empty graph cannot pass for an acyclic one
    assert "flatkit.errors" in graph["flatkit.diffusion.gaussian"]


def test_resolution_of_relative_and_submodule_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "flatkit"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from flatkit.sub import b\nfrom .sub import thing\n")
    (pkg / "sub" / "__init__.py").write_text("from . import b\n")
    (pkg / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import x\n"
        "def f():\n    import flatkit.c\n"
    )
    (pkg / "c.py").write_text("import flatkit.sub.b\n")
    graph = import_graph(pkg)
    assert graph["flatkit.a"] == {"flatkit.sub.b", "flatkit.sub"}
    assert graph["flatkit.sub"] == {"flatkit.sub.b"}
    assert graph["flatkit.sub.b"] == {"flatkit.a"}  # TYPE_CHECKING counts, the import inside f does not
    assert graph["flatkit.c"] == {"flatkit.sub.b"}
    assert find_cycles(graph) == [["flatkit.a", "flatkit.sub.b", "flatkit.a"]]


def test_no_import_cycle() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "module-level import cycle(s) in flatkit:\n" + "\n".join(
        " -> ".join(c) for c in cycles
    )


if __name__ == "__main__":
    for cycle in find_cycles(import_graph()):
        print(" -> ".join(cycle))
