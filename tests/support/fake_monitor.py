"""A Monitor on a ``Clock``, with fakes for everything that would touch the machine.

The checks' ``run`` (:class:`FakeRun`), the services' process factory
(:class:`FakeFactory`, or :class:`~tests.support.fake_supervisor.FakeWorld`)
and the rules' process table (:class:`~tests.support.FakeTable`): a
:class:`World` runs the built-in test config that way, an :class:`Operated`
one read from a file, with its :class:`~procwork.monitor._control.Controller`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from procwork import NoLoadLimit, Result, Scheduler
from procwork.monitor import CheckSpec, Monitor, MonitorConfig, Rule, load_config
from procwork.monitor._control import Controller
from procwork.monitor._http import prometheus_text
from procwork.monitor._proctable import ProcInfo
from procwork.monitor._protocol import PROTOCOL
from procwork.supervisor import ServiceSpec
from tests.support import FakeTable
from tests.support.fake_supervisor import FakeWorld

NOW = 1_700_000_000.0  # the Clock's "wall clock" while rules look at ages


class FakeRun:
    """The checks' ``run``: records each command and hands back a Deferred."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], Deferred[Result]]] = []
        self.cancelled: list[list[str]] = []

    def __call__(self, argv: list[str], **kwargs: Any) -> Deferred[Result]:
        d: Deferred[Result] = Deferred(lambda _: self.cancelled.append(argv))
        self.calls.append((argv, d))
        return d

    def finish(self, index: int, returncode: int, stdout: bytes = b"") -> None:
        argv, d = self.calls[index]
        d.callback(Result(tuple(argv), 99, returncode, stdout=stdout, duration=0.1))


class FakeService:
    """A service's child that exists only in the test.

    A signal ends it on the next turn of the clock, as a real child is reaped
    after the signal, never inside the call that sends it.
    """

    def __init__(self, clock: Clock, protocol: ProcessProtocol, pid: int) -> None:
        self.clock = clock
        self.protocol = protocol
        self.pid: int | None = pid
        self.kill_group_on_exit = False
        self.signals: list[int] = []
        protocol.makeConnection(self)

    def signal_group(self, signum: int) -> bool:
        if self.pid is None:
            return False
        self.signals.append(signum)
        self.clock.callLater(0, self.end, signal=signum)
        return True

    def end(self, signal: int | None = None, code: int | None = None) -> None:
        if self.pid is None:
            return
        self.pid = None
        self.protocol.processEnded(Failure(ProcessTerminated(code, signal)))


class FakeFactory:
    """The supervisor's ``process_factory``: makes FakeServices."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.children: list[FakeService] = []

    def __call__(
        self,
        reactor: Any,
        protocol: ProcessProtocol,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None,
        cwd: str | None,
        nice: int,
        stdin: bool,
        **credentials: Any,
    ) -> FakeService:
        child = FakeService(self.clock, protocol, 500 + len(self.children))
        self.children.append(child)
        return child


def cgi(pid: int, age: float) -> ProcInfo:
    """A ``perl slow.cgi`` process of ours, ``age`` seconds old."""
    return ProcInfo(
        pid=pid,
        ppid=1,
        pgid=pid,
        uid=os.geteuid(),
        user="me",
        name="perl",
        cmdline=("/usr/bin/perl", "slow.cgi"),
        state="S",
        start_time=NOW - age,
        cpu_seconds=1.0,
        rss_bytes=1 << 20,
    )


CONFIG = MonitorConfig(
    source="test.toml",
    services=(ServiceSpec("web", ["web"], start_seconds=1),),
    checks=(CheckSpec("disk", ["check-disk"], every=10, timeout=30),),
    rules=(
        Rule("slow-cgi", process_name="perl", max_age=600, action="log"),
        Rule(
            "stale-cgi", process_name="perl", max_age=3600, action="term", dry_run=True
        ),
    ),
    rules_every=5,
    summary_every=30,
    http=None,
)


class World:
    """A Monitor of ``config`` (default CONFIG) on a Clock, and the fakes
    around it."""

    def __init__(self, config: MonitorConfig = CONFIG) -> None:
        self.clock = Clock()
        self.clock.rightNow = NOW
        self.run = FakeRun()
        self.factory = FakeFactory(self.clock)
        self.table = FakeTable(cgi(700, age=900), cgi(701, age=60))
        self.monitor = Monitor(
            config,
            reactor=self.clock,
            scheduler=Scheduler(self.clock, load=NoLoadLimit()),
            run=self.run,
            process_factory=self.factory,
            process_table=self.table,
        )


def metric_lines(monitor: Monitor) -> set[str]:
    """The lines of ``monitor``'s metrics, as /metrics serves them."""
    return set(prometheus_text(monitor.metrics()).splitlines())


def services(*entries: str) -> str:
    """[[service]] tables running ``sleep 60 NAME``, one per ``"NAME:extra TOML"``."""
    return "\n".join(
        f'[[service]]\nname = "{name}"\ncommand = ["sleep", "60", "{name}"]\n{extra}'
        for name, _, extra in (e.partition(":") for e in entries)
    )


class Operated:
    """A Monitor of a config file, on a Clock with fake processes."""

    def __init__(
        self, tmp_path: Path, text: str, table: FakeTable | None = None
    ) -> None:
        self.path = tmp_path / "monitor.toml"
        self.path.write_text(text)
        self.clock = Clock()
        self.clock.rightNow = NOW  # the wall clock the rules see
        self.world = FakeWorld(self.clock)
        self.run = FakeRun()
        self.monitor = Monitor(
            load_config(str(self.path)),
            reactor=self.clock,
            scheduler=Scheduler(self.clock, load=NoLoadLimit()),
            run=self.run,
            process_factory=self.world,
            process_table=table if table is not None else FakeTable(),
        )
        self.controller = Controller(self.monitor)
        self.monitor.start()

    def ask(self, **request: Any) -> dict[str, Any]:
        """The answer to ``request``, with the clock advanced until it comes."""
        answers: list[dict[str, Any]] = []
        self.controller.handle(request, "test").addCallback(answers.append)
        for _ in range(100):
            if answers:
                break
            self.clock.advance(0.5)
        [answer] = answers
        assert answer["procwork"] == PROTOCOL
        json.dumps(answer)  # JSON all the way
        return answer

    def pid(self, name: str) -> int | None:
        return self.monitor.supervisor.status()[name].pid


HEADER = "[monitor]\nhttp = false\nsummary_every = 0\n"
"""A [monitor] table for an Operated config: no HTTP, no summary lines."""


def checks(*entries: str) -> str:
    """[[check]]s running ``true NAME`` every 10 s, as ``services`` writes
    services; each runs at once (``start_delay = 0``: checks sharing an
    interval are otherwise spread over it)."""
    return "\n".join(
        f'[[check]]\nname = "{name}"\ncommand = ["true", "{name}"]\nevery = 10\n'
        f"start_delay = 0\n{extra}"
        for name, _, extra in (e.partition(":") for e in entries)
    )


def rules(*entries: str) -> str:
    """[[rule]]s logging perl processes older than max_age seconds."""
    return "\n".join(
        f'[[rule]]\nname = "{name}"\nprocess_name = "perl"\nmax_age = {max_age}\n'
        for name, _, max_age in (e.partition(":") for e in entries)
    )
