"""procwork.spawn: a live handle on a long or interactive process.

Each test name is a sentence of the specification. Real processes on the
global reactor; every wait is bounded.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest

import procwork
import untwisted
from tests.support import PY, gone_within, observing, wait

# These tests are not about load: a busy test machine must not queue them.
pytestmark = pytest.mark.usefixtures("no_load_gate")

# Echoes each stdin line upper-cased, at once (unbuffered).
UPPER = [
    PY,
    "-u",
    "-c",
    "import sys\nfor line in sys.stdin: print(line.strip().upper())",
]


def py(code: str) -> list[str]:
    return [PY, "-u", "-c", code]


def started(proc: procwork.Process) -> procwork.Process:
    """Wait (at most 30 s) until ``proc`` has a pid."""
    for _ in range(3000):
        if proc.pid is not None:
            return proc
        untwisted.tick(0.01)
    raise AssertionError(f"{proc!r} never started")


# -- the handle ----------------------------------------------------------------------


def test_spawn_returns_a_Process_whose_pid_is_the_childs() -> None:
    proc = procwork.spawn(py("import os; print(os.getpid())"))
    assert isinstance(proc, procwork.Process)
    result = wait(proc.wait())
    assert proc.pid == result.pid == int(result.stdout)


def test_wait_returns_the_Result_and_may_be_called_again_after_the_end() -> None:
    proc = procwork.spawn(["echo", "done"])
    first = wait(proc.wait())
    assert first.stdout == b"done\n"
    assert wait(proc.wait()) is first
    assert proc.result is first


def test_result_is_None_while_the_process_runs() -> None:
    proc = started(procwork.spawn(["cat"]))
    assert proc.result is None
    proc.close_stdin()
    assert wait(proc.wait()).ok


def test_the_repr_of_a_Process_says_its_command_pid_and_state() -> None:
    proc = started(procwork.spawn(["cat"]))
    assert repr(proc) == f"<Process 'cat' pid {proc.pid} running>"
    proc.close_stdin()
    wait(proc.wait())
    assert repr(proc) == f"<Process 'cat' pid {proc.pid} exited 0>"


def test_the_state_of_a_Process_is_a_RunState_equal_to_its_old_words() -> None:
    """``proc.state`` is a ``procwork.RunState``; comparing it with the
    strings of earlier versions ("running", "exited") still works."""
    proc = started(procwork.spawn(["cat"]))
    assert proc.state is procwork.RunState.RUNNING
    assert proc.state == "running"  # type: ignore[comparison-overlap]  # a str enum
    proc.close_stdin()
    wait(proc.wait())
    assert proc.state is procwork.RunState.EXITED  # type: ignore[comparison-overlap]
    assert proc.state == "exited" and f"{proc.state}" == "exited"


# -- stdin -----------------------------------------------------------------------------


def test_write_and_close_stdin_talk_to_the_child() -> None:
    proc = procwork.spawn(["cat"])
    proc.write(b"hello ")
    proc.write(b"world")
    proc.close_stdin()
    assert wait(proc.wait()).stdout == b"hello world"


def test_an_interactive_exchange_line_by_line_with_readline() -> None:
    proc = procwork.spawn(UPPER)
    proc.write(b"ping\n")
    assert wait(proc.readline()) == b"PING\n"
    proc.write(b"pong\n")
    assert wait(proc.readline()) == b"PONG\n"
    proc.close_stdin()
    assert wait(proc.readline()) == b""  # the end
    assert wait(proc.wait()).ok


def test_write_after_close_stdin_raises_ValueError() -> None:
    proc = procwork.spawn(["cat"])
    proc.close_stdin()
    proc.close_stdin()  # a second close is harmless
    with pytest.raises(ValueError, match=r"stdin of 'cat' is closed"):
        proc.write(b"late")
    wait(proc.wait())


def test_write_of_text_raises_TypeError() -> None:
    proc = procwork.spawn(["cat"])
    with pytest.raises(TypeError, match=r"write\(\) takes bytes, not str"):
        proc.write("text")  # type: ignore[arg-type]
    proc.close_stdin()
    wait(proc.wait())


def test_spawn_with_stdin_False_gives_the_child_an_empty_stdin() -> None:
    proc = procwork.spawn(["cat"], stdin=False)
    assert wait(proc.wait()).stdout == b""
    with pytest.raises(ValueError, match="closed"):
        proc.write(b"x")


def test_input_written_while_queued_is_delivered_when_the_process_starts() -> None:
    scheduler = procwork.Scheduler(max_running=1, load=procwork.NoLoadLimit())
    blocker = started(procwork.spawn(["sleep", "30"], scheduler=scheduler))
    proc = procwork.spawn(["cat"], scheduler=scheduler)
    assert proc.pid is None and scheduler.queued == 1
    proc.write(b"written early")
    proc.close_stdin()
    blocker.kill()
    result = wait(proc.wait())
    assert result.stdout == b"written early"
    assert result.queued > 0


# -- output line by line ---------------------------------------------------------------


def test_on_stdout_and_on_stderr_get_each_line_as_it_comes() -> None:
    out: list[bytes] = []
    err: list[bytes] = []
    code = (
        "import sys\n"
        "print('a')\n"
        "print('b', file=sys.stderr)\n"
        "print('c')\n"
        "print('d', end='')"
    )
    proc = procwork.spawn(py(code), on_stdout=out.append, on_stderr=err.append)
    result = wait(proc.wait())
    assert out == [b"a\n", b"c\n", b"d"]  # the last line had no newline
    assert err == [b"b\n"]
    assert result.stdout == b"a\nc\nd"  # the output is captured as well


def test_a_line_callback_sees_lines_while_the_process_still_runs() -> None:
    lines: list[bytes] = []
    proc = procwork.spawn(UPPER, on_stdout=lines.append)
    proc.write(b"first\n")
    for _ in range(3000):
        if lines:
            break
        untwisted.tick(0.01)
    assert lines == [b"FIRST\n"]
    assert proc.result is None
    proc.close_stdin()
    wait(proc.wait())


def test_a_line_callback_that_raises_does_not_stop_the_process_or_the_others() -> None:
    seen: list[bytes] = []

    def fussy(line: bytes) -> None:
        seen.append(line)
        raise RuntimeError("a bug in the callback")

    logged: list[dict[str, Any]] = []
    with observing(logged.append):
        proc = procwork.spawn(py("print(1); print(2)"), on_stdout=fussy)
        assert wait(proc.wait()).stdout == b"1\n2\n"
    assert seen == [b"1\n", b"2\n"]
    failures = [e for e in logged if "line callback" in e.get("log_format", "")]
    assert len(failures) == 2  # each one logged with its traceback
    assert failures[0]["log_failure"].check(RuntimeError)


def test_async_for_over_lines_yields_each_line_until_the_end() -> None:
    proc = procwork.spawn(py("for i in range(5): print(i)"))

    async def collect() -> list[bytes]:
        return [line async for line in proc.lines()]

    assert wait(collect()) == [b"0\n", b"1\n", b"2\n", b"3\n", b"4\n"]


def test_readline_reads_stderr_when_asked() -> None:
    proc = procwork.spawn(py("import sys; print('to stderr', file=sys.stderr)"))
    assert wait(proc.readline("stderr")) == b"to stderr\n"
    assert wait(proc.readline("stderr")) == b""
    with pytest.raises(ValueError, match=r"stream must be 'stdout' or 'stderr'"):
        proc.readline("stdin")


def test_readline_after_the_end_returns_empty_bytes() -> None:
    proc = procwork.spawn(["true"])
    wait(proc.wait())
    assert wait(proc.readline()) == b""


def test_a_long_line_without_newline_is_delivered_in_bounded_pieces() -> None:
    pieces: list[int] = []
    proc = procwork.spawn(
        py("import sys; sys.stdout.write('x' * 100_000)"),
        on_stdout=lambda line: pieces.append(len(line)),
        max_output=1000,
    )
    result = wait(proc.wait())
    assert max(pieces) <= 1000
    assert sum(pieces) == 100_000
    assert result.stdout == b"x" * 1000 and result.truncated


# -- signals ---------------------------------------------------------------------------


def test_signal_sends_a_signal_to_the_child() -> None:
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGUSR1, lambda *a: (print('usr1'), sys.exit(0)))\n"
        "print('ready')\n"
        "time.sleep(30)\n"
    )
    proc = procwork.spawn(py(code))
    assert wait(proc.readline()) == b"ready\n"
    proc.signal(signal.SIGUSR1)
    assert wait(proc.readline()) == b"usr1\n"
    assert wait(proc.wait()).returncode == 0


def test_signal_takes_a_signal_name_too() -> None:
    proc = started(procwork.spawn(["sleep", "30"]))
    proc.signal("usr2")
    result = wait(proc.wait())
    assert result.returncode == -signal.SIGUSR2
    with pytest.raises(ValueError, match=r"unknown signal 'SIGNOPE'"):
        proc.signal("SIGNOPE")


def test_signal_after_the_end_raises_ProcessLookupError() -> None:
    proc = procwork.spawn(["true"])
    wait(proc.wait())
    with pytest.raises(ProcessLookupError, match=r"'true' is exited, not running"):
        proc.signal(signal.SIGTERM)


def test_terminate_sends_SIGTERM_and_returns_the_Result() -> None:
    proc = started(procwork.spawn(["sleep", "30"]))
    result = wait(proc.terminate())
    assert result.returncode == -signal.SIGTERM
    assert result.describe() == "killed by SIGTERM"
    assert not result.timed_out


def test_terminate_escalates_to_SIGKILL_after_grace() -> None:
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready')\n"
        "time.sleep(30)\n"
    )
    proc = procwork.spawn(py(code))
    assert wait(proc.readline()) == b"ready\n"
    result = wait(proc.terminate(grace=0.2))
    assert result.returncode == -signal.SIGKILL


def test_kill_sends_SIGKILL_at_once() -> None:
    proc = started(procwork.spawn(["sleep", "30"]))
    result = wait(proc.kill())
    assert result.returncode == -signal.SIGKILL
    assert result.describe() == "killed by SIGKILL"


def test_terminating_a_queued_process_withdraws_it_with_a_never_started_result() -> (
    None
):
    """terminate() and kill() of a queued process are answers, not errors."""
    scheduler = procwork.Scheduler(max_running=1, load=procwork.NoLoadLimit())
    blocker = started(procwork.spawn(["sleep", "30"], scheduler=scheduler))
    proc = procwork.spawn(["echo", "never"], scheduler=scheduler)
    other = procwork.spawn(["echo", "never either"], scheduler=scheduler)
    result = wait(proc.terminate())
    assert (result.pid, result.returncode, result.ok) == (None, None, False)
    assert result.describe() == "never started"
    assert wait(other.kill()).describe() == "never started"
    assert proc.pid is None
    assert scheduler.queued == 0
    wait(blocker.kill())


def test_a_run_leaves_no_background_job_of_its_own_behind(tmp_path: Path) -> None:
    """When the command exits, what it left in its process group is killed."""
    pidfile = tmp_path / "pid"
    script = f"sleep 30 & echo $! > {pidfile}; echo started"
    result = wait(procwork.run(["sh", "-c", script], timeout=10))
    assert result.stdout == b"started\n"
    assert gone_within(int(pidfile.read_text()), seconds=5)


@pytest.mark.slow
def test_kill_leftovers_false_lets_background_jobs_live_on(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = f"sleep 30 & echo $! > {pidfile}"
    wait(procwork.run(["sh", "-c", script], timeout=10, kill_leftovers=False))
    pid = int(pidfile.read_text())
    try:
        assert not gone_within(pid, seconds=0.3)
    finally:
        os.kill(pid, signal.SIGKILL)


def test_a_spawned_process_with_a_timeout_is_killed_when_it_expires() -> None:
    proc = procwork.spawn(["sleep", "30"], timeout=0.2)
    result = wait(proc.wait())
    assert result.timed_out
    assert re.fullmatch(r"killed by SIGTERM after timeout 0\.2 s", result.describe())
