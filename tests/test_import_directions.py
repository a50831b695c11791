"""The library's import directions, read from the source with ``ast`` (nothing is imported).

Every ``import`` counts, at module level or inside a function, except those under
``if TYPE_CHECKING:`` (annotations only). Importing a submodule imports its parent packages
anyway, so an edge to a module's own parent package is not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

#: The package folders below install as ``coreset_meg.<folder>``; ``coreset_meg/`` as itself.
NAMESPACE = "coreset_meg"
ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("anomaly", "common", "coreset", "datasets", "features", "gan")
HARNESS = "coreset_meg.anomaly.benchmarks"
#: Library modules that may call the benchmark harness: the command line's `benchmark` command.
MAY_CALL_THE_HARNESS = {"coreset_meg.anomaly.cli"}
#: Circles not broken yet, each with its reason; the test fails when one is gone, so that this
#: list only shrinks (it is empty: keep it so).
KNOWN_CIRCLES: set[frozenset[str]] = set()


def _modules() -> dict[str, tuple[Path, bool]]:
    """``{installed dotted name: (file, is a package)}`` of every module of the library."""
    out = {}
    for package in (NAMESPACE, *PACKAGES):
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            if parts[0] != NAMESPACE:
                parts.insert(0, NAMESPACE)
            out[".".join(parts)] = (path, is_package)
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(name: str, modules: dict[str, tuple[Path, bool]]) -> set[str]:
    """The library modules that module ``name`` imports."""
    path, is_package = modules[name]
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit_node(other)
            else:
                visit_node(child)

    def visit_node(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        visit(node)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    out = set()
    for module in found:
        while module and module not in modules:  # a name inside a module: the module
            module = module.rpartition(".")[0]
        if module and module != name and not name.startswith(module + "."):
            out.add(module)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imported(name, modules) for name in modules}


def _circles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: set[frozenset[str]] = set()

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                out.add(frozenset(group))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_the_graph_sees_the_imports_it_should():
    graph = _graph()
    # module level, relative
    assert "coreset_meg.anomaly._meg" in graph["coreset_meg.anomaly._pyod"]
    # inside a function
    assert "coreset_meg.features.builtin" in graph["coreset_meg.anomaly.friendly"]
    # only under TYPE_CHECKING there
    assert "coreset_meg.gan.trainer" not in graph["coreset_meg.gan.tickets"]
    assert "coreset_meg.anomaly.benchmarks.protocols" in graph["coreset_meg.anomaly.benchmarks"]


def test_nothing_in_the_library_imports_the_benchmark_harness():
    graph = _graph()
    callers = {
        name: sorted(m for m in deps if m == HARNESS or m.startswith(HARNESS + "."))
        for name, deps in graph.items()
        if not (name == HARNESS or name.startswith(HARNESS + "."))
    }
    callers = {name: deps for name, deps in callers.items() if deps}
    assert set(callers) <= MAY_CALL_THE_HARNESS, callers


def test_no_import_circles():
    circles = _circles(_graph())
    assert circles - KNOWN_CIRCLES == set(), sorted(map(sorted, circles - KNOWN_CIRCLES))
    assert KNOWN_CIRCLES - circles == set(), "a known circle is gone: remove it from the list"


#: What each layer may import besides itself and ``common`` (the detector, at the top, anything).
ALLOWED = {
    "coreset_meg.features": {"coreset_meg.datasets"},
    "coreset_meg.coreset": {"coreset_meg.features"},
    "coreset_meg.datasets": set(),
}


def test_the_lower_layers_import_only_what_is_below_them():
    graph = _graph()
    wrong = {}
    for layer, allowed in ALLOWED.items():
        ok = [f"{p}." for p in (layer, "coreset_meg.common", *allowed)]
        for name, deps in graph.items():
            deps = {f"{d}." for d in deps}
            if name == layer or name.startswith(layer + "."):
                bad = sorted(d for d in deps if not any(d.startswith(p) for p in ok))
                if bad:
                    wrong[name] = bad
    assert wrong == {}, wrong
