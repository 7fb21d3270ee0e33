"""No lost wake-ups: a wait returns as soon as its result is in hand.

Whatever delivers the result (a thread through ``callFromThread``, a
Twisted thread pool, a timer, a process ending, a task made ready on an
explicit worker), ``untwisted.run``, ``clockwork.wrap`` and ``Worker.work``
return without waiting for I/O that will never come, and ``run(timeout=)``
returns long before its deadline. Each kind is repeated by the thousand in a
child Python (the real global reactor) with every core busy, under a bound
that a single lost wake-up would blow (each repetition's own timeout is 30 s,
the whole child's is 60 s).
"""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred

import untwisted
from tests.support import ClockReactor, cpu_load, run_program


def _run_stress(scenario: str) -> None:
    """The scenario of tests/programs/wakeups.py, with every core busy."""
    with cpu_load():
        done = run_program("wakeups", scenario, timeout=90)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok"), done.stdout


@pytest.mark.slow
def test_run_returns_the_result_of_a_thread_pool_call_every_time() -> None:
    """untwisted.run(deferToThread(f)) returns f's value, 2 000 times in a row."""
    _run_stress("thread-pool")


@pytest.mark.slow
def test_run_returns_a_deferred_fired_from_another_thread_by_callFromThread() -> None:
    """A plain thread firing the Deferred via reactor.callFromThread wakes run()."""
    _run_stress("call-from-thread")


@pytest.mark.slow
def test_run_returns_results_delivered_by_timers_and_chained_calls() -> None:
    """Timers (deferLater, callLater(0) chains) deliver to a waiting run()."""
    _run_stress("timers")


@pytest.mark.slow
def test_explicit_worker_and_wrap_wake_when_a_waited_deferred_fires() -> None:
    """Worker.work() and clockwork.wrap() resume tasks woken by threads and timers."""
    _run_stress("workers")


@pytest.mark.slow
def test_thousands_of_runs_gathered_through_a_capped_scheduler_all_finish() -> None:
    """2 000 /bin/true through Scheduler(max_running=32), gathered, finish."""
    _run_stress("capped-scheduler")


class _ThreadCallReactor(ClockReactor):
    """A ClockReactor that also queues calls like ``callFromThread`` does."""

    def __init__(self) -> None:
        super().__init__()
        self.threadCallQueue: list[tuple[object, tuple[object, ...]]] = []

    def callFromThread(self, f: object, *args: object) -> None:
        self.threadCallQueue.append((f, args))

    def runUntilCurrent(self) -> None:
        calls, self.threadCallQueue = self.threadCallQueue, []
        for f, args in calls:
            f(*args)  # type: ignore[operator]
        super().runUntilCurrent()


def test_a_result_delivered_by_a_queued_call_is_returned_without_waiting() -> None:
    """run() checks for its result between running due calls and waiting for I/O."""
    reactor = _ThreadCallReactor()
    driver = untwisted.lowlevel.Driver(reactor, register_atexit=lambda hook: None)
    d: Deferred[int] = Deferred()
    reactor.callLater(1, reactor.callFromThread, d.callback, 7)
    assert driver.run(d, timeout=100) == 7
    # one wait of 1 s for the timer, then the queued call delivered the
    # result: no wait for the rest of the 100 s
    assert reactor.iterations == [1]


def test_queued_calls_make_the_next_wait_for_io_zero() -> None:
    """A call queued by a timer is run on the next turn, not after a wait."""
    reactor = _ThreadCallReactor()
    driver = untwisted.lowlevel.Driver(reactor, register_atexit=lambda hook: None)
    d: Deferred[int] = Deferred()
    reactor.callLater(1, reactor.callFromThread, reactor.callFromThread, d.callback, 3)
    assert driver.run(d, timeout=100) == 3
    assert reactor.iterations == [1, 0.0]


@pytest.mark.slow
def test_a_timed_out_run_returns_as_soon_as_its_children_are_dead() -> None:
    """run(timeout=) on many children settles when they die, not after grace.

    Each child dies at SIGTERM; grace and the driver's cleanup bound are
    600 s, so a single lost wake-up in the settle loop blows the child
    Python's bound.
    """
    _run_stress("timed-out-run")


@pytest.mark.slow
def test_ctrl_c_in_run_returns_as_soon_as_the_children_are_dead() -> None:
    """Ctrl-C while run() waits cancels, settles as the children die, raises."""
    _run_stress("ctrl-c")


@pytest.mark.slow
def test_stopping_a_supervisor_returns_when_its_services_are_dead() -> None:
    """Supervisor.stop() settles as the services die, not after stop_timeout."""
    _run_stress("supervisor-stop")
