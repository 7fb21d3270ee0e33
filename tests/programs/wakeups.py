"""No lost wake-ups, by the thousand: ``python -m tests.programs.wakeups SCENARIO``.

Run by ``tests/untwisted/test_wakeups.py`` with every core busy. Each
scenario repeats one way of delivering a result to a waiting
``untwisted.run`` (or ``clockwork.wrap``, ``Worker.work``,
``Supervisor.stop``), asserts every result, and prints ``ok`` at the end; a
single lost wake-up blows the test's bound on the child.
"""

from __future__ import annotations

import operator
import os
import signal
import sys
import threading
from collections.abc import Callable, Generator
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.threads import deferToThread

import clockwork
import procwork
import untwisted
from procwork.supervisor import ServiceSpec, Supervisor
from tests.programs._twisted import reactor


def children() -> set[str]:
    """The pids of this process's children (of every thread)."""
    found: set[str] = set()
    for thread in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{thread}/children") as f:
            found.update(f.read().split())
    return found


def thread_pool() -> None:
    """untwisted.run(deferToThread(f)) returns f's value, 2 000 times in a row."""
    for i in range(2000):
        assert untwisted.run(deferToThread(int, i)) == i
        assert untwisted.run(deferToThread(operator.neg, i), timeout=30) == -i


def call_from_thread() -> None:
    """A plain thread firing the Deferred via reactor.callFromThread wakes run()."""
    for i in range(2000):
        d: Deferred[int] = Deferred()
        t = threading.Thread(target=reactor.callFromThread, args=(d.callback, i))
        t.start()
        timeout = 30 if i % 2 else None
        assert untwisted.run(d, timeout=timeout) == i
        t.join(timeout=30)


def timers() -> None:
    """Timers (deferLater, callLater(0) chains) deliver to a waiting run()."""
    for i in range(2000):
        assert untwisted.run(task.deferLater(reactor, 0, int, i)) == i
        d: Deferred[int] = Deferred()
        # the timer queues a thread call from the reactor thread itself,
        # the way procwork delivers a process's end on the next turn
        reactor.callLater(0, reactor.callFromThread, d.callback, i)
        assert untwisted.run(d, timeout=30) == i


def workers() -> None:
    """Worker.work() and clockwork.wrap() resume tasks woken by threads and timers."""

    def job(i: int) -> Generator[Any, Any, int]:
        a = yield deferToThread(lambda: i)
        yield clockwork.sleep(0)
        return int(a) + 1

    for i in range(1000):
        w = clockwork.Worker()
        assigned = w.assign(job(i))
        w.work(timeout=30)
        assert assigned.result() == i + 1
        assert clockwork.wrap(job(i), timeout=30) == i + 1


def capped_scheduler() -> None:
    """2 000 /bin/true through Scheduler(max_running=32), gathered, finish."""
    sched = procwork.Scheduler(reactor, max_running=32, load=procwork.NoLoadLimit())
    runs = [procwork.run(["true"], scheduler=sched, timeout=60) for _ in range(2000)]
    results = untwisted.run(gatherResults(runs), timeout=60)
    assert [r.returncode for r in results] == [0] * 2000


def timed_out_run() -> None:
    """run(timeout=) on many children settles when they die, not after grace."""
    untwisted.lowlevel.default_driver().cleanup_timeout = 600
    for _ in range(20):
        runs = [
            procwork.run(["sleep", "100"], grace=600, priority="critical")
            for _ in range(20)
        ]
        try:
            untwisted.run(gatherResults(runs, consumeErrors=True), timeout=0.2)
        except untwisted.Timeout:
            pass
        else:
            raise AssertionError("did not time out")
        assert not children(), children()


def ctrl_c() -> None:
    """Ctrl-C while run() waits cancels, settles as the children die, raises."""
    untwisted.lowlevel.default_driver().cleanup_timeout = 600
    for _ in range(20):
        runs = [
            procwork.run(["sleep", "100"], grace=600, priority="critical")
            for _ in range(10)
        ]
        reactor.callLater(0.05, os.kill, os.getpid(), signal.SIGINT)
        try:
            untwisted.run(gatherResults(runs, consumeErrors=True))
        except KeyboardInterrupt:
            pass
        else:
            raise AssertionError("no KeyboardInterrupt")
        assert not children(), children()


def supervisor_stop() -> None:
    """Supervisor.stop() settles as the services die, not after stop_timeout."""
    for _ in range(40):
        sup = Supervisor()
        for i in range(3):
            sup.add(
                ServiceSpec(
                    f"s{i}",
                    ["sleep", "100"],
                    start_seconds=0,
                    stop_timeout=600,
                )
            )
        sup.start()
        for i in range(3):
            untwisted.run(sup.wait_for(f"s{i}", "RUNNING"), timeout=30)
        untwisted.run(sup.stop(), timeout=120)


SCENARIOS: dict[str, Callable[[], None]] = {
    "thread-pool": thread_pool,
    "call-from-thread": call_from_thread,
    "timers": timers,
    "workers": workers,
    "capped-scheduler": capped_scheduler,
    "timed-out-run": timed_out_run,
    "ctrl-c": ctrl_c,
    "supervisor-stop": supervisor_stop,
}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]]()
    print("ok")
