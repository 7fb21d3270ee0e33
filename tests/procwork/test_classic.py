"""The first procwork's ``waitfor``, on the new implementation.

The user's original code (``p = yield procwork.waitfor(argv, secondsToWait)``)
runs unchanged; ``specs/procwork_classic.md`` holds his own spec examples.
These tests pin the rest: the deadline, the kill of the whole group, the
options, the errors, cancelling, and deadlines racing the exit by the
hundred. The first clockwork's vocabulary is ``tests/clockwork/test_classic.py``.
"""

from __future__ import annotations

import signal
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import CancelledError

import clockwork
import procwork
from clockwork import Return
from tests.support import PY, alive, drive_until, my_children, wait

Gen = Generator[Any, Any, Any]

pytestmark = pytest.mark.usefixtures("no_load_gate")


@pytest.mark.slow
def test_waitfor_kills_at_the_deadline_and_says_killed() -> None:
    p = wait(procwork.waitfor("yes", secondsToWait=0.3))
    assert p.killed
    assert p.returncode == -signal.SIGTERM
    assert p.stdout.readline() == b"y\n"
    assert p.pid == p.result.pid and p.result.timed_out


@pytest.mark.slow
def test_waitfor_with_zero_seconds_waits_as_long_as_it_takes() -> None:
    code = "import time; time.sleep(0.2); print('slept')"
    p = wait(procwork.waitfor([PY, "-c", code]))
    assert not p.killed
    assert p.returncode == 0
    assert p.stdout.read() == b"slept\n" and p.stderr.read() == b""
    assert p.result.timeout is None


@pytest.mark.slow
def test_waitfor_kills_the_whole_process_group_sigterm_then_sigkill(
    tmp_path: Path,
) -> None:
    """A shell that ignores SIGTERM, with a background child that inherits that:
    both die at the deadline, by SIGKILL once the grace is over."""
    pids = tmp_path / "pids"
    script = 'trap "" TERM; sleep 60 & echo $$ $! > "$1.tmp"; mv "$1.tmp" "$1"; wait'
    command = ["sh", "-c", script, "sh", str(pids)]
    d = procwork.waitfor(command, secondsToWait=1, grace=0.2)
    assert drive_until(pids.exists, 20), "the child never started"
    child, grandchild = map(int, pids.read_text().split())
    p = wait(d)
    assert p.killed
    assert p.returncode == -signal.SIGKILL
    assert not alive(child)
    assert drive_until(lambda: not alive(grandchild), 10)


def test_waitfor_is_a_deferred_to_yield_in_a_routine_and_takes_run_options(
    tmp_path: Path,
) -> None:
    def routine() -> Gen:
        p = yield procwork.waitfor(
            "pwd", cwd=tmp_path, priority="critical", env={"PATH": "/usr/bin:/bin"}
        )
        yield Return(p.stdout.read())

    assert clockwork.wrap(routine(), timeout=30) == f"{tmp_path}\n".encode()


def test_waitfor_rejects_a_negative_or_non_numeric_seconds_to_wait() -> None:
    with pytest.raises(ValueError, match=r"waitfor\('yes'\): secondsToWait must be"):
        procwork.waitfor("yes", secondsToWait=-1)
    with pytest.raises(TypeError, match=r"secondsToWait must be a number"):
        procwork.waitfor("yes", secondsToWait="soon")  # type: ignore[arg-type]


def test_cancelling_waitfor_kills_the_process(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = 'echo $$ > "$1.tmp" && mv "$1.tmp" "$1" && exec sleep 30'
    d = procwork.waitfor(["sh", "-c", script, "sh", str(pid_file)])
    assert drive_until(pid_file.exists, 10), "the command never started"
    pid = int(pid_file.read_text())
    d.cancel()
    assert drive_until(lambda: not alive(pid), 10)
    with pytest.raises(CancelledError):
        wait(d, 10)


def test_two_hundred_deadlines_racing_the_exit_leave_nothing_behind() -> None:
    """Commands that exit around their deadline: each result is consistent."""

    def one(n: int) -> Gen:
        p = yield procwork.waitfor(["sleep", "0.01"], secondsToWait=0.005 + n % 3 / 200)
        yield Return(p)

    def all_of_them() -> Gen:
        return (yield clockwork.gather(*(one(n) for n in range(200))))

    results = clockwork.wrap(all_of_them(), timeout=120)
    for p in results:
        if p.killed:
            assert p.returncode in (-signal.SIGTERM, -signal.SIGKILL, 0, None)
        else:
            assert p.returncode == 0
    assert drive_until(lambda: not my_children(), 10), my_children()
