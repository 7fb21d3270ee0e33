"""The log daemon's writer under stress: lines from several threads at once,
a daemon that reads in fits, every core busy.

Logging threads (a signal handler's line, a thread's warning) call
:meth:`DatagramWriter.write_line` while the reactor's thread sends what
waits; the writer's lock and its hand-over to the reactor
(``callFromThread``) are what this proves: no line cut, doubled or
reordered, none lost without being counted, no thread blocked, by the ten
thousand (the cap reached and left a hundred times), under
:func:`tests.support.cpu_load`. Every wait is bounded.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from procwork.monitor._logs import dropped_notice
from procwork.monitor._logsocket import DatagramWriter
from tests.support import cpu_load
from tests.support.logs import LogDaemon, WriterReactor

pytestmark = pytest.mark.slow

THREADS = 4
LINES = 3000  # per thread


class ThreadedReactor(WriterReactor):
    """A WriterReactor whose ``callFromThread`` any thread may call: the
    calls wait in a queue until the test's loop (the reactor's thread) runs
    them, as a real reactor's wake-up does."""

    def __init__(self) -> None:
        super().__init__()
        self.from_threads: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        self.from_threads.append((lambda: f(*args, **kw), ()))

    def turn(self) -> None:
        """One iteration: the calls from threads, the timers, the writers."""
        while self.from_threads:
            call, _ = self.from_threads.popleft()
            call()
        self.advance(0.1)
        self.writable()


def line(thread: int, number: int) -> bytes:
    return f"<30>t{thread} {number:05d} {'x' * 100}".encode()


def test_lines_from_four_threads_under_load_are_each_received_whole_or_counted(
    tmp_path: Path,
) -> None:
    daemon = LogDaemon(tmp_path / "log.sock")
    reactor = ThreadedReactor()
    sending = DatagramWriter(
        daemon.path,
        reactor,
        name="syslog",
        notice=dropped_notice(False),
        max_buffered=4096,  # small: the cap is reached again and again
    )
    started = threading.Barrier(THREADS + 1, timeout=30)

    def write(thread: int) -> None:
        started.wait()
        for number in range(LINES):
            sending.write_line(line(thread, number))
            if number % 20 == 0:
                time.sleep(0.001)  # in bursts, so the daemon catches up between

    threads = [
        threading.Thread(target=write, args=(t,), daemon=True) for t in range(THREADS)
    ]
    received: list[bytes] = []
    try:
        with cpu_load(2):
            for thread in threads:
                thread.start()
            started.wait()
            deadline = time.monotonic() + 120
            turns = 0
            while time.monotonic() < deadline:
                turns += 1
                reactor.turn()
                if turns % 2 == 0:  # the daemon reads in fits
                    received += daemon.drain()
                if not any(t.is_alive() for t in threads) and not (
                    sending.buffered or reactor.writers or reactor.from_threads
                ):
                    break
            for thread in threads:
                thread.join(timeout=30)
                assert not thread.is_alive(), "a logging thread blocked"
        received += daemon.drain()
        sending.close(timeout=5)
        received += daemon.drain()
    finally:
        daemon.close()

    notices = [m for m in received if b"log lines dropped" in m]
    lines = [m for m in received if m not in notices]
    written = {line(t, n) for t in range(THREADS) for n in range(LINES)}
    assert set(lines) <= written  # whole, none made up
    assert len(set(lines)) == len(lines)  # none twice
    for t in range(THREADS):  # each thread's lines in its order
        numbers = [
            int(m.split()[1]) for m in lines if m.startswith(f"<30>t{t} ".encode())
        ]
        assert numbers == sorted(numbers)
    assert sending.dropped > 0  # the cap was reached: the test is not vacuous
    assert len(lines) + sending.dropped == THREADS * LINES  # received or counted
    counts = [re.search(rb"\] (\d+) log lines dropped", m) for m in notices]
    assert len(notices) > 1  # dropped, resumed and dropped again
    said = [int(c[1]) for c in counts if c is not None]
    assert len(said) == len(notices)
    assert sum(said) == sending.dropped  # and every drop said
