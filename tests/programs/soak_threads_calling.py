"""Soak: threads calling the API get ForeignThreadError, and nothing breaks.

Threads that do not drive the reactor call procwork.run and spawn while
the main thread runs processes: every such call raises ForeignThreadError
at once (nothing is started, no slot taken, nothing logged), and the
documented way, the call handed to the reactor with callFromThread (a
bounded blockingCallFromThread), gets correct results. Arguments and
report: ``tests/programs/_soak.py``.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from twisted.internet.defer import DeferredList, maybeDeferred
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.python.failure import Failure

import procwork
import untwisted
from tests.programs._soak import Soak
from tests.programs._twisted import reactor
from tests.support import fd_table, my_children


def main() -> None:
    soak = Soak(sys.argv)
    counts, rng, wrong = soak.counts, soak.rng, soak.wrong
    errors: list[dict[str, Any]] = []

    def observer(event: dict[str, Any]) -> None:
        if event.get("log_failure") or event.get("isError"):
            errors.append(event)

    globalLogPublisher.addObserver(cast(ILogObserver, observer))
    sched = procwork.Scheduler(reactor, max_running=32, load=procwork.NoLoadLimit())
    default = procwork.scheduler()
    default.load = procwork.NoLoadLimit()
    untwisted.run(procwork.run(["true"], scheduler=sched), timeout=30)
    untwisted.run(procwork.run(["true"]), timeout=30)
    fds, children = fd_table(), set(my_children())
    started = time.monotonic()
    stop = threading.Event()

    def in_reactor(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        # blockingCallFromThread, with a bound on the wait
        answers: queue.Queue[object] = queue.Queue()

        def call() -> None:
            maybeDeferred(f, *args, **kwargs).addBoth(answers.put)

        reactor.callFromThread(call)
        answer = answers.get(timeout=30)
        if isinstance(answer, Failure):
            answer.raiseException()
        return answer

    def foreign(n: int) -> None:
        while not stop.is_set():
            call = rng.choice(("run", "spawn", "run-default"))
            try:
                if call == "run":
                    procwork.run(["echo", "x"], scheduler=sched)
                elif call == "spawn":
                    procwork.spawn(["echo", "x"], scheduler=sched)
                else:
                    procwork.run(["echo", "x"])
            except untwisted.ForeignThreadError as e:
                counts["foreign_calls"] = counts.get("foreign_calls", 0) + 1
                if f"procwork.{call.split('-')[0]}" not in str(e):
                    wrong(f"message does not name procwork.{call}: {e}")
            except BaseException as e:
                wrong(f"procwork.{call} from a thread raised {e!r}")
            else:
                wrong(f"procwork.{call} from a thread did not raise ForeignThreadError")
            counts["runs"] += 1
            token = f"t{n}-{counts['runs']}"
            try:
                result = in_reactor(
                    procwork.run, ["echo", token], scheduler=sched, timeout=30
                )
            except BaseException as e:
                wrong(f"procwork.run through callFromThread raised {e!r}")
            else:
                if not result.ok or result.stdout != (token + "\n").encode():
                    wrong(f"marshalled run: {result!r} stdout={result.stdout!r}")
            time.sleep(rng.uniform(0, 0.002))

    workers = [threading.Thread(target=foreign, args=(n,)) for n in range(4)]
    for w in workers:
        w.start()
    try:
        rounds = 0
        while soak.soaking(started, 20, rounds):
            rounds += 1
            counts["runs"] += 8
            batch = [procwork.run(["echo", str(i)], scheduler=sched) for i in range(8)]
            try:
                got = untwisted.run(DeferredList(batch, consumeErrors=True), timeout=15)
            except untwisted.Timeout as e:
                wrong(f"main thread's runs: {e}")
                break
            if [r.stdout for ok, r in got if ok] != [b"%d\n" % i for i in range(8)]:
                wrong(f"main thread's runs: {got!r}")
    finally:
        stop.set()
        deadline = time.monotonic() + 30
        while any(w.is_alive() for w in workers) and time.monotonic() < deadline:
            untwisted.tick(0.05)  # a worker may wait for its marshalled call
    for w in workers:
        if w.is_alive():
            wrong("a calling thread never ended")
    deadline = time.monotonic() + 10
    while (sched.running or sched.queued or default.running or default.queued) and (
        time.monotonic() < deadline
    ):
        untwisted.tick(0.05)
    for event in errors[:3]:
        logged = event.get("log_format") or event.get("log_failure")
        wrong(f"logged as an error: {logged!r}")
    counts["wrong"] += max(0, len(errors) - 3)
    soak.report([sched, default], fds, children)


if __name__ == "__main__":
    main()
