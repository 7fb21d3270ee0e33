"""procwork.monitor: the watchdog application behind ``procwork monitor``.

    >>> from procwork.monitor import Monitor, load_config

A :class:`Monitor` runs, on one reactor and one scheduler, a
:class:`~procwork.supervisor.Supervisor` for the config's services, a
:class:`CheckRunner` for its periodic checks, a :class:`RuleEngine` that
applies watchdog :class:`Rule` s to the machine's :class:`ProcessTable`, and
a small HTTP status endpoint. The config is TOML (:func:`load_config`,
:func:`parse_config`). A running monitor is operated through its control
socket (``procwork ctl``; :func:`default_socket_path`, :class:`Controller`)
and reloads its config on SIGHUP (:meth:`Monitor.reload`,
:func:`diff_config`). See ``specs/supervision.md``.
"""

from __future__ import annotations

from procwork._errors import ConfigError
from procwork.monitor._alerts import (
    EVENTS,
    AlertDispatcher,
    AlertSpec,
    AlertStatus,
    Event,
)
from procwork.monitor._checks import CheckRunner, CheckSpec, CheckStatus
from procwork.monitor._config import MonitorConfig, load_config, parse_config
from procwork.monitor._control import Controller
from procwork.monitor._monitor import Monitor
from procwork.monitor._proctable import LinuxProcessTable, ProcessTable, ProcInfo
from procwork.monitor._protocol import ControlError, default_socket_path
from procwork.monitor._reload import ConfigDiff, diff_config
from procwork.monitor._rules import Finding, Rule, RuleEngine

__all__ = [
    "EVENTS",
    "AlertDispatcher",
    "AlertSpec",
    "AlertStatus",
    "CheckRunner",
    "CheckSpec",
    "CheckStatus",
    "ConfigDiff",
    "ConfigError",
    "ControlError",
    "Controller",
    "Event",
    "Finding",
    "LinuxProcessTable",
    "Monitor",
    "MonitorConfig",
    "ProcInfo",
    "ProcessTable",
    "Rule",
    "RuleEngine",
    "default_socket_path",
    "diff_config",
    "load_config",
    "parse_config",
]
