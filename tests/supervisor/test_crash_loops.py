"""Crash loops: every unexpected exit counts, the backoff lasts until a run
is stable, and the status says so.

The case of issue 16: ``sh -c 'sleep 1; exit 3'`` with the defaults ran
past ``start_seconds`` each time, so procmon restarted it at once, for
ever, and it looked RUNNING. On a Clock with fake processes, exact and
instant; the pure rules are ``test_restart_decision.py``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock

from procwork.supervisor import ServiceState, ServiceStatus, Supervisor
from tests.support.fake_supervisor import FakeWorld, lines, spec, state

BACKOFF = ServiceState.BACKOFF


def crash_after(
    sup: Supervisor, clock: Clock, world: FakeWorld, name: str, ran: float
) -> ServiceStatus:
    """The current process runs ``ran`` seconds, then exits 3."""
    clock.advance(ran)
    world.current(name).exit(3)
    return sup.status()[name]


def test_a_service_crashing_after_start_seconds_backs_off_doubling_then_is_FATAL(
    sup: Supervisor, clock: Clock, world: FakeWorld
) -> None:
    """``sleep 1; exit 3`` with the defaults: 1, 2, 4, 8, 16 s between runs,
    and the sixth crash within 60 s is one past max_restarts=5."""
    sup.add(spec("crash"))
    sup.start()
    delays, summaries = [], []
    for _ in range(5):
        status = crash_after(sup, clock, world, "crash", 1.0)
        assert status.state is BACKOFF and status.restart_in is not None
        delays.append(status.restart_in)
        summaries.append(status.summary())
        clock.advance(status.restart_in)
    assert delays == [1, 2, 4, 8, 16]
    assert summaries == [
        "BACKOFF (exited 3, next start in 1 s)",
        "BACKOFF (crash loop: 2 exits in 2 s, next start in 2 s)",
        "BACKOFF (crash loop: 3 exits in 5 s, next start in 4 s)",
        "BACKOFF (crash loop: 4 exits in 10 s, next start in 8 s)",
        "BACKOFF (crash loop: 5 exits in 19 s, next start in 16 s)",
    ]
    assert clock.seconds() == 36  # 5 exits and 4 restarts in the first 30 s
    status = crash_after(sup, clock, world, "crash", 1.0)
    assert status.state is ServiceState.FATAL
    assert status.summary() == (
        "FATAL (exited 3: 6 unexpected exits within 60 s, more than max_restarts=5)"
    )
    assert (status.restarts, status.failures, status.healthy) == (5, 6, False)


def test_a_crash_looping_service_is_never_healthy_even_while_it_runs(
    sup: Supervisor, clock: Clock, world: FakeWorld
) -> None:
    sup.add(spec("web", max_restarts=None))
    sup.start()
    crash_after(sup, clock, world, "web", 5)
    clock.advance(1)
    clock.advance(1)  # up start_seconds after one crash: RUNNING, and well
    one = sup.status()["web"]
    assert (one.state, one.crash_loop, one.healthy) == (
        ServiceState.RUNNING,
        False,
        True,
    )
    crash_after(sup, clock, world, "web", 5)
    clock.advance(2)
    clock.advance(1)
    status = sup.status()["web"]
    assert status.state is ServiceState.RUNNING
    assert (status.crash_loop, status.healthy) == (True, False)
    assert status.summary() == "RUNNING (crash loop: 2 exits in 7 s, stable in 59 s)"
    as_json = status.to_dict()
    assert (as_json["crash_loop"], as_json["healthy"], as_json["crashes"]) == (
        True,
        False,
        2,
    )


def test_a_crash_loop_ends_when_a_run_lasts_stable_seconds_and_listeners_hear_it(
    sup: Supervisor, clock: Clock, world: FakeWorld, events: list[dict[str, Any]]
) -> None:
    heard: list[tuple[str, str, int]] = []
    sup.listen(lambda s, before: heard.append((str(before), str(s.state), s.crashes)))
    sup.add(spec("web", stable_seconds=30, min_restart_delay=1))
    sup.start()
    crash_after(sup, clock, world, "web", 2)
    clock.advance(1)
    crash_after(sup, clock, world, "web", 2)
    clock.advance(2)
    heard.clear()
    clock.advance(29.5)
    assert sup.status()["web"].stable_in == 0.5
    clock.advance(0.5)  # up 30 s: stable
    status = sup.status()["web"]
    assert (status.crashes, status.crash_loop, status.healthy) == (0, False, True)
    assert (status.first_crash, status.last_stderr) == (None, ())
    assert status.stable_in is None
    assert status.failures == 2  # the total stays
    assert heard == [("STARTING", "RUNNING", 2), ("RUNNING", "RUNNING", 0)]
    assert lines(events)[-1] == (
        "service 'web' is stable again: up 30 s after 2 unexpected exits"
    )
    # The backoff starts again from the minimum at the next crash.
    assert crash_after(sup, clock, world, "web", 1).restart_in == 0


def test_a_success_is_no_crash_and_a_quick_one_still_backs_off(
    sup: Supervisor, clock: Clock, world: FakeWorld
) -> None:
    """A poller's exit 0 is not counted (never FATAL, never a loop); one that
    exits within start_seconds waits procmon's doubling delay, so it cannot
    spin."""
    sup.add(spec("poll", max_restarts=1))
    sup.start()
    delays = []
    for _ in range(4):
        clock.advance(0.5)
        world.current("poll").exit(0)
        status = sup.status()["poll"]
        assert (status.state, status.failed, status.crashes) == (BACKOFF, False, 0)
        assert status.healthy and status.restart_in is not None
        delays.append(status.restart_in)
        clock.advance(status.restart_in)
    assert delays == [1, 2, 4, 8]
    assert sup.status()["poll"].summary() == "STARTING"


def test_the_last_stderr_lines_of_the_crashed_run_are_kept_and_no_earlier_ones(
    sup: Supervisor, clock: Clock, world: FakeWorld
) -> None:
    sup.add(spec("web"))
    sup.start()
    proc = world.current("web")
    proc.say(b"old trouble\n", fd=2)
    proc.exit(3)
    assert sup.status()["web"].last_stderr == ("old trouble",)
    clock.advance(1)
    proc = world.current("web")
    proc.say(b"".join(b"line %d\n\n" % i for i in range(8)), fd=2)
    proc.say(b"x" * 1000 + b"\n", fd=2)
    proc.say(b"a stdout line\n")
    proc.exit(3)
    kept = sup.status()["web"].last_stderr
    assert kept == ("line 4", "line 5", "line 6", "line 7", "x" * 297 + "...")
    clock.advance(2)
    world.current("web").exit(3)  # said nothing on stderr
    assert sup.status()["web"].last_stderr == ()


def test_stopping_a_crash_looping_service_ends_its_loop(
    sup: Supervisor, clock: Clock, world: FakeWorld
) -> None:
    sup.add(spec("web"))
    sup.start()
    crash_after(sup, clock, world, "web", 1)
    clock.advance(1)
    crash_after(sup, clock, world, "web", 1)
    assert sup.status()["web"].crash_loop
    sup.stop_service("web")
    status = sup.status()["web"]
    assert (status.state, status.crashes, status.healthy) == (
        ServiceState.STOPPED,
        0,
        True,
    )
    assert clock.getDelayedCalls() == []


def test_a_FATAL_service_started_again_must_prove_stable_to_end_its_loop(
    sup: Supervisor, clock: Clock, world: FakeWorld
) -> None:
    sup.add(spec("web", max_restarts=1))
    sup.start()
    crash_after(sup, clock, world, "web", 1)
    clock.advance(1)
    assert crash_after(sup, clock, world, "web", 1).state is ServiceState.FATAL
    sup.start_service("web")  # fixed, by hand: the window starts afresh
    clock.advance(1)
    status = sup.status()["web"]
    assert (status.state, status.crash_loop, status.reason) == (
        ServiceState.RUNNING,
        True,
        None,
    )
    clock.advance(59)
    assert sup.status()["web"].crashes == 0
    assert state(sup, "web") is ServiceState.RUNNING


def test_an_exit_of_restart_never_is_a_crash_and_the_status_says_why(
    sup: Supervisor, world: FakeWorld
) -> None:
    sup.add(spec("once", restart="never"))
    sup.add(spec("fine", restart="never"))
    sup.start()
    world.current("once").exit(2)
    world.current("fine").exit(0)
    once, fine = sup.status()["once"], sup.status()["fine"]
    assert (once.state, once.failed, once.healthy) == (ServiceState.EXITED, True, False)
    assert once.summary() == "EXITED (exited 2: restart='never')"
    assert (fine.failed, fine.healthy, fine.summary()) == (False, True, "EXITED")
