"""procwork.monitor: the watchdog application behind ``procwork monitor``.

    >>> from procwork.monitor import Monitor, load_config

A :class:`Monitor` runs a :class:`MonitorConfig` on one reactor and one
scheduler: a :class:`~procwork.supervisor.Supervisor` for its services,
periodic checks (:class:`CheckSpec`), watchdog rules over the machine's
processes (:class:`Rule`), alerts (:class:`AlertSpec`), a small HTTP status
endpoint and, when asked, a control socket (``procwork ctl``;
:func:`default_socket_path`). The config is TOML (:func:`load_config`,
:func:`parse_config`, which raise :class:`ConfigError`); a monitor reloads
it on SIGHUP (:meth:`Monitor.reload`, which tells the :class:`ConfigDiff`
it applied). See ``specs/supervision.md``.

``__all__`` is what a program embedding the monitor needs. The parts the
monitor is built of (its check runner, rule engine, process table, alert
dispatcher, control server) are private to it, in its modules.
"""

from __future__ import annotations

from procwork._errors import ConfigError
from procwork.monitor._alerts import AlertSpec
from procwork.monitor._checks import CheckSpec
from procwork.monitor._config import MonitorConfig, load_config, parse_config
from procwork.monitor._monitor import Monitor
from procwork.monitor._protocol import default_socket_path
from procwork.monitor._reload import ConfigDiff
from procwork.monitor._rules import Rule

__all__ = [
    "AlertSpec",
    "CheckSpec",
    "ConfigDiff",
    "ConfigError",
    "Monitor",
    "MonitorConfig",
    "Rule",
    "default_socket_path",
    "load_config",
    "parse_config",
]
