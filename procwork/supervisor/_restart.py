"""The restart decision: what becomes of a service whose process has ended.

procmon schedules a restart at every exit; the supervisor then keeps it or
cancels it, by the service's restart policy and restart limit. Only failed
starts count toward that limit (supervisord's rule): a process that ran for
``start_seconds`` had started fine, so when it ends, whatever its exit
status, the restart history is cleared before the restart is counted; a
poller that runs once and exits 0 is restarted for ever, never FATAL. That
verdict
is this one pure function of the spec, the service's wishes and restart
history, how the process ended and the time: no reactor, no process, no
logging, so every rule of it is a row of a table in its tests.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from procwork.supervisor._spec import ServiceSpec, ServiceState

__all__ = ["Exit", "RestartDecision", "decide_restart"]


@dataclass(frozen=True)
class Exit:
    """How a service's process ended.

    Attributes:
        returncode: Its exit code, ``-N`` if killed by signal ``N``; None if
            it could not start or ended for a reason without a code.
        description: For people: ``"exited 3"``, ``"killed by SIGKILL"``,
            ``"cannot run ...: <why>"``.
        could_not_start: It never ran (the spawn failed).
    """

    returncode: int | None
    description: str
    could_not_start: bool = False

    def succeeded(self, success_exit_codes: Collection[int]) -> bool:
        """It exited with one of ``success_exit_codes``."""
        return self.returncode is not None and self.returncode in success_exit_codes


@dataclass(frozen=True)
class RestartDecision:
    """The verdict on an ended process.

    Attributes:
        state: STOPPED (it was being stopped, or is no longer wanted),
            BACKOFF (procmon's scheduled restart stands), EXITED (not
            restarted, by policy) or FATAL (given up).
        why: For EXITED and FATAL, why it is not restarted.
        delay: For BACKOFF, seconds until the restart.
        recent_restarts: The restart history to keep: the times of the
            automatic restarts within ``restart_window``, with ``now`` added
            when this decision is a restart.
    """

    state: ServiceState
    why: str = ""
    delay: float = 0.0
    recent_restarts: tuple[float, ...] = ()


def decide_restart(
    spec: ServiceSpec,
    ended: Exit,
    *,
    wanted: bool,
    stopping: bool,
    recent_restarts: Sequence[float],
    restart_delay: float | None,
    now: float,
    ran: float | None = None,
) -> RestartDecision:
    """Decide whether a service whose process ended is restarted.

    Args:
        spec: The service's spec (restart policy, success codes, limit).
        ended: How its process ended.
        wanted: The service should be running (it was started, not stopped).
        stopping: Its stop signal had been sent.
        recent_restarts: Times of its earlier automatic restarts, oldest
            first; only those within ``restart_window`` of ``now`` count.
        restart_delay: Seconds until the restart procmon scheduled, or None
            if it scheduled none.
        now: The reactor's time.
        ran: Seconds the process ran; None if it never started (or it is
            not known, which counts as a failed start). At least
            ``spec.start_seconds`` means it had started fine: its earlier
            restarts are forgotten, so only consecutive failed starts can
            make it FATAL.

    Returns:
        The decision; the caller cancels procmon's restart unless the state
        is BACKOFF.
    """
    history = tuple(recent_restarts)
    if stopping or not wanted:
        return RestartDecision(ServiceState.STOPPED, recent_restarts=history)
    if spec.restart == "never":
        # A service that could not even start would fail the same way again.
        final = ServiceState.FATAL if ended.could_not_start else ServiceState.EXITED
        return RestartDecision(final, "restart='never'", recent_restarts=history)
    if spec.restart == "on-failure" and ended.succeeded(spec.success_exit_codes):
        return RestartDecision(
            ServiceState.EXITED,
            "restart='on-failure' and it succeeded",
            recent_restarts=history,
        )
    if ran is not None and not ended.could_not_start and ran >= spec.start_seconds:
        # It had started fine: this is a new life, not one more failed start.
        history = ()
    history = tuple(t for t in history if t > now - spec.restart_window)
    limit = spec.max_restarts
    if limit is not None and len(history) >= limit:
        why = (
            f"{len(history)} restarts within {spec.restart_window:g} s "
            f"reached max_restarts={limit}"
            if limit
            else "max_restarts=0 allows no restart"
        )
        return RestartDecision(ServiceState.FATAL, why, recent_restarts=history)
    if restart_delay is None:
        # procmon schedules a restart at every exit while it runs, and the
        # supervisor keeps it running, so this is not expected to happen.
        return RestartDecision(
            ServiceState.EXITED, "no restart was scheduled", recent_restarts=history
        )
    return RestartDecision(
        ServiceState.BACKOFF,
        delay=restart_delay,
        recent_restarts=(*history, now),
    )
