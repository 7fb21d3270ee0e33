"""Helpers of the lifeline's tests: trees of processes, and waits on them.

The lifeline's tests (``tests/procwork/test_lifeline.py``, and those of
``procwork run`` and the monitor's lock) start shells with a unique ``$0``
(the ``marker`` fixture of ``tests/conftest.py``), kill the program that
started them, and wait (bounded) for the shells' process groups to go.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.support import alive, argv_of, group_members, readable

#: The bound of the issue: a dead parent's children are gone within this.
GONE_WITHIN = 2.0


def ignores(pid: int, sig: signal.Signals) -> bool:
    """True once process ``pid`` ignores ``sig`` (SigIgn in /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("SigIgn:"):
                return bool(int(line.split()[1], 16) & (1 << (sig - 1)))
    return False


def running_with(marker: str) -> list[int]:
    """Live shells (``sh -c SCRIPT MARKER``) with ``marker`` as their $0."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        args = argv_of(name)
        if args and args[0] == b"sh" and marker.encode() in args and alive(int(name)):
            found.append(int(name))
    return found


def whole_tree(marker: str, timeout: float = 20) -> int:
    """The group of the shell started with ``marker`` as its $0 (``sh -c
    TREE marker``), once its whole tree runs: the shell and both sleeps,
    exec'd.

    Not before: dash, started with ``-c``, catches SIGINT, and so does its
    child between fork and exec. A SIGINT that lands on the shell before
    its foreground sleep runs, or on that child before it execs, is lost: the
    shell waits for a sleep that never got it (11 of 300 tests hung so on a
    2-core machine). A test that signals the tree signals it whole.
    """
    assert poll(lambda: running_with(marker), timeout)
    pgid = os.getpgid(running_with(marker)[0])

    def whole() -> bool:
        members = group_members(pgid)
        sleeps = [p for p in members if (argv_of(p) or [b""])[0] == b"sleep"]
        return len(members) == 3 and len(sleeps) == 2

    assert poll(whole, timeout)
    return pgid


def poll(probe: object, timeout: float) -> bool:
    """Call ``probe()`` every 10 ms until it is true; False after ``timeout`` s."""
    assert callable(probe)
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def groups_gone(pgids: list[int], timeout: float = GONE_WITHIN) -> bool:
    """True once no process of the groups ``pgids`` is alive (bounded)."""
    return poll(lambda: not any(group_members(g) for g in pgids), timeout)


def read_line(child: subprocess.Popen[str], timeout: float = 30) -> str:
    """The next line ``child`` prints (failing the test after ``timeout`` s)."""
    assert child.stdout is not None
    if not readable(child.stdout, timeout):
        child.kill()
        _, err = child.communicate(timeout=10)
        pytest.fail(f"child printed nothing in {timeout} s; stderr:\n{err}")
    return child.stdout.readline()


# A tree of three processes in one group: a shell, a background sleep and a
# foreground sleep. With `trap '' TERM` all three ignore SIGTERM.
TREE = "sleep 300 & sleep 300"
STUBBORN_TREE = "trap '' TERM; sleep 300 & sleep 300"
