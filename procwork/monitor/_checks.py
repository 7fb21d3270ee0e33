"""Periodic checks: a question asked every N seconds, and what to do when it fails.

A check is the watchdog's question ("is the load sane? is the disk full?").
It is asked by a command (exit 0 means fine), or in the monitor itself,
without a fork: ``disk``, ``load``, ``memory``, ``file``, ``process``
(:mod:`procwork.monitor._probes`) and ``python`` (a function of the user's,
:mod:`procwork.monitor._pyprobe`). This module is the schedule and the state
of every kind: each check runs on its interval with its own timeout, never
overlapping itself (an interval whose previous run is still going is
skipped and the skip counted); ``failures`` failed runs in a row make it
failing, the next ok run recovers it. When it starts failing (once per
failing episode, again at most every ``repeat_every``) its actions run: an
``on_failure`` command (``critical`` by default, because it is the one that
can fix the problem), and, with no fork, ``restart`` of services or a
``signal`` to ``services``.
"""

from __future__ import annotations

import functools
import math
import os
import shlex
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    fail,
    maybeDeferred,
)
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

import untwisted
from procwork._errors import ConfigError
from procwork._reactor import default_reactor
from procwork._result import Result
from procwork._validate import MIN_INTERVAL
from procwork.monitor import _netprobe as netprobe
from procwork.monitor._checkspec import CheckSpec
from procwork.monitor._probes import InThread, OneThread, Verdict, native_probe
from procwork.monitor._proctable import ProcessTable
from procwork.monitor._pyprobe import PythonProbe

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


class ServiceControl(Protocol):
    """What a check's ``restart`` and ``signal`` act on (a Supervisor)."""

    def restart(self, name: str) -> Deferred[None]:
        """Stop the service, then start it again."""

    def signal_service(self, name: str, signum: int | str) -> None:
        """Send a signal to the service's process group."""


_TAIL = 400  # characters of output kept in a check's status

# The probes asked on the reactor's thread: they read a few hundred bytes of
# /proc (which never hangs), and need no thread, which, like a fork, cannot
# be had when the pid limit is reached (threads count towards it).
_INLINE = ("load", "memory")

#: Checks that share an interval start in slots this long (seconds), those
#: of a slot together, in one turn of the reactor: a wake-up for each check
#: would cost twice the CPU (measured: 100 http checks a second took 12.8 %
#: of a core each at its own instant, 6.5 % in 50 ms slots, 6.1 % all at
#: once), and each waits only for the few others of its slot.
SLOT = 0.05

#: Checks that share an interval are spread over its first SPREAD seconds
#: at most: enough slots that a hundred checks do not fall due together,
#: while a check every five minutes still gives its first result within a
#: second of the monitor's start, as an operator expects.
SPREAD = 1.0

# Seconds past its timeout an http or tcp check is given to say what timed
# out before the runner cancels it.
_NET_GRACE = 1.0


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
    kind: str = "command"  # see KINDS
    target: str = ""  # what it looks at (CheckSpec.target)
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
    total_duration: float = 0.0  # of every finished run (seconds)
    last_output: str = ""
    last_started: float | None = None  # wall clock (time.time())
    last_success: float | None = None  # wall clock when the last ok run ended
    consecutive_failures: int = 0  # runs in a row that were not ok
    action_running: bool = False
    last_action: str | None = None
    failing: bool = False  # failed ``failures`` runs in a row, not yet ok
    failing_since: float | None = None  # wall clock
    _alerted: float | None = field(default=None, repr=False)
    _run: Deferred[Any] | None = field(default=None, repr=False)
    _action: Deferred[Result] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {
            key: value
            for key, value in self.__dict__.items()
            if not key.startswith("_")
        }


def _new_status(spec: CheckSpec) -> CheckStatus:
    return CheckStatus(spec.name, kind=spec.kind, target=spec.target)


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
        services: What ``restart`` and ``signal`` act on (the monitor's
            supervisor); without it those actions are logged as impossible.
        in_thread: Runs a function in a thread to a Deferred (default the
            reactor's thread pool): the native probes and python functions.
        as_deferred: Runs a python check's generator (a clockwork task) or
            coroutine to a Deferred (default ``untwisted.lowlevel.as_deferred``:
            a generator becomes a task of the default clockwork worker).
        process_table: Where ``process`` checks look (default ``/proc``).
    """

    def __init__(
        self,
        specs: Iterable[CheckSpec],
        *,
        run: RunFunction | None = None,
        reactor: Any = None,  # LoopingCall.clock is a zope IReactorTime to mypy
        wall_clock: Callable[[], float] = time.time,
        services: ServiceControl | None = None,
        in_thread: InThread | None = None,
        as_deferred: Callable[[Any], Deferred[Any]] | None = None,
        process_table: ProcessTable | None = None,
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
        self._services = services
        self._in_thread = in_thread
        self._as_deferred = as_deferred
        self._process_table = process_table
        self._probes: dict[str, Callable[[], Deferred[Verdict]]] = {}
        self._status = {name: _new_status(spec) for name, spec in self._specs.items()}
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
        interval.

        Checks that share an interval and were given no ``start_delay`` are
        spread over it instead: each starts at its own place in the
        interval's first second (see :func:`place`), so
        that a hundred checks ``every = 1`` do not all fall due at the same
        instant and wait for one another (``start_delay = 0`` starts one at
        once all the same).
        """
        self._started = True
        shared = Counter(s.every for s in self._specs.values() if s.start_delay is None)
        for name, spec in self._specs.items():
            if name in self._loops:
                continue
            loop = LoopingCall(self._tick, spec)
            loop.clock = self._reactor
            self._loops[name] = loop
            if spec.start_delay:
                delay = spec.start_delay
            elif spec.start_delay is None and shared[spec.every] > 1:
                # Anchored on the clock, not on the start: a check keeps its
                # place (within the spread) across restarts of the monitor.
                span = min(spec.every, SPREAD)
                delay = (place(spec) - self._reactor.seconds()) % span
            else:
                loop.start(spec.every, now=True)
                continue
            self._delays[name] = self._reactor.callLater(
                delay, self._start_loop, name, loop, spec
            )

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
        forgotten. New and changed checks start as :meth:`start` starts
        them (at once, after their ``start_delay``, or at their place in a
        shared interval) if the runner is started, else at :meth:`start`.

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
                self._probes.pop(name, None)
        self._specs = new
        self._status = {
            name: self._status.get(name) or _new_status(spec)
            for name, spec in new.items()
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
        if spec.command is None:
            status._run = self._ask(spec, status)
            return
        options = {"timeout": spec.timeout, "priority": spec.priority, **_remote(spec)}
        status._run = self._start(spec.command, options, self._finished, spec, status)

    # -- the checks the monitor answers itself -------------------------------

    def _probe(self, spec: CheckSpec) -> Callable[[], Deferred[Verdict]]:
        """The check's probe, made at its first run and kept with its state."""
        probe = self._probes.get(spec.name)
        if probe is None:
            if self._in_thread is None:
                self._in_thread = _reactor_threads(self._reactor)
            thread = OneThread(self._in_thread, self._reactor)
            if spec.http is not None or spec.tcp is not None:
                run = self._as_deferred or untwisted.lowlevel.as_deferred
                probe = functools.partial(_net, run, spec)
            elif spec.python is not None:
                probe = PythonProbe(
                    spec.python,
                    spec.module_dir or os.getcwd(),
                    one_thread=thread,
                    as_deferred=self._as_deferred or untwisted.lowlevel.as_deferred,
                )
            elif spec.kind in _INLINE:
                probe = functools.partial(maybeDeferred, native_probe(spec))
            else:
                function = native_probe(spec, self._process_table)
                probe = functools.partial(thread, function)
            self._probes[spec.name] = probe
        return probe

    def _ask(self, spec: CheckSpec, status: CheckStatus) -> Deferred[Any] | None:
        """Start a native or python check's run, bounded by its timeout.

        Returns:
            Its Deferred while it is pending (for :meth:`stop` to cancel).
        """
        started = self._reactor.seconds()
        timer: list[Any] = []
        try:
            d = self._probe(spec)()
        except Exception:
            d = fail()

        def timed_out() -> None:
            timer.append(True)  # the CancelledError to come is a timeout
            d.cancel()

        # An http or tcp check bounds itself with its timeout, saying what
        # timed out (connecting, reading); this bound, later, is a backstop.
        bound = spec.timeout + (_NET_GRACE if spec.kind in ("http", "tcp") else 0)
        timer.append(self._reactor.callLater(bound, timed_out))

        def done(outcome: Verdict | Failure) -> None:
            if timer[0].active():
                timer[0].cancel()
            status.running = False
            status._run = None
            duration = self._reactor.seconds() - started
            if isinstance(outcome, Verdict):
                word = "ok" if outcome.ok else "failed"
                word = "timed out" if outcome.timed_out else word
                self._judged(spec, status, word, outcome.message, "", duration)
            elif not outcome.check(CancelledError):
                detail = f"error: {outcome.getErrorMessage()}"
                self._judged(spec, status, "error", detail, "", duration)
            elif len(timer) > 1:
                detail = f"timed out after {spec.timeout:g} s"
                self._judged(spec, status, "timed out", detail, "", duration)
            # else: stopped, not an outcome of the check

        d.addBoth(done)
        return None if d.called else d

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
            self._judged(spec, status, "error", str(outcome.value), "", None)
            return
        result = outcome
        tail = (result.stdout + result.stderr)[-_TAIL:].decode("utf-8", "replace")
        word = "ok" if result.ok else "timed out" if result.timed_out else "failed"
        self._judged(spec, status, word, result.describe(), tail, result.duration)

    def _judged(
        self,
        spec: CheckSpec,
        status: CheckStatus,
        outcome: str,
        detail: str,
        output: str,
        duration: float | None,
    ) -> None:
        """Record a run's outcome (``"ok"``, ``"failed"``, ``"timed out"``,
        ``"error"``): counts, the failing state, events and actions."""
        status.last_duration = duration
        status.total_duration += duration or 0.0
        status.last_output = output
        status.last_detail = detail
        if outcome == "ok":
            self._ok(spec, status)
            return
        status.last_outcome = outcome
        if outcome == "timed out":
            status.timed_out += 1
        else:
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

    def _ok(self, spec: CheckSpec, status: CheckStatus) -> None:
        if status.last_outcome != "ok":  # first result, or recovered
            said = status.last_output.strip()[-120:] or status.last_detail
            _log.info("check {check} ok: {output}", check=spec.name, output=said)
        status.last_outcome = "ok"
        status.ok += 1
        status.last_success = self._wall_clock()
        status.consecutive_failures = 0
        if status.failing:
            status.failing = False
            status.failing_since = None
            _log.info(
                "check {check} recovered", check=spec.name, event="check.recovered"
            )
            self._tell("check.recovered", spec, status, False)

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
            self._act(spec, status)
        elif (
            spec.repeat_every
            and status._alerted is not None
            and now - status._alerted >= spec.repeat_every - 1e-6
        ):
            status._alerted = now
            self._tell("check.failed", spec, status, True)
            self._act(spec, status)

    def _act(self, spec: CheckSpec, status: CheckStatus) -> None:
        """The check's actions, once per failing episode (and reminder)."""
        if spec.restart or spec.signal is not None:
            status.actions += 1
            status.last_action = self._act_on_services(spec)
            _log.warn(
                "check {check}: {action}", check=spec.name, action=status.last_action
            )
        if spec.on_failure is None:
            return
        if status.action_running:
            _log.warn(
                "check {check}: action not started, the previous one is still going",
                check=spec.name,
            )
            return
        status.action_running = True
        if not (spec.restart or spec.signal is not None):
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

    def _act_on_services(self, spec: CheckSpec) -> str:
        """Restart and signal the check's services, no fork; what was done."""
        done = [self._on_service("restart", name, spec) for name in spec.restart]
        done += [self._on_service("signal", name, spec) for name in spec.services]
        return "; ".join(done)

    def _on_service(self, action: str, name: str, spec: CheckSpec) -> str:
        what = "restart" if action == "restart" else f"send {spec.signal_name} to"
        try:
            if self._services is None:
                raise ConfigError("the monitor has no services")
            if action == "restart":
                self._services.restart(name).addErrback(
                    lambda f: _log.failure(
                        "check {check}: restarting {service} failed",
                        f,
                        check=spec.name,
                        service=name,
                    )
                )
                return f"restarted {name}"
            assert spec.signal is not None
            self._services.signal_service(name, spec.signal)
        except Exception as e:  # no such service, not running
            return f"cannot {what} {name}: {e}"
        return f"sent {spec.signal_name} to {name}"


def place(spec: CheckSpec) -> float:
    """Where a check that shares its interval first runs: seconds past each
    multiple of the spread, ``min(every, SPREAD)`` (on the reactor's clock,
    the epoch's seconds); its later runs follow every ``every``.

    One of the spread's :data:`SLOT`-long slots, taken from the check's
    name (its CRC-32), as Prometheus places its scrape targets: the same on
    every start, spread evenly on average, with no coordination between
    the checks.
    """
    span = min(spec.every, SPREAD)
    slots = max(1, math.floor(span / SLOT + 1e-9))
    return span * math.floor(slots * zlib.crc32(spec.name.encode()) / 2**32) / slots


def _net(run: Callable[[Any], Deferred[Any]], spec: CheckSpec) -> Deferred[Any]:
    return run(netprobe.routine(spec))


def _reactor_threads(reactor: Any) -> InThread:
    """Runs a function in the reactor's thread pool."""

    def in_thread(function: Callable[[], Any]) -> Deferred[Any]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), function)

    return in_thread
