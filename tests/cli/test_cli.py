"""The ``procwork`` command, run as a real process: ``procwork run`` and the
start-up side of ``procwork monitor`` (its running side is in
``test_monitor_e2e.py``).

``procwork run`` is like ``timeout(1)``, but it kills the command's whole
process tree: its exit status is the command's, 124 on timeout, 128+N when
the command is killed by signal N, 127 when it is not found and 126 when it
cannot be executed; 2 is a usage error.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import PY, ROOT, gone_within, sigkill_leftovers

# Every test runs the procwork command: a fresh Python or more each.
pytestmark = pytest.mark.slow

EXAMPLE = ROOT / "specs" / "example-monitor.toml"


def procwork(
    *args: str, timeout: float = 60, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m procwork ARGS`` to completion (at most ``timeout`` s).

    Its stdin is ``input``, or /dev/null.
    """
    command = [PY, "-m", "procwork", *args]
    if input is None:
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
        )
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, input=input
    )


def python(code: str) -> list[str]:
    """``procwork run`` arguments that run ``code`` in a child Python."""
    return ["--", PY, "-c", textwrap.dedent(code)]


@pytest.fixture
def pids() -> Iterator[list[int]]:
    """Pids the test saw; whichever is still alive at the end is SIGKILLed."""
    with sigkill_leftovers() as seen:
        yield seen


def read_pid(path: Path, timeout: float = 20.0) -> int:
    """The pid a child wrote to ``path`` (waiting for it at most ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if text.endswith("\n"):
            return int(text)
        time.sleep(0.02)
    raise AssertionError(f"no pid written to {path} within {timeout} s")


# -- exit status ---------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 3, 255])
def test_run_exits_with_the_commands_exit_status(code: int) -> None:
    done = procwork("run", *python(f"raise SystemExit({code})"))
    assert done.returncode == code
    assert done.stderr == "", "nothing is said without --verbose"


def test_run_dies_of_the_signal_that_killed_the_command_as_timeout_does() -> None:
    """So that the calling shell sees the death by signal ($? is 128+N)."""
    done = procwork("run", *python("import os; os.kill(os.getpid(), 9)"))
    assert done.returncode == -9


def test_run_takes_a_timeout_of_0_as_none_as_timeout_does() -> None:
    done = procwork("run", "--timeout", "0", *python("import time; time.sleep(0.3)"))
    assert done.returncode == 0


def test_run_takes_durations_with_the_suffixes_of_timeout() -> None:
    done = procwork(
        "run", "-v", "--timeout", "0.005m", *python("import time; time.sleep(60)")
    )
    assert done.returncode == 124
    assert "after timeout 0.3 s" in done.stderr


def test_run_shares_its_stdin_stdout_and_stderr_with_the_command_as_timeout_does() -> (
    None
):
    done = procwork(
        "run",
        *python(
            """
            import sys
            print("out" * 100_000)
            print("err", file=sys.stderr)
            print(repr(sys.stdin.read()))
            """
        ),
        input="typed\n",
    )
    assert done.returncode == 0
    assert done.stdout == "out" * 100_000 + "\n'typed\\n'\n"
    assert done.stderr == "err\n"


def test_options_after_the_double_dash_belong_to_the_command() -> None:
    done = procwork("run", *python("import sys; print(sys.argv[1:])"), "--timeout", "5")
    assert (done.returncode, done.stdout) == (0, "['--timeout', '5']\n")


def test_the_double_dash_may_be_left_out() -> None:
    done = procwork("run", PY, "-c", "print('hi')")
    assert (done.returncode, done.stdout) == (0, "hi\n")


def test_run_with_priority_low_runs_the_command_niced() -> None:
    done = procwork("run", "--priority", "low", *python("import os; print(os.nice(0))"))
    assert done.returncode == 0
    assert int(done.stdout) > os.nice(0)


# -- timeouts kill the whole tree ------------------------------------------------


def test_run_exits_124_on_timeout_with_the_whole_tree_killed(
    tmp_path: Path, pids: list[int]
) -> None:
    """A shell that started a sleep and wrote its pid: at the timeout both
    are killed, the sleep too (a shell, not a Python, so that even a loaded
    machine has it write the pid long before the timeout)."""
    grandchild_pid = tmp_path / "grandchild.pid"
    started = time.monotonic()
    done = procwork(
        "run",
        "--timeout",
        "2",
        "--",
        "sh",
        "-c",
        'sleep 60 & echo $! > "$1"; wait',
        "sh",
        str(grandchild_pid),
    )
    grandchild = read_pid(grandchild_pid)
    pids.append(grandchild)
    assert done.returncode == 124
    assert time.monotonic() - started < 30
    assert gone_within(grandchild), "the grandchild was killed with its parent"


def test_a_command_ignoring_sigterm_is_sigkilled_after_the_grace_period(
    pids: list[int],
) -> None:
    """A shell that ignores SIGTERM (from its first line: a Python would
    take a loaded machine's while to install a handler, and might die of
    the SIGTERM first) is SIGKILLed once the grace is over."""
    started = time.monotonic()
    done = procwork(
        "run",
        "--timeout",
        "1",
        "--grace",
        "0.5",
        "--verbose",
        "--",
        "sh",
        "-c",
        "trap '' TERM; echo $$; exec sleep 60",
    )
    pids.append(int(done.stdout))
    assert done.returncode == 124
    assert 1.5 <= time.monotonic() - started < 30
    assert "killed by SIGKILL after timeout 1 s" in done.stderr


def test_sigterm_to_procwork_run_kills_the_command_too(
    tmp_path: Path, pids: list[int]
) -> None:
    child_pid = tmp_path / "child.pid"
    proc = subprocess.Popen(
        [
            PY,
            "-m",
            "procwork",
            "run",
            *python(
                f"""
                import os, time
                with open({str(child_pid)!r}, "w") as f:
                    f.write(f"{{os.getpid()}}\\n")
                time.sleep(60)
                """
            ),
        ],
        cwd=ROOT,
    )
    pids.append(proc.pid)
    try:
        child = read_pid(child_pid)
        pids.append(child)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == -signal.SIGTERM
        assert gone_within(child), "the command died with procwork run"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


# -- cannot run ------------------------------------------------------------------


def test_run_exits_127_when_the_command_is_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-command"
    done = procwork("run", "--", str(missing), "--flag")
    assert done.returncode == 127
    assert done.stderr == (
        f"procwork run: cannot run '{missing} --flag': '{missing}' does not exist\n"
    )


def test_run_exits_127_for_a_bare_name_not_on_the_path() -> None:
    done = procwork("run", "--", "procwork-no-such-command-anywhere")
    assert done.returncode == 127
    assert done.stderr.startswith(
        "procwork run: cannot run 'procwork-no-such-command-anywhere': "
    )


def test_run_exits_126_when_the_command_is_not_executable(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    done = procwork("run", "--", str(script))
    assert done.returncode == 126
    assert re.fullmatch(
        rf"procwork run: cannot run '{re.escape(str(script))}': .*not executable.*\n",
        done.stderr,
    )


# -- --verbose and --max-output --------------------------------------------------


def test_verbose_prints_a_one_line_summary_on_stderr() -> None:
    done = procwork("run", "--verbose", *python("import sys; print('hi'); sys.exit(3)"))
    assert (done.returncode, done.stdout) == (3, "hi\n")
    assert re.fullmatch(
        r"procwork run: \S+ -c 'import sys; print\('\"'\"'hi'\"'\"'\); sys.exit\(3\)'"
        r" exited 3 in \d+\.\d{3} s \(queued \d+\.\d{3} s\)\n",
        done.stderr,
    ), done.stderr


def test_verbose_says_when_the_command_timed_out() -> None:
    done = procwork(
        "run", "-v", "--timeout", "0.3", *python("import time; time.sleep(60)")
    )
    assert done.returncode == 124
    assert re.search(
        r" killed by SIGTERM after timeout 0\.3 s in \d+\.\d{3} s", done.stderr
    )


def test_max_output_keeps_the_tail_of_each_stream() -> None:
    done = procwork(
        "run",
        "--max-output",
        "10",
        "--verbose",
        *python(
            """
            import sys
            sys.stdout.write("".join(str(i % 10) for i in range(1000)))
            sys.stderr.write("E" * 500 + "the end\\n")
            """
        ),
    )
    assert done.returncode == 0
    assert done.stdout == "0123456789"
    assert done.stderr.startswith("EEthe end\n")
    summary = done.stderr.removeprefix("EEthe end\n")
    assert summary.startswith("procwork run: ")
    assert summary.endswith(", output truncated\n")


def test_max_output_larger_than_the_output_keeps_all_of_it() -> None:
    done = procwork("run", "--max-output", "1000", *python("print('short')"))
    assert (done.returncode, done.stdout) == (0, "short\n")


# -- usage errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["run"],
            "run: no command given (usage: procwork run [OPTIONS] -- CMD ARGS...)",
            id="no-command",
        ),
        pytest.param(["run", "--"], "run: no command given", id="only-dashes"),
        pytest.param(
            ["run", "--priority", "urgent", "--", "true"],
            "argument --priority: invalid choice: 'urgent'",
            id="bad-priority",
        ),
        pytest.param(
            ["run", "--timeout", "soon", "--", "true"],
            "argument --timeout: invalid time interval 'soon': give a number of "
            "seconds with an optional suffix s, m, h or d (0: no timeout)",
            id="timeout-not-a-number",
        ),
        pytest.param(
            ["run", "--timeout", "-1", "--", "true"],
            "invalid time interval '-1': it must be 0 (no timeout) or more",
            id="negative-timeout",
        ),
        pytest.param(
            ["run", "--max-output", "0", "--", "true"],
            "max_output must be >= 1 byte, not 0",
            id="max-output-zero",
        ),
    ],
)
def test_a_usage_error_of_run_exits_125_as_timeout_does_and_says_what_is_wrong(
    args: list[str], message: str
) -> None:
    """125, not argparse's 2: a command's own status 2 is common."""
    done = procwork(*args)
    assert done.returncode == 125
    assert message in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param([], "the following arguments are required: COMMAND", id="none"),
        pytest.param(["launch"], "invalid choice: 'launch'", id="unknown-command"),
    ],
)
def test_a_usage_error_exits_2_and_says_what_is_wrong(
    args: list[str], message: str
) -> None:
    done = procwork(*args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_the_procwork_console_script_is_installed_and_runs() -> None:
    script = Path(PY).parent / "procwork"
    assert script.exists(), "pip install of the project installs the command"
    done = subprocess.run(
        [str(script), "run", "--", PY, "-c", "raise SystemExit(7)"],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 7


# -- procwork monitor: start-up --------------------------------------------------


def test_monitor_check_config_validates_the_example_config_and_exits_0() -> None:
    done = procwork("monitor", str(EXAMPLE), "--check-config")
    assert done.returncode == 0
    verdict, containment, *limits = done.stderr.splitlines()
    assert re.fullmatch(
        rf"{re.escape(str(EXAMPLE))}: ok: \d+ services, \d+ checks, \d+ rules",
        verdict,
    )
    # How the services would be contained here, and each limit of the
    # example's heartbeat service, enforced or why not.
    assert containment.startswith("containment: ")
    assert [line.partition(":")[0] for line in limits] == ["service 'heartbeat'"] * 4


def test_monitor_check_config_validates_the_built_in_config() -> None:
    done = procwork("monitor", "--check-config")
    assert done.returncode == 0
    verdict, containment = done.stderr.splitlines()
    assert verdict == "<built-in config>: ok: 1 services, 3 checks, 1 rules"
    assert containment.startswith("containment: ")


def test_check_config_prints_the_effective_config_as_TOML_that_loads_the_same(
    tmp_path: Path,
) -> None:
    """Includes inlined, instances expanded, ${VAR} substituted: runnable as is."""
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "workers.toml").write_text(
        textwrap.dedent(
            """
            [[service]]
            name = "worker-{instance}"
            numprocs = 2
            command = ["{python}", "-c", "pass", "${QUEUE:-jobs}-{instance}"]
            """
        )
    )
    config = tmp_path / "main.toml"
    config.write_text('include = ["conf.d/*.toml"]\n[monitor]\nhttp = false\n')
    done = procwork("monitor", str(config), "--check-config")
    assert done.returncode == 0, done.stderr
    assert '[[service]]\nname = "worker-1"\n' in done.stdout
    assert f'command = ["{PY}", "-c", "pass", "jobs-1"]' in done.stdout
    assert f"# Included: {tmp_path / 'conf.d' / 'workers.toml'}" in done.stdout
    effective = tmp_path / "effective.toml"
    effective.write_text(done.stdout)
    again = procwork("monitor", str(effective), "--check-config")
    assert again.returncode == 0, again.stderr
    body = done.stdout[done.stdout.index("[monitor]") :]
    assert again.stdout[again.stdout.index("[monitor]") :] == body


def test_check_config_rejects_a_NaN_interval_without_a_traceback(
    tmp_path: Path,
) -> None:
    config = tmp_path / "nan.toml"
    config.write_text("[monitor]\nsummary_every = nan\n")
    done = procwork("monitor", str(config), "--check-config")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"procwork monitor: {config}: [monitor]: summary_every must be a finite "
        "number >= 0, not nan\n"
    )


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('python = "jobs.ok"', "python must be 'module:function' like"),
        ('python = "jobs:ok"', "python: no module 'jobs' beside the config file"),
        ('disk = ""', "disk must not be empty"),
        ('process = "x"\nmax_count = -1', "max_count must be a whole number >= 0"),
    ],
)
def test_check_config_rejects_a_bad_check_naming_the_file_the_entry_and_the_key(
    tmp_path: Path, line: str, problem: str
) -> None:
    config = tmp_path / "checks.toml"
    config.write_text(f'[[check]]\nname = "jobs"\nevery = 10\n{line}\n')
    done = procwork("monitor", str(config), "--check-config")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith(f"procwork monitor: {config}: [[check]] #1 ('jobs')")
    assert problem in done.stderr


def test_print_default_config_prints_the_built_in_config_to_copy(
    tmp_path: Path,
) -> None:
    done = procwork("monitor", "--print-default-config")
    assert done.returncode == 0
    assert done.stdout == (ROOT / "procwork" / "monitor" / "default.toml").read_text()
    copy = tmp_path / "mine.toml"
    copy.write_text(done.stdout)
    assert procwork("monitor", str(copy), "--check-config").returncode == 0


def test_version_prints_procworks_version() -> None:
    import procwork as package

    done = procwork("--version")
    assert (done.returncode, done.stdout) == (0, f"procwork {package.__version__}\n")


def test_monitor_rejects_a_bad_config_at_start_naming_the_file_and_the_key(
    tmp_path: Path,
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[[check]]\nname = "df"\ncommand = "df"\nevry = 5\n')
    done = procwork("monitor", str(config))
    assert done.returncode == 2
    assert done.stderr.startswith(
        f"procwork monitor: {config}: [[check]] #1 ('df'): unknown key 'evry'; "
    )
    assert "Traceback" not in done.stderr


def test_monitor_rejects_a_missing_config_file(tmp_path: Path) -> None:
    done = procwork("monitor", str(tmp_path / "missing.toml"))
    assert done.returncode == 2
    assert "missing.toml: cannot read config: No such file or directory" in (
        done.stderr
    )


def test_monitor_rejects_a_bad_http_address() -> None:
    done = procwork("monitor", "--http", "8642")
    assert done.returncode == 2
    assert done.stderr == (
        "procwork monitor: --http must be HOST:PORT like 127.0.0.1:8642 (port 0: "
        "any free port), not '8642'\n"
    )


def test_monitor_exits_2_when_its_http_port_is_taken(tmp_path: Path) -> None:
    config = tmp_path / "empty.toml"
    config.write_text("")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = procwork("monitor", str(config), "--http", f"127.0.0.1:{port}")
    assert done.returncode == 2
    assert f"procwork monitor: cannot serve HTTP on 127.0.0.1:{port}: " in done.stderr
    assert "Traceback" not in done.stderr
