"""``start --wait`` and ``restart --wait``: the answer comes when services settle.

The :class:`~procwork.monitor._control.Controller` on a Monitor on a
``Clock`` with fake processes, so that "not before start_seconds" and "at
the end of the wait" are exact. The real ``procwork ctl start --wait`` is
``tests/cli/test_ctl_find_and_wait_e2e.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from procwork.monitor._protocol import MAX_WAIT, parse_request
from tests.support.fake_monitor import HEADER, Operated, services


def asked(operated: Operated, **request: Any) -> list[dict[str, Any]]:
    """The answers to ``request`` so far (none until it is answered)."""
    answers: list[dict[str, Any]] = []
    operated.controller.handle(request, "test").addCallback(answers.append)
    return answers


@pytest.fixture
def operated(tmp_path: Path) -> Operated:
    return Operated(
        tmp_path,
        HEADER
        + services(
            "web:start_seconds = 2\nautostart = false",
            "bad:start_seconds = 2\nautostart = false\nmax_restarts = 1\n"
            "min_restart_delay = 1",
            'setup:autostart = false\nrestart = "on-failure"\nstart_seconds = 2',
        ),
    )


def test_start_wait_answers_once_the_service_has_run_its_start_seconds(
    operated: Operated,
) -> None:
    answers = asked(operated, command="start", names=["web"], wait=30)
    operated.clock.advance(1.9)
    assert answers == []  # STARTING: not yet
    operated.clock.advance(0.1)
    [answer] = answers
    assert answer["ok"] is True
    assert answer["result"]["services"]["web"]["state"] == "RUNNING"


def test_start_wait_fails_with_the_reason_and_stderr_when_the_service_is_FATAL(
    operated: Operated,
) -> None:
    """The reason as status shows it, and what the last crashed run (not
    the ones before it) wrote to stderr."""
    answers = asked(operated, command="start", names=["web", "bad"], wait=30)
    for delay in (1, 0):  # max_restarts = 1: the second failed start is FATAL
        operated.world.current("bad").say(b"cannot bind :8080\n", fd=2)
        operated.world.current("bad").exit(3)
        operated.clock.advance(delay)
    assert operated.monitor.supervisor.status()["bad"].state == "FATAL"
    assert answers == []  # web is not RUNNING yet: the answer waits for it
    operated.clock.advance(1)
    [answer] = answers
    assert answer["ok"] is False
    assert answer["error"] == (
        "bad is FATAL (exited 3: 2 unexpected exits within 60 s, more than "
        "max_restarts=1); its last stderr: cannot bind :8080"
    )
    states = {n: s["state"] for n, s in answer["result"]["services"].items()}
    assert states == {"web": "RUNNING", "bad": "FATAL"}


def test_start_wait_ends_when_its_time_is_up_saying_where_each_service_is(
    operated: Operated,
) -> None:
    answers = asked(operated, command="start", names=["web", "setup"], wait=1.5)
    operated.clock.advance(1.4)
    assert answers == []
    operated.clock.advance(0.1)
    [answer] = answers
    assert answer["ok"] is False
    assert answer["error"] == (
        "web: still STARTING after 1.5 s; setup: still STARTING after 1.5 s"
    )
    # Only the waiting ended: the services go on starting.
    operated.clock.advance(1)
    assert operated.monitor.supervisor.status()["web"].state == "RUNNING"


def test_a_one_shot_that_exits_with_success_satisfies_the_wait(
    operated: Operated,
) -> None:
    answers = asked(operated, command="start", names=["setup"], wait=30)
    operated.world.current("setup").exit(0)
    [answer] = answers
    assert answer["ok"] is True
    assert answer["result"]["services"]["setup"]["state"] == "EXITED"


def test_a_service_stopped_while_it_is_waited_for_fails_the_wait(
    operated: Operated,
) -> None:
    answers = asked(operated, command="start", names=["web"], wait=30)
    operated.ask(command="stop", names=["web"])
    [answer] = answers
    assert answer["error"] == "web: stopped while it was being waited for"


def test_restart_wait_waits_for_the_new_process_not_the_running_old_one(
    operated: Operated,
) -> None:
    operated.ask(command="start", names=["web"])
    operated.clock.advance(2)
    old = operated.pid("web")
    answers = asked(operated, command="restart", names=["web"], wait=30)
    operated.clock.advance(1)  # the old one takes 1 s to die of SIGTERM
    assert answers == []
    assert operated.pid("web") not in (None, old)
    operated.clock.advance(2)
    [answer] = answers
    assert answer["ok"] is True
    assert answer["result"]["services"]["web"]["pid"] == operated.pid("web")


def test_the_wait_counts_from_the_request_stop_phase_included(
    operated: Operated,
) -> None:
    operated.ask(command="start", names=["web"])
    operated.clock.advance(2)
    answers = asked(operated, command="restart", names=["web"], wait=2.5)
    operated.clock.advance(1)  # stopped; started again at 1 s
    operated.clock.advance(1.4)
    assert answers == []
    operated.clock.advance(0.1)  # 2.5 s since the request
    [answer] = answers
    assert answer["error"] == "web: still STARTING after 2.5 s"


@pytest.mark.parametrize("wait", [0, -1, float("nan"), float("inf"), MAX_WAIT * 2, "5"])
def test_a_wait_is_a_number_of_seconds_above_zero_and_at_most_a_day(
    wait: object,
) -> None:
    with pytest.raises(ValueError, match=r"start: wait must be a number of seconds"):
        parse_request({"command": "start", "names": ["web"], "wait": wait})
    with pytest.raises(ValueError, match=r"stop: unknown key 'wait'"):
        parse_request({"command": "stop", "names": ["web"], "wait": 5})
