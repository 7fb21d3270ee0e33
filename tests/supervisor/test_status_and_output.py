"""What a supervised service says: its output as log events, and its status.

On ``twisted.internet.task.Clock`` with fake processes, as in
``test_supervisor.py``: each line of output is an event naming the service
and the stream, and the status reports pid, uptime, restarts and the last
exit.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import formatEvent
from twisted.python.failure import Failure

from procwork.supervisor import NoSuchService, ServiceState, ServiceStatus, Supervisor
from tests.support import run_child
from tests.support.fake_supervisor import FakeProcess, FakeWorld, spec, state

# -- output --------------------------------------------------------------------


def test_each_line_of_output_is_a_log_event_with_the_service_and_the_stream(
    sup: Supervisor, world: FakeWorld, events: list[dict[str, Any]]
) -> None:
    sup.add(spec("web"))
    sup.start()
    proc = world.current("web")
    proc.say(b"listening on :80\nGET / 2")
    proc.say(b"00\r\n")
    proc.say(b"oops \xff\n", fd=2)
    output = [e for e in events if "line" in e]
    assert [(e["service"], e["stream"], e["line"], e["pid"]) for e in output] == [
        ("web", "stdout", "listening on :80", proc.pid),
        ("web", "stdout", "GET / 200", proc.pid),
        ("web", "stderr", "oops \ufffd", proc.pid),
    ]
    assert formatEvent(output[0]) == "[web] listening on :80"


def test_a_last_line_without_a_newline_is_logged_when_the_service_exits(
    sup: Supervisor, world: FakeWorld, events: list[dict[str, Any]]
) -> None:
    sup.add(spec("web"))
    sup.start()
    world.current("web").say(b"bye")
    world.current("web").exit(1)
    assert [e["line"] for e in events if "line" in e] == ["bye"]


def test_output_lines_longer_than_max_log_line_are_logged_in_pieces(
    sup: Supervisor, world: FakeWorld, events: list[dict[str, Any]]
) -> None:
    sup.add(spec("web", max_log_line=10))
    sup.start()
    world.current("web").say(b"x" * 25 + b"\n")
    assert [e["line"] for e in events if "line" in e] == ["x" * 10, "x" * 10, "x" * 5]


# -- status --------------------------------------------------------------------


def test_status_reports_pid_uptime_restarts_last_exit_and_when_it_changed(
    sup: Supervisor, clock: Clock, world: FakeWorld
) -> None:
    clock.advance(1000)
    sup.add(spec("web", start_seconds=60))
    sup.start()
    clock.advance(30)
    world.current("web").say(b"cannot bind :8080\n", fd=2)
    world.current("web").exit(3)  # a crash: restarted in 1 s
    clock.advance(0.25)
    status = sup.status()["web"]
    assert status == ServiceStatus(
        name="web",
        state=ServiceState.BACKOFF,
        pid=None,
        uptime=None,
        restarts=1,
        last_exit="exited 3",
        returncode=3,
        since=1030.0,
        restart_in=0.75,
        waiting_for=None,
        started=1000.0,
        failures=1,
        crashes=1,
        first_crash=1030.0,
        last_crash=1030.0,
        failed=True,
        reason=None,
        last_stderr=("cannot bind :8080",),
        stable_in=None,
    )
    assert status.summary() == "BACKOFF (exited 3, next start in 0.75 s)"
    clock.advance(0.75)
    clock.advance(5)
    status = sup.status()["web"]
    assert (status.state, status.uptime, status.since) == (
        ServiceState.STARTING,
        5.0,
        1031.0,
    )
    assert status.pid == world.current("web").pid
    as_json = json.loads(json.dumps(status.to_dict()))
    assert as_json == {
        "name": "web",
        "state": "STARTING",
        "pid": status.pid,
        "uptime": 5.0,
        "restarts": 1,
        "last_exit": "exited 3",
        "returncode": 3,
        "since": 1031.0,
        "restart_in": None,
        "waiting_for": None,
        "started": 1031.0,
        "failures": 1,
        "crashes": 1,
        "first_crash": 1030.0,
        "last_crash": 1030.0,
        "failed": True,
        "reason": None,
        "last_stderr": ["cannot bind :8080"],
        "stable_in": 55.0,
        "crash_loop": False,
        "healthy": True,
        "summary": "STARTING",
    }


def test_status_lists_services_in_the_order_they_were_added(sup: Supervisor) -> None:
    for name in ("b", "a", "c"):
        sup.add(spec(name))
    assert list(sup.status()) == ["b", "a", "c"]
    assert [s.name for s in sup.specs()] == ["b", "a", "c"]


def test_wait_for_fires_with_the_status_when_the_service_reaches_a_state(
    sup: Supervisor, clock: Clock, world: FakeWorld
) -> None:
    sup.add(spec("web", start_seconds=2))
    running = sup.wait_for("web", "RUNNING", ServiceState.FATAL)
    sup.start()
    assert not running.called
    clock.advance(2)
    status = running.result
    assert isinstance(status, ServiceStatus) and status.state == "RUNNING"
    assert sup.wait_for("web", "running").called  # already there
    with pytest.raises(ValueError, match="states must be among STOPPED"):
        sup.wait_for("web", "UP")


def test_waiting_for_a_service_that_is_removed_fails_with_NoSuchService(
    sup: Supervisor, clock: Clock
) -> None:
    sup.add(spec("web"))
    waiting = sup.wait_for("web", "FATAL")
    sup.remove("web")
    failures: list[Failure] = []
    waiting.addErrback(failures.append)
    assert failures and failures[0].check(NoSuchService)


def test_reactor_shutdown_stops_the_services_first(world: FakeWorld) -> None:
    class ReactorWithTriggers(Clock):
        def __init__(self) -> None:
            super().__init__()
            self.triggers: dict[int, tuple[str, str, Any]] = {}

        def addSystemEventTrigger(
            self, phase: str, event: str, f: Any, *args: Any
        ) -> int:
            self.triggers[len(self.triggers)] = (phase, event, f)
            return len(self.triggers) - 1

        def removeSystemEventTrigger(self, trigger: int) -> None:
            del self.triggers[trigger]

    reactor = ReactorWithTriggers()
    world.clock = reactor
    sup = Supervisor(reactor, process_factory=world)
    sup.add(spec("web"))
    sup.start()
    [(phase, event, trigger)] = [
        t for t in reactor.triggers.values() if getattr(t[2], "__self__", None) is sup
    ]
    assert (phase, event) == ("before", "shutdown")
    done = trigger()
    assert isinstance(done, Deferred)
    assert state(sup, "web") is ServiceState.STOPPING
    reactor.advance(FakeProcess.TERM_DELAY)
    assert done.called
    assert state(sup, "web") is ServiceState.STOPPED


@pytest.mark.slow
def test_importing_the_supervisor_does_not_import_the_global_reactor() -> None:
    code = textwrap.dedent(
        """
        import sys
        import procwork.supervisor
        assert "twisted.internet.reactor" not in sys.modules, "reactor imported"
        assert "twisted.runner.procmon" not in sys.modules, "procmon imported"
        """
    )
    child = run_child(code)
    assert child.returncode == 0, child.stderr
