"""The adapter onto :class:`twisted.runner.procmon.ProcessMonitor`.

procmon does what it does well: it starts processes, schedules a restart at
every exit (at once if the process ran longer than a threshold, else after a
delay that doubles up to a maximum) and SIGKILLs a process that does not stop
in time. The supervisor keeps all of that and plugs its own decisions in.
This is the one module that knows procmon's insides (its per-name dicts
``restart``, ``delay``, ``murder`` and ``protocols``, its ``threshold``
settings, the methods it calls on itself); :class:`ProcmonAdapter` is all the
supervisor sees of it, so a change in a Twisted release is fixed here.

Two seams connect procmon to the supervisor:

- the reactor procmon is given (:class:`GroupSpawningReactor`): its
  ``spawnProcess`` asks the supervisor for the child, which starts it as a
  :class:`~procwork._spawn.GroupProcess`; its timers are the real reactor's
  (a ``Clock`` in tests);
- a ProcessMonitor subclass whose overridden methods call back into the
  supervisor (:class:`SupervisorHooks`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from zope.interface import classImplements  # type: ignore[import-untyped]

from procwork._reactor import ReactorTime
from procwork.supervisor._spec import ServiceSpec

if TYPE_CHECKING:
    from procwork.supervisor._processmonitor import ProcessMonitor

__all__ = [
    "ChildTransport",
    "DelayedCall",
    "GroupSpawningReactor",
    "ProcmonAdapter",
    "SpawnChild",
    "SupervisorHooks",
]


class ChildTransport(Protocol):
    """What the supervisor uses of a child's transport (``GroupProcess`` has it)."""

    pid: int | None
    kill_group_on_exit: bool

    def signal_group(self, signum: int) -> bool: ...


class DelayedCall(Protocol):
    # Structural IDelayedCall: mypy cannot check zope interfaces (their
    # methods are declared without self).
    def active(self) -> bool: ...
    def cancel(self) -> None: ...
    def getTime(self) -> float: ...


def _active(call: object) -> DelayedCall | None:
    delayed = cast(DelayedCall | None, call)
    return delayed if delayed is not None and delayed.active() else None


class SupervisorHooks(Protocol):
    """What procmon, extended, asks of the supervisor."""

    def _may_start(self, name: str) -> bool:
        """The service is wanted, and waits for no other: it may start."""

    def _spec_of(self, name: str) -> ServiceSpec | None:
        """The service's spec, None if it is gone."""

    def _backoff_threshold(self, name: str, reason: Failure | None) -> float | None:
        """The run length under which procmon backs off for this exit; None
        if the service is gone."""

    def _exited(self, name: str, reason: Failure | None) -> None:
        """Its process ended (or could not start); procmon has scheduled the
        restart, which the supervisor keeps or cancels."""

    def _stop_timed_out(self, transport: ChildTransport) -> None:
        """The process did not stop within its ``stop_timeout``."""


#: Starts the child of the named service, connected to procmon's protocol.
SpawnChild = Callable[[str, ProcessProtocol], ChildTransport]


class GroupSpawningReactor:
    """The reactor procmon is given.

    ``spawnProcess`` hands procmon's request to the supervisor, which starts
    the child as a ``GroupProcess``; timers are the real reactor's. procmon
    also passes args, env and cwd, but its env cannot say "inherit" (it is
    always a dict, and an empty one would mean an empty environment) and it
    has no nice, so the supervisor takes all of them from the service's spec.
    """

    def __init__(self, reactor: ReactorTime, spawn: SpawnChild) -> None:
        self._reactor = reactor
        self._spawn = spawn

    def spawnProcess(
        self,
        processProtocol: Any,  # procmon's LoggingProtocol
        executable: object,
        args: object,
        env: object = None,
        path: object = None,
        uid: object = None,
        gid: object = None,
        usePTY: object = False,
        childFDs: object = None,
    ) -> ChildTransport:
        name = cast(str, processProtocol.name)
        return self._spawn(name, cast(ProcessProtocol, processProtocol))

    def callLater(
        self, delay: float, callable: Callable[..., Any], *args: Any, **kw: Any
    ) -> Any:
        return self._reactor.callLater(delay, callable, *args, **kw)

    def seconds(self) -> float:
        return self._reactor.seconds()

    def getDelayedCalls(self) -> Any:
        return self._reactor.getDelayedCalls()


# procmon adapts its reactor with IReactorTime(reactor).
classImplements(GroupSpawningReactor, IReactorTime, IReactorProcess)


class ProcmonAdapter:
    """procmon, as the supervisor uses it: one per supervisor.

    Its methods speak the supervisor's terms (a service's spec, its pending
    restart); underneath is procmon's own ``ProcessMonitor``, with the
    supervisor's decisions plugged in.

    Args:
        reactor: The supervisor's reactor (timers).
        hooks: The supervisor (its decisions).
        spawn: Starts a service's child (see :class:`GroupSpawningReactor`).
    """

    def __init__(
        self, reactor: ReactorTime, hooks: SupervisorHooks, spawn: SpawnChild
    ) -> None:
        self._process_monitor = _hooked_process_monitor_class()(
            GroupSpawningReactor(reactor, spawn), hooks
        )

    @property
    def process_monitor(self) -> ProcessMonitor:
        """The :class:`~twisted.runner.procmon.ProcessMonitor` underneath."""
        return self._process_monitor

    def add(self, spec: ServiceSpec) -> None:
        """Let procmon know the service; it is started only if the hooks say
        so (:meth:`SupervisorHooks._may_start`)."""
        self._process_monitor.addProcess(spec.name, list(spec.argv), cwd=spec.cwd)
        self.reset_backoff(spec)

    def remove(self, name: str) -> None:
        """Forget the service (its process has ended)."""
        self._process_monitor.removeProcess(name)

    def start(self, name: str) -> None:
        """Start the service's process now, if it is not running."""
        self._process_monitor.startProcess(name)

    def stop(self, name: str) -> None:
        """Send the service its stop signal; SIGKILL after its stop timeout."""
        self._process_monitor.stopProcess(name)

    def restart_call(self, name: str) -> DelayedCall | None:
        """The pending restart procmon scheduled for the service, if any."""
        return _active(self._process_monitor.restart.get(name))

    def cancel_restart(self, name: str) -> None:
        """Cancel the pending restart, if any."""
        call = self.restart_call(name)
        if call is not None:
            call.cancel()

    def reset_backoff(self, spec: ServiceSpec) -> None:
        """The next crash backs off by ``min_restart_delay`` again."""
        self._process_monitor.delay[spec.name] = spec.min_restart_delay


@functools.cache
def _hooked_process_monitor_class() -> Callable[[Any, SupervisorHooks], ProcessMonitor]:
    """The ProcessMonitor subclass, defined on first use.

    It extends procwork's drop-in :class:`~procwork.supervisor.ProcessMonitor`
    (procmon, stopping process groups). Importing ``twisted.runner.procmon``
    imports the global reactor (it is the default of a constructor argument),
    which library code must not do at import time, so the subclass is made
    when the first Supervisor is.
    """
    from procwork.supervisor._processmonitor import ProcessMonitor

    class _HookedProcessMonitor(ProcessMonitor):
        """procmon with the supervisor's decisions plugged in.

        procmon keeps doing what it does: starting processes, the backoff
        arithmetic, scheduling restarts, the kill timer (``murder``) and its
        cancellation at exit; procwork's ProcessMonitor adds the stop of the
        whole process group. Overridden, each for the reason given there:
        ``startProcess`` (a gate), ``_monitoredProcessExited`` (per-service
        backoff settings, its threshold chosen by how the process ended, then
        the supervisor's verdict on the restart procmon scheduled),
        ``_stop_signal`` and ``_kill_time`` (the service's own stop signal
        and timeout), ``_stop_expired`` (the supervisor is told).
        """

        # Any: procmon annotates it IReactorProcess, a zope interface that
        # mypy cannot match (this one is a GroupSpawningReactor).
        def __init__(self, reactor: Any, supervisor: SupervisorHooks) -> None:
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
            threshold = self._supervisor._backoff_threshold(name, reason)
            if spec is not None and threshold is not None:
                # procmon's backoff reads monitor-wide settings; each service
                # has its own, so they are set for this call. Its arithmetic
                # (the delay doubled up to the maximum, reset after a long
                # run) is kept; its threshold is overridden per exit: procmon
                # holds every run to one threshold, which let a service that
                # crashed just after start_seconds restart at once, for ever
                # (30 restarts in 30 s). After an unexpected exit the run must
                # have lasted stable_seconds (see _restart.backoff_threshold).
                self.threshold = threshold  # type: ignore[assignment]
                self.minRestartDelay = spec.min_restart_delay  # type: ignore[assignment]
                self.maxRestartDelay = spec.max_restart_delay  # type: ignore[assignment]
            # procmon cancels the kill timer, backs off and schedules the
            # restart. It is not given the reason: it would log every one that
            # is not a plain exit (a spawn error) with a traceback; the
            # supervisor reports it in one clear line instead.
            super()._monitoredProcessExited(name, None)
            self._supervisor._exited(name, reason)

        def _stop_signal(self, name: str) -> int:
            # A service has its own stop signal; ProcessMonitor.stopProcess
            # sends it to the whole group, and arms one SIGKILL timer.
            spec = self._supervisor._spec_of(name)
            return spec.stop_signum if spec is not None else super()._stop_signal(name)

        def _kill_time(self, name: str) -> float:
            # ... and its own stop timeout instead of the monitor-wide killTime.
            spec = self._supervisor._spec_of(name)
            return spec.stop_timeout if spec is not None else super()._kill_time(name)

        def _stop_expired(self, transport: Any) -> None:
            self._supervisor._stop_timed_out(cast(ChildTransport, transport))

    return _HookedProcessMonitor
