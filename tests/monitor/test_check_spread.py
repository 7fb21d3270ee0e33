"""Checks that share an interval are spread over it, not all due at once.

A hundred checks ``every = 1`` started together would all fall due at the
same instant of every second, and the last of them would start only once
the 99 before it had (issue 17: start lateness). Each such check has its
place in the interval instead, a fraction of it taken from its name, as
Prometheus places its scrape targets. All on a ``Clock``: exact and instant.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from procwork import Result
from procwork.monitor import CheckSpec, parse_config
from procwork.monitor._checks import SLOT, SPREAD, CheckRunner, place


class Runs:
    """A ``run`` whose commands end at once, ok; remembers when each ran."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.at: list[tuple[str, float]] = []

    def __call__(self, argv: list[str], **options: Any) -> Deferred[Result]:
        self.at.append((argv[0], self.clock.seconds()))
        return succeed(Result(args=tuple(argv), pid=1, returncode=0))

    def of(self, name: str) -> list[float]:
        """When the check ``name`` ran, oldest first."""
        return [t for n, t in self.at if n == name]


def check(name: str, every: float = 10, **changes: Any) -> CheckSpec:
    """A check whose command is its own name (so that runs say which ran)."""
    return CheckSpec(name, [name], every=every, **changes)


def started(clock: Clock, *specs: CheckSpec) -> tuple[CheckRunner, Runs]:
    runs = Runs(clock)
    runner = CheckRunner(specs, run=runs, reactor=clock, wall_clock=clock.seconds)
    runner.start()
    return runner, runs


def step_through(clock: Clock, until: float) -> None:
    """Advance the clock from one due call to the next, up to ``until``: each
    run is seen at the very time it was due."""
    while True:
        calls: Sequence[Any] = clock.getDelayedCalls()  # (IDelayedCall confuses mypy)
        due = min((c.getTime() for c in calls), default=until)
        if due > until + 1e-9:
            break
        clock.advance(max(due - clock.seconds(), 0.0))
        if due >= until - 1e-9:
            break


def test_a_check_alone_on_its_interval_runs_at_start_and_then_every_interval() -> None:
    clock = Clock()
    _, runs = started(clock, check("disk", every=10), check("load", every=5))
    assert runs.of("disk") == runs.of("load") == [0.0]
    clock.advance(5)
    clock.advance(5)
    assert runs.of("disk") == [0.0, 10.0]
    assert runs.of("load") == [0.0, 5.0, 10.0]


def test_checks_sharing_an_interval_run_at_their_own_places_in_it() -> None:
    clock = Clock()
    names = ["web", "api", "db", "cache"]
    _, runs = started(clock, *(check(name) for name in names))
    assert runs.at == []  # none at the start: each waits for its place
    step_through(clock, 30.0)
    for name in names:
        first = place(check(name))
        assert runs.of(name) == pytest.approx([first, first + 10, first + 20])


def test_checks_sharing_an_interval_are_placed_in_its_slots_spread_over_it() -> None:
    places = [place(check(f"c{i}", every=1)) for i in range(100)]
    slots = Counter(round(p / SLOT) for p in places)
    assert all(0 <= p < 1 for p in places)
    assert all(p == pytest.approx(round(p / SLOT) * SLOT) for p in places)
    assert sorted(slots) == list(range(20))  # every 50 ms slot of the second
    assert max(slots.values()) <= 10  # and none holds a tenth of them


def test_a_check_whose_interval_is_shorter_than_a_slot_runs_at_its_start() -> None:
    assert place(check("web", every=0.02)) == 0.0


def test_a_hundred_checks_every_second_are_never_all_due_at_once() -> None:
    clock = Clock()
    _, runs = started(clock, *(check(f"c{i}", every=1) for i in range(100)))
    step_through(clock, 2.999)
    assert len(runs.at) == 300  # each once a second, none skipped
    most = max(Counter(round(t, 3) for _, t in runs.at).values())
    assert most <= 10  # at most ten at once


def test_a_check_keeps_its_place_whenever_the_runner_starts() -> None:
    """The place is on the clock (the epoch's seconds on a real reactor),
    not counted from the start: a restarted monitor runs it at the same
    place in the second."""
    clock = Clock()
    clock.advance(1234.5)
    _, runs = started(clock, check("web"), check("api"))
    step_through(clock, 1254.5)
    for name in ("web", "api"):
        times = runs.of(name)
        assert len(times) == 2
        assert [t % SPREAD for t in times] == pytest.approx([place(check(name))] * 2)


def test_a_check_with_a_long_interval_still_runs_first_within_the_spread() -> None:
    """A check every five minutes that shares its interval gives its first
    result within a second of the start, not up to five minutes later."""
    clock = Clock()
    clock.advance(1234.5)
    slow = [check(name, every=300) for name in ("web", "api", "db")]
    _, runs = started(clock, *slow)
    step_through(clock, 1234.5 + SPREAD)
    for spec in slow:
        assert len(runs.of(spec.name)) == 1
        assert 0 <= place(spec) < SPREAD


def test_a_start_delay_keeps_a_check_off_the_spread() -> None:
    clock = Clock()
    delayed = check("web", start_delay=2.5)
    _, runs = started(clock, delayed, check("api", start_delay=2.5))
    step_through(clock, 15.0)
    assert runs.of("web") == runs.of("api") == pytest.approx([2.5, 12.5])


def test_a_check_added_on_reload_to_a_shared_interval_takes_its_place() -> None:
    """The running checks go on as they were; the new one is spread."""
    clock = Clock()
    runner, runs = started(clock, check("web"))
    assert runs.of("web") == [0.0]
    runner.update([check("web"), check("api")])
    step_through(clock, 20.0)
    assert runs.of("web") == pytest.approx([0.0, 10.0, 20.0])
    assert runs.of("api") == pytest.approx([place(check("api")) + k for k in (0, 10)])


def test_a_spread_check_not_yet_due_is_stopped_without_running() -> None:
    clock = Clock()
    runner, runs = started(clock, check("web"), check("api"))
    runner.stop()
    assert clock.getDelayedCalls() == []
    clock.advance(30)
    assert runs.at == []


def test_a_start_delay_of_zero_runs_a_check_sharing_its_interval_at_once() -> None:
    clock = Clock()
    _, runs = started(clock, check("web", start_delay=0), check("api"), check("db"))
    assert runs.of("web") == [0.0]
    step_through(clock, 10.0)
    assert runs.of("web") == [0.0, 10.0]
    assert runs.of("api") == pytest.approx([place(check("api"))])


def test_a_config_without_start_delay_leaves_it_unset_and_zero_is_kept() -> None:
    config = parse_config(
        '[[check]]\nname = "a"\nload = true\nevery = 1\n'
        '[[check]]\nname = "b"\nload = true\nevery = 1\nstart_delay = 0\n',
        "<test>",
    )
    assert [c.start_delay for c in config.checks] == [None, 0.0]
