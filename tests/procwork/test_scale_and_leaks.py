"""At scale: thousands of runs leak no file descriptor and leave no zombie.

Each test name is a sentence of the specification. Real processes, every
wait bounded.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from twisted.internet.defer import DeferredList

import procwork
import untwisted
from tests.support import (
    PY,
    fd_table,
    my_children,
    opened_since,
    reactor_signal_waker,
    run_program,
    wait,
)

# Not about load: a busy machine's load gate must not queue these runs.
pytestmark = pytest.mark.usefixtures("no_load_gate")


@pytest.mark.slow
def test_two_thousand_runs_leak_no_fd_and_leave_no_zombie() -> None:
    scheduler = procwork.Scheduler(max_running=32, load=procwork.NoLoadLimit())
    untwisted.tick()  # the reactor's own fds exist before we count
    wait(procwork.run(["true"], scheduler=scheduler))
    fds, children = fd_table(), my_children()

    runs = [
        procwork.run(
            ["/bin/true"] if i % 2 else ["/bin/echo", str(i)], scheduler=scheduler
        )
        for i in range(2000)
    ]
    assert scheduler.running == 32  # (a few may have ended already)
    # Bounded against a hang, not timed: 15 s here, 4 times that on a
    # loaded machine would be no leak.
    results = wait(DeferredList(runs, fireOnOneErrback=True, consumeErrors=True), 110)

    assert all(ok and result.ok for ok, result in results)
    assert [r.stdout for _, r in results[:4:2]] == [b"0\n", b"2\n"]
    assert (scheduler.running, scheduler.queued, scheduler.started) == (0, 0, 2001)
    assert opened_since(fds) == {}, "file descriptors leaked"
    left = {pid: state for pid, state in my_children().items() if pid not in children}
    assert left == {}, f"children left behind (Z = zombie): {left}"


@pytest.mark.slow
def test_many_concurrent_sleepers_all_finish_and_are_all_reaped() -> None:
    scheduler = procwork.Scheduler(max_running=500, load=procwork.NoLoadLimit())
    untwisted.tick()  # the reactor's own fds exist before we count
    fds, children = fd_table(), my_children()
    runs = [procwork.run(["sleep", "0.5"], scheduler=scheduler) for _ in range(300)]
    assert scheduler.running == 300
    results = wait(DeferredList(runs, fireOnOneErrback=True, consumeErrors=True), 60)
    assert all(ok and result.ok for ok, result in results)
    assert opened_since(fds) == {}
    assert set(my_children()) <= set(children)


@pytest.mark.slow
def test_children_started_by_other_code_are_never_reaped_by_procwork() -> None:
    """Their own waitpid still gets the right exit status."""
    others = [
        subprocess.Popen(
            [PY, "-c", f"import time, sys; time.sleep(0.3); sys.exit({code})"]
        )
        for code in (3, 4, 5)
    ]
    try:
        runs = [
            procwork.run([PY, "-c", f"import time; time.sleep({0.1 * (i % 5)})"])
            for i in range(30)
        ]
        results = wait(
            DeferredList(runs, fireOnOneErrback=True, consumeErrors=True), 60
        )
        assert all(ok and result.ok for ok, result in results)
        # Keep procwork busy while the others exit, so their SIGCHLDs arrive
        # while procwork is reaping its own.
        wait(DeferredList([procwork.run(["sleep", "0.5"]) for _ in range(5)]), 30)
    finally:
        codes = [p.wait(timeout=30) for p in others]
    assert codes == [3, 4, 5]


def test_an_exit_that_another_waitpid_stole_still_ends_the_run() -> None:
    """If other code reaps every child (waitpid(-1)), the run still ends,
    with status 255 since the real one is lost, instead of hanging."""
    proc = procwork.spawn(["sleep", "0.2"])
    assert proc.pid is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(proc.pid, os.WNOHANG)
        except ChildProcessError:
            break
        if pid:
            break
        time.sleep(0.01)
    result = wait(proc.wait())
    assert result.returncode == 255


# -- what a leak check may see: the reactor's own, once --------------------------


@pytest.mark.slow
def test_the_two_descriptors_of_a_late_start_are_the_reactors_sigchld_waker() -> None:
    """A fresh program whose first run ended without starting the reactor
    (the result in hand) gets two descriptors when the reactor starts:
    one pipe, whose write end is the process's signal wakeup fd, Twisted's
    SIGCHLD waker. Once: the runs after it open nothing that stays."""
    child = run_program("descriptors", "late-start")
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout)
    opened, wakeup = report["opened"], str(report["wakeup"])
    # /dev/null for the runs' stdin, opened once by the first spawn, and the
    # waker: one pipe, both ends, its write end the wakeup fd.
    assert sorted(opened.values()) == sorted(
        ["/dev/null", opened[wakeup], opened[wakeup]]
    )
    assert opened[wakeup].startswith("pipe:")
    assert report["then"] == {}


def test_a_leak_check_counts_a_pipe_left_open_but_not_the_reactors_waker() -> None:
    """The check the leak tests share: by identity, so a descriptor number
    closed and reused for a new pipe counts; the reactor's SIGCHLD waker
    alone is left out, never a second pipe."""
    untwisted.tick()  # this (the main) thread's reactor runs: it has its waker
    waker = reactor_signal_waker()
    assert len(waker) == 2
    before = fd_table()
    leaked = os.pipe()
    try:
        assert sorted(opened_since(before)) == sorted(str(fd) for fd in leaked)
        os.close(leaked[1])
        reused = os.pipe()  # the number just closed is the lowest free one
        try:
            assert str(leaked[1]) in map(str, reused)
            assert set(opened_since(before)) == {
                str(leaked[0]),
                *(str(fd) for fd in reused),
            }
        finally:
            for fd in reused:
                os.close(fd)
    finally:
        os.close(leaked[0])
    assert opened_since(before) == {}
    # The waker was in the baseline; without the baseline, only it is left out.
    assert not waker & set(opened_since({}))
    assert set(fd_table()) - set(opened_since({})) == waker
