"""Imports read from the source (``ast``): what the layering checks ask.

:func:`imports_in` finds every import of a module: at module level, inside
functions, under ``TYPE_CHECKING`` and by name through ``importlib``;
:func:`import_cycles` the modules that import each other in a circle when
their code runs; :func:`private_reaches` the ``_private`` names a module
touches that it does not define. The policy (which layer may import which,
the allowed exceptions) is ``tests/project/test_layering.py``'s.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Import:
    """One import in one file."""

    path: str  # relative to the repository, with "/"
    line: int
    module: str
    lazy: bool  # inside a function or under TYPE_CHECKING
    for_typing: bool = False  # under TYPE_CHECKING: never runs

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: imports {self.module}"


def module_name(path: str) -> str:
    """``procwork/monitor/_rules.py`` -> ``procwork.monitor._rules``."""
    parts = path.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_in(source: str, path: str, known: frozenset[str]) -> Iterator[Import]:
    """Every import in ``source``: static, relative, and by name.

    ``known`` holds the modules of the repository, to tell ``from procwork
    import monitor`` (a subpackage) from ``from procwork import run`` (a
    name). An import by name whose target cannot be read from the source is
    reported as the module ``"<by name>"``, which no layer may import.
    """
    tree = ast.parse(source, path)
    here = module_name(path)
    package = here if path.endswith("__init__.py") else here.rpartition(".")[0]
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }

    def visit(node: ast.AST, lazy: bool, typing: bool = False) -> Iterator[Import]:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            lazy = True
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                yield from visit(child, True, True)
            for child in node.orelse:
                yield from visit(child, lazy, typing)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(path, node.lineno, alias.name, lazy, typing)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                target = submodule if submodule in known else base
                yield Import(path, node.lineno, target, lazy, typing)
        elif isinstance(node, ast.Call) and _imports_by_name(node.func):
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                target = arg.value
            elif isinstance(arg, ast.Name) and arg.id in constants:
                target = constants[arg.id]
            else:
                target = "<by name>"
            yield Import(path, node.lineno, target, lazy, typing)
        for inner in ast.iter_child_nodes(node):
            yield from visit(inner, lazy, typing)

    yield from visit(tree, False)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports_by_name(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def known_modules(paths: list[str]) -> frozenset[str]:
    return frozenset(module_name(path) for path in paths)


Graph = dict[str, dict[str, Import]]


def runtime_graph(imports: Iterable[Import], known: frozenset[str]) -> Graph:
    """module -> {module it imports when its code runs: the first such import}.

    Imports for type checkers only never run and are left out, as are
    modules outside ``known`` and a module importing itself.
    """
    graph: Graph = {}
    for imp in imports:
        here = module_name(imp.path)
        edges = graph.setdefault(here, {})
        if imp.for_typing or imp.module not in known or imp.module == here:
            continue
        edges.setdefault(imp.module, imp)
    return graph


def cycles(graph: Graph) -> list[list[Import]]:
    """One cycle for each group of modules that import each other in a circle.

    Each cycle is given as the imports that close it, starting from the
    group's first module by name (Tarjan's strongly connected components,
    then the shortest way back around).
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def connect(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph.get(module, {}):
            if target not in index:
                connect(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(group)

    for module in sorted(graph):
        if module not in index:
            connect(module)
    return [_way_around(graph, group) for group in groups]


def _way_around(graph: Graph, group: set[str]) -> list[Import]:
    """The shortest cycle through the group's first module, by breadth first."""
    start = min(group)
    came_by: dict[str, Import] = {}
    frontier = [start]
    while frontier:
        following = []
        for module in frontier:
            for target, imp in sorted(graph[module].items()):
                if target not in group:
                    continue
                if target == start:
                    way = [imp]
                    while module != start:
                        way.insert(0, came_by[module])
                        module = module_name(came_by[module].path)
                    return way
                if target not in came_by:
                    came_by[target] = imp
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle in {group}")  # pragma: no cover


def describe(cycle: list[Import]) -> str:
    """``a -> b (a.py:3) -> a (b.py:7)``: the modules, and where each import is."""
    first = module_name(cycle[0].path)
    return first + "".join(f" -> {imp.module} ({imp.path}:{imp.line})" for imp in cycle)


def import_cycles(
    imports: Iterable[Import],
    known: frozenset[str],
    allowed: Iterable[tuple[str, str]] = (),
) -> list[str]:
    """The runtime import cycles left once the ``allowed`` imports are taken out."""
    graph = runtime_graph(imports, known)
    for path, module in allowed:
        graph.get(module_name(path), {}).pop(module, None)
    return [describe(cycle) for cycle in cycles(graph)]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_reaches(
    source: str, path: str, known: frozenset[str], friends: Iterable[str] = ()
) -> list[str]:
    """Where the module at ``path`` touches a ``_private`` name it does not define.

    A module may use the private names it defines: its functions, classes
    and globals, and the attributes its classes give themselves (``self._x =
    ...``, ``__slots__``, their methods). Any other, through any object
    (``task._stack``, ``self._x`` inherited from another module's class) or
    imported (``from clockwork._task import _NOTHING``), is another module's
    privacy. Dunder names are public; private submodules of the package are
    modules, not names (``from untwisted import _signals``). What the
    ``friends`` (sources of other modules) define counts as defined too.
    """
    tree = ast.parse(source, path)
    defined: set[str] = set()
    trees = [tree, *(ast.parse(friend) for friend in friends)]
    for node in (node for each in trees for node in ast.walk(each)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            defined.add(node.id)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("self", "cls")
        ):
            defined.add(node.attr)
        elif isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__slots__"
            for target in node.targets
        ):
            defined.update(
                slot.value
                for slot in ast.walk(node.value)
                if isinstance(slot, ast.Constant) and isinstance(slot.value, str)
            )
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            if node.attr not in defined:
                found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.extend(
                (node.lineno, f"from {node.module} import {alias.name}")
                for alias in node.names
                if _private(alias.name)
                and f"{node.module}.{alias.name}" not in known
                and not (friends and alias.name in defined)
            )
    return [f"{path}:{line}: {what}" for line, what in sorted(found)]
