"""Soak: random cancels and timeouts keep every Result true and leave nothing.

Runs (some queued behind a cap of 16) with random timeouts, cancelled at
random moments, terminated or killed through their handle, or waited for
with a deadline shorter than they take. Every Result must keep the
contract of procwork.Result; a run whose wait was cancelled or timed out
is dead by the time the caller has control back. Arguments and report:
``tests/programs/_soak.py``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredList

import procwork
import untwisted
from procwork import Result
from tests.programs._soak import Soak
from tests.programs._twisted import reactor
from tests.support import fd_table, my_children


def main() -> None:
    soak = Soak(sys.argv)
    counts, rng, wrong = soak.counts, soak.rng, soak.wrong
    sched = procwork.Scheduler(reactor, max_running=16, load=procwork.NoLoadLimit())
    untwisted.run(procwork.run(["true"], scheduler=sched), timeout=30)
    fds, children = fd_table(), set(my_children())

    def command() -> tuple[list[str], int, bytes]:
        # (argv, exit code, stdout) of a command that prints, sleeps and exits;
        # one in six ignores SIGTERM (so only the SIGKILL after grace ends it).
        token = f"tok{rng.randrange(10**6)}"
        code = rng.choice((0, 0, 1, 3))
        nap = rng.choice((0, 0, 0.01, 0.05, 0.2))
        trap = "trap '' TERM; " if rng.random() < 1 / 6 else ""
        script = f"{trap}echo {token}; sleep {nap}; exit {code}"
        return ["sh", "-c", script], code, (token + "\n").encode()

    def check(
        result: Result, code: int, out: bytes, timeout: float | None, how: str
    ) -> None:
        # how: "plain" (only its own timeout), "terminated", "killed"
        what = f"{how}: {result!r} stdout={result.stdout!r} expected {code} {out!r}"
        if result.timeout != timeout:
            wrong("timeout attribute: " + what)
        if (result.pid is None) != (result.returncode is None):
            wrong("pid/returncode: " + what)
        if result.returncode is None:  # never started: withdrawn or timed out queued
            if (
                result.duration != 0
                or result.stdout
                or not (result.timed_out or how != "plain")
            ):
                wrong("never started: " + what)
            return
        if result.ok != (result.returncode == 0 and not result.timed_out):
            wrong("ok: " + what)
        if result.duration < 0 or result.queued < 0:
            wrong("negative seconds: " + what)
        killed = result.returncode < 0
        if killed and -result.returncode not in (signal.SIGTERM, signal.SIGKILL):
            wrong("killed by an unexpected signal: " + what)
        if not killed and (result.returncode != code or result.stdout != out):
            # It ended by itself: its own status and all of its output.
            wrong("natural end: " + what)
        if killed and result.stdout not in (b"", out):
            wrong("output: " + what)
        if killed and how == "plain" and not result.timed_out:
            wrong("killed without a timeout: " + what)
        if result.timed_out:
            counts["timeouts"] += 1

    started, rounds = time.monotonic(), 0
    while soak.soaking(started, 30, rounds):
        rounds += 1
        batch: list[Deferred[Any]] = []
        for _ in range(rng.randint(8, 40)):
            counts["runs"] += 1
            argv, code, out = command()
            timeout = rng.choice((None, None, rng.uniform(0, 0.3)))
            grace = rng.choice((0.05, 0.2))
            kind = rng.random()
            d: Deferred[Any]
            if kind < 0.5:  # a run, maybe cancelled at a random moment
                d = procwork.run(argv, timeout=timeout, grace=grace, scheduler=sched)
                if rng.random() < 0.3:
                    reactor.callLater(rng.uniform(0, 0.2), d.cancel)
                d.addCallback(check, code, out, timeout, "plain")
            else:  # a handle, maybe terminated or killed at a random moment
                proc = procwork.spawn(
                    argv, timeout=timeout, grace=grace, scheduler=sched, stdin=False
                )
                how = rng.choice(("plain", "terminated", "killed"))
                if how != "plain":
                    stop = proc.terminate if how == "terminated" else proc.kill
                    reactor.callLater(rng.uniform(0, 0.2), stop)
                d = proc.wait().addCallback(check, code, out, timeout, how)
            batch.append(d)
        results = untwisted.run(DeferredList(batch, consumeErrors=True), timeout=60)
        for ok, value in results:
            if not ok:
                if value.check(CancelledError):
                    counts["cancels"] += 1
                else:
                    wrong(f"failed: {value.value!r}")
        # The blocking caller's own deadline, shorter than the run: when run()
        # raises Timeout, the run's process group is already dead.
        proc = procwork.spawn(["sleep", "5"], scheduler=sched, grace=0.2, stdin=False)
        try:
            untwisted.run(proc.wait(), timeout=rng.uniform(0, 0.1))
            wrong(f"sleep 5 finished within 0.1 s: {proc!r}")
        except untwisted.Timeout:
            counts["timeouts"] += 1
            counts["cancels"] += 1
            if proc.pid is not None and os.path.exists(f"/proc/{proc.pid}"):
                with open(f"/proc/{proc.pid}/stat") as f:
                    state = f.read().rpartition(")")[2].split()[0]
                if state not in ("Z", "X"):
                    wrong(f"run(timeout=) returned with {proc!r} alive")
        counts["runs"] += 1
    deadline = time.monotonic() + 10
    while (sched.running or sched.queued) and time.monotonic() < deadline:
        untwisted.tick(0.05)
    soak.report([sched], fds, children)


if __name__ == "__main__":
    main()
