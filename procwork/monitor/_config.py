"""The monitor's TOML config: services, checks and rules, validated at start.

A bad config is rejected before anything runs, with a message that names the
file, the table and the key, and says what is wrong; so is what cannot run
here (a command not found, a missing ``cwd``, an unknown user). What it
takes from supervisord: ``include`` globs, ``numprocs`` instances named with
``{instance}``, ``${VAR}`` and ``${VAR:-default}`` from the monitor's
environment (``$$`` for a literal ``$``), relative paths resolved against
the config file's directory. Commands may use ``{python}`` for the
interpreter running procwork, so a config can ship portable Python
one-liners. :func:`dump_config` writes the effective config back as TOML.
"""

from __future__ import annotations

import dataclasses
import enum
import glob
import math
import os
import re
import shutil
import sys
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from procwork import _validate as validate
from procwork._errors import ConfigError
from procwork.monitor._alerts import AlertSpec
from procwork.monitor._checks import MIN_INTERVAL, CheckSpec
from procwork.monitor._rules import Rule
from procwork.supervisor import ServiceSpec

__all__ = [
    "MIN_INTERVAL",
    "MonitorConfig",
    "default_config_text",
    "dump_config",
    "load_config",
    "parse_config",
]

DEFAULT_HTTP = ("127.0.0.1", 8642)
BUILTIN = "<built-in config>"

_MONITOR_KEYS = {
    "summary_every",
    "rules_every",
    "http",
    "json_log",
    "max_running",
    "max_load",
    "socket",
    "http_control",
    "http_token",
}
# Alerts, logs and the status page (see _alerts.py, _page.py).
_MONITOR_KEYS |= {"http_max_connections"}
DEFAULT_HTTP_MAX_CONNECTIONS = 64
# The control socket's bounds (see _controlserver.py).
_MONITOR_KEYS |= {"control_max_connections", "control_idle_timeout"}
DEFAULT_CONTROL_MAX_CONNECTIONS = 64
DEFAULT_CONTROL_IDLE_TIMEOUT = 60.0

#: The shortest ``http_token`` accepted: a guessable token is no lock.
MIN_TOKEN = 16


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
        included: The files ``include`` brought in, in order.
        socket: The control socket's path; None for the default
            (see :func:`~procwork.monitor.default_socket_path`).
        control: Serve the control socket at all (``socket = false``: no).
        http_control: Accept control requests over HTTP (``POST
            /control``) with ``Authorization: Bearer http_token``.
        http_token: The token HTTP control requests must carry.
        alerts: What to do on which events (``[[alert]]``), each with at
            most ``max_in_flight`` deliveries at once and ``max_queued``
            events waiting (see :class:`~procwork.monitor.AlertSpec`).
        http_max_connections: Concurrent HTTP connections served; past it
            new ones are closed at once.
        control_max_connections: Concurrent control socket connections;
            past it a new one takes the place of the one idle longest, or
            is refused with a message when none is idle.
        control_idle_timeout: Seconds a control connection may be idle (no
            request being answered; a follower not reading) before it is
            closed.
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
    included: tuple[str, ...] = ()
    socket: str | None = None
    control: bool = True
    http_control: bool = False
    http_token: str | None = dataclasses.field(default=None, repr=False)
    alerts: tuple[AlertSpec, ...] = ()
    http_max_connections: int = DEFAULT_HTTP_MAX_CONNECTIONS
    control_max_connections: int = DEFAULT_CONTROL_MAX_CONNECTIONS
    control_idle_timeout: float = DEFAULT_CONTROL_IDLE_TIMEOUT


def load_config(
    path: str | None,
    *,
    environ: Mapping[str, str] | None = None,
    check_system: bool = True,
) -> MonitorConfig:
    """Read and validate a config file; ``None`` means the built-in one.

    Relative paths in the file (``include`` patterns, ``cwd``, a command
    like ``bin/worker``) are resolved against the file's directory; in the
    built-in config, against the monitor's working directory.

    Args:
        path: The TOML file, or None for the built-in config.
        environ: Where ``${VAR}`` is looked up; default ``os.environ``.
        check_system: Also reject what this machine cannot run: commands
            not found, a missing ``cwd`` (see :func:`parse_config`).

    Raises:
        ConfigError: unreadable, not TOML, or invalid; the message names the
            file, the entry and the key.
    """
    if path is None:
        return parse_config(
            default_config_text(),
            BUILTIN,
            environ=environ,
            check_system=check_system,
        )
    text = _read(path)
    return parse_config(
        text,
        path,
        base_dir=os.path.dirname(os.path.abspath(path)),
        environ=environ,
        check_system=check_system,
    )


def default_config_text() -> str:
    """The built-in config, ``default.toml``: a starting point to copy."""
    return resources.files("procwork.monitor").joinpath("default.toml").read_text()


def parse_config(
    text: str,
    source: str = "<string>",
    *,
    base_dir: str | None = None,
    environ: Mapping[str, str] | None = None,
    check_system: bool = True,
) -> MonitorConfig:
    """Validate TOML ``text``; ``source`` names it in error messages.

    Args:
        text: The config.
        source: Names it in error messages (its file).
        base_dir: Directory relative paths are resolved against (the config
            file's); None leaves them relative to the monitor's working
            directory.
        environ: Where ``${VAR}`` is looked up; default ``os.environ``.
        check_system: Also reject what cannot run on this machine: a
            command not found on ``PATH`` (or a path that does not exist or
            is not executable), a ``cwd`` that is not a directory. A user
            or group that does not exist is always rejected.

    Raises:
        ConfigError: the message names the source, the entry and the key.
    """
    expand = _Expander(os.environ if environ is None else environ)
    data = _toml(text, source)
    unknown = set(data) - {"monitor", "service", "check", "rule", "alert", "include"}
    if unknown:
        raise ConfigError(
            f"{source}: unknown table {sorted(unknown)[0]!r}; expected [monitor], "
            "[[service]], [[check]], [[rule]] and [[alert]] (and include)"
        )
    monitor = _table(data.get("monitor", {}), f"{source}: [monitor]")
    _no_unknown_keys(monitor, _MONITOR_KEYS, f"{source}: [monitor]")
    monitor = {
        key: expand(value, f"{source}: [monitor] {key}")
        for key, value in monitor.items()
    }
    files = [_File(source, data, base_dir)]
    included = _includes(data, source, base_dir, expand)
    files += included

    services: list[ServiceSpec] = []
    checks: list[CheckSpec] = []
    rules: list[Rule] = []
    alerts: list[AlertSpec] = []
    where_of: dict[tuple[str, str], str] = {}  # (kind, name) -> where defined
    # What must exist on this machine, checked once the config is consistent.
    runnable: list[
        tuple[Sequence[str], str, _File, str | None, Mapping[str, str] | None]
    ] = []
    for file in files:
        for i, entry in enumerate(_array(file.data, "service", file.source)):
            where = f"{file.source}: [[service]] #{i + 1}"
            for spec in _services(entry, where, file, expand):
                named = _named(where, spec.name)
                _once(where_of, "service", spec.name, named)
                _after_defined(spec, services, where)
                services.append(spec)
                runnable.append(
                    (spec.argv, f"{named} command", file, spec.cwd, _service_env(spec))
                )
        for i, entry in enumerate(_array(file.data, "check", file.source)):
            where = f"{file.source}: [[check]] #{i + 1}"
            entry = _prepare(entry, where, expand)
            check = _build(CheckSpec, entry, where)
            where = _named(where, check.name)
            _once(where_of, "check", check.name, where)
            check = _resolved_check(check, file)
            if check.host is None:  # a remote command is found there, not here
                runnable.append((check.command, f"{where} command", file, None, None))
            if check.on_failure is not None:
                runnable.append(
                    (check.on_failure, f"{where} on_failure", file, None, None)
                )
            checks.append(check)
        for i, entry in enumerate(_array(file.data, "rule", file.source)):
            where = f"{file.source}: [[rule]] #{i + 1}"
            rule = _build(Rule, _prepare(entry, where, expand), where)
            _once(where_of, "rule", rule.name, _named(where, rule.name))
            rules.append(rule)
        for i, entry in enumerate(_array(file.data, "alert", file.source)):
            where = f"{file.source}: [[alert]] #{i + 1}"
            alert = _build(AlertSpec, _prepare(entry, where, expand), where)
            where = _named(where, alert.name)
            _once(where_of, "alert", alert.name, where)
            if alert.argv is not None:
                argv = alert.argv
                if os.sep in argv[0] and not os.path.isabs(argv[0]):
                    alert = dataclasses.replace(
                        alert, command=(file.path(argv[0]), *argv[1:])
                    )
                runnable.append((alert.argv, f"{where} command", file, None, None))
            alerts.append(alert)

    if check_system:
        for argv, where, file, cwd, env in runnable:
            _runnable(argv, where, file, cwd, env)
    where = f"{source}: [monitor]"
    socket, control = _socket(monitor.get("socket"), where, files[0])
    http_control = _bool(monitor.get("http_control", False), f"{where} http_control")
    http_token = _token(monitor.get("http_token"), http_control, where)
    return MonitorConfig(
        source=source,
        services=tuple(services),
        checks=tuple(checks),
        rules=tuple(rules),
        rules_every=_interval(monitor.get("rules_every", 5.0), f"{where} rules_every"),
        summary_every=_interval(
            monitor.get("summary_every", 60.0), f"{where} summary_every", zero=True
        ),
        http=_http(monitor.get("http", f"{DEFAULT_HTTP[0]}:{DEFAULT_HTTP[1]}"), where),
        json_log=_bool(monitor.get("json_log", False), f"{where} json_log"),
        max_running=_optional_int(monitor.get("max_running"), f"{where} max_running"),
        max_load=_optional_float(monitor.get("max_load", 2.0), f"{where} max_load"),
        included=tuple(f.source for f in included),
        socket=socket,
        control=control,
        http_control=http_control,
        http_token=http_token,
        alerts=tuple(alerts),
        http_max_connections=_max_connections(
            monitor.get("http_max_connections", DEFAULT_HTTP_MAX_CONNECTIONS),
            f"{where} http_max_connections",
        ),
        control_max_connections=_max_connections(
            monitor.get("control_max_connections", DEFAULT_CONTROL_MAX_CONNECTIONS),
            f"{where} control_max_connections",
        ),
        control_idle_timeout=_idle_timeout(
            monitor.get("control_idle_timeout", DEFAULT_CONTROL_IDLE_TIMEOUT),
            f"{where} control_idle_timeout",
        ),
    )


def _max_connections(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: must be a whole number >= 1, not {value!r}")
    return value


def _idle_timeout(value: object, where: str) -> float:
    seconds = validate.seconds(value, f"{where}:", error=ConfigError, positive=True)
    if seconds < 1:
        # procwork ctl, on a loaded machine, needs time to send its request.
        raise ConfigError(f"{where}: must be at least 1 s, not {value!r}")
    return seconds


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
    kwargs = dict(entry)
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


_KIND: dict[Any, str] = {
    ServiceSpec: "service",
    CheckSpec: "check",
    Rule: "rule",
    AlertSpec: "alert",
}


def _rule_kwargs(kwargs: dict[str, Any], where: str) -> dict[str, Any]:
    if "max_rss" in kwargs:
        kwargs["max_rss"] = _size(kwargs["max_rss"], f"{where} max_rss")
    if "allow_pids" in kwargs:
        pids = kwargs["allow_pids"]
        if not isinstance(pids, list) or not all(isinstance(p, int) for p in pids):
            raise ConfigError(f"{where}: allow_pids must be a list of pids")
        kwargs["allow_pids"] = frozenset(pids)
    return kwargs


def _substitute(value: Any, old: str, new: str) -> Any:
    """``value`` with ``old`` replaced by ``new`` in every string in it."""
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [_substitute(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, old, new) for k, v in value.items()}
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


def _interval(value: object, where: str, *, zero: bool = False) -> float:
    """Seconds between runs: finite, and not so short it is a busy loop."""
    return validate.seconds(
        value,
        f"{where}:",
        error=ConfigError,
        positive=not zero,
        minimum=MIN_INTERVAL,
    )


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
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{where}: must be a number > 0 or false, not {value!r}")
    return float(value)


def _socket(value: object, where: str, file: _File) -> tuple[str | None, bool]:
    """``socket``: a path (relative to the config's directory), or false."""
    if value is None:
        return None, True
    if value is False:
        return None, False
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f"{where} socket: must be the control socket's path or false, not {value!r}"
        )
    return file.path(value), True


def _token(value: object, http_control: bool, where: str) -> str | None:
    if value is not None and (not isinstance(value, str) or len(value) < MIN_TOKEN):
        raise ConfigError(
            f"{where} http_token: must be a secret string of at least "
            f'{MIN_TOKEN} characters (e.g. http_token = "${{PROCWORK_TOKEN}}")'
        )
    if http_control and value is None:
        raise ConfigError(
            f"{where} http_control: true needs http_token, the secret HTTP "
            "control requests carry as 'Authorization: Bearer TOKEN'"
        )
    return value


def _http(value: object, where: str) -> tuple[str, int] | None:
    if value is False:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where} http: must be 'HOST:PORT' or false, not {value!r}")
    return parse_http(value, f"{where} http")


# -- reading files and includes ----------------------------------------------


@dataclass(frozen=True)
class _File:
    """One TOML file of the config: the main one or an included one."""

    source: str
    data: Mapping[str, Any]
    base_dir: str | None  # relative paths in it are resolved against this

    def relative_to(self) -> str:
        """What a relative path in this file is relative to, for people."""
        if self.base_dir is None:
            return f"the monitor's working directory {os.getcwd()}"
        return f"{self.base_dir}, the config file's directory"

    def path(self, path: str) -> str:
        if self.base_dir is None or os.path.isabs(path):
            return path
        return os.path.normpath(os.path.join(self.base_dir, path))


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: cannot read config: not UTF-8 text ({e})") from None


def _toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None


def _includes(
    data: Mapping[str, Any],
    source: str,
    base_dir: str | None,
    expand: _Expander,
) -> list[_File]:
    """The files ``include = [...]`` names, read, in order (each once)."""
    patterns = data.get("include", [])
    where = f"{source}: include"
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, list) or not all(
        isinstance(p, str) and p for p in patterns
    ):
        raise ConfigError(
            f"{where}: must be a list of file names or globs, like "
            f'["conf.d/*.toml"], not {patterns!r}'
        )
    main = _File(source, data, base_dir)
    files: list[_File] = []
    seen = {os.path.abspath(source)}
    for pattern in patterns:
        pattern = expand(pattern, where)
        full = main.path(pattern)
        matches = sorted(glob.glob(full))
        if not matches and not glob.has_magic(pattern):
            raise ConfigError(
                f"{where}: {full!r} does not exist"
                + (
                    ""
                    if os.path.isabs(pattern)
                    else f" ({pattern!r} is relative to {main.relative_to()})"
                )
            )
        for path in matches:
            if os.path.abspath(path) in seen:
                continue
            seen.add(os.path.abspath(path))
            included = _toml(_read(path), path)
            extra = set(included) - {"service", "check", "rule", "alert"}
            if extra:
                raise ConfigError(
                    f"{path}: an included file holds only [[service]], [[check]], "
                    f"[[rule]] and [[alert]] tables, not {sorted(extra)[0]!r} (that "
                    f"belongs in {source})"
                )
            files.append(_File(path, included, os.path.dirname(os.path.abspath(path))))
    return files


# -- ${VAR} expansion, {instance} and {python} ----------------------------------

_VARIABLE = re.compile(r"\$(?:(\$)|\{([^}]*)\})")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _Expander:
    """``${VAR}``, ``${VAR:-default}`` and ``$$`` in every string of a value.

    Like a shell's: ``${VAR:-default}`` takes the default when VAR is unset
    or empty. A ``$`` followed by anything else is left as it is.
    """

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def __call__(self, value: Any, where: str) -> Any:
        if isinstance(value, str):
            return _VARIABLE.sub(lambda m: self._one(m, where), value)
        if isinstance(value, list):
            return [self(v, where) for v in value]
        if isinstance(value, dict):
            return {k: self(v, f"{where}.{k}") for k, v in value.items()}
        return value

    def _one(self, match: re.Match[str], where: str) -> str:
        if match.group(1):
            return "$"
        inner = match.group(2)
        name, sep, default = inner.partition(":-")
        if not _NAME.fullmatch(name):
            raise ConfigError(
                f"{where}: ${{{inner}}} is not ${{NAME}} or ${{NAME:-default}}; "
                "write $$ for a literal $"
            )
        value = self._environ.get(name)
        if sep:
            return value or default
        if value is None:
            raise ConfigError(
                f"{where}: ${{{name}}} is not set in the monitor's environment; "
                f"give a default with ${{{name}:-default}}, or write $$ for a "
                "literal $"
            )
        return value


def _prepare(entry: Mapping[str, Any], where: str, expand: _Expander) -> dict[str, Any]:
    """An entry with ``${VAR}`` expanded and ``{python}`` substituted."""
    named = _named(where, entry.get("name"))
    return {
        key: _substitute(expand(value, f"{named} {key}"), "{python}", sys.executable)
        for key, value in entry.items()
    }


def _named(where: str, name: object) -> str:
    return f"{where} ({name!r})" if isinstance(name, str) else where


# -- services ------------------------------------------------------------------------


def _services(
    entry: Mapping[str, Any],
    where: str,
    file: _File,
    expand: _Expander,
) -> Iterator[ServiceSpec]:
    """The service(s) of one [[service]] entry: ``numprocs`` instances."""
    entry = _prepare(entry, where, expand)
    count = entry.pop("numprocs", 1)
    named = _named(where, entry.get("name"))
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(
            f"{named} numprocs: must be a whole number >= 1, not {count!r}"
        )
    name = entry.get("name")
    if count > 1 and isinstance(name, str) and "{instance}" not in name:
        raise ConfigError(
            f"{named} numprocs: {count} instances need {{instance}} in the name, "
            f'like name = "{name}-{{instance}}"'
        )
    for instance in range(count):
        # {instance} is 0 in a service without numprocs, as supervisord's
        # process_num is.
        one = _substitute(entry, "{instance}", str(instance))
        spec = _build(ServiceSpec, one, where)
        spec = _resolved_service(spec, file, _named(where, spec.name))
        yield spec


def _resolved_service(spec: ServiceSpec, file: _File, where: str) -> ServiceSpec:
    """Relative ``cwd`` and command paths made absolute (see :class:`_File`)."""
    changes: dict[str, Any] = {}
    if spec.cwd is not None and not os.path.isabs(spec.cwd):
        changes["cwd"] = file.path(spec.cwd)
    # Log files, like other paths, are relative to the config's directory.
    for key in ("stdout_log", "stderr_log"):
        path = getattr(spec, key)
        if path is not None and not os.path.isabs(path):
            changes[key] = file.path(path)
    cwd = changes.get("cwd", spec.cwd)
    program = spec.argv[0]
    if os.sep in program and not os.path.isabs(program):
        # Where the service runs, as exec would; else next to the config.
        absolute = (
            file.path(program)
            if cwd is None
            else os.path.normpath(os.path.join(cwd, program))
        )
        changes["command"] = (absolute, *spec.argv[1:])
    if not changes:
        return spec
    try:
        return dataclasses.replace(spec, **changes)
    except ConfigError as e:  # pragma: no cover - the spec was valid before
        raise ConfigError(f"{where}: {e}") from None


def _resolved_check(check: CheckSpec, file: _File) -> CheckSpec:
    changes: dict[str, Any] = {}
    for key in ("command", "on_failure"):
        argv = getattr(check, key)
        if key == "command" and check.host is not None:
            continue  # a path on the remote host: not relative to this file
        if argv and os.sep in argv[0] and not os.path.isabs(argv[0]):
            changes[key] = (file.path(argv[0]), *argv[1:])
    return dataclasses.replace(check, **changes) if changes else check


def _service_env(spec: ServiceSpec) -> Mapping[str, str] | None:
    if spec.env is None:
        return None if spec.inherit_env else {}
    return {**os.environ, **spec.env} if spec.inherit_env else spec.env


def _once(
    where_of: dict[tuple[str, str], str], kind: str, name: str, where: str
) -> None:
    first = where_of.get((kind, name))
    if first is not None:
        first_file, _, first_entry = first.partition(": ")
        if first_file == where.partition(": ")[0]:
            first = first_entry  # in the same file: the entry is enough
        raise ConfigError(
            f"{where}: {kind} {name!r} is defined twice (first at {first})"
        )
    where_of[(kind, name)] = where


def _after_defined(spec: ServiceSpec, earlier: list[ServiceSpec], where: str) -> None:
    # The supervisor starts a service only after those it names, and rejects
    # a name it has not been given yet: say so here, naming the file.
    names = {s.name for s in earlier}
    for after in spec.after_names:
        if after not in names:
            raise ConfigError(
                f"{_named(where, spec.name)}: after names {after!r}, which is not a "
                "[[service]] defined before it"
            )


# -- what this machine can run -------------------------------------------------


def _runnable(
    argv: Sequence[str],
    where: str,
    file: _File,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Reject a command that cannot start here, and a missing ``cwd``."""
    if cwd is not None and not os.path.isdir(cwd):
        where_cwd = where.rsplit(" ", 1)[0] + " cwd"
        problem = "is not a directory" if os.path.exists(cwd) else "does not exist"
        raise ConfigError(
            f"{where_cwd}: {cwd!r} {problem} (a relative cwd is relative to "
            f"{file.relative_to()})"
        )
    program = argv[0]
    if os.sep in program:
        if not os.path.exists(program):
            raise ConfigError(
                f"{where}: {program!r} does not exist (a relative command is "
                f"relative to the service's cwd, else to {file.relative_to()})"
            )
        if os.path.isdir(program) or not os.access(program, os.X_OK):
            raise ConfigError(f"{where}: {program!r} is not an executable file")
        return
    path = os.pathsep.join(os.get_exec_path(env))
    if shutil.which(program, path=path) is None:
        raise ConfigError(f"{where}: {program!r} not found on PATH ({path})")


# -- writing the effective config -----------------------------------------------


def dump_config(config: MonitorConfig) -> str:
    """The effective config as TOML: includes inlined, instances expanded,
    ``${VAR}`` and ``{python}`` substituted, every key with its value.

    Loading the text gives the same config back (``$`` is written ``$$``).
    """
    out = [
        f"# The effective config of {config.source}: includes inlined, instances",
        "# expanded, variables substituted, every key with its value.",
    ]
    out += [f"# Included: {path}" for path in config.included]
    out += ["", "[monitor]"]
    http: object = (
        False if config.http is None else f"{config.http[0]}:{config.http[1]}"
    )
    if config.http is not None and ":" in config.http[0]:
        http = f"[{config.http[0]}]:{config.http[1]}"
    monitor: dict[str, object] = {
        "summary_every": config.summary_every,
        "rules_every": config.rules_every,
        "http": http,
        "json_log": config.json_log,
        "max_running": config.max_running,
        "max_load": False if config.max_load is None else config.max_load,
        "socket": config.socket if config.control else False,
        "http_control": config.http_control,
        "http_token": config.http_token,
        "http_max_connections": config.http_max_connections,
        "control_max_connections": config.control_max_connections,
        "control_idle_timeout": config.control_idle_timeout,
    }
    out += _toml_keys(monitor)
    for kind, items in (
        ("service", config.services),
        ("check", config.checks),
        ("rule", config.rules),
        ("alert", config.alerts),
    ):
        for item in items:
            values = {
                f.name: getattr(item, f.name)
                for f in dataclasses.fields(item)
                if f.init
            }
            if kind == "service" and values.get("max_restarts") is None:
                values["max_restarts"] = False  # TOML has no null
            out += ["", f"[[{kind}]]", *_toml_keys(values)]
    return "\n".join(out) + "\n"


def _toml_keys(values: Mapping[str, object]) -> list[str]:
    return [
        f"{key} = {_toml_value(value)}"
        for key, value in values.items()
        if value is not None and value != () and value != frozenset()
    ]


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):  # a signal: by name
        return _toml_string(str(value.name))
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, Mapping):
        items = ", ".join(
            f"{_toml_string(str(k))} = {_toml_value(v)}" for k, v in value.items()
        )
        return "{ " + items + " }" if items else "{}"
    if isinstance(value, frozenset | set):
        return _toml_value(sorted(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")  # pragma: no cover


def _toml_string(text: str) -> str:
    # A script keeps its lines: a multi-line string (the newline right after
    # the opening quotes is not part of it).
    multiline = "\n" in text
    escaped = []
    for char in text.replace("$", "$$"):  # read back, $$ is one $
        if char == '"' or char == "\\":
            escaped.append("\\" + char)
        elif char == "\n":
            escaped.append("\n" if multiline else "\\n")
        elif char == "\t":
            escaped.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    if multiline:
        return '"""\n' + "".join(escaped) + '"""'
    return '"' + "".join(escaped) + '"'
