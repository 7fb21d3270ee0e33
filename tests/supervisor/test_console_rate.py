"""A loud service's lines over its ``console_rate``: counted, and said rarely.

Over its rate a service's output is not split into lines, only counted; the
count is said in one warning ("N output lines not shown") at most every
``NOT_SHOWN_EVERY`` (10) seconds per service, and within that time even if
the service goes quiet. Before, a notice came each time the rate let a
line through again: about 200 a second for a service printing without
pause. A :class:`ServiceOutput` on a ``Clock``, fed as the pipe would feed it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any, cast

import pytest
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogLevel, globalLogPublisher

from procwork.supervisor import ServiceSpec
from procwork.supervisor._servicelog import NOT_SHOWN_EVERY, ServiceOutput

CHUNK = b"y\n" * 100  # a read of the pipe: 100 lines


@pytest.fixture
def logged() -> Iterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    yield events
    globalLogPublisher.removeObserver(observer)


def loud(clock: Clock, rate: float = 200) -> ServiceOutput:
    spec = ServiceSpec("yes", ["yes"], console_rate=rate)
    return ServiceOutput(spec, clock.seconds, lambda: 9, call_later=clock.callLater)


def notices(events: list[dict[str, Any]]) -> list[int]:
    return [e["dropped"] for e in events if "dropped" in e]


def shown(events: list[dict[str, Any]]) -> int:
    return sum(1 for e in events if e.get("line") == "y")


def test_a_minute_of_a_service_printing_without_pause_gets_one_notice_per_10_s(
    logged: list[dict[str, Any]],
) -> None:
    clock = Clock()
    output = loud(clock)
    sent = 0
    said_at: list[float] = []  # the Clock's time of each notice

    def when(event: dict[str, Any]) -> None:
        if "dropped" in event:
            said_at.append(clock.seconds())

    globalLogPublisher.addObserver(cast(ILogObserver, when))
    try:
        for _ in range(60 * 200):  # 20 000 lines a second, in reads every 5 ms
            output.received(1, CHUNK)
            sent += 100
            clock.advance(0.005)
        clock.advance(NOT_SHOWN_EVERY)  # quiet since: the last count is said too
    finally:
        globalLogPublisher.removeObserver(cast(ILogObserver, when))
    counts = notices(logged)
    assert len(counts) == 7  # at once, then every 10 s (before: ~12 000)
    assert shown(logged) + sum(counts) == sent  # every line shown or counted
    warnings = [e for e in logged if "dropped" in e]
    assert {e["log_level"] for e in warnings} == {LogLevel.warn}
    gaps = [b - a for a, b in itertools.pairwise(said_at)]
    assert len(gaps) == 6 and min(gaps) >= NOT_SHOWN_EVERY - 1e-6


def test_lines_not_shown_are_said_within_the_interval_when_the_service_goes_quiet(
    logged: list[dict[str, Any]],
) -> None:
    clock = Clock()
    output = loud(clock, rate=10)
    output.received(1, CHUNK)  # 10 shown, 90 counted: said at once
    clock.advance(1)
    output.received(1, CHUNK)  # 10 shown, 90 counted: 9 s to wait
    assert notices(logged) == [90]
    clock.advance(NOT_SHOWN_EVERY - 1 - 0.1)
    assert notices(logged) == [90]
    clock.advance(0.1)
    assert notices(logged) == [90, 90]
    assert not clock.getDelayedCalls()  # nothing more to say: no timer


def test_a_crash_loop_of_a_loud_service_says_its_lines_not_shown_as_rarely(
    logged: list[dict[str, Any]],
) -> None:
    clock = Clock()
    output = loud(clock, rate=10)
    for _ in range(20):  # a run a second, each printing 100 lines
        output.new_run()
        output.received(1, CHUNK)
        output.ended()
        clock.advance(1)
    clock.advance(NOT_SHOWN_EVERY)
    assert len(notices(logged)) == 3  # at 0, 10 and 20 s
    assert shown(logged) + sum(notices(logged)) == 20 * 100


def test_a_removed_service_says_what_it_did_not_show_at_once(
    logged: list[dict[str, Any]],
) -> None:
    clock = Clock()
    output = loud(clock, rate=10)
    output.received(1, CHUNK)
    output.received(1, CHUNK)  # 90 said; the next 100 wait for the interval
    output.close()
    assert notices(logged) == [90, 100]
    assert not clock.getDelayedCalls()


def test_without_a_timer_the_count_waits_for_the_next_output_or_the_end(
    logged: list[dict[str, Any]],
) -> None:
    """A ServiceOutput given no ``call_later`` (a program's own) still says
    every count, at most once per interval."""
    clock = Clock()
    output = ServiceOutput(
        ServiceSpec("yes", ["yes"], console_rate=10), clock.seconds, lambda: 9
    )
    output.received(1, CHUNK)
    output.received(1, CHUNK)
    clock.advance(NOT_SHOWN_EVERY)
    assert notices(logged) == [90]
    output.ended()
    assert notices(logged) == [90, 100]
