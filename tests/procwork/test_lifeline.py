"""The lifeline: procwork's children die with the program, however it dies.

With :func:`procwork.enable_lifeline` (always on in ``procwork run`` and
``procwork monitor``, and automatic when a child is spawned from a thread
other than the main one), a SIGKILLed program's children and everything in
their process groups are gone within 2 s. The lock a monitor holds per
configuration (its path, its wait) is here too; ``procwork run``'s lifeline is
``tests/cli/test_run_lifeline.py``, the monitor's ``tests/monitor/test_lock.py``.

Every test runs real processes in child programs, every wait has a bound, and
whatever a test started is SIGKILLed by pid at its end.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from procwork import _lifeline
from tests.support import (
    ROOT,
    alive,
    child_env,
    cpu_load,
    group_members,
    marked_processes,
    program,
    program_child,
)
from tests.support.lifeline import (
    STUBBORN_TREE,
    TREE,
    groups_gone,
    ignores,
    poll,
    read_line,
)

# -- helpers ---------------------------------------------------------------------


# -- the library option --------------------------------------------------------------


@pytest.mark.slow
def test_a_sigkilled_program_with_the_lifeline_takes_children_and_grandchildren_along(
    marker: str,
) -> None:
    """SIGKILL of a program that enabled the lifeline: within 2 s every process
    of its children's groups is gone, SIGTERM-ignoring ones included (they get
    SIGKILL after the lifeline's short grace), and the lifeline has exited."""
    with program_child("lifeline", "parent", marker, TREE, STUBBORN_TREE) as parent:
        *pgids, helper = map(int, read_line(parent).split())
        assert poll(lambda: all(len(group_members(g)) == 3 for g in pgids), 10)
        parent.kill()
        parent.wait(timeout=10)
        assert groups_gone(pgids), [group_members(g) for g in pgids]
        assert poll(lambda: not alive(helper), 5), "the lifeline did not exit"


@pytest.mark.slow
def test_the_lifeline_holds_no_descriptor_of_the_program_but_its_pipe(
    marker: str,
) -> None:
    """The helper runs in its own session with stdin, stdout and stderr on
    /dev/null and one pipe: a reader of the program's output is not kept
    waiting by it, and the terminal's signals don't reach it."""
    with program_child("lifeline", "parent", marker, "sleep 300") as parent:
        pgid, helper = map(int, read_line(parent).split())
        try:
            last: dict[int, str] = {}

            def settled() -> bool:
                """The helper's table is /dev/null on 0-2 and one pipe."""
                last.clear()
                for fd in os.listdir(f"/proc/{helper}/fd"):
                    try:
                        last[int(fd)] = os.readlink(f"/proc/{helper}/fd/{fd}")
                    except FileNotFoundError:  # closed while we looked
                        return False
                others = [target for fd, target in last.items() if fd > 2]
                return (
                    {fd: last.get(fd) for fd in (0, 1, 2)}
                    == dict.fromkeys((0, 1, 2), "/dev/null")
                    and len(others) == 1
                    and others[0].startswith("pipe:")
                )

            # While the interpreter starts, it holds its script and the
            # modules it imports (.py, .so) open for a moment: wait (bounded)
            # for the steady state. A descriptor the helper kept for good
            # never goes, and the wait fails showing the helper's table.
            assert poll(settled, 10), last
            assert os.getsid(helper) == helper != os.getsid(parent.pid)
        finally:
            parent.kill()
            parent.wait(timeout=10)
        assert groups_gone([pgid])


@pytest.mark.slow
def test_signals_aimed_at_the_programs_group_do_not_defeat_the_lifeline(
    marker: str,
) -> None:
    """A program that handles INT, TERM, HUP and QUIT itself and lives on
    after them (sent to its whole process group, as a terminal does) keeps its
    lifeline: SIGKILLed afterwards, its children still die within 2 s."""
    child = subprocess.Popen(
        program("lifeline", "handles-signals", marker, TREE),
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a group of its own that we can signal
    )
    try:
        pgid, helper = map(int, read_line(child).split())
        # Signals aimed at the helper itself wait until it has started up.
        assert poll(lambda: ignores(helper, signal.SIGTERM), 10)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            os.killpg(child.pid, sig)
        os.kill(helper, signal.SIGTERM)  # even aimed at it directly
        time.sleep(0.3)
        assert child.poll() is None and alive(helper)
        child.kill()
        child.wait(timeout=10)
        assert groups_gone([pgid])
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
        assert child.stdout is not None
        child.stdout.close()


@pytest.mark.slow
def test_a_killed_lifeline_is_replaced_at_the_next_spawn_and_covers_every_child(
    marker: str,
) -> None:
    """If the helper itself is SIGKILLed, the program's next spawn notices the
    broken pipe, reaps the dead helper (no zombie) and starts a new one that
    knows every live child: children from before and after both die with the
    program."""
    with program_child("lifeline", "replaced", marker, TREE) as parent:
        first, second, old, new, zombie = read_line(parent).split()
        pgids = [int(first), int(second)]
        assert old != new
        assert zombie == "False", "the dead helper was not reaped"
        assert poll(lambda: all(len(group_members(g)) == 3 for g in pgids), 10)
        parent.kill()
        parent.wait(timeout=10)
        assert groups_gone(pgids)


@pytest.mark.slow
def test_a_lifeline_that_falls_behind_never_blocks_a_spawn_and_loses_no_record(
    marker: str,
) -> None:
    """With the helper stopped (SIGSTOP) and its pipe full, registrations pile
    up in the program instead of blocking it; once the helper runs again they
    reach it in order, and children registered before and after the backlog
    all die with the program."""
    with program_child("lifeline", "backlog", marker, TREE) as parent:
        first, second, backlog, left, quick = read_line(parent).split()
        pgids = [int(first), int(second)]
        assert int(backlog) > 0 and int(left) == 0 and quick == "True"
        assert poll(lambda: all(len(group_members(g)) == 3 for g in pgids), 10)
        parent.kill()
        parent.wait(timeout=10)
        assert groups_gone(pgids)


@pytest.mark.timeout(330)  # pytest's 120 s: below what a loaded machine takes
@pytest.mark.slow
def test_fifty_sigkilled_programs_in_a_row_leave_no_child_behind() -> None:
    """Fifty times over, a program streaming registrations to its lifeline (a
    tree, plus short runs starting and ending all the time) is SIGKILLed at a
    random moment: its tree is gone within 2 s every time."""
    rounds = 50
    done = subprocess.run(
        program("lifeline", "sigkilled-in-a-row", str(rounds)),
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        # A bound against a hang, not a speed: a round costs a fresh Python
        # (the lifeline helper), 1.4 to 2 s on a loaded 2-core machine (90 s
        # failed 3 runs in 4 there).
        timeout=300,
    )
    lines = done.stdout.split("\n")[:-1]
    assert done.returncode == 0, done.stderr
    assert len(lines) == rounds, done.stdout + done.stderr
    assert [line for line in lines if not line.endswith(" gone")] == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "script",
    [TREE, "exec </dev/null; " + TREE, "exec >/dev/null; " + STUBBORN_TREE],
    ids=["pipes kept", "stdin replaced", "stdout replaced, TERM ignored"],
)
def test_a_child_forked_but_not_yet_registered_dies_with_a_sigkilled_program(
    marker: str, script: str
) -> None:
    """A child's group is registered only once it is forked; a SIGKILL in
    between used to leave it running. The pipes made for it, announced
    before the fork, find it and its group (any one of the three is
    enough), within 2 s; a process the program started without procwork
    is left alone."""
    with program_child("lifeline", "unregistered", marker, script) as parent:
        pgid, other = map(int, read_line(parent).split())
        try:
            assert poll(lambda: len(group_members(pgid)) == 3, 10)
            parent.kill()
            parent.wait(timeout=10)
            assert groups_gone([pgid]), group_members(pgid)
            assert alive(other)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(other, signal.SIGKILL)


@pytest.mark.timeout(330)  # pytest's 120 s: below what a loaded machine takes
@pytest.mark.slow
def test_fifty_sigkills_landing_during_bursts_of_200_spawns_leave_no_orphan(
    marker: str,
) -> None:
    """Under two CPU spinners (a loaded machine widens every window), fifty
    programs spawning bursts of 200 children are SIGKILLed at a random
    moment of their burst, so that a child is being started nearly every time: no
    child of any of them is alive 2 s later. (Before the pipes were
    announced, one child was left running in about 1 kill in 4 here.)"""
    rounds, burst = 50, 200
    try:
        with cpu_load(2):
            done = subprocess.run(
                program("lifeline", "bursts", marker, str(rounds), str(burst)),
                cwd=ROOT,
                env=child_env(),
                capture_output=True,
                text=True,
                timeout=300,  # against a hang: 110 s seen on a loaded machine
            )
    finally:
        for leftover in marked_processes(marker):
            os.kill(leftover, signal.SIGKILL)
    assert done.returncode == 0, done.stderr
    counts = [tuple(map(int, line.split())) for line in done.stdout.splitlines()]
    assert len(counts) == rounds, done.stdout + done.stderr
    assert all(spawned < burst for spawned, _ in counts), "a burst ended first"
    assert [orphans for _, orphans in counts] == [0] * rounds


def test_a_reactor_driven_from_a_worker_thread_gets_the_lifeline_on_its_own(
    marker: str,
) -> None:
    """A program whose reactor runs in a worker thread (its main thread blocked
    in join()) can't install signal handlers, so SIGTERM kills it on the spot:
    spawning from that thread starts the lifeline without being asked, and the
    long child is gone within 2 s of the SIGTERM."""
    with program_child("lifeline", "worker-thread", marker, TREE) as program:
        pgid = int(read_line(program))
        assert poll(lambda: len(group_members(pgid)) == 3, 10)
        program.send_signal(signal.SIGTERM)
        assert program.wait(timeout=10) == -signal.SIGTERM
        assert groups_gone([pgid])


def test_a_forked_child_does_not_keep_the_lifeline_from_seeing_the_parent_die(
    marker: str,
) -> None:
    """A plain fork() of the program (multiprocessing, say) closes its copy of
    the pipe: the parent's death still fires the lifeline while the fork lives,
    and the fork's own spawns never tell the parent's lifeline anything."""
    with program_child("lifeline", "forks", marker, TREE) as parent:
        pgid, fork = map(int, read_line(parent).split())
        try:
            assert poll(lambda: len(group_members(pgid)) == 3, 10)
            parent.kill()
            parent.wait(timeout=10)
            assert groups_gone([pgid])
            assert alive(fork)
        finally:
            os.kill(fork, signal.SIGKILL)


# -- the lock's path and its waiting -----------------------------------------------


def test_the_lock_path_derives_from_the_configs_real_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One lock per configuration file, however it is named on the command
    line (relative, through a symlink), another for the built-in config; in
    $XDG_RUNTIME_DIR/procwork/ when it is set."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    config = tmp_path / "a.toml"
    config.write_text("")
    (tmp_path / "link.toml").symlink_to(config)
    monkeypatch.chdir(tmp_path)
    path = _lifeline.default_lock_path(str(config))
    assert path.parent == tmp_path / "run" / "procwork"
    assert re.fullmatch(r"monitor-a-[0-9a-f]{16}\.lock", path.name)
    assert _lifeline.default_lock_path("a.toml") == path
    assert _lifeline.default_lock_path("link.toml") == path
    builtin = _lifeline.default_lock_path(None)
    assert builtin != path and builtin.name.startswith("monitor-built-in-")


def test_without_a_runtime_dir_the_lock_is_under_run_for_root_else_per_user_tmp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No $XDG_RUNTIME_DIR: /run/procwork/ for root, otherwise a directory of
    the user's own in the temporary directory."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert _lifeline.default_lock_path(None).parent == Path("/run/procwork")
    monkeypatch.setattr(os, "geteuid", lambda: 1234)
    parent = _lifeline.default_lock_path(None).parent
    assert parent.name == "procwork-1234"


def test_taking_a_held_lock_waits_its_bound_then_names_file_and_holder(
    tmp_path: Path,
) -> None:
    """A second take of the lock fails after the wait with AlreadyRunning (a
    ProcworkError and a BlockingIOError) naming the file and the holder's
    pid; once the holder lets go it succeeds."""
    lock = tmp_path / "sub" / "x.lock"
    held = _lifeline.hold_instance_lock(lock)
    try:
        assert lock.read_text() == f"{os.getpid()}\n"
        with pytest.raises(
            BlockingIOError,
            match=rf"pid {os.getpid()} holds the lock {re.escape(str(lock))} "
            r"\(waited 0\.1 s\)",
        ) as caught:
            _lifeline.hold_instance_lock(lock, wait=0.1)
        assert isinstance(caught.value, _lifeline.AlreadyRunning)
    finally:
        os.close(held)
    os.close(_lifeline.hold_instance_lock(lock, wait=0.1))


def test_a_lock_held_after_its_monitor_died_is_blamed_on_that_monitors_lifeline(
    tmp_path: Path,
) -> None:
    """When the pid in the lock file has exited (the monitor was SIGKILLed and
    its lifeline still holds the lock while it stops the services), the
    error says so."""
    lock = tmp_path / "x.lock"
    held = _lifeline.hold_instance_lock(lock)
    try:
        gone = subprocess.Popen(["true"])
        gone.wait(timeout=10)
        os.pwrite(held, f"{gone.pid}\n".encode(), 0)
        with pytest.raises(
            _lifeline.AlreadyRunning,
            match=rf"pid {gone.pid} \(exited; its lifeline is still stopping its "
            r"services\) holds the lock",
        ):
            _lifeline.hold_instance_lock(lock, wait=0.05)
    finally:
        os.close(held)
