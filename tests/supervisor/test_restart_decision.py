"""Whether a service whose process ended is restarted: pure functions.

procmon schedules a restart at every exit; the supervisor keeps or cancels
it as :func:`decide_restart` says, and chooses the run length under which
procmon's backoff applies (:func:`backoff_threshold`). Each row of the
tables below is one rule of the restart policy, the crash-loop limit and
the backoff, read as a sentence; a decision is compared whole (state,
reason, delay, the history to keep and whether the exit was unexpected), so
a row fails on any change of the verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from procwork.supervisor import ServiceSpec, ServiceState
from procwork.supervisor._restart import (
    Exit,
    RestartDecision,
    backoff_threshold,
    decide_restart,
)

STOPPED = ServiceState.STOPPED
BACKOFF = ServiceState.BACKOFF
EXITED = ServiceState.EXITED
FATAL = ServiceState.FATAL

NOW = 1000.0
CLEAN = Exit(0, "exited 0")
FAILED = Exit(3, "exited 3")
KILLED = Exit(-9, "killed by SIGKILL")
CANNOT_START = Exit(None, "cannot run 'svc': not found", could_not_start=True)


@dataclass(frozen=True)
class Row:
    """One rule: a service (spec fields, wishes, history) meets an exit."""

    sentence: str
    ended: Exit
    expect: RestartDecision
    spec: Mapping[str, Any] = field(default_factory=dict)
    wanted: bool = True
    stopping: bool = False
    history: tuple[float, ...] = ()
    restart_delay: float | None = 1.0


def crash(*history: float, delay: float = 1.0) -> RestartDecision:
    """The verdict on an unexpected exit that is restarted."""
    return RestartDecision(BACKOFF, delay=delay, recent_exits=history, unexpected=True)


ROWS = [
    Row(
        "a service being stopped is STOPPED, whatever its exit",
        FAILED,
        stopping=True,
        expect=RestartDecision(STOPPED),
    ),
    Row(
        "a service no longer wanted is STOPPED, not restarted",
        KILLED,
        wanted=False,
        expect=RestartDecision(STOPPED),
    ),
    Row(
        "an exit the supervisor asked for is no crash, and keeps the history",
        KILLED,
        stopping=True,
        history=(990.0, 995.0),
        expect=RestartDecision(STOPPED, recent_exits=(990.0, 995.0)),
    ),
    Row(
        "restart='always' restarts a service that exited cleanly, as no crash",
        CLEAN,
        expect=RestartDecision(BACKOFF, delay=1.0),
    ),
    Row(
        "restart='always' restarts a service that failed, counting the crash",
        FAILED,
        expect=crash(NOW),
    ),
    Row(
        "a service killed by a signal crashed",
        KILLED,
        expect=crash(NOW),
    ),
    Row(
        "restart='always' retries a service that could not start, a crash too",
        CANNOT_START,
        expect=crash(NOW),
    ),
    Row(
        "the restart waits out the delay procmon's backoff scheduled",
        FAILED,
        restart_delay=8.0,
        expect=crash(NOW, delay=8.0),
    ),
    Row(
        "a restart due at once has no delay",
        FAILED,
        restart_delay=0.0,
        expect=crash(NOW, delay=0.0),
    ),
    Row(
        "restart='on-failure' restarts a service that exited with a failing code",
        FAILED,
        spec={"restart": "on-failure"},
        expect=crash(NOW),
    ),
    Row(
        "restart='on-failure' restarts a service killed by a signal",
        KILLED,
        spec={"restart": "on-failure"},
        expect=crash(NOW),
    ),
    Row(
        "restart='on-failure' restarts a service that could not start",
        CANNOT_START,
        spec={"restart": "on-failure"},
        expect=crash(NOW),
    ),
    Row(
        "restart='on-failure' leaves a service that succeeded EXITED",
        CLEAN,
        spec={"restart": "on-failure"},
        expect=RestartDecision(EXITED, "restart='on-failure' and it succeeded"),
    ),
    Row(
        "an exit code listed in success_exit_codes counts as success",
        FAILED,
        spec={"restart": "on-failure", "success_exit_codes": {0, 3}},
        expect=RestartDecision(EXITED, "restart='on-failure' and it succeeded"),
    ),
    Row(
        "exit code 0 is a crash when success_exit_codes leaves it out",
        CLEAN,
        spec={"restart": "on-failure", "success_exit_codes": {3}},
        expect=crash(NOW),
    ),
    Row(
        "restart='never' leaves a service that exited cleanly EXITED",
        CLEAN,
        spec={"restart": "never"},
        expect=RestartDecision(EXITED, "restart='never'"),
    ),
    Row(
        "restart='never' leaves a service that failed EXITED, as a crash",
        FAILED,
        spec={"restart": "never"},
        expect=RestartDecision(
            EXITED, "restart='never'", recent_exits=(NOW,), unexpected=True
        ),
    ),
    Row(
        "restart='never' makes a service that could not start FATAL",
        CANNOT_START,
        spec={"restart": "never"},
        expect=RestartDecision(
            FATAL, "restart='never'", recent_exits=(NOW,), unexpected=True
        ),
    ),
    Row(
        "up to max_restarts crashes within the window are restarted",
        FAILED,
        spec={"max_restarts": 3},
        history=(990.0, 995.0),
        expect=crash(990.0, 995.0, NOW),
    ),
    Row(
        "the crash past max_restarts within the window makes it FATAL",
        FAILED,
        spec={"max_restarts": 3, "restart_window": 60},
        history=(950.0, 990.0, 995.0),
        expect=RestartDecision(
            FATAL,
            "4 unexpected exits within 60 s, more than max_restarts=3",
            recent_exits=(950.0, 990.0, 995.0, NOW),
            unexpected=True,
        ),
    ),
    Row(
        "crashes older than restart_window are forgotten",
        FAILED,
        spec={"max_restarts": 3, "restart_window": 60},
        history=(100.0, 200.0, 939.0),
        expect=crash(NOW),
    ),
    Row(
        "a crash exactly restart_window ago no longer counts",
        FAILED,
        spec={"max_restarts": 1, "restart_window": 60},
        history=(NOW - 60,),
        expect=crash(NOW),
    ),
    Row(
        "a crash just inside restart_window still counts",
        FAILED,
        spec={"max_restarts": 1, "restart_window": 60},
        history=(NOW - 59.5,),
        expect=RestartDecision(
            FATAL,
            "2 unexpected exits within 60 s, more than max_restarts=1",
            recent_exits=(NOW - 59.5, NOW),
            unexpected=True,
        ),
    ),
    Row(
        "max_restarts=0 gives up at the first crash",
        FAILED,
        spec={"max_restarts": 0},
        expect=RestartDecision(
            FATAL,
            "max_restarts=0 allows no restart",
            recent_exits=(NOW,),
            unexpected=True,
        ),
    ),
    Row(
        "max_restarts=0 still restarts a poller that exited 0: a success is no crash",
        CLEAN,
        spec={"max_restarts": 0},
        expect=RestartDecision(BACKOFF, delay=1.0),
    ),
    Row(
        "max_restarts=None restarts for ever",
        FAILED,
        spec={"max_restarts": None},
        history=tuple(NOW - 50 + i / 100 for i in range(1000)),
        expect=crash(*(NOW - 50 + i / 100 for i in range(1000)), NOW),
    ),
    Row(
        "the crash limit applies to a service that could not start as well",
        CANNOT_START,
        spec={"max_restarts": 1},
        history=(NOW - 1,),
        expect=RestartDecision(
            FATAL,
            "2 unexpected exits within 60 s, more than max_restarts=1",
            recent_exits=(NOW - 1, NOW),
            unexpected=True,
        ),
    ),
    Row(
        "successes do not count, nor forget the crashes within the window",
        CLEAN,
        spec={"max_restarts": 2},
        history=(990.0, 995.0),
        expect=RestartDecision(BACKOFF, delay=1.0, recent_exits=(990.0, 995.0)),
    ),
    Row(
        "restart='on-failure' leaves a long-running success EXITED",
        CLEAN,
        spec={"restart": "on-failure"},
        history=(990.0,),
        expect=RestartDecision(
            EXITED, "restart='on-failure' and it succeeded", recent_exits=(990.0,)
        ),
    ),
    Row(
        "a restart procmon did not schedule is not made up",
        FAILED,
        restart_delay=None,
        expect=RestartDecision(
            EXITED, "no restart was scheduled", recent_exits=(NOW,), unexpected=True
        ),
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.sentence for row in ROWS])
def test_the_restart_decision(row: Row) -> None:
    spec = ServiceSpec("svc", ["svc"], **row.spec)
    decision = decide_restart(
        spec,
        row.ended,
        wanted=row.wanted,
        stopping=row.stopping,
        recent_exits=row.history,
        restart_delay=row.restart_delay,
        now=NOW,
    )
    assert decision == row.expect


THRESHOLDS = [
    ("after a crash, a run must last stable_seconds not to back off", FAILED, {}, 60),
    ("after a signal, too", KILLED, {"stable_seconds": 30}, 30),
    ("after a failed start, too", CANNOT_START, {}, 60),
    ("after a success, a run need only last start_seconds", CLEAN, {}, 1),
    (
        "a code in success_exit_codes is a success",
        FAILED,
        {"success_exit_codes": [3], "start_seconds": 2},
        2,
    ),
    (
        "stable_seconds defaults to start_seconds when that is over 60 s",
        FAILED,
        {"start_seconds": 90},
        90,
    ),
]


@pytest.mark.parametrize(
    ("ended", "spec", "threshold"),
    [row[1:] for row in THRESHOLDS],
    ids=[row[0] for row in THRESHOLDS],
)
def test_the_backoff_threshold(
    ended: Exit, spec: Mapping[str, Any], threshold: float
) -> None:
    assert backoff_threshold(ServiceSpec("svc", ["svc"], **spec), ended) == threshold
