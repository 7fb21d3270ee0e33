"""What the supervisor keeps of one service: :class:`ServiceRecord`.

One state object per service (procmon keeps five dicts keyed by name; the
supervisor adds none), the :class:`~procwork.supervisor.ServiceStatus`
snapshot made from it, and those who wait for it to reach a state.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred

from procwork.supervisor._servicelog import LogTroubleListener, ServiceOutput
from procwork.supervisor._spec import ServiceSpec, ServiceState, ServiceStatus

if TYPE_CHECKING:
    from procwork.supervisor._procmon import ChildTransport, DelayedCall

__all__ = ["ServiceRecord", "service_states"]


class ServiceRecord:
    """All the supervisor knows about one service.

    procmon keeps its own per-name dicts (delay, timeStarted, murder, restart,
    protocols); everything the supervisor adds lives here.
    """

    def __init__(
        self,
        spec: ServiceSpec,
        now: float,
        clock: Callable[[], float],
        trouble: LogTroubleListener | None = None,
        call_later: Callable[..., object] | None = None,
    ) -> None:
        self.spec = spec
        self.output = ServiceOutput(
            spec, clock, lambda: self.pid, trouble, call_later=call_later
        )
        self.state = ServiceState.STOPPED
        self.since = now
        self.transport: ChildTransport | None = None
        self.pid: int | None = None
        self.started_at: float | None = None
        self.last_started: float | None = None  # kept after the process ends
        self.start_timer: DelayedCall | None = None
        self.stable_timer: DelayedCall | None = None
        self.restarts = 0
        self.recent_exits: tuple[float, ...] = ()  # unexpected, within the window
        self.last_exit: str | None = None
        self.returncode: int | None = None
        self.succeeded = False  # the last process ended with a success code
        self.failed = False  # the last process's exit was unexpected
        self.reason: str | None = None  # why it is FATAL or EXITED
        self.failures = 0  # unexpected exits since it was added
        # The unexpected exits since it last ran stable_seconds: how many,
        # the first and last one's times, the last one's stderr.
        self.crashes = 0
        self.first_crash: float | None = None
        self.last_crash: float | None = None
        self.last_stderr: tuple[str, ...] = ()
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
        """The service's name."""
        return self.spec.name

    def status(self, now: float, restart_call: DelayedCall | None) -> ServiceStatus:
        """Its status at reactor time ``now``; ``restart_call`` is procmon's
        pending restart of it, if any (when in BACKOFF, it is due then)."""
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
            started=self.last_started,
            failures=self.failures,
            crashes=self.crashes,
            first_crash=self.first_crash,
            last_crash=self.last_crash,
            failed=self.failed,
            reason=self.reason,
            last_stderr=self.last_stderr,
            stable_in=(
                None
                if self.stable_timer is None or not self.stable_timer.active()
                else max(0.0, self.stable_timer.getTime() - now)
            ),
        )

    def crashed(self, now: float, stderr: tuple[str, ...]) -> None:
        """Its process exited unexpectedly at ``now``, its run having
        written ``stderr`` last."""
        self.failures += 1
        self.crashes += 1
        if self.first_crash is None:
            self.first_crash = now
        self.last_crash = now
        self.last_stderr = stderr

    def forget_crashes(self) -> None:
        """It is stable again, or was stopped: no crash loop now."""
        self.crashes = 0
        self.first_crash = self.last_crash = None
        self.last_stderr = ()

    @property
    def may_start(self) -> bool:
        """procmon may start its process now: it is wanted, and neither
        stopping, being removed nor waiting for another service."""
        return (
            self.wanted
            and not self.stopping
            and not self.removing
            and self.waiting_for is None
        )

    def process_started(self, transport: ChildTransport, now: float) -> None:
        """Its process has started on ``transport`` at reactor time ``now``."""
        # Whatever is left of its group when the service's process exits is
        # SIGKILLed before the process is reaped: a restarted service must not
        # find its predecessor's children holding its port or files.
        transport.kill_group_on_exit = True
        self.transport = transport
        self.pid = transport.pid
        self.started_at = self.last_started = now

    def process_gone(self) -> None:
        """Its process has ended: no transport, pid or start timer now."""
        self.transport = None
        self.pid = None
        self.started_at = None
        for timer in (self.start_timer, self.stable_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self.start_timer = self.stable_timer = None

    def wait_for(self, states: frozenset[ServiceState]) -> Deferred[ServiceStatus]:
        """A Deferred that fires with its status when it next enters one of
        ``states`` (see :meth:`entered`); cancelling it stops the waiting."""

        def forget(d: Deferred[ServiceStatus]) -> None:
            self.state_waiters[:] = [w for w in self.state_waiters if w[1] is not d]

        d: Deferred[ServiceStatus] = Deferred(forget)
        self.state_waiters.append((states, d))
        return d

    def entered(self, state: ServiceState, status: Callable[[], ServiceStatus]) -> None:
        """It has entered ``state``: those waiting for it get ``status()``."""
        ready = [w for w in self.state_waiters if state in w[0]]
        if not ready:
            return
        self.state_waiters[:] = [w for w in self.state_waiters if w not in ready]
        now = status()
        for _states, d in ready:
            d.callback(now)

    def removed(self, error: Exception) -> None:
        """It was removed: those waiting for a state of it fail with ``error``."""
        for _states, waiter in self.state_waiters:
            waiter.errback(error)
        self.state_waiters.clear()


def service_states(states: Collection[object]) -> frozenset[ServiceState]:
    """The states named in ``states`` (:class:`ServiceState` or their names,
    in any case), for :meth:`Supervisor.wait_for`.

    Raises:
        ValueError: none is given, or one is no state; the message lists them.
    """
    if not states:
        raise ValueError("wait_for() needs at least one state to wait for")
    try:
        return frozenset(ServiceState(str(s).upper()) for s in states)
    except ValueError:
        choices = ", ".join(s.value for s in ServiceState)
        raise ValueError(f"states must be among {choices}; got {states!r}") from None
