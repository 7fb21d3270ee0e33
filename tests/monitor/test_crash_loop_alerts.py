"""A crash loop is one alert, not three per crash; recovery is one more.

The case of issue 16 on a Clock: a service that runs one second and exits
3 (``sh -c 'sleep 1; exit 3'``, the defaults) and one command alert on
``service.*``. Before, each crash was ``service.exited``,
``service.restarted`` and ``service.recovered``: 86 deliveries in 30 s.
Now the routine events of each start and exit stay in the recent events
and the log; the alert gets ``service.crashloop`` once, ``service.fatal``
when the supervisor gives up, ``service.recovered`` once the service has
run ``stable_seconds``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.task import Clock

from procwork.monitor._events import ROUTINE_EVENTS, Event, ServiceEvents
from procwork.supervisor import ServiceState, Supervisor
from tests.support.fake_monitor import HEADER, NOW, Operated
from tests.support.fake_supervisor import FakeWorld, spec

ALERT = """
[[alert]]
name = "page"
events = {events}
command = ["true", "notify-oncall"]
"""


def operated(
    tmp_path: Path, service: str = "", events: str = '["service.*"]'
) -> Operated:
    return Operated(
        tmp_path,
        HEADER
        + f'[[service]]\nname = "crash"\ncommand = ["sleep", "1", "crash"]\n{service}\n'
        + ALERT.format(events=events),
    )


def crash_for(world: Operated, seconds: float, ran: float = 1.0) -> None:
    """For ``seconds`` of the clock, the service runs ``ran`` seconds each
    time it is started, says why on stderr and exits 3."""
    started: dict[int, float] = {}
    end = world.clock.seconds() + seconds
    while world.clock.seconds() < end - 1e-9:
        proc = world.world.processes[-1] if world.world.processes else None
        if proc is not None and proc.pid is not None:
            since = started.setdefault(id(proc), world.clock.seconds())
            if world.clock.seconds() - since >= ran - 1e-9:
                proc.say(b"Traceback (most recent call last):\n", fd=2)
                proc.say(b"KeyError: 'DATABASE_URL'\n", fd=2)
                proc.exit(3)
        world.clock.advance(0.25)


def delivered(world: Operated) -> list[Event]:
    """The events the alert took, in order."""
    page = world.monitor.alerts.specs[0]
    return [e for e in world.monitor.alerts.recent if page.wants(e)]


def test_the_crash_loop_of_issue_16_is_one_delivery_in_30_s_then_fatal(
    tmp_path: Path,
) -> None:
    world = operated(tmp_path)
    crash_for(world, 30)
    status = world.monitor.supervisor.status()["crash"]
    assert status.failures == 5  # before: 30 restarts in 30 s
    assert world.monitor.alerts.status["page"].sent == 1  # before: 86
    [loop] = delivered(world)
    assert loop.event == "service.crashloop"
    assert loop.message == (
        "service 'crash' is crash-looping: BACKOFF (crash loop: 2 exits in 2 s, "
        "next start in 2 s)"
    )
    assert (loop.exit_status, loop.reminder, loop.fields["crashes"]) == (3, False, 2)
    assert loop.output == "Traceback (most recent call last):\nKeyError: 'DATABASE_URL'"
    said = {e.event for e in world.monitor.alerts.recent if e.kind == "service"}
    routine = said - {loop.event}
    assert routine == {"service.started", "service.exited", "service.restarted"}
    crash_for(world, 10)  # the sixth crash within 60 s: given up
    fatal = delivered(world)[-1]
    assert (fatal.event, fatal.state, fatal.exit_status) == (
        "service.fatal",
        "FATAL",
        3,
    )
    assert fatal.message == (
        "service 'crash' is FATAL: exited 3: 6 unexpected exits within 60 s, more "
        "than max_restarts=5; given up until started again"
    )
    assert fatal.output.endswith("KeyError: 'DATABASE_URL'")
    assert world.monitor.alerts.status["page"].sent == 2


def test_a_crash_loop_that_ends_is_recovered_once_after_stable_seconds(
    tmp_path: Path,
) -> None:
    world = operated(tmp_path, 'stable_seconds = "30s"')
    crash_for(world, 6)  # crashes at 1 and 3 s; started again at 5 s, it stays up
    assert [e.event for e in delivered(world)] == ["service.crashloop"]
    world.clock.advance(28.75)
    assert [e.event for e in delivered(world)] == ["service.crashloop"]
    world.clock.advance(0.25)  # up 30 s
    recovered = delivered(world)[-1]
    assert recovered.event == "service.recovered"
    assert recovered.message.startswith("service 'crash' recovered: stable again, pid")
    assert world.monitor.supervisor.status()["crash"].healthy


def test_a_long_crash_loop_is_said_again_every_repeat_every(tmp_path: Path) -> None:
    world = operated(tmp_path, 'max_restarts = false\nrepeat_every = "1m"')
    crash_for(world, 300)  # crashes at 1, 3, 6, 11, 20, 37, 70, 131, 192, 253 s
    assert world.monitor.supervisor.status()["crash"].crashes == 10
    said = [(e.time - NOW, e.reminder) for e in delivered(world)]
    assert said == [(3, False), (70, True), (131, True), (192, True), (253, True)]


def test_stopping_a_crash_looping_service_is_no_recovery(tmp_path: Path) -> None:
    world = operated(tmp_path)
    crash_for(world, 6)
    world.ask(command="stop", names=["crash"])
    world.ask(command="start", names=["crash"])
    world.clock.advance(120)
    assert [e.event for e in delivered(world)] == ["service.crashloop"]


def test_a_failure_not_restarted_is_one_delivery_and_a_success_none(
    tmp_path: Path,
) -> None:
    world = operated(
        tmp_path,
        'restart = "never"\n[[service]]\nname = "once"\ncommand = ["sleep", "1", '
        '"once"]\nrestart = "never"',
    )
    world.world.current("once").exit(0)
    world.world.current("crash").exit(1)
    [failed] = delivered(world)
    assert (failed.event, failed.state, failed.exit_status) == (
        "service.failed",
        "EXITED",
        1,
    )
    assert failed.message == "service 'crash' EXITED (exited 1: restart='never')"


def test_an_alert_that_names_the_routine_events_gets_every_crash(
    tmp_path: Path,
) -> None:
    world = operated(tmp_path, events='["service.exited"]')
    crash_for(world, 30)
    got: list[Any] = [(e.event, e.exit_status) for e in delivered(world)]
    assert got == [("service.exited", 3)] * 5


def test_a_FATAL_service_removed_and_added_again_is_no_recovery() -> None:
    """Removed, a service is STOPPED (whatever it was): its name starts
    afresh, and nothing is kept for it."""
    clock = Clock()
    world = FakeWorld(clock)
    sup = Supervisor(clock, process_factory=world)
    seen: list[Event] = []
    events = ServiceEvents(seen.append, lambda name: 0.0, clock.seconds)
    sup.listen(events)
    sup.add(spec("web", max_restarts=0))
    sup.start()
    world.current("web").exit(3)
    assert sup.status()["web"].state is ServiceState.FATAL
    sup.remove("web")
    sup.add(spec("web"))
    clock.advance(120)
    assert [e.event for e in seen if e.event not in ROUTINE_EVENTS] == ["service.fatal"]
    assert (events._down, events._looping) == (set(), {})
