"""Service rules: act on what a service uses, read from its cgroup.

A ``[[rule]]`` looks at processes one by one in ``/proc``; a
``[[service_rule]]`` looks at a service as a whole: the memory, tasks and
CPU of everything in its cgroup (its daemons included), at each scan
(``[monitor] rules_every``). When a bound is exceeded for ``for_scans``
scans in a row, it logs (``action = "log"``) or restarts the service
(``"restart"``), and starts counting again: a leak is restarted once per
``for_scans`` scans at most, never in a loop of its own.

Services the monitor does not contain in a cgroup have no usage to read:
a service rule never matches them (``--check-config`` and the status say
whether services are contained).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import attrs
from twisted.logger import Logger

from procwork import _validate as validate
from procwork._cgroup import format_limit
from procwork._errors import ConfigError
from procwork._fields import keyed, spec_class
from procwork.monitor._events import Event

__all__ = ["ServiceRule", "ServiceRuleEngine"]

_log = Logger(namespace="procwork.rules")

ServiceAction = Literal["log", "restart"]


def _some_bound(rule: Any, attribute: object, value: object) -> None:
    if rule.max_memory is None and rule.max_tasks is None and rule.max_cpu is None:
        raise validate.Invalid("needs a bound: max_memory, max_tasks or max_cpu")


@spec_class("service_rule")
@attrs.frozen(field_transformer=keyed)
class ServiceRule:
    """A bound on what a service uses, held for some scans.

    Args:
        name: Names the rule in logs and events; unique among service rules.
        service: The services it watches: a name, or a glob (``"worker-*"``).
            Default every service.
        max_memory: Memory of all the service's processes together (a size:
            ``"500M"``), from its cgroup.
        max_tasks: Processes and threads in its cgroup.
        max_cpu: CPU it used over the last scan interval, as a share of one
            CPU (``"80%"``).
        for_scans: Scans in a row a bound must be exceeded before the rule
            acts. Default 1.
        action: ``"log"`` (default) reports; ``"restart"`` also restarts
            the service (its stop signal, then SIGKILL to its cgroup after
            its ``stop_timeout``).

    Raises:
        ConfigError: a field is invalid; the message names the rule and key.
    """

    name: str = attrs.field(validator=validate.text)
    service: str = attrs.field(default="*", validator=validate.text)
    max_memory: int | None = attrs.field(
        default=None,
        converter=validate.optional_size,
        validator=validate.optional(validate.whole(1)),
    )
    max_tasks: int | None = attrs.field(
        default=None, validator=validate.optional(validate.whole(1))
    )
    max_cpu: float | None = attrs.field(
        default=None,
        converter=attrs.converters.optional(validate.cpu_share),
    )
    for_scans: int = attrs.field(default=1, validator=validate.whole(1))
    action: ServiceAction = attrs.field(
        default="log",
        validator=[validate.one_of(("log", "restart")), _some_bound],
    )

    def exceeded(self, usage: Mapping[str, Any], cpu_share: float | None) -> str | None:
        """Which bound ``usage`` (a cgroup's, as in the status) is over, in
        words; None if none."""
        memory = usage.get("memory_bytes")
        if (
            self.max_memory is not None
            and memory is not None
            and memory > self.max_memory
        ):
            return (
                f"memory {format_limit('memory_max', memory)} > "
                f"{format_limit('memory_max', self.max_memory)}"
            )
        tasks = usage.get("tasks")
        if self.max_tasks is not None and tasks is not None and tasks > self.max_tasks:
            return f"{tasks} tasks > {self.max_tasks}"
        if (
            self.max_cpu is not None
            and cpu_share is not None
            and cpu_share > self.max_cpu
        ):
            return f"CPU {cpu_share * 100:.0f}% > {self.max_cpu * 100:g}%"
        return None


class ServiceRuleEngine:
    """Applies service rules at each scan. Call from the reactor thread.

    Args:
        rules: The rules.
        usage: Each service's cgroup status now (``Supervisor.cgroups.statuses``).
        restart: Restarts a service by name.
        emit: Where events go.
        clock: Now, in seconds (the reactor's).
    """

    def __init__(
        self,
        rules: Iterable[ServiceRule],
        *,
        usage: Callable[[], Mapping[str, Mapping[str, Any]]],
        restart: Callable[[str], object],
        emit: Callable[[Event], object],
        clock: Callable[[], float],
    ) -> None:
        self._usage = usage
        self._restart = restart
        self._emit = emit
        self._clock = clock
        self.rules: tuple[ServiceRule, ...] = ()
        self._over: dict[tuple[str, str], int] = {}  # (rule, service) -> scans
        self._cpu: dict[str, tuple[float, float]] = {}  # service -> (time, seconds)
        self.acted: dict[str, int] = {}  # rule -> times it acted
        self.update(rules)

    def update(self, rules: Iterable[ServiceRule]) -> None:
        """Use ``rules`` from now on; an unchanged rule keeps its counts.

        Raises:
            ConfigError: two rules have one name.
        """
        rules = tuple(rules)
        names = [rule.name for rule in rules]
        for name in names:
            if names.count(name) > 1:
                raise ConfigError(f"service rule {name!r} is defined twice")
        kept = {rule.name for rule in rules if rule in self.rules}
        self._over = {k: v for k, v in self._over.items() if k[0] in kept}
        self.acted = {name: self.acted.get(name, 0) for name in names}
        self.rules = rules

    def check(self) -> list[str]:
        """One scan: the findings, as log lines (each is logged and an event)."""
        now = self._clock()
        statuses = self._usage()
        shares = self._cpu_shares(statuses, now)
        found = []
        for rule in self.rules:
            for service, status in statuses.items():
                if not fnmatch.fnmatchcase(service, rule.service):
                    continue
                usage = status.get("usage")
                over = (
                    None if usage is None else rule.exceeded(usage, shares.get(service))
                )
                key = (rule.name, service)
                if over is None:
                    self._over.pop(key, None)
                    continue
                scans = self._over.get(key, 0) + 1
                if scans < rule.for_scans:
                    self._over[key] = scans
                    continue
                self._over.pop(key, None)  # counting starts again
                found.append(self._act(rule, service, over, scans, now))
        return found

    def _cpu_shares(
        self, statuses: Mapping[str, Mapping[str, Any]], now: float
    ) -> dict[str, float]:
        shares: dict[str, float] = {}
        seen: dict[str, tuple[float, float]] = {}
        for service, status in statuses.items():
            usage = status.get("usage")
            cpu = None if usage is None else usage.get("cpu_seconds")
            if cpu is None:
                continue
            seen[service] = (now, cpu)
            before = self._cpu.get(service)
            if before is not None and now > before[0] and cpu >= before[1]:
                shares[service] = (cpu - before[1]) / (now - before[0])
        self._cpu = seen
        return shares

    def _act(
        self, rule: ServiceRule, service: str, over: str, scans: int, now: float
    ) -> str:
        self.acted[rule.name] = self.acted.get(rule.name, 0) + 1
        held = f" for {scans} scans" if scans > 1 else ""
        doing = "restarting it" if rule.action == "restart" else "logged"
        message = (
            f"service rule {rule.name!r}: service {service!r}: {over}{held}; {doing}"
        )
        _log.warn("{message}", message=message, rule=rule.name, service=service)
        self._emit(
            Event(
                "rule.acted" if rule.action == "restart" else "rule.matched",
                rule.name,
                rule.action,
                message,
                time=now,
                fields={"service": service, "over": over, "scans": scans},
            )
        )
        if rule.action == "restart":
            self._restart(service)
        return message
