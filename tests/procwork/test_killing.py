"""Killing: whole process trees die, on timeout, cancel and program exit.

Each test name is a sentence of the specification. The timing of the kill
escalation is tested on a :class:`ClockedReactor`: real processes and pipes
on the real reactor, but a fake clock that moves only when the test says, so
"SIGTERM at 5 s, SIGKILL 5 s later" is checked exactly and instantly.
Behaviour at program exit and on signals runs in a child Python process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import textwrap
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorFDSet
from zope.interface import implementer  # type: ignore[import-untyped]

import clockwork
import procwork
import untwisted
from tests.support import (
    PY,
    alive,
    drive_until,
    program_child,
    readable,
    wait,
)

# These tests are not about load: a busy test machine must not queue them.
pytestmark = pytest.mark.usefixtures("no_load_gate")


# -- helpers ---------------------------------------------------------------------


@implementer(IReactorFDSet)
class ClockedReactor:
    """The real reactor for processes and pipes, a ``task.Clock`` for time.

    Timers (the timeout, the grace period, the load re-check) fire only on
    ``clock.advance()``; everything else is the global reactor's, which the
    test drives with ``untwisted``.
    """

    def __init__(self) -> None:
        self.clock = task.Clock()
        self._real = untwisted.lowlevel.default_driver().reactor

    def callLater(self, delay: float, f: Callable[..., Any], *a: Any, **kw: Any) -> Any:
        return self.clock.callLater(delay, f, *a, **kw)

    def seconds(self) -> float:
        return self.clock.seconds()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def gone(pid: int, seconds: float = 10) -> bool:
    """Drive the reactor until ``pid`` is not alive; False after ``seconds``."""
    return drive_until(lambda: not alive(pid), seconds)


def quiet_for(seconds: float) -> None:
    """Let the real reactor run for ``seconds`` of real time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        untwisted.tick(0.01)


def pid_file_command(path: Path) -> list[str]:
    """A ``sleep 30`` that first writes its pid to ``path``."""
    script = 'echo $$ > "$1.tmp" && mv "$1.tmp" "$1" && exec sleep 30'
    return ["sh", "-c", script, "sh", str(path)]


def read_pid(path: Path) -> int:
    assert drive_until(path.exists, 10), "the child never wrote its pid"
    return int(path.read_text())


def clocked() -> tuple[ClockedReactor, procwork.Scheduler]:
    reactor = ClockedReactor()
    return reactor, procwork.Scheduler(reactor, load=procwork.NoLoadLimit())


# A process that says when it gets SIGTERM and carries on. Run as "child", it
# first starts itself as "grandchild" (same stdout, same process group).
STUBBORN = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    who = sys.argv[1]
    def say(text):  # one write(2): lines of the two processes never mix
        os.write(1, f"{who} {text}\\n".encode())
    signal.signal(signal.SIGTERM, lambda *_: say("got SIGTERM"))
    if who == "child":
        subprocess.Popen([sys.executable, "-c", sys.argv[2], "grandchild"])
    say(f"ready {os.getpid()}")
    while True:
        time.sleep(1)
    """
)


def start_stubborn_tree(
    scheduler: procwork.Scheduler, **kwargs: Any
) -> tuple[procwork.Process, dict[str, int]]:
    """Spawn STUBBORN as child + grandchild; return it and their pids by name."""
    proc = procwork.spawn(
        [PY, "-c", STUBBORN, "child", STUBBORN], scheduler=scheduler, **kwargs
    )
    pids: dict[str, int] = {}
    while len(pids) < 2:
        who, ready, pid = wait(proc.readline()).split()
        assert ready == b"ready"
        pids[who.decode()] = int(pid)
    return proc, pids


def read_lines(proc: procwork.Process, n: int) -> set[bytes]:
    return {wait(proc.readline()) for _ in range(n)}


GOT_TERM = {b"child got SIGTERM\n", b"grandchild got SIGTERM\n"}


# -- process groups ------------------------------------------------------------------


def test_each_child_leads_its_own_process_group_and_session() -> None:
    code = "import os; print(os.getpid(), os.getpgid(0), os.getsid(0))"
    result = wait(procwork.run([PY, "-c", code]))
    pid, pgid, sid = map(int, result.stdout.split())
    assert pid == pgid == sid == result.pid
    assert pgid != os.getpgid(0)


# -- the timeout, on a fake clock ------------------------------------------------------


@pytest.mark.slow
def test_timeout_sends_SIGTERM_to_the_whole_group_then_SIGKILL_after_grace() -> None:
    reactor, scheduler = clocked()
    proc, pids = start_stubborn_tree(scheduler, timeout=5, grace=5)

    reactor.clock.advance(4.75)
    quiet_for(0.2)
    assert proc.result is None  # nothing before the timeout

    reactor.clock.advance(0.25)  # the timeout: SIGTERM to child and grandchild
    assert read_lines(proc, 2) == GOT_TERM
    reactor.clock.advance(4.75)
    quiet_for(0.2)
    assert proc.result is None
    assert alive(pids["child"]) and alive(pids["grandchild"])

    reactor.clock.advance(0.25)  # the grace is over: SIGKILL to the group
    result = wait(proc.wait())
    assert result.returncode == -signal.SIGKILL
    assert result.timed_out
    assert result.describe() == "killed by SIGKILL after timeout 5 s"
    assert not alive(pids["child"])
    assert gone(pids["grandchild"])


def test_a_grandchild_ignoring_SIGTERM_dies_when_its_parent_obeys_it() -> None:
    """The leader exits on SIGTERM; what is left of its group is SIGKILLed
    before the leader is reaped, without waiting for the grace period."""
    code = textwrap.dedent(
        """
        import os, signal, subprocess, sys, time
        grandchild = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
        time.sleep(30)
        """
    )
    grand = (
        "import os, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('grandchild', os.getpid(), flush=True)\n"
        "time.sleep(60)\n"
    )
    reactor, scheduler = clocked()
    proc = procwork.spawn(
        [PY, "-c", code, grand], timeout=5, grace=60, scheduler=scheduler
    )
    _, pid = wait(proc.readline()).split()

    reactor.clock.advance(5)
    result = wait(proc.wait())  # no clock.advance(60): the grace never ran out
    assert result.returncode == -signal.SIGTERM
    assert result.describe() == "killed by SIGTERM after timeout 5 s"
    assert gone(int(pid))


def test_cancelling_the_deferred_terminates_the_group_with_the_same_escalation() -> (
    None
):
    reactor, scheduler = clocked()
    proc, pids = start_stubborn_tree(scheduler, grace=3)
    d = proc.wait()
    d.cancel()
    with pytest.raises(CancelledError):
        wait(d)  # fails at once; the process is being stopped
    assert read_lines(proc, 2) == GOT_TERM
    reactor.clock.advance(3)
    result = wait(proc.wait())
    assert result.returncode == -signal.SIGKILL
    assert not result.timed_out
    assert gone(pids["grandchild"])


def test_terminate_and_timeout_together_send_one_SIGKILL_on_schedule() -> None:
    """A timeout during a terminate's grace does not restart the grace."""
    reactor, scheduler = clocked()
    proc, _ = start_stubborn_tree(scheduler, timeout=2, grace=5)
    proc.terminate()
    assert read_lines(proc, 2) == GOT_TERM
    reactor.clock.advance(2)  # the timeout: another SIGTERM
    assert read_lines(proc, 2) == GOT_TERM
    reactor.clock.advance(3)  # 5 s after the terminate
    assert wait(proc.wait()).returncode == -signal.SIGKILL


@pytest.mark.slow
def test_hundreds_of_timeouts_terminate_kill_and_cancel_racing_all_end_bounded() -> (
    None
):
    """Stress: the one escalation under every interleaving of its callers.

    300 runs at once, all timing out together with no grace:
    half ignore SIGTERM (the SIGKILL is due on the next turn), and on top of
    the timeout a third are also terminated, killed or have their wait
    cancelled, queued or running. Every run ends (a run cancelled in the
    queue ends with no Result), reaped, well within the bound.
    """
    stubborn = "trap '' TERM; sleep 30"
    scheduler = procwork.Scheduler(max_running=300, load=procwork.NoLoadLimit())
    procs = []
    for i in range(300):
        args = ["sh", "-c", stubborn] if i % 2 else ["sleep", "30"]
        proc = procwork.spawn(
            args, timeout=0.5, grace=0, stdin=False, scheduler=scheduler
        )
        procs.append(proc)
    # Let them start, so the timeout finds them running (and the calls
    # below race the timeout's escalation).
    assert drive_until(lambda: all(p.pid is not None for p in procs), 30)
    waits = [proc.wait() for proc in procs]
    for i, proc in enumerate(procs):
        if i % 3 == 1:
            proc.terminate(grace=0)
        elif i % 3 == 2:
            if i % 2:
                proc.kill()
            else:
                waits[i].cancel()
    live = (procwork.RunState.QUEUED, procwork.RunState.RUNNING)
    assert drive_until(lambda: all(p.state not in live for p in procs), 60)
    for i, proc in enumerate(procs):
        result = proc.result
        if result is None:  # its wait was cancelled while it was queued
            assert proc.state is procwork.RunState.CANCELLED, (i, proc)
            continue
        assert not result.ok, (i, result)
        assert result.pid is not None and not alive(result.pid), (i, result)
    for d in waits:
        d.addErrback(lambda f: f.trap(CancelledError))


# -- grandchildren and pipes -------------------------------------------------------


def test_a_grandchild_holding_stdout_open_does_not_delay_the_result() -> None:
    """The shell's exit is the end of the run: the Result does not wait for
    its background sleep (300 s), which holds the pipe open."""
    result = wait(procwork.run(["sh", "-c", "sleep 300 & echo done"]), 60)
    assert result.stdout == b"done\n" and result.ok
    with contextlib.suppress(ProcessLookupError):
        os.killpg(result.pid, signal.SIGKILL)  # the sleep keeps the group alive


@pytest.mark.slow
def test_a_grandchild_holding_stdout_open_does_not_delay_a_timeout(
    tmp_path: Path,
) -> None:
    """The timeout's SIGTERM is ignored and the grace's SIGKILL ends the
    group: the Result comes then, with the output so far, not when the
    background sleep (300 s) holding the pipe would end.

    On a clock: a real 0.5 s timeout could fire before a loaded machine ran
    the shell as far as its ``echo`` (its output would be empty) or its
    ``trap`` (it would die of the SIGTERM)."""
    reactor, scheduler = clocked()
    echoed = tmp_path / "echoed"
    script = "trap '' TERM; sleep 300 & echo started; : > \"$1\"; exec sleep 300"
    run = procwork.run(
        ["sh", "-c", script, "sh", str(echoed)],
        timeout=0.5,
        grace=0.5,
        scheduler=scheduler,
    )
    assert drive_until(echoed.exists, 30), "the shell never got to its echo"
    reactor.clock.advance(0.5)  # the timeout: SIGTERM, ignored by all
    reactor.clock.advance(0.5)  # the grace is over: SIGKILL to the group
    result = wait(run, 60)
    assert result.timed_out
    assert result.describe() == "killed by SIGKILL after timeout 0.5 s"
    assert result.stdout == b"started\n"


def test_output_written_before_exit_is_kept_though_a_grandchild_holds_the_pipe() -> (
    None
):
    script = "sleep 30 & head -c 300000 /dev/zero"
    result = wait(procwork.run(["sh", "-c", script]))
    assert result.stdout == b"\0" * 300000
    with contextlib.suppress(ProcessLookupError):
        os.killpg(result.pid, signal.SIGKILL)


# -- cancellation kills, on the real clock ---------------------------------------------


def test_cancelling_the_deferred_of_run_kills_the_process(tmp_path: Path) -> None:
    d = procwork.run(pid_file_command(tmp_path / "pid"))
    pid = read_pid(tmp_path / "pid")
    d.cancel()
    with pytest.raises(CancelledError):
        wait(d)
    assert gone(pid)


def test_cancelling_the_clockwork_task_waiting_on_a_run_kills_it(
    tmp_path: Path,
) -> None:
    cleaned: list[bool] = []

    def job() -> Generator[Any, Any, None]:
        try:
            yield procwork.run(pid_file_command(tmp_path / "pid"))
        finally:
            cleaned.append(True)

    task_ = clockwork.spawn(job())
    pid = read_pid(tmp_path / "pid")
    assert task_.cancel()
    assert cleaned == [True]
    assert gone(pid)


def test_the_timeout_of_untwisted_run_kills_the_process(tmp_path: Path) -> None:
    d = procwork.run(pid_file_command(tmp_path / "pid"))
    pid = read_pid(tmp_path / "pid")
    with pytest.raises(untwisted.Timeout):
        untwisted.run(d, timeout=0.1)
    assert gone(pid)


@pytest.mark.slow
def test_untwisted_run_returns_from_its_timeout_only_once_the_kill_is_done() -> None:
    """A child ignoring SIGTERM is SIGKILLed after grace before run() raises,
    so the blocking caller never gets control back with it still running."""
    scheduler = procwork.Scheduler(load=procwork.NoLoadLimit())
    d = procwork.run(
        ["sh", "-c", "trap '' TERM; sleep 30"], grace=0.2, scheduler=scheduler
    )
    pid = drive_until(lambda: scheduler.running == 1, 10) and next(
        p.pid for p in procwork._spawn.live_processes()
    )
    with pytest.raises(untwisted.Timeout):
        untwisted.run(d, timeout=0.3)
    assert pid and not alive(pid)
    assert scheduler.running == 0


@pytest.mark.slow
def test_clockwork_timeout_kills_the_process(tmp_path: Path) -> None:
    def job() -> Generator[Any, Any, str]:
        try:
            yield clockwork.timeout(
                0.5, procwork.run(pid_file_command(tmp_path / "pid"))
            )
        except clockwork.Timeout:
            return "timed out"
        return "finished"

    d: Deferred[str] = untwisted.add(job())
    pid = read_pid(tmp_path / "pid")
    assert wait(d) == "timed out"
    assert gone(pid)


# -- program exit, SIGTERM, Ctrl-C: in a child Python ----------------------------------


def run_program(mode: str, signum: int | None = None) -> tuple[int, list[int]]:
    """Run tests/programs/exits.py in ``mode``; send it ``signum`` when ready;
    its exit code and pids."""
    with program_child("exits", mode) as child:
        assert child.stdout is not None
        assert readable(child.stdout, 30), "the program printed nothing"
        pids = [int(p) for p in child.stdout.readline().split()]
        if signum is not None:
            assert child.stdout.readline() == "ready\n"
            time.sleep(0.2)  # into untwisted.run
            child.send_signal(signum)
        child.communicate(timeout=30)
    return child.returncode, pids


def all_gone(pids: list[int], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return False
        time.sleep(0.02)
    return True


@pytest.mark.slow
def test_a_program_exiting_normally_leaves_no_child_or_grandchild_running() -> None:
    code, pids = run_program("exit")
    assert code == 0
    assert len(pids) == 2 and all_gone(pids)


@pytest.mark.slow
def test_a_program_killed_with_SIGTERM_leaves_no_child_or_grandchild_running() -> None:
    code, pids = run_program("wait", signal.SIGTERM)
    assert code == 128 + signal.SIGTERM
    assert len(pids) == 2 and all_gone(pids)


@pytest.mark.slow
def test_ctrl_c_in_a_program_leaves_no_child_or_grandchild_running() -> None:
    code, pids = run_program("wait", signal.SIGINT)
    assert code != 0
    assert len(pids) == 2 and all_gone(pids)


@pytest.mark.slow
def test_a_program_that_never_drove_the_reactor_still_kills_its_child_at_exit() -> None:
    code, pids = run_program("never-drove-the-reactor")
    assert code == 0
    assert len(pids) == 1 and all_gone(pids)
