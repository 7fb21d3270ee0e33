"""procwork.run: run a command to completion and get its Result.

Each test name is a sentence of the specification. Every test runs real
processes (``sys.executable -c ...`` children or /bin tools) on the global
reactor, and every wait is bounded.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer

import clockwork
import procwork
import untwisted
from procwork import ProcessFailed, Result
from tests.support import PY, wait

# These tests are not about load: a busy test machine must not queue them.
pytestmark = pytest.mark.usefixtures("no_load_gate")


def py(code: str) -> list[str]:
    """The argv of a Python child running ``code``."""
    return [PY, "-c", code]


# -- the command -----------------------------------------------------------------


def test_run_takes_an_argv_list_and_returns_a_Result() -> None:
    result = wait(procwork.run(["echo", "hello", "world"]))
    assert isinstance(result, Result)
    assert result.args == ("echo", "hello", "world")
    assert result.stdout == b"hello world\n"
    assert result.stderr == b""
    assert result.returncode == 0


def test_a_string_command_is_split_with_shlex_and_never_given_to_a_shell() -> None:
    result = wait(procwork.run("echo $HOME 'two words' a;b"))
    assert result.args == ("echo", "$HOME", "two words", "a;b")
    assert result.stdout == b"$HOME two words a;b\n"


def test_a_string_command_that_shlex_cannot_split_is_a_ValueError() -> None:
    with pytest.raises(ValueError, match=r"cannot split command \"echo 'oops\""):
        procwork.run("echo 'oops")


def test_shell_True_runs_the_string_with_bin_sh() -> None:
    result = wait(procwork.run("echo $((6 * 7)) | tr 4 X", shell=True))
    assert result.args[:2] == ("/bin/sh", "-c")
    assert result.stdout == b"X2\n"


def test_shell_True_takes_one_string_not_a_list() -> None:
    with pytest.raises(TypeError, match=r"shell=True takes the command as one string"):
        procwork.run(["echo", "hi"], shell=True)


def test_arguments_may_be_bytes_or_paths(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"content")
    result = wait(procwork.run([b"cat", tmp_path / "f"]))
    assert result.stdout == b"content"


# -- input and output --------------------------------------------------------------


def test_input_is_fed_to_stdin() -> None:
    result = wait(procwork.run(["tr", "a-z", "A-Z"], input=b"shout\n"))
    assert result.stdout == b"SHOUT\n"


def test_without_input_stdin_is_empty_rather_than_ours() -> None:
    result = wait(procwork.run(py("import sys; print(repr(sys.stdin.read()))")))
    assert result.stdout == b"''\n"


def test_twenty_megabytes_in_and_out_at_once_do_not_deadlock() -> None:
    """cat writes while we are still writing: both pipes flow at once."""
    data = os.urandom(20 * 1024 * 1024)
    result = wait(procwork.run(["cat"], input=data, max_output=None))
    assert result.ok
    assert len(result.stdout) == len(data) and result.stdout == data
    assert not result.truncated


def test_big_output_on_both_streams_at_once_does_not_deadlock() -> None:
    code = (
        "import sys\n"
        "for _ in range(200):\n"
        "    sys.stdout.write('o' * 50000); sys.stderr.write('e' * 50000)\n"
    )
    result = wait(procwork.run(py(code), max_output=None))
    assert result.stdout == b"o" * 10_000_000
    assert result.stderr == b"e" * 10_000_000


def test_input_the_child_never_reads_is_no_error() -> None:
    result = wait(procwork.run(["true"], input=b"x" * 10_000_000))
    assert result.ok


def test_input_the_child_stops_reading_half_way_is_no_error() -> None:
    result = wait(procwork.run(["head", "-c", "5"], input=b"x" * 10_000_000))
    assert result.ok and result.stdout == b"xxxxx"


def test_binary_and_non_utf8_output_is_kept_byte_for_byte() -> None:
    code = "import sys; sys.stdout.buffer.write(bytes(range(256)) + b'\\xff\\xfe\\x00')"
    result = wait(procwork.run(py(code)))
    assert result.stdout == bytes(range(256)) + b"\xff\xfe\x00"


def test_stderr_is_captured_apart_from_stdout() -> None:
    code = "import sys; print('out'); print('err', file=sys.stderr)"
    result = wait(procwork.run(py(code)))
    assert (result.stdout, result.stderr) == (b"out\n", b"err\n")


def test_max_output_keeps_the_tail_of_each_stream_and_sets_truncated() -> None:
    code = (
        "import sys\n"
        "sys.stdout.write(''.join(f'{i}\\n' for i in range(1000)))\n"
        "sys.stderr.write('short')\n"
    )
    result = wait(procwork.run(py(code), max_output=12))
    assert result.stdout == b"997\n998\n999\n"
    assert result.stderr == b"short"
    assert result.truncated


def test_output_within_max_output_is_not_truncated() -> None:
    result = wait(procwork.run(["echo", "12345"], max_output=6))
    assert result.stdout == b"12345\n"
    assert not result.truncated


def test_env_replaces_the_whole_environment() -> None:
    result = wait(procwork.run(["/usr/bin/env"], env={"ONLY": "this"}))
    assert result.stdout == b"ONLY=this\n"


def test_without_env_the_child_inherits_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCWORK_TEST_VAR", "inherited")
    result = wait(procwork.run(["sh", "-c", "echo $PROCWORK_TEST_VAR"]))
    assert result.stdout == b"inherited\n"


def test_cwd_sets_the_childs_working_directory(tmp_path: Path) -> None:
    result = wait(procwork.run(py("import os; print(os.getcwd())"), cwd=tmp_path))
    assert result.stdout.decode().strip() == os.path.realpath(tmp_path)


# -- the Result --------------------------------------------------------------------


def test_a_Result_says_how_the_process_exited() -> None:
    result = wait(procwork.run(py("import sys; sys.exit(3)")))
    assert result.returncode == 3
    assert not result.ok and not result.timed_out
    assert result.signal is None
    assert result.describe() == "exited 3"


def test_returncode_is_minus_the_signal_that_killed_the_process() -> None:
    code = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"
    result = wait(procwork.run(py(code)))
    assert result.returncode == -signal.SIGTERM
    assert result.signal == signal.SIGTERM
    assert result.describe() == "killed by SIGTERM"
    assert not result.ok


def test_ok_means_exit_status_0_and_no_timeout() -> None:
    assert wait(procwork.run(["true"])).ok
    assert not wait(procwork.run(["false"])).ok


def test_a_Result_has_the_pid_duration_and_time_spent_queued() -> None:
    result = wait(
        procwork.run(py("import os, time; print(os.getpid()); time.sleep(0.2)"))
    )
    assert result.pid == int(result.stdout)
    assert 0.2 <= result.duration < 20
    assert 0 <= result.queued < 20
    assert result.timeout is None


def test_the_repr_of_a_Result_names_the_command_pid_and_how_it_ended() -> None:
    result = wait(procwork.run(["echo", "two words"]))
    assert re.fullmatch(
        rf"<Result \"echo 'two words'\" pid {result.pid} exited 0, \d+\.\d{{3}} s>",
        repr(result),
    )


def test_the_repr_of_a_truncated_Result_says_so() -> None:
    result = wait(procwork.run(["echo", "a long line"], max_output=2))
    assert repr(result).endswith(", output truncated>")


def test_a_timed_out_run_is_killed_and_its_Result_says_so() -> None:
    result = wait(procwork.run(["sleep", "30"], timeout=0.2, grace=5))
    assert result.timed_out and not result.ok
    assert result.returncode == -signal.SIGTERM
    assert result.timeout == 0.2
    assert result.describe() == "killed by SIGTERM after timeout 0.2 s"
    assert result.duration < 20


@pytest.mark.slow
def test_output_printed_before_a_timeout_is_in_the_Result() -> None:
    result = wait(procwork.run(["sh", "-c", "echo partial; exec sleep 30"], timeout=1))
    assert result.timed_out
    assert result.stdout == b"partial\n"


# -- check ---------------------------------------------------------------------------


def test_check_True_raises_ProcessFailed_carrying_the_Result() -> None:
    code = "import sys; print('why'); sys.exit(4)"
    with pytest.raises(ProcessFailed, match=r"^'.*' exited 4$") as caught:
        wait(procwork.run(py(code), check=True))
    error = caught.value
    assert error.result.returncode == 4
    assert error.result.stdout == b"why\n"


def test_ProcessFailed_is_a_CalledProcessError_for_code_written_for_subprocess() -> (
    None
):
    import subprocess

    with pytest.raises(subprocess.CalledProcessError) as caught:
        wait(procwork.run(["false"], check=True))
    assert isinstance(caught.value, procwork.ProcworkError)
    assert caught.value.returncode == 1
    assert caught.value.cmd == ("false",)


def test_check_True_raises_for_a_timed_out_run_too() -> None:
    with pytest.raises(
        ProcessFailed, match=r"'sleep 30' killed by SIGTERM after timeout"
    ):
        wait(procwork.run(["sleep", "30"], timeout=0.1, check=True))


def test_check_True_returns_the_Result_of_a_run_that_succeeded() -> None:
    assert wait(procwork.run(["true"], check=True)).ok


# -- from every kind of caller ---------------------------------------------------------


def test_run_works_with_yield_in_a_clockwork_generator() -> None:
    def job() -> Generator[Any, Any, bytes]:
        first: Result = yield procwork.run(["echo", "one"])
        second: Result = yield procwork.run(["echo", "two"])
        return first.stdout + second.stdout

    assert clockwork.wrap(job(), timeout=30) == b"one\ntwo\n"


def test_run_works_with_await_in_async_def() -> None:
    async def job() -> bytes:
        result = await procwork.run(["echo", "awaited"])
        return result.stdout

    assert wait(job()) == b"awaited\n"


def test_run_works_in_twisted_inlineCallbacks() -> None:
    @defer.inlineCallbacks
    def job() -> Generator[Any, Any, bytes]:
        result = yield procwork.run(["echo", "inline"])
        stdout: bytes = result.stdout
        return stdout

    assert wait(job()) == b"inline\n"


def test_run_works_from_blocking_code_with_untwisted_run() -> None:
    assert untwisted.run(procwork.run(["echo", "blocking"]), timeout=30).stdout == (
        b"blocking\n"
    )


@pytest.mark.slow
def test_runs_started_together_run_concurrently() -> None:
    """Three 0.5 s sleeps in parallel take far less than 1.5 s."""

    def job() -> Generator[Any, Any, list[Result]]:
        results = yield clockwork.gather(
            *(procwork.run(py("import time; time.sleep(0.5)")) for _ in range(3))
        )
        return results  # type: ignore[no-any-return]

    results = clockwork.wrap(job(), timeout=30)
    assert [r.ok for r in results] == [True, True, True]
    starts = sorted(r.queued for r in results)
    assert starts[-1] < 0.5  # none waited for another to finish


def test_run_from_blocking_code_can_be_called_again_and_again() -> None:
    outputs = [wait(procwork.run(["echo", str(i)])).stdout for i in range(20)]
    assert outputs == [f"{i}\n".encode() for i in range(20)]
