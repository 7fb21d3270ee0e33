"""The monitor's cgroups: its containment, what it reports of it, its metrics.

``procwork monitor`` contains its services in cgroups where it may
(``[monitor] contain``, default true): the subtree is named after its lock
(``procwork.monitor-web-1a2b....3c4d``), so that the next monitor of the
same config finds what a monitor killed with its lifeline left there, and
kills it before starting anything (see
:meth:`~procwork._cgroup.Containment.start`). It says once, at start, how it
contains them and why not; ``--check-config`` says, for each service's
limits, whether they would be enforced, and why not; the status, the page
and ``/metrics`` carry each service's usage; an OOM kill and the processes a
service left behind are events (``service.oom_kill``, ``service.leftovers``).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from procwork._cgroup import Containment, Host, discover
from procwork._reactor import Reactor
from procwork.monitor._config import MonitorConfig
from procwork.monitor._events import Event
from procwork.monitor._http import Metric
from procwork.monitor._servicerules import ServiceRuleEngine
from procwork.supervisor import Supervisor
from procwork.supervisor._contain import limits_of

__all__ = [
    "CgroupEvents",
    "cgroup_metrics",
    "check_config_lines",
    "containment_name",
    "describe",
    "monitor_containment",
    "print_check_config",
    "service_statuses",
    "status_keys",
    "watch",
]

_log = Logger(namespace="procwork.monitor")

NOT_ASKED = "contain = false in [monitor]"


def containment_name(lock: Path) -> str:
    """The monitor's subtree's name: its lock file's, and a digest of the
    lock's path (two locks of one name in two directories are two monitors)."""
    digest = hashlib.sha256(os.fsencode(os.path.abspath(lock))).hexdigest()[:8]
    return f"{lock.stem}.{digest}"


def monitor_containment(
    config: MonitorConfig,
    lock: Path,
    reactor: Reactor | None,
    *,
    start: bool = True,
    host: Host | None = None,
) -> Containment:
    """The monitor's containment: made and cleaned of an earlier monitor's
    leftovers (``start``: after the lifeline started, which is then told of
    every cgroup), or only described (``--check-config``)."""
    if not config.contain:
        host = Host(None, NOT_ASKED)
    containment = Containment(
        containment_name(lock),
        discover() if host is None else host,
        reactor=reactor,
    )
    if start:
        containment.start([limits_of(spec) for spec in config.services])
    return containment


def describe(containment: Containment | None) -> str:
    """How services are contained, for the line the monitor logs at start."""
    return "not asked" if containment is None else containment.describe()


def watch(
    supervisor: Supervisor, config: MonitorConfig, emit: Callable[[Event], object]
) -> ServiceRuleEngine:
    """Turn the supervisor's cgroup news (an OOM kill, leftovers) into
    events, and return the engine of ``config``'s service rules."""
    clock = supervisor.reactor.seconds

    def state(name: str) -> str:
        status = supervisor.status().get(name)
        return "" if status is None else str(status.state)

    def restart(name: str) -> None:
        supervisor.restart(name).addErrback(
            lambda f: _log.failure("restarting {service!r} failed", f, service=name)
        )

    supervisor.cgroups.listen(CgroupEvents(emit, state, clock))
    return ServiceRuleEngine(
        config.service_rules,
        usage=supervisor.cgroups.statuses,
        restart=restart,
        emit=emit,
        clock=clock,
    )


def print_check_config(config: MonitorConfig, lock: Path) -> None:
    """``--check-config``: how the services would be contained, on stderr."""
    described = monitor_containment(config, lock, None, start=False)
    print(*check_config_lines(config, described), sep="\n", file=sys.stderr)


def service_statuses(supervisor: Supervisor) -> dict[str, dict[str, Any]]:
    """Each service's status, with its cgroup's (limits, usage) as ``cgroup``."""
    cgroups = supervisor.cgroups.statuses()
    return {
        name: {**status.to_dict(), "cgroup": cgroups.get(name)}
        for name, status in supervisor.status().items()
    }


def status_keys(
    containment: Containment | None, rules: ServiceRuleEngine
) -> dict[str, Any]:
    """The monitor's status keys of containment and the service rules."""
    return {
        "containment": containment and containment.to_dict(),
        "service_rules": dict(rules.acted),
    }


def check_config_lines(config: MonitorConfig, containment: Containment) -> list[str]:
    """What ``--check-config`` says of containment and of each limit."""
    if containment.available:
        lines = [f"containment: cgroups under {containment.root}"]
    else:
        lines = [f"containment: process groups only: {containment.why}"]
    for spec in config.services:
        for enforcement in containment.plan(limits_of(spec)):
            lines.append(f"service {spec.name!r}: {enforcement}")
    return lines


class CgroupEvents:
    """The supervisor's cgroup listener: an OOM kill in a service's cgroup,
    and the processes a service left when it ended, as events.

    Args:
        emit: Where events go (the alerts).
        state: A service's state now, for the event.
        clock: Now, in seconds since the epoch.
    """

    def __init__(
        self,
        emit: Callable[[Event], object],
        state: Callable[[str], str],
        clock: Callable[[], float],
    ) -> None:
        self._emit = emit
        self._state = state
        self._clock = clock

    def __call__(
        self, kind: str, service: str, message: str, fields: dict[str, Any]
    ) -> None:
        self._emit(
            Event(
                f"service.{kind}",
                service,
                self._state(service),
                message,
                time=self._clock(),
                fields=fields,
            )
        )


def cgroup_metrics(cgroups: Mapping[str, Mapping[str, Any]]) -> list[Metric]:
    """Each service's usage, from its cgroup (a service not running, or not
    in a cgroup, has no sample), and its OOM kills."""

    def per_service(key: str) -> list[tuple[dict[str, str], float]]:
        samples = []
        for name, status in cgroups.items():
            usage = status.get("usage")
            value = None if usage is None else usage.get(key)
            if value is not None:
                samples.append(({"service": name}, float(value)))
        return samples

    return [
        (
            "procwork_service_memory_bytes",
            "gauge",
            "Memory of the service's processes together: charged to its cgroup, "
            "or, without a memory controller, their resident memory added up",
            per_service("memory_bytes"),
        ),
        (
            "procwork_service_cpu_seconds_total",
            "counter",
            "CPU time used in the service's cgroup since it was made (at its "
            "current process's start)",
            per_service("cpu_seconds"),
        ),
        (
            "procwork_service_tasks",
            "gauge",
            "Processes and threads in the service's cgroup",
            per_service("tasks"),
        ),
        (
            "procwork_service_oom_kills_total",
            "counter",
            "Processes the OOM killer killed in the service's cgroup",
            [
                ({"service": n}, float(s.get("oom_kills", 0)))
                for n, s in cgroups.items()
            ],
        ),
        (
            "procwork_service_limit_enforced",
            "gauge",
            "1 for a limit of the service the kernel enforces, 0 for one it "
            "cannot (see procwork ctl status)",
            [
                ({"service": n, "limit": str(limit["limit"])}, float(limit["enforced"]))
                for n, s in cgroups.items()
                for limit in s.get("limits", ())
            ],
        ),
    ]
