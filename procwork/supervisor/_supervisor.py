"""Supervised services: named long-running processes kept alive.

:class:`Supervisor` runs services on procmon (which starts them, schedules
their restarts with backoff, and SIGKILLs one that does not stop in time)
and adds what procmon lacks: restart policies, a backoff held until a run
is stable, crash loops said as such and a limit on unexpected exits, a stop
signal and timeout per service sent to its whole process group, start
order, services started by name, and a status per service. This module
holds what happens at each start, exit and stop; the verdicts (``_restart``,
``_order``), the spec (``_spec``), the state per service (``_service``), its
child (``_child``), the adapter onto procmon (``_procmon``) and the output
methods (``_outputs``) are rooms of their own.

Design: ARCHITECTURE.md, "Services on procmon".
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any, cast

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from procwork._errors import ConfigError
from procwork._escalation import Escalation
from procwork._format import format_seconds
from procwork._reactor import (
    ReactorTime,
    SystemEvents,
    default_reactor,
)
from procwork._spawn import GroupProcess
from procwork._threads import check_thread
from procwork._validate import signal_number
from procwork.supervisor._child import ProcessFactory, describe_exit, spawn_child
from procwork.supervisor._order import (
    check_after,
    check_removable,
    first_blocker,
    is_ready,
    never_ready,
)
from procwork.supervisor._outputs import ServiceOutputs
from procwork.supervisor._procmon import ChildTransport, ProcmonAdapter
from procwork.supervisor._restart import Exit, backoff_threshold, decide_restart
from procwork.supervisor._service import ServiceRecord, service_states
from procwork.supervisor._servicelog import LogTroubleListener, ServiceLogTrouble
from procwork.supervisor._spec import (
    CRASH_LOOP_EXITS,
    STDERR_LINE_CHARS,
    STDERR_LINES,
    NoSuchService,
    RestartPolicy,
    ServiceNotRunning,
    ServiceSpec,
    ServiceState,
    ServiceStatus,
)

__all__ = [
    "NoSuchService",
    "ProcessFactory",
    "RestartPolicy",
    "ServiceNotRunning",
    "ServiceSpec",
    "ServiceState",
    "ServiceStatus",
    "Supervisor",
]

_log = Logger(namespace="procwork.supervisor")

StateListener = Callable[[ServiceStatus, ServiceState], object]
"""Called with a service's new status and its previous state."""


# -- the supervisor ------------------------------------------------------------


class Supervisor(ServiceOutputs):
    """Keeps named services running: add them, start, watch, stop.

    Built on :class:`twisted.runner.procmon.ProcessMonitor` (restart
    scheduling and backoff are procmon's). Every method is called from the
    reactor thread: from blocking code that drives the reactor with
    :mod:`untwisted`, from clockwork generators, or Twisted callbacks; from
    any other thread it raises :class:`untwisted.ForeignThreadError`.
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
        self,
        reactor: ReactorTime | None = None,
        *,
        process_factory: ProcessFactory | None = None,
    ) -> None:
        if reactor is None:
            reactor = default_reactor()
        self._reactor: ReactorTime = reactor
        self._process_factory: ProcessFactory = (
            process_factory if process_factory is not None else GroupProcess
        )
        self._services: dict[str, ServiceRecord] = {}  # in the order added
        self._started = False
        self._shutdown_trigger: Any = None
        self._procmon = ProcmonAdapter(reactor, self, self._spawn)
        self._listeners: list[StateListener] = []
        self._log_listeners: list[LogTroubleListener] = []

    def __repr__(self) -> str:
        states = ", ".join(f"{s.name}: {s.state}" for s in self._services.values())
        return f"<Supervisor {states or 'no services'}>"

    @property
    def reactor(self) -> ReactorTime:
        """The reactor the services are run on."""
        return self._reactor

    def listen(self, listener: StateListener) -> None:
        """Call ``listener(status, previous_state)`` at every change of state.

        Called in the reactor thread as the change happens; an exception in
        a listener is logged and does not reach the supervisor.
        """
        self._listeners.append(listener)

    def listen_log_trouble(self, listener: LogTroubleListener) -> None:
        """Call ``listener(trouble)`` when a service's log file starts
        failing (a full disk, its directory gone) and when it works again
        (with the lines lost meanwhile); each is logged too. Called in the
        reactor thread; an exception in it is logged."""
        self._log_listeners.append(listener)

    def _log_trouble(self, trouble: ServiceLogTrouble) -> None:
        for listener in list(self._log_listeners):
            try:
                listener(trouble)
            except Exception:
                _log.failure("a log trouble listener failed")

    # -- configuration ---------------------------------------------------------

    def add(self, spec: ServiceSpec) -> None:
        """Add a service. If the supervisor is started, start it now.

        Raises:
            TypeError: ``spec`` is not a :class:`ServiceSpec`.
            ConfigError: the name is taken, or ``after`` names a service that
                has not been added.
        """
        check_thread("Supervisor.add", self._reactor)
        if not isinstance(spec, ServiceSpec):
            raise TypeError(f"Supervisor.add() takes a ServiceSpec, not {spec!r}")
        if spec.name in self._services:
            raise ConfigError(
                f"service {spec.name!r}: a service of that name was already added "
                "(remove it first)"
            )
        check_after(spec, self._live_names())
        service = ServiceRecord(
            spec, self._now(), self._now, self._log_trouble, self._reactor.callLater
        )
        self._services[spec.name] = service
        # Not wanted yet, so procmon does not start it here (see _may_start).
        self._procmon.add(spec)
        if self._started and spec.autostart:
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
        check_thread("Supervisor.remove", self._reactor)
        service = self._get(name)
        check_removable(
            name, (s.spec for s in self._services.values() if not s.removing)
        )
        service.removing = True
        d = self.stop_service(name)

        def forget(_: object) -> None:
            if service.state is not ServiceState.STOPPED:  # it was FATAL or EXITED
                self._set_state(service, ServiceState.STOPPED)
            self._procmon.remove(name)
            del self._services[name]
            service.output.close()
            service.removed(NoSuchService(f"service {name!r} was removed"))

        return d.addCallback(forget)

    def specs(self) -> list[ServiceSpec]:
        """The specs of the services, in the order they were added."""
        return [s.spec for s in self._services.values()]

    # -- starting and stopping -------------------------------------------------

    def start(self) -> None:
        """Start every service, in the order added.

        A service with ``after`` waits until those services are RUNNING (or
        have exited successfully). Services added later start when added.
        Services already running, starting or in BACKOFF are left alone;
        STOPPED, EXITED and FATAL ones start (again). Services with
        ``autostart=False`` are left alone: start them by name.
        """
        check_thread("Supervisor.start", self._reactor)
        self._started = True
        self._arm_shutdown()
        for service in list(self._services.values()):
            if service.spec.autostart and not service.wanted and not service.removing:
                self._start(service, respect_after=True)

    def stop(self) -> Deferred[None]:
        """Stop every service with its stop signal and timeout.

        All are stopped at once. Services added later are not started.

        Returns:
            A Deferred that fires when every service's process group is
            reaped. Cancelling it SIGKILLs the groups still alive.
        """
        check_thread("Supervisor.stop", self._reactor)
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
        check_thread("Supervisor.start_service", self._reactor)
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
        check_thread("Supervisor.stop_service", self._reactor)
        service = self._services.get(name)
        if service is None:
            raise self._no_such(name)
        service.wanted = False
        service.waiting_for = None
        self._procmon.cancel_restart(name)
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
            self._procmon.stop(name)
            if service.transport is None:  # it ended inside stopProcess
                return succeed(None)

        def kill_now(_: Deferred[None]) -> None:
            if d in service.stop_waiters:
                service.stop_waiters.remove(d)
            if service.transport is not None:
                # The stop's pending SIGKILL, in procmon's table, is
                # cancelled there when the process exits.
                Escalation(service.transport, self._reactor).kill()

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
        check_thread("Supervisor.restart", self._reactor)
        self._get(name)

        def start_again(_: object) -> None:
            service = self._services.get(name)
            if service is not None and not service.removing:
                self.start_service(name)

        return self.stop_service(name).addCallback(start_again)

    def signal_service(self, name: str, signum: int | str) -> None:
        """Send a signal to a running service's whole process group.

        The supervisor does not take this for a stop: a service that exits
        of it is restarted as its policy says.

        Raises:
            NoSuchService: no such service.
            ValueError: not a signal.
            ServiceNotRunning: the service has no running process (a
                ``ProcessLookupError`` too).
        """
        service = self._get(name)
        number = int(signal.Signals(signal_number(signum)))
        transport = service.transport
        if transport is None or not transport.signal_group(number):
            raise ServiceNotRunning(
                f"service {name!r} is not running ({service.state}): no process "
                f"group to send {signal.Signals(number).name} to"
            )
        _log.info(
            "service {service!r}: {signal} sent to process group {pid}",
            service=name,
            signal=signal.Signals(number).name,
            pid=service.pid,
            state=service.state,
        )

    def replace(self, spec: ServiceSpec) -> Deferred[None]:
        """Give a service a new spec, as a config reload does.

        The service is stopped with its *old* stop signal and timeout, then
        started with the new spec if it was wanted (running, starting, in
        backoff or waiting) or the new spec has ``autostart``, and the
        supervisor is started. Its restart history and backoff start afresh.
        It keeps its place in the order and the services that start after
        it.

        Returns:
            A Deferred that fires once the old process is reaped and the new
            one started (or its start attempted: see :meth:`status`).

        Raises:
            NoSuchService: no service of that name.
            ConfigError: ``after`` names a service not added, or itself.
        """
        service = self._get(spec.name)
        check_after(spec, self._live_names(), replacing=True)
        start_again = service.wanted or spec.autostart
        # The stop signal is sent and the SIGKILL timer armed now, with the
        # old spec's signal and timeout; the new spec takes over at once, so
        # services that start after this one see its new dependencies.
        stopped = self.stop_service(spec.name)
        service.spec = spec
        service.output.respec(spec)
        service.recent_exits = ()
        self._procmon.reset_backoff(spec)

        def start(_: object) -> None:
            if start_again and self._started and self._live(spec.name) is service:
                self._arm_shutdown()
                self._start(service, respect_after=True)

        return stopped.addCallback(start)

    # -- status ----------------------------------------------------------------

    def status(self) -> dict[str, ServiceStatus]:
        """A snapshot of every service, by name, in the order added."""
        check_thread("Supervisor.status", self._reactor)
        now = self._now()
        return {
            name: service.status(now, self._procmon.restart_call(name))
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
        check_thread("Supervisor.wait_for", self._reactor)
        service = self._get(name)
        wanted = service_states(states)
        if service.state in wanted:
            restart_call = self._procmon.restart_call(name)
            return succeed(service.status(self._now(), restart_call))
        return service.wait_for(wanted)

    # -- internals: lookups ----------------------------------------------------

    def _now(self) -> float:
        return self._reactor.seconds()

    def _no_such(self, name: str) -> NoSuchService:
        known = ", ".join(repr(n) for n in self._services) or "none"
        return NoSuchService(f"no service named {name!r} (services: {known})")

    def _live(self, name: str) -> ServiceRecord | None:
        service = self._services.get(name)
        return None if service is None or service.removing else service

    def _live_names(self) -> set[str]:
        return {name for name, s in self._services.items() if not s.removing}

    def _get(self, name: str) -> ServiceRecord:
        service = self._live(name)
        if service is None:
            if name in self._services:
                raise NoSuchService(f"service {name!r} is being removed")
            raise self._no_such(name)
        return service

    def _spec_of(self, name: str) -> ServiceSpec | None:
        service = self._services.get(name)
        return None if service is None else service.spec

    # -- internals: starting -----------------------------------------------------

    def _start(self, service: ServiceRecord, respect_after: bool) -> None:
        service.wanted = True
        service.waiting_for = None
        if service.stopping or service.transport is not None:
            return  # running, or will start again once it has stopped
        if respect_after:
            service.waiting_for = first_blocker(service.spec, self._services)
        if service.state in (ServiceState.FATAL, ServiceState.EXITED):
            service.recent_exits = ()
            self._procmon.reset_backoff(service.spec)
        if service.waiting_for is not None:
            _log.info(
                "service {service!r} waits for {after!r} to be RUNNING",
                service=service.name,
                after=service.waiting_for,
                state=service.state,
            )
            return
        self._procmon.cancel_restart(service.name)
        self._procmon.start(service.name)

    def _may_start(self, name: str) -> bool:
        service = self._services.get(name)
        return service is not None and service.may_start

    def _spawn(self, name: str, procmon_protocol: ProcessProtocol) -> ChildTransport:
        """Start a child for procmon's ``spawnProcess`` call."""
        service = self._services[name]
        return spawn_child(
            self._process_factory,
            self._reactor,
            service.spec,
            service.output,
            procmon_protocol,
            lambda transport: self._spawned(service, transport),
        )

    def _spawned(self, service: ServiceRecord, transport: ChildTransport) -> None:
        """The child has started (called while it is being connected)."""
        service.process_started(transport, self._now())
        service.reason = None
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
        if service.crashes and service.transport is not None:
            # After crashes, a run must last stable_seconds for the loop to
            # end (see _stable).
            service.stable_timer = self._reactor.callLater(
                service.spec.stable_seconds, self._stable, service
            )

    def _stable(self, service: ServiceRecord) -> None:
        """A run has lasted ``stable_seconds`` after crashes: the crash loop
        is over. The state does not change; the listeners are told all the
        same (their status has ``crashes == 0``)."""
        service.stable_timer = None
        crashes = service.crashes
        service.forget_crashes()
        _log.info(
            "service {service!r} is stable again: up {stable:g} s after "
            "{crashes} unexpected exit{s}",
            service=service.name,
            stable=service.spec.stable_seconds,
            crashes=crashes,
            s="" if crashes == 1 else "s",
            state=service.state,
        )
        self._notify(service, service.state)

    def _up_long_enough(self, service: ServiceRecord) -> None:
        service.start_timer = None
        if service.state is ServiceState.STARTING:
            self._set_state(service, ServiceState.RUNNING)
            self._dependency_changed(service)

    def _dependency_changed(self, dependency: ServiceRecord) -> None:
        """Start the services waiting for ``dependency``, if it is ready."""
        for service in list(self._services.values()):
            if service.waiting_for != dependency.name or not service.wanted:
                continue
            if is_ready(dependency):
                # It may wait for others too: on to the next one, if any.
                self._start(service, respect_after=True)
            elif never_ready(dependency):
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
        cancels that restart, as :func:`decide_restart` says, and sets the
        state.
        """
        service = self._services.get(name)
        if service is None:
            return
        now = self._now()
        restart_call = self._procmon.restart_call(name)
        uptime = None if service.started_at is None else now - service.started_at
        service.process_gone()
        ended = describe_exit(reason)
        service.returncode = ended.returncode
        service.last_exit = ended.description
        service.succeeded = ended.succeeded(service.spec.success_exit_codes)
        decision = decide_restart(
            service.spec,
            ended,
            wanted=service.wanted,
            stopping=service.stopping,
            recent_exits=service.recent_exits,
            restart_delay=(
                None if restart_call is None else max(0.0, restart_call.getTime() - now)
            ),
            now=now,
        )
        service.recent_exits = decision.recent_exits
        service.failed = decision.unexpected
        service.reason = decision.why or None
        if decision.unexpected:
            service.crashed(
                now, service.output.run_lines("stderr", STDERR_LINES, STDERR_LINE_CHARS)
            )
        if decision.state is ServiceState.BACKOFF:
            self._restarting(service, ended, uptime, decision.delay)
            return
        if restart_call is not None:
            restart_call.cancel()
        if decision.state is ServiceState.STOPPED:
            self._stopped(service, ended)
        else:
            self._not_restarted(service, ended, uptime, decision.state, decision.why)

    def _restarting(
        self, service: ServiceRecord, ended: Exit, uptime: float | None, delay: float
    ) -> None:
        """procmon's restart stands: the service backs off until it is due."""
        service.restarts += 1
        first = service.first_crash
        _log.emit(
            LogLevel.warn if service.failed else LogLevel.info,
            "service {service!r} {exit}{ran}; restarting {when}{loop}",
            service=service.name,
            exit=ended.description,
            ran=_ran(uptime),
            when=f"in {format_seconds(delay)} s" if delay else "now",
            loop=(
                f" (crash loop: {service.crashes} exits in "
                f"{format_seconds(self._now() - first)} s)"
                if service.crashes >= CRASH_LOOP_EXITS and first is not None
                else ""
            ),
            delay=delay,
            restarts=service.restarts,
            crashes=service.crashes,
            state=ServiceState.BACKOFF,
        )
        self._set_state(service, ServiceState.BACKOFF)

    def _stopped(self, service: ServiceRecord, ended: Exit) -> None:
        """It was stopped (or is no longer wanted): its stop waiters fire."""
        service.stopping = False
        _log.info(
            "service {service!r} stopped: {exit}",
            service=service.name,
            exit=ended.description,
            state=ServiceState.STOPPED,
        )
        self._set_state(service, ServiceState.STOPPED)
        waiters, service.stop_waiters = service.stop_waiters, []
        for d in waiters:
            d.callback(None)
        if service.wanted and service.transport is None and not service.removing:
            self._start(service, respect_after=False)  # started again meanwhile

    def _not_restarted(
        self,
        service: ServiceRecord,
        ended: Exit,
        uptime: float | None,
        final: ServiceState,
        why: str,
    ) -> None:
        """By its policy or its restart limit, the service stays down."""
        service.wanted = False
        service.waiting_for = None
        if final is ServiceState.FATAL:
            _log.critical(
                "service {service!r} {exit}{ran}; giving up, it is FATAL: {why}. "
                "Fix it, then start it again.",
                service=service.name,
                exit=ended.description,
                ran=_ran(uptime),
                why=why,
                restarts=service.restarts,
                state=final,
            )
        else:
            _log.info(
                "service {service!r} {exit}{ran}; not restarted ({why})",
                service=service.name,
                exit=ended.description,
                ran=_ran(uptime),
                why=why,
                state=final,
            )
        self._set_state(service, final)
        self._dependency_changed(service)

    def _stop_timed_out(self, transport: ChildTransport) -> None:
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

    def _set_state(self, service: ServiceRecord, state: ServiceState) -> None:
        previous = service.state
        service.state = state
        service.since = self._now()
        if state is ServiceState.STOPPED:
            service.forget_crashes()  # stopped on request: the loop is over
        if previous is not state:
            self._notify(service, previous)
        service.entered(
            state,
            lambda: service.status(
                service.since, self._procmon.restart_call(service.name)
            ),
        )

    def _notify(self, service: ServiceRecord, previous: ServiceState) -> None:
        """Tell the listeners of a change: of state, or its crashes forgotten."""
        if not self._listeners:
            return
        changed = service.status(self._now(), self._procmon.restart_call(service.name))
        for listener in list(self._listeners):
            try:
                listener(changed, previous)
            except Exception:
                _log.failure("a service state listener failed")

    def _backoff_threshold(self, name: str, reason: Failure | None) -> float | None:
        """procmon's backoff threshold for this exit; None if the service is
        gone (see :func:`backoff_threshold`)."""
        service = self._services.get(name)
        if service is None:
            return None
        return backoff_threshold(service.spec, describe_exit(reason))

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
            # Armed, so the reactor has system events (_arm_shutdown checked).
            cast(SystemEvents, self._reactor).removeSystemEventTrigger(trigger)

    def _on_shutdown(self) -> Deferred[None]:
        self._shutdown_trigger = None  # fired triggers are gone already
        return self.stop()


def _ran(uptime: float | None) -> str:
    """``" after 2 s"``: how long the process ran, for a log line."""
    return "" if uptime is None else f" after {format_seconds(uptime)} s"
