"""``procwork timeout --contain``: the command in a cgroup of its own.

A process that left the command's group (``setsid`` after a double fork)
dies at the timeout and, unlike without ``--contain``, when ``procwork
timeout`` itself is SIGKILLed: its lifeline kills the cgroup whole. No
cgroup is left behind; leftovers let alone are moved out of it first; where
no cgroup can be made, the command runs as without ``--contain``, said only
with ``-v``. Real processes and real cgroups (skipped where procwork may
make none, as ``tests.support.cgroups.need_cgroups`` says); every wait
bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from procwork._cgroup import PARENT_VARIABLE
from tests.support import (
    PROCWORK_TIMEOUT,
    ROOT,
    alive,
    child_env,
    cpu_load,
    modules_imported_by,
    start_command,
)
from tests.support.cgroups import kill_group, need_cgroups, wait_gone
from tests.support.lifeline import poll, running_with

pytestmark = pytest.mark.slow  # every test starts a Python or more


#: ``sh -c ESCAPES MARKER FILE``: a subshell starts ``setsid sh`` in the
#: background and exits, so that shell is orphaned in a session of its own
#: (out of the command's group); it writes its pid and its cgroup v2 path to
#: FILE, and sleeps.
ESCAPES = (
    "(setsid sh -c '"
    'echo $$ >"$1.tmp"; grep ^0:: /proc/self/cgroup >>"$1.tmp"; mv "$1.tmp" "$1"; '
    'sleep 300; :\' "$0" "$1" &); '
)


def finish(process: subprocess.Popen[str], timeout: float = 60) -> str:
    """Its stderr, once it ended (killed after ``timeout`` seconds)."""
    try:
        return process.communicate(timeout=timeout)[1] or ""
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate(timeout=10)
        raise


def escapee(report: Path) -> tuple[int, str]:
    """The pid and the cgroup v2 path the escapee wrote to ``report``."""
    assert poll(report.exists, 20), "the escapee never reported"
    pid, cgroup = report.read_text().split("\n", 1)
    return int(pid), cgroup.strip().removeprefix("0::")


def cgroup_directory(wrapper: subprocess.Popen[str]) -> str:
    """Where ``procwork timeout --contain`` (``wrapper``) makes its cgroup."""
    base = need_cgroups().v2_base
    assert base is not None
    return os.path.join(base, f"procwork.timeout.{wrapper.pid}")


@pytest.mark.parametrize(
    ("sig", "status"), [("TERM", 124), ("KILL", -signal.SIGKILL)], ids=["TERM", "KILL"]
)
def test_contained_an_escapee_of_the_group_is_in_the_cgroup_and_dies_at_the_timeout(
    sig: str, status: int, marker: str, tmp_path: Path
) -> None:
    """With ``-s KILL`` the cgroup is killed whole, and procwork timeout then
    dies of KILL itself, as coreutils does."""
    need_cgroups()
    report = tmp_path / "escapee"
    command = ["sh", "-c", ESCAPES + "sleep 300", marker, str(report)]
    wrapper = start_command([*PROCWORK_TIMEOUT, "--contain", "-s", sig, "3", *command])
    try:
        err = finish(wrapper)
        assert wrapper.returncode == status, err
        pid, cgroup = escapee(report)
        assert cgroup.endswith(f"/procwork.timeout.{wrapper.pid}")
        assert not alive(pid), "procwork timeout returned with the escapee gone"
        assert not os.path.exists(cgroup_directory(wrapper)), "no cgroup is left"
    finally:
        if report.exists():
            kill_group(escapee(report)[0])


@pytest.mark.parametrize("contain", [True, False], ids=["contained", "not-contained"])
def test_sigkilled_procwork_timeout_takes_the_escapee_along_only_when_contained(
    contain: bool, marker: str, tmp_path: Path
) -> None:
    """Its lifeline kills the command's group either way; the escapee, in a
    session of its own, dies only with the cgroup (killed whole), which is
    then removed. Without ``--contain`` it runs on (killed by the test)."""
    if contain:
        need_cgroups()
    report = tmp_path / "escapee"
    script = ESCAPES + "sleep 300"
    options = ["--contain"] if contain else []
    wrapper = start_command(
        [*PROCWORK_TIMEOUT, *options, "300", "sh", "-c", script, marker, str(report)],
        quiet=True,  # the escapee, left running, would hold the pipes
    )
    pid = 0
    try:
        pid, _ = escapee(report)
        wrapper.kill()
        wrapper.wait(timeout=10)
        if contain:
            assert poll(lambda: not alive(pid), 10), "the lifeline killed the escapee"
            assert wait_gone(cgroup_directory(wrapper)), "and removed the cgroup"
        else:
            # The lifeline acts within GRACE (0.5 s) of the death: well past it.
            assert not poll(lambda: not alive(pid), 2), "a group does not hold it"
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
            wrapper.wait(timeout=10)
        if pid:
            kill_group(pid)


def test_contained_leftovers_of_a_command_that_exited_are_moved_out_and_run_on(
    marker: str, tmp_path: Path
) -> None:
    """As coreutils leaves them alone, so does ``--contain``: they go back to
    procwork timeout's own cgroup, and the command's cgroup is removed."""
    need_cgroups()
    report = tmp_path / "escapee"
    # The command exits once the escapee reported from inside the cgroup.
    script = ESCAPES + 'while [ ! -e "$1" ]; do sleep 0.01; done; exit 0'
    argv = [*PROCWORK_TIMEOUT, "--contain", "300", "sh", "-c", script, marker]
    argv.append(str(report))
    wrapper = start_command(argv, quiet=True)
    pid = 0
    try:
        assert wrapper.wait(timeout=60) == 0
        pid, cgroup = escapee(report)
        assert cgroup.endswith(f"/procwork.timeout.{wrapper.pid}")
        assert alive(pid), "the leftover runs on"
        with open(f"/proc/{pid}/cgroup") as f:
            assert "procwork.timeout" not in f.read()
        assert not os.path.exists(cgroup_directory(wrapper))
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
            wrapper.wait(timeout=10)
        if pid:
            kill_group(pid)


def test_without_cgroups_contain_falls_back_to_groups_and_says_so_only_with_v() -> None:
    env = child_env() | {PARENT_VARIABLE: "/nonexistent/procwork-parent"}
    quiet = start_command([*PROCWORK_TIMEOUT, "--contain", "5", "true"], env=env)
    assert (finish(quiet), quiet.returncode) == ("", 0)
    verbose = start_command(
        [*PROCWORK_TIMEOUT, "-v", "--contain", "5", "true"], env=env
    )
    err = finish(verbose)
    assert verbose.returncode == 0
    assert err.startswith("procwork timeout: not contained by a cgroup ("), err
    assert "/nonexistent/procwork-parent" in err and "process groups only" in err


def test_contain_imports_no_twisted(tmp_path: Path) -> None:
    """The cgroup code it needs is standard library, loaded by path: the
    start stays free of Twisted with ``--contain`` too."""
    imported = modules_imported_by(
        [*PROCWORK_TIMEOUT, "--contain", "5", "true"], tmp_path
    )
    assert "procwork.cli._timeout_cgroup" in imported
    assert not {m for m in imported if m.split(".")[0] in ("twisted", "untwisted")}
    assert not {m for m in imported if m.startswith("procwork._cgroup")}


ROUNDS = 60
SPREAD = 0.4


def test_sigkilled_at_any_moment_of_its_start_it_leaves_no_process_and_no_cgroup(
    marker: str, tmp_path: Path
) -> None:
    """60 times under CPU load, ``procwork timeout --contain`` is SIGKILLed 0
    to 0.4 s after it was started: before its cgroup exists, between its
    making and the command's entry, once the escapee runs. Each time, the
    lifeline (told of the cgroup before it is made) kills what started and
    removes the cgroup: no shell and no ``procwork.timeout.*`` cgroup is
    left."""
    base = need_cgroups().v2_base
    assert base is not None
    command = ["sh", "-c", ESCAPES + "sleep 300", marker]
    pids = []
    with cpu_load():
        for round_ in range(ROUNDS):
            report = str(tmp_path / f"escapee-{round_}")
            wrapper = subprocess.Popen(
                [*PROCWORK_TIMEOUT, "--contain", "300", *command, report],
                cwd=ROOT,
                env=child_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            pids.append(wrapper.pid)
            time.sleep(SPREAD * round_ / ROUNDS)
            wrapper.kill()
            wrapper.wait(timeout=60)
    assert poll(lambda: running_with(marker) == [], 10)
    left = [os.path.join(base, f"procwork.timeout.{pid}") for pid in pids]
    assert poll(lambda: not any(os.path.exists(path) for path in left), 10), [
        path for path in left if os.path.exists(path)
    ]
