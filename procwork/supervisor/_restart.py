"""The restart decision: what becomes of a service whose process has ended.

procmon schedules a restart at every exit; the supervisor then keeps it or
cancels it, by the service's restart policy and restart limit. What counts
toward that limit is every *unexpected* exit: one with a code that is not in
``success_exit_codes``, a signal, or a start that failed, however long the
process ran, unless the supervisor had asked it to stop. ``max_restarts``
such exits within ``restart_window`` are a crash loop the supervisor gives
up on (FATAL). A success is never a failure: a poller that runs, exits 0
and is restarted (``restart="always"``) is restarted for ever.

How long a restart waits is procmon's backoff, with the run length under
which it backs off chosen per exit (:func:`backoff_threshold`): after an
unexpected exit, every run shorter than ``stable_seconds`` doubles the
delay, so a service that crashes after five seconds, again and again,
backs off as surely as one that crashes at once.

Both verdicts are pure functions of the spec, the service's wishes and
history, how the process ended and the time: no reactor, no process, no
logging, so every rule of them is a row of a table in their tests.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from procwork.supervisor._spec import ServiceSpec, ServiceState

__all__ = [
    "Exit",
    "RestartDecision",
    "backoff_threshold",
    "decide_restart",
    "unexpected",
]


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


def unexpected(spec: ServiceSpec, ended: Exit) -> bool:
    """Whether an exit the supervisor did not ask for is a failure: a code
    not in ``success_exit_codes``, a signal, or a start that failed."""
    return not ended.succeeded(spec.success_exit_codes)


def backoff_threshold(spec: ServiceSpec, ended: Exit) -> float:
    """The run length under which procmon backs off (its ``threshold``).

    procmon restarts a process that ran at least its threshold at once and
    resets the delay; a shorter run waits the delay, which then doubles. An
    unexpected exit is held to ``stable_seconds``, so the delay keeps
    doubling until one run lasts that long; a success (a poller's exit 0)
    only to ``start_seconds``, so that a command that exits at once cannot
    spin.
    """
    return spec.stable_seconds if unexpected(spec, ended) else spec.start_seconds


@dataclass(frozen=True)
class RestartDecision:
    """The verdict on an ended process.

    Attributes:
        state: STOPPED (it was being stopped, or is no longer wanted),
            BACKOFF (procmon's scheduled restart stands), EXITED (not
            restarted, by policy) or FATAL (given up).
        why: For EXITED and FATAL, why it is not restarted.
        delay: For BACKOFF, seconds until the restart.
        recent_exits: The history to keep: the times of the unexpected
            exits within ``restart_window``, with ``now`` added when this
            one is one.
        unexpected: This exit was unexpected (see :func:`unexpected`); never
            for a service being stopped.
    """

    state: ServiceState
    why: str = ""
    delay: float = 0.0
    recent_exits: tuple[float, ...] = ()
    unexpected: bool = False


def decide_restart(
    spec: ServiceSpec,
    ended: Exit,
    *,
    wanted: bool,
    stopping: bool,
    recent_exits: Sequence[float],
    restart_delay: float | None,
    now: float,
) -> RestartDecision:
    """Decide whether a service whose process ended is restarted.

    Args:
        spec: The service's spec (restart policy, success codes, limit).
        ended: How its process ended.
        wanted: The service should be running (it was started, not stopped).
        stopping: Its stop signal had been sent.
        recent_exits: Times of its earlier unexpected exits, oldest first;
            only those within ``restart_window`` of ``now`` count.
        restart_delay: Seconds until the restart procmon scheduled, or None
            if it scheduled none.
        now: The reactor's time.

    Returns:
        The decision; the caller cancels procmon's restart unless the state
        is BACKOFF.
    """
    history = tuple(recent_exits)
    if stopping or not wanted:
        return RestartDecision(ServiceState.STOPPED, recent_exits=history)
    failed = unexpected(spec, ended)
    if failed:
        history = (*(t for t in history if t > now - spec.restart_window), now)
    if spec.restart == "never":
        # A service that could not even start would fail the same way again.
        final = ServiceState.FATAL if ended.could_not_start else ServiceState.EXITED
        return RestartDecision(
            final, "restart='never'", recent_exits=history, unexpected=failed
        )
    if spec.restart == "on-failure" and not failed:
        return RestartDecision(
            ServiceState.EXITED,
            "restart='on-failure' and it succeeded",
            recent_exits=history,
        )
    limit = spec.max_restarts
    if failed and limit is not None and len(history) > limit:
        why = (
            f"{len(history)} unexpected exits within {spec.restart_window:g} s, "
            f"more than max_restarts={limit}"
            if limit
            else "max_restarts=0 allows no restart"
        )
        return RestartDecision(
            ServiceState.FATAL, why, recent_exits=history, unexpected=True
        )
    if restart_delay is None:
        # procmon schedules a restart at every exit while it runs, and the
        # supervisor keeps it running, so this is not expected to happen.
        return RestartDecision(
            ServiceState.EXITED,
            "no restart was scheduled",
            recent_exits=history,
            unexpected=failed,
        )
    return RestartDecision(
        ServiceState.BACKOFF,
        delay=restart_delay,
        recent_exits=history,
        unexpected=failed,
    )
