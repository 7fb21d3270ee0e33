"""Events: what happens to services, checks, rules and the monitor, as values.

The monitor turns what happens into :class:`Event` s: a service started,
exited unexpectedly, was restarted, became FATAL or recovered; its log file
could not be written (``service.log_error``: a full disk, its directory
gone) or is written again (``service.log_recovered``, with the lines lost);
the OOM killer killed a process in its cgroup (``service.oom_kill``); it
ended leaving processes in its cgroup (``service.leftovers``);
a check started failing (``failures`` runs in a row), is still failing (a
reminder, every ``repeat_every`` seconds) or recovered; a rule matched a
process or acted on it; the monitor started or is stopping. Events are
*state changes*: a check failing every run for an hour is one
``check.failed`` (plus its reminders), not one per run.

This module says what an event holds (and how a webhook and a command
receive it) and builds the events of the supervisor's state changes
(:class:`ServiceEvents`), a check's (:func:`check_event`) and a rule's
findings (:func:`rule_events`). What acts on them is
:mod:`procwork.monitor._alerts`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "EVENTS",
    "OUTPUT_TAIL",
    "Event",
    "ServiceEvents",
    "check_event",
    "rule_events",
]

#: Every event the monitor sends, by name.
EVENTS = (
    "service.started",
    "service.exited",
    "service.restarted",
    "service.fatal",
    "service.recovered",
    "service.log_error",
    "service.log_recovered",
    "service.oom_kill",
    "service.leftovers",
    "check.failed",
    "check.recovered",
    "rule.matched",
    "rule.acted",
    "monitor.started",
    "monitor.stopping",
)

OUTPUT_TAIL = 2000
"""Characters of output in an event (and in an alert's status)."""


@dataclass(frozen=True)
class Event:
    """Something that happened, as alerts and the status page see it.

    Attributes:
        event: One of :data:`EVENTS`, e.g. ``"check.failed"``.
        name: The service, check or rule (the monitor's source for
            ``monitor.*``).
        state: The state it is now in: a service state (``"FATAL"``), a
            check's ``"failing"`` / ``"ok"``, a rule's action.
        message: One line for people.
        time: When, in seconds since the epoch.
        exit_status: A service's exit code or a check's (None: none, or
            killed by a signal).
        duration: Seconds the process ran, or the check took.
        output: The end of a check's output.
        reminder: A repeated ``check.failed`` (``repeat_every``).
        fields: More, by name (JSON-ready).
    """

    event: str
    name: str
    state: str
    message: str
    time: float = field(default_factory=time.time)
    exit_status: int | None = None
    duration: float | None = None
    output: str = ""
    reminder: bool = False
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """``"service"``, ``"check"``, ``"rule"`` or ``"monitor"``."""
        return self.event.partition(".")[0]

    def to_dict(self) -> dict[str, Any]:
        """The JSON a webhook receives."""
        return {
            "event": self.event,
            "kind": self.kind,
            "name": self.name,
            "state": self.state,
            "message": self.message,
            "time": self.time,
            "exit_status": self.exit_status,
            "duration": self.duration,
            "output": self.output[-OUTPUT_TAIL:],
            "reminder": self.reminder,
            "fields": dict(self.fields),
        }

    def environ(self) -> dict[str, str]:
        """The environment variables a command alert gets (added to the
        monitor's): ``PROCWORK_EVENT``, ``PROCWORK_KIND``, ``PROCWORK_NAME``,
        ``PROCWORK_STATE``, ``PROCWORK_MESSAGE``, ``PROCWORK_TIME``,
        ``PROCWORK_EXIT_STATUS``, ``PROCWORK_DURATION``, ``PROCWORK_OUTPUT``,
        ``PROCWORK_REMINDER`` (``"1"`` or ``"0"``); an unknown exit status or
        duration is the empty string."""
        return {
            "PROCWORK_EVENT": self.event,
            "PROCWORK_KIND": self.kind,
            "PROCWORK_NAME": self.name,
            "PROCWORK_STATE": self.state,
            "PROCWORK_MESSAGE": self.message,
            "PROCWORK_TIME": f"{self.time:.3f}",
            "PROCWORK_EXIT_STATUS": ""
            if self.exit_status is None
            else str(self.exit_status),
            "PROCWORK_DURATION": ""
            if self.duration is None
            else f"{self.duration:.3f}",
            # An environment variable cannot hold NUL.
            "PROCWORK_OUTPUT": self.output[-OUTPUT_TAIL:].replace("\0", ""),
            "PROCWORK_REMINDER": "1" if self.reminder else "0",
        }


class ServiceEvents:
    """Turns a service's state changes into events (a supervisor listener).

    ``started`` is its first start, ``restarted`` a start after an exit,
    ``exited`` an exit it is restarted from (or a failed exit it is not),
    ``fatal`` giving up, and ``recovered`` RUNNING again after an exit.
    """

    def __init__(
        self,
        emit: Callable[[Event], object],
        success_codes: Callable[[str], Iterable[int]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._emit = emit
        self._success_codes = success_codes
        self._clock = clock
        self._down: set[str] = set()  # exited unexpectedly, not yet back

    def __call__(self, status: Any, previous: str) -> None:
        state = str(status.state)
        name = status.name
        event: str | None = None
        message = f"service {name!r} is {state}"
        if state == "STARTING":
            event = "service.restarted" if previous == "BACKOFF" else "service.started"
            message = f"service {name!r} {event.partition('.')[2]}: pid {status.pid}"
        elif state == "BACKOFF" and previous != "STOPPING":
            event = "service.exited"
            message = f"service {name!r} {status.last_exit}; restarting"
        elif state == "EXITED" and status.returncode not in set(
            self._success_codes(name)
        ):
            event = "service.exited"
            message = f"service {name!r} {status.last_exit}; not restarted"
        elif state == "FATAL":
            event = "service.fatal"
            message = f"service {name!r} {status.last_exit}; given up, it is FATAL"
        elif state == "RUNNING" and name in self._down:
            event = "service.recovered"
            message = f"service {name!r} recovered: running again, pid {status.pid}"
        if event in ("service.exited", "service.fatal"):
            self._down.add(name)
        elif event == "service.recovered" or state == "STOPPED":
            self._down.discard(name)
        if event is None:
            return
        self._emit(
            Event(
                event=event,
                name=name,
                state=state,
                message=message,
                time=self._clock(),
                exit_status=status.returncode
                if event in ("service.exited", "service.fatal")
                else None,
                fields={
                    "pid": status.pid,
                    "restarts": status.restarts,
                    "last_exit": status.last_exit,
                },
            )
        )


def check_event(
    event: str, spec: Any, status: Any, reminder: bool, now: float
) -> Event:
    """The event of a check's state change (a :class:`CheckRunner` listener's
    arguments)."""
    failed = event == "check.failed"
    exit_status = None
    detail = status.last_detail or ""
    if detail.startswith("exited "):
        try:
            exit_status = int(detail.split()[1])
        except (IndexError, ValueError):
            exit_status = None
    message = (
        f"check {spec.name} {'still ' if reminder else ''}failing "
        f"({status.consecutive_failures} "
        f"run{'' if status.consecutive_failures == 1 else 's'} in a row): {detail}"
        if failed
        else f"check {spec.name} recovered"
    )
    return Event(
        event=event,
        name=spec.name,
        state="failing" if failed else "ok",
        message=message,
        time=now,
        exit_status=exit_status,
        duration=status.last_duration,
        output=status.last_output,
        reminder=reminder,
        fields={
            "outcome": status.last_outcome,
            "consecutive_failures": status.consecutive_failures,
            "failing_since": status.failing_since,
        },
    )


def rule_events(finding: Any, now: float) -> list[Event]:
    """``rule.matched`` for a finding, and ``rule.acted`` if a signal was sent."""
    process = finding.process
    fields = {
        "pid": process.pid,
        "process": process.name,
        "reason": finding.reason,
        "action": finding.action,
    }
    events = [
        Event(
            event="rule.matched",
            name=finding.rule.name,
            state="matched",
            message=str(finding),
            time=now,
            fields=fields,
        )
    ]
    if finding.action.startswith("sent "):
        events.append(
            Event(
                event="rule.acted",
                name=finding.rule.name,
                state=finding.action,
                message=str(finding),
                time=now,
                fields=fields,
            )
        )
    return events
