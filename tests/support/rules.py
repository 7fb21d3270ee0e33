"""A rule engine over a fake process table, with fake signals, on a Clock.

For the watchdog rules' tests: :func:`proc` makes a process of this user,
:func:`engine_for` an engine whose signals are recorded by
:class:`FakeSignals` and whose clock reads :data:`NOW`.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import signal
from typing import Any

from twisted.internet.task import Clock

from procwork.monitor import Rule
from procwork.monitor._proctable import ProcInfo
from procwork.monitor._rules import RuleEngine
from tests.support import FakeTable

NOW = 1_800_000_000.0


ME = pwd.getpwuid(os.geteuid()).pw_name


def proc(pid: int = 1000, name: str = "perl", **changes: Any) -> ProcInfo:
    """A process of this user that started 312 s before NOW."""
    base = ProcInfo(
        pid=pid,
        ppid=500,
        pgid=pid,
        uid=os.geteuid(),
        user=ME,
        name=name,
        cmdline=(f"/usr/bin/{name}", "/srv/cgi/slow.cgi"),
        state="S",
        start_time=NOW - 312,
        cpu_seconds=1.0,
        rss_bytes=10 * 2**20,
    )
    return dataclasses.replace(base, **changes)


class FakeSignals:
    """Records signals; SIGKILL always removes the process, SIGTERM if it obeys.

    ``sent`` holds the SIGTERMs and SIGKILLs; ``all_sent`` also the SIGSTOPs
    and SIGCONTs that freeze a tree while it is signalled.
    """

    def __init__(self, table: FakeTable, *, obey_term: bool = False) -> None:
        self.table = table
        self.obey_term = obey_term
        self.sent: list[tuple[int, signal.Signals]] = []
        self.all_sent: list[tuple[int, signal.Signals]] = []

    def __call__(self, process: ProcInfo, signum: int) -> bool:
        if self.table.get(process.pid) != process:
            return False
        self.all_sent.append((process.pid, signal.Signals(signum)))
        if signum in (signal.SIGSTOP, signal.SIGCONT):
            return True
        self.sent.append((process.pid, signal.Signals(signum)))
        if signum == signal.SIGKILL or self.obey_term:
            del self.table.processes[process.pid]
        return True


def clock_at(epoch: float) -> Clock:
    """A Clock whose seconds() reads as the given wall-clock time."""
    clock = Clock()
    clock.advance(epoch)
    return clock


def engine_for(
    *rules: Rule, table: FakeTable, obey_term: bool = False, **kwargs: Any
) -> tuple[RuleEngine, FakeSignals, Clock]:
    clock = clock_at(NOW)
    signals = FakeSignals(table, obey_term=obey_term)
    engine = RuleEngine(rules, table, reactor=clock, send_signal=signals, **kwargs)
    return engine, signals, clock


CGI = Rule("cgi", process_name="perl", max_age=300, action="term", grace=5)
