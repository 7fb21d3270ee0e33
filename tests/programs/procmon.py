"""procwork's ProcessMonitor on the global reactor, in a program of its own.

Run by ``tests/supervisor/test_procmon_dropin.py``; the scenario is the
first argument.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any, cast

from twisted.internet import process as twisted_process
from twisted.internet import task
from twisted.logger import ILogObserver, globalLogPublisher

import untwisted
from procwork import ProcessMonitor
from procwork._spawn import GroupProcess


def transport_of(pm: ProcessMonitor, name: str) -> Any:
    """The transport of the started service ``name``."""
    return pm.protocols[name].transport


def group_stopped_whole(*options: str) -> None:
    """A service that starts a grandchild (in its process group), prints its
    pid and sleeps, run by a ProcessMonitor: stopped whole, restarted, then
    stopped for good. With ``--ignore-term`` the service and its grandchild
    ignore SIGTERM and killTime is 0.5 s."""
    assert set(options) <= {"--ignore-term"}, options
    ignore_term = "--ignore-term" in options
    reactor: Any = untwisted.lowlevel.default_driver().reactor

    def until(condition: Callable[[], object], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            untwisted.run(task.deferLater(reactor, 0.02, lambda: None))

    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rpartition(")")[2].split()[0] not in "ZX"
        except FileNotFoundError:
            return False

    lines: list[dict[str, Any]] = []

    def observer(event: dict[str, Any]) -> None:
        if event.get("tag") == "svc":
            lines.append(event)

    globalLogPublisher.addObserver(cast(ILogObserver, observer))
    service = (
        (
            "import signal, subprocess, sys, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            if ignore_term
            else "import subprocess, sys, time\n"
        )
        + "g = subprocess.Popen("
        "[sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(g.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    pm = ProcessMonitor(reactor)
    if ignore_term:
        pm.killTime = 0.5  # type: ignore[assignment]  # procmon says int; any number
    pm.addProcess("svc", [sys.executable, "-c", service], env=dict(os.environ))
    pm.startService()
    until(lambda: lines)
    transport = transport_of(pm, "svc")
    assert isinstance(transport, GroupProcess), transport
    pid, grandchild = transport.pid, int(lines[0]["line"])
    assert pid is not None
    assert os.getpgid(pid) == pid and os.getpgid(grandchild) == pid
    assert lines[0]["log_namespace"] == "twisted.runner.procmon.ProcessMonitor"
    assert lines[0]["stream"] == "stdout"
    # O(1) reaping: not in the table Twisted scans at every SIGCHLD.
    assert pid not in twisted_process.reapProcessHandlers

    pm.stopProcess("svc")  # SIGTERM to the group: the grandchild too
    until(lambda: not alive(pid) and not alive(grandchild))
    until(lambda: "svc" in pm.protocols and transport_of(pm, "svc").pid != pid)
    print("restarted", flush=True)

    pm.stopService()
    restarted = transport_of(pm, "svc").pid
    until(lambda: not alive(restarted) and "svc" not in pm.protocols)
    print("stopped", flush=True)


def as_another_user(uid: str, gid: str) -> None:
    """A process given uid/gid ``uid``, ``gid`` is spawned by the reactor
    itself and runs as that user; one given our own uid is a GroupProcess."""
    reactor: Any = untwisted.lowlevel.default_driver().reactor
    pm = ProcessMonitor(reactor)
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    pm.addProcess("as-nobody", sleep, uid=int(uid), gid=int(gid), cwd="/")
    pm.addProcess("as-me", sleep, uid=os.getuid(), gid=os.getgid())
    pm.startService()
    other = transport_of(pm, "as-nobody")
    mine = transport_of(pm, "as-me")
    assert not isinstance(other, GroupProcess) and isinstance(mine, GroupProcess)
    with open(f"/proc/{other.pid}/status") as status:
        uids = [line.split()[2] for line in status if line.startswith("Uid:")]
    deadline = time.monotonic() + 10
    while uids != [uid]:
        assert time.monotonic() < deadline, uids
        time.sleep(0.02)
        with open(f"/proc/{other.pid}/status") as status:
            uids = [line.split()[2] for line in status if line.startswith("Uid:")]
    pm.stopService()
    deadline = time.monotonic() + 10
    while pm.protocols:
        assert time.monotonic() < deadline, "not stopped"
        untwisted.run(task.deferLater(reactor, 0.02, lambda: None))
    print("ok")


SCENARIOS: dict[str, Callable[..., None]] = {
    "group-stopped-whole": group_stopped_whole,
    "as-another-user": as_another_user,
}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]](*sys.argv[2:])
