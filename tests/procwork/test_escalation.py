"""The one kill escalation: SIGTERM, grace, SIGKILL of a process group.

Timing on Twisted's ``task.Clock``, the group a fake that records signals;
real groups go through it in tests/procwork/test_killing.py and
tests/procwork/test_run.py.
"""

from __future__ import annotations

import signal

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from procwork._escalation import Escalation, terminate_group


class FakeGroup:
    """A :class:`~procwork._escalation.GroupTarget` recording what it got."""

    def __init__(self) -> None:
        self.kill_group_on_exit = False
        self.signals: list[int] = []
        self.reaped = False
        self._waiters: list[Deferred[None]] = []

    @property
    def exited(self) -> bool:
        return self.reaped

    def signal_group(self, signum: int) -> bool:
        if self.reaped:
            return False
        self.signals.append(signum)
        return True

    def when_reaped(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if self.reaped:
            d.callback(None)
        else:
            self._waiters.append(d)
        return d

    def reap(self) -> None:
        self.reaped = True
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)


def test_terminate_sends_SIGTERM_now_and_SIGKILL_exactly_at_grace() -> None:
    clock, group = Clock(), FakeGroup()
    assert Escalation(group, clock).terminate(5)
    assert group.signals == [signal.SIGTERM]
    assert group.kill_group_on_exit
    clock.advance(4.999)
    assert group.signals == [signal.SIGTERM]
    clock.advance(0.001)
    assert group.signals == [signal.SIGTERM, signal.SIGKILL]
    assert not clock.getDelayedCalls()


def test_no_SIGKILL_when_the_leader_is_reaped_within_grace() -> None:
    """Even if nobody cancels: a reaped group's target refuses the signal."""
    clock, group = Clock(), FakeGroup()
    expired: list[None] = []
    Escalation(group, clock, on_expired=lambda: expired.append(None)).terminate(5)
    clock.advance(1)
    group.reap()
    clock.advance(10)
    assert group.signals == [signal.SIGTERM]
    assert not clock.getDelayedCalls()


def test_on_expired_is_told_just_before_the_SIGKILL() -> None:
    clock, group = Clock(), FakeGroup()
    seen: list[list[int]] = []
    escalation = Escalation(
        group, clock, on_expired=lambda: seen.append(group.signals[:])
    )
    escalation.terminate(5)
    assert escalation.kill_call is not None
    clock.advance(5)
    assert seen == [[signal.SIGTERM]]
    assert group.signals == [signal.SIGTERM, signal.SIGKILL]
    assert escalation.kill_call is None


def test_terminate_again_signals_again_but_arms_one_SIGKILL_at_the_first_grace() -> (
    None
):
    clock, group = Clock(), FakeGroup()
    escalation = Escalation(group, clock)
    escalation.terminate(5)
    clock.advance(2)
    escalation.terminate(60)
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(3)
    assert group.signals == [signal.SIGTERM, signal.SIGTERM, signal.SIGKILL]


def test_cancel_stops_the_SIGKILL_and_may_be_called_again() -> None:
    clock, group = Clock(), FakeGroup()
    escalation = Escalation(group, clock)
    escalation.cancel()  # nothing pending: nothing happens
    escalation.terminate(5)
    escalation.cancel()
    escalation.cancel()
    clock.advance(10)
    assert group.signals == [signal.SIGTERM]
    assert not escalation.pending


def test_grace_zero_sends_SIGKILL_on_the_next_turn() -> None:
    clock, group = Clock(), FakeGroup()
    Escalation(group, clock).terminate(0)
    assert group.signals == [signal.SIGTERM]
    clock.advance(0)
    assert group.signals == [signal.SIGTERM, signal.SIGKILL]


def test_kill_sends_SIGKILL_now_and_cancels_the_pending_one() -> None:
    clock, group = Clock(), FakeGroup()
    escalation = Escalation(group, clock)
    escalation.terminate(5)
    escalation.kill()
    escalation.kill()
    assert group.signals == [signal.SIGTERM, signal.SIGKILL, signal.SIGKILL]
    assert not clock.getDelayedCalls()


def test_a_reaped_group_is_not_signalled_and_nothing_is_scheduled() -> None:
    clock, group = Clock(), FakeGroup()
    group.reap()
    escalation = Escalation(group, clock)
    assert not escalation.terminate(5)
    escalation.kill()
    assert group.signals == [] and not clock.getDelayedCalls()


def test_the_first_signal_may_be_another_than_SIGTERM() -> None:
    clock, group = Clock(), FakeGroup()
    Escalation(group, clock).terminate(1, signal.SIGINT)
    clock.advance(1)
    assert group.signals == [signal.SIGINT, signal.SIGKILL]


def test_terminate_group_fires_when_the_leader_is_reaped() -> None:
    clock, group = Clock(), FakeGroup()
    done = terminate_group(group, clock, 5)
    fired: list[object] = []
    done.addCallback(fired.append)
    clock.advance(1)
    assert not fired
    group.reap()
    assert fired == [None]
    assert not clock.getDelayedCalls()  # the reaping cancelled the SIGKILL


def test_cancelling_terminate_group_SIGKILLs_at_once() -> None:
    clock, group = Clock(), FakeGroup()
    done = terminate_group(group, clock, 5)
    done.cancel()
    assert group.signals == [signal.SIGTERM, signal.SIGKILL]
    assert not clock.getDelayedCalls()
    failures: list[Failure] = []
    done.addErrback(failures.append)
    assert len(failures) == 1 and failures[0].check(CancelledError)
    group.reap()  # a late reaping is no error


def test_many_escalations_on_one_clock_each_kill_only_their_own_late_group() -> None:
    """Stress: hundreds of groups, half reaped within grace; no timer leaks."""
    clock = Clock()
    groups = [FakeGroup() for _ in range(500)]
    for i, group in enumerate(groups):
        Escalation(group, clock).terminate(1 + (i % 7) / 10)
    for group in groups[::2]:
        group.reap()
    clock.advance(2)
    for i, group in enumerate(groups):
        want = [signal.SIGTERM] if i % 2 == 0 else [signal.SIGTERM, signal.SIGKILL]
        assert group.signals == want, i
    assert not clock.getDelayedCalls()


def test_arm_schedules_only_the_SIGKILL_when_the_caller_sent_the_first_signal() -> None:
    """The watchdog's rules SIGTERM a frozen tree themselves, then arm."""
    clock, group = Clock(), FakeGroup()
    escalation = Escalation(group, clock)
    escalation.arm(3)
    escalation.arm(30)  # one SIGKILL, at the first grace
    assert group.signals == []
    clock.advance(3)
    assert group.signals == [signal.SIGKILL]
    assert not clock.getDelayedCalls()
