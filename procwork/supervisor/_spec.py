"""What a service is, where it is in its life, and how it is doing.

:class:`ServiceSpec` (how to run one service, validated when made),
:class:`ServiceState` and :class:`ServiceStatus` are plain values: this
module imports nothing from Twisted, so a config loader or a status page can
use them without the supervisor that acts on them.
"""

from __future__ import annotations

import enum
import grp
import math
import os
import pwd
import signal
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, NoReturn, TypeVar, cast

from procwork import _validate as validate
from procwork._errors import ConfigError, ProcworkError
from procwork._process import _signal_number

__all__ = [
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
    """Exited or could not start; a restart is scheduled."""
    STOPPING = "STOPPING"
    """Sent its stop signal; waiting for it to exit."""
    EXITED = "EXITED"
    """Exited and, by its restart policy, not restarted."""
    FATAL = "FATAL"
    """Given up: it needed more than ``max_restarts`` restarts within
    ``restart_window``, or it could not start and ``restart="never"``."""


# -- the spec ------------------------------------------------------------------


@dataclass(frozen=True)
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
            ``{0}``).
        max_restarts: At most this many automatic restarts after failed
            starts within any ``restart_window`` seconds; the exit that
            would need one more makes the service FATAL. Only failed starts
            count (supervisord's rule): a process that ran for
            ``start_seconds`` had started fine, so its exit, whatever its
            status, forgets the earlier restarts. ``None``: restart for
            ever. Default 5.
        restart_window: Seconds; default 60.
        min_restart_delay: procmon's backoff: a service that exits within
            ``start_seconds`` of starting is restarted after this delay,
            doubled at each such quick exit up to ``max_restart_delay``; one
            that ran longer is restarted at once and the delay reset.
            Defaults 1 s and 60 s.
        max_restart_delay: See ``min_restart_delay``.
        start_seconds: Seconds a service must stay up to count as started:
            until then it is STARTING, then RUNNING; an earlier exit backs
            off (procmon's ``threshold``) and counts toward
            ``max_restarts``. Default 1; 0 turns the backoff off and makes
            every start count as a success, so the service is never given
            up (supervisord's ``startsecs=0``).
        stop_signal: Sent to the whole process group to stop the service:
            a number or a name (``"SIGINT"``, ``"INT"``). Default SIGTERM.
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

    Raises:
        ConfigError: A field is invalid; the message names the service and
            the field.
    """

    name: str
    command: str | Sequence[str]
    env: Mapping[str, str] | None = field(default=None, hash=False)
    inherit_env: bool = True
    cwd: str | None = None
    nice: int = 0
    restart: RestartPolicy = "always"
    success_exit_codes: Collection[int] = frozenset({0})
    max_restarts: int | None = 5
    restart_window: float = 60.0
    min_restart_delay: float = 1.0
    max_restart_delay: float = 60.0
    start_seconds: float = 1.0
    stop_signal: int | str = signal.SIGTERM
    stop_timeout: float = 5.0
    after: str | Sequence[str] | None = ()
    max_log_line: int = 8192
    autostart: bool = True
    user: str | int | None = None
    group: str | int | None = None
    umask: int | str | None = None
    stdout_log: str | None = None
    stderr_log: str | None = None
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 5
    console_rate: float = 200.0

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not name or not name.isprintable():
            raise ConfigError(
                f"service name must be a non-empty printable string, got {name!r}"
            )
        if any(c.isspace() for c in name):
            raise ConfigError(f"service name must not contain spaces, got {name!r}")
        self._set("command", self._argv(self.command))
        self._set("env", self._env(self.env))
        self._check_bool("inherit_env")
        if self.cwd is not None:
            try:
                self._set("cwd", os.fsdecode(os.fspath(self.cwd)))
            except TypeError:
                self._invalid(f"cwd must be a path, got {self.cwd!r}")
            if not self.cwd:
                self._invalid("cwd must not be empty (leave it out to inherit)")
        if not _is_int(self.nice) or not -20 <= self.nice <= 19:
            self._invalid(
                f"nice must be a whole number from -20 to 19, got {self.nice!r}"
            )
        if self.restart not in _POLICIES:
            self._invalid(
                "restart must be one of 'always', 'on-failure', 'never', "
                f"got {self.restart!r}"
            )
        self._set("success_exit_codes", self._exit_codes(self.success_exit_codes))
        if self.max_restarts is not None and (
            not _is_int(self.max_restarts) or self.max_restarts < 0
        ):
            self._invalid(
                "max_restarts must be a whole number >= 0 (or None for no "
                f"limit), got {self.max_restarts!r}"
            )
        self._check_seconds("restart_window", positive=True)
        for key in ("min_restart_delay", "max_restart_delay", "start_seconds"):
            self._check_seconds(key)
        self._check_seconds("stop_timeout")
        if self.max_restart_delay < self.min_restart_delay:
            self._invalid(
                f"max_restart_delay ({self.max_restart_delay:g} s) is less than "
                f"min_restart_delay ({self.min_restart_delay:g} s)"
            )
        try:
            if isinstance(self.stop_signal, bool):
                raise TypeError
            self._set("stop_signal", signal.Signals(_signal_number(self.stop_signal)))
        except (ValueError, TypeError):
            self._invalid(
                "stop_signal must be a signal number or name like 'SIGTERM', "
                f"got {self.stop_signal!r}"
            )
        self._set("after", self._after(self.after))
        if not _is_int(self.max_log_line) or self.max_log_line < 1:
            self._invalid(
                f"max_log_line must be a whole number >= 1, got {self.max_log_line!r}"
            )
        self._check_bool("autostart")
        self._set("umask", self._umask(self.umask))
        self._check_logs()
        self._credentials()

    @property
    def argv(self) -> tuple[str, ...]:
        """The command as a tuple of arguments."""
        return cast(tuple[str, ...], self.command)

    @property
    def stop_signum(self) -> signal.Signals:
        """The stop signal as a :class:`signal.Signals`."""
        return cast(signal.Signals, self.stop_signal)

    @property
    def after_names(self) -> tuple[str, ...]:
        """The services this one starts after, as a tuple (maybe empty)."""
        return cast(tuple[str, ...], self.after)

    def credentials(self) -> Credentials | None:
        """Who the service runs as, resolved now; None for procwork's own.

        Raises:
            ConfigError: the user or group is unknown, or procwork is not
                root and they are not its own.
        """
        if self.user is None and self.group is None:
            return None
        uid, gid, name = os.getuid(), os.getgid(), None
        if self.user is not None:
            try:
                entry = _name_or_id(self.user, pwd.getpwnam, pwd.getpwuid)
            except (KeyError, OverflowError, ValueError):
                self._invalid(f"user {self.user!r} does not exist on this machine")
            uid, gid, name = entry.pw_uid, entry.pw_gid, entry.pw_name
        if self.group is not None:
            try:
                gid = _name_or_id(self.group, grp.getgrnam, grp.getgrgid).gr_gid
            except (KeyError, OverflowError, ValueError):
                self._invalid(f"group {self.group!r} does not exist on this machine")
        if os.geteuid() != 0 and (uid != os.geteuid() or gid != os.getegid()):
            who = f"user {self.user!r}" if self.user is not None else ""
            who += " and " if self.user is not None and self.group is not None else ""
            who += f"group {self.group!r}" if self.group is not None else ""
            self._invalid(
                f"running as {who} needs procwork to run as root (it runs as "
                f"uid {os.geteuid()}); leave user/group out to run it as "
                "procwork's own user"
            )
        # login(1) gives a user its supplementary groups too; without them
        # the child would keep root's.
        groups = tuple(os.getgrouplist(name, gid)) if name is not None else (gid,)
        return Credentials(uid, gid, groups)

    def _set(self, key: str, value: object) -> None:
        object.__setattr__(self, key, value)

    def _invalid(self, problem: str) -> NoReturn:
        raise ConfigError(f"service {self.name!r}: {problem}")

    def _argv(self, command: object) -> tuple[str, ...]:
        return validate.command(
            command, f"service {self.name!r}: command", error=ConfigError
        )

    def _env(self, env: object) -> Mapping[str, str] | None:
        if env is None:
            return None
        if not isinstance(env, Mapping):
            self._invalid(f"env must be a table of names to strings, got {env!r}")
        for key, value in env.items():
            if not isinstance(key, str) or not key or "=" in key or "\0" in key:
                self._invalid(f"env: {key!r} is not a valid variable name")
            if not isinstance(value, str) or "\0" in value:
                self._invalid(f"env: {key} must be a string, got {value!r}")
        return MappingProxyType(dict(env))

    def _after(self, after: object) -> tuple[str, ...]:
        names = (after,) if isinstance(after, str) else after
        if names is None:
            return ()
        if not isinstance(names, Sequence) or not all(
            isinstance(n, str) and n for n in names
        ):
            self._invalid(
                "after must be the name of another service or a list of names, "
                f"got {after!r}"
            )
        if self.name in names:
            self._invalid("after names the service itself")
        return tuple(dict.fromkeys(names))  # in order, each once

    def _umask(self, umask: object) -> int | None:
        if umask is None:
            return None
        value: object = umask
        if isinstance(umask, str):
            try:
                value = int(umask, 8)
            except ValueError:
                value = None
        if not _is_int(value) or not 0 <= cast(int, value) <= 0o777:
            self._invalid(
                "umask must be a mode from 0 to 0o777 (like 0o022 or '022'), "
                f"got {umask!r}"
            )
        return cast(int, value)

    def _credentials(self) -> None:
        for key in ("user", "group"):
            value = getattr(self, key)
            if value is None:
                continue
            if isinstance(value, bool) or not (
                (isinstance(value, str) and value and "\0" not in value)
                or (isinstance(value, int) and value >= 0)
            ):
                self._invalid(f"{key} must be a name or an id >= 0, got {value!r}")
        self.credentials()  # an unknown user, or no root, is an error now

    def _exit_codes(self, codes: object) -> frozenset[int]:
        if isinstance(codes, str | bytes) or not isinstance(codes, Collection):
            self._invalid(f"success_exit_codes must be a list of codes, got {codes!r}")
        for code in codes:
            if not _is_int(code) or not 0 <= code <= 255:
                self._invalid(
                    f"success_exit_codes must hold exit codes 0-255, got {code!r}"
                )
        return frozenset(codes)

    def _check_logs(self) -> None:
        for key in ("stdout_log", "stderr_log"):
            value = getattr(self, key)
            if value is not None:
                try:
                    value = os.fsdecode(os.fspath(value))
                except TypeError:
                    self._invalid(f"{key} must be a path, got {value!r}")
                if not value:
                    self._invalid(f"{key} must not be empty (leave it out for none)")
                self._set(key, value)
        if not _is_int(self.log_max_bytes) or self.log_max_bytes < 1:
            self._invalid(
                f"log_max_bytes must be a whole number >= 1, got {self.log_max_bytes!r}"
            )
        if not _is_int(self.log_backups) or self.log_backups < 0:
            self._invalid(
                f"log_backups must be a whole number >= 0, got {self.log_backups!r}"
            )
        rate = self.console_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            self._invalid(f"console_rate must be a number >= 0, got {rate!r}")
        if not math.isfinite(rate) or rate < 0:
            self._invalid(f"console_rate must be a number >= 0, got {rate!r}")
        self._set("console_rate", float(rate))

    def _check_bool(self, key: str) -> None:
        if not isinstance(getattr(self, key), bool):
            self._invalid(f"{key} must be true or false, got {getattr(self, key)!r}")

    def _check_seconds(self, key: str, positive: bool = False) -> None:
        validate.seconds(
            getattr(self, key),
            f"service {self.name!r}: {key}",
            error=ConfigError,
            positive=positive,
        )


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


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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

    def to_dict(self) -> dict[str, Any]:
        """The status as a dict of JSON types (the state as its name)."""
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
        }
