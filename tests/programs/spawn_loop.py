"""Spawns from blocking code in a loop, until a signal ends the program.

``python -m tests.programs.spawn_loop MARKER``: procwork.spawn and
procwork.run, 20 of each a round, each child ``sleep MARKER``, the marker
being a number of seconds no other process on the machine has on its
command line. Prints ``ready`` once the signal handlers are installed; the
signal soak (``tests/support/soak.py``) then signals it at a random moment.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

from twisted.internet.defer import Deferred, DeferredList

import procwork
import untwisted


def main() -> None:
    marker = sys.argv[1]
    sched = procwork.scheduler()
    sched.load = procwork.NoLoadLimit()
    sched.set_max_running(10_000)
    untwisted.run(procwork.run(["true"]), timeout=30)  # handlers are installed now
    print("ready", flush=True)
    try:
        while True:
            pending: list[Deferred[Any]] = []
            for _ in range(20):
                proc = procwork.spawn(["sleep", marker], stdin=False, grace=0.5)
                pending.append(proc.wait())
                d = procwork.run(["sleep", marker], grace=0.5)
                d.addErrback(lambda f: None)
                pending.append(d)
            for d in pending:
                d.cancel()
            untwisted.run(DeferredList(pending, consumeErrors=True), timeout=30)
    except BaseException:
        traceback.print_exc()  # where the signal was raised, SystemExit too
        raise


if __name__ == "__main__":
    main()
