"""SIGTERM, a grace period, then SIGKILL: the one kill escalation of procwork.

Every caller that stops a process group politely goes through
:class:`Escalation`: a run's timeout, cancel and ``terminate()``
(``_process.py``), the children still alive when the reactor stops
(``_shutdown.py``) and a supervised service's cancelled stop. As trio writes
its ``deliver_cancel`` once, the timing lives here once: the first signal
now, SIGKILL exactly ``grace`` seconds later unless the group's leader has
been reaped by then, and never a second timer however often it is asked.
"""

from __future__ import annotations

import signal
from typing import Any, Protocol

from twisted.internet.defer import Deferred

__all__ = ["Escalation", "GroupTarget", "terminate_group"]


class GroupTarget(Protocol):
    """What an escalation signals: a process group and its leader.

    :class:`~procwork._spawn.GroupProcess` is one.
    """

    kill_group_on_exit: bool
    """SIGKILL what is left of the group when the leader exits, before it is
    reaped (the escalation sets it: a group being stopped goes whole)."""

    @property
    def exited(self) -> bool:
        """True once the leader has been reaped."""

    def signal_group(self, signum: int) -> bool:
        """Send ``signum`` to the group; False if the leader is reaped."""

    def when_reaped(self) -> Deferred[None]:
        """A Deferred that fires once the leader has been reaped."""


class Escalation:
    """SIGTERM → grace → SIGKILL of one process group.

    Call from the reactor thread. Idempotent: :meth:`terminate` signals
    each time it is called (a second SIGTERM is harmless and what a user
    calling ``terminate()`` twice asks for) but arms one SIGKILL timer only,
    with the grace of the first call; :meth:`kill` and :meth:`cancel` may be
    called any number of times. The timer is cancelled when the leader is
    reaped, so nothing of it outlives the group.

    Args:
        target: The group (a :class:`GroupTarget`).
        reactor: Times the grace period (``callLater``).
    """

    def __init__(self, target: GroupTarget, reactor: Any) -> None:
        self._target = target
        self._reactor = reactor
        self._kill_call: Any = None
        self._watching = False

    @property
    def pending(self) -> bool:
        """True while SIGKILL is scheduled."""
        return self._kill_call is not None and self._kill_call.active()

    def terminate(self, grace: float, signum: int = signal.SIGTERM) -> bool:
        """Send ``signum`` (SIGTERM) to the group now, SIGKILL after ``grace``.

        Returns:
            Whether the signal was delivered (False once the leader is
            reaped; nothing is then scheduled).
        """
        target = self._target
        # Whatever is left of the group when the leader dies is killed
        # before the leader is reaped (its pgid is not reusable until then).
        target.kill_group_on_exit = True
        if target.exited:
            return False
        sent = target.signal_group(signum)
        if self._kill_call is None:
            self._kill_call = self._reactor.callLater(grace, self._kill_due)
            self._watch()
        return sent

    def kill(self) -> None:
        """SIGKILL the group now (the pending timer, if any, is cancelled)."""
        self.cancel()
        self._target.kill_group_on_exit = True
        if not self._target.exited:
            self._target.signal_group(signal.SIGKILL)

    def cancel(self) -> None:
        """Cancel the pending SIGKILL, if any; signals already sent stay sent."""
        call, self._kill_call = self._kill_call, None
        if call is not None and call.active():
            call.cancel()

    def _kill_due(self) -> None:
        self._kill_call = None
        self.kill()

    def _watch(self) -> None:
        # Once per escalation: the leader's reaping ends the grace period.
        if self._watching:
            return
        self._watching = True

        def reaped(_: object) -> None:
            self.cancel()

        self._target.when_reaped().addCallback(reaped)


def terminate_group(
    target: GroupTarget,
    reactor: Any,
    grace: float,
    signum: int = signal.SIGTERM,
) -> Deferred[None]:
    """Stop a group: ``signum`` now, SIGKILL after ``grace`` seconds.

    Returns:
        A Deferred that fires once the leader has been reaped. Cancelling it
        SIGKILLs the group at once (and fails it with ``CancelledError``).
    """
    escalation = Escalation(target, reactor)
    escalation.terminate(grace, signum)
    reaped = target.when_reaped()
    done: Deferred[None] = Deferred(lambda _: escalation.kill())
    reaped.chainDeferred(done)
    return done
