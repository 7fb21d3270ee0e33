"""Periodic checks: a command run every N seconds, and what to do when it fails.

A check is the watchdog's question ("is the load sane? is the disk full?")
asked as a command: exit 0 means fine. It runs through the same scheduler as
everything else, with its own timeout and priority; a failure (non-zero
exit, timeout, or a command that cannot start) may trigger an action,
another command that runs ``critical`` by default, because it is the one
that can fix the problem. A check never overlaps itself: when its previous
run is still going at the next interval, that interval is skipped and the
skip is counted.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import attrs
from attrs import converters
from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from procwork import _validate as validate
from procwork._errors import ConfigError
from procwork._fields import keyed, spec_class
from procwork._reactor import default_reactor
from procwork._result import Result
from procwork._scheduler import PRIORITIES
from procwork._validate import MIN_INTERVAL

__all__ = ["MIN_INTERVAL", "CheckRunner", "CheckSpec", "CheckStatus"]

_log = Logger(namespace="procwork.checks")

#: Told of a check's state changes: ``(event, spec, status, reminder)``,
#: the event being ``"check.failed"`` or ``"check.recovered"``.
CheckListener = Callable[[str, "CheckSpec", "CheckStatus", bool], object]

#: Told of a run's outcome: ``(outcome, spec, status)``; the Failure of a
#: run that could not start, or was cancelled, is an outcome too.
_Done = Callable[["Result | Failure", "CheckSpec", "CheckStatus"], None]

#: How a check runs a command: ``run(argv, timeout=..., priority=...)``.
RunFunction = Callable[..., "Deferred[Result]"]

_TAIL = 400  # characters of output kept in a check's status


def _needs_host(spec: Any, attribute: Any, value: str) -> None:
    if spec.host is None:
        raise validate.Invalid("needs host")


@spec_class("check")
@attrs.frozen(field_transformer=keyed)
class CheckSpec:
    """What to run, how often, and what to do when it fails.

    Args:
        name: Unique name, used in logs and metrics.
        command: argv list, or a string split with shlex (no shell); kept
            as a tuple.
        every: Seconds between starts.
        timeout: Seconds a run may take (default: ``every``).
        priority: Scheduler priority of the check (default ``"high"``).
        on_failure: Command to run when the check fails, as ``command``
            (default none).
        on_failure_priority: Its priority (default ``"critical"``).
        action_timeout: Seconds the action may take (default 60).
        failures: Runs in a row that must fail before the check counts as
            failing and the ``check.failed`` event is sent (default 1); it
            is sent once, then ``check.recovered`` once at the next ok run.
        repeat_every: While the check stays failing, send ``check.failed``
            again (a reminder) at most this often, in seconds (default 0:
            no reminders).
        start_delay: Seconds before the first run, so a check does not fail
            while the services it checks are starting (default 0).
        host: Run ``command`` on ``"user@host:port"`` over SSH (see
            :func:`procwork.run`); ``on_failure`` still runs here. Default:
            here.
        known_hosts: known_hosts file for ``host`` (default
            ``~/.ssh/known_hosts``).
        identity: Private key file for ``host`` (default: ssh-agent, else
            ``~/.ssh/id_*``).

    Every duration also takes a string with units (``"500ms"``, ``"5s"``,
    ``"2m"``, ``"1h"``, ``"1d"``, ``"1m30s"``).

    Raises:
        ConfigError: the message names the check and the key.
    """

    name: str = attrs.field(validator=validate.text)
    command: tuple[str, ...] = attrs.field(converter=validate.command)
    every: float = attrs.field(converter=validate.duration, validator=validate.interval)
    timeout: float = attrs.field(
        default=attrs.Factory(lambda spec: spec.every, takes_self=True),
        converter=validate.duration,
        validator=validate.positive,
    )
    priority: str = attrs.field(default="high", validator=validate.one_of(PRIORITIES))
    on_failure: tuple[str, ...] | None = attrs.field(
        default=None, converter=converters.optional(validate.command)
    )
    on_failure_priority: str = attrs.field(
        default="critical", validator=validate.one_of(PRIORITIES)
    )
    action_timeout: float = attrs.field(
        default=60.0, converter=validate.duration, validator=validate.positive
    )
    failures: int = attrs.field(default=1, validator=validate.whole(1))
    repeat_every: float = attrs.field(
        default=0.0, converter=validate.duration, validator=validate.non_negative
    )
    start_delay: float = attrs.field(
        default=0.0, converter=validate.duration, validator=validate.non_negative
    )
    host: str | None = attrs.field(
        default=None, validator=validate.optional(validate.host)
    )
    known_hosts: str | None = attrs.field(
        default=None,
        validator=validate.optional(validate.text, _needs_host),
    )
    identity: str | None = attrs.field(
        default=None,
        validator=validate.optional(validate.text, _needs_host),
    )


def _remote(spec: CheckSpec) -> dict[str, Any]:
    """``host=...`` and its files for the check's command; nothing if local."""
    if spec.host is None:
        return {}
    keys = ("host", "known_hosts", "identity")
    return {k: getattr(spec, k) for k in keys if getattr(spec, k) is not None}


@dataclass
class CheckStatus:
    """What a check has done so far (one object per check)."""

    name: str
    runs: int = 0
    ok: int = 0
    failed: int = 0
    timed_out: int = 0
    skipped: int = 0
    actions: int = 0
    running: bool = False
    last_outcome: str | None = None  # "ok" | "failed" | "timed out" | "error"
    last_detail: str = ""
    last_duration: float | None = None
    last_output: str = ""
    last_started: float | None = None  # wall clock (time.time())
    last_success: float | None = None  # wall clock when the last ok run ended
    consecutive_failures: int = 0  # runs in a row that were not ok
    action_running: bool = False
    last_action: str | None = None
    failing: bool = False  # failed ``failures`` runs in a row, not yet ok
    failing_since: float | None = None  # wall clock
    _alerted: float | None = field(default=None, repr=False)
    _run: Deferred[Result] | None = field(default=None, repr=False)
    _action: Deferred[Result] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {
            key: value
            for key, value in self.__dict__.items()
            if not key.startswith("_")
        }


def _by_name(specs: Iterable[CheckSpec]) -> dict[str, CheckSpec]:
    by_name: dict[str, CheckSpec] = {}
    for spec in specs:
        if spec.name in by_name:
            raise ConfigError(f"check {spec.name!r} is defined twice")
        by_name[spec.name] = spec
    return by_name


class CheckRunner:
    """Runs a set of checks on their intervals. Call from the reactor thread.

    Args:
        specs: The checks.
        run: Runs one command: ``procwork.run``-compatible (tests inject).
        reactor: Clock for the intervals; default the global reactor.
        wall_clock: Time source for ``last_started`` (default time.time).
    """

    def __init__(
        self,
        specs: Iterable[CheckSpec],
        *,
        run: RunFunction | None = None,
        reactor: Any = None,  # LoopingCall.clock is a zope IReactorTime to mypy
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._specs = _by_name(specs)
        if run is None:
            from procwork._api import run as procwork_run

            run = procwork_run
        self._run = run
        if reactor is None:
            reactor = default_reactor()
        self._reactor = reactor
        self._wall_clock = wall_clock
        self._status = {name: CheckStatus(name) for name in self._specs}
        self._loops: dict[str, LoopingCall] = {}
        self._delays: dict[str, Any] = {}
        self._listeners: list[CheckListener] = []
        self._started = False

    def listen(self, listener: CheckListener) -> None:
        """Call ``listener(event, spec, status, reminder)`` when a check
        starts failing (``failures`` runs in a row), at each ``repeat_every``
        reminder while it fails, and once when it recovers."""
        self._listeners.append(listener)

    def _tell(
        self, event: str, spec: CheckSpec, status: CheckStatus, reminder: bool
    ) -> None:
        for listener in list(self._listeners):
            try:
                listener(event, spec, status, reminder)
            except Exception:
                _log.failure("a check listener failed")

    @property
    def status(self) -> Mapping[str, CheckStatus]:
        """Each check's :class:`CheckStatus`, by name."""
        return self._status

    def start(self) -> None:
        """Start every check now (or after its ``start_delay``), then on its
        interval."""
        self._started = True
        for name, spec in self._specs.items():
            if name in self._loops:
                continue
            loop = LoopingCall(self._tick, spec)
            loop.clock = self._reactor
            self._loops[name] = loop
            if spec.start_delay:
                self._delays[name] = self._reactor.callLater(
                    spec.start_delay, self._start_loop, name, loop, spec
                )
            else:
                loop.start(spec.every, now=True)

    def _start_loop(self, name: str, loop: LoopingCall, spec: CheckSpec) -> None:
        self._delays.pop(name, None)
        loop.start(spec.every, now=True)

    def stop(self) -> Deferred[Any]:
        """Stop the intervals and cancel the runs and actions in flight.

        Cancelling a :func:`procwork.run` Deferred fails it at once and
        terminates its process group (SIGTERM, SIGKILL after its grace), so
        the Deferred returned here fires once every run has been cancelled,
        not once every process has been reaped. A cancelled run is not an
        outcome of the check: it is not counted and triggers no action.
        """
        self._started = False
        pending = [d for name in self._specs for d in self._stop_one(name)]
        return DeferredList(pending, consumeErrors=True)

    def update(self, specs: Iterable[CheckSpec]) -> Deferred[Any]:
        """Take a new set of checks, keeping what the unchanged ones know.

        A check is known by its name. One whose spec is equal to the running
        one's is not touched: its interval goes on, a run in flight goes on,
        and its :class:`CheckStatus` (failure count, failing state, when it
        last alerted, its last result) is kept. One whose spec differs is
        stopped as :meth:`stop` stops checks and starts afresh with a new
        status, as a new one does; one no longer given is stopped and
        forgotten. New and changed checks start at once (or after their
        ``start_delay``) if the runner is started, else at :meth:`start`.

        Args:
            specs: Every check from now on, in the order to report them.

        Returns:
            A Deferred that fires once the runs and actions of the stopped
            checks have been cancelled (see :meth:`stop`).

        Raises:
            ConfigError: Two checks share a name; nothing is changed.
        """
        new = _by_name(specs)
        pending: list[Deferred[Any]] = []
        for name, spec in self._specs.items():
            if new.get(name) != spec:
                pending += self._stop_one(name)
                del self._status[name]
        self._specs = new
        self._status = {
            name: self._status.get(name) or CheckStatus(name) for name in new
        }
        if self._started:
            self.start()
        return DeferredList(pending, consumeErrors=True)

    def _stop_one(self, name: str) -> list[Deferred[Any]]:
        """End one check's interval; cancel its run and action in flight.

        Returns:
            The Deferreds cancelled.
        """
        loop = self._loops.pop(name, None)
        if loop is not None and loop.running:
            loop.stop()
        delayed = self._delays.pop(name, None)
        if delayed is not None and delayed.active():
            delayed.cancel()
        status = self._status[name]
        pending: list[Deferred[Any]] = []
        for d in (status._run, status._action):
            if d is not None and not d.called:
                d.cancel()
                pending.append(d)
        return pending

    # -- one interval ------------------------------------------------------

    def _tick(self, spec: CheckSpec) -> None:
        status = self._status[spec.name]
        if status.running:
            status.skipped += 1
            _log.warn(
                "check {check} skipped: its previous run is still going",
                check=spec.name,
                skipped=status.skipped,
            )
            return
        status.running = True
        status.runs += 1
        status.last_started = self._wall_clock()
        options = {"timeout": spec.timeout, "priority": spec.priority, **_remote(spec)}
        status._run = self._start(spec.command, options, self._finished, spec, status)

    def _start(
        self,
        argv: Sequence[str],
        options: Mapping[str, Any],
        done: _Done,
        spec: CheckSpec,
        status: CheckStatus,
    ) -> Deferred[Result] | None:
        """Run ``argv`` (a check's command or its action) with ``options``
        (``timeout=``, ``priority=``, ``host=`` ...) and hand its outcome to
        ``done(outcome, spec, status)``.

        A ``run`` that raises instead of returning a Deferred (a command that
        cannot start) is an outcome too: ``done`` gets its Failure at once.

        Returns:
            The run's Deferred while it is pending, to be kept for
            :meth:`stop` to cancel; None once it has fired or could not start
            (``done`` has then run already and cleared that field, so a run
            that ended at once leaves nothing to cancel).
        """
        try:
            d = self._run(list(argv), **options)
        except Exception:
            done(Failure(), spec, status)
            return None
        d.addBoth(done, spec, status)
        return None if d.called else d

    def _finished(
        self, outcome: Result | Failure, spec: CheckSpec, status: CheckStatus
    ) -> None:
        status.running = False
        status._run = None
        if isinstance(outcome, Failure):
            if outcome.check(CancelledError):
                return  # stopped; not an outcome of the check
            status.last_outcome = "error"
            status.last_detail = str(outcome.value)
            status.last_duration = None
            status.last_output = ""
        else:
            result = outcome
            status.last_duration = result.duration
            tail = (result.stdout + result.stderr)[-_TAIL:]
            status.last_output = tail.decode("utf-8", "replace")
            status.last_detail = result.describe()
            if result.ok:
                if status.last_outcome != "ok":  # first result, or recovered
                    _log.info(
                        "check {check} ok: {output}",
                        check=spec.name,
                        output=status.last_output.strip()[-120:],
                    )
                status.last_outcome = "ok"
                status.ok += 1
                status.last_success = self._wall_clock()
                status.consecutive_failures = 0
                if status.failing:
                    status.failing = False
                    status.failing_since = None
                    _log.info(
                        "check {check} recovered",
                        check=spec.name,
                        event="check.recovered",
                    )
                    self._tell("check.recovered", spec, status, False)
                return
            if result.timed_out:
                status.last_outcome = "timed out"
                status.timed_out += 1
            else:
                status.last_outcome = "failed"
        if status.last_outcome != "timed out":
            status.failed += 1
        status.consecutive_failures += 1
        # The line says why: the end of the check's output, on one line.
        why = " ".join(status.last_output.split())[-200:]
        _log.warn(
            "check {check} {outcome}: {detail}{why}",
            check=spec.name,
            outcome=status.last_outcome,
            detail=status.last_detail,
            why=f": {why}" if why else "",
            output=status.last_output,
            consecutive_failures=status.consecutive_failures,
        )
        self._state_change(spec, status)
        self._act(spec, status)

    def _state_change(self, spec: CheckSpec, status: CheckStatus) -> None:
        """A failed run: the check may now be failing, or due a reminder."""
        now = self._wall_clock()
        if not status.failing:
            if status.consecutive_failures < spec.failures:
                return
            status.failing = True
            status.failing_since = now
            status._alerted = now
            self._tell("check.failed", spec, status, False)
        elif (
            spec.repeat_every
            and status._alerted is not None
            and now - status._alerted >= spec.repeat_every - 1e-6
        ):
            status._alerted = now
            self._tell("check.failed", spec, status, True)

    def _act(self, spec: CheckSpec, status: CheckStatus) -> None:
        if spec.on_failure is None:
            return
        if status.action_running:
            _log.warn(
                "check {check}: action not started, the previous one is still going",
                check=spec.name,
            )
            return
        status.action_running = True
        status.actions += 1
        _log.warn(
            "check {check}: running action {action}",
            check=spec.name,
            action=shlex.join(spec.on_failure),
        )
        options = {"timeout": spec.action_timeout, "priority": spec.on_failure_priority}
        status._action = self._start(
            spec.on_failure, options, self._action_done, spec, status
        )

    def _action_done(
        self, outcome: Result | Failure, spec: CheckSpec, status: CheckStatus
    ) -> None:
        status.action_running = False
        status._action = None
        if isinstance(outcome, Failure):
            if outcome.check(CancelledError):
                return
            status.last_action = f"error: {outcome.value}"
        else:
            status.last_action = outcome.describe()
        _log.info(
            "check {check}: action {outcome}",
            check=spec.name,
            outcome=status.last_action,
        )
