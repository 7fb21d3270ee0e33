"""The monitor's TOML config: services, checks and rules, validated at start.

A bad config is rejected before anything runs, with a message that names the
file, the table and the key, and says what is wrong; so is what cannot run
here (a command not found, a missing ``cwd``, an unknown user). The keys of
each table are the fields of its spec (``ServiceSpec``, ``CheckSpec``,
``Rule``, ``AlertSpec``, and :class:`MonitorConfig` for ``[monitor]``),
which check their values (:mod:`procwork._fields`); an unknown key is
answered with what was probably meant (:mod:`._didyoumean`). Reading the
files, ``include`` and ``${VAR}`` are :mod:`._configfiles`; writing the
effective config back as TOML is :mod:`._toml`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from importlib import resources
from typing import Any, TypeVar

import attrs
from attrs import converters

from procwork import _validate as validate
from procwork._defaults import LOG_LEVELS
from procwork._errors import ConfigError
from procwork._fields import (
    NOT_IN_FILE,
    FieldError,
    file_keys,
    keyed,
    required_keys,
    spec_class,
    toml,
)
from procwork._validate import MIN_INTERVAL
from procwork.monitor._alerts import AlertSpec
from procwork.monitor._checks import CheckSpec
from procwork.monitor._configfiles import (
    ConfigFile,
    Expander,
    includes,
    named,
    parse_toml,
    prepare,
    read_file,
    substitute,
)
from procwork.monitor._didyoumean import FOREIGN_KEYS, Foreign, unknown_key
from procwork.monitor._logsocket import DEFAULT_PATHS, FACILITIES, SYSLOG_FORMATS
from procwork.monitor._mail import MailServer
from procwork.monitor._names import family_of
from procwork.monitor._pyprobe import module_file
from procwork.monitor._rules import Rule
from procwork.monitor._servicerules import ServiceRule
from procwork.supervisor import ServiceSpec

__all__ = [
    "MIN_INTERVAL",
    "MonitorConfig",
    "default_config_text",
    "load_config",
    "parse_config",
    "parse_http",
]

DEFAULT_HTTP = ("127.0.0.1", 8642)
BUILTIN = "<built-in config>"
DEFAULT_HTTP_MAX_CONNECTIONS = 64
DEFAULT_CONTROL_MAX_CONNECTIONS = 64
DEFAULT_CONTROL_IDLE_TIMEOUT = 60.0

#: The shortest ``http_token`` accepted: a guessable token is no lock.
MIN_TOKEN = 16

_Spec = TypeVar("_Spec")


def _token(config: Any, attribute: Any, value: object) -> None:
    # The message never shows the value: it is a secret.
    if not isinstance(value, str) or len(value) < MIN_TOKEN:
        raise validate.Invalid(
            f"must be a secret string of at least {MIN_TOKEN} characters (e.g. "
            'http_token = "${PROCWORK_TOKEN}")'
        )


def _needs_token(config: Any, attribute: Any, value: bool) -> None:
    if value and config.http_token is None:
        raise validate.Invalid(
            "= true needs http_token, the secret HTTP control requests carry as "
            "'Authorization: Bearer TOKEN'"
        )


def _log_target(config: Any, attribute: Any, value: object) -> None:
    kind, colon, path = value.partition(":") if isinstance(value, str) else ("", "", "")
    if kind == "stdout" and not colon:
        return
    if kind in DEFAULT_PATHS and (not colon or path):
        return
    raise validate.Invalid(
        'must be "stdout", "syslog" (/dev/log), "journald" (its native socket), '
        'or "syslog:PATH" or "journald:PATH" for another socket, not '
        + validate.clip(repr(value))
    )


def _http_text(config: MonitorConfig) -> str | None:
    if config.http is None:
        return None
    host, port = config.http
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _socket_text(config: MonitorConfig) -> str | bool | None:
    return config.socket if config.control else False


def _smtp_text(config: MonitorConfig) -> str | None:
    if config.smtp is None:
        return None
    return str(MailServer(*config.smtp))


@spec_class(
    "[monitor]", entry=lambda arguments: f"{arguments.get('source')}: [monitor]"
)
@attrs.frozen(field_transformer=keyed)
class MonitorConfig:
    """A validated monitor config.

    The fields from ``source`` to ``alerts`` and ``included`` come from the
    whole file; the others are the keys of its ``[monitor]`` table.

    Attributes:
        source: The file it came from (or ``"<built-in config>"``).
        services: Supervised services, in start order.
        checks: Periodic checks.
        rules: Watchdog rules, applied every ``rules_every`` seconds.
        summary_every: Seconds between status summary lines (0: none).
        http: ``(host, port)`` for the status endpoint, or None for none
            (TOML: ``"HOST:PORT"`` or ``false``).
        json_log: Log JSON lines instead of text.
        max_running: Cap of the process scheduler (None: its default).
        max_load: Load per core above which normal/low runs wait (None,
            TOML ``false``: no limit).
        included: The files ``include`` brought in, in order.
        socket: The control socket's path; None for the default
            (see :func:`~procwork.monitor.default_socket_path`).
        control: Serve the control socket at all (``socket = false``: no).
        http_control: Accept control requests over HTTP (``POST
            /control``) with ``Authorization: Bearer http_token``.
        http_token: The token HTTP control requests must carry.
        service_rules: Bounds on what services use, from their cgroups
            (``[[service_rule]]``, see :class:`ServiceRule`).
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
        contain: Run each service in a cgroup of its own where the monitor
            may make cgroups (root, or a delegated cgroup v2 subtree), so
            that stopping it, its limits and the monitor's death reach
            everything it started (see :mod:`procwork.monitor._contain`).
            False: process groups only.
        log: Where the monitor's log goes: ``"stdout"``, ``"syslog"`` (the
            local syslog daemon's ``/dev/log``), ``"journald"`` (journald's
            native protocol), or ``"syslog:PATH"`` / ``"journald:PATH"`` for
            another socket (relative to the config's directory).
        log_level: The least level logged: ``"debug"``, ``"info"``,
            ``"warn"`` or ``"error"`` (``--log-level`` wins over it).
        syslog_facility: The facility of the log's syslog and journald
            messages (``"daemon"``, ``"local0"``, ...).
        syslog_format: ``"rfc3164"`` (as ``syslog(3)`` writes to /dev/log)
            or ``"rfc5424"``.
        families: The services of each ``[[service]]`` whose name has
            ``{instance}`` (``numprocs``), by family name (``worker`` for
            ``worker-{instance}``): ``procwork ctl restart worker`` names
            them all (see :func:`~procwork.monitor._names.family_of`).
        smtp: ``(host, port)`` of the SMTP server mail alerts are sent
            through (TOML: ``"HOST:PORT"``; port 25 if left out); None for
            none.
        smtp_from: The sender of mail alerts; None for ``procwork@HOSTNAME``.
        nice: The monitor's own nice value, -20..0 (0: as started), not
            inherited by what it starts (see
            :mod:`procwork.monitor._cpupriority`); None (the default):
            :data:`~procwork.monitor._cpupriority.DEFAULT_NICE` where the
            monitor may raise its priority, else as started, quietly.
        realtime: Run the monitor at real-time priority (``SCHED_RR`` 1),
            not inherited by what it starts.

    Raises:
        ConfigError: A key is invalid; the message names the source, the
            table and the key.
    """

    source: str = attrs.field(metadata=NOT_IN_FILE)
    services: tuple[ServiceSpec, ...] = attrs.field(default=(), metadata=NOT_IN_FILE)
    checks: tuple[CheckSpec, ...] = attrs.field(default=(), metadata=NOT_IN_FILE)
    rules: tuple[Rule, ...] = attrs.field(default=(), metadata=NOT_IN_FILE)
    rules_every: float = attrs.field(
        default=5.0, converter=validate.duration, validator=validate.interval
    )
    summary_every: float = attrs.field(
        default=60.0, converter=validate.duration, validator=validate.interval_or_zero
    )
    http: tuple[str, int] | None = attrs.field(
        default=DEFAULT_HTTP,
        converter=validate.http_address,
        metadata=toml(false_is_none=True, write=_http_text),
    )
    json_log: bool = attrs.field(default=False, validator=validate.boolean)
    max_running: int | None = attrs.field(
        default=None, validator=validate.optional(validate.whole(1))
    )
    max_load: float | None = attrs.field(
        default=2.0,
        converter=converters.optional(validate.number),
        validator=validate.optional(validate.positive),
        metadata=toml(false_is_none=True),
    )
    included: tuple[str, ...] = attrs.field(default=(), metadata=NOT_IN_FILE)
    socket: str | None = attrs.field(
        default=None,
        converter=converters.optional(validate.path),
        metadata=toml(write=_socket_text),
    )
    control: bool = attrs.field(
        default=True, validator=validate.boolean, metadata=NOT_IN_FILE
    )
    http_control: bool = attrs.field(
        default=False, validator=[validate.boolean, _needs_token]
    )
    http_token: str | None = attrs.field(
        default=None, repr=False, validator=validate.optional(_token)
    )
    alerts: tuple[AlertSpec, ...] = attrs.field(default=(), metadata=NOT_IN_FILE)
    service_rules: tuple[ServiceRule, ...] = attrs.field(
        default=(), metadata=NOT_IN_FILE
    )
    http_max_connections: int = attrs.field(
        default=DEFAULT_HTTP_MAX_CONNECTIONS, validator=validate.whole(1)
    )
    control_max_connections: int = attrs.field(
        default=DEFAULT_CONTROL_MAX_CONNECTIONS, validator=validate.whole(1)
    )
    control_idle_timeout: float = attrs.field(
        default=DEFAULT_CONTROL_IDLE_TIMEOUT,
        converter=validate.duration,
        # procwork ctl, on a loaded machine, needs time to send its request.
        validator=validate.at_least(1.0, "procwork ctl needs time to send a request"),
    )
    contain: bool = attrs.field(default=True, validator=validate.boolean)

    # The monitor's own log (see _logs.py and _logsocket.py).
    log: str = attrs.field(default="stdout", validator=_log_target)
    log_level: str = attrs.field(default="info", validator=validate.one_of(LOG_LEVELS))
    syslog_facility: str = attrs.field(
        default="daemon", validator=validate.one_of(FACILITIES)
    )
    syslog_format: str = attrs.field(
        default="rfc3164", validator=validate.one_of(SYSLOG_FORMATS)
    )
    # The numprocs families: (family, its instances' names), for procwork
    # ctl (see _names.py). How the services were written, not what they are:
    # not compared (--check-config's TOML writes each instance out, and
    # must load back equal).
    families: tuple[tuple[str, tuple[str, ...]], ...] = attrs.field(
        default=(), eq=False, metadata=NOT_IN_FILE
    )
    # Mail alerts (see _mail.py).
    smtp: tuple[str, int] | None = attrs.field(
        default=None, converter=validate.smtp_address, metadata=toml(write=_smtp_text)
    )
    smtp_from: str | None = attrs.field(
        default=None, validator=validate.optional(validate.mail_address)
    )
    # The monitor's own CPU priority (see _cpupriority.py): a negative nice
    # only, since what it starts never inherits it (SCHED_RESET_ON_FORK
    # resets a negative nice, not a positive one).
    nice: int | None = attrs.field(
        default=None, validator=validate.optional(validate.whole(-20, 0))
    )
    realtime: bool = attrs.field(default=False, validator=validate.boolean)

    @property
    def mail_server(self) -> MailServer | None:
        """Where mail alerts go (``smtp`` and ``smtp_from``), if anywhere."""
        if self.smtp is None:
            return None
        return MailServer(*self.smtp, sender=self.smtp_from)


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
    text = read_file(path)
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
    expand = Expander(os.environ if environ is None else environ)
    data = parse_toml(text, source)
    tables = {"monitor", "service", "check", "rule", "service_rule", "alert"}
    unknown = set(data) - tables - {"include"}
    if unknown:
        raise ConfigError(
            f"{source}: unknown table {sorted(unknown)[0]!r}; expected [monitor], "
            "[[service]], [[check]], [[rule]], [[service_rule]] and [[alert]] "
            "(and include)"
        )
    monitor = _table(data.get("monitor", {}), f"{source}: [monitor]")
    _no_unknown_keys(monitor, file_keys(MonitorConfig), f"{source}: [monitor]")
    monitor = {
        key: expand(value, f"{source}: [monitor] {key}")
        for key, value in monitor.items()
    }
    files = [ConfigFile(source, data, base_dir)]
    included = includes(data, source, base_dir, expand)
    files += included

    services: list[ServiceSpec] = []
    families: dict[str, list[str]] = {}
    checks: list[CheckSpec] = []
    rules: list[Rule] = []
    alerts: list[AlertSpec] = []
    service_rules: list[ServiceRule] = []
    mailing: list[tuple[int, str]] = []  # (index, where) of the mail alerts
    acting: list[tuple[CheckSpec, str]] = []  # checks and where, for their actions
    where_of: dict[tuple[str, str], str] = {}  # (kind, name) -> where defined
    # What must exist on this machine, checked once the config is consistent.
    runnable: list[
        tuple[Sequence[str], str, ConfigFile, str | None, Mapping[str, str] | None]
    ] = []
    for file in files:
        for i, entry in enumerate(_array(file.data, "service", file.source)):
            where = f"{file.source}: [[service]] #{i + 1}"
            for family, service in _services(entry, where, file, expand):
                if family is not None:
                    families.setdefault(family, []).append(service.name)
                service_named = named(where, service.name)
                _once(where_of, "service", service.name, service_named)
                _after_defined(service, services, where)
                services.append(service)
                runnable.append(
                    (
                        service.argv,
                        f"{service_named} command",
                        file,
                        service.cwd,
                        _service_env(service),
                    )
                )
        for i, entry in enumerate(_array(file.data, "check", file.source)):
            where = f"{file.source}: [[check]] #{i + 1}"
            entry = prepare(entry, where, expand)
            check = _build(CheckSpec, entry, where)
            where = named(where, check.name)
            _once(where_of, "check", check.name, where)
            check = _resolved_check(check, file)
            if check.command is not None and check.host is None:
                # (a remote command is found there, not here)
                runnable.append((check.command, f"{where} command", file, None, None))
            if check_system:
                _python_module(check, where)
            acting.append((check, where))
            if check.on_failure is not None:
                runnable.append(
                    (check.on_failure, f"{where} on_failure", file, None, None)
                )
            checks.append(check)
        for i, entry in enumerate(_array(file.data, "rule", file.source)):
            where = f"{file.source}: [[rule]] #{i + 1}"
            rule = _build(Rule, prepare(entry, where, expand), where)
            _once(where_of, "rule", rule.name, named(where, rule.name))
            rules.append(rule)
        for i, entry in enumerate(_array(file.data, "service_rule", file.source)):
            where = f"{file.source}: [[service_rule]] #{i + 1}"
            service_rule = _build(ServiceRule, prepare(entry, where, expand), where)
            _once(
                where_of,
                "service rule",
                service_rule.name,
                named(where, service_rule.name),
            )
            service_rules.append(service_rule)
        for i, entry in enumerate(_array(file.data, "alert", file.source)):
            where = f"{file.source}: [[alert]] #{i + 1}"
            alert = _build(AlertSpec, prepare(entry, where, expand), where)
            where = named(where, alert.name)
            _once(where_of, "alert", alert.name, where)
            command = alert.command
            if command is not None:
                if os.sep in command[0] and not os.path.isabs(command[0]):
                    command = (file.path(command[0]), *command[1:])
                    alert = attrs.evolve(alert, command=command)
                runnable.append((command, f"{where} command", file, None, None))
            if alert.mail is not None:
                mailing.append((len(alerts), where))
            alerts.append(alert)

    checks = _acts_on_services(acting, services, families)
    if check_system:
        for argv, where, file, cwd, env in runnable:
            _runnable(argv, where, file, cwd, env)
    config = MonitorConfig(
        source=source,
        services=tuple(services),
        checks=tuple(checks),
        rules=tuple(rules),
        included=tuple(f.source for f in included),
        alerts=tuple(alerts),
        service_rules=tuple(service_rules),
        families=tuple((name, tuple(names)) for name, names in families.items()),
        **_monitor_keys(monitor, files[0]),
    )
    return _with_mail_server(config, mailing)


def _with_mail_server(
    config: MonitorConfig, mailing: Sequence[tuple[int, str]]
) -> MonitorConfig:
    """The mail alerts given ``[monitor] smtp``'s server; one without it is
    refused, naming the alert."""
    server = config.mail_server
    if not mailing:
        return config
    if server is None:
        raise ConfigError(
            f"{mailing[0][1]}: mail needs the SMTP server to send it through: "
            f'smtp = "HOST:PORT" in [monitor] (e.g. "127.0.0.1:25", the '
            "machine's relay)"
        )
    alerts = list(config.alerts)
    for index, _where in mailing:
        alerts[index] = attrs.evolve(alerts[index], smtp=server)
    return attrs.evolve(config, alerts=tuple(alerts))


def _monitor_keys(monitor: Mapping[str, Any], main: ConfigFile) -> dict[str, Any]:
    """The [monitor] table as MonitorConfig's keywords."""
    keys = _from_file(MonitorConfig, monitor)
    socket = keys.get("socket")
    if socket is False:  # no control socket at all
        del keys["socket"]
        keys["control"] = False
    elif isinstance(socket, str) and socket:
        keys["socket"] = main.path(socket)
    kind, colon, path = str(keys.get("log", "")).partition(":")
    if colon and path:
        keys["log"] = f"{kind}:{main.path(path)}"
    return keys


def parse_http(value: str, where: str = "--http") -> tuple[str, int]:
    """``"HOST:PORT"`` (port 0: any free port) to ``(host, port)``."""
    try:
        address = validate.http_address(value)
    except validate.Invalid as e:
        raise ConfigError(f"{where} {e.problem}") from None
    assert address is not None  # a string is never None
    return address


# -- tables and entries --------------------------------------------------------


def _table(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a table")
    return value


def _array(data: Mapping[str, Any], key: str, source: str) -> list[dict[str, Any]]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{source}: {key!r} must be written as [[{key}]] tables")
    return value


def _no_unknown_keys(
    table: Mapping[str, Any],
    known: Mapping[str, object] | set[str],
    where: str,
    foreign: Mapping[str, Foreign] | None = None,
) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(f"{where}: {unknown_key(key, list(known), foreign)}")


def _from_file(cls: type, table: Mapping[str, Any]) -> dict[str, Any]:
    """A table's values as keywords of ``cls``: ``false`` is None where it
    stands for none (TOML has no null)."""
    keys = file_keys(cls)
    return {
        key: None if value is False and keys[key].false_is_none else value
        for key, value in table.items()
    }


def _build(cls: type[_Spec], entry: dict[str, Any], where: str) -> _Spec:
    """The spec of one entry (its values checked by the spec), or a
    ConfigError naming the file, the entry and the key."""
    where = named(where, entry.get("name"))
    extra = {"numprocs"} if cls is ServiceSpec else set()
    foreign = FOREIGN_KEYS if cls is ServiceSpec else None
    _no_unknown_keys(entry, set(file_keys(cls)) | extra, where, foreign)
    for key in required_keys(cls):
        if key not in entry:
            raise ConfigError(f"{where}: missing required key {key!r}")
    try:
        return cls(**_from_file(cls, entry))
    except FieldError as e:
        raise ConfigError(f"{where}: {e.detail}") from None


# -- services ------------------------------------------------------------------------


def _services(
    entry: Mapping[str, Any],
    where: str,
    file: ConfigFile,
    expand: Expander,
) -> Iterator[tuple[str | None, ServiceSpec]]:
    """The service(s) of one [[service]] entry: ``numprocs`` instances, each
    with the family they belong to (None for a name without ``{instance}``)."""
    entry = prepare(entry, where, expand)
    count = entry.pop("numprocs", 1)
    entry_named = named(where, entry.get("name"))
    try:
        validate.whole(1)(None, None, count)
    except validate.Invalid as e:
        raise ConfigError(f"{entry_named}: numprocs {e.problem}") from None
    name = entry.get("name")
    family = family_of(name) if isinstance(name, str) else None
    if count > 1 and isinstance(name, str) and "{instance}" not in name:
        raise ConfigError(
            f"{entry_named}: numprocs = {count} needs {{instance}} in the name, "
            f'like name = "{name}-{{instance}}"'
        )
    for instance in range(count):
        # {instance} is 0 in a service without numprocs, as supervisord's
        # process_num is.
        one = substitute(entry, "{instance}", str(instance))
        service = _build(ServiceSpec, one, where)
        yield family, _resolved_service(service, file, named(where, service.name))


def _resolved_service(spec: ServiceSpec, file: ConfigFile, where: str) -> ServiceSpec:
    """Relative ``cwd`` and command paths made absolute (see :class:`ConfigFile`)."""
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
        return attrs.evolve(spec, **changes)
    except FieldError as e:  # pragma: no cover - the spec was valid before
        raise ConfigError(f"{where}: {e.detail}") from None


def _resolved_check(check: CheckSpec, file: ConfigFile) -> CheckSpec:
    changes: dict[str, Any] = {}
    # A python check's module is beside the config file; relative paths of
    # disk, file and pidfile are relative to it.
    if check.python is not None and check.module_dir is None:
        changes["module_dir"] = file.base_dir or os.getcwd()
    for key in ("disk", "file", "pidfile", "module_dir", "ca_file"):
        path = getattr(check, key)
        if path is not None and not os.path.isabs(path):
            changes[key] = file.path(path)
    for key in ("command", "on_failure"):
        argv = getattr(check, key)
        if key == "command" and check.host is not None:
            continue  # a path on the remote host: not relative to this file
        if argv and os.sep in argv[0] and not os.path.isabs(argv[0]):
            changes[key] = (file.path(argv[0]), *argv[1:])
    return attrs.evolve(check, **changes) if changes else check


def _python_module(check: CheckSpec, where: str) -> None:
    """Reject a python check whose module is not beside the config file."""
    if check.python is None:
        return
    directory = check.module_dir or os.getcwd()
    module = check.python.partition(":")[0]
    if module_file(directory, module) is None:
        path = os.path.join(directory, *module.split("."))
        raise ConfigError(
            f"{where} python: no module {module!r} beside the config file "
            f"(looked for {path}.py and {path}/__init__.py)"
        )


def _acts_on_services(
    acting: Sequence[tuple[CheckSpec, str]],
    services: Sequence[ServiceSpec],
    families: Mapping[str, Sequence[str]],
) -> list[CheckSpec]:
    """The checks, a numprocs family in ``restart`` or ``services`` replaced
    by its instances; one naming no [[service]] is refused."""
    names = {service.name for service in services}
    checks = []
    for check, where in acting:
        changes: dict[str, Any] = {}
        for key in ("restart", "services"):
            named: list[str] = []
            for name in getattr(check, key):
                if name in names:
                    named.append(name)
                elif name in families:
                    named += families[name]
                else:
                    raise ConfigError(
                        f"{where}: {key} names {name!r}, which is not a [[service]]"
                    )
            if tuple(named) != getattr(check, key):
                changes[key] = tuple(dict.fromkeys(named))
        checks.append(attrs.evolve(check, **changes) if changes else check)
    return checks


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
                f"{named(where, spec.name)}: after names {after!r}, which is not a "
                "[[service]] defined before it"
            )


# -- what this machine can run -------------------------------------------------


def _runnable(
    argv: Sequence[str],
    where: str,
    file: ConfigFile,
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
