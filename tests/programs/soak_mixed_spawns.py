"""Soak: thousands of mixed spawns under load leave no descriptor behind.

Every kind of run at once, batch after batch, behind a cap: plain runs,
spawns with /dev/null for stdin, runs fed input, spawns whose line
callbacks start more runs, runs that time out, critical runs cancelled at
a random moment. The baseline is taken right after one warm-up run, as a
user's own leak check would take it: whether that run started the reactor
or, its child ending inside the spawn, returned without (under load, now
and then), only the reactor's SIGCHLD waker may appear after it.
Arguments and report: ``tests/programs/_soak.py``.
"""

from __future__ import annotations

import sys
import time
from typing import Any, cast

from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.python.failure import Failure

import procwork
import untwisted
from procwork import Result
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
    sched = procwork.Scheduler(reactor, max_running=24, load=procwork.NoLoadLimit())
    untwisted.run(procwork.run(["true"], scheduler=sched), timeout=30)
    counts["reactor_started_late"] = int(not reactor.running)
    fds, children = fd_table(), set(my_children())
    inner: list[Deferred[Any]] = []

    def expect(
        d: Deferred[Result],
        token: bytes | None,
        *,
        timed_out: bool = False,
        cancelled: bool = False,
    ) -> Deferred[Any]:
        def ok(result: Result) -> None:
            if timed_out:
                counts["timeouts"] += 1
                if not result.timed_out or result.ok:
                    wrong(f"should have timed out: {result!r}")
            elif cancelled:
                wrong(f"should have been cancelled: {result!r}")
            elif not result.ok or result.stdout != token:
                wrong(f"{result!r} stdout={result.stdout!r} != {token!r}")

        def failed(failure: Failure) -> None:
            if cancelled and failure.check(CancelledError):
                counts["cancels"] += 1
            else:
                wrong(f"failed: {failure.value!r}")

        counts["runs"] += 1
        return d.addCallbacks(ok, failed)

    def one(i: int) -> Deferred[Any]:
        token = f"t{i}".encode()
        kind = i % 6
        if kind == 0:
            return expect(procwork.run(["echo", token], scheduler=sched), token + b"\n")
        if kind == 1:
            proc = procwork.spawn(["echo", token], scheduler=sched, stdin=False)
            return expect(proc.wait(), token + b"\n")
        if kind == 2:
            return expect(procwork.run(["cat"], input=token, scheduler=sched), token)
        if kind == 3:

            def more(line: bytes) -> None:
                run = procwork.run(["echo", line.decode().strip()], scheduler=sched)
                inner.append(expect(run, line))

            proc = procwork.spawn(
                ["sh", "-c", "echo a; echo b"],
                scheduler=sched,
                stdin=False,
                on_stdout=more,
            )
            return expect(proc.wait(), b"a\nb\n")
        if kind == 4:
            run = procwork.run(
                ["sleep", "5"],
                scheduler=sched,
                grace=0.2,
                timeout=rng.uniform(0, 0.05),
            )
            return expect(run, None, timed_out=True)
        run = procwork.run(["sleep", "5"], scheduler=sched, priority="critical")
        reactor.callLater(rng.uniform(0, 0.02), run.cancel)
        return expect(run, None, cancelled=True)

    started, rounds = time.monotonic(), 0
    while soak.soaking(started, 25, rounds):
        rounds += 1
        batch = [one(rounds * 48 + i) for i in range(48)]
        try:
            untwisted.run(DeferredList(batch), timeout=60)
            untwisted.run(DeferredList(inner), timeout=60)
        except untwisted.Timeout as e:
            wrong(f"batch {rounds}: {e}")
            break
        del inner[:]
    deadline = time.monotonic() + 10
    while (sched.running or sched.queued) and time.monotonic() < deadline:
        untwisted.tick(0.05)
    for event in errors[:3]:
        logged = event.get("log_format") or event.get("log_failure")
        wrong(f"logged as an error: {logged!r}")
    counts["wrong"] += max(0, len(errors) - 3)
    soak.report([sched], fds, children)


if __name__ == "__main__":
    main()
