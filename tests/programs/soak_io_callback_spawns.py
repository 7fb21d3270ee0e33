"""Soak: runs started from on_stdout callbacks get all their output under churn.

Runs started from on_stdout line callbacks while other runs end around
them. The churn runs leave a short-lived background job holding their
stdout, so their pipes close (when procwork reaps them) in the same epoll
batch as other runs' output lines. Each run spawned from a callback must
print its own token and exit 0. Arguments and report:
``tests/programs/_soak.py``.
"""

from __future__ import annotations

import sys
import time

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

import procwork
import untwisted
from procwork import Result
from tests.programs._soak import Soak
from tests.programs._twisted import reactor
from tests.support import fd_table, my_children

WIDTH, CHURN = 16, 32
CHURN_COMMAND = ["sh", "-c", "echo x; sleep 0.01 & exit 0"]


def main() -> None:
    soak = Soak(sys.argv)
    counts, wrong = soak.counts, soak.wrong
    sched = procwork.Scheduler(reactor, max_running=1000, load=procwork.NoLoadLimit())
    untwisted.run(procwork.run(["true"], scheduler=sched), timeout=30)
    fds, children = fd_table(), set(my_children())
    started = time.monotonic()
    live = [0]
    done: Deferred[None] = Deferred()

    def more() -> bool:
        # at least 4 000 runs: the stale event of issue 7 hit about 1 in 1 000
        return soak.soaking(started, 4000, counts["runs"])

    def start() -> None:
        counts["runs"] += 1
        token = f"t{counts['runs']}"
        live[0] += 1
        proc = procwork.spawn(
            ["echo", token],
            scheduler=sched,
            stdin=False,
            timeout=30,
            on_stdout=lambda line: start() if more() else None,
        )
        proc.wait().addCallbacks(check, failed, callbackArgs=(token,))

    def check(result: Result, token: str) -> None:
        if result.returncode != 0 or result.stdout != (token + "\n").encode():
            wrong(f"{result!r} stdout={result.stdout!r}")
        ended()

    def failed(failure: Failure) -> None:
        wrong(f"spawn failed: {failure.value!r}")
        ended()

    def ended() -> None:
        live[0] -= 1
        if live[0] == 0 and not done.called:
            done.callback(None)

    def churn(result: Result | None = None) -> None:
        if result is not None and not (result.ok and result.stdout == b"x\n"):
            wrong(f"churn: {result!r} stdout={result.stdout!r}")
        if done.called:
            return
        counts["runs"] += 1
        d = procwork.run(CHURN_COMMAND, scheduler=sched, timeout=30)
        d.addCallbacks(churn, lambda f: wrong(f"churn failed: {f.value!r}"))

    for _ in range(CHURN):
        churn()
    for _ in range(WIDTH):
        start()
    untwisted.run(done, timeout=soak.seconds + 60)
    deadline = time.monotonic() + 10
    while (sched.running or sched.queued) and time.monotonic() < deadline:
        untwisted.tick(0.05)
    soak.report([sched], fds, children)


if __name__ == "__main__":
    main()
