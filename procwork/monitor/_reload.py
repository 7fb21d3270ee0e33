"""What a config reload changes: the difference between two configs.

A pure function of two :class:`MonitorConfig`: the monitor applies it
(:meth:`Monitor.reload`). Services are compared by name and then by their
whole spec, so a service whose every key is the same is left running with
its pid, and one that differs in any key (its command, environment, stop
signal, ...) is restarted with the new spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from procwork.monitor._config import MonitorConfig

__all__ = ["ConfigDiff", "diff_config"]

# Settings a running monitor cannot take up: they are bound at start.
_NOT_RELOADED = ("http", "socket", "control", "http_control", "http_token", "json_log")


@dataclass(frozen=True)
class ConfigDiff:
    """The difference between the running config and a new one.

    Attributes:
        added: Services only in the new config, in its order.
        removed: Services only in the old config, in reverse order (those
            that start after others are stopped first).
        changed: Services in both whose spec differs, in the new order.
        unchanged: Services in both with the same spec.
        checks_changed: The checks differ (they are replaced).
        rules_changed: The rules differ (they are replaced).
        not_applied: ``[monitor]`` settings that differ but take a restart
            of the monitor (the HTTP address, the control socket, ...).
    """

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    checks_changed: bool = False
    rules_changed: bool = False
    not_applied: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {
            "added": list(self.added),
            "removed": list(self.removed),
            "changed": list(self.changed),
            "unchanged": list(self.unchanged),
            "checks_changed": self.checks_changed,
            "rules_changed": self.rules_changed,
            "not_applied": list(self.not_applied),
        }

    def __str__(self) -> str:
        parts = [
            f"{label} {', '.join(names) if names else 'none'}"
            for label, names in (
                ("added", self.added),
                ("removed", self.removed),
                ("changed", self.changed),
            )
        ]
        parts.append(f"{len(self.unchanged)} unchanged")
        if self.checks_changed:
            parts.append("checks replaced")
        if self.rules_changed:
            parts.append("rules replaced")
        return "; ".join(parts)


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
    ... ''', check_system=False)
    >>> new = parse_config('''
    ... [[service]]
    ... name = "a"
    ... command = "sleep 60"
    ... [[service]]
    ... name = "c"
    ... command = "sleep 60"
    ... ''', check_system=False)
    >>> print(diff_config(old, new))
    added c; removed b; changed none; 1 unchanged
    """
    before = {spec.name: spec for spec in old.services}
    after = {spec.name: spec for spec in new.services}
    return ConfigDiff(
        added=tuple(name for name in after if name not in before),
        removed=tuple(name for name in reversed(before) if name not in after),
        changed=tuple(
            name for name in after if name in before and before[name] != after[name]
        ),
        unchanged=tuple(
            name for name in after if name in before and before[name] == after[name]
        ),
        checks_changed=old.checks != new.checks,
        rules_changed=old.rules != new.rules,
        not_applied=tuple(
            key for key in _NOT_RELOADED if getattr(old, key) != getattr(new, key)
        ),
    )
