"""Whether a service whose process ended is restarted: one pure function.

procmon schedules a restart at every exit; the supervisor keeps or cancels
it as :func:`decide_restart` says. Each row of the table below is one rule
of the restart policy and the restart limit, read as a sentence; the
decision is compared whole (state, reason, delay and the restart history to
keep), so a row fails on any change of the verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from procwork.supervisor import ServiceSpec, ServiceState
from procwork.supervisor._restart import Exit, RestartDecision, decide_restart

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
    ran: float | None = None


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
        "stopping a service keeps its restart history as it is",
        CLEAN,
        stopping=True,
        history=(1.0, 2.0),
        expect=RestartDecision(STOPPED, recent_restarts=(1.0, 2.0)),
    ),
    Row(
        "restart='always' restarts a service that exited cleanly",
        CLEAN,
        expect=RestartDecision(BACKOFF, delay=1.0, recent_restarts=(NOW,)),
    ),
    Row(
        "restart='always' restarts a service that failed",
        FAILED,
        expect=RestartDecision(BACKOFF, delay=1.0, recent_restarts=(NOW,)),
    ),
    Row(
        "restart='always' retries a service that could not start",
        CANNOT_START,
        expect=RestartDecision(BACKOFF, delay=1.0, recent_restarts=(NOW,)),
    ),
    Row(
        "the restart waits out the delay procmon's backoff scheduled",
        FAILED,
        restart_delay=8.0,
        expect=RestartDecision(BACKOFF, delay=8.0, recent_restarts=(NOW,)),
    ),
    Row(
        "a restart due at once has no delay",
        FAILED,
        restart_delay=0.0,
        expect=RestartDecision(BACKOFF, delay=0.0, recent_restarts=(NOW,)),
    ),
    Row(
        "restart='on-failure' restarts a service that exited with a failing code",
        FAILED,
        spec={"restart": "on-failure"},
        expect=RestartDecision(BACKOFF, delay=1.0, recent_restarts=(NOW,)),
    ),
    Row(
        "restart='on-failure' restarts a service killed by a signal",
        KILLED,
        spec={"restart": "on-failure"},
        expect=RestartDecision(BACKOFF, delay=1.0, recent_restarts=(NOW,)),
    ),
    Row(
        "restart='on-failure' restarts a service that could not start",
        CANNOT_START,
        spec={"restart": "on-failure"},
        expect=RestartDecision(BACKOFF, delay=1.0, recent_restarts=(NOW,)),
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
        "exit code 0 is a failure when success_exit_codes leaves it out",
        CLEAN,
        spec={"restart": "on-failure", "success_exit_codes": {3}},
        expect=RestartDecision(BACKOFF, delay=1.0, recent_restarts=(NOW,)),
    ),
    Row(
        "restart='never' leaves a service that exited cleanly EXITED",
        CLEAN,
        spec={"restart": "never"},
        expect=RestartDecision(EXITED, "restart='never'"),
    ),
    Row(
        "restart='never' leaves a service that failed EXITED",
        FAILED,
        spec={"restart": "never"},
        expect=RestartDecision(EXITED, "restart='never'"),
    ),
    Row(
        "restart='never' makes a service that could not start FATAL",
        CANNOT_START,
        spec={"restart": "never"},
        expect=RestartDecision(FATAL, "restart='never'"),
    ),
    Row(
        "restarts below max_restarts within the window go ahead",
        FAILED,
        spec={"max_restarts": 3},
        history=(990.0, 995.0),
        expect=RestartDecision(BACKOFF, delay=1.0, recent_restarts=(990.0, 995.0, NOW)),
    ),
    Row(
        "the exit that would need one restart past max_restarts makes it FATAL",
        FAILED,
        spec={"max_restarts": 3, "restart_window": 60},
        history=(950.0, 990.0, 995.0),
        expect=RestartDecision(
            FATAL,
            "3 restarts within 60 s reached max_restarts=3",
            recent_restarts=(950.0, 990.0, 995.0),
        ),
    ),
    Row(
        "restarts older than restart_window are forgotten",
        FAILED,
        spec={"max_restarts": 3, "restart_window": 60},
        history=(100.0, 200.0, 939.0),
        expect=RestartDecision(BACKOFF, delay=1.0, recent_restarts=(NOW,)),
    ),
    Row(
        "a restart exactly restart_window ago no longer counts",
        FAILED,
        spec={"max_restarts": 1, "restart_window": 60},
        history=(NOW - 60,),
        expect=RestartDecision(BACKOFF, delay=1.0, recent_restarts=(NOW,)),
    ),
    Row(
        "a restart just inside restart_window still counts",
        FAILED,
        spec={"max_restarts": 1, "restart_window": 60},
        history=(NOW - 59.5,),
        expect=RestartDecision(
            FATAL,
            "1 restarts within 60 s reached max_restarts=1",
            recent_restarts=(NOW - 59.5,),
        ),
    ),
    Row(
        "max_restarts=0 allows no restart at all",
        FAILED,
        spec={"max_restarts": 0},
        expect=RestartDecision(FATAL, "max_restarts=0 allows no restart"),
    ),
    Row(
        "max_restarts=None restarts for ever",
        FAILED,
        spec={"max_restarts": None},
        history=tuple(NOW - 50 + i / 100 for i in range(1000)),
        expect=RestartDecision(
            BACKOFF,
            delay=1.0,
            recent_restarts=(*(NOW - 50 + i / 100 for i in range(1000)), NOW),
        ),
    ),
    Row(
        "the restart limit applies to a service that could not start as well",
        CANNOT_START,
        spec={"max_restarts": 1},
        history=(NOW - 1,),
        expect=RestartDecision(
            FATAL,
            "1 restarts within 60 s reached max_restarts=1",
            recent_restarts=(NOW - 1,),
        ),
    ),
    # Only failed starts count toward FATAL (supervisord's rule).
    Row(
        "a service that ran start_seconds and exited 0 forgets its restarts",
        CLEAN,
        spec={"max_restarts": 3, "start_seconds": 1},
        history=(990.0, 995.0, 999.0),
        ran=1.0,
        expect=RestartDecision(BACKOFF, delay=1.0, recent_restarts=(NOW,)),
    ),
    Row(
        "a service that ran longer than start_seconds and failed is restarted too",
        FAILED,
        spec={"max_restarts": 3, "start_seconds": 1},
        history=(990.0, 995.0, 999.0),
        ran=30.0,
        expect=RestartDecision(BACKOFF, delay=1.0, recent_restarts=(NOW,)),
    ),
    Row(
        "a service killed by a signal after start_seconds is restarted afresh",
        KILLED,
        spec={"max_restarts": 1, "start_seconds": 1},
        history=(999.0,),
        ran=5.0,
        expect=RestartDecision(BACKOFF, delay=1.0, recent_restarts=(NOW,)),
    ),
    Row(
        "an exit within start_seconds is a failed start and still counts",
        CLEAN,
        spec={"max_restarts": 3, "start_seconds": 1},
        history=(990.0, 995.0, 999.0),
        ran=0.5,
        expect=RestartDecision(
            FATAL,
            "3 restarts within 60 s reached max_restarts=3",
            recent_restarts=(990.0, 995.0, 999.0),
        ),
    ),
    Row(
        "with start_seconds=0 every start succeeds, so it is never given up",
        FAILED,
        spec={"max_restarts": 1, "start_seconds": 0},
        history=(999.0,),
        ran=0.0,
        expect=RestartDecision(BACKOFF, delay=1.0, recent_restarts=(NOW,)),
    ),
    Row(
        "a service of unknown run time counts as a failed start",
        CLEAN,
        spec={"max_restarts": 1},
        history=(999.0,),
        ran=None,
        expect=RestartDecision(
            FATAL,
            "1 restarts within 60 s reached max_restarts=1",
            recent_restarts=(999.0,),
        ),
    ),
    Row(
        "max_restarts=0 still gives up at the exit of a service that had started",
        CLEAN,
        spec={"max_restarts": 0},
        ran=100.0,
        expect=RestartDecision(FATAL, "max_restarts=0 allows no restart"),
    ),
    Row(
        "restart='on-failure' still leaves a long-running success EXITED",
        CLEAN,
        spec={"restart": "on-failure"},
        ran=100.0,
        expect=RestartDecision(EXITED, "restart='on-failure' and it succeeded"),
    ),
    Row(
        "a restart procmon did not schedule is not made up",
        FAILED,
        restart_delay=None,
        expect=RestartDecision(EXITED, "no restart was scheduled"),
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
        recent_restarts=row.history,
        restart_delay=row.restart_delay,
        now=NOW,
        ran=row.ran,
    )
    assert decision == row.expect
