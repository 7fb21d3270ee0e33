"""The monitor's TOML config: services, checks and rules, validated at start.

A bad config is rejected before anything runs, with a message that names the
file, the table and the key, and says what is wrong. Commands may use
``{python}`` for the interpreter running procwork, so a config can ship
portable Python one-liners.
"""

from __future__ import annotations

import dataclasses
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from procwork._errors import ConfigError
from procwork.monitor._checks import CheckSpec
from procwork.monitor._rules import Rule
from procwork.supervisor import ServiceSpec

__all__ = ["MonitorConfig", "load_config", "parse_config"]

DEFAULT_HTTP = ("127.0.0.1", 8642)
BUILTIN = "<built-in config>"

_MONITOR_KEYS = {
    "summary_every",
    "rules_every",
    "http",
    "json_log",
    "max_running",
    "max_load",
}


@dataclass(frozen=True)
class MonitorConfig:
    """A validated monitor config.

    Attributes:
        source: The file it came from (or ``"<built-in config>"``).
        services: Supervised services, in start order.
        checks: Periodic checks.
        rules: Watchdog rules, applied every ``rules_every`` seconds.
        summary_every: Seconds between status summary lines (0: none).
        http: ``(host, port)`` for the status endpoint, or None for none.
        json_log: Log JSON lines instead of text.
        max_running: Cap of the process scheduler (None: its default).
        max_load: Load per core above which normal/low runs wait.
    """

    source: str
    services: tuple[ServiceSpec, ...] = ()
    checks: tuple[CheckSpec, ...] = ()
    rules: tuple[Rule, ...] = ()
    rules_every: float = 5.0
    summary_every: float = 60.0
    http: tuple[str, int] | None = DEFAULT_HTTP
    json_log: bool = False
    max_running: int | None = None
    max_load: float | None = 2.0


def load_config(path: str | None) -> MonitorConfig:
    """Read and validate a config file; ``None`` means the built-in one.

    Raises:
        ConfigError: unreadable, not TOML, or invalid; the message names the
            file and the key.
    """
    if path is None:
        text = resources.files("procwork.monitor").joinpath("default.toml").read_text()
        return parse_config(text, BUILTIN)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: cannot read config: not UTF-8 text ({e})") from None
    return parse_config(text, path)


def parse_config(text: str, source: str = "<string>") -> MonitorConfig:
    """Validate TOML ``text``; ``source`` names it in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    unknown = set(data) - {"monitor", "service", "check", "rule"}
    if unknown:
        raise ConfigError(
            f"{source}: unknown table {sorted(unknown)[0]!r}; "
            "expected [monitor], [[service]], [[check]] and [[rule]]"
        )
    monitor = _table(data.get("monitor", {}), f"{source}: [monitor]")
    _no_unknown_keys(monitor, _MONITOR_KEYS, f"{source}: [monitor]")
    services = tuple(
        _build(ServiceSpec, entry, f"{source}: [[service]] #{i + 1}")
        for i, entry in enumerate(_array(data, "service", source))
    )
    checks = tuple(
        _build(CheckSpec, entry, f"{source}: [[check]] #{i + 1}")
        for i, entry in enumerate(_array(data, "check", source))
    )
    rules = tuple(
        _build(Rule, entry, f"{source}: [[rule]] #{i + 1}")
        for i, entry in enumerate(_array(data, "rule", source))
    )
    for kind, items in (("service", services), ("check", checks), ("rule", rules)):
        names = [item.name for item in items]
        for name in names:
            if names.count(name) > 1:
                raise ConfigError(f"{source}: {kind} {name!r} is defined twice")
    # The supervisor starts a service only after the one it names, and
    # rejects a name it has not been given yet: say so here, naming the file.
    for i, service in enumerate(services):
        earlier = {s.name for s in services[:i]}
        if service.after is not None and service.after not in earlier:
            raise ConfigError(
                f"{source}: [[service]] #{i + 1} ({service.name!r}): after names "
                f"{service.after!r}, which is not a [[service]] defined before it"
            )
    where = f"{source}: [monitor]"
    return MonitorConfig(
        source=source,
        services=services,
        checks=checks,
        rules=rules,
        rules_every=_seconds(monitor.get("rules_every", 5.0), f"{where} rules_every"),
        summary_every=_seconds(
            monitor.get("summary_every", 60.0), f"{where} summary_every", zero=True
        ),
        http=_http(monitor.get("http", f"{DEFAULT_HTTP[0]}:{DEFAULT_HTTP[1]}"), where),
        json_log=_bool(monitor.get("json_log", False), f"{where} json_log"),
        max_running=_optional_int(monitor.get("max_running"), f"{where} max_running"),
        max_load=_optional_float(monitor.get("max_load", 2.0), f"{where} max_load"),
    )


def parse_http(value: str, where: str = "--http") -> tuple[str, int]:
    """``"HOST:PORT"`` (port 0: any free port) to ``(host, port)``."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(
            f"{where}: expected HOST:PORT like 127.0.0.1:8642, not {value!r}"
        )
    return host.strip("[]"), int(port)


# -- helpers ---------------------------------------------------------------


def _table(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a table")
    return value


def _array(data: Mapping[str, Any], key: str, source: str) -> list[dict[str, Any]]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{source}: {key!r} must be written as [[{key}]] tables")
    return value


def _no_unknown_keys(table: Mapping[str, Any], known: set[str], where: str) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(
                f"{where}: unknown key {key!r}; known keys: {', '.join(sorted(known))}"
            )


def _build(cls: Any, entry: dict[str, Any], where: str) -> Any:
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    name = entry.get("name")
    if isinstance(name, str):
        where = f"{where} ({name!r})"
    _no_unknown_keys(entry, fields, where)
    for f in dataclasses.fields(cls):
        required = (
            f.init
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        )
        if required and f.name not in entry:
            raise ConfigError(f"{where}: missing required key {f.name!r}")
    kwargs = {key: _substitute(value) for key, value in entry.items()}
    if cls is Rule:
        kwargs = _rule_kwargs(kwargs, where)
    if cls is ServiceSpec and kwargs.get("max_restarts") is False:
        kwargs["max_restarts"] = None  # TOML has no null: false means no limit
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # ConfigError is a ValueError
        message = str(e)
        # The spec's own message usually names the entry already ("service
        # 'web': restart must be ..."); then say only where it is.
        if isinstance(name, str) and message.startswith(f"{_KIND[cls]} {name!r}"):
            message = message[len(f"{_KIND[cls]} {name!r}") :].lstrip(": ")
        raise ConfigError(f"{where}: {message}") from None


_KIND: dict[Any, str] = {ServiceSpec: "service", CheckSpec: "check", Rule: "rule"}


def _rule_kwargs(kwargs: dict[str, Any], where: str) -> dict[str, Any]:
    if "max_rss" in kwargs:
        kwargs["max_rss"] = _size(kwargs["max_rss"], f"{where} max_rss")
    if "allow_pids" in kwargs:
        pids = kwargs["allow_pids"]
        if not isinstance(pids, list) or not all(isinstance(p, int) for p in pids):
            raise ConfigError(f"{where}: allow_pids must be a list of pids")
        kwargs["allow_pids"] = frozenset(pids)
    return kwargs


def _substitute(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("{python}", sys.executable)
    if isinstance(value, list):
        return [_substitute(v) for v in value]
    return value


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _size(value: object, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().upper().removesuffix("B").removesuffix("I")
        number, unit = text, ""
        if text and text[-1] in _SIZE_UNITS:
            number, unit = text[:-1], text[-1]
        try:
            return int(float(number) * _SIZE_UNITS[unit])
        except (ValueError, OverflowError):  # "abc", "nan"; "inf"
            pass
    raise ConfigError(f"{where}: expected bytes or a size like '512M', not {value!r}")


def _seconds(value: object, where: str, *, zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: must be a number of seconds, not {value!r}")
    if value < 0 or (value == 0 and not zero):
        bound = ">= 0" if zero else "> 0"
        raise ConfigError(f"{where}: must be {bound}, not {value!r}")
    return float(value)


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: must be true or false, not {value!r}")
    return value


def _optional_int(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: must be a whole number >= 1, not {value!r}")
    return value


def _optional_float(value: object, where: str) -> float | None:
    if value is None or value is False:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{where}: must be a number > 0 or false, not {value!r}")
    return float(value)


def _http(value: object, where: str) -> tuple[str, int] | None:
    if value is False:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where} http: must be 'HOST:PORT' or false, not {value!r}")
    return parse_http(value, f"{where} http")
