"""procwork.supervisor: named long-running services, kept alive.

    >>> from procwork.supervisor import ServiceSpec, Supervisor

A :class:`Supervisor` runs :class:`ServiceSpec` services on
:class:`twisted.runner.procmon.ProcessMonitor`, adding restart policies, a
restart limit, per-service stop signals sent to the whole process group,
start order and a :class:`ServiceStatus` per service.

:class:`ProcessMonitor` is procmon itself, for programs written for it:
a drop-in whose children lead their own process group, are stopped as a
group and reaped in O(1). It is imported on first use, because
``twisted.runner.procmon`` imports the global reactor. It builds on the
process core (``procwork``'s spawn transport) and knows nothing of the
monitor application above it (:mod:`procwork.monitor`). See
``specs/supervision.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# Services are children like procwork.run's: the lifeline and the orphan
# reaper (observers of the spawn transport, which register when imported)
# must be watching before the first one starts. `import procwork` no longer
# imports them (see procwork/_core.py): the supervisor does.
from procwork import _lifeline as _lifeline
from procwork.supervisor._child import ProcessFactory
from procwork.supervisor._servicelog import LogStats, ServiceLogTrouble
from procwork.supervisor._supervisor import (
    NoSuchService,
    RestartPolicy,
    ServiceNotRunning,
    ServiceSpec,
    ServiceState,
    ServiceStatus,
    Supervisor,
)

if TYPE_CHECKING:
    from procwork.supervisor._processmonitor import ProcessMonitor as ProcessMonitor

__all__ = [
    "LogStats",
    "NoSuchService",
    "ProcessFactory",
    "ProcessMonitor",
    "RestartPolicy",
    "ServiceLogTrouble",
    "ServiceNotRunning",
    "ServiceSpec",
    "ServiceState",
    "ServiceStatus",
    "Supervisor",
]


def __getattr__(name: str) -> object:
    """``ProcessMonitor``, imported on first use (procmon imports the reactor)."""
    if name == "ProcessMonitor":
        from procwork.supervisor._processmonitor import ProcessMonitor

        globals()[name] = ProcessMonitor
        return ProcessMonitor
    raise AttributeError(f"module 'procwork.supervisor' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "ProcessMonitor"})
