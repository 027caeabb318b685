"""The project's modules import each other at their top only, and never in a cycle.

Pure AST: nothing is imported, no app is built. A module's graph edges are its top-level
imports of project modules; `from pkg import name` leads to pkg.name when that is a module, else
to pkg; importing a submodule runs its packages' __init__ first, so it leads to those too.
"""

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("webapp", "worker")  # where imports must sit at the top
ENTRY_POINTS = ("wsgi.py",)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    paths = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    paths += [ROOT / name for name in ENTRY_POINTS]
    return {_module_name(p): p for p in paths}


MODULES = _sources()
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) in {"TYPE_CHECKING", "typing.TYPE_CHECKING"}


def _nested_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports anywhere but the module's own body (`if TYPE_CHECKING:` blocks excepted)."""
    for statement in tree.body:
        if isinstance(statement, ast.Import | ast.ImportFrom) or _is_type_checking(statement):
            continue
        for node in ast.walk(statement):
            if isinstance(node, ast.Import | ast.ImportFrom):
                yield node


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")[: len(module.split(".")) - node.level + is_package]
    return ".".join([*base, node.module] if node.module else base)


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The project modules an import statement runs: what it names, and their packages."""
    if isinstance(node, ast.Import):
        named = {alias.name for alias in node.names}
    else:
        package = _absolute(module, node)
        named = {f"{package}.{a.name}" if f"{package}.{a.name}" in MODULES else package for a in node.names}
    targets = set()
    for name in named:
        parts = name.split(".")
        targets.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {t for t in targets if t in MODULES and t != module}


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, tree in TREES.items():
        for statement in tree.body:
            if isinstance(statement, ast.Import | ast.ImportFrom):
                graph[name] |= _targets(name, statement)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def a_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One cycle through the component's first module, by breadth-first search: a -> b -> a."""
    members, start = set(component), component[0]
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for successor in sorted(graph[node] & members):
                if successor == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if successor not in came_from:
                    came_from[successor] = node
                    following.append(successor)
        frontier = following
    raise AssertionError(f"{component} is not strongly connected")


def test_every_import_is_at_the_top_of_its_module():
    nested = [
        f"{MODULES[name].relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}"
        for name, tree in TREES.items()
        if name.split(".")[0] in PACKAGES
        for node in _nested_imports(tree)
    ]
    assert not nested, "imports inside a function, class or block:\n" + "\n".join(nested)


def test_no_import_cycles():
    graph = import_graph()
    cycles = [" -> ".join(a_cycle(graph, c)) + f"  (component: {', '.join(c)})" for c in strongly_connected(graph)]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checks_see_what_they_look_for():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert a_cycle(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    project = import_graph()
    assert {"webapp.app", "webapp"} <= project["wsgi"]  # from webapp.app import create_app
    assert {"webapp.quotas", "webapp"} <= project["worker.jobs"]  # from webapp import metrics, quotas
    code = ast.parse("import os\nif TYPE_CHECKING:\n    import sys\ndef f():\n    import json\n")
    assert [node.lineno for node in _nested_imports(code)] == [5]
