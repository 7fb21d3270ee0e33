"""A subreaper's orphans, reaped: ``python -m tests.programs.orphans SCENARIO``.

Run by ``tests/procwork/test_orphans.py``. Most scenarios make this process a
subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``), so that the grandchildren its
runs leave behind are re-parented to it, and print one JSON line that the
test checks: what was reaped, what is left, the exit statuses that other
code of the program waited for.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Generator
from typing import Any

from twisted.internet import defer, process, protocol
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.python.failure import Failure

import clockwork
import procwork
import untwisted
from procwork import Result, _lifeline, _orphans

SESSION_LEADER_ORPHAN = (
    "import os, time\n"
    "r, w = os.pipe()\n"
    "if os.fork() == 0:\n"
    "    os.setsid(); os.write(w, b'x'); time.sleep(0.05); os._exit(0)\n"
    "os.read(r, 1)\n"
)
"""A Python whose child calls setsid() and outlives it: an orphan that leads
its own session, like a daemon that forked once. It exits once the child has
left its session, so the kill of its process group never reaches the child."""


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def children() -> dict[int, str]:
    """pid -> state letter of every child of this process, zombies included."""
    found = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                pids = f.read().split()
        except FileNotFoundError:
            continue
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    found[int(pid)] = f.read().rpartition(")")[2].split()[0]
            except OSError:
                pass
    return found


def zombies(keep: Collection[int | None] = ()) -> list[int]:
    return sorted(p for p, s in children().items() if s == "Z" and p not in keep)


def settle(keep: Collection[int] = (), seconds: float = 10) -> list[int]:
    """Drive the reactor until no child is left but those in ``keep`` and the
    lifeline helper, which lives as long as the program (the orphans have
    ended and been reaped); the zombies left but those in ``keep``."""
    deadline = time.monotonic() + seconds
    kept = {*keep, _lifeline.lifeline_pid()}
    while set(children()) - kept and time.monotonic() < deadline:
        untwisted.tick(0.02)
    return zombies(kept)


def reaped() -> int:
    reaper = _orphans.current()
    assert reaper is not None
    return reaper.reaped


def subreaper_detected() -> None:
    become_subreaper()
    before = _orphans.current()
    untwisted.run(procwork.run(["true"]), timeout=30)
    reaper = _orphans.current()
    report = {
        "role": _orphans.reaper_role(),
        "before": before is None,
        "after": reaper is not None and not reaper.all_children,
    }
    print(json.dumps(report))


def ordinary() -> None:
    untwisted.run(procwork.run(["true"]), timeout=30)
    looked = _orphans._auto
    handlers: dict[Any, Any] = process.reapProcessHandlers
    report = {
        "role": _orphans.reaper_role(),
        "looked": looked,
        "explicit": procwork.reap_orphans(all_children=True),
        "reaper": _orphans.current() is not None,
        "hooked": _orphans._HOOK_KEY in handlers,
    }
    print(json.dumps(report))


def subreaper_runs() -> None:
    become_subreaper()
    plain = subprocess.Popen(["sh", "-c", "exit 7"])
    leader = subprocess.Popen(["sh", "-c", "exit 5"], start_new_session=True)
    late = subprocess.Popen(["sh", "-c", "sleep 0.3; exit 9"])
    for _ in range(100):
        run = procwork.run(
            ["sh", "-c", "sleep 0.01 & exit 0"], kill_leftovers=False, timeout=10
        )
        untwisted.run(run, timeout=30)
    left = settle(keep=(plain.pid, leader.pid, late.pid))
    report = {
        "zombies": left,
        "reaped": reaped(),
        "statuses": [plain.wait(10), leader.wait(10), late.wait(10)],
        "children": children(),
    }
    print(json.dumps(report))


def sigchld_alone() -> None:
    _orphans._BACKSTOP = 3600.0
    become_subreaper()
    for _ in range(20):
        run = procwork.run(
            ["sh", "-c", "sleep 0.02 & exit 0"], kill_leftovers=False, timeout=10
        )
        untwisted.run(run, timeout=30)
    print(json.dumps({"zombies": settle(seconds=20), "reaped": reaped()}))


def backstop() -> None:
    become_subreaper()
    report: dict[str, Any] = {}

    def work() -> None:
        for _ in range(10):
            run = procwork.run(
                ["sh", "-c", "sleep 0.01 & exit 0"], kill_leftovers=False, timeout=10
            )
            untwisted.run(run, timeout=30)
        report["handler"] = signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL
        report["zombies"] = settle(seconds=20)
        report["reaped"] = reaped()

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=60)
    print(json.dumps(report))


def session_leader() -> None:
    become_subreaper()
    run = procwork.run([sys.executable, "-c", SESSION_LEADER_ORPHAN], timeout=10)
    untwisted.run(run, timeout=30)
    deadline = time.monotonic() + 1.5  # past a backstop's sweep
    while time.monotonic() < deadline:
        untwisted.tick(0.05)
    left = zombies()
    report = {
        "zombies": len(left),
        "reaped": reaped(),
        "leads": [os.getsid(p) == p for p in left],
    }
    print(json.dumps(report))
    for pid in left:
        os.waitpid(pid, 0)


def all_children() -> None:
    from tests.programs._twisted import reactor

    become_subreaper()
    assert procwork.reap_orphans(all_children=True)

    class Ended(protocol.ProcessProtocol):
        def __init__(self) -> None:
            self.d: defer.Deferred[int] = defer.Deferred()

        def processEnded(self, reason: Failure) -> None:
            assert isinstance(reason.value, ProcessDone | ProcessTerminated)
            self.d.callback(reason.value.exitCode)

    codes, twisted_codes = [], []
    helper = subprocess.Popen(["sh", "-c", "exit 6"])  # procwork's own helper
    _orphans.claim(helper)
    for _ in range(30):
        ended = Ended()
        reactor.spawnProcess(ended, "sh", ["sh", "-c", "sleep 0.01 & exit 4"], env=None)
        run = procwork.run(
            ["sh", "-c", "sleep 0.01 & exit 3"], kill_leftovers=False, timeout=10
        )
        leader = procwork.run([sys.executable, "-c", SESSION_LEADER_ORPHAN], timeout=10)
        codes.append(untwisted.run(run, timeout=30).returncode)
        untwisted.run(leader, timeout=30)
        twisted_codes.append(untwisted.run(ended.d, timeout=30))
    left = settle(keep=[helper.pid])
    report = {
        "zombies": left,
        "reaped": reaped(),
        "helper": helper.wait(10),
        "codes": sorted(set(codes)),
        "twisted": sorted(set(twisted_codes)),
    }
    print(json.dumps(report))


def stress(mode: str) -> None:
    """400 runs leaving two orphans each, 25 at a time; with ``mode`` "all"
    reaping every zombie child, else with a thread starting and waiting
    150 plain Popen children meanwhile."""
    become_subreaper()
    all_children = mode == "all"
    if all_children:
        procwork.reap_orphans(all_children=True)
    wrong: list[tuple[str, int | None]] = []

    def popen_loop() -> None:
        # plain children of the same program, waited from another thread, while
        # orphans are reaped around them
        for i in range(150):
            new_session = bool(i % 2)
            child = subprocess.Popen(
                ["sh", "-c", f"exit {7 + new_session}"], start_new_session=new_session
            )
            status = child.wait(timeout=30)
            if status != 7 + new_session:
                wrong.append(("popen", status))

    def batch() -> Generator[Any, Any, None]:
        runs = [
            procwork.run(
                ["sh", "-c", "sleep 0.005 & sleep 0.01 & exit 3"],
                kill_leftovers=bool(i % 2),
                timeout=20,
            )
            for i in range(25)
        ]
        results: list[Result] = yield clockwork.gather(*runs)
        wrong.extend(("run", r.returncode) for r in results if r.returncode != 3)

    thread = None if all_children else threading.Thread(target=popen_loop)
    if thread:
        thread.start()
    for _ in range(16):
        clockwork.wrap(batch(), timeout=60)
    if thread:
        thread.join(timeout=60)
    left = settle()
    report = {
        "wrong": wrong,
        "zombies": left,
        "reaped": reaped(),
        "children": children(),
    }
    print(json.dumps(report))


SCENARIOS: dict[str, Callable[..., None]] = {
    "subreaper-detected": subreaper_detected,
    "ordinary": ordinary,
    "subreaper-runs": subreaper_runs,
    "sigchld-alone": sigchld_alone,
    "backstop": backstop,
    "session-leader": session_leader,
    "all-children": all_children,
    "stress": stress,
}

if __name__ == "__main__":
    procwork.scheduler().load = procwork.NoLoadLimit()  # a busy CI box must not queue
    SCENARIOS[sys.argv[1]](*sys.argv[2:])
