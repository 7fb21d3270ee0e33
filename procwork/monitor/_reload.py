"""What a config reload changes: the difference between two configs.

A pure function of two :class:`MonitorConfig`: the monitor applies it
(:meth:`Monitor.reload`). Services, checks, rules and alerts are each compared by
name (a name is required and unique per kind, so it is what identifies
one) and then by their whole spec: one whose every key is the same is left
running with its state (a service its pid; a check its schedule, failure
count and alert state; a rule its counters and the processes it has
reported; an alert its counters, its queue and the deliveries it is
making), and one that differs in any key is replaced by the new spec (an
alert takes it from its next delivery on, keeping its counters).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any, Protocol

from procwork.monitor._config import MonitorConfig
from procwork.monitor._protocol import describe_reload

__all__ = ["ConfigDiff", "diff_config"]

# Settings a running monitor cannot take up: they are bound at start.
_NOT_RELOADED = (
    "http",
    "socket",
    "control",
    "http_control",
    "http_token",
    "json_log",
    "contain",
    "log",
    "syslog_facility",
    "syslog_format",
    "nice",
    "realtime",
)

Names = tuple[str, ...]


@dataclass(frozen=True)
class ConfigDiff:
    """The difference between the running config and a new one.

    Services, checks, rules and alerts each have four lists of names (those
    of the others prefixed ``checks_``, ``rules_`` and ``alerts_``):

    Attributes:
        added: Services only in the new config, in its order.
        removed: Services only in the old config, in reverse order (those
            that start after others are stopped first).
        changed: Services in both whose spec differs, in the new order.
        unchanged: Services in both with the same spec, in the new order.
        checks_added, checks_removed, checks_changed, checks_unchanged:
            The same for checks.
        rules_added, rules_removed, rules_changed, rules_unchanged: The
            same for rules.
        alerts_added, alerts_removed, alerts_changed, alerts_unchanged: The
            same for alerts.
        not_applied: ``[monitor]`` settings that differ but take a restart
            of the monitor (the HTTP address, the control socket, ...).
    """

    added: Names = ()
    removed: Names = ()
    changed: Names = ()
    unchanged: Names = ()
    checks_added: Names = ()
    checks_removed: Names = ()
    checks_changed: Names = ()
    checks_unchanged: Names = ()
    rules_added: Names = ()
    rules_removed: Names = ()
    rules_changed: Names = ()
    rules_unchanged: Names = ()
    alerts_added: Names = ()
    alerts_removed: Names = ()
    alerts_changed: Names = ()
    alerts_unchanged: Names = ()
    not_applied: Names = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view: every field, its names as a list."""
        return {f.name: list(getattr(self, f.name)) for f in fields(self)}

    def __str__(self) -> str:
        """One line, as the log and ``procwork ctl reload`` say it (see
        :func:`~procwork.monitor._protocol.describe_reload`)."""
        return describe_reload(self.to_dict())


class _Named(Protocol):
    @property
    def name(self) -> str: ...


def _by_name(
    kind: str, old: Iterable[_Named], new: Iterable[_Named]
) -> dict[str, Names]:
    """The four lists of one kind, as the :class:`ConfigDiff` fields of
    ``kind`` (``""`` for services, ``"checks_"``, ``"rules_"``, ``"alerts_"``)."""
    before = {item.name: item for item in old}
    after = {item.name: item for item in new}
    kept = [name for name in after if name in before]
    return {
        f"{kind}added": tuple(name for name in after if name not in before),
        f"{kind}removed": tuple(name for name in reversed(before) if name not in after),
        f"{kind}changed": tuple(name for name in kept if before[name] != after[name]),
        f"{kind}unchanged": tuple(name for name in kept if before[name] == after[name]),
    }


def diff_config(old: MonitorConfig, new: MonitorConfig) -> ConfigDiff:
    """What changes from ``old`` to ``new``.

    >>> from procwork.monitor import parse_config
    >>> old = parse_config('''
    ... [[service]]
    ... name = "a"
    ... command = "sleep 60"
    ... [[service]]
    ... name = "b"
    ... command = "sleep 60"
    ... [[check]]
    ... name = "disk"
    ... command = "true"
    ... every = 60
    ... ''', check_system=False)
    >>> new = parse_config('''
    ... [[service]]
    ... name = "a"
    ... command = "sleep 60"
    ... [[service]]
    ... name = "c"
    ... command = "sleep 60"
    ... [[check]]
    ... name = "disk"
    ... command = "true"
    ... every = 30
    ... ''', check_system=False)
    >>> print(str(diff_config(old, new)).replace(" | ", "\\n"))
    services: added c; removed b; changed none; 1 unchanged
    checks: added none; removed none; changed disk; 0 unchanged
    """
    return ConfigDiff(
        **_by_name("", old.services, new.services),
        **_by_name("checks_", old.checks, new.checks),
        **_by_name("rules_", old.rules, new.rules),
        **_by_name("alerts_", old.alerts, new.alerts),
        not_applied=tuple(
            key for key in _NOT_RELOADED if getattr(old, key) != getattr(new, key)
        ),
    )
