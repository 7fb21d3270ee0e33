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

import textwrap

import pytest
from twisted.internet.defer import Deferred

import untwisted
from tests.support import ClockReactor, cpu_load, run_child

# Run in the child Pythons below: the pids of this process's children.
_CHILDREN = """
def children():
    found = set()
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as f:
            found.update(f.read().split())
    return found
"""


def _run_stress(code: str, *, prelude: str = "") -> None:
    with cpu_load():
        done = run_child(prelude + textwrap.dedent(code), timeout=90)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok"), done.stdout


@pytest.mark.slow
def test_run_returns_the_result_of_a_thread_pool_call_every_time() -> None:
    """untwisted.run(deferToThread(f)) returns f's value, 2 000 times in a row."""
    _run_stress(
        """
        import untwisted
        from twisted.internet.threads import deferToThread
        for i in range(2000):
            assert untwisted.run(deferToThread(lambda: i)) == i
            assert untwisted.run(deferToThread(lambda: -i), timeout=30) == -i
        print("ok")
        """
    )


@pytest.mark.slow
def test_run_returns_a_deferred_fired_from_another_thread_by_callFromThread() -> None:
    """A plain thread firing the Deferred via reactor.callFromThread wakes run()."""
    _run_stress(
        """
        import threading, untwisted
        from twisted.internet import reactor
        from twisted.internet.defer import Deferred
        for i in range(2000):
            d = Deferred()
            t = threading.Thread(target=reactor.callFromThread, args=(d.callback, i))
            t.start()
            timeout = 30 if i % 2 else None
            assert untwisted.run(d, timeout=timeout) == i
            t.join(timeout=30)
        print("ok")
        """
    )


@pytest.mark.slow
def test_run_returns_results_delivered_by_timers_and_chained_calls() -> None:
    """Timers (deferLater, callLater(0) chains) deliver to a waiting run()."""
    _run_stress(
        """
        import untwisted
        from twisted.internet import reactor, task
        from twisted.internet.defer import Deferred
        for i in range(2000):
            assert untwisted.run(task.deferLater(reactor, 0, lambda: i)) == i
            d = Deferred()
            # the timer queues a thread call from the reactor thread itself,
            # the way procwork delivers a process's end on the next turn
            reactor.callLater(0, reactor.callFromThread, d.callback, i)
            assert untwisted.run(d, timeout=30) == i
        print("ok")
        """
    )


@pytest.mark.slow
def test_explicit_worker_and_wrap_wake_when_a_waited_deferred_fires() -> None:
    """Worker.work() and clockwork.wrap() resume tasks woken by threads and timers."""
    _run_stress(
        """
        import clockwork
        from twisted.internet.threads import deferToThread
        def job(i):
            a = yield deferToThread(lambda: i)
            yield clockwork.sleep(0)
            return a + 1
        for i in range(1000):
            w = clockwork.Worker()
            task = w.assign(job(i))
            w.work(timeout=30)
            assert task.result() == i + 1
            assert clockwork.wrap(job(i), timeout=30) == i + 1
        print("ok")
        """
    )


@pytest.mark.slow
def test_thousands_of_runs_gathered_through_a_capped_scheduler_all_finish() -> None:
    """2 000 /bin/true through Scheduler(max_running=32), gathered, finish."""
    _run_stress(
        """
        import procwork, untwisted
        from twisted.internet import reactor
        from twisted.internet.defer import gatherResults
        sched = procwork.Scheduler(
            reactor, max_running=32, load=procwork.NoLoadLimit()
        )
        runs = [
            procwork.run(["true"], scheduler=sched, timeout=60) for _ in range(2000)
        ]
        results = untwisted.run(gatherResults(runs), timeout=60)
        assert [r.returncode for r in results] == [0] * 2000
        print("ok")
        """
    )


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
    _run_stress(
        """
        import os, untwisted, procwork
        from twisted.internet.defer import gatherResults
        untwisted.lowlevel.default_driver().cleanup_timeout = 600
        for attempt in range(20):
            runs = [procwork.run(["sleep", "100"], grace=600, priority="critical")
                    for _ in range(20)]
            try:
                untwisted.run(gatherResults(runs, consumeErrors=True), timeout=0.2)
            except untwisted.Timeout:
                pass
            else:
                raise AssertionError("did not time out")
            assert not children(), children()
        print("ok")
        """,
        prelude="import os\n" + _CHILDREN,
    )


@pytest.mark.slow
def test_ctrl_c_in_run_returns_as_soon_as_the_children_are_dead() -> None:
    """Ctrl-C while run() waits cancels, settles as the children die, raises."""
    _run_stress(
        """
        import os, signal, untwisted, procwork
        from twisted.internet import reactor
        from twisted.internet.defer import gatherResults
        untwisted.lowlevel.default_driver().cleanup_timeout = 600
        for attempt in range(20):
            runs = [procwork.run(["sleep", "100"], grace=600, priority="critical")
                    for _ in range(10)]
            reactor.callLater(0.05, os.kill, os.getpid(), signal.SIGINT)
            try:
                untwisted.run(gatherResults(runs, consumeErrors=True))
            except KeyboardInterrupt:
                pass
            else:
                raise AssertionError("no KeyboardInterrupt")
            assert not children(), children()
        print("ok")
        """,
        prelude="import os\n" + _CHILDREN,
    )


@pytest.mark.slow
def test_stopping_a_supervisor_returns_when_its_services_are_dead() -> None:
    """Supervisor.stop() settles as the services die, not after stop_timeout."""
    _run_stress(
        """
        import untwisted
        from procwork.supervisor import Supervisor, ServiceSpec
        for attempt in range(40):
            sup = Supervisor()
            for i in range(3):
                sup.add(ServiceSpec(f"s{i}", ["sleep", "100"], start_seconds=0,
                                    stop_timeout=600))
            sup.start()
            for i in range(3):
                untwisted.run(sup.wait_for(f"s{i}", "RUNNING"), timeout=30)
            untwisted.run(sup.stop(), timeout=120)
        print("ok")
        """
    )
