"""``procwork timeout`` is coreutils ``timeout(1)`` given the same argv, and
takes the command's whole tree along.

The table runs the real ``/usr/bin/timeout`` and ``procwork timeout`` side by
side on each argv and compares what the calling shell sees: the exit status,
and whether the wrapper died of a signal. Then what coreutils does not do: a
tree with a process in a group of its own killed at timeout, the lifeline
killing the tree of a SIGKILLed ``procwork timeout``, leftovers. Real
processes, every wait bounded, whatever a test started SIGKILLed at its end
(the ``marker`` fixture).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import procwork
from procwork import _lifeline_main
from procwork.cli import _timeout
from tests.support import (
    PROCWORK_TIMEOUT,
    PY,
    alive,
    argv_of,
    child_env,
    cpu_load,
    modules_imported_by,
    start_command,
)
from tests.support.lifeline import (
    TREE,
    groups_gone,
    poll,
    running_with,
    whole_tree,
)
from tests.support.tools import need_tool

pytestmark = pytest.mark.slow  # every test starts a Python or more


#: A command that ignores SIGTERM and outlives any timeout of the table.
IGNORES_TERM = ["sh", "-c", "trap '' TERM; sleep 5"]


def coreutils_timeout() -> str:
    return need_tool("/usr/bin/timeout", package="coreutils")


def finish(process: subprocess.Popen[str], timeout: float = 60) -> tuple[str, str]:
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate(timeout=10)
        raise


def seen_by_the_shell(returncode: int) -> str:
    """``$?`` as a shell reports it, and how."""
    if returncode < 0:
        return f"{128 - returncode} (died of {signal.Signals(-returncode).name})"
    return f"{returncode} (exited)"


# The argv of each case.
CASES = [
    pytest.param(["1", "true"], id="exit-0"),
    pytest.param(["1", "false"], id="exit-1"),
    pytest.param(["1", "sh", "-c", "exit 3"], id="exit-3"),
    pytest.param(["1", "sh", "-c", "exit 124"], id="command-exits-124"),
    pytest.param(["0.2", "sleep", "5"], id="times-out-124"),
    pytest.param(["0.2s", "sleep", "5"], id="suffix-s"),
    pytest.param(["0.005m", "sleep", "5"], id="suffix-m-fraction"),
    pytest.param([".2", "sleep", "5"], id="leading-dot"),
    pytest.param(["0x1p-3", "sleep", "5"], id="hexadecimal"),
    pytest.param(["0", "sleep", "0.3"], id="zero-is-no-timeout"),
    pytest.param(["inf", "true"], id="infinity"),
    pytest.param(["1d", "true"], id="suffix-d"),
    pytest.param(["1.5h", "true"], id="suffix-h"),
    pytest.param(["+1", "true"], id="plus-sign"),
    pytest.param(["-s", "INT", "0.2", "sleep", "5"], id="signal-name"),
    pytest.param(["--signal=sigint", "0.2", "sleep", "5"], id="signal-sig-lowercase"),
    pytest.param(["-s", "RTMIN+1", "0.2", "sleep", "5"], id="signal-realtime"),
    pytest.param(["-s", "0", "0.2", "sleep", "0.6"], id="signal-0-sends-nothing"),
    pytest.param(["-s", "KILL", "0.2", "sleep", "5"], id="signal-kill-137"),
    pytest.param(["-s", "9", "0.2", "sleep", "5"], id="signal-number"),
    pytest.param(["-s", "137", "0.2", "sleep", "5"], id="signal-as-shell-status"),
    pytest.param(["--preserve-status", "0.2", "sleep", "5"], id="preserve-143"),
    pytest.param(["--pres", "-s", "INT", "0.2", "sleep", "5"], id="abbreviated"),
    pytest.param(["-k", "0.3", "0.2", *IGNORES_TERM], id="kill-after-137"),
    pytest.param(["--kill=0.3", "-v", "0.2", *IGNORES_TERM], id="kill-abbreviated"),
    pytest.param(["-vk", "0.3", "0.2", *IGNORES_TERM], id="short-cluster"),
    pytest.param(["-k", "5", "0.2", "sleep", "5"], id="kill-after-unused"),
    pytest.param(["-s", "0", "-k0.3", "0.2", "sleep", "5"], id="only-kill-after"),
    pytest.param(["-v", "0.2", "sleep", "5"], id="verbose"),
    pytest.param(["--foreground", "0.2", "sleep", "5"], id="foreground"),
    pytest.param(
        ["--foreground", "-k", "0.3", "0.2", *IGNORES_TERM], id="foreground-kill"
    ),
    pytest.param(["5", "sh", "-c", "kill -TERM $$"], id="dies-of-term"),
    pytest.param(["5", "sh", "-c", "kill -INT $$"], id="dies-of-int"),
    pytest.param(["5", "sh", "-c", "kill -QUIT $$"], id="dies-of-quit-no-core"),
    pytest.param(["5", "sh", "-c", "kill -KILL $$"], id="dies-of-kill"),
    pytest.param(["5", "sh", "-c", "kill -PIPE $$"], id="sigpipe-not-ignored"),
    pytest.param(["5", "procwork-no-such-command"], id="not-found-127"),
    pytest.param(["5", "/etc/passwd"], id="not-executable-126"),
    pytest.param(["5", "/"], id="a-directory-126"),
    pytest.param(["1", "--", "true"], id="dashes-after-duration-are-the-command"),
    pytest.param(["--", "1", "true"], id="dashes-before-duration"),
    pytest.param(["1ms", "true"], id="bad-suffix-125"),
    pytest.param(["1S", "true"], id="suffixes-are-lowercase"),
    pytest.param(["nan", "true"], id="nan-125"),
    pytest.param(["-1", "true"], id="negative-is-an-option-125"),
    pytest.param(["1e", "true"], id="half-exponent-125"),
    pytest.param(["5"], id="no-command-125"),
    pytest.param([], id="no-operand-125"),
    pytest.param(["--bogus", "1", "true"], id="unknown-option-125"),
    pytest.param(["-s", "FOO", "1", "true"], id="unknown-signal-125"),
    pytest.param(["-s", "65", "1", "true"], id="signal-out-of-range-125"),
    pytest.param(["-s", "RTMIN+31", "1", "true"], id="realtime-out-of-range"),
    pytest.param(["-k", "x", "1", "true"], id="bad-kill-after-125"),
    pytest.param(["--help"], id="help"),
]

#: The cases where coreutils SIGKILLs its own process group, itself included
#: (procwork timeout, the command in a group of its own, SIGKILLs itself once
#: the tree is gone, so that the shell sees the same death).
COREUTILS_KILLS_ITSELF = {
    "signal-kill-137",
    "signal-number",
    "signal-as-shell-status",
    "kill-after-137",
    "kill-abbreviated",
    "short-cluster",
    "only-kill-after",
}


@pytest.mark.parametrize("argv", CASES)
def test_procwork_timeout_ends_as_coreutils_timeout_given_the_same_argv(
    argv: list[str], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The shell sees the same status from both, and a death by signal from
    both where the command died of one (coreutils re-raises it) or where the
    timeout's signal was KILL (coreutils sends it to its own group)."""
    coreutils = start_command([coreutils_timeout(), *argv], cwd=tmp_path)
    ours = start_command([*PROCWORK_TIMEOUT, *argv], cwd=tmp_path)
    _, coreutils_err = finish(coreutils)
    _, ours_err = finish(ours)
    assert "Traceback" not in ours_err
    if request.node.callspec.id in COREUTILS_KILLS_ITSELF:
        assert coreutils.returncode == -signal.SIGKILL
    assert seen_by_the_shell(ours.returncode) == seen_by_the_shell(
        coreutils.returncode
    ), f"coreutils said {coreutils_err!r}, procwork timeout {ours_err!r}"
    # Each says why it failed, on stderr, in its own words.
    assert bool(ours_err) == bool(coreutils_err)


def ignoring(sig: signal.Signals) -> Callable[[], None]:
    def ignore() -> None:
        signal.signal(sig, signal.SIG_IGN)

    return ignore


@pytest.mark.parametrize(
    ("inherited_ignored", "argv"),
    [
        pytest.param(signal.SIGINT, ["5", "sh", "-c", "kill -INT $$"], id="int"),
        pytest.param(signal.SIGHUP, ["5", "sh", "-c", "kill -HUP $$"], id="nohup"),
        pytest.param(signal.SIGCHLD, ["5", "sh", "-c", "exit 3"], id="chld-exit"),
        pytest.param(signal.SIGCHLD, ["0.2", "sleep", "5"], id="chld-timeout"),
    ],
)
def test_signals_inherited_as_ignored_change_nothing_as_with_coreutils(
    inherited_ignored: signal.Signals, argv: list[str], tmp_path: Path
) -> None:
    """Started with a signal ignored (``nohup``, a background job's SIGINT,
    SIGCHLD), both give the command its default, and end alike."""
    ended = []
    for wrapper in ([coreutils_timeout()], PROCWORK_TIMEOUT):
        done = subprocess.Popen(
            [*wrapper, *argv],
            cwd=tmp_path,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            preexec_fn=ignoring(inherited_ignored),
        )
        ended.append(seen_by_the_shell(done.wait(timeout=60)))
    assert ended[0] == ended[1]


def test_the_table_covers_every_exit_status_of_timeout() -> None:
    """124, 125, 126, 127, 137, a command's own status and deaths by signal:
    the table is not a list of easy cases."""
    ids = {case.id for case in CASES}
    for needed in ("times-out-124", "bad-suffix-125", "not-executable-126"):
        assert needed in ids
    assert {"not-found-127", "kill-after-137", "exit-3", "dies-of-term"} <= ids
    assert len(CASES) >= 25


def test_verbose_says_which_signal_went_to_which_command() -> None:
    done = start_command([*PROCWORK_TIMEOUT, "-v", "-k", "0.3", "0.2", *IGNORES_TERM])
    _, err = finish(done)
    assert done.returncode == -signal.SIGKILL
    assert err == (
        "procwork timeout: sending signal TERM to command 'sh'\n"
        "procwork timeout: sending signal KILL to command 'sh'\n"
    )


def test_a_usage_error_names_the_argument_and_the_reason() -> None:
    done = start_command([*PROCWORK_TIMEOUT, "1ms", "true"])
    _, err = finish(done)
    assert done.returncode == 125
    assert err.startswith(
        "procwork timeout: invalid time interval '1ms': give a number of "
        "seconds with an optional suffix s, m, h or d (0: no timeout)\n"
    )


# -- the tree ------------------------------------------------------------------

#: A shell with a sleep in its group, one in a session of its own (setsid)
#: and one daemonized (its parent gone): each a shell carrying the marker.
ESCAPING_TREE = (
    "sh -c 'sleep 300; :' \"$0\" & "
    "setsid sh -c 'sleep 300; :' \"$0\" & "
    "(setsid sh -c 'sleep 300; :' \"$0\" &) ; "
    "wait"
)


def test_at_timeout_the_whole_tree_dies_even_processes_that_left_the_group(
    marker: str,
) -> None:
    """coreutils signals its process group; a command's child that moved to a
    session of its own, or was orphaned there, runs on. procwork timeout is
    their subreaper: it signals them too, and returns once they are gone."""
    done = start_command([*PROCWORK_TIMEOUT, "1", "sh", "-c", ESCAPING_TREE, marker])
    _, err = finish(done)
    assert done.returncode == 124, err
    assert running_with(marker) == [], "procwork timeout returned with the tree gone"


def test_a_tree_that_ignores_the_signal_is_killed_after_kill_after(
    marker: str,
) -> None:
    """The shells of the tree ignore SIGTERM: ``-k`` SIGKILLs all of them,
    the one in a session of its own too, and then procwork timeout itself,
    as coreutils' KILL to its own group does."""
    script = (
        "trap '' TERM; "
        'setsid sh -c "trap \'\' TERM; sleep 300; :" "$0" & '
        'sh -c "trap \'\' TERM; sleep 300; :" "$0" & '
        "wait"
    )
    done = start_command(
        [*PROCWORK_TIMEOUT, "-k", "0.5", "1", "sh", "-c", script, marker]
    )
    finish(done)
    assert done.returncode == -signal.SIGKILL
    assert running_with(marker) == []


KILL_ROUNDS = 40


def test_a_timeouts_kill_reaches_children_orphaned_as_their_parent_dies(
    marker: str,
) -> None:
    """40 times under CPU load, ``-k``'s KILL hits a shell (ignoring TERM)
    whose children, one in a session of its own, are reparented to procwork
    timeout as the shell dies: a listing of the tree taken then can miss
    them, so what is found afterwards is SIGKILLed too, and each time none
    is left running when procwork timeout (dead of KILL) is gone."""
    script = (
        "trap '' TERM; "
        'setsid sh -c "trap \'\' TERM; sleep 300; :" "$0" & '
        'sh -c "trap \'\' TERM; sleep 300; :" "$0" & '
        "wait"
    )
    with cpu_load():
        for round_ in range(KILL_ROUNDS):
            done = start_command(
                [*PROCWORK_TIMEOUT, "-k", "0.2", "0.2", "sh", "-c", script, marker],
                quiet=True,
            )
            assert done.wait(timeout=60) == -signal.SIGKILL
            assert running_with(marker) == [], f"round {round_}"


def test_procwork_timeout_sigkilled_takes_the_commands_tree_along(
    marker: str,
) -> None:
    """Its lifeline: ``procwork timeout`` SIGKILLed, the command's group
    (a shell and two sleeps) is gone within 2 s. coreutils leaves it."""
    wrapper = start_command([*PROCWORK_TIMEOUT, "300", "sh", "-c", TREE, marker])
    try:
        pgid = whole_tree(marker)
        assert pgid != os.getpgid(wrapper.pid), "the command has a group of its own"
        wrapper.kill()
        finish(wrapper)
        assert groups_gone([pgid])
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
            finish(wrapper)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_sent_to_procwork_timeout_goes_to_the_tree_and_it_dies_of_it(
    sig: signal.Signals, marker: str
) -> None:
    """As coreutils: the signal is passed on, the command dies of it, and so
    does ``procwork timeout`` (a shell loop stops at Ctrl-C); the tree is
    gone when it returns."""
    wrapper = start_command([*PROCWORK_TIMEOUT, "300", "sh", "-c", TREE, marker])
    try:
        pgid = whole_tree(marker)
        wrapper.send_signal(sig)
        finish(wrapper)
        assert wrapper.returncode == -sig
        assert groups_gone([pgid])
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
            finish(wrapper)


def test_a_command_that_handles_the_passed_signal_gives_its_own_status(
    marker: str,
) -> None:
    """The command traps SIGTERM and exits 7: ``procwork timeout`` exits 7,
    as coreutils does (it was not a time out)."""
    script = 'trap "exit 7" TERM; sleep 300 & wait'
    wrapper = start_command([*PROCWORK_TIMEOUT, "300", "sh", "-c", script, marker])
    try:
        assert poll(lambda: running_with(marker), 20)
        # The trap is set once the shell has started its sleep.
        assert poll(lambda: len(_children(running_with(marker)[0])) == 1, 20)
        wrapper.send_signal(signal.SIGTERM)
        finish(wrapper)
        assert wrapper.returncode == 7
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
            finish(wrapper)


#: Rounds of the stress test, and the spread of its kills after the start.
ROUNDS = 80
SPREAD = 0.4


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_at_any_moment_of_its_start_it_never_leaves_the_command_running(
    sig: signal.Signals, marker: str
) -> None:
    """80 times under CPU load, ``procwork timeout`` is sent SIGKILL or SIGTERM
    0 to 0.4 s after it was started: before it handles signals, between its
    fork and the lifeline hearing of the command's group, once the command
    runs. Each time it ends (bounded), and no command is left running: the
    forked child waits on a pipe to exec until the lifeline knows its group,
    and gives up if procwork timeout died first."""
    script = "sleep 300; :"
    with cpu_load():
        for round_ in range(ROUNDS):
            wrapper = start_command(
                [*PROCWORK_TIMEOUT, "300", "sh", "-c", script, marker], quiet=True
            )
            time.sleep(SPREAD * round_ / ROUNDS)
            wrapper.send_signal(sig)
            wrapper.wait(timeout=60)
    assert poll(lambda: running_with(marker) == [], 10)


# -- leftovers -----------------------------------------------------------------

LEAVES_A_SHELL = "sh -c 'sleep 300; :' \"$0\" & exit 0"


def lifeline_helpers_of(pid: int) -> list[int]:
    """The lifeline helpers started by process ``pid``, still running."""
    found = []
    for name in os.listdir("/proc"):
        args = argv_of(name) if name.isdigit() else None
        if args is None:
            continue
        if any(arg.endswith(b"_lifeline_main.py") for arg in args) and (
            str(pid).encode() in args
        ):
            found.append(int(name))
    return found


def test_leftovers_of_a_command_that_exited_are_left_alone_as_coreutils_does(
    marker: str,
) -> None:
    """The command exits 0 leaving a shell running: procwork timeout exits 0,
    and the shell runs on after its lifeline helper is gone too."""
    # Its output to /dev/null: the shell left running holds it.
    wrapper = start_command(
        [*PROCWORK_TIMEOUT, "300", "sh", "-c", LEAVES_A_SHELL, marker], quiet=True
    )
    assert wrapper.wait(timeout=60) == 0
    assert poll(lambda: not lifeline_helpers_of(wrapper.pid), 20)
    assert [p for p in running_with(marker) if alive(p)], "the leftover runs on"


def test_kill_leftovers_kills_what_the_command_left_before_returning(
    marker: str,
) -> None:
    leaves = ["sh", "-c", LEAVES_A_SHELL, marker]
    wrapper = start_command([*PROCWORK_TIMEOUT, "--kill-leftovers", "300", *leaves])
    _, err = finish(wrapper)
    assert wrapper.returncode == 0, err
    assert running_with(marker) == []


def test_kill_leftovers_is_an_option_not_a_prefix_of_kill_after() -> None:
    """``--kill=0.3`` still means ``--kill-after`` (coreutils users write it),
    and ``--kill-leftovers`` after the duration belongs to the command."""
    done = start_command([*PROCWORK_TIMEOUT, "5", "echo", "--kill-leftovers"])
    out, _ = finish(done)
    assert (done.returncode, out) == (0, "--kill-leftovers\n")


# -- a fast start --------------------------------------------------------------


def test_procwork_timeout_imports_no_twisted_and_not_the_other_commands_parser(
    tmp_path: Path,
) -> None:
    """``procwork.cli.main`` dispatches ``timeout`` first: of procwork it
    imports the package (lazy), ``procwork.cli``, ``_timeout`` and the
    lifeline helper's starter (standard library only) alone; no Twisted, no
    argparse (they take tens to hundreds of milliseconds)."""
    imported = modules_imported_by([*PROCWORK_TIMEOUT, "5", "true"], tmp_path)
    ours = {m for m in imported if m.split(".")[0] in ("procwork", "twisted")}
    assert ours == {
        "procwork",
        "procwork.cli",
        "procwork.cli._timeout",
        "procwork._lifeline_start",
    }
    assert "argparse" not in imported


def test_version_names_procwork_dot_version() -> None:
    done = start_command([*PROCWORK_TIMEOUT, "--version"])
    out, _ = finish(done)
    assert (done.returncode, out) == (
        0,
        f"procwork timeout (procwork {procwork.__version__})\n",
    )


def test_the_record_format_is_the_lifeline_helpers() -> None:
    """_timeout restates the helper's record format rather than import it."""
    assert _timeout.RECORD.format == _lifeline_main.RECORD.format


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1.5", 1.5),
        ("2m", 120.0),
        ("1.5h", 5400.0),
        ("1d", 86400.0),
        ("0x1p-3", 0.125),
        (" 1e1s", 10.0),
        ("0", 0.0),
    ],
)
def test_a_duration_is_read_as_coreutils_reads_it(text: str, seconds: float) -> None:
    assert _timeout.parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "number"),
    [("TERM", 15), ("sigkill", 9), ("137", 9), ("265", 9), ("EXIT", 0), ("CLD", 17)],
)
def test_a_signal_is_read_as_coreutils_reads_it(text: str, number: int) -> None:
    assert _timeout.parse_signal(text) == number


def test_the_procwork_command_dispatches_timeout_too() -> None:
    """``python -m procwork timeout`` runs the same code, after the package."""
    done = start_command([PY, "-m", "procwork", "timeout", "0.2", "sleep", "5"])
    finish(done)
    assert done.returncode == 124


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(child) for child in f.read().split()]


if sys.platform != "linux":  # pragma: no cover
    pytest.skip("procwork timeout's tree handling is Linux's", allow_module_level=True)
