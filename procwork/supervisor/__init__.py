"""procwork.supervisor: named long-running services, kept alive.

    >>> from procwork.supervisor import ServiceSpec, Supervisor

A :class:`Supervisor` runs :class:`ServiceSpec` services on
:class:`twisted.runner.procmon.ProcessMonitor`, adding restart policies, a
restart limit, per-service stop signals sent to the whole process group,
start order and a :class:`ServiceStatus` per service. It builds on the
process core (``procwork``'s spawn transport) and knows nothing of the
monitor application above it (:mod:`procwork.monitor`). See
``specs/supervision.md``.
"""

from __future__ import annotations

from procwork.supervisor._supervisor import (
    NoSuchService,
    ProcessFactory,
    RestartPolicy,
    ServiceNotRunning,
    ServiceSpec,
    ServiceState,
    ServiceStatus,
    Supervisor,
)

__all__ = [
    "NoSuchService",
    "ProcessFactory",
    "RestartPolicy",
    "ServiceNotRunning",
    "ServiceSpec",
    "ServiceState",
    "ServiceStatus",
    "Supervisor",
]
