"""The supervisor's verbs for an operator: replace a spec, signal a group,
keep each stream's last lines and follow them.

On a ``Clock`` with fake processes, so stops and restarts are exact and
instant; the control protocol that calls them is ``tests/monitor/test_control.py``.
"""

from __future__ import annotations

import signal

import pytest
from twisted.internet.task import Clock

from procwork import ConfigError
from procwork.supervisor import (
    NoSuchService,
    ServiceNotRunning,
    ServiceSpec,
    ServiceState,
    Supervisor,
)
from tests.support.fake_supervisor import FakeWorld, spec


def test_replace_stops_with_the_old_stop_signal_then_starts_with_the_new_spec(
    sup: Supervisor, world: FakeWorld, clock: Clock
) -> None:
    sup.add(spec("web", stop_signal="INT", start_seconds=0))
    sup.start()
    old = world.current("web")
    done = sup.replace(spec("web", stop_signal="TERM", env={"V": "2"}, start_seconds=0))
    assert old.group_signals == [signal.SIGINT]
    assert not done.called
    clock.advance(world.processes[0].TERM_DELAY)
    assert done.called
    new = world.current("web")
    assert new is not old and new.env is not None and new.env["V"] == "2"
    assert sup.specs()[0].stop_signal == signal.SIGTERM


def test_replace_leaves_a_stopped_service_without_autostart_stopped(
    sup: Supervisor, world: FakeWorld, clock: Clock
) -> None:
    sup.add(spec("tool", autostart=False))
    sup.start()
    sup.replace(spec("tool", autostart=False, nice=5))
    clock.advance(5)
    assert world.of("tool") == []
    assert sup.status()["tool"].state is ServiceState.STOPPED


def test_replace_brings_back_a_FATAL_service_with_its_new_spec(
    sup: Supervisor, world: FakeWorld, clock: Clock
) -> None:
    sup.add(spec("bad", max_restarts=0, start_seconds=1))
    sup.start()
    world.current("bad").exit(3)
    assert sup.status()["bad"].state is ServiceState.FATAL
    sup.replace(ServiceSpec("bad", ["svc", "fixed", "bad"], max_restarts=0))
    assert world.current("bad").args == ("svc", "fixed", "bad")


def test_replace_refuses_an_after_that_names_itself_or_nothing(
    sup: Supervisor,
) -> None:
    sup.add(spec("web"))
    with pytest.raises(ConfigError, match=r"after names 'db', which is not another"):
        sup.replace(spec("web", after="db"))
    with pytest.raises(NoSuchService, match=r"no service named 'db'"):
        sup.replace(spec("db"))


def test_a_signal_reaches_the_services_group_and_a_stopped_one_says_so(
    sup: Supervisor, world: FakeWorld
) -> None:
    sup.add(spec("web"))
    sup.add(spec("tool", autostart=False))
    sup.start()
    sup.signal_service("web", "HUP")
    assert world.current("web").group_signals == [signal.SIGHUP]
    with pytest.raises(
        ServiceNotRunning,
        match=r"^service 'tool' is not running \(STOPPED\): no process group to "
        r"send SIGUSR1 to$",
    ):
        sup.signal_service("tool", signal.SIGUSR1)
    assert issubclass(ServiceNotRunning, ProcessLookupError)
    with pytest.raises(ValueError, match="unknown signal 'NOPE'"):
        sup.signal_service("web", "NOPE")


def test_each_stream_keeps_its_last_lines_within_a_bound_across_restarts(
    sup: Supervisor, world: FakeWorld, clock: Clock
) -> None:
    from procwork.supervisor._servicelog import OUTPUT_TAIL

    sup.add(spec("web", start_seconds=0))
    sup.start()
    world.current("web").say(b"one\ntwo\n")
    world.current("web").say(b"oops\n", fd=2)
    world.current("web").exit(1)
    clock.advance(1)
    world.current("web").say(b"three\n")
    assert sup.output("web") == ["one", "two", "three"]
    assert sup.output("web", "stdout", 2) == ["two", "three"]
    assert sup.output("web", "stderr") == ["oops"]
    line = b"x" * 999 + b"\n"
    for _ in range(3 * OUTPUT_TAIL // 1000):
        world.current("web").say(line)
    kept = sup.output("web")
    assert sum(len(x) + 1 for x in kept) <= OUTPUT_TAIL
    assert len(kept) == OUTPUT_TAIL // 1000
    with pytest.raises(ValueError, match="stream must be 'stdout' or 'stderr'"):
        sup.output("web", "stdin")


def test_a_follower_gets_each_new_line_until_it_stops_following(
    sup: Supervisor, world: FakeWorld
) -> None:
    sup.add(spec("web"))
    sup.start()
    seen: list[tuple[str, str]] = []

    def broken(stream: str, line: str) -> None:
        raise RuntimeError("a follower that fails")

    sup.follow("web", broken)  # costs the others nothing
    unfollow = sup.follow("web", lambda stream, line: seen.append((stream, line)))
    world.current("web").say(b"a\n")
    world.current("web").say(b"b\n", fd=2)
    unfollow()
    unfollow()
    world.current("web").say(b"c\n")
    assert seen == [("stdout", "a"), ("stderr", "b")]
