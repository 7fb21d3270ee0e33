"""A run's defaults, its priorities, the monitor's log levels: what the
command line needs to build its parser.

No Twisted here: ``procwork run --help`` and the rest of the ``procwork``
command's parser are built from these without loading the reactor, so
``procwork ctl``, which runs nothing, stays a small blocking program.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_MAX_OUTPUT",
    "LOG_LEVELS",
    "PRIORITIES",
    "Priority",
]

#: Seconds between SIGTERM and SIGKILL when a run is terminated.
DEFAULT_GRACE = 5.0
#: Bytes of output kept per stream of a run.
DEFAULT_MAX_OUTPUT = 1 << 20


class Priority(IntEnum):
    """Run priorities; lower value starts first."""

    CRITICAL = 0
    HIGH = 1
    NORMAL = 2
    LOW = 3


#: The priorities by name, first to start first.
PRIORITIES = tuple(p.name.lower() for p in Priority)

#: The levels of ``procwork monitor --log-level`` and ``[monitor] log_level``.
LOG_LEVELS = ("debug", "info", "warn", "error")
