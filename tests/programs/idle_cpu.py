"""The CPU a wait costs, measured in a fresh program.

Run by ``tests/clockwork/test_clockwork.py`` (``worker``) and
``tests/clockwork/test_classic.py`` (``classic``). Each scenario starts the
reactor, then waits in several ways and prints the CPU seconds each wait
took: a busy-polling worker would use about a second of CPU each.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Generator
from typing import Any

import clockwork
import procwork
import untwisted
from clockwork import Command, Value, Worker, genwrap, wrap


def worker() -> None:
    """A task parked on clockwork.sleep(1), on a Worker and on the default one."""

    def nap() -> Generator[Any, Any, None]:
        yield clockwork.sleep(1)

    untwisted.run(clockwork.sleep(0))  # start the reactor before measuring
    w = clockwork.Worker()
    w.assign(nap())
    cpu = time.process_time()
    w.work()
    print(time.process_time() - cpu)

    cpu = time.process_time()
    clockwork.wrap(nap())
    print(time.process_time() - cpu)


def classic() -> None:
    """Waits of 0.5 s in the first clockwork's vocabulary."""

    def nap() -> Generator[Any, Any, None]:
        yield clockwork.sleep(0.5)
        yield Value("rested")

    untwisted.run(clockwork.sleep(0))  # start the reactor before measuring
    cpu = []
    t = time.process_time()
    w = Worker(nap())
    w.doNextTask()
    w.doNextTask(timeout=30)  # waits the 0.5 s in the reactor
    cpu.append(time.process_time() - t)

    t = time.process_time()
    assert list(genwrap(nap())) == ["rested"]
    cpu.append(time.process_time() - t)

    t = time.process_time()
    p = wrap(procwork.waitfor("sleep 0.5"), timeout=30)
    assert not p.killed
    cpu.append(time.process_time() - t)

    t = time.process_time()
    wrap(Command(["sleep", "0.5"])(), timeout=30)
    cpu.append(time.process_time() - t)
    print(*cpu)


SCENARIOS: dict[str, Callable[..., None]] = {"worker": worker, "classic": classic}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]](*sys.argv[2:])
