"""procwork: run and supervise subprocesses from clockwork, async or blocking code.

    >>> import procwork, untwisted
    >>> result = untwisted.run(procwork.run(["echo", "hello"], timeout=5))
    >>> result.stdout
    b'hello\\n'

Every call returns a Deferred, so the same call works with ``yield`` in a
clockwork generator, ``await`` in ``async def`` and ``untwisted.run()`` from
blocking code. See ``specs/procwork.md`` for the whole story.

This package is the process core. Supervised services live in
:mod:`procwork.supervisor`, the watchdog application in
:mod:`procwork.monitor` and the ``procwork`` command in :mod:`procwork.cli`
(see ``ARCHITECTURE.md``).
"""

from __future__ import annotations

# Not typing.TYPE_CHECKING: importing typing is a good part of what a
# `procwork ctl` call costs, and this module is on its way (see cli/_main.py).
TYPE_CHECKING = False

if TYPE_CHECKING:
    # The distribution's one version, shared by the three packages
    # (untwisted/_version.py; pyproject.toml reads it from there). At run
    # time from __getattr__ too: importing untwisted imports Twisted.
    # For type checkers only: at run time every name comes from __getattr__.
    from procwork._core import (
        DEFAULT_GRACE,
        DEFAULT_MAX_OUTPUT,
        PRIORITIES,
        CommandNotFound,
        ConfigError,
        LoadSource,
        NoLoadLimit,
        NotExecutable,
        Priority,
        Process,
        ProcessFailed,
        ProcworkError,
        RemoteAuthError,
        RemoteConnectionLost,
        RemoteError,
        RemoteHostKeyError,
        RemoteUnreachable,
        Result,
        RunState,
        Scheduler,
        SpawnError,
        SystemLoad,
        Timeout,
        enable_lifeline,
        reap_orphans,
        run,
        scheduler,
        spawn,
        waitfor,
    )
    from procwork._remote import SSHPool as SSHPool
    from procwork._remote import ssh_pool as ssh_pool
    from procwork.monitor import CheckSpec as CheckSpec
    from procwork.monitor import Monitor as Monitor
    from procwork.monitor import MonitorConfig as MonitorConfig
    from procwork.monitor import Rule as Rule
    from procwork.monitor import load_config as load_config
    from procwork.monitor import parse_config as parse_config
    from procwork.supervisor import NoSuchService as NoSuchService
    from procwork.supervisor import ProcessMonitor as ProcessMonitor
    from procwork.supervisor import ServiceSpec as ServiceSpec
    from procwork.supervisor import ServiceState as ServiceState
    from procwork.supervisor import ServiceStatus as ServiceStatus
    from procwork.supervisor import Supervisor as Supervisor
    from untwisted import __version__ as __version__

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_MAX_OUTPUT",
    "PRIORITIES",
    "CommandNotFound",
    "ConfigError",
    "LoadSource",
    "NoLoadLimit",
    "NotExecutable",
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

# The core's names are imported on first use, all at once (procwork/_core.py),
# not with the package: a program that needs one small module of procwork
# and nothing of Twisted (procwork ctl: a blocking client of the monitor's
# socket) pays for that module alone, and procwork.run loads the core as
# import procwork used to.

# Names that procwork exported before the supervisor and the monitor moved to
# their own subpackages. They still resolve, lazily like the rest. (The one
# place the core names a higher room; tests/project/test_layering.py allows
# just this.) Only names those rooms still export: the monitor's parts (its
# check runner, rule engine, process table) are private to it now.
_SUPERVISOR_NAMES = frozenset(
    {
        "NoSuchService",
        "ProcessMonitor",  # the drop-in for twisted.runner.procmon's
        "ServiceSpec",
        "ServiceState",
        "ServiceStatus",
        "Supervisor",
    }
)
_MONITOR_NAMES = frozenset(
    {
        "CheckSpec",
        "Monitor",
        "MonitorConfig",
        "Rule",
        "load_config",
        "parse_config",
    }
)


# Remote runs (procwork/_remote/) import twisted.conch and cryptography:
# loaded on first use, so a program that runs nothing remotely never pays.
# (Their errors are procwork._errors', exported with the core.)
_REMOTE_NAMES = frozenset({"SSHPool", "ssh_pool"})


def __getattr__(name: str) -> object:
    """``procwork.run`` and every other name, imported on first use."""
    if name == "__version__":
        import untwisted as home
    elif name in _REMOTE_NAMES:
        from procwork import _remote as home  # type: ignore[no-redef]
    elif name in _SUPERVISOR_NAMES:
        from procwork import supervisor as home  # type: ignore[no-redef]
    elif name in _MONITOR_NAMES:
        from procwork import monitor as home  # type: ignore[no-redef]
    elif name in __all__:
        from procwork import _core as home  # type: ignore[no-redef]
    else:
        raise AttributeError(f"module 'procwork' has no attribute {name!r}")
    value: object = getattr(home, name)
    globals()[name] = value  # once is enough
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUPERVISOR_NAMES, *_MONITOR_NAMES})
