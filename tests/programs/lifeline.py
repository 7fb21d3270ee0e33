"""Programs whose children must die with them: ``python -m tests.programs.lifeline``.

Run by ``tests/procwork/test_lifeline.py``: ``SCENARIO MARKER [SCRIPT...]``,
where each SCRIPT is run as ``sh -c SCRIPT MARKER`` (the marker is the
shell's ``$0``, so the test finds it in /proc wherever it was re-parented).
Each scenario prints what the test needs on one line (pids, counts) and
then waits to be killed, except the two that fork programs themselves
(``sigkilled-in-a-row`` and ``bursts``), which print one line per round.
"""

from __future__ import annotations

import fcntl
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

import procwork
import untwisted
from procwork import _lifeline
from tests.support import group_members, marked_processes, my_children
from tests.support.lifeline import GONE_WITHIN, ignores


def parent(marker: str, *scripts: str) -> None:
    """Enable the lifeline, start a shell per script; print their pids and
    the lifeline's, and wait for the first."""
    procwork.enable_lifeline()
    procs = [
        procwork.spawn(["sh", "-c", script, marker], priority="critical")
        for script in scripts
    ]
    print(*[p.pid for p in procs], _lifeline.lifeline_pid(), flush=True)
    untwisted.run(procs[0].wait(), timeout=120)


def handles_signals(marker: str, script: str) -> None:
    """Handle INT, TERM, HUP and QUIT and live on; the shell's pid and the
    lifeline's printed, then drive the reactor for ever."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, lambda *args: None)
    procwork.enable_lifeline()
    shell = ["sh", "-c", script, marker]  # $0: the marker
    proc = procwork.spawn(shell, priority="critical")
    print(proc.pid, _lifeline.lifeline_pid(), flush=True)
    while True:
        untwisted.tick(0.05)


def replaced(marker: str, script: str) -> None:
    """SIGKILL the lifeline between two spawns: the second spawn starts a new
    one. Prints both shells, the old and new helper, and whether the old one
    is still a child (a zombie left unreaped)."""
    procwork.enable_lifeline()
    shell = ["sh", "-c", script, marker]  # $0: the marker
    first = procwork.spawn(shell, priority="critical")
    old = _lifeline.lifeline_pid()
    assert old is not None
    os.kill(old, signal.SIGKILL)
    while my_children().get(old) != "Z":
        time.sleep(0.01)
    # The spawn registers on the broken pipe: a new helper takes over.
    second = procwork.spawn(shell, priority="critical")
    new = _lifeline.lifeline_pid()
    print(first.pid, second.pid, old, new, old in my_children(), flush=True)
    untwisted.run(first.wait(), timeout=120)


def backlog(marker: str, script: str) -> None:
    """Stop the helper (SIGSTOP) with its pipe full of registrations, spawn,
    let it go on; print both shells, the backlog, what is left of it once
    the helper caught up, and whether the spawn was quick; then sleep."""
    no_such_group = 2**31 - 1
    procwork.enable_lifeline()
    shell = ["sh", "-c", script, marker]  # $0: the marker
    first = procwork.spawn(shell, priority="critical")
    helper = _lifeline.lifeline_pid()
    assert helper is not None
    while not ignores(helper, signal.SIGTERM):
        time.sleep(0.01)
    line = _lifeline._lifeline
    assert line is not None and line.fd is not None
    fcntl.fcntl(line.fd, fcntl.F_SETPIPE_SZ, 4096)
    os.kill(helper, signal.SIGSTOP)
    started = time.monotonic()
    for _ in range(5000):
        line.send(b"+", no_such_group)
        line.send(b"-", no_such_group)
    pending = len(line.pending)
    second = procwork.spawn(shell, priority="critical")
    blocked_for = time.monotonic() - started
    os.kill(helper, signal.SIGCONT)
    deadline = time.monotonic() + 10
    while line.pending and time.monotonic() < deadline:
        time.sleep(0.05)
        line.send(b"+", no_such_group)
        line.send(b"-", no_such_group)
    print(
        first.pid, second.pid, pending, len(line.pending), blocked_for < 10, flush=True
    )
    time.sleep(120)


def sigkilled_in_a_row(rounds: str) -> None:
    """Fork a parent program ROUNDS times. Each parent enables the lifeline,
    starts a tree, reports its group and churns short runs (their
    registrations and unregistrations stream to the lifeline) until killed at
    a random moment. Prints one line per round: the group, and whether it was
    gone within the bound."""
    for _ in range(int(rounds)):
        report_r, report_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(report_r)
                procwork.enable_lifeline()
                tree = procwork.spawn(
                    ["sh", "-c", "sleep 300 & sleep 300"], priority="critical"
                )
                os.write(report_w, f"{tree.pid}\n".encode())
                while True:
                    untwisted.run(
                        procwork.run(["true"], priority="critical"), timeout=30
                    )
            finally:
                os._exit(1)
        os.close(report_w)
        with os.fdopen(report_r) as report:
            pgid = int(report.readline())
        deadline = time.monotonic() + 10
        while len(group_members(pgid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(random.uniform(0, 0.03))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        deadline = time.monotonic() + GONE_WITHIN
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.01)
        left = group_members(pgid)
        for leftover in left:
            os.kill(leftover, signal.SIGKILL)
        print(pgid, "orphans" if left else "gone", flush=True)


def unregistered(marker: str, script: str) -> None:
    """A spawn whose group never reaches the lifeline (as if the SIGKILL
    landed between the fork and the registration), and a child started
    without procwork; prints both pids and sleeps."""
    procwork.enable_lifeline()
    # As if the SIGKILL landed between the fork and the registration: the
    # child's pipes were announced before the fork, its group never.
    line = _lifeline._lifeline
    assert line is not None
    line.started = lambda proc, pipes: None  # type: ignore[method-assign]
    proc = procwork.spawn(["sh", "-c", script, marker], priority="critical")
    # A child of the program that procwork did not start: not procwork's to kill.
    other = subprocess.Popen(
        ["sleep", "300"], stdout=subprocess.PIPE, start_new_session=True
    )
    print(proc.pid, other.pid, flush=True)
    time.sleep(120)


def bursts(marker: str, rounds_arg: str, burst_arg: str) -> None:
    """ROUNDS times: fork a program that enables the lifeline and spawns a
    burst of BURST children (a ``sleep 300`` run through a symlink named
    MARKER-n, so that /proc finds them wherever they were re-parented),
    telling us of each spawn; SIGKILL it at a random moment of the burst's
    first 0.1 s (a spawn takes 1-10 ms here: one is nearly always under
    way), then print how many spawns it had made and how many marked
    children are alive GONE_WITHIN seconds later (SIGKILLed once counted)."""
    rounds, burst = int(rounds_arg), int(burst_arg)
    links = tempfile.mkdtemp()
    sleep = shutil.which("sleep")
    assert sleep is not None
    for n in range(rounds):
        name = os.path.join(links, f"{marker}-{n}-")
        os.symlink(sleep, name)
        report_r, report_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(report_r)
                procwork.enable_lifeline()
                os.write(report_w, b"r")
                for _ in range(burst):
                    procwork.spawn([name, "300"], priority="critical")
                    os.write(report_w, b".")
                time.sleep(60)
            finally:
                os._exit(1)
        os.close(report_w)
        with os.fdopen(report_r, "rb", buffering=0) as report:
            begun = b""
            while len(begun) < 2:  # "r", then the first spawn's "."
                begun += report.read(2 - len(begun)) or b"!!"
            assert begun == b"r.", begun
            time.sleep(random.uniform(0, 0.1))
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.set_blocking(report.fileno(), False)
            seen = 1 + len(report.read() or b"")
        deadline = time.monotonic() + GONE_WITHIN
        while marked_processes(name) and time.monotonic() < deadline:
            time.sleep(0.02)
        left = marked_processes(name)
        for orphan in left:
            os.kill(orphan, signal.SIGKILL)
        print(seen, len(left), flush=True)
    shutil.rmtree(links)


def worker_thread(marker: str, script: str) -> None:
    """Drive the reactor from a worker thread only (the main thread blocked
    in join()): spawn there, print the shell's pid, wait for it."""

    def work() -> None:
        shell = ["sh", "-c", script, marker]  # $0: the marker
        proc = procwork.spawn(shell, priority="critical")
        print(proc.pid, flush=True)
        untwisted.run(proc.wait(), timeout=120)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()


def forks(marker: str, script: str) -> None:
    """Enable the lifeline, spawn, then fork() a plain child that sleeps;
    print the shell's pid and the fork's, and wait for the shell."""
    procwork.enable_lifeline()
    shell = ["sh", "-c", script, marker]  # $0: the marker
    proc = procwork.spawn(shell, priority="critical")
    fork = os.fork()
    if fork == 0:
        time.sleep(60)
        os._exit(0)
    print(proc.pid, fork, flush=True)
    untwisted.run(proc.wait(), timeout=120)


SCENARIOS: dict[str, Callable[..., None]] = {
    "parent": parent,
    "handles-signals": handles_signals,
    "replaced": replaced,
    "backlog": backlog,
    "sigkilled-in-a-row": sigkilled_in_a_row,
    "unregistered": unregistered,
    "bursts": bursts,
    "worker-thread": worker_thread,
    "forks": forks,
}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]](*sys.argv[2:])
