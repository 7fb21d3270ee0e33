"""The process core's public names: what ``procwork`` exports, loaded together.

``procwork/__init__.py`` imports this module the first time one of its
names is used (``procwork.run``, ``procwork.Result``, ...), not when the
package is imported, so that a program that needs one small module of
procwork and nothing of Twisted (``procwork ctl``) does not load the
reactor. Loading the whole core at once keeps what ``import procwork``
always did: the lifeline and the orphan reaper are watching the spawns
before the first child starts.
"""

from __future__ import annotations

from procwork._api import run, scheduler, spawn
from procwork._defaults import DEFAULT_GRACE, DEFAULT_MAX_OUTPUT, PRIORITIES, Priority
from procwork._errors import (
    CommandNotFound,
    ConfigError,
    NotExecutable,
    ProcworkError,
    RemoteAuthError,
    RemoteConnectionLost,
    RemoteError,
    RemoteHostKeyError,
    RemoteUnreachable,
    SpawnError,
)
from procwork._lifeline import enable_lifeline
from procwork._load import LoadSource, NoLoadLimit, SystemLoad
from procwork._orphans import reap_orphans
from procwork._process import Process, RunState
from procwork._result import ProcessFailed, Result
from procwork._scheduler import Scheduler
from procwork._waitfor import waitfor
from untwisted import Timeout

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
    "Scheduler",
    "SpawnError",
    "SystemLoad",
    "Timeout",
    "enable_lifeline",
    "reap_orphans",
    "run",
    "scheduler",
    "spawn",
    "waitfor",
]
