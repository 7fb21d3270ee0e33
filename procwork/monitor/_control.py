"""The monitor's control channel: requests on a Unix socket, acted on.

:class:`Controller` carries out the requests of the protocol
(:mod:`procwork.monitor._protocol`) on a running :class:`Monitor`; the
socket server (:func:`listen_control`) and the HTTP endpoint's ``POST
/control`` both hand it what they receive. The socket's connections, and
the bounds on them (a connection cap, an idle timeout, a write buffer per
client), are :mod:`procwork.monitor._controlserver`'s.

Who may connect: the socket file is mode 0600 in a directory of the
monitor's user, so the kernel lets only that user (and root) connect; that
permission is the authentication, as for supervisord's and Docker's
sockets. The server also asks the kernel who is on the other end
(``SO_PEERCRED``) and refuses anyone but the monitor's user and root:
file modes are checked only at ``connect()``, and a socket whose mode or
directory was loosened by hand, bind-mounted into a container, or reached
through an inherited descriptor would otherwise let a stranger stop
services.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    maybeDeferred,
    succeed,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from procwork._errors import ConfigError
from procwork._format import clip
from procwork.monitor._controlserver import (
    ControlServer,
    ControlStats,
    peer_credentials,
)
from procwork.monitor._names import UnknownPattern, resolve
from procwork.monitor._protocol import default_socket_path, error, ok, parse_request
from procwork.supervisor import NoSuchService, ServiceState, ServiceStatus

if TYPE_CHECKING:
    from procwork.monitor._monitor import Monitor

__all__ = ["ControlPort", "Controller", "listen_control", "peer_credentials"]

_log = Logger(namespace="procwork.monitor")

Answer = dict[str, Any]

#: Where a service waited for by ``start --wait`` has settled.
_SETTLED = (
    ServiceState.RUNNING,
    ServiceState.EXITED,
    ServiceState.FATAL,
    ServiceState.STOPPED,
)

#: The last stderr lines a failed ``start --wait`` shows.
_STDERR_SHOWN = 3


class Controller:
    """Carries out control requests on a monitor. Call from the reactor thread.

    Args:
        monitor: The monitor acted on.
    """

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        #: What the control socket's connections did (see ControlServer).
        self.stats = ControlStats()

    def handle(self, message: Mapping[str, Any], peer: str) -> Deferred[Answer]:
        """Answer one request (a decoded line). Never fails: errors are
        answers with ``ok`` false.

        Args:
            message: The request.
            peer: Who asked, for the log (``"pid 12 uid 1000"``).
        """
        try:
            request = parse_request(message)
        except ValueError as e:
            return succeed(error(str(e)))
        command = request["command"]
        if command != "status":  # status is read-only, and polled
            _log.info(
                "control: {command}{names} (from {peer})",
                command=command,
                names=_names_text(request),
                peer=peer,
                control=command,
            )
        # Whatever goes wrong, synchronously or later, becomes an answer.
        d: Deferred[Answer] = maybeDeferred(getattr(self, f"_{command}"), request)
        return d.addErrback(self._failed, command)

    def _failed(self, failure: Failure, command: str) -> Answer:
        # An answer the client can print: the one-line message of the error.
        if not failure.check(Exception):  # pragma: no cover - BaseException
            failure.raiseException()
        message = str(failure.value) or failure.getErrorMessage()
        if failure.check(NoSuchService, ValueError, ProcessLookupError):
            # The request's fault (an unknown name, a bad signal, a stopped
            # service); a rejected reload is a ValueError logged already.
            if not failure.check(ConfigError):
                _log.info(
                    "control: {command} refused: {error}",
                    command=command,
                    error=message,
                )
        else:
            _log.failure("control: {command} failed", failure, command=command)
        return error(message)

    # -- the commands ------------------------------------------------------------

    def _select(self, names: list[str]) -> list[str]:
        """The services named: names, ``all``, globs, numprocs families (see
        :mod:`~procwork.monitor._names`); a pattern naming none refused."""
        known = list(self.monitor.supervisor.status())
        return resolve(names, known, dict(self.monitor.config.families))

    def _statuses(self, names: list[str]) -> dict[str, Any]:
        status = self.monitor.supervisor.status()
        return {name: status[name].to_dict() for name in names if name in status}

    def _status(self, request: dict[str, Any]) -> Deferred[Answer]:
        names = self._select(request["names"] or ["all"])
        return succeed(ok({"services": self._statuses(names)}))

    def _start(self, request: dict[str, Any]) -> Deferred[Answer]:
        names = self._select(request["names"])
        until = self._until(request)
        for name in names:
            # A FATAL or autostart=false service starts too, afresh.
            self.monitor.supervisor.start_service(name)
        if until is not None:
            return self._settled(names, until, request["wait"])
        return succeed(ok({"services": self._statuses(names)}))

    def _stop(self, request: dict[str, Any]) -> Deferred[Answer]:
        names = self._select(request["names"])
        supervisor = self.monitor.supervisor
        return self._after([supervisor.stop_service(name) for name in names], names)

    def _restart(self, request: dict[str, Any]) -> Deferred[Answer]:
        names = self._select(request["names"])
        until = self._until(request)
        supervisor = self.monitor.supervisor
        restarted = self._after([supervisor.restart(name) for name in names], names)
        if until is None:
            return restarted
        # Waited for once every new process is started: before, the old
        # one's RUNNING would do.
        return restarted.addCallback(
            lambda _: self._settled(names, until, request["wait"])
        )

    def _after(self, steps: list[Deferred[Any]], names: list[str]) -> Deferred[Answer]:
        done: Deferred[Any] = DeferredList(
            steps, fireOnOneErrback=True, consumeErrors=True
        )

        def answer(_: object) -> Answer:
            return ok({"services": self._statuses(names)})

        def first_error(failure: Failure) -> Failure:
            # DeferredList wraps the first error in a FirstError.
            inner = getattr(failure.value, "subFailure", None)
            return inner if isinstance(inner, Failure) else failure

        return done.addCallbacks(answer, first_error)

    # -- start --wait ------------------------------------------------------------

    def _until(self, request: dict[str, Any]) -> float | None:
        """When a ``wait`` asked with the request ends (reactor time)."""
        if "wait" not in request:
            return None
        return float(self.monitor.reactor.seconds() + request["wait"])

    def _settled(self, names: list[str], until: float, wait: float) -> Deferred[Answer]:
        """The answer once each service is RUNNING (ok), or has settled
        otherwise (FATAL, EXITED, STOPPED: the request fails, saying why), or
        ``until`` has come (it fails, saying what each is still doing)."""
        supervisor = self.monitor.supervisor
        reactor = self.monitor.reactor
        waits = [maybeDeferred(supervisor.wait_for, name, *_SETTLED) for name in names]

        def give_up() -> None:
            for d in waits:
                d.cancel()  # only the waiting stops

        timer = reactor.callLater(max(0.0, until - reactor.seconds()), give_up)

        def answer(results: list[tuple[bool, Any]]) -> Answer:
            if timer.active():
                timer.cancel()
            statuses = supervisor.status()
            problems = [
                problem
                for name, (settled, outcome) in zip(names, results, strict=True)
                if (problem := self._unsettled(name, settled, outcome, wait, statuses))
            ]
            result = {"services": self._statuses(names)}
            return error("; ".join(problems), result) if problems else ok(result)

        done: Deferred[Any] = DeferredList(waits, consumeErrors=True)
        return done.addCallback(answer)

    def _unsettled(
        self,
        name: str,
        settled: bool,
        outcome: Any,
        wait: float,
        statuses: dict[str, ServiceStatus],
    ) -> str | None:
        """Why ``name`` is not up as waited for; None when it is."""
        if not settled:
            if isinstance(outcome, Failure) and outcome.check(CancelledError):
                state = statuses[name].state if name in statuses else "gone"
                return f"{name}: still {state} after {wait:g} s"
            return f"{name}: {outcome.getErrorMessage()}"  # removed meanwhile
        status: ServiceStatus = outcome
        if status.state is ServiceState.RUNNING:
            return None
        if status.state is ServiceState.EXITED:
            spec = next(s for s in self.monitor.supervisor.specs() if s.name == name)
            if status.returncode in spec.success_exit_codes:
                return None  # a one-shot that did its job
        if status.state is ServiceState.STOPPED:
            return f"{name}: stopped while it was being waited for"
        # The state with why (FATAL's reason, the last exit), as status shows.
        why = f"{name} is {status.summary()}"
        lines = list(
            status.last_stderr[-_STDERR_SHOWN:]
        ) or self.monitor.supervisor.output(name, "stderr", _STDERR_SHOWN)
        if lines:
            why += "; its last stderr: " + " | ".join(clip(line) for line in lines)
        return why

    def _signal(self, request: dict[str, Any]) -> Deferred[Answer]:
        names = self._select(request["names"])
        problems = []
        sent = []
        for name in names:
            try:
                self.monitor.supervisor.signal_service(name, request["signal"])
                sent.append(name)
            except ProcessLookupError as e:
                problems.append(str(e))
        result = {"signalled": sent, "services": self._statuses(names)}
        if problems:
            return succeed(error("; ".join(problems), result))
        return succeed(ok(result))

    def _tail(self, request: dict[str, Any]) -> Deferred[Answer]:
        name = self.one(request["name"])
        supervisor = self.monitor.supervisor
        lines = supervisor.output(name, request["stream"], request["lines"])
        return succeed(ok({"name": name, "lines": lines}))

    def one(self, pattern: str) -> str:
        """The one service ``pattern`` names (``tail`` takes one).

        Raises:
            UnknownPattern: it names none, or several.
        """
        names = self._select([pattern])
        if len(names) != 1:
            raise UnknownPattern(
                f"tail: {clip(repr(pattern))} names {len(names)} services "
                f"({clip(', '.join(names))}); tail takes one"
            )
        return names[0]

    def _reopen(self, request: dict[str, Any]) -> Deferred[Answer]:
        # Each service's files, whatever became of the others': one that
        # cannot be opened again is said, and the request fails.
        names = self._select(request["names"] or ["all"])
        reopened: dict[str, list[str]] = {}
        problems = []
        for name in names:
            try:
                reopened[name] = self.monitor.supervisor.reopen_logs(name)
            except OSError as e:
                problems.append(f"service {name!r}: {e}")
        result = {"reopened": reopened}
        if problems:
            return succeed(error("; ".join(problems), result))
        return succeed(ok(result))

    def _reload(self, request: dict[str, Any]) -> Deferred[Answer]:
        return self.monitor.reload().addCallback(lambda diff: ok(diff.to_dict()))

    def _shutdown(self, request: dict[str, Any]) -> Deferred[Answer]:
        self.monitor.request_shutdown()
        return succeed(ok({"stopping": True}))


def _names_text(request: Mapping[str, Any]) -> str:
    names = request.get("names") or ([request["name"]] if "name" in request else [])
    signal = f" {request['signal']}" if "signal" in request else ""
    return clip(signal + "".join(f" {n}" for n in names))


# -- the socket --------------------------------------------------------------------


ControlPort = Any  # twisted.internet.unix.Port


def listen_control(
    path: str | None,
    controller: Controller,
    reactor: Any,  # the monitor's whole reactor: listenUNIX returns Twisted's Port
) -> ControlPort:
    """Serve ``controller`` on a Unix socket at ``path`` (None: the default).

    The socket's directory is made (mode 0700) if missing; a stale socket
    left by a monitor that was killed is replaced; a live one is not.

    Raises:
        ConfigError: another monitor answers there, the path is not a
            socket, or the socket cannot be made; the message says what to do.
    """
    default = path is None
    path = default_socket_path() if path is None else path
    where = f"control socket {path}"
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{where}: cannot make its directory: {e.strerror}") from None
    if default:
        _check_private(directory, where)
    _clear_stale(path, where)
    # The socket is bound with the process umask, then chmod-ed by Twisted;
    # a umask of 0177 keeps it 0600 from the first instant.
    old_umask = os.umask(0o177)
    try:
        port = reactor.listenUNIX(path, ControlServer(controller, reactor), mode=0o600)
    except Exception as e:
        raise ConfigError(
            f"{where}: cannot listen: {e}; choose another with --socket PATH or "
            "socket = ... in [monitor] (socket = false: none)"
        ) from None
    finally:
        os.umask(old_umask)
    _log.info("control socket on {path}", path=path)
    return port


def _check_private(directory: str, where: str) -> None:
    """The default directory must be the monitor user's own, closed to others:
    in a shared temporary directory anyone could have made it first."""
    info = os.stat(directory)
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ConfigError(
            f"{where}: its directory {directory} is not private to uid "
            f"{os.getuid()} (owner uid {info.st_uid}, mode "
            f"{stat.S_IMODE(info.st_mode):o}); remove it, or choose another "
            "socket with --socket PATH"
        )


def _clear_stale(path: str, where: str) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise ConfigError(
            f"{where}: the path exists and is not a socket; remove it or choose "
            "another with --socket PATH"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2)
    try:
        probe.connect(path)
    except OSError:
        # Nobody listens: left by a monitor that was killed.
        try:
            os.unlink(path)
        except OSError as e:
            raise ConfigError(
                f"{where}: a stale socket is in the way and cannot be removed: "
                f"{e.strerror}"
            ) from None
        return
    finally:
        probe.close()
    raise ConfigError(
        f"{where}: another procwork monitor is listening there; stop it "
        "(procwork ctl shutdown) or give this one its own with --socket PATH"
    )
