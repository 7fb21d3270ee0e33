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

Nor may modules import each other in a circle when their code runs (an
import inside a function counts; one for type checkers only does not): the
one deliberate cycle is listed below with its reason.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator

import pytest

from tests.support import ROOT, run_program
from tests.support.imports import (
    Import,
    cycles,
    import_cycles,
    imports_in,
    known_modules,
    module_name,
    private_reaches,
    runtime_graph,
)

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

#: The runtime import cycles between modules that exist on purpose, each by
#: the one lazy import that closes it: (file, module) -> why. The other lazy
#: upward imports close none: nothing procwork.supervisor or procwork.monitor
#: imports brings back procwork/__init__.py (whose __getattr__ reaches them).
ALLOWED_CYCLES = {
    ("clockwork/_classic.py", "procwork"): (
        "the first clockwork's Command runs its process with procwork, which "
        "is built on clockwork (the monitor's webhooks go through "
        "clockwork.net); the Command imports procwork only when it runs"
    ),
    ("untwisted/_adapt.py", "clockwork"): (
        "clockwork is built on untwisted, and registers the runner untwisted "
        "hands generators to; untwisted imports it by name when it meets a "
        "generator before clockwork was imported, so that untwisted.run(gen) "
        "works in a program that never imported clockwork"
    ),
}

#: The packages whose modules touch no ``_private`` name of another module:
#: what one module needs of another's class is a documented method or
#: property (clockwork's Worker steps a Task through its "for the Worker"
#: methods, it does not reach into its slots).
ENCAPSULATED = ("untwisted", "clockwork")

#: Modules whose values need no Twisted at all: they import nothing from it.
TWISTED_FREE = (
    "procwork/supervisor/_spec.py",
    "procwork/supervisor/_restart.py",
    "procwork/supervisor/_order.py",
    "procwork/_validate.py",
    "procwork/_fields.py",
    "procwork/_format.py",
    "procwork/_reactor.py",
    "procwork/monitor/_configfiles.py",
    "procwork/monitor/_events.py",
    "procwork/monitor/_didyoumean.py",
    "procwork/monitor/_toml.py",
    # clockwork.net's errors: importing clockwork gets NetworkError without
    # loading any network code.
    "clockwork/_neterrors.py",
    # A remote run's target, which a config's host = is checked with, and
    # the package's __init__ that importing it runs (with the shell
    # wrapper): twisted.conch (and the remote runs on it) load only when a
    # run names a host.
    "procwork/_remote/__init__.py",
    "procwork/_remote/_target.py",
    "procwork/_remote/_wrapper.py",
    # How the lifeline helper is started, by the library and by procwork
    # timeout, which must start without Twisted.
    "procwork/_lifeline_start.py",
)

#: The modules whose code names SIGKILL: the one kill escalation, the spawn
#: transport (what is left of a group at the leader's exit; the last resort
#: at interpreter exit) and the rules' tree-kill, which kills a frozen process
#: tree member by member (timed by the escalation). Any other module stops a
#: group through procwork._escalation.
SIGKILL_SENDERS = frozenset(
    {
        "procwork/_escalation.py",
        "procwork/_spawn.py",
        "procwork/monitor/_treekill.py",
        # The lifeline helper runs alone, after its program died, on the
        # standard library only (no reactor to escalate on): it has its own.
        "procwork/_lifeline_main.py",
        # The cgroup file protocol's kill of a cgroup on a kernel without
        # cgroup.kill (before 5.14): the tree frozen, each member SIGKILLed.
        # The lifeline helper loads it too; the escalation times it through
        # GroupProcess.signal_group like any group's SIGKILL.
        "procwork/_cgroup/_fs.py",
        # Remote runs: a run's timeout and cancel go through the Escalation
        # (its SSH channel is the target), as do the groups of a lost
        # connection's runs; what names SIGKILL here is, in the run's
        # channel, the kill of leftovers when the command exits (as
        # _spawn's), the SIGKILL owed to a group whose id came after its run
        # was given up and the check that arms that give-up; and in the
        # pool, the bounded sweep at reactor shutdown, where every kill is a
        # request over the network that may not answer. (Why that sweep is
        # not an Escalation: see the comment in SSHPool._shutdown.)
        "procwork/_remote/_channel.py",
        "procwork/_remote/_pool.py",
        # procwork timeout runs without Twisted (it must start fast), on the
        # standard library only, like the lifeline helper: its -k and the
        # kill of leftovers are its own, coreutils timeout's rules.
        "procwork/cli/_timeout.py",
    }
)


def layer_of(module: str) -> int | None:
    """The rank of a module's layer (0 is the bottom), None if not ours."""
    rank = None
    for i, (_, prefix) in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            rank = i
    return rank


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


def all_imports() -> Iterator[Import]:
    sources = repository_sources()
    known = known_modules(list(sources))
    for path, source in sources.items():
        yield from imports_in(source, path, known)


# -- the repository --------------------------------------------------------------


@pytest.mark.slow
def test_no_layer_imports_a_layer_above_it() -> None:
    """untwisted < clockwork < procwork core < supervisor < monitor < cli."""
    found = problems(all_imports())
    assert not found, "imports against the layers:\n" + "\n".join(found)


@pytest.mark.slow
def test_every_allowed_upward_import_is_still_there() -> None:
    """An exception that no longer happens is taken off the list."""
    seen = {(imp.path, imp.module) for imp in all_imports()}
    assert not ALLOWED_UPWARD - seen, ALLOWED_UPWARD - seen


@pytest.mark.slow
def test_no_modules_import_each_other_in_a_circle_when_their_code_runs() -> None:
    """Function-level imports count; imports for type checkers only do not.

    A cycle hidden in a function is still a cycle: either module can only
    be understood, loaded and tested with the other. The lower one offers a
    hook instead (procwork._spawn's observers, which the lifeline and the
    orphan reaper register with).
    """
    sources = repository_sources()
    known = known_modules(list(sources))
    found = import_cycles(all_imports(), known, ALLOWED_CYCLES)
    assert not found, "modules that import each other:\n" + "\n".join(found)


@pytest.mark.slow
def test_every_allowed_import_cycle_is_still_one() -> None:
    """A cycle that was broken is taken off the list.

    Each allowed import is checked with the others taken out, so that one
    closing a cycle of its own is not hidden by another's.
    """
    known = known_modules(list(repository_sources()))
    imports = list(all_imports())
    for path, module in ALLOWED_CYCLES:
        importer = module_name(path)
        graph = runtime_graph(imports, known)
        for other_path, other in ALLOWED_CYCLES:
            if (other_path, other) != (path, module):
                graph.get(module_name(other_path), {}).pop(other, None)
        assert module in graph[importer], f"{path} no longer imports {module}"
        assert any(
            importer in {module_name(imp.path) for imp in cycle}
            for cycle in cycles(graph)
        ), f"{path} importing {module} closes no cycle any more"


def test_untwisted_and_clockwork_modules_touch_no_private_name_of_another_module() -> (
    None
):
    """One module uses another's documented interface, never its ``_privates``."""
    sources = repository_sources()
    known = known_modules(list(sources))
    found = [
        reach
        for path, source in sources.items()
        if path.startswith(tuple(f"{package}/" for package in ENCAPSULATED))
        for reach in private_reaches(source, path, known)
    ]
    assert not found, "private names of another module:\n" + "\n".join(found)


def test_remote_runs_drive_their_process_through_its_methods_for_a_transport() -> None:
    """The modules of ``procwork/_remote/`` share their package's private
    names, and touch no other module's: of a Process, a remote run uses what
    the Process documents "for a transport" (``transport_failed``,
    ``output_received``, ...), never its ``_privates``."""
    sources = repository_sources()
    known = known_modules(list(sources))
    package = {p: s for p, s in sources.items() if p.startswith("procwork/_remote/")}
    assert "procwork/_remote/_channel.py" in package
    found = [
        reach
        for path, source in package.items()
        for reach in private_reaches(source, path, known, package.values())
    ]
    assert not found, "private names of modules outside the package:\n" + "\n".join(
        found
    )


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_importing_procwork_imports_neither_the_supervisor_nor_the_monitor() -> None:
    """The process core loads alone; the moved names still resolve, on use."""
    child = run_program("core_alone")
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
    # Remote runs' names resolve on use (procwork/_remote/, twisted.conch);
    # their errors are procwork._errors', re-exported there too.
    assert procwork.RemoteError is procwork._remote.RemoteError
    assert procwork.SSHPool is procwork._remote.SSHPool


@pytest.mark.parametrize(
    "package",
    [
        "untwisted",
        "untwisted.lowlevel",
        "clockwork",
        "clockwork.classic",
        "clockwork.net",
        "procwork.supervisor",
        "procwork.monitor",
    ],
)
def test_each_room_exports_what_its_modules_define(package: str) -> None:
    """Every name in a package's or a tier's ``__all__`` is there to be imported."""
    import importlib

    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert module.__all__ and not missing, missing


def test_untwisted_exports_what_a_program_calls_and_lowlevel_the_plumbing() -> None:
    """``untwisted`` is run, add, tick and their errors; what code built on it
    needs (the Driver, the generator hook, signals) is ``untwisted.lowlevel``,
    as in trio, and there only."""
    import untwisted
    import untwisted.lowlevel

    assert sorted(untwisted.__all__) == [
        "ForeignThreadError",
        "ReentrancyError",
        "Timeout",
        "add",
        "run",
        "tick",
    ]
    assert sorted(untwisted.lowlevel.__all__) == [
        "AwaitableDeferred",
        "DrivableReactor",
        "Driver",
        "FATAL_SIGNALS",
        "GeneratorRunner",
        "LoopReactor",
        "as_deferred",
        "catch_fatal_signals",
        "default_driver",
        "hold_signals",
        "is_loop_reactor",
        "loop_reactor",
        "running_loop",
        "set_generator_runner",
    ]
    twice = [name for name in untwisted.lowlevel.__all__ if hasattr(untwisted, name)]
    assert not twice, f"plumbing still in untwisted itself: {twice}"


def test_clockwork_exports_the_modern_api_and_still_the_first_clockworks_words() -> (
    None
):
    """The first clockwork's vocabulary lives in ``clockwork.classic``; code
    written for it says ``from clockwork import *``, which still brings every
    word of it (so ``clockwork.__all__`` lists them after the modern API)."""
    import clockwork
    import clockwork.classic

    modern = [
        "CancelledError",
        "NetworkError",
        "Task",
        "Timeout",
        "Worker",
        "current_worker",
        "default_worker",
        "encapsulate",
        "every",
        "first",
        "flatten",
        "gather",
        "sleep",
        "spawn",
        "tick",
        "timeout",
        "work",
        "wrap",
    ]
    assert sorted(clockwork.classic.__all__) == [
        "Call",
        "Command",
        "Control",
        "Each",
        "Input",
        "Output",
        "Return",
        "Value",
        "genwrap",
        "standalone",
    ]
    assert clockwork.__all__ == modern + clockwork.classic.__all__
    star: dict[str, object] = {}
    exec("from clockwork import *", star)
    for name in clockwork.classic.__all__:
        assert star[name] is getattr(clockwork.classic, name), name


def test_clockwork_net_is_a_tier_of_its_own_loaded_only_when_imported() -> None:
    """``clockwork.net`` holds the network (connect, listen, request and
    their values and errors); ``clockwork`` itself adds only the errors'
    base, ``NetworkError``, and importing it loads no network code."""
    import clockwork
    import clockwork.net

    assert sorted(clockwork.net.__all__) == [
        "BUFFER_SIZE",
        "CONNECT_TIMEOUT",
        "Certificate",
        "Connection",
        "DNSError",
        "Disconnected",
        "MAX_BODY",
        "MAX_LINE",
        "MAX_READ_ALL",
        "NetworkError",
        "NetworkTimeout",
        "REQUEST_TIMEOUT",
        "Refused",
        "Response",
        "Server",
        "TLSError",
        "TooLong",
        "connect",
        "listen",
        "request",
    ]
    assert clockwork.NetworkError is clockwork.net.NetworkError
    child = run_program("clockwork_alone")
    assert child.returncode == 0, child.stderr


def test_the_monitor_exports_what_a_program_embedding_it_needs_and_no_part_of_it() -> (
    None
):
    """At most a dozen names: the monitor, its config and what that holds,
    the config's error, what a reload did. Its parts (check runner, rule
    engine, process table, alert dispatcher, control server) are private."""
    import procwork.monitor

    assert sorted(procwork.monitor.__all__) == [
        "AlertSpec",
        "CheckSpec",
        "ConfigDiff",
        "ConfigError",
        "Monitor",
        "MonitorConfig",
        "Rule",
        "default_socket_path",
        "load_config",
        "parse_config",
    ]
    parts = ["AlertDispatcher", "CheckRunner", "Controller", "ProcInfo", "RuleEngine"]
    exported = [name for name in parts if hasattr(procwork.monitor, name)]
    assert not exported, exported


def test_procworks_older_names_are_names_the_supervisor_and_the_monitor_export() -> (
    None
):
    """``procwork.Monitor`` and the like resolve, lazily, to the rooms' public
    names; no internal of a room is reachable from ``procwork``."""
    import procwork
    import procwork.monitor
    import procwork.supervisor

    assert not procwork._MONITOR_NAMES - set(procwork.monitor.__all__)
    assert not procwork._SUPERVISOR_NAMES - set(procwork.supervisor.__all__)
    for name in procwork._MONITOR_NAMES:
        assert getattr(procwork, name) is getattr(procwork.monitor, name)
    for name in procwork._SUPERVISOR_NAMES:
        assert getattr(procwork, name) is getattr(procwork.supervisor, name)
    with pytest.raises(AttributeError, match="RuleEngine"):
        procwork.RuleEngine  # noqa: B018


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


def cycles_in(sources: dict[str, str]) -> list[str]:
    known = known_modules(list(sources))
    imports = [
        imp
        for path, source in sources.items()
        for imp in imports_in(textwrap.dedent(source), path, known)
    ]
    return import_cycles(imports, known)


def test_the_cycle_finder_names_each_import_of_a_cycle_even_inside_a_function() -> None:
    sources = {
        "procwork/_a.py": "from procwork._b import helper\n",
        "procwork/_b.py": """
            import os

            def helper():
                from procwork import _a
        """,
        "procwork/_c.py": "from procwork._a import x\n",  # on the way in, not around
    }
    assert cycles_in(sources) == [
        "procwork._a -> procwork._b (procwork/_a.py:1) "
        "-> procwork._a (procwork/_b.py:5)"
    ]


def test_the_cycle_finder_follows_a_longer_cycle_through_a_package() -> None:
    sources = {
        "untwisted/__init__.py": "from untwisted._adapt import as_deferred\n",
        "untwisted/_adapt.py": "def run():\n    import clockwork\n",
        "clockwork/__init__.py": "import untwisted\n",
    }
    assert cycles_in(sources) == [
        "clockwork -> untwisted (clockwork/__init__.py:1) "
        "-> untwisted._adapt (untwisted/__init__.py:1) "
        "-> clockwork (untwisted/_adapt.py:2)"
    ]


def test_the_cycle_finder_leaves_out_imports_for_type_checkers() -> None:
    sources = {
        "clockwork/_task.py": """
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from clockwork._worker import Worker
        """,
        "clockwork/_worker.py": "from clockwork._task import Task\n",
    }
    assert cycles_in(sources) == []


def test_the_privacy_check_names_another_modules_private_attribute_and_import() -> None:
    source = """
        from clockwork import _task
        from clockwork._task import _NOTHING, Task

        class Worker(Base):
            __slots__ = ("_ready",)

            def step(self, task):
                self._ready.append(task)
                task._stack.pop()
                return self._inherited
    """
    known = frozenset({"clockwork", "clockwork._task"})
    assert private_reaches(textwrap.dedent(source), "clockwork/_w.py", known) == [
        "clockwork/_w.py:3: from clockwork._task import _NOTHING",
        "clockwork/_w.py:10: task._stack",
        "clockwork/_w.py:11: self._inherited",
    ]


def test_the_privacy_check_lets_a_module_use_what_it_defines() -> None:
    source = """
        _PENDING = object()

        class _Resume:
            __slots__ = ("_task",)

            def __init__(self, task):
                self._task = task

            def same(self, other):
                return other._task is self._task or other._check(_PENDING)

            def _check(self, value):
                return value.__class__
    """
    assert private_reaches(textwrap.dedent(source), "clockwork/_w.py", KNOWN) == []
