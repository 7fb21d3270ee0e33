"""Supervised services: named long-running processes kept alive.

Restarting with backoff is :class:`twisted.runner.procmon.ProcessMonitor`'s
job, and it does it here too: procmon starts a service, schedules its restart
when it exits (at once if it ran longer than a threshold, else after a delay
that doubles up to a maximum) and SIGKILLs a process that does not stop in
time. :class:`Supervisor` wraps it and adds what procmon lacks and
supervisord/systemd users expect: a restart policy (always, on failure,
never) with exit codes that count as success; at most ``max_restarts``
restarts within ``restart_window`` seconds before giving up (state FATAL);
a stop signal and timeout of each service's own, sent to its whole process
group; start order (``after=``); env/cwd/nice; output as structured log
events; and a status per service.

Every child is a :class:`~procwork._spawn.GroupProcess`: it leads its own
process group, so stopping a service reaches its grandchildren too, and it is
reaped in O(1) through a pidfd. The seam is the reactor procmon is given: a
proxy whose ``spawnProcess`` builds a ``GroupProcess`` and which passes
timers through to the real reactor (a ``Clock`` in tests).

procmon restarts every process that exits, so it is the tool for services
only; one-shot runs (:func:`procwork.run`) use the same spawn machinery
without it.
"""

from __future__ import annotations

import enum
import functools
import math
import os
import shlex
import signal
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, NoReturn, Protocol, cast

from twisted.internet import error as twisted_error
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import classImplements  # type: ignore[import-untyped]

from procwork._errors import ConfigError, ProcworkError
from procwork._output import LineSplitter
from procwork._process import _signal_number, _spawn_error
from procwork._result import describe_returncode
from procwork._shutdown import watch_reactor
from procwork._spawn import GroupProcess

if TYPE_CHECKING:
    from twisted.runner.procmon import LoggingProtocol, ProcessMonitor

__all__ = [
    "NoSuchService",
    "ProcessFactory",
    "RestartPolicy",
    "ServiceSpec",
    "ServiceState",
    "ServiceStatus",
    "Supervisor",
]

_log = Logger(namespace="procwork.supervisor")

RestartPolicy = Literal["always", "on-failure", "never"]
_POLICIES: tuple[RestartPolicy, ...] = ("always", "on-failure", "never")


class NoSuchService(ProcworkError, KeyError):
    """No service of that name has been added to the supervisor."""

    def __str__(self) -> str:
        # KeyError would show the message in quotes.
        return str(self.args[0])


NoSuchService.__module__ = "procwork"  # the public path, in tracebacks


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
        max_restarts: At most this many automatic restarts within any
            ``restart_window`` seconds; the exit that would need one more
            makes the service FATAL. ``None``: restart for ever. Default 5.
        restart_window: Seconds; default 60.
        min_restart_delay: procmon's backoff: a service that exits within
            ``start_seconds`` of starting is restarted after this delay,
            doubled at each such quick exit up to ``max_restart_delay``; one
            that ran longer is restarted at once and the delay reset.
            Defaults 1 s and 60 s.
        max_restart_delay: See ``min_restart_delay``.
        start_seconds: Seconds a service must stay up to count as started:
            until then it is STARTING, then RUNNING; an earlier exit backs
            off (procmon's ``threshold``). Default 1; 0 turns the backoff
            off, leaving only ``max_restarts`` to stop a crash loop.
        stop_signal: Sent to the whole process group to stop the service:
            a number or a name (``"SIGINT"``, ``"INT"``). Default SIGTERM.
        stop_timeout: Seconds after the stop signal until the group is
            SIGKILLed. Default 5.
        after: Name of a service added before this one. :meth:`Supervisor.start`
            starts this service only once that one is RUNNING, or has
            exited successfully (a one-shot setup step).
        max_log_line: Longer output lines are logged in pieces of this many
            bytes, so memory stays bounded whatever the service prints.
            Default 8192.

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
    after: str | None = None
    max_log_line: int = 8192

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
        if self.after is not None:
            if not isinstance(self.after, str) or not self.after:
                self._invalid(
                    f"after must be the name of another service, got {self.after!r}"
                )
            if self.after == name:
                self._invalid("after names the service itself")
        if not _is_int(self.max_log_line) or self.max_log_line < 1:
            self._invalid(
                f"max_log_line must be a whole number >= 1, got {self.max_log_line!r}"
            )

    @property
    def argv(self) -> tuple[str, ...]:
        """The command as a tuple of arguments."""
        return cast(tuple[str, ...], self.command)

    @property
    def stop_signum(self) -> signal.Signals:
        """The stop signal as a :class:`signal.Signals`."""
        return cast(signal.Signals, self.stop_signal)

    def _set(self, key: str, value: object) -> None:
        object.__setattr__(self, key, value)

    def _invalid(self, problem: str) -> NoReturn:
        raise ConfigError(f"service {self.name!r}: {problem}")

    def _argv(self, command: object) -> tuple[str, ...]:
        if isinstance(command, str):
            try:
                argv = tuple(shlex.split(command))
            except ValueError as e:
                self._invalid(f"command {command!r} cannot be split into words ({e})")
        elif isinstance(command, Sequence) and not isinstance(command, bytes):
            argv = tuple(command)
            for arg in argv:
                if not isinstance(arg, str):
                    self._invalid(
                        f"command must be a string or a list of strings, "
                        f"got {arg!r} in it"
                    )
        else:
            self._invalid(
                f"command must be a string or a list of strings, got {command!r}"
            )
        if not argv or not argv[0]:
            self._invalid("command is empty")
        if any("\0" in arg for arg in argv):
            self._invalid("command contains a NUL character")
        return argv

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

    def _exit_codes(self, codes: object) -> frozenset[int]:
        if isinstance(codes, str | bytes) or not isinstance(codes, Collection):
            self._invalid(f"success_exit_codes must be a list of codes, got {codes!r}")
        for code in codes:
            if not _is_int(code) or not 0 <= code <= 255:
                self._invalid(
                    f"success_exit_codes must hold exit codes 0-255, got {code!r}"
                )
        return frozenset(codes)

    def _check_bool(self, key: str) -> None:
        if not isinstance(getattr(self, key), bool):
            self._invalid(f"{key} must be true or false, got {getattr(self, key)!r}")

    def _check_seconds(self, key: str, positive: bool = False) -> None:
        value = getattr(self, key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            self._invalid(f"{key} must be a number of seconds, got {value!r}")
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            bound = "> 0" if positive else ">= 0"
            self._invalid(f"{key} must be a finite number {bound}, got {value!r}")


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
        }


# -- seams: the child's transport and who builds it ----------------------------


class _Transport(Protocol):
    """What the supervisor uses of a child's transport (``GroupProcess`` has it)."""

    pid: int | None
    kill_group_on_exit: bool

    def signal_group(self, signum: int) -> bool: ...


class ProcessFactory(Protocol):
    """Builds a service's child; :class:`~procwork._spawn.GroupProcess` is one.

    It must start the child in its own process group, connect ``protocol``
    (``makeConnection``) before returning, and call ``protocol.processEnded``
    once the child is reaped. Tests pass a fake that never starts anything.
    """

    def __call__(
        self,
        reactor: Any,
        protocol: ProcessProtocol,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None,
        cwd: str | None,
        nice: int,
        stdin: bool,
    ) -> _Transport: ...


class _DelayedCall(Protocol):
    # Structural IDelayedCall: mypy cannot check zope interfaces (their
    # methods are declared without self).
    def active(self) -> bool: ...
    def cancel(self) -> None: ...
    def getTime(self) -> float: ...


def _active(call: object) -> _DelayedCall | None:
    delayed = cast(_DelayedCall | None, call)
    return delayed if delayed is not None and delayed.active() else None


class _GroupSpawningReactor:
    """The reactor procmon is given.

    ``spawnProcess`` hands procmon's request to the supervisor, which starts
    the child as a ``GroupProcess``; timers are the real reactor's. procmon
    also passes args, env and cwd, but its env cannot say "inherit" (it is
    always a dict, and an empty one would mean an empty environment) and it
    has no nice, so the supervisor takes all of them from the service's spec.
    """

    def __init__(
        self, reactor: Any, spawn: Callable[[LoggingProtocol], _Transport]
    ) -> None:
        self._reactor = reactor
        self._spawn = spawn

    def spawnProcess(
        self,
        processProtocol: LoggingProtocol,
        executable: object,
        args: object,
        env: object = None,
        path: object = None,
        uid: object = None,
        gid: object = None,
        usePTY: object = False,
        childFDs: object = None,
    ) -> _Transport:
        return self._spawn(processProtocol)

    def callLater(
        self, delay: float, callable: Callable[..., Any], *args: Any, **kw: Any
    ) -> Any:
        return self._reactor.callLater(delay, callable, *args, **kw)

    def seconds(self) -> float:
        return cast(float, self._reactor.seconds())

    def getDelayedCalls(self) -> Any:
        return self._reactor.getDelayedCalls()


# procmon adapts its reactor with IReactorTime(reactor).
classImplements(_GroupSpawningReactor, IReactorTime, IReactorProcess)


# -- the one state object per service ------------------------------------------


class _Service:
    """All the supervisor knows about one service.

    procmon keeps its own per-name dicts (delay, timeStarted, murder, restart,
    protocols); everything the supervisor adds lives here.
    """

    def __init__(self, spec: ServiceSpec, now: float) -> None:
        self.spec = spec
        self.state = ServiceState.STOPPED
        self.since = now
        self.transport: _Transport | None = None
        self.pid: int | None = None
        self.started_at: float | None = None
        self.start_timer: _DelayedCall | None = None
        self.restarts = 0
        self.recent_restarts: deque[float] = deque()  # times, within the window
        self.last_exit: str | None = None
        self.returncode: int | None = None
        self.succeeded = False  # the last process ended with a success code
        self.wanted = False  # should be running (or waiting to run)
        self.stopping = False  # stop signal sent, process not yet reaped
        self.removing = False
        self.waiting_for: str | None = None
        self.stop_waiters: list[Deferred[None]] = []
        self.state_waiters: list[
            tuple[frozenset[ServiceState], Deferred[ServiceStatus]]
        ] = []

    @property
    def name(self) -> str:
        return self.spec.name

    def status(self, now: float, restart_call: _DelayedCall | None) -> ServiceStatus:
        return ServiceStatus(
            name=self.name,
            state=self.state,
            pid=self.pid,
            uptime=None if self.started_at is None else now - self.started_at,
            restarts=self.restarts,
            last_exit=self.last_exit,
            returncode=self.returncode,
            since=self.since,
            restart_in=(
                None
                if restart_call is None or self.state is not ServiceState.BACKOFF
                else max(0.0, restart_call.getTime() - now)
            ),
            waiting_for=self.waiting_for,
        )

    def process_gone(self) -> None:
        self.transport = None
        self.pid = None
        self.started_at = None
        if self.start_timer is not None and self.start_timer.active():
            self.start_timer.cancel()
        self.start_timer = None


class _ServiceProtocol(ProcessProtocol):
    """Connects a service's child to procmon's protocol and to the supervisor.

    procmon's own ``LoggingProtocol`` still receives ``processEnded`` (that
    is how procmon learns of the exit); output is handled here instead,
    because procmon's line logger has no bound that works (a line over 16 KiB
    hits ``loseConnection`` on a dummy transport that lacks it) and logs an
    empty line at every exit.
    """

    def __init__(
        self,
        supervisor: Supervisor,
        service: _Service,
        procmon_protocol: ProcessProtocol,
    ) -> None:
        self._supervisor = supervisor
        self._service = service
        self._procmon_protocol = procmon_protocol
        limit = service.spec.max_log_line
        self._splitters = {
            fd: LineSplitter(functools.partial(self._line, stream), limit)
            for fd, stream in ((1, "stdout"), (2, "stderr"))
        }

    def connectionMade(self) -> None:
        transport = cast(_Transport, self.transport)
        self._procmon_protocol.makeConnection(self.transport)
        self._supervisor._spawned(self._service, transport)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        splitter = self._splitters.get(childFD)
        if splitter is not None:
            splitter.feed(data)

    def _line(self, stream: str, line: bytes) -> None:
        text = line.rstrip(b"\n").rstrip(b"\r").decode("utf-8", "replace")
        _log.info(
            "[{service}] {line}",
            service=self._service.name,
            stream=stream,
            line=text,
            pid=self._service.pid,
        )

    def processEnded(self, reason: Failure) -> None:
        for splitter in self._splitters.values():
            splitter.close()
        self._procmon_protocol.processEnded(reason)


# -- procmon, extended ---------------------------------------------------------


@functools.cache
def _monitor_class() -> Callable[[Any, Supervisor], ProcessMonitor]:
    """The ProcessMonitor subclass, defined on first use.

    Importing ``twisted.runner.procmon`` imports the global reactor (it is the
    default of a constructor argument), which library code must not do at
    import time, so the subclass is made when the first Supervisor is.
    """
    from twisted.runner.procmon import ProcessMonitor

    class _Monitor(ProcessMonitor):
        """procmon with the supervisor's decisions plugged in.

        procmon keeps doing what it does: starting processes, the backoff
        arithmetic, scheduling restarts, the kill timer (``murder``) and its
        cancellation at exit. Overridden, each for the reason given there:
        ``startProcess`` (a gate), ``_monitoredProcessExited`` (per-service
        backoff settings, then the supervisor's verdict on the restart procmon
        scheduled), ``stopProcess`` and ``_forceStopProcess`` (the service's
        own stop signal and timeout, sent to the whole process group).
        """

        def __init__(self, reactor: Any, supervisor: Supervisor) -> None:
            super().__init__(reactor)
            self._supervisor = supervisor
            # Always "running" as a twisted Service: whether a service runs
            # is the supervisor's decision (see startProcess). Nothing is
            # started here, since no process has been added yet.
            self.startService()

        def startProcess(self, name: str) -> None:
            # procmon starts a process whenever one is added to a running
            # monitor and whenever a restart falls due; the supervisor says
            # whether the service is wanted (and not waiting for another).
            if self._supervisor._may_start(name):
                super().startProcess(name)

        def _monitoredProcessExited(
            self, name: str, reason: Failure | None = None
        ) -> None:
            spec = self._supervisor._spec_of(name)
            if spec is not None:
                # procmon's backoff reads monitor-wide settings; each service
                # has its own, so they are set for this call.
                self.threshold = spec.start_seconds  # type: ignore[assignment]
                self.minRestartDelay = spec.min_restart_delay  # type: ignore[assignment]
                self.maxRestartDelay = spec.max_restart_delay  # type: ignore[assignment]
            # procmon cancels the kill timer, backs off and schedules the
            # restart. It is not given the reason: it would log every one that
            # is not a plain exit (a spawn error) with a traceback; the
            # supervisor reports it in one clear line instead.
            super()._monitoredProcessExited(name, None)
            self._supervisor._exited(name, reason)

        def stopProcess(self, name: str) -> None:
            # procmon sends SIGTERM to the process alone, and SIGKILL after a
            # monitor-wide killTime, rescheduling the kill at every call; a
            # service has its own signal and timeout, sent to its whole group.
            if name not in self._processes:
                raise KeyError(f"Unrecognized process name: {name}")
            proto = self.protocols.get(name)
            spec = self._supervisor._spec_of(name)
            if proto is None or proto.transport is None or spec is None:
                return
            transport = cast(_Transport, proto.transport)
            transport.kill_group_on_exit = True
            sent = transport.signal_group(spec.stop_signum)
            if sent and _active(self.murder.get(name)) is None:
                clock = cast(Any, self._clock)  # zope interface: see _DelayedCall
                self.murder[name] = clock.callLater(
                    spec.stop_timeout, self._forceStopProcess, transport
                )

        def _forceStopProcess(self, proc: Any) -> None:
            # procmon SIGKILLs the process alone; a service's whole group goes.
            self._supervisor._stop_timed_out(cast(_Transport, proc))
            cast(_Transport, proc).signal_group(signal.SIGKILL)

    return _Monitor


# -- the supervisor ------------------------------------------------------------


class Supervisor:
    """Keeps named services running: add them, start, watch, stop.

    Built on :class:`twisted.runner.procmon.ProcessMonitor` (restart
    scheduling and backoff are procmon's). Every method is called from the
    reactor thread: from blocking code that drives the reactor with
    :mod:`untwisted`, from clockwork generators, or Twisted callbacks.
    Methods that wait return Deferreds, so they work with
    ``untwisted.run(sup.stop(), timeout=30)`` as with ``yield sup.stop()``.
    Services are only watched while the reactor runs.

    If the reactor shuts down (interpreter exit, Ctrl-C through untwisted, or
    a program's own ``reactor.stop()``) while services run, they are stopped
    with their stop policy first.

    Args:
        reactor: The reactor; default the global one, imported when the
            supervisor is made.
        process_factory: Builds each child (default
            :class:`~procwork._spawn.GroupProcess`); tests pass fakes.
    """

    def __init__(
        self, reactor: Any = None, *, process_factory: ProcessFactory | None = None
    ) -> None:
        if reactor is None:
            import untwisted

            reactor = untwisted.default_driver().reactor
        self._reactor = reactor
        self._process_factory: ProcessFactory = (
            process_factory if process_factory is not None else GroupProcess
        )
        self._services: dict[str, _Service] = {}  # in the order added
        self._started = False
        self._shutdown_trigger: Any = None
        self._monitor: ProcessMonitor = _monitor_class()(
            _GroupSpawningReactor(reactor, self._spawn), self
        )

    def __repr__(self) -> str:
        states = ", ".join(f"{s.name}: {s.state}" for s in self._services.values())
        return f"<Supervisor {states or 'no services'}>"

    @property
    def reactor(self) -> Any:
        """The reactor the services are run on."""
        return self._reactor

    # -- configuration ---------------------------------------------------------

    def add(self, spec: ServiceSpec) -> None:
        """Add a service. If the supervisor is started, start it now.

        Raises:
            TypeError: ``spec`` is not a :class:`ServiceSpec`.
            ConfigError: the name is taken, or ``after`` names a service that
                has not been added.
        """
        if not isinstance(spec, ServiceSpec):
            raise TypeError(f"Supervisor.add() takes a ServiceSpec, not {spec!r}")
        if spec.name in self._services:
            raise ConfigError(
                f"service {spec.name!r}: a service of that name was already added "
                "(remove it first)"
            )
        if spec.after is not None and self._live(spec.after) is None:
            raise ConfigError(
                f"service {spec.name!r}: after names {spec.after!r}, which has not "
                "been added (add it first)"
            )
        service = _Service(spec, self._now())
        self._services[spec.name] = service
        # Not wanted yet, so procmon does not start it here (see startProcess).
        self._monitor.addProcess(spec.name, list(spec.argv), cwd=spec.cwd)
        self._monitor.delay[spec.name] = spec.min_restart_delay
        if self._started:
            self._arm_shutdown()
            self._start(service, respect_after=True)

    def remove(self, name: str) -> Deferred[None]:
        """Stop a service with its stop policy, then forget it.

        Returns:
            A Deferred that fires once its process group is reaped and the
            name is free again.

        Raises:
            NoSuchService: no such service.
            ConfigError: another service starts ``after`` it.
        """
        service = self._get(name)
        for other in self._services.values():
            if other.spec.after == name and not other.removing:
                raise ConfigError(
                    f"service {name!r} cannot be removed: service {other.name!r} "
                    "starts after it (remove that one first)"
                )
        service.removing = True
        d = self.stop_service(name)

        def forget(_: object) -> None:
            self._monitor.removeProcess(name)
            del self._services[name]
            for _states, waiter in service.state_waiters:
                waiter.errback(NoSuchService(f"service {name!r} was removed"))
            service.state_waiters.clear()

        return d.addCallback(forget)

    def specs(self) -> list[ServiceSpec]:
        """The specs of the services, in the order they were added."""
        return [s.spec for s in self._services.values()]

    # -- starting and stopping -------------------------------------------------

    def start(self) -> None:
        """Start every service, in the order added.

        A service with ``after`` waits until that service is RUNNING (or has
        exited successfully). Services added later start when added. Services
        already running, starting or in BACKOFF are left alone; STOPPED,
        EXITED and FATAL ones start (again).
        """
        self._started = True
        self._arm_shutdown()
        for service in list(self._services.values()):
            if not service.wanted and not service.removing:
                self._start(service, respect_after=True)

    def stop(self) -> Deferred[None]:
        """Stop every service with its stop signal and timeout.

        All are stopped at once. Services added later are not started.

        Returns:
            A Deferred that fires when every service's process group is
            reaped. Cancelling it SIGKILLs the groups still alive.
        """
        self._started = False
        ds = [self.stop_service(name) for name in list(self._services)]
        done: Deferred[Any] = DeferredList(
            ds, fireOnOneErrback=True, consumeErrors=True
        )
        return done.addCallback(self._all_stopped)

    def _all_stopped(self, _: object) -> None:
        if not self._started:
            self._disarm_shutdown()

    def start_service(self, name: str) -> None:
        """Start one service now (its ``after`` is not waited for).

        A running service is left alone; a FATAL one starts afresh (its
        restart count within the window and its backoff are reset); one in
        BACKOFF starts without waiting out the delay.

        Raises:
            NoSuchService: no such service.
        """
        service = self._get(name)
        self._arm_shutdown()
        self._start(service, respect_after=False)

    def stop_service(self, name: str) -> Deferred[None]:
        """Stop one service: its stop signal to the whole process group,
        SIGKILL after its ``stop_timeout``. It is not restarted.

        Returns:
            A Deferred that fires when its process has been reaped (at once
            if it is not running). Cancelling it SIGKILLs the group now.

        Raises:
            NoSuchService: no such service.
        """
        service = self._services.get(name)
        if service is None:
            raise self._no_such(name)
        service.wanted = False
        service.waiting_for = None
        self._cancel_restart(name)
        transport = service.transport
        if transport is None:
            if service.state is ServiceState.BACKOFF:
                _log.info(
                    "service {service!r} will not be restarted: stopped",
                    service=name,
                    state=ServiceState.STOPPED,
                )
                self._set_state(service, ServiceState.STOPPED)
            return succeed(None)
        if not service.stopping:
            service.stopping = True
            spec = service.spec
            _log.info(
                "stopping service {service!r}: {signal} to process group {pid}, "
                "SIGKILL after {timeout:g} s",
                service=name,
                signal=spec.stop_signum.name,
                pid=service.pid,
                timeout=spec.stop_timeout,
                state=ServiceState.STOPPING,
            )
            self._set_state(service, ServiceState.STOPPING)
            self._monitor.stopProcess(name)
            if service.transport is None:  # it ended inside stopProcess
                return succeed(None)

        def kill_now(_: Deferred[None]) -> None:
            if d in service.stop_waiters:
                service.stop_waiters.remove(d)
            if service.transport is not None:
                service.transport.kill_group_on_exit = True
                service.transport.signal_group(signal.SIGKILL)

        d: Deferred[None] = Deferred(kill_now)
        service.stop_waiters.append(d)
        return d

    def restart(self, name: str) -> Deferred[None]:
        """Stop a service (with its stop policy), then start it again.

        Returns:
            A Deferred that fires once the new process has been started (or
            has failed to start, see :meth:`status`).

        Raises:
            NoSuchService: no such service.
        """
        self._get(name)

        def start_again(_: object) -> None:
            service = self._services.get(name)
            if service is not None and not service.removing:
                self.start_service(name)

        return self.stop_service(name).addCallback(start_again)

    # -- status ----------------------------------------------------------------

    def status(self) -> dict[str, ServiceStatus]:
        """A snapshot of every service, by name, in the order added."""
        now = self._now()
        return {
            name: service.status(now, _active(self._monitor.restart.get(name)))
            for name, service in self._services.items()
        }

    def wait_for(
        self, name: str, *states: ServiceState | str
    ) -> Deferred[ServiceStatus]:
        """A Deferred that fires with the service's status when it is next in
        one of ``states`` (at once if it is now).

        Fails with :class:`NoSuchService` if the service is removed first.
        Cancelling it stops only the waiting.

        Raises:
            NoSuchService: no such service.
            ValueError: a state is not a :class:`ServiceState` name.
        """
        service = self._get(name)
        if not states:
            raise ValueError("wait_for() needs at least one state to wait for")
        try:
            wanted = frozenset(ServiceState(str(s).upper()) for s in states)
        except ValueError:
            choices = ", ".join(s.value for s in ServiceState)
            raise ValueError(
                f"states must be among {choices}; got {states!r}"
            ) from None
        if service.state in wanted:
            restart_call = _active(self._monitor.restart.get(name))
            return succeed(service.status(self._now(), restart_call))

        def forget(d: Deferred[ServiceStatus]) -> None:
            service.state_waiters[:] = [
                w for w in service.state_waiters if w[1] is not d
            ]

        d: Deferred[ServiceStatus] = Deferred(forget)
        service.state_waiters.append((wanted, d))
        return d

    # -- internals: lookups ----------------------------------------------------

    def _now(self) -> float:
        return cast(float, self._reactor.seconds())

    def _no_such(self, name: str) -> NoSuchService:
        known = ", ".join(repr(n) for n in self._services) or "none"
        return NoSuchService(f"no service named {name!r} (services: {known})")

    def _live(self, name: str) -> _Service | None:
        service = self._services.get(name)
        return None if service is None or service.removing else service

    def _get(self, name: str) -> _Service:
        service = self._live(name)
        if service is None:
            if name in self._services:
                raise NoSuchService(f"service {name!r} is being removed")
            raise self._no_such(name)
        return service

    def _spec_of(self, name: str) -> ServiceSpec | None:
        service = self._services.get(name)
        return None if service is None else service.spec

    def _cancel_restart(self, name: str) -> None:
        call = _active(self._monitor.restart.get(name))
        if call is not None:
            call.cancel()

    # -- internals: starting -----------------------------------------------------

    def _start(self, service: _Service, respect_after: bool) -> None:
        service.wanted = True
        service.waiting_for = None
        if service.stopping or service.transport is not None:
            return  # running, or will start again once it has stopped
        if respect_after:
            service.waiting_for = self._blocker(service)
        if service.state in (ServiceState.FATAL, ServiceState.EXITED):
            service.recent_restarts.clear()
            self._monitor.delay[service.name] = service.spec.min_restart_delay
        if service.waiting_for is not None:
            _log.info(
                "service {service!r} waits for {after!r} to be RUNNING",
                service=service.name,
                after=service.waiting_for,
                state=service.state,
            )
            return
        self._cancel_restart(service.name)
        self._monitor.startProcess(service.name)

    def _blocker(self, service: _Service) -> str | None:
        """The service this one must wait for, if it must."""
        after = service.spec.after
        if after is None:
            return None
        other = self._services.get(after)
        return None if other is None or self._ready(other) else after

    @staticmethod
    def _ready(service: _Service) -> bool:
        return service.state is ServiceState.RUNNING or (
            service.state is ServiceState.EXITED and service.succeeded
        )

    def _may_start(self, name: str) -> bool:
        service = self._services.get(name)
        return (
            service is not None
            and service.wanted
            and not service.stopping
            and not service.removing
            and service.waiting_for is None
        )

    def _spawn(self, procmon_protocol: LoggingProtocol) -> _Transport:
        """Start a child for procmon's ``spawnProcess`` call."""
        service = self._services[procmon_protocol.name]
        spec = service.spec
        env = _child_env(spec)
        watch_reactor(self._reactor)
        try:
            return self._process_factory(
                self._reactor,
                _ServiceProtocol(self, service, procmon_protocol),
                spec.argv,
                env=env,
                cwd=spec.cwd,
                nice=spec.nice,
                stdin=False,
            )
        except (OSError, ValueError, TypeError) as e:
            # A SpawnError is an OSError: procmon catches it and reports the
            # exit, as for any process that could not start.
            raise _spawn_error(spec.argv, spec.cwd, env, e) from e

    def _spawned(self, service: _Service, transport: _Transport) -> None:
        """The child has started (called while it is being connected)."""
        # Whatever is left of its group when the service's process exits is
        # SIGKILLed before the process is reaped: a restarted service must not
        # find its predecessor's children holding its port or files.
        transport.kill_group_on_exit = True
        service.transport = transport
        service.pid = transport.pid
        service.started_at = self._now()
        _log.info(
            "service {service!r} started: pid {pid}",
            service=service.name,
            pid=service.pid,
            state=ServiceState.STARTING,
        )
        self._set_state(service, ServiceState.STARTING)
        if service.spec.start_seconds > 0:
            service.start_timer = self._reactor.callLater(
                service.spec.start_seconds, self._up_long_enough, service
            )
        else:
            self._up_long_enough(service)

    def _up_long_enough(self, service: _Service) -> None:
        service.start_timer = None
        if service.state is ServiceState.STARTING:
            self._set_state(service, ServiceState.RUNNING)
            self._dependency_changed(service)

    def _dependency_changed(self, dependency: _Service) -> None:
        """Start the services waiting for ``dependency``, if it is ready."""
        for service in list(self._services.values()):
            if service.waiting_for != dependency.name or not service.wanted:
                continue
            if self._ready(dependency):
                service.waiting_for = None
                self._start(service, respect_after=False)
            elif dependency.state in (ServiceState.FATAL, ServiceState.EXITED):
                _log.warn(
                    "service {service!r} is not started: {after!r} is {after_state}",
                    service=service.name,
                    after=dependency.name,
                    after_state=dependency.state,
                    state=service.state,
                )

    # -- internals: exits ----------------------------------------------------------

    def _exited(self, name: str, reason: Failure | None) -> None:
        """A service's process ended, or could not start.

        procmon has already scheduled its restart (always); this keeps or
        cancels that restart and sets the state.
        """
        service = self._services.get(name)
        if service is None:
            return
        now = self._now()
        restart_call = _active(self._monitor.restart.get(name))
        uptime = None if service.started_at is None else now - service.started_at
        service.process_gone()
        returncode, description, could_not_start = _describe_exit(reason)
        service.returncode = returncode
        service.last_exit = description
        spec = service.spec
        service.succeeded = (
            returncode is not None and returncode in spec.success_exit_codes
        )
        ran = "" if uptime is None else f" after {_seconds(uptime)} s"

        if service.stopping or not service.wanted:
            if restart_call is not None:
                restart_call.cancel()
            service.stopping = False
            _log.info(
                "service {service!r} stopped: {exit}",
                service=name,
                exit=description,
                state=ServiceState.STOPPED,
            )
            self._set_state(service, ServiceState.STOPPED)
            waiters, service.stop_waiters = service.stop_waiters, []
            for d in waiters:
                d.callback(None)
            if service.wanted and service.transport is None and not service.removing:
                self._start(service, respect_after=False)  # started again meanwhile
            return

        give_up: str | None = None
        final = ServiceState.EXITED
        if could_not_start and spec.restart == "never":
            give_up, final = "restart='never'", ServiceState.FATAL
        elif spec.restart == "never":
            give_up = "restart='never'"
        elif spec.restart == "on-failure" and service.succeeded:
            give_up = "restart='on-failure' and it succeeded"
        else:
            recent = service.recent_restarts
            while recent and recent[0] <= now - spec.restart_window:
                recent.popleft()
            limit = spec.max_restarts
            if limit is not None and len(recent) >= limit:
                final = ServiceState.FATAL
                give_up = (
                    f"{len(recent)} restarts within {spec.restart_window:g} s "
                    f"reached max_restarts={limit}"
                    if limit
                    else "max_restarts=0 allows no restart"
                )

        if give_up is None and restart_call is not None:
            service.restarts += 1
            service.recent_restarts.append(now)
            delay = max(0.0, restart_call.getTime() - now)
            when = f"in {_seconds(delay)} s" if delay else "now"
            _log.warn(
                "service {service!r} {exit}{ran}; restarting {when}",
                service=name,
                exit=description,
                ran=ran,
                when=when,
                delay=delay,
                restarts=service.restarts,
                state=ServiceState.BACKOFF,
            )
            self._set_state(service, ServiceState.BACKOFF)
            return

        if restart_call is not None:
            restart_call.cancel()
        service.wanted = False
        service.waiting_for = None
        if final is ServiceState.FATAL:
            _log.critical(
                "service {service!r} {exit}{ran}; giving up, it is FATAL: {why}. "
                "Fix it, then start it again.",
                service=name,
                exit=description,
                ran=ran,
                why=give_up,
                restarts=service.restarts,
                state=final,
            )
        else:
            _log.info(
                "service {service!r} {exit}{ran}; not restarted ({why})",
                service=name,
                exit=description,
                ran=ran,
                why=give_up,
                state=final,
            )
        self._set_state(service, final)
        self._dependency_changed(service)

    def _stop_timed_out(self, transport: _Transport) -> None:
        for service in self._services.values():
            if service.transport is transport:
                spec = service.spec
                _log.warn(
                    "service {service!r} did not stop within {timeout:g} s of "
                    "{signal}; sending SIGKILL to its process group",
                    service=service.name,
                    timeout=spec.stop_timeout,
                    signal=spec.stop_signum.name,
                    state=service.state,
                )

    def _set_state(self, service: _Service, state: ServiceState) -> None:
        service.state = state
        service.since = self._now()
        ready = [w for w in service.state_waiters if state in w[0]]
        if not ready:
            return
        service.state_waiters[:] = [w for w in service.state_waiters if w not in ready]
        restart_call = _active(self._monitor.restart.get(service.name))
        status = service.status(service.since, restart_call)
        for _states, d in ready:
            d.callback(status)

    # -- internals: reactor shutdown -------------------------------------------------

    def _arm_shutdown(self) -> None:
        if self._shutdown_trigger is None and hasattr(
            self._reactor, "addSystemEventTrigger"
        ):
            self._shutdown_trigger = self._reactor.addSystemEventTrigger(
                "before", "shutdown", self._on_shutdown
            )

    def _disarm_shutdown(self) -> None:
        trigger, self._shutdown_trigger = self._shutdown_trigger, None
        if trigger is not None:
            self._reactor.removeSystemEventTrigger(trigger)

    def _on_shutdown(self) -> Deferred[None]:
        self._shutdown_trigger = None  # fired triggers are gone already
        return self.stop()


def _seconds(value: float) -> str:
    """Seconds for people: ``"0.05"``, ``"2"``, ``"312"``."""
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _child_env(spec: ServiceSpec) -> dict[str, str] | None:
    if spec.env is None:
        return None if spec.inherit_env else {}
    env = dict(os.environ) if spec.inherit_env else {}
    env.update(spec.env)
    return env


def _describe_exit(reason: Failure | None) -> tuple[int | None, str, bool]:
    """``(returncode, description, could_not_start)`` of a process's end."""
    value = None if reason is None else reason.value
    if isinstance(value, twisted_error.ProcessDone | twisted_error.ProcessTerminated):
        if value.signal is not None:
            returncode = -int(value.signal)
        else:
            returncode = int(value.exitCode or 0)
        return returncode, describe_returncode(returncode), False
    if isinstance(value, OSError):
        return None, str(value), True
    if value is None:
        return None, "ended for an unknown reason", False
    return None, f"ended: {value}", False
