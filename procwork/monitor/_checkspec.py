"""A check's spec: what it asks (one kind of question), how often, and what
to do when it fails.

A ``[[check]]`` has exactly one of the keys of :data:`KINDS`; the keys of
:data:`KIND_KEYS` belong to one kind each, the rest to every check. How it
runs is :mod:`procwork.monitor._checks`'s.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from signal import Signals
from typing import Any

import attrs
from attrs import converters

from procwork import _validate as validate
from procwork._fields import keyed, spec_class, toml
from procwork._scheduler import PRIORITIES

__all__ = ["KINDS", "KIND_KEYS", "CheckSpec"]


def _needs_host(spec: Any, attribute: Any, value: str) -> None:
    if spec.host is None:
        raise validate.Invalid("needs host")


#: The kinds of check: exactly one of these keys says what a check asks.
KINDS = (
    "command",
    "disk",
    "load",
    "memory",
    "file",
    "process",
    "python",
    "http",
    "tcp",
)

#: The keys that belong to one kind of check (the rest are every check's).
KIND_KEYS: Mapping[str, tuple[str, ...]] = {
    "command": ("host", "known_hosts", "identity"),
    "disk": ("max_used_percent", "max_inodes_percent"),
    "load": ("max_per_core", "max_cpu_pressure"),
    "memory": ("min_available_percent",),
    "file": ("max_age", "min_size", "max_size", "contains"),
    "process": ("cmdline", "user", "min_count", "max_count", "pidfile"),
    "python": ("module_dir",),
    "http": (
        "method",
        "headers",
        "expect_status",
        "expect_body",
        "tls_min_days",
        "ca_file",
    ),
    "tcp": ("send", "expect"),
}


def _statuses(spec: Any) -> list[int | str] | None:
    """``expect_status`` as written: ``[200, "300-399"]``."""
    if spec.expect_status is None:
        return None
    return [low if low == high else f"{low}-{high}" for low, high in spec.expect_status]


def _optional(*validators: validate.Validator) -> Any:
    """An optional key of one kind of check: None when left out."""
    return attrs.field(
        default=None, kw_only=True, validator=validate.optional(*validators)
    )


def _optional_converted(convert: Callable[[Any], Any], *validators: Any) -> Any:
    return attrs.field(
        default=None,
        kw_only=True,
        converter=converters.optional(convert),
        validator=validate.optional(*validators),
    )


@spec_class("check")
@attrs.frozen(field_transformer=keyed)
class CheckSpec:
    """What to ask, how often, and what to do when it fails.

    Exactly one of ``command``, ``disk``, ``load``, ``memory``, ``file``,
    ``process``, ``python``, ``http``, ``tcp`` says what the check asks (its
    :attr:`kind`); the keys of :data:`KIND_KEYS` go with their kind only.
    Everything but ``name`` and ``command`` is keyword-only.

    Args:
        name: Unique name, used in logs and metrics.
        command: argv list, or a string split with shlex (no shell); kept
            as a tuple.
        every: Seconds between starts.
        timeout: Seconds a run may take (default: ``every``).
        priority: Scheduler priority of the check (default ``"high"``).
        on_failure: Command to run when the check starts failing (after
            ``failures`` runs in a row), once per failing episode and again
            at each ``repeat_every``, as ``command`` (default none).
        on_failure_priority: Its priority (default ``"critical"``).
        action_timeout: Seconds the action may take (default 60).
        failures: Runs in a row that must fail before the check counts as
            failing and the ``check.failed`` event is sent (default 1); it
            is sent once, then ``check.recovered`` once at the next ok run.
        repeat_every: While the check stays failing, send ``check.failed``
            again (a reminder) at most this often, in seconds (default 0:
            no reminders).
        start_delay: Seconds before the first run, so a check does not fail
            while the services it checks are starting. Default none: at
            once, or, for checks that share their ``every``, at the
            check's place in that interval (see :meth:`CheckRunner.start`);
            ``0`` runs it at once even then.
        host: Run ``command`` on ``"user@host:port"`` over SSH (see
            :func:`procwork.run`); ``on_failure`` still runs here. Default:
            here.
        known_hosts: known_hosts file for ``host`` (default
            ``~/.ssh/known_hosts``).
        identity: Private key file for ``host`` (default: ssh-agent, else
            ``~/.ssh/id_*``).
        disk: A path: fails when its file system is more than
            ``max_used_percent`` used (default 90), or its inodes more than
            ``max_inodes_percent`` (default 90).
        load: True: fails when the 1-minute load per core is above
            ``max_per_core`` (default 4), or the CPU pressure (PSI ``some
            avg10``, percent) above ``max_cpu_pressure`` (default: not read).
        memory: True: fails when less than ``min_available_percent`` of
            memory is available (default 10).
        file: A path: fails when it does not exist, is older than
            ``max_age``, smaller than ``min_size``, bigger than ``max_size``,
            or ``contains`` (a regex) is not in its last 64 KiB.
        process: A glob of process names: fails when fewer than
            ``min_count`` (default 1) or more than ``max_count`` processes
            match it, ``cmdline`` (a regex) and ``user``; with ``pidfile``,
            when the process it names does not run or match.
        python: ``"module:function"``, the module in ``module_dir`` (the
            config file's directory); see :mod:`procwork.monitor._pyprobe`.
        http: A URL: fails when no response comes (refused, timed out,
            DNS, TLS), its status is not in ``expect_status`` (statuses and
            ranges, default 200-399), its body does not match
            ``expect_body`` (a regex), or its certificate expires within
            ``tls_min_days``; sent with ``method`` (default GET) and
            ``headers``; ``ca_file`` the authorities to trust for https.
        tcp: ``"host:port"``: fails when it refuses, or does not answer
            ``send`` with ``expect`` (a regex) within the timeout.
        restart: Services to restart when the check starts failing (as
            ``on_failure`` runs), without a fork.
        signal: A signal to send then to ``services`` (both or neither).

    Every duration also takes a string with units (``"500ms"``, ``"5s"``,
    ``"2m"``, ``"1h"``, ``"1d"``, ``"1m30s"``).

    Raises:
        ConfigError: the message names the check and the key.
    """

    name: str = attrs.field(validator=validate.text)
    command: tuple[str, ...] | None = attrs.field(
        default=None, converter=converters.optional(validate.command)
    )
    every: float = attrs.field(
        kw_only=True, converter=validate.duration, validator=validate.interval
    )
    timeout: float = attrs.field(
        default=attrs.Factory(lambda spec: spec.every, takes_self=True),
        converter=validate.duration,
        validator=validate.positive,
    )
    priority: str = attrs.field(default="high", validator=validate.one_of(PRIORITIES))
    on_failure: tuple[str, ...] | None = attrs.field(
        default=None, converter=converters.optional(validate.command)
    )
    on_failure_priority: str = attrs.field(
        default="critical", validator=validate.one_of(PRIORITIES)
    )
    action_timeout: float = attrs.field(
        default=60.0, converter=validate.duration, validator=validate.positive
    )
    failures: int = attrs.field(default=1, validator=validate.whole(1))
    repeat_every: float = attrs.field(
        default=0.0, converter=validate.duration, validator=validate.non_negative
    )
    start_delay: float | None = attrs.field(
        default=None,
        converter=validate.optional_duration,
        validator=validate.optional(validate.non_negative),
    )
    host: str | None = attrs.field(
        default=None, validator=validate.optional(validate.host)
    )
    known_hosts: str | None = attrs.field(
        default=None,
        validator=validate.optional(validate.text, _needs_host),
    )
    identity: str | None = attrs.field(
        default=None,
        validator=validate.optional(validate.text, _needs_host),
    )
    # -- the checks the monitor answers itself (see _probes.py) --
    disk: str | None = _optional_converted(validate.path)
    max_used_percent: float | None = _optional(validate.percent)
    max_inodes_percent: float | None = _optional(validate.percent)
    load: bool | None = _optional_converted(validate.true)
    max_per_core: float | None = _optional_converted(validate.number, validate.positive)
    max_cpu_pressure: float | None = _optional(validate.percent)
    memory: bool | None = _optional_converted(validate.true)
    min_available_percent: float | None = _optional(validate.percent)
    file: str | None = _optional_converted(validate.path)
    # (optional_duration and optional_size, not wrapped: their fields are
    # found by their converter as taking units, see _fields.unit)
    max_age: float | None = attrs.field(
        default=None,
        kw_only=True,
        converter=validate.optional_duration,
        validator=validate.optional(validate.positive),
    )
    min_size: int | None = attrs.field(
        default=None,
        kw_only=True,
        converter=validate.optional_size,
        validator=validate.optional(validate.whole(0)),
    )
    max_size: int | None = attrs.field(
        default=None,
        kw_only=True,
        converter=validate.optional_size,
        validator=validate.optional(validate.whole(0)),
    )
    contains: str | None = _optional_converted(validate.pattern)
    process: str | None = _optional(validate.text)
    cmdline: str | None = _optional_converted(validate.pattern)
    user: str | None = _optional(validate.text)
    min_count: int | None = _optional(validate.whole(0))
    max_count: int | None = _optional(validate.whole(0))
    pidfile: str | None = _optional_converted(validate.path)
    python: str | None = _optional(validate.module_function)
    # Where a python check's module is: default the config file's directory
    # (set by the config loader, and so written in the effective config).
    module_dir: str | None = _optional_converted(validate.path)
    http: str | None = _optional(validate.web_url)
    method: str | None = _optional(validate.http_method)
    # (not hashed: a read-only mapping has no hash; equal specs still compare
    # equal, as ServiceSpec's env)
    headers: Mapping[str, str] | None = attrs.field(
        default=None,
        kw_only=True,
        converter=converters.optional(validate.headers),
        hash=False,
    )
    expect_status: tuple[tuple[int, int], ...] | None = attrs.field(
        default=None,
        kw_only=True,
        converter=converters.optional(validate.status_ranges),
        metadata=toml(write=_statuses),
    )
    expect_body: str | None = _optional_converted(validate.pattern)
    tls_min_days: int | None = _optional(validate.whole(0))
    ca_file: str | None = _optional_converted(validate.path)
    tcp: str | None = _optional(validate.host_port)
    send: str | None = _optional(validate.text)
    expect: str | None = _optional_converted(validate.pattern)
    # -- actions that need no fork --
    restart: tuple[str, ...] = attrs.field(
        default=(), kw_only=True, converter=validate.names
    )
    signal: Signals | None = attrs.field(
        default=None,
        kw_only=True,
        converter=converters.optional(validate.stop_signal),
    )
    services: tuple[str, ...] = attrs.field(
        default=(), kw_only=True, converter=validate.names
    )

    def __attrs_post_init__(self) -> None:
        kinds = [kind for kind in KINDS if getattr(self, kind) is not None]
        if not kinds:
            raise validate.Invalid(f"no question: set one of {', '.join(KINDS)}")
        if len(kinds) > 1:
            raise validate.Invalid(
                f"has both {kinds[0]} and {kinds[1]}: a check asks one question "
                "(make two checks)"
            )
        for kind, keys in KIND_KEYS.items():
            for key in keys:
                if kind != kinds[0] and getattr(self, key) is not None:
                    raise validate.Invalid(
                        f"belongs to {kind} checks, not to a {kinds[0]} check", key
                    )
        if (self.signal is None) != (not self.services):
            key, needs = (
                ("signal", "services") if self.signal else ("services", "signal")
            )
            raise validate.Invalid(
                f"needs {needs} (the signal and whom to send it)", key
            )
        if self.http is not None and not self.http.startswith("https://"):
            for key in ("tls_min_days", "ca_file"):
                if getattr(self, key) is not None:
                    raise validate.Invalid("needs an https:// URL", key)
        if (
            self.max_count is not None
            and self.min_count is not None
            and self.max_count < self.min_count
        ):
            raise validate.Invalid(
                f"must be >= min_count ({self.min_count}), not {self.max_count}",
                "max_count",
            )

    @property
    def signal_name(self) -> str:
        """``"SIGHUP"``, or ``""`` with no signal."""
        return "" if self.signal is None else self.signal.name

    @property
    def kind(self) -> str:
        """What the check asks: ``"command"``, ``"disk"``, ... (see :data:`KINDS`)."""
        return next(kind for kind in KINDS if getattr(self, kind) is not None)

    @property
    def target(self) -> str:
        """What it looks at, in a few words (the page shows it)."""
        kind = self.kind
        if kind == "command":
            assert self.command is not None
            where = f" on {self.host}" if self.host else ""
            # On one line: a command may be a script of several.
            return validate.clip(" ".join(shlex.join(self.command).split())) + where
        if kind == "load":
            return f"per core <= {self.max_per_core or 4:g}"
        if kind == "memory":
            return f"available >= {self.min_available_percent or 10:g} %"
        if kind == "http" and self.method not in (None, "GET"):
            return f"{self.method} {self.http}"
        if kind == "process" and self.pidfile is not None:
            return f"{self.process} (pidfile {self.pidfile})"
        return str(getattr(self, kind))
