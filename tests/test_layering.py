"""The layers hold: a lower layer never imports a higher one.

From the bottom: ``untwisted`` (drive the reactor from blocking code),
``clockwork`` (generators on the reactor), the process core ``procwork``
(run, spawn, scheduler), ``procwork.supervisor`` (services kept alive),
``procwork.monitor`` (the watchdog application) and ``procwork.cli`` (the
command). Each may import those below it and never those above, so each can
be read, tested and used without the ones above (see ``ARCHITECTURE.md``).

The check reads the source (``ast``), so it sees every import: at module
level, inside functions, under ``TYPE_CHECKING``, and imports by name through
``importlib``. The few deliberate exceptions are listed below with their
reasons; each must stay lazy (inside a function, or for type checkers only).
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import run_child

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("untwisted", "clockwork", "procwork")

#: The layers, bottom first. A module belongs to the last prefix it matches.
LAYERS = (
    ("untwisted", "untwisted"),
    ("clockwork", "clockwork"),
    ("the process core", "procwork"),
    ("the supervisor", "procwork.supervisor"),
    ("the monitor", "procwork.monitor"),
    ("the command line", "procwork.cli"),
    ("the command line", "procwork.__main__"),
)

#: The imports that go up a layer on purpose, each lazily: (file, module).
ALLOWED_UPWARD = {
    # untwisted runs generators with the runner clockwork registers; when
    # none is registered yet it imports clockwork by name, once.
    ("untwisted/_adapt.py", "clockwork"),
    # The names procwork exported before the supervisor and the monitor had
    # their own rooms resolve lazily through procwork.__getattr__.
    ("procwork/__init__.py", "procwork.supervisor"),
    ("procwork/__init__.py", "procwork.monitor"),
    # The first clockwork's Command ran a process; it reaches procwork only
    # when a command runs (clockwork never imports it at import time).
    ("clockwork/_classic.py", "procwork"),
}

#: Modules whose values need no Twisted at all: they import nothing from it.
TWISTED_FREE = (
    "procwork/supervisor/_spec.py",
    "procwork/supervisor/_restart.py",
    "procwork/_validate.py",
    "procwork/_fields.py",
    "procwork/_format.py",
    "procwork/_reactor.py",
    "procwork/monitor/_configfiles.py",
    "procwork/monitor/_didyoumean.py",
    "procwork/monitor/_toml.py",
)

#: The modules whose code names SIGKILL: the one kill escalation, the spawn
#: transport (what is left of a group at the leader's exit; the last resort
#: at interpreter exit) and the rules, which kill a frozen process tree
#: member by member (timed by the escalation). Any other module stops a
#: group through procwork._escalation.
SIGKILL_SENDERS = frozenset(
    {
        "procwork/_escalation.py",
        "procwork/_spawn.py",
        "procwork/monitor/_rules.py",
        # The lifeline helper runs alone, after its program died, on the
        # standard library only (no reactor to escalate on): it has its own.
        "procwork/_lifeline_main.py",
        # Remote runs: a run's timeout and cancel go through the Escalation
        # (its SSH channel is the target); what names SIGKILL here is the
        # kill of leftovers when the command exits (as _spawn's) and the
        # bounded sweep at reactor shutdown, where every kill is a request
        # over the network that may not answer. (Why that sweep is not an
        # Escalation: see the comment in SSHPool._shutdown.)
        "procwork/_remote.py",
    }
)


def layer_of(module: str) -> int | None:
    """The rank of a module's layer (0 is the bottom), None if not ours."""
    rank = None
    for i, (_, prefix) in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            rank = i
    return rank


@dataclass(frozen=True)
class Import:
    """One import in one file."""

    path: str  # relative to the repository, with "/"
    line: int
    module: str
    lazy: bool  # inside a function or under TYPE_CHECKING

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

    def visit(node: ast.AST, lazy: bool) -> Iterator[Import]:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            lazy = True
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                yield from visit(child, True)
            for child in node.orelse:
                yield from visit(child, lazy)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(path, node.lineno, alias.name, lazy)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                target = submodule if submodule in known else base
                yield Import(path, node.lineno, target, lazy)
        elif isinstance(node, ast.Call) and _imports_by_name(node.func):
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                target = arg.value
            elif isinstance(arg, ast.Name) and arg.id in constants:
                target = constants[arg.id]
            else:
                target = "<by name>"
            yield Import(path, node.lineno, target, lazy)
        for child in ast.iter_child_nodes(node):
            yield from visit(child, lazy)

    yield from visit(tree, False)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports_by_name(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def problems(imports: Iterator[Import]) -> list[str]:
    """What is wrong with these imports, one line each, naming file:line."""
    found = []
    for imp in imports:
        importer = layer_of(module_name(imp.path))
        if importer is None:
            continue
        if imp.module == "<by name>":
            found.append(f"{imp} (a module named at run time: name it in the source)")
            continue
        target = layer_of(imp.module)
        if target is None or target <= importer:
            continue
        why = f"{LAYERS[importer][0]} must not import {LAYERS[target][0]}"
        if (imp.path, imp.module) not in ALLOWED_UPWARD:
            found.append(f"{imp} ({why})")
        elif not imp.lazy:
            found.append(f"{imp} (allowed only lazily, but runs at import time)")
    return found


def repository_sources() -> dict[str, str]:
    return {
        path.relative_to(ROOT).as_posix(): path.read_text(encoding="utf-8")
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def known_modules(paths: list[str]) -> frozenset[str]:
    return frozenset(module_name(path) for path in paths)


def all_imports() -> Iterator[Import]:
    sources = repository_sources()
    known = known_modules(list(sources))
    for path, source in sources.items():
        yield from imports_in(source, path, known)


# -- the repository --------------------------------------------------------------


def test_no_layer_imports_a_layer_above_it() -> None:
    """untwisted < clockwork < procwork core < supervisor < monitor < cli."""
    found = problems(all_imports())
    assert not found, "imports against the layers:\n" + "\n".join(found)


def test_every_allowed_upward_import_is_still_there() -> None:
    """An exception that no longer happens is taken off the list."""
    seen = {(imp.path, imp.module) for imp in all_imports()}
    assert not ALLOWED_UPWARD - seen, ALLOWED_UPWARD - seen


def test_the_service_spec_and_the_restart_decision_import_nothing_from_twisted() -> (
    None
):
    """They are values and a pure function: no reactor, no process."""
    sources = repository_sources()
    known = known_modules(list(sources))
    found = [
        str(imp)
        for path in TWISTED_FREE
        for imp in imports_in(sources[path], path, known)
        if imp.module == "twisted" or imp.module.startswith("twisted.")
    ]
    assert not found, "\n".join(found)


def test_only_the_escalation_the_spawn_transport_and_the_rules_name_SIGKILL() -> None:
    """SIGTERM, grace, SIGKILL is written once (procwork/_escalation.py)."""
    found = set()
    for path, source in repository_sources().items():
        for node in ast.walk(ast.parse(source, path)):
            if isinstance(node, ast.Attribute) and node.attr == "SIGKILL":
                found.add(path)
    assert found == SIGKILL_SENDERS


def test_only_procwork_reactor_imports_the_global_reactor() -> None:
    """There is one way to get the default reactor: ``default_reactor()``."""
    found = []
    for path, source in repository_sources().items():
        if not path.startswith("procwork/"):
            continue  # untwisted's Driver is the one that owns it
        for node in ast.walk(ast.parse(source, path)):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module == "twisted.internet"
                and any(alias.name == "reactor" for alias in node.names)
            ):
                found.append(f"{path}:{node.lineno}")
    assert not found, found


def test_importing_procwork_imports_neither_the_supervisor_nor_the_monitor() -> None:
    """The process core loads alone; the moved names still resolve, on use."""
    code = textwrap.dedent(
        """
        import sys
        import procwork
        rooms = ("procwork.supervisor", "procwork.monitor", "procwork.cli")
        loaded = sorted(m for m in sys.modules if m.startswith(rooms))
        assert not loaded, loaded
        assert "twisted.runner.procmon" not in sys.modules
        assert "twisted.conch" not in sys.modules  # until a run names a host
        from procwork import Monitor, Supervisor
        import procwork.monitor, procwork.supervisor
        assert Monitor is procwork.monitor.Monitor
        assert Supervisor is procwork.supervisor.Supervisor
        """
    )
    child = run_child(code)
    assert child.returncode == 0, child.stderr


def test_procwork_exports_the_process_core_only() -> None:
    """``procwork.__all__`` is what a library user needs to run processes."""
    import procwork

    assert sorted(procwork.__all__) == sorted(
        [
            "CommandNotFound",
            "NotExecutable",
            "DEFAULT_GRACE",
            "DEFAULT_MAX_OUTPUT",
            "PRIORITIES",
            "ConfigError",
            "LoadSource",
            "NoLoadLimit",
            "Priority",
            "Process",
            "ProcessFailed",
            "ProcworkError",
            "RemoteAuthError",
            "RemoteConnectionLost",
            "RemoteError",
            "RemoteHostKeyError",
            "RemoteUnreachable",
            "Result",
            "RunState",
            "SSHPool",
            "Scheduler",
            "SpawnError",
            "SystemLoad",
            "Timeout",
            "enable_lifeline",
            "reap_orphans",
            "run",
            "scheduler",
            "spawn",
            "ssh_pool",
            "waitfor",
        ]
    )
    # Remote runs' names resolve on use (procwork/_remote.py, twisted.conch).
    assert procwork.RemoteError is procwork._remote.RemoteError


@pytest.mark.parametrize("package", ["procwork.supervisor", "procwork.monitor"])
def test_each_room_exports_what_its_modules_define(package: str) -> None:
    """Every name in a subpackage's ``__all__`` is there to be imported."""
    import importlib

    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert module.__all__ and not missing, missing


# -- the checker itself -------------------------------------------------------------

KNOWN = frozenset(
    {"untwisted", "clockwork", "procwork", "procwork.monitor", "procwork.cli"}
)


def check(path: str, source: str) -> list[str]:
    return problems(imports_in(textwrap.dedent(source), path, KNOWN))


def test_the_checker_names_the_file_and_line_of_an_import_against_the_layers() -> None:
    source = """
        import os

        import procwork
    """
    assert check("clockwork/_waits.py", source) == [
        "clockwork/_waits.py:4: imports procwork "
        "(clockwork must not import the process core)"
    ]


def test_the_checker_sees_imports_inside_functions_and_for_type_checkers() -> None:
    source = """
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from procwork.monitor import Monitor

        def f():
            from procwork.cli import main
    """
    assert check("procwork/_api.py", source) == [
        "procwork/_api.py:4: imports procwork.monitor "
        "(the process core must not import the monitor)",
        "procwork/_api.py:7: imports procwork.cli "
        "(the process core must not import the command line)",
    ]


def test_the_checker_resolves_subpackages_named_in_from_imports() -> None:
    source = "from procwork import monitor\n"
    assert check("procwork/_process.py", source) == [
        "procwork/_process.py:1: imports procwork.monitor "
        "(the process core must not import the monitor)"
    ]


def test_the_checker_reads_imports_by_name_and_refuses_unreadable_ones() -> None:
    source = """
        import importlib
        NAME = "procwork"

        def f(other):
            importlib.import_module(NAME)
            importlib.import_module(other)
    """
    assert check("untwisted/_driver.py", source) == [
        "untwisted/_driver.py:6: imports procwork "
        "(untwisted must not import the process core)",
        "untwisted/_driver.py:7: imports <by name> "
        "(a module named at run time: name it in the source)",
    ]


def test_an_allowed_upward_import_must_stay_lazy() -> None:
    source = "import clockwork\n"
    assert check("untwisted/_adapt.py", source) == [
        "untwisted/_adapt.py:1: imports clockwork "
        "(allowed only lazily, but runs at import time)"
    ]


def test_imports_down_the_layers_and_of_other_libraries_pass() -> None:
    source = """
        import json
        from twisted.internet.defer import Deferred
        import untwisted
        from procwork._api import run
        from procwork.monitor import Monitor
    """
    assert check("procwork/cli/_main.py", source) == []
