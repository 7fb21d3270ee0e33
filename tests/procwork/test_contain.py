"""``contain=True``: a run in a cgroup of its own, on this machine's kernel.

A daemon that calls ``setsid()`` and double-forks leaves its process group,
and with it every kill by group; a cgroup keeps it. These tests start such
daemons (``tests/programs/escapee.py``, or ``setsid`` from a shell) in
contained runs and check that the timeout, a cancel, the command's exit
(``kill_leftovers``) and the program's death (the lifeline) kill them, that
the child is inside its cgroup from its first instruction, that a command
that cannot run fails as it does without containment, and that every
cgroup made is removed. They need a writable cgroup v2 (root, as on this
machine and in CI; skipped elsewhere with the reason).
"""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import clockwork
import procwork
from procwork import _cgroup
from procwork._cgroup import _fs
from tests.support import (
    PY,
    ROOT,
    alive,
    child_env,
    cpu_load,
    gone_within,
    program,
    wait,
)
from tests.support.cgroups import cgroup_of, need_cgroups, wait_gone

pytestmark = pytest.mark.usefixtures("no_load_gate")

#: A shell whose grandchild (a sleep) leads a session of its own: it prints
#: the sleep's pid and exits. setsid -w: the shell's last command is exec'd,
#: and setsid, leading the run's group, forks; without -w it would exit at
#: once, and what it left be killed, perhaps before the echo.
DAEMONIZE = ["sh", "-c", "setsid -w sh -c 'sleep 60 & echo $!'"]


@pytest.fixture
def runs_root(started: list[int]) -> Iterator[str]:
    """This program's containment of its runs (its root directory); at the
    end of the test, no cgroup of a run is left in it."""
    need_cgroups()
    from tests.support import global_reactor

    containment = _cgroup.runs_containment(global_reactor())
    assert containment.available, containment.why
    assert containment.root is not None
    yield containment.root
    assert _fs.tree(containment.root)[:-1] == [], "a run's cgroup was left behind"


def pids_in(output: bytes, role: str) -> list[int]:
    return [int(p) for p in re.findall(rb"%s (\d+)" % role.encode(), output)]


def test_the_child_runs_in_a_cgroup_of_its_own_from_the_start(
    runs_root: str,
) -> None:
    """/proc/self/cgroup, read by the command's first instruction, already
    names the run's cgroup; and the command is what runs there, with its own
    argv (the small sh that put it there exec'd it)."""
    result = wait(
        procwork.run(
            ["sh", "-c", "cat /proc/self/cgroup; cat /proc/$$/cmdline"], contain=True
        )
    )
    assert result.ok, result
    cgroup = re.search(rb"^0::(.*)$", result.stdout, re.MULTILINE)
    assert cgroup is not None
    where = _fs_path(cgroup.group(1).decode())
    assert os.path.dirname(where) == runs_root
    assert os.path.basename(where).startswith("run-")
    assert result.stdout.endswith(
        b"sh\0-c\0cat /proc/self/cgroup; cat /proc/$$/cmdline\0"
    )


def test_a_timeout_kills_a_daemon_that_left_the_process_group(
    runs_root: str, started: list[int]
) -> None:
    """The issue's case: `procwork run --timeout` left a setsid'd grandchild
    running, as coreutils' timeout does. Contained, it dies with the run,
    and the Result comes once the cgroup is empty."""
    result = wait(
        procwork.run(program("escapee", "stay"), timeout=1, grace=1, contain=True)
    )
    assert result.timed_out
    (escapee,) = pids_in(result.stdout, "escapee")
    started.append(escapee)
    assert not alive(escapee), "the daemon outlived its run's timeout"


def test_without_containment_the_same_daemon_survives_the_timeout(
    started: list[int],
) -> None:
    """What containment changes: by process group alone, it lives on."""
    result = wait(procwork.run(program("escapee", "stay"), timeout=1, grace=1))
    (escapee,) = pids_in(result.stdout, "escapee")
    started.append(escapee)
    assert alive(escapee)


def test_a_cancel_kills_the_daemon_too(runs_root: str, started: list[int]) -> None:
    proc = procwork.spawn(program("escapee", "stay"), contain=True)
    lines = [wait(proc.readline()) for _ in range(2)]
    (escapee,) = pids_in(b"".join(lines), "escapee")
    started.append(escapee)
    wait(proc.kill())
    assert not alive(escapee)


def test_what_the_command_leaves_in_its_cgroup_is_killed_when_it_exits(
    runs_root: str, started: list[int]
) -> None:
    """kill_leftovers (the default): the command daemonized and exited 0;
    its daemon, which left its group, dies before the Result comes."""
    result = wait(procwork.run(DAEMONIZE, contain=True))
    assert result.ok
    escapee = int(result.stdout)
    started.append(escapee)
    assert not alive(escapee)


def test_leftovers_kept_stay_in_the_cgroup_which_goes_when_they_end(
    runs_root: str, started: list[int]
) -> None:
    """kill_leftovers=False: the daemon lives on, still in the run's cgroup,
    which is removed once it has ended (watched, not polled)."""
    result = wait(procwork.run(DAEMONIZE, contain=True, kill_leftovers=False))
    escapee = int(result.stdout)
    started.append(escapee)
    assert alive(escapee)
    where = _fs_path(cgroup_of(escapee))
    assert where.startswith(runs_root) and os.path.isdir(where)
    os.kill(escapee, signal.SIGKILL)
    wait(clockwork.sleep(0.05))
    deadline = time.monotonic() + 10
    while os.path.isdir(where) and time.monotonic() < deadline:
        wait(clockwork.sleep(0.05))  # the reactor runs: the watch removes it
    assert not os.path.isdir(where)


def _fs_path(cgroup: str) -> str:
    host = need_cgroups()
    assert host.mountpoint is not None
    return os.path.join(host.mountpoint, cgroup.lstrip("/"))


@pytest.mark.parametrize(
    ("command", "error", "message"),
    [
        pytest.param(
            ["no-such-command-xyz"],
            procwork.CommandNotFound,
            "cannot run 'no-such-command-xyz': command 'no-such-command-xyz' not "
            "found on PATH",
            id="not-found",
        ),
        pytest.param(
            ["/proc/self/status"],
            procwork.NotExecutable,
            "cannot run '/proc/self/status': '/proc/self/status' is not executable "
            "(permission denied)",
            id="not-executable",
        ),
        pytest.param(
            ["/tmp"],
            procwork.NotExecutable,
            "cannot run '/tmp': '/tmp' is a directory, not a program",
            id="a-directory",
        ),
    ],
)
def test_a_command_that_cannot_run_fails_as_it_does_uncontained(
    runs_root: str, command: list[str], error: type[Exception], message: str
) -> None:
    for contain in (False, True):
        with pytest.raises(error, match=re.escape(message)):
            wait(procwork.run(command, contain=contain))


def test_a_script_whose_interpreter_is_missing_is_named_as_uncontained(
    runs_root: str, tmp_path: Path
) -> None:
    script = tmp_path / "tool"
    script.write_text("#!/no/such/interpreter\n")
    script.chmod(0o755)
    messages = []
    for contain in (False, True):
        with pytest.raises(procwork.CommandNotFound) as raised:
            wait(procwork.run([str(script)], contain=contain))
        messages.append(str(raised.value))
        assert raised.value.errno == errno.ENOENT
    assert messages[0] == messages[1]
    assert "its interpreter '/no/such/interpreter'" in messages[1]


def test_a_missing_cwd_fails_as_uncontained(runs_root: str) -> None:
    with pytest.raises(procwork.SpawnError, match="working directory '/nope-x'"):
        wait(procwork.run(["true"], cwd="/nope-x", contain=True))


def test_without_cgroup_kill_the_tree_is_frozen_and_each_member_killed(
    runs_root: str, started: list[int]
) -> None:
    """Kernels before 5.14 have no cgroup.kill: freeze, SIGKILL each member
    (held by a pidfd), thaw. Forced here on a kernel that has it."""
    from tests.support import global_reactor

    containment = _cgroup.runs_containment(global_reactor())
    containment._kill_file = False
    try:
        result = wait(
            procwork.run(program("escapee", "stay"), timeout=1, grace=1, contain=True)
        )
    finally:
        containment._kill_file = True
    (escapee,) = pids_in(result.stdout, "escapee")
    started.append(escapee)
    assert result.timed_out and not alive(escapee)


def test_contain_is_refused_for_a_remote_run() -> None:
    with pytest.raises(ValueError, match="contain=True runs a command here"):
        procwork.run(["true"], host="nobody@localhost", contain=True)


def test_procwork_run_contain_kills_the_daemon_at_its_timeout(
    started: list[int],
) -> None:
    """`procwork run --contain --timeout`: exit 124, and no daemon left."""
    need_cgroups()
    done = subprocess.run(
        [PY, "-m", "procwork", "run", "--contain", "--timeout", "1", "--grace", "1",
         "--max-output", "4096", "--", *program("escapee", "stay")],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 124
    (escapee,) = pids_in(done.stdout, "escapee")
    started.append(escapee)
    assert gone_within(escapee, 2.0)


@pytest.mark.slow
def test_a_sigkilled_program_takes_its_contained_daemons_along(
    started: list[int],
) -> None:
    """The lifeline kills the program's cgroups whole when it dies: daemons
    that left their group die too (within its 2 s), and its cgroups go."""
    need_cgroups()
    child = subprocess.Popen(
        program("contained_runs", "3"),
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        escapees = [int(child.stdout.readline().split()[1]) for _ in range(3)]
        started.extend(escapees)
        root = child.stdout.readline().split()[1]
        assert all(alive(p) for p in escapees) and os.path.isdir(root)
        child.kill()
        child.wait(timeout=10)
        assert all(gone_within(p, 2.0) for p in escapees)
        assert wait_gone(root, 5.0), f"{root} outlived its program"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)


@pytest.mark.slow
def test_three_hundred_contained_runs_under_load_leave_no_daemon_and_no_cgroup(
    runs_root: str, started: list[int]
) -> None:
    """Stress: each run's shell daemonizes a sleep and exits, or is timed out
    while its daemon runs, 16 at a time, next to two CPU spinners. Every
    run ends (each wait bounded), every daemon is dead when its Result
    comes, and no cgroup is left."""

    def one(i: int) -> Any:
        if i % 3 == 0:
            command = ["sh", "-c", "setsid sh -c 'sleep 60 & echo $!'; sleep 60"]
            result = yield procwork.run(command, contain=True, timeout=0.2, grace=0.2)
        else:
            result = yield procwork.run(DAEMONIZE, contain=True)
        return result

    scheduler = procwork.scheduler()
    cap = scheduler.max_running
    scheduler.set_max_running(16)
    try:
        with cpu_load():
            results = wait(clockwork.gather(*[one(i) for i in range(300)]), 240)
    finally:
        scheduler.set_max_running(cap)
    # A run timed out before its shell printed has no pid to check: whatever
    # it started is then checked by its cgroup's removal (runs_root).
    escapees = [int(r.stdout.split()[0]) for r in results if r.stdout.split()]
    started.extend(escapees)
    assert all(r.stdout for r in results if not r.timed_out)
    assert [p for p in escapees if alive(p)] == []
    assert sum(r.timed_out for r in results) == 100


def test_where_cgroups_cannot_be_had_contained_runs_use_process_groups_said_once(
    monkeypatch: pytest.MonkeyPatch, started: list[int]
) -> None:
    """The fallback, forced here whatever the machine: contain=True never
    fails for want of cgroups; the runs are killed by process group as
    without it (so the daemon that left it lives on), and the reason is
    logged once, not at every run."""
    import weakref

    from tests.support import observing

    why = "no cgroup2 hierarchy is mounted (/proc/self/mountinfo)"
    monkeypatch.setattr(_cgroup, "discover", lambda: _cgroup.Host(None, why))
    monkeypatch.setattr(_cgroup, "_runs", weakref.WeakKeyDictionary())
    logged: list[dict[str, Any]] = []
    with observing(logged.append):
        results = [
            wait(
                procwork.run(
                    program("escapee", "stay"), timeout=0.5, grace=1, contain=True
                )
            )
            for _ in range(2)
        ]
    escapees = [pids_in(r.stdout, "escapee")[0] for r in results]
    mains = [pids_in(r.stdout, "main")[0] for r in results]
    started.extend(escapees)
    assert all(r.timed_out for r in results)
    assert all(gone_within(p, 2.0) for p in mains)
    assert all(alive(p) for p in escapees)
    said = [e for e in logged if "are not available" in str(e.get("log_format"))]
    assert len(said) == 1
    assert said[0]["why"] == why
