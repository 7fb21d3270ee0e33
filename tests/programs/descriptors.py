"""A program's descriptors, counted: ``python -m tests.programs.descriptors``.

Run by ``tests/procwork/test_scale_and_leaks.py`` (``late-start``) and
``tests/procwork/test_errors.py`` (``out-of-descriptors``): each counts the
descriptors of a fresh program, which no earlier test has touched.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
from collections.abc import Callable

from twisted.internet import defer

import procwork
import untwisted
from procwork import Result
from tests.programs._twisted import reactor
from tests.support import fd_table


def late_start() -> None:
    """The first run ends without starting the reactor (its result in hand);
    print what the next 200 runs opened that stays, what 200 more opened, and
    the signal wakeup fd."""
    procwork.scheduler().load = procwork.NoLoadLimit()
    untwisted.run(defer.succeed(None))  # as a run whose child ended at once
    assert not reactor.running
    before = fd_table()
    results = [
        untwisted.run(procwork.run(["echo", str(i)]), timeout=30) for i in range(200)
    ]
    assert [r.stdout for r in results] == [b"%d\n" % i for i in range(200)]
    started = fd_table()
    for i in range(200):
        untwisted.run(procwork.run(["echo", str(i)]), timeout=30)
    wakeup = signal.set_wakeup_fd(-1)
    report = {
        "opened": {fd: what for fd, what in started.items() if before.get(fd) != what},
        "then": {
            fd: what for fd, what in fd_table().items() if started.get(fd) != what
        },
        "wakeup": wakeup,
    }
    print(json.dumps(report))


def out_of_descriptors() -> None:
    """Run out of descriptors (RLIMIT_NOFILE lowered, then filled): print the
    SpawnError a run fails with, what it leaked, and a run once some are
    free again."""

    def run(args: list[str]) -> Result:
        result: Result = untwisted.run(procwork.run(args), timeout=30)
        return result

    untwisted.tick()  # the reactor and its fds exist
    run(["true"])
    limit = len(os.listdir("/proc/self/fd")) + 30
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    hog = []
    try:
        while True:
            hog.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    os.close(hog.pop())  # one free: listing /proc/self/fd needs it
    before = os.listdir("/proc/self/fd")
    try:
        run(["echo", "hi"])
    except procwork.SpawnError as e:
        print("errno", e.errno)
        print(e)
    print("leaked", sorted(set(os.listdir("/proc/self/fd")) - set(before)))
    for fd in hog:
        os.close(fd)
    print("after", run(["echo", "hi"]).stdout.decode().strip())


SCENARIOS: dict[str, Callable[..., None]] = {
    "late-start": late_start,
    "out-of-descriptors": out_of_descriptors,
}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]](*sys.argv[2:])
