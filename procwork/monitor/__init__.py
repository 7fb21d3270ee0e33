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

Each name is imported from its module on first use, not with the package:
``procwork ctl`` reads the control protocol (``_protocol``) and a config's
socket (``_configfiles``) from this package without loading Twisted.
"""

from __future__ import annotations

# Not typing.TYPE_CHECKING: importing typing is a good part of what a
# `procwork ctl` call costs, and this module is on its way (see cli/_main.py).
TYPE_CHECKING = False

if TYPE_CHECKING:
    # For type checkers only: at run time every name comes from __getattr__.
    from procwork._errors import ConfigError as ConfigError
    from procwork.monitor._alerts import AlertSpec as AlertSpec
    from procwork.monitor._checks import CheckSpec as CheckSpec
    from procwork.monitor._config import MonitorConfig as MonitorConfig
    from procwork.monitor._config import load_config as load_config
    from procwork.monitor._config import parse_config as parse_config
    from procwork.monitor._monitor import Monitor as Monitor
    from procwork.monitor._protocol import default_socket_path as default_socket_path
    from procwork.monitor._reload import ConfigDiff as ConfigDiff
    from procwork.monitor._rules import Rule as Rule

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


def __getattr__(name: str) -> object:
    """``procwork.monitor.Monitor`` and the rest, imported on first use."""
    home: object
    if name == "ConfigError":
        from procwork import _errors as home
    elif name == "AlertSpec":
        from procwork.monitor import _alerts as home
    elif name == "CheckSpec":
        from procwork.monitor import _checks as home
    elif name in ("MonitorConfig", "load_config", "parse_config"):
        from procwork.monitor import _config as home
    elif name == "Monitor":
        from procwork.monitor import _monitor as home
    elif name == "default_socket_path":
        from procwork.monitor import _protocol as home
    elif name == "ConfigDiff":
        from procwork.monitor import _reload as home
    elif name == "Rule":
        from procwork.monitor import _rules as home
    else:
        raise AttributeError(f"module 'procwork.monitor' has no attribute {name!r}")
    value: object = getattr(home, name)
    globals()[name] = value  # once is enough
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
