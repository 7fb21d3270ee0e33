"""SIGTERM, a grace period, then SIGKILL: the one kill escalation of procwork.

Every caller that stops a process group goes through :class:`Escalation`:
a run's timeout, cancel, ``terminate()`` and ``kill()`` (``_process.py``),
the children still alive when the reactor stops (``_shutdown.py``), a
supervised service's stop and its cancellation
(``supervisor/_processmonitor.py``, ``supervisor/_supervisor.py``), and the
SIGKILL of a process tree a watchdog rule SIGTERMed (``monitor/_rules.py``;
``monitor/_treekill.py`` signals the tree member by member, only the timing
is shared). As
trio writes its ``deliver_cancel`` once, the timing lives here once: the
first signal now, SIGKILL exactly ``grace`` seconds later unless the
group's leader has been reaped by then, and never a second timer however
often it is asked.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from procwork._reactor import Reactor

__all__ = ["Escalation", "GroupTarget", "ReapableGroup", "terminate_group"]


class GroupTarget(Protocol):
    """What an escalation signals: a process group and its leader.

    :class:`~procwork._spawn.GroupProcess` is one (and the supervisor's
    ``ChildTransport``).
    """

    kill_group_on_exit: bool
    """SIGKILL what is left of the group when the leader exits, before it is
    reaped (the escalation sets it: a group being stopped goes whole)."""

    def signal_group(self, signum: int) -> bool:
        """Send ``signum`` to the group; False (nothing sent) once the leader
        is reaped."""


class ReapableGroup(GroupTarget, Protocol):
    """A :class:`GroupTarget` that says when its leader is reaped."""

    def when_reaped(self) -> Deferred[None]:
        """A Deferred that fires once the leader has been reaped."""


class Escalation:
    """SIGTERM → grace → SIGKILL of one process group.

    Call from the reactor thread. Idempotent: :meth:`terminate` signals
    each time it is called (a second SIGTERM is harmless and what a user
    calling ``terminate()`` twice asks for) but arms one SIGKILL timer only,
    with the grace of the first call; :meth:`kill` and :meth:`cancel` may be
    called any number of times. Whoever learns that the leader was reaped
    calls :meth:`cancel` (:func:`terminate_group` does so itself); a SIGKILL
    falling due after that sends nothing, since the target refuses to signal
    a reaped group.

    Args:
        target: The group (a :class:`GroupTarget`).
        reactor: Times the grace period (``callLater``).
        on_expired: Called when the grace period has run out, just before
            the SIGKILL (a supervisor logs that the service did not stop).
    """

    def __init__(
        self,
        target: GroupTarget,
        reactor: Reactor,
        *,
        on_expired: Callable[[], object] | None = None,
    ) -> None:
        self._target = target
        self._reactor = reactor
        self._on_expired = on_expired
        self._kill_call: Any = None

    @property
    def pending(self) -> bool:
        """True while SIGKILL is scheduled."""
        return self._kill_call is not None and self._kill_call.active()

    @property
    def kill_call(self) -> Any:
        """The pending SIGKILL's ``IDelayedCall``, or None.

        procmon keeps it in its ``murder`` table, which it cancels itself
        when the process exits.
        """
        return self._kill_call if self.pending else None

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
        sent = target.signal_group(signum)
        if sent:
            self.arm(grace)
        return sent

    def arm(self, grace: float) -> None:
        """SIGKILL after ``grace`` seconds: the first signal went out already.

        For a caller that sends the first signal its own way (the watchdog's
        rules stop a process tree before signalling it). Does nothing while
        a SIGKILL is pending.
        """
        # pending, not "is None": procmon may cancel the call it was handed.
        if not self.pending:
            self._kill_call = self._reactor.callLater(grace, self._kill_due)

    def kill(self) -> None:
        """SIGKILL the group now (the pending timer, if any, is cancelled)."""
        self.cancel()
        self._target.kill_group_on_exit = True
        self._target.signal_group(signal.SIGKILL)

    def cancel(self) -> None:
        """Cancel the pending SIGKILL, if any; signals already sent stay sent."""
        call, self._kill_call = self._kill_call, None
        if call is not None and call.active():
            call.cancel()

    def _kill_due(self) -> None:
        self._kill_call = None
        if self._on_expired is not None:
            self._on_expired()
        self.kill()


def terminate_group(
    target: ReapableGroup,
    reactor: Reactor,
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
    reaped.addCallback(lambda _: escalation.cancel())
    done: Deferred[None] = Deferred(lambda _: escalation.kill())
    reaped.chainDeferred(done)
    return done
