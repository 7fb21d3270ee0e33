"""What a service is, where it is in its life, and how it is doing.

:class:`ServiceSpec` (how to run one service, validated when made),
:class:`ServiceState` and :class:`ServiceStatus` are plain values: this
module imports nothing from Twisted, so a config loader or a status page can
use them without the supervisor that acts on them.
"""

from __future__ import annotations

import enum
import grp
import os
import pwd
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import attrs
from attrs import converters

from procwork import _validate as validate
from procwork._errors import ProcworkError
from procwork._fields import FieldError, keyed, spec_class, toml
from procwork._format import format_seconds

__all__ = [
    "CRASH_LOOP_EXITS",
    "STDERR_LINES",
    "STDERR_LINE_CHARS",
    "Credentials",
    "NoSuchService",
    "RestartPolicy",
    "ServiceNotRunning",
    "ServiceSpec",
    "ServiceState",
    "ServiceStatus",
]

RestartPolicy = Literal["always", "on-failure", "never"]
_POLICIES: tuple[RestartPolicy, ...] = ("always", "on-failure", "never")


class NoSuchService(ProcworkError, KeyError):
    """No service of that name has been added to the supervisor."""

    def __str__(self) -> str:
        # KeyError would show the message in quotes.
        return str(self.args[0])


NoSuchService.__module__ = "procwork.supervisor"  # the public path, in tracebacks


class ServiceNotRunning(ProcworkError, ProcessLookupError):
    """The service has no process to act on (to send a signal to)."""


ServiceNotRunning.__module__ = "procwork.supervisor"


class ServiceState(enum.StrEnum):
    """Where a service is in its life; compares equal to its name."""

    STOPPED = "STOPPED"
    """Not running and not to be run (never started, or stopped)."""
    STARTING = "STARTING"
    """Running for less than ``start_seconds``."""
    RUNNING = "RUNNING"
    """Running for ``start_seconds`` or longer."""
    BACKOFF = "BACKOFF"
    """Exited or could not start; a restart is scheduled. Its status says
    whether it is in a crash loop (:attr:`ServiceStatus.crash_loop`)."""
    STOPPING = "STOPPING"
    """Sent its stop signal; waiting for it to exit."""
    EXITED = "EXITED"
    """Exited and, by its restart policy, not restarted."""
    FATAL = "FATAL"
    """Given up: more than ``max_restarts`` unexpected exits within
    ``restart_window``, or it could not start and ``restart="never"``."""


STDERR_LINES = 5
"""Lines of a crashed run's stderr kept in its status and its events."""

STDERR_LINE_CHARS = 300
"""Characters kept of each of those lines (a longer one is cut, with "...")."""

CRASH_LOOP_EXITS = 2
"""Unexpected exits, with no run of ``stable_seconds`` between them, that
make a crash loop: one crash that the restart cures is not one."""


# -- the spec ------------------------------------------------------------------


def _not_below_min_restart_delay(spec: Any, attribute: object, value: float) -> None:
    if value < spec.min_restart_delay:
        raise validate.Invalid(
            f"({value:g} s) is less than min_restart_delay "
            f"({spec.min_restart_delay:g} s)"
        )


def _not_below_start_seconds(spec: Any, attribute: object, value: float) -> None:
    if value < spec.start_seconds:
        raise validate.Invalid(
            f"({value:g} s) is less than start_seconds ({spec.start_seconds:g} s): "
            "a run is stable only once it has started"
        )


def _not_itself(spec: Any, attribute: object, value: tuple[str, ...]) -> None:
    if spec.name in value:
        raise validate.Invalid("names the service itself")


@spec_class("service")
@attrs.frozen(field_transformer=keyed)
class ServiceSpec:
    """How to run one service. Immutable; validated when made.

    Args:
        name: Unique within a supervisor; names the service in logs and
            status. No whitespace.
        command: The argv as a list, or a string split with
            :func:`shlex.split` (never given to a shell; write
            ``["sh", "-c", "..."]`` for one). Kept as a tuple.
        env: Environment variables for the service. By default they are
            added to (and override) the supervisor's own environment.
        inherit_env: False gives the service ``env`` alone.
        cwd: Working directory (default: the supervisor's).
        nice: Added to the service's niceness (default 0).
        restart: ``"always"`` (default) restarts whenever it exits;
            ``"on-failure"`` only when it exits with a code not in
            ``success_exit_codes`` or is killed by a signal; ``"never"``.
        success_exit_codes: Exit codes that count as success (default
            ``{0}``); a list is kept as a frozenset.
        max_restarts: At most this many unexpected exits (an exit code not
            in ``success_exit_codes``, a signal, a failed start; not an
            exit the supervisor asked for with a stop) within any
            ``restart_window`` seconds, however long each run lasted; the
            one past it makes the service FATAL. A success is never
            counted: a poller that exits 0 is restarted for ever. ``None``
            (TOML: ``false``): restart for ever. Default 5.
        restart_window: Seconds; default 60.
        min_restart_delay: procmon's backoff: after an unexpected exit, a
            service whose run lasted less than ``stable_seconds`` is
            restarted after this delay, doubled at each such exit up to
            ``max_restart_delay``; one whose run lasted longer is restarted
            at once and the delay reset. (After a success, the same holds
            with ``start_seconds``, so a command that exits 0 at once cannot
            spin.) Defaults 1 s and 60 s.
        max_restart_delay: See ``min_restart_delay``.
        start_seconds: Seconds a service must stay up to count as started:
            until then it is STARTING, then RUNNING (and services ``after``
            it may start). Default 1.
        stable_seconds: Seconds a run must last, after an unexpected exit,
            for the service to count as stable again: its backoff and its
            crash loop end (the monitor sends ``service.recovered``). At
            least ``start_seconds``. Default 60 s, or ``start_seconds`` if
            that is longer.
        stop_signal: Sent to the whole process group to stop the service:
            a number or a name (``"SIGINT"``, ``"INT"``), kept as a
            :class:`signal.Signals`. Default SIGTERM.
        stop_timeout: Seconds after the stop signal until the group is
            SIGKILLed. Default 5.
        after: Names of services added before this one (one name or a
            list; kept as a tuple, empty for none). :meth:`Supervisor.start`
            starts this service only once each of them is RUNNING, or has
            exited successfully (a one-shot setup step).
        max_log_line: Longer output lines are logged in pieces of this many
            bytes, so memory stays bounded whatever the service prints.
            Default 8192.
        autostart: False: :meth:`Supervisor.start` leaves the service
            STOPPED; it runs only when started by name
            (:meth:`Supervisor.start_service`). Default True.
        user: Run the service as this user (a name, or a uid: a number or
            a string of digits that is no user's name), with its
            primary group and its supplementary groups, like login does
            (``HOME`` and the rest of the environment are not changed).
            Needs procwork to run as root unless it is procwork's own user.
            Default: procwork's user.
        group: Run it with this primary group (a name or a gid, as for
            ``user``) instead
            of the user's. Needs root too, unless it is procwork's own.
        umask: The service's file mode creation mask, 0 to 0o777 (TOML:
            ``0o022``, or the string ``"022"``). Default: procwork's.
        stdout_log: Also write the service's stdout, as it comes, to this
            file (appended; kept across restarts). Default: none.
        stderr_log: The same for stderr; it may name the ``stdout_log``
            file, and both streams then share it. Default: none.
        log_max_bytes: A log file is rotated when it would grow past this
            many bytes (``file`` becomes ``file.1``, ...). Default 10 MiB.
        log_backups: Rotated files kept (older ones are deleted). Default 5.
        console_rate: At most this many output lines per second (with a
            burst of as many) go to the log; the rest are counted, not
            shown, so a service printing without pause cannot starve the
            reactor. The log files still get everything. 0: no output lines
            in the log at all. Default 200.
        repeat_every: While the service is in a crash loop, the monitor
            sends ``service.crashloop`` again (a reminder) at most this
            often, in seconds, as a check's ``repeat_every`` does. Default
            0: no reminders.

    Every duration also takes a string with units (``"500ms"``, ``"5s"``,
    ``"2m"``, ``"1h"``, ``"1d"``, ``"1m30s"``) and every size one with a
    binary unit (``"64K"``, ``"10M"``, ``"1G"``; K is 1024 bytes).

    Raises:
        ConfigError: A field is invalid; the message names the service and
            the field.
    """

    name: str = attrs.field(validator=validate.service_name)
    command: tuple[str, ...] = attrs.field(converter=validate.command)
    env: Mapping[str, str] | None = attrs.field(
        default=None, converter=converters.optional(validate.environment), hash=False
    )
    inherit_env: bool = attrs.field(default=True, validator=validate.boolean)
    cwd: str | None = attrs.field(
        default=None, converter=converters.optional(validate.path)
    )
    nice: int = attrs.field(default=0, validator=validate.whole(-20, 19))
    restart: RestartPolicy = attrs.field(
        default="always", validator=validate.one_of(_POLICIES)
    )
    success_exit_codes: frozenset[int] = attrs.field(
        default=frozenset({0}), converter=validate.exit_codes
    )
    max_restarts: int | None = attrs.field(
        default=5,
        validator=validate.optional(validate.whole(0)),
        metadata=toml(false_is_none=True),
    )
    restart_window: float = attrs.field(
        default=60.0, converter=validate.duration, validator=validate.positive
    )
    min_restart_delay: float = attrs.field(
        default=1.0, converter=validate.duration, validator=validate.non_negative
    )
    max_restart_delay: float = attrs.field(
        default=60.0,
        converter=validate.duration,
        validator=[validate.non_negative, _not_below_min_restart_delay],
    )
    start_seconds: float = attrs.field(
        default=1.0, converter=validate.duration, validator=validate.non_negative
    )
    stable_seconds: float = attrs.field(
        default=attrs.Factory(lambda spec: max(60.0, spec.start_seconds), True),
        converter=validate.duration,
        validator=[validate.non_negative, _not_below_start_seconds],
    )
    stop_signal: signal.Signals = attrs.field(
        default=signal.SIGTERM, converter=validate.stop_signal
    )
    stop_timeout: float = attrs.field(
        default=5.0, converter=validate.duration, validator=validate.non_negative
    )
    after: tuple[str, ...] = attrs.field(
        default=(), converter=validate.names, validator=_not_itself
    )
    max_log_line: int = attrs.field(
        default=8192, converter=validate.size, validator=validate.whole(1)
    )
    autostart: bool = attrs.field(default=True, validator=validate.boolean)
    user: str | int | None = attrs.field(
        default=None, validator=validate.optional(validate.user_or_group)
    )
    group: str | int | None = attrs.field(
        default=None, validator=validate.optional(validate.user_or_group)
    )
    umask: int | None = attrs.field(
        default=None, converter=converters.optional(validate.umask)
    )
    stdout_log: str | None = attrs.field(
        default=None, converter=converters.optional(validate.path)
    )
    stderr_log: str | None = attrs.field(
        default=None, converter=converters.optional(validate.path)
    )
    log_max_bytes: int = attrs.field(
        default=10 * 1024 * 1024, converter=validate.size, validator=validate.whole(1)
    )
    log_backups: int = attrs.field(default=5, validator=validate.whole(0))
    console_rate: float = attrs.field(
        default=200.0, converter=validate.number, validator=validate.non_negative
    )
    repeat_every: float = attrs.field(
        default=0.0, converter=validate.duration, validator=validate.non_negative
    )

    def __attrs_post_init__(self) -> None:
        _resolve(self)  # an unknown user, or no root, is an error now

    @property
    def argv(self) -> tuple[str, ...]:
        """The command as a tuple of arguments (the same as ``command``)."""
        return self.command

    @property
    def stop_signum(self) -> signal.Signals:
        """The stop signal (the same as ``stop_signal``)."""
        return self.stop_signal

    @property
    def after_names(self) -> tuple[str, ...]:
        """The services this one starts after (the same as ``after``)."""
        return self.after

    def credentials(self) -> Credentials | None:
        """Who the service runs as, resolved now; None for procwork's own.

        Raises:
            ConfigError: the user or group is unknown, or procwork is not
                root and they are not its own.
        """
        try:
            return _resolve(self)
        except validate.Invalid as e:
            entry = f"service {self.name!r}"
            raise FieldError(entry, "service", e.key, e.problem) from None


def _resolve(spec: ServiceSpec) -> Credentials | None:
    """:meth:`ServiceSpec.credentials`, raising
    :class:`~procwork._validate.Invalid`."""
    if spec.user is None and spec.group is None:
        return None
    uid, gid, name = os.getuid(), os.getgid(), None
    if spec.user is not None:
        try:
            entry = _name_or_id(spec.user, pwd.getpwnam, pwd.getpwuid)
        except (KeyError, OverflowError, ValueError):
            raise validate.Invalid(
                f"{spec.user!r} does not exist on this machine", "user"
            ) from None
        uid, gid, name = entry.pw_uid, entry.pw_gid, entry.pw_name
    if spec.group is not None:
        try:
            gid = _name_or_id(spec.group, grp.getgrnam, grp.getgrgid).gr_gid
        except (KeyError, OverflowError, ValueError):
            raise validate.Invalid(
                f"{spec.group!r} does not exist on this machine", "group"
            ) from None
    if os.geteuid() != 0 and (uid != os.geteuid() or gid != os.getegid()):
        who = f"user {spec.user!r}" if spec.user is not None else ""
        who += " and " if spec.user is not None and spec.group is not None else ""
        who += f"group {spec.group!r}" if spec.group is not None else ""
        raise validate.Invalid(
            f"running as {who} needs procwork to run as root (it runs as "
            f"uid {os.geteuid()}); leave user/group out to run it as "
            "procwork's own user"
        )
    # login(1) gives a user its supplementary groups too; without them
    # the child would keep root's.
    groups = tuple(os.getgrouplist(name, gid)) if name is not None else (gid,)
    return Credentials(uid, gid, groups)


@dataclass(frozen=True)
class Credentials:
    """Who a service runs as: uid, primary gid, all its group ids."""

    uid: int
    gid: int
    groups: tuple[int, ...]


_Entry = TypeVar("_Entry")


def _name_or_id(
    value: str | int,
    by_name: Callable[[str], _Entry],
    by_id: Callable[[int], _Entry],
) -> _Entry:
    """The passwd or group entry of ``value``: a name, or an id, given as a
    number or as a string of digits that is no name (as chown(1) reads it).

    Raises:
        KeyError: no such name or id.
    """
    if isinstance(value, int):
        return by_id(value)
    try:
        return by_name(value)
    except KeyError:
        if value.isascii() and value.isdigit():
            return by_id(int(value))
        raise


# -- status --------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceStatus:
    """A snapshot of one service, from :meth:`Supervisor.status`.

    Attributes:
        name: The service's name.
        state: Its :class:`ServiceState`.
        pid: Its process id (also its process group id) while it runs.
        uptime: Seconds its current process has been running, else None.
        restarts: Automatic restarts since it was added (manual starts and
            restarts do not count).
        last_exit: How its last process ended: ``"exited 3"``,
            ``"killed by SIGKILL"``, ``"cannot run ...: <why>"``; None if
            none has ended yet.
        returncode: Exit code of its last process, ``-N`` if killed by signal
            ``N`` (as in :class:`procwork.Result`); None if none has ended or
            it could not start.
        since: Reactor time (seconds since the epoch on a real reactor) of
            its last change of state.
        restart_in: In BACKOFF, seconds until the restart; else None.
        waiting_for: The service it waits for before starting (``after``).
        started: Reactor time its last process started (kept after it
            ends); None if it never started.
        failures: Unexpected exits since it was added (an exit code not in
            ``success_exit_codes``, a signal, a failed start; not a stop).
        crashes: Unexpected exits since it last ran ``stable_seconds``
            (0 once it has): two or more are a crash loop.
        first_crash: Reactor time of the first of those; None if none.
        last_crash: Reactor time of the last of those; None if none.
        failed: Its last process's exit was unexpected.
        reason: Why it is not restarted, when FATAL or EXITED
            (``"6 unexpected exits within 60 s, more than max_restarts=5"``).
        last_stderr: The last lines its last crashed run wrote to stderr (at
            most :data:`STDERR_LINES`, each cut to :data:`STDERR_LINE_CHARS`
            characters), kept until it is stable again or stopped.
        stable_in: While it runs after crashes, seconds until the run has
            lasted ``stable_seconds``; else None.
    """

    name: str
    state: ServiceState
    pid: int | None
    uptime: float | None
    restarts: int
    last_exit: str | None
    returncode: int | None
    since: float
    restart_in: float | None = None
    waiting_for: str | None = None
    started: float | None = None
    failures: int = 0
    crashes: int = 0
    first_crash: float | None = None
    last_crash: float | None = None
    failed: bool = False
    reason: str | None = None
    last_stderr: tuple[str, ...] = ()
    stable_in: float | None = None

    @property
    def crash_loop(self) -> bool:
        """In a crash loop: :data:`CRASH_LOOP_EXITS` unexpected exits or
        more with no run of ``stable_seconds`` between them, in any state
        (RUNNING too: until it has proved stable, a running service that
        crashed twice is not well)."""
        return self.crashes >= CRASH_LOOP_EXITS

    @property
    def healthy(self) -> bool:
        """Not FATAL, not in a crash loop, and not down after an unexpected
        exit (BACKOFF or EXITED with :attr:`failed`). A poller waiting for
        its next run after a success, or a stopped service, is healthy."""
        if self.state is ServiceState.FATAL or self.crash_loop:
            return False
        return not (
            self.failed and self.state in (ServiceState.BACKOFF, ServiceState.EXITED)
        )

    def summary(self) -> str:
        """The state and what an operator must know of it, in one line:
        ``"BACKOFF (crash loop: 7 exits in 45 s, next start in 8 s)"``,
        ``"RUNNING (crash loop: 3 exits in 9 s, stable in 52 s)"``,
        ``"FATAL (exited 3: 6 unexpected exits within 60 s, more than
        max_restarts=5)"``; just the state when all is well."""
        notes = []
        if self.state in (ServiceState.FATAL, ServiceState.EXITED) and (
            self.failed or self.state is ServiceState.FATAL
        ):
            notes.append(": ".join(n for n in (self.last_exit, self.reason) if n))
        elif self.crash_loop and self.first_crash is not None:
            span = (self.last_crash or self.first_crash) - self.first_crash
            notes.append(
                f"crash loop: {self.crashes} exits in {format_seconds(span)} s"
            )
        elif self.failed and self.state is ServiceState.BACKOFF:
            notes.append(self.last_exit or "failed")
        if self.state is ServiceState.BACKOFF and self.restart_in is not None:
            notes.append(f"next start in {format_seconds(self.restart_in)} s")
        if self.crash_loop and self.stable_in is not None:
            notes.append(f"stable in {format_seconds(self.stable_in)} s")
        if self.waiting_for is not None:
            notes.append(f"waits for {self.waiting_for}")
        notes = [n for n in notes if n]
        return f"{self.state} ({', '.join(notes)})" if notes else str(self.state)

    def to_dict(self) -> dict[str, Any]:
        """The status as a dict of JSON types (the state as its name), with
        ``crash_loop``, ``healthy`` and ``summary`` (:meth:`summary`)."""
        return {
            "name": self.name,
            "state": str(self.state),
            "pid": self.pid,
            "uptime": self.uptime,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "returncode": self.returncode,
            "since": self.since,
            "restart_in": self.restart_in,
            "waiting_for": self.waiting_for,
            "started": self.started,
            "failures": self.failures,
            "crashes": self.crashes,
            "first_crash": self.first_crash,
            "last_crash": self.last_crash,
            "failed": self.failed,
            "reason": self.reason,
            "last_stderr": list(self.last_stderr),
            "stable_in": self.stable_in,
            "crash_loop": self.crash_loop,
            "healthy": self.healthy,
            "summary": self.summary(),
        }
