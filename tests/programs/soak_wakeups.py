"""Soak: results from every kind of source always wake the waiter.

Results delivered by a thread pool, a plain thread's callFromThread, a
timer, a pipe becoming readable and a process ending: one at a time, many at
once, racing run()'s deadline, or cancelled at a random moment. Arguments
and report: ``tests/programs/_soak.py``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import task, threads
from twisted.internet.defer import CancelledError, Deferred, gatherResults

import procwork
import untwisted
from procwork import Result
from tests.programs._soak import Soak
from tests.programs._twisted import reactor
from tests.support import fd_table, my_children


def main() -> None:
    soak = Soak(sys.argv)
    counts, rng, wrong = soak.counts, soak.rng, soak.wrong
    sched = procwork.Scheduler(reactor, max_running=32, load=procwork.NoLoadLimit())
    untwisted.run(procwork.run(["true"], scheduler=sched), timeout=30)
    untwisted.run(threads.deferToThread(int), timeout=30)  # the pool's threads exist
    fds, children = fd_table(), set(my_children())
    helpers: list[threading.Thread] = []

    def in_thread(delay: float, f: Callable[..., object], *args: object) -> None:
        def go() -> None:
            time.sleep(delay)
            f(*args)

        t = threading.Thread(target=go)
        t.start()
        helpers.append(t)

    def from_pool(value: int, delay: float) -> Deferred[int]:
        def later() -> int:
            time.sleep(delay)
            return value

        d: Deferred[int] = threads.deferToThread(later)
        return d

    def from_thread(value: int, delay: float) -> Deferred[int]:
        d: Deferred[int] = Deferred()
        in_thread(delay, reactor.callFromThread, d.callback, value)
        return d

    def from_timer(value: int, delay: float) -> Deferred[int]:
        d: Deferred[int] = task.deferLater(reactor, delay, lambda: value)
        return d

    class PipeReader:
        # A pipe whose write end a thread writes to: the result is I/O.
        def __init__(self, value: int, delay: float) -> None:
            self.value = value
            self.r, w = os.pipe()
            self.d: Deferred[int] = Deferred(lambda d: self.close())
            reactor.addReader(self)
            in_thread(delay, self.write, w)

        def write(self, w: int) -> None:
            with contextlib.suppress(BrokenPipeError):  # cancelled: nobody reads
                os.write(w, b"x")
            os.close(w)

        def fileno(self) -> int:
            return self.r

        def doRead(self) -> None:
            self.close()
            self.d.callback(self.value)

        def close(self) -> None:
            if self.r >= 0:
                reactor.removeReader(self)
                os.close(self.r)
                self.r = -1

        def connectionLost(self, reason: object) -> None:
            self.close()

        def logPrefix(self) -> str:
            return "PipeReader"

    def from_io(value: int, delay: float) -> Deferred[int]:
        return PipeReader(value, delay).d

    def from_process(value: int, delay: float) -> Deferred[int]:
        counts["runs"] += 1
        argv = ["sleep", f"{delay:.4f}"] if delay else ["true"]

        def check(result: Result) -> int:
            if result.returncode != 0:
                wrong(f"process source: {result!r}")
            return value

        return procwork.run(argv, scheduler=sched, grace=1).addCallback(check)

    sources = [from_pool, from_thread, from_timer, from_io, from_process]

    def source(value: int, delay: float = 0.0) -> Deferred[int]:
        return rng.choice(sources)(value, delay)

    def tiny() -> float:
        return rng.choice((0.0, 0.0, rng.uniform(0, 0.005)))

    started, rounds = time.monotonic(), 0
    while soak.soaking(started, 200, rounds):
        rounds += 1
        mode = rng.random()
        t0 = time.monotonic()
        got: Any
        if mode < 0.4:  # one result; a lost wake-up waits out the 30 s deadline
            timeout = rng.choice((None, 30))
            got = untwisted.run(source(rounds, tiny()), timeout=timeout)
            if got != rounds:
                wrong(f"one: {got!r} != {rounds}")
        elif mode < 0.65:  # several at once, from different kinds of sources
            n = rng.randint(2, 8)
            got = untwisted.run(
                gatherResults([source(i, tiny()) for i in range(n)]), timeout=30
            )
            if got != list(range(n)):
                wrong(f"many: {got!r}")
        elif mode < 0.85:  # the result races run()'s deadline
            try:
                got = untwisted.run(
                    source(rounds, rng.uniform(0, 0.005)),
                    timeout=rng.uniform(0, 0.005),
                )
            except untwisted.Timeout:
                counts["timeouts"] += 1
            else:
                if got != rounds:
                    wrong(f"deadline: {got!r} != {rounds}")
        else:  # cancelled at a random moment while it may be delivered
            d = source(rounds, tiny())
            reactor.callLater(rng.uniform(0, 0.003), d.cancel)
            try:
                got = untwisted.run(d, timeout=30)
            except CancelledError:
                counts["cancels"] += 1
            else:
                if got != rounds:
                    wrong(f"cancel: {got!r} != {rounds}")
        if time.monotonic() - t0 > 5:
            took = time.monotonic() - t0
            wrong(f"round {rounds} (mode {mode:.2f}) took {took:.1f} s")

    for t in helpers:
        t.join(timeout=30)
        if t.is_alive():
            wrong("a helper thread never ended")
    # Work that was cancelled may still be ending (a process killed, a thread
    # firing into a cancelled Deferred): let it finish, bounded.
    deadline = time.monotonic() + 10
    while (sched.running or sched.queued) and time.monotonic() < deadline:
        untwisted.tick(0.05)
    counts["rounds"] = rounds
    soak.report([sched], fds, children)


if __name__ == "__main__":
    main()
