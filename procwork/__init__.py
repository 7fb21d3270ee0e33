"""procwork: run and supervise subprocesses from clockwork, async or blocking code.

    >>> import procwork, untwisted
    >>> result = untwisted.run(procwork.run(["echo", "hello"], timeout=5))
    >>> result.stdout
    b'hello\\n'

Every call returns a Deferred, so the same call works with ``yield`` in a
clockwork generator, ``await`` in ``async def`` and ``untwisted.run()`` from
blocking code. See ``specs/procwork.md`` for the whole story.
"""

from __future__ import annotations

from procwork._api import DEFAULT_GRACE, DEFAULT_MAX_OUTPUT, run, scheduler, spawn
from procwork._checks import CheckRunner, CheckSpec, CheckStatus
from procwork._config import MonitorConfig, load_config, parse_config
from procwork._errors import (
    ConfigError,
    ProcessFailed,
    ProcworkError,
    SpawnError,
    Timeout,
)
from procwork._lifeline import enable_lifeline
from procwork._load import LoadSource, NoLoadLimit, SystemLoad
from procwork._monitor import Monitor
from procwork._process import Process
from procwork._proctable import LinuxProcessTable, ProcessTable, ProcInfo
from procwork._result import Result
from procwork._rules import Finding, Rule, RuleEngine
from procwork._scheduler import PRIORITIES, Priority, Scheduler
from procwork._supervisor import (
    NoSuchService,
    ServiceSpec,
    ServiceState,
    ServiceStatus,
    Supervisor,
)

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_MAX_OUTPUT",
    "PRIORITIES",
    "CheckRunner",
    "CheckSpec",
    "CheckStatus",
    "ConfigError",
    "Finding",
    "LinuxProcessTable",
    "LoadSource",
    "Monitor",
    "MonitorConfig",
    "NoLoadLimit",
    "NoSuchService",
    "Priority",
    "ProcInfo",
    "Process",
    "ProcessFailed",
    "ProcessTable",
    "ProcworkError",
    "Result",
    "Rule",
    "RuleEngine",
    "Scheduler",
    "ServiceSpec",
    "ServiceState",
    "ServiceStatus",
    "SpawnError",
    "Supervisor",
    "SystemLoad",
    "Timeout",
    "enable_lifeline",
    "load_config",
    "parse_config",
    "run",
    "scheduler",
    "spawn",
]
