"""The ``sh`` wrapper a remote command runs in, and its watcher.

Run here, with no SSH: the test plays the session's sshd. The wrapper leads
a process group of its own and says so; its watcher kills that group when
the session ends (EOF on stdin, or its parent gone).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Any

import pytest

from procwork import _remote
from tests.support import (
    PY,
    cpu_load,
    drive_until,
    group_members,
    readable,
    unique_token,
)
from tests.support.remote import kill_marked, nothing_left, sleeper_tree, watchers_of
from tests.support.sshd import remote_marker_pids

pytestmark = pytest.mark.usefixtures("no_load_gate")


# -- the wrapper ------------------------------------------------------------------


def wrapper(argv: list[str], *, new_session: bool) -> tuple[str, str]:
    """Run WRAPPER here as sshd would (or not) start it: (marker word, stdout)."""
    marker = "procwork-0123456789abcdef"
    done = subprocess.run(
        ["sh", "-c", _remote.WRAPPER, marker, "0", "", "1", "2", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        start_new_session=new_session,
    )
    first, _, _ = done.stderr.partition("\n")
    assert first.startswith(marker + " "), done.stderr
    return first.split()[1], done.stdout


SHOW_GROUP = ["sh", "-c", "echo $$ $(ps -o pgid= -p $$)"]


def test_the_wrapper_execs_the_command_as_the_group_leader_sshd_made_it() -> None:
    """In a session of its own (what sshd gives every session), the command
    keeps the wrapper's pid, which is the group id it reports."""
    pgid, out = wrapper(SHOW_GROUP, new_session=True)
    assert out.split() == [pgid, pgid]


def test_the_wrapper_makes_a_group_with_setsid_when_not_a_leader() -> None:
    """Started inside someone else's group, the command gets a session and
    group of its own through setsid, in place: the id reported."""
    pgid, out = wrapper(SHOW_GROUP, new_session=False)
    assert out.split() == [pgid, pgid]
    assert int(pgid) != os.getpgid(0)


# -- the wrapper's watcher, here (the test is its sshd) --------------------------------


WRAPPER_MARKER = "procwork-0123456789abcdef"


def wrapper_argv(watch: str) -> list[str]:
    """``sh -c WRAPPER`` up to the command's argv: grace 1 s, watching ``watch``
    (0: the session's stdin, else polling every that many seconds)."""
    return ["sh", "-c", _remote.WRAPPER, WRAPPER_MARKER, "0", "", "1", watch]


def start_wrapper(
    argv: list[str], *, watch: str, **popen: Any
) -> subprocess.Popen[bytes]:
    """WRAPPER started as sshd starts it (a session of its own)."""
    return subprocess.Popen(
        [*wrapper_argv(watch), *argv],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **popen,
    )


@pytest.mark.slow
def test_the_watcher_kills_the_group_when_the_session_stdin_closes_under_it() -> None:
    """Without input, the command has /dev/null and the watcher the session's
    stdin: it closes while the command runs only when sshd dies (or the
    channel closes). Then SIGTERM, and SIGKILL 1 s (grace) later."""
    marker = unique_token()
    wrapper = start_wrapper(
        sleeper_tree(marker, ignore_term=True), watch="0", stdin=subprocess.PIPE
    )
    try:
        assert drive_until(lambda: len(remote_marker_pids(marker)) >= 3, 30)
        assert wrapper.stdin is not None
        wrapper.stdin.close()
        assert nothing_left(marker, 15)
        assert wrapper.wait(10) == -signal.SIGKILL
    finally:
        kill_marked(marker)
        with contextlib.suppress(subprocess.TimeoutExpired):
            wrapper.wait(10)


@pytest.mark.slow
@pytest.mark.parametrize("watch", ["0", "1"], ids=["stdin", "polling"])
def test_the_watcher_sees_its_session_end_however_soon_it_ends(watch: str) -> None:
    """100 wrappers, one after the other, under CPU load; each session ends
    (its stdin closed, or, for a polling watcher (every 1 s here), the parent
    that started it SIGKILLed) the moment its group id is read, maybe before
    its watcher has run a line: every group dies whole."""
    marker = unique_token()
    argv = [*wrapper_argv(watch), "sh", "-c", "sleep 1000; : $0", marker]
    if watch == "1":
        # The wrapper's parent, as sshd is: a shell that makes it a session
        # (setsid in place) and waits.
        argv = ["sh", "-c", 'setsid "$@" & wait', "sshd", *argv]
    groups: list[int] = []
    try:
        with cpu_load():
            for _ in range(100):
                session = subprocess.Popen(
                    argv,
                    stdin=subprocess.PIPE if watch == "0" else subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                    start_new_session=watch == "0",
                )
                assert session.stderr is not None
                try:
                    assert readable(session.stderr, 30)
                    word, pgid = session.stderr.readline().split()
                    assert word == WRAPPER_MARKER
                    groups.append(int(pgid))
                    if session.stdin is not None:
                        session.stdin.close()  # the command dies of it
                    else:
                        session.kill()
                    session.wait(30)  # reaped, as sshd's parent would: no zombie
                finally:
                    if session.poll() is None:
                        session.kill()
                        session.wait(30)
                    session.stderr.close()
            assert drive_until(lambda: not any(group_members(g) for g in groups), 60), [
                g for g in groups if group_members(g)
            ]
    finally:
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)


def test_the_watcher_leaves_alone_what_a_finished_command_left_running() -> None:
    """A normal end: sshd reaps the command, then closes the session's stdin;
    the watcher sees the command gone and exits, killing nothing (what the
    command left running is kill_leftovers' business, on the client's side)."""
    marker = unique_token()
    job = f'"{PY}" -c "import time; time.sleep(1000)  # {marker}" &'
    wrapper = start_wrapper(["sh", "-c", job], watch="0", stdin=subprocess.PIPE)
    try:
        assert wrapper.wait(10) == 0
        assert drive_until(lambda: len(remote_marker_pids(marker)) == 1, 30)
        assert watchers_of(wrapper.pid)
        assert wrapper.stdin is not None
        wrapper.stdin.close()
        assert drive_until(lambda: not watchers_of(wrapper.pid), 10)
        assert len(remote_marker_pids(marker)) == 1
    finally:
        kill_marked(marker)
