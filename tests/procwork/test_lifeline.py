"""The lifeline: procwork's children die with the program, however it dies.

With :func:`procwork.enable_lifeline` (always on in ``procwork run`` and
``procwork monitor``, and automatic when a child is spawned from a thread
other than the main one), a SIGKILLed program's children and everything in
their process groups are gone within 2 s. A monitor holds a lock per
configuration, which its lifeline keeps until the old services are dead, so a
restarted monitor never runs a second copy of a service; it survives SIGHUP.

Every test runs real processes in child programs, every wait has a bound, and
whatever a test started is SIGKILLed by pid at its end.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from procwork import _lifeline
from tests.support import (
    PY,
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
    GONE_WITHIN,
    STUBBORN_TREE,
    TREE,
    groups_gone,
    ignores,
    poll,
    read_line,
    running_with,
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
        timeout=90,
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
                timeout=120,
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


# -- procwork run ---------------------------------------------------------------------


def procwork_run(*args: str, cwd: Path = ROOT) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PY, "-m", "procwork", "run", *args],
        cwd=cwd,
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def tree_of(marker: str, timeout: float = 20) -> int:
    """The group of the shell started with ``marker`` as its $0, once its
    whole tree (the shell and two sleeps) runs."""
    assert poll(lambda: running_with(marker), timeout)
    pgid = os.getpgid(running_with(marker)[0])
    assert poll(lambda: len(group_members(pgid)) == 3, timeout)
    return pgid


@pytest.mark.slow
def test_procwork_run_sigkilled_takes_the_commands_whole_tree_along(
    marker: str,
) -> None:
    """``procwork run -- sh -c 'sleep 300 & sleep 300'`` SIGKILLed: the shell
    and both sleeps are gone within 2 s."""
    run = procwork_run("--", "sh", "-c", TREE, marker)
    try:
        pgid = tree_of(marker)
        run.kill()
        run.wait(timeout=10)
        assert groups_gone([pgid])
    finally:
        if run.poll() is None:
            run.kill()
        run.communicate(timeout=10)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_procwork_run_interrupted_kills_the_tree_and_exits_128_plus_n(
    sig: signal.Signals, marker: str
) -> None:
    """Ctrl-C (SIGINT) and SIGTERM: the command's tree is terminated and
    ``procwork run`` exits 128+N, quietly (no traceback)."""
    run = procwork_run("--", "sh", "-c", TREE, marker)
    try:
        pgid = tree_of(marker)
        run.send_signal(sig)
        _, err = run.communicate(timeout=30)
        assert run.returncode == 128 + sig
        assert "Traceback" not in err
        assert groups_gone([pgid])
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate(timeout=10)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGQUIT])
def test_procwork_run_hung_up_or_quit_kills_the_tree_and_exits_128_plus_n(
    sig: signal.Signals, tmp_path: Path, marker: str
) -> None:
    """SIGHUP (the terminal closed) and SIGQUIT: the command's tree is gone
    within 2 s and the shell sees status 128+N. (untwisted turns these signals
    into SystemExit(128+N) when the program has no handler of its own; where
    it does not yet, ``procwork run`` dies of the signal and its lifeline
    kills the tree. Either way the tree dies and a shell reports 128+N.)"""
    run = procwork_run("--", "sh", "-c", TREE, marker, cwd=tmp_path)  # any core
    try:
        pgid = tree_of(marker)
        run.send_signal(sig)
        run.communicate(timeout=30)
        assert run.returncode in (128 + sig, -sig)
        assert groups_gone([pgid])
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate(timeout=10)


# -- procwork monitor ----------------------------------------------------------------


def monitor_config(
    tmp_path: Path, marker: str, services: int = 3, script: str = TREE
) -> Path:
    config = tmp_path / "monitor.toml"
    text = "[monitor]\nhttp = false\nsummary_every = 0\n"
    for n in range(services):
        text += textwrap.dedent(
            f"""
            [[service]]
            name = "s{n}"
            command = ["sh", "-c", "{script}", "{marker}"]
            """
        )
    config.write_text(text)
    return config


def start_monitor(config: Path, lock: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [PY, "-m", "procwork", "monitor", str(config), "--lock-file", str(lock)],
            cwd=ROOT,
            env=child_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def service_groups(marker: str) -> set[int]:
    groups = set()
    for pid in running_with(marker):
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            continue
    return groups


def has_open(pid: int, path: Path) -> bool:
    """True if process ``pid`` has ``path`` open."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                return True
    return False


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


@pytest.mark.e2e
@pytest.mark.slow
def test_a_sigkilled_monitor_takes_its_services_along_and_a_restart_never_duplicates(
    tmp_path: Path, marker: str
) -> None:
    """SIGKILL of ``procwork monitor`` with three services (each a shell with
    two sleeps, all ignoring SIGTERM): every service process is gone within
    2 s. A second monitor of the same config, already waiting for the lock
    when the first is killed, gets it only once the old lifeline has killed
    the old services: at no moment do more than three run, then three do."""
    config = monitor_config(tmp_path, marker, script=STUBBORN_TREE)
    lock = tmp_path / "monitor.lock"
    old = start_monitor(config, lock, tmp_path / "old.log")
    new: subprocess.Popen[bytes] | None = None
    try:
        assert poll(lambda: len(service_groups(marker)) == 3, 30), (
            tmp_path / "old.log"
        ).read_text()
        groups = sorted(service_groups(marker))
        assert poll(lambda: all(len(group_members(g)) == 3 for g in groups), 10)
        new = start_monitor(config, lock, tmp_path / "new.log")
        assert poll(lambda: has_open(new.pid, lock), 30), "no wait for the lock"
        counts: list[int] = []

        def services_running() -> int:
            counts.append(len(service_groups(marker)))
            return counts[-1]

        old.kill()
        assert poll(
            lambda: (
                services_running() >= 0 and not any(group_members(g) for g in groups)
            ),
            GONE_WITHIN,
        ), "the old services outlived their monitor by 2 s"
        assert poll(lambda: services_running() == 3, 30)
        assert not poll(lambda: services_running() != 3, 1.0)  # and it stays 3
        assert max(counts) == 3
        assert new.poll() is None
        new.send_signal(signal.SIGTERM)
        assert new.wait(timeout=30) == 0
        assert poll(lambda: not running_with(marker), 5)
    finally:
        stop(old)
        if new is not None:
            stop(new)


@pytest.mark.e2e
@pytest.mark.slow
def test_a_second_monitor_of_the_same_config_exits_naming_the_lock_and_its_holder(
    tmp_path: Path, marker: str
) -> None:
    """While a monitor runs a config, another one for it waits a few seconds
    for the lock, then exits 1 with an error naming the lock file and the
    running monitor's pid; the running one is unaffected."""
    config = monitor_config(tmp_path, marker, services=1)
    lock = tmp_path / "monitor.lock"
    first = start_monitor(config, lock, tmp_path / "first.log")
    try:
        assert poll(lambda: len(service_groups(marker)) == 1, 30)
        second = subprocess.run(
            [PY, "-m", "procwork", "monitor", str(config), "--lock-file", str(lock)],
            cwd=ROOT,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert second.stderr == (
            "procwork monitor: another procwork monitor runs this configuration: "
            f"pid {first.pid} holds the lock {lock} (waited 5 s); stop it first, "
            "or give this one another --lock-file\n"
        )
        assert first.poll() is None and len(service_groups(marker)) == 1
    finally:
        stop(first)


@pytest.mark.e2e
@pytest.mark.slow
def test_the_monitor_survives_sighup_logs_it_and_keeps_its_services(
    tmp_path: Path, marker: str
) -> None:
    """SIGHUP (closed terminal, logrotate) does not stop ``procwork monitor``:
    it reloads its (unchanged) configuration and runs on with the same
    services, same pids; SIGTERM still stops it."""
    config = monitor_config(tmp_path, marker, services=1)
    log = tmp_path / "monitor.log"
    monitor = start_monitor(config, tmp_path / "monitor.lock", log)
    try:
        assert poll(lambda: len(service_groups(marker)) == 1, 30)
        groups = service_groups(marker)
        for _ in range(3):
            monitor.send_signal(signal.SIGHUP)
        assert poll(lambda: log.read_text().count("SIGHUP: reloading") >= 1, 10)
        time.sleep(0.3)
        assert monitor.poll() is None
        assert service_groups(marker) == groups
        monitor.send_signal(signal.SIGTERM)
        assert monitor.wait(timeout=30) == 0
    finally:
        stop(monitor)


@pytest.mark.e2e
@pytest.mark.slow
def test_a_monitor_that_cannot_create_its_lock_says_which_and_why(
    tmp_path: Path,
) -> None:
    """A lock file that can't be created (its directory is a file) stops the
    monitor before it starts anything: exit 1, naming the file and the
    reason, and the option that picks another."""
    (tmp_path / "not-a-dir").write_text("")
    lock = tmp_path / "not-a-dir" / "monitor.lock"
    done = subprocess.run(
        [PY, "-m", "procwork", "monitor", "--lock-file", str(lock)],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr == (
        f"procwork monitor: cannot take the single-instance lock {lock}: "
        "File exists; choose another with --lock-file PATH\n"
    )
    assert done.stdout == ""


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
