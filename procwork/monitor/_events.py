"""Events: what happens to services, checks, rules and the monitor, as values.

The monitor turns what happens into :class:`Event` s: a service is in a
crash loop (``service.crashloop``, and a reminder every ``repeat_every``
while it lasts), failed and is not restarted by its policy
(``service.failed``), became FATAL, or recovered (it ran ``stable_seconds``
after a crash loop, a FATAL or a failure); its log file could not be
written (``service.log_error``: a full disk, its directory gone) or is
written again (``service.log_recovered``, with the lines lost); a check
started failing (``failures`` runs in a row), is still failing (a reminder,
every ``repeat_every`` seconds) or recovered; a rule matched a process,
acted on it, or had to SIGKILL it after its grace (``rule.escalated``); the
monitor started or is stopping. Events are *state changes*: a check failing
every run for an hour is one ``check.failed`` (plus its reminders), not one
per run; a service crashing every two seconds is one ``service.crashloop``,
not one per crash.

Each start and each exit is an event too (``service.started``,
``service.exited``, ``service.restarted``: :data:`ROUTINE_EVENTS`), kept
in the recent events and logged; an alert takes them only when it names
them exactly, never through a glob (``"service.*"``, ``"*"``), so that a
crash loop is not dozens of alerts a minute.

This module says what an event holds (and how a webhook and a command
receive it) and builds the events of the supervisor's state changes
(:class:`ServiceEvents`), a check's (:func:`check_event`) and a rule's
findings (:func:`rule_events`, :func:`escalation_event`). What acts on them
is :mod:`procwork.monitor._alerts`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from procwork.supervisor import ServiceStatus

__all__ = [
    "EVENTS",
    "OUTPUT_TAIL",
    "ROUTINE_EVENTS",
    "Event",
    "ServiceEvents",
    "check_event",
    "escalation_event",
    "rule_events",
]

#: Every event the monitor sends, by name.
EVENTS = (
    "service.started",
    "service.exited",
    "service.restarted",
    "service.crashloop",
    "service.failed",
    "service.fatal",
    "service.recovered",
    "service.log_error",
    "service.log_recovered",
    "check.failed",
    "check.recovered",
    "rule.matched",
    "rule.acted",
    "rule.escalated",
    "monitor.started",
    "monitor.stopping",
)

#: One per start or exit: an alert takes them only when it names them.
ROUTINE_EVENTS = frozenset({"service.started", "service.exited", "service.restarted"})

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
        output: The end of a check's output; a service's last lines on
            stderr before it crashed.
        reminder: A repeated ``check.failed`` or ``service.crashloop``
            (``repeat_every``).
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

    Each start is ``started`` (the first) or ``restarted`` (after an exit),
    each exit (but a stop's) ``exited``: routine events (see
    :data:`ROUTINE_EVENTS`). What alerts take by default is the summary:
    ``crashloop`` once when a crash loop starts (the second crash with no
    stable run between), again as a reminder at a crash at least
    ``repeat_every`` seconds after the last one (never, by default);
    ``failed`` for a failed exit not restarted (``restart="never"``);
    ``fatal`` when the supervisor gives up; ``recovered`` when a service
    that had one of those runs ``stable_seconds``. A service stopped on
    request starts afresh.

    Args:
        emit: Takes each event.
        repeat_every: A service's ``repeat_every``, by name (0: none).
        clock: The time of the events.
    """

    def __init__(
        self,
        emit: Callable[[Event], object],
        repeat_every: Callable[[str], float],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._emit = emit
        self._repeat_every = repeat_every
        self._clock = clock
        self._down: set[str] = set()  # crash loop, failed or FATAL: not yet back
        self._looping: dict[str, float] = {}  # in a loop: when last said

    def __call__(self, status: ServiceStatus, previous: str) -> None:
        state, name, now = str(status.state), status.name, self._clock()
        if state == "STARTING" and previous != state:
            event = "service.restarted" if previous == "BACKOFF" else "service.started"
            verb = event.partition(".")[2]
            self._send(event, status, f"service {name!r} {verb}: pid {status.pid}")
        elif state == "BACKOFF" and previous not in ("STOPPING", state):
            when = status.restart_in
            self._send(
                "service.exited",
                status,
                f"service {name!r} {status.last_exit}; restarting"
                + ("" if when is None else f" in {when:.3g} s"),
            )
            if status.crash_loop:
                self._loop(status, now)
        elif state == "EXITED":
            self._send(
                "service.exited",
                status,
                f"service {name!r} {status.last_exit}; not restarted",
            )
            if status.failed:
                self._down.add(name)
                self._send(
                    "service.failed", status, f"service {name!r} {status.summary()}"
                )
        elif state == "FATAL":
            self._send("service.exited", status, f"service {name!r} {status.last_exit}")
            self._down.add(name)
            self._looping.pop(name, None)
            self._send(
                "service.fatal",
                status,
                f"service {name!r} is FATAL: "
                f"{status.last_exit}: {status.reason}; given up until started again",
            )
        elif state == "STOPPED":
            self._down.discard(name)
            self._looping.pop(name, None)
        if (
            state in ("STARTING", "RUNNING")
            and status.crashes == 0
            and name in self._down
        ):
            self._down.discard(name)
            self._looping.pop(name, None)
            self._send(
                "service.recovered",
                status,
                f"service {name!r} recovered: stable again, pid {status.pid}",
            )

    def _loop(self, status: ServiceStatus, now: float) -> None:
        """A crash of a service in a crash loop: say so once, then remind."""
        name = status.name
        said = self._looping.get(name)
        repeat = self._repeat_every(name)
        if said is not None and not (repeat and now - said >= repeat - 1e-6):
            return
        self._looping[name] = now
        self._down.add(name)
        self._send(
            "service.crashloop",
            status,
            f"service {name!r} {'is still' if said is not None else 'is'} "
            f"crash-looping: {status.summary()}",
            reminder=said is not None,
        )

    def _send(
        self, event: str, status: ServiceStatus, message: str, reminder: bool = False
    ) -> None:
        ended = event in ("service.exited", *_SAYS_WHY)
        self._emit(
            Event(
                event=event,
                name=status.name,
                state=str(status.state),
                message=message,
                time=self._clock(),
                exit_status=status.returncode if ended else None,
                # What it said before it crashed (not before an exit 0).
                output="\n".join(status.last_stderr) if ended and status.failed else "",
                reminder=reminder,
                fields={
                    "pid": status.pid,
                    "restarts": status.restarts,
                    "last_exit": status.last_exit,
                    "crashes": status.crashes,
                    "failures": status.failures,
                    "first_crash": status.first_crash,
                    "restart_in": status.restart_in,
                    "reason": status.reason,
                    "summary": status.summary(),
                },
            )
        )


# The events that carry the crash they are about: its exit and its stderr.
_SAYS_WHY = ("service.crashloop", "service.failed", "service.fatal")


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


def _rule_fields(finding: Any) -> dict[str, Any]:
    process = finding.process
    return {
        "pid": process.pid,
        "process": process.name,
        "command": finding.command,
        "reason": finding.reason,
        "action": finding.action,
    }


def rule_events(finding: Any, now: float) -> list[Event]:
    """``rule.matched`` for a finding, and ``rule.acted`` if a signal was sent."""
    fields = _rule_fields(finding)
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


def escalation_event(finding: Any, now: float) -> Event:
    """``rule.escalated``: a ``term`` rule's grace ended and what was left of
    the tree got SIGKILL (the finding of :meth:`RuleEngine.listen`)."""
    return Event(
        event="rule.escalated",
        name=finding.rule.name,
        state="sent SIGKILL",
        message=str(finding),
        time=now,
        fields=_rule_fields(finding),
    )
