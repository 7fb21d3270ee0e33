"""Alerts: what acts on events, a command, a webhook or a mail.

An ``[[alert]]`` (:class:`AlertSpec`) names the events it wants
(:mod:`procwork.monitor._events`) and runs a command (``critical``, the event
in environment variables), POSTs a webhook (:mod:`procwork.monitor._webhook`)
or sends a mail (:mod:`procwork.monitor._mail`) for each.
:class:`AlertDispatcher` runs at most ``max_in_flight`` deliveries per alert
and queues at most ``max_queued`` more, dropping (and counting) the oldest,
so a storm of events cannot flood an overloaded machine.

Design: ARCHITECTURE.md, "Alerts".
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import attrs
from attrs import converters
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from procwork import _validate as validate
from procwork._fields import NOT_IN_FILE, keyed, spec_class
from procwork._reactor import Reactor, default_reactor
from procwork._result import Result
from procwork.monitor._events import EVENTS, OUTPUT_TAIL, ROUTINE_EVENTS, Event
from procwork.monitor._mail import MailRefused, MailServer, compose, send_mail
from procwork.monitor._webhook import Reply, RequestFunction, describe_failure, post

__all__ = ["EVENTS", "AlertDispatcher", "AlertSpec", "AlertStatus", "Event"]

_log = Logger(namespace="procwork.alerts")

_RECENT_EVENTS = 50


def _takes(pattern: str, event: str) -> bool:
    """Whether ``pattern`` of an alert's ``events`` takes ``event``: a
    routine event only by its very name, never through a glob."""
    if event in ROUTINE_EVENTS:
        return pattern == event
    return fnmatch.fnmatchcase(event, pattern)


def _known_events(alert: Any, attribute: Any, patterns: tuple[str, ...]) -> None:
    for pattern in patterns:
        if any(_takes(pattern, event) for event in EVENTS):
            continue
        routine = sorted(fnmatch.filter(ROUTINE_EVENTS, pattern))
        if routine:
            raise validate.Invalid(
                f"has {pattern!r}, which matches only {', '.join(routine)}: one "
                "per start or exit, taken only when named exactly"
            )
        raise validate.Invalid(
            f"has {pattern!r}, which matches no event; events are " + ", ".join(EVENTS)
        )


@spec_class("alert")
@attrs.frozen(field_transformer=keyed)
class AlertSpec:
    """What to do on which events.

    Args:
        name: Unique name, in logs and the status.
        events: Event names, or globs of them (``"service.*"``, ``"*"``);
            one string or a list, kept as a tuple. Default ``"*"``. A glob
            never takes the routine events, one per start or exit
            (``service.started``, ``service.exited``,
            ``service.restarted``): a crash loop is one
            ``service.crashloop``, not three alerts per crash. Name them
            exactly to have them.
        only: Names of the services, checks or rules it is about (globs;
            default all).
        command: Run this (argv list, or a string split with shlex; no
            shell) with the event in its environment; kept as a tuple.
        webhook: Or POST the event as JSON to this ``http://`` or
            ``https://`` URL.
        mail: Or mail the event to these addresses (one, or a list; kept
            as a tuple), through ``smtp``.
        smtp: The SMTP server of a mail alert: the config loader sets it
            from ``[monitor] smtp`` and ``smtp_from`` (not a key of the
            ``[[alert]]`` table).
        timeout: Seconds a command, or one webhook or mail attempt, may
            take (default 10).
        retries: Webhook or mail attempts after a failed one (default 3).
        retry_delay: Seconds between those attempts (default 1).
        max_in_flight: Deliveries (a command running, a webhook with its
            retries) at once, at most (default 4). Keeps a storm of
            events from adding hundreds of processes or requests to a
            machine that is already overloaded.
        max_queued: Events waiting for a delivery slot, at most (default
            100); a full queue drops its oldest event for the new one. 0:
            an event that finds every slot busy is dropped.

    Raises:
        ConfigError: the message names the alert and the key.
    """

    name: str = attrs.field(validator=validate.text)
    events: tuple[str, ...] = attrs.field(
        default=("*",), converter=validate.names, validator=_known_events
    )
    only: tuple[str, ...] = attrs.field(default=(), converter=validate.names)
    command: tuple[str, ...] | None = attrs.field(
        default=None, converter=converters.optional(validate.command)
    )
    webhook: str | None = attrs.field(
        default=None, validator=validate.optional(validate.url)
    )
    mail: tuple[str, ...] | None = attrs.field(
        default=None, converter=converters.optional(validate.mail_addresses)
    )
    smtp: MailServer | None = attrs.field(default=None, metadata=NOT_IN_FILE)
    timeout: float = attrs.field(
        default=10.0, converter=validate.duration, validator=validate.positive
    )
    retries: int = attrs.field(default=3, validator=validate.whole(0))
    retry_delay: float = attrs.field(
        default=1.0, converter=validate.duration, validator=validate.non_negative
    )
    max_in_flight: int = attrs.field(default=4, validator=validate.whole(1))
    max_queued: int = attrs.field(default=100, validator=validate.whole(0))

    def __attrs_post_init__(self) -> None:
        kinds = (self.command, self.webhook, self.mail)
        if sum(kind is not None for kind in kinds) != 1:
            raise validate.Invalid(
                "needs a command, a webhook or mail (one of them; for two, "
                "write two alerts)"
            )

    @property
    def argv(self) -> tuple[str, ...] | None:
        """The command, or None for a webhook or mail (as ``command``)."""
        return self.command

    @property
    def target(self) -> str:
        """Where its deliveries go, for the log."""
        if self.command is not None:
            return shlex.join(self.command)
        if self.webhook is not None:
            return self.webhook
        mail = ", ".join(self.mail or ())
        via = "no SMTP server" if self.smtp is None else self.smtp
        return f"mail to {mail} via {via}"

    def wants(self, event: Event) -> bool:
        """Whether this alert acts on ``event``."""
        if not any(_takes(p, event.event) for p in self.events):
            return False
        return not self.only or any(
            fnmatch.fnmatchcase(event.name, p) for p in self.only
        )


@dataclass
class AlertStatus:
    """What one alert has done (JSON-ready through :meth:`to_dict`).

    Every event it wants is delivered (``sent``, then ``ok`` or
    ``failed``), or dropped; ``running`` and ``queued`` are those it is
    delivering and those waiting for a slot now.
    """

    name: str
    sent: int = 0  # deliveries started
    ok: int = 0
    failed: int = 0
    running: int = 0
    queued: int = 0
    dropped: int = 0  # events never delivered: its queue was full, or it stopped
    last_event: str | None = None
    last_result: str | None = None
    last_output: str = ""
    last_time: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return dict(self.__dict__)


class _Alert:
    """One alert's deliveries: those running (at most ``max_in_flight``),
    the events waiting for a slot (at most ``max_queued``), its status."""

    def __init__(self, spec: AlertSpec) -> None:
        self.spec = spec
        self.status = AlertStatus(spec.name)
        self.running: set[Deferred[Any]] = set()
        self.waiting: deque[Event] = deque()
        self.dropping = 0  # dropped since its queue last drained: one log line
        self.starting = False  # in _start_waiting (a delivery may end at once)

    @property
    def idle(self) -> bool:
        return not self.running and not self.waiting

    def recount(self) -> None:
        self.status.running = len(self.running)
        self.status.queued = len(self.waiting)


RunFunction = Callable[..., "Deferred[Result]"]

#: A delivery's outcome: ``(ok, result, output)``.
_Outcome = tuple[bool, str, str]


@dataclass(frozen=True)
class _Again:
    """An attempt's answer that is worth another attempt (``why`` it failed)."""

    why: str


#: Makes one attempt of a delivery: a Deferred of its :data:`_Outcome`, or
#: :class:`_Again`, or a failure (tried again too).
_Attempt = Callable[[], "Deferred[Any]"]


class AlertDispatcher:
    """Sends events to the alerts that want them. Call from the reactor thread.

    Args:
        specs: The alerts.
        reactor: For timers and the HTTP client; default the global reactor.
        run: Runs a command alert, ``procwork.run``-compatible.
        request: Makes webhook requests (``clockwork.net.request``, the
            default, or a stand-in taking its arguments).
    """

    def __init__(
        self,
        specs: Iterable[AlertSpec],
        *,
        reactor: Reactor | None = None,
        run: RunFunction | None = None,
        request: RequestFunction | None = None,
    ) -> None:
        self._reactor: Reactor = default_reactor() if reactor is None else reactor
        if run is None:
            from procwork._api import run as procwork_run

            run = procwork_run
        self._run = run
        self._request = request
        self.specs = tuple(specs)
        self._alerts = [_Alert(spec) for spec in self.specs]
        self.status = {alert.spec.name: alert.status for alert in self._alerts}
        self.recent: deque[Event] = deque(maxlen=_RECENT_EVENTS)
        self._stopping = False
        self._stopped: list[Deferred[None]] = []  # stop()'s, fired when idle
        # Alerts a reload removed whose deliveries are still running.
        self._retired: list[_Alert] = []

    def update(self, specs: Iterable[AlertSpec]) -> None:
        """Take up a reloaded config's alerts, matched by name.

        An alert still there keeps its counters, its queue and the
        deliveries it is making; if its spec changed, it delivers with the
        new one from its next delivery on (its queue trimmed to the new
        ``max_queued``, more started if ``max_in_flight`` grew). A new one
        starts empty. A removed one takes no new event and drops what it
        has queued (one log line); the deliveries it is making finish (and
        :meth:`stop` still waits for them, or cancels them).
        """
        self.specs = tuple(specs)
        kept = {alert.spec.name: alert for alert in self._alerts}
        alerts = []
        for spec in self.specs:
            alert = kept.pop(spec.name, None)
            if alert is None:
                alert = _Alert(spec)
            elif alert.spec != spec:
                alert.spec = spec
                while len(alert.waiting) > spec.max_queued:
                    self._drop(alert)
                self._start_waiting(alert)
                alert.recount()
            alerts.append(alert)
        self._alerts = alerts
        self.status = {alert.spec.name: alert.status for alert in alerts}
        for alert in kept.values():  # removed
            self._drop_queue(alert, "the alert was removed by a reload")
            self._retired.append(alert)
        self._maybe_stopped()

    def emit(self, event: Event) -> None:
        """Record ``event``, and start the alerts that want it, or queue it
        for those with every slot busy."""
        self.recent.append(event)
        for alert in self._alerts:
            if alert.spec.wants(event):
                self._offer(alert, event)

    def _offer(self, alert: _Alert, event: Event) -> None:
        # Queued first, then started if a slot is free: the events start in
        # the order they came, whatever ends while they do.
        alert.waiting.append(event)
        self._start_waiting(alert)
        while len(alert.waiting) > alert.spec.max_queued:
            self._drop(alert)
        alert.recount()

    def _drop(self, alert: _Alert) -> None:
        alert.waiting.popleft()
        alert.status.dropped += 1
        alert.dropping += 1
        if alert.dropping == 1:
            _log.warn(
                "alert {alert}: {running} deliveries running and {queued} events "
                "queued; dropping the oldest events until it catches up",
                alert=alert.spec.name,
                running=len(alert.running),
                queued=len(alert.waiting),
            )

    def _dropped(self, alert: _Alert, why: str) -> None:
        """The one line, with the count, that ends a burst of drops."""
        if alert.dropping:
            _log.warn(
                "alert {alert}: dropped {dropped} events ({why})",
                alert=alert.spec.name,
                dropped=alert.dropping,
                why=why,
            )
            alert.dropping = 0

    def _drop_queue(self, alert: _Alert, why: str) -> None:
        """Drop every event ``alert`` has queued, counted, in one log line."""
        alert.status.dropped += len(alert.waiting)
        alert.dropping += len(alert.waiting)
        alert.waiting.clear()
        alert.recount()
        self._dropped(alert, why)

    def _start_waiting(self, alert: _Alert) -> None:
        if alert.starting:
            return  # a delivery that ended as it started: the loop below goes on
        alert.starting = True
        try:
            while alert.waiting and len(alert.running) < alert.spec.max_in_flight:
                self._send(alert, alert.waiting.popleft())
        finally:
            alert.starting = False

    def _send(self, alert: _Alert, event: Event) -> None:
        spec, status = alert.spec, alert.status
        status.sent += 1
        status.last_event = event.event
        status.last_time = event.time
        # The monitor's own chatter: at debug, so that a storm of deliveries
        # does not bury the lines that matter (what failed is a warning).
        _log.debug(
            "alert {alert}: {event} {name} -> {target}",
            alert=spec.name,
            event=event.event,
            name=event.name,
            target=spec.target,
        )
        if spec.argv is not None:
            d = self._command(spec, event)
        elif spec.webhook is not None:
            d = self._attempts(spec, "webhook", self._post(spec, event), number=1)
        else:
            d = self._attempts(spec, "mail", self._mail(spec, event), number=1)
        alert.running.add(d)
        alert.recount()
        d.addBoth(self._done, alert, d)

    def _done(
        self,
        outcome: tuple[bool, str, str] | Failure,
        alert: _Alert,
        d: Deferred[Any],
    ) -> None:
        spec, status = alert.spec, alert.status
        alert.running.discard(d)
        if isinstance(outcome, Failure):
            if outcome.check(CancelledError):
                ok, result, output = False, "cancelled (monitor stopping)", ""
            else:
                ok, result, output = False, f"error: {outcome.value}", ""
        else:
            ok, result, output = outcome
        status.last_result = result
        status.last_output = output[-OUTPUT_TAIL:]
        if ok:
            status.ok += 1
            _log.debug(
                "alert {alert}: {result}{output}",
                alert=spec.name,
                result=result,
                output=_one_line(output),
            )
        else:
            status.failed += 1
            _log.warn(
                "alert {alert} failed: {result}{output}",
                alert=spec.name,
                result=result,
                output=_one_line(output),
            )
        self._start_waiting(alert)
        alert.recount()
        if not alert.waiting:
            self._dropped(alert, "its queue was full")
        self._maybe_stopped()

    # -- a command ----------------------------------------------------------

    def _command(self, spec: AlertSpec, event: Event) -> Deferred[Any]:
        assert spec.argv is not None
        try:
            d = self._run(
                list(spec.argv),
                timeout=spec.timeout,
                priority="critical",
                env={**os.environ, **event.environ()},
            )
        except Exception:
            from twisted.internet.defer import fail

            return fail(Failure())

        def described(result: Result) -> tuple[bool, str, str]:
            output = (result.stdout + result.stderr).decode("utf-8", "replace")
            return result.ok, f"command {result.describe()}", output

        return d.addCallback(described)

    # -- a webhook or a mail: attempts, each timed, retried ----------------------

    def _post(self, spec: AlertSpec, event: Event) -> _Attempt:
        """One webhook attempt: a POST of the event."""
        assert spec.webhook is not None
        url, body = spec.webhook, json.dumps(event.to_dict()).encode()

        def attempt() -> Deferred[Any]:
            d = post(url, body, reactor=self._reactor, request=self._request)

            def answered(reply: Reply) -> _Outcome | _Again:
                if not reply.ok:
                    return _Again(reply.describe())
                return (True, f"webhook {reply.describe()}", reply.text(OUTPUT_TAIL))

            return d.addCallback(answered)

        return attempt

    def _mail(self, spec: AlertSpec, event: Event) -> _Attempt:
        """One mail attempt: the event's message (made once for all the
        attempts, so they carry the same Message-ID) to the alert's
        addresses."""
        assert spec.mail is not None
        server, recipients = spec.smtp, spec.mail
        message = b""
        if server is not None:
            sender = server.sender_address()
            message = compose(
                event, sender=sender, recipients=recipients, alert=spec.name
            )

        def attempt() -> Deferred[Any]:
            if server is None:
                from twisted.internet.defer import succeed

                why = "mail: no SMTP server to send it through ([monitor] smtp)"
                return succeed((False, why, ""))
            d = send_mail(self._reactor, server, recipients, message)

            def accepted(answer: Any) -> _Outcome:
                return (
                    True,
                    f"mail accepted by {server} for {answer.recipients} "
                    f"address{'es' if answer.recipients != 1 else ''}: {answer.reply}",
                    answer.reply,
                )

            def refused(failure: Failure) -> Any:
                error = failure.value
                if isinstance(error, MailRefused):
                    if error.permanent:  # would be refused again
                        return (False, f"mail {error} (by {server})", "")
                    return _Again(str(error))
                return failure

            return d.addCallbacks(accepted, refused)

        return attempt

    def _attempts(
        self, spec: AlertSpec, kind: str, attempt: _Attempt, number: int
    ) -> Deferred[Any]:
        """Make ``attempt`` (attempt ``number``), each within the alert's
        ``timeout``; after a failed one, another ``retry_delay`` later, at
        most ``retries`` more. Fires with the outcome ``(ok, result,
        output)``."""
        d = attempt()
        # Not Deferred.addTimeout: cancelling the Agent's request fails with
        # its own errors (ConnectingCancelledError, ...), not CancelledError,
        # so only this flag tells a timeout from the rest.
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            d.cancel()

        timer = self._reactor.callLater(spec.timeout, expire)

        def disarm(result: object) -> object:
            if timer.active():
                timer.cancel()
            return result

        d.addBoth(disarm)

        def retry(why: str) -> Deferred[Any] | _Outcome:
            if number > spec.retries:
                return (False, f"{kind} gave up after {number} attempts: {why}", "")
            _log.warn(
                "alert {alert}: {kind} attempt {attempt} failed: {why}; "
                "retrying in {delay:g} s",
                alert=spec.name,
                kind=kind,
                attempt=number,
                why=why,
                delay=spec.retry_delay,
            )
            later: Deferred[Any] = Deferred()
            call = self._reactor.callLater(spec.retry_delay, later.callback, None)
            # Cancelled while waiting (the monitor stops): no more attempts.
            later.addErrback(lambda f: (call.cancel() if call.active() else None, f)[1])
            later.addCallback(lambda _: self._attempts(spec, kind, attempt, number + 1))
            return later

        def answered(outcome: _Outcome | _Again) -> Any:
            if isinstance(outcome, _Again):
                return retry(outcome.why)
            return outcome

        def failed(failure: Failure) -> Any:
            if self._stopping and not expired:
                return failure  # cancelled by stop(): no more attempts
            why = (
                f"no answer within {spec.timeout:g} s"
                if expired
                else describe_failure(failure)
            )
            return retry(why)

        d.addCallbacks(answered, failed)
        return d

    def stop(self, timeout: float = 5.0) -> Deferred[None]:
        """Let the alerts deliver what they are delivering and what is
        queued for up to ``timeout`` seconds (so ``monitor.stopping`` gets
        out), then drop the events still queued and cancel the deliveries
        still running. The Deferred fires when nothing is left, within
        ``timeout`` in any case."""
        self._stopping = True
        stopped: Deferred[None] = Deferred()
        self._stopped.append(stopped)
        call = self._reactor.callLater(timeout, self._give_up)
        self._maybe_stopped()

        def cleanup(result: object) -> object:
            if call.active():
                call.cancel()
            return result

        return stopped.addBoth(cleanup)

    def _give_up(self) -> None:
        for alert in [*self._alerts, *self._retired]:
            # Dropped before the cancels, so that a slot they free starts
            # nothing; in one line with the burst it may end.
            self._drop_queue(alert, "not delivered before the monitor stopped")
            for d in list(alert.running):
                d.cancel()
        self._maybe_stopped(at_last=True)

    def _maybe_stopped(self, at_last: bool = False) -> None:
        self._retired = [a for a in self._retired if not a.idle]
        alerts = [*self._alerts, *self._retired]
        if self._stopped and (at_last or all(a.idle for a in alerts)):
            stopped, self._stopped = self._stopped, []
            for d in stopped:
                d.callback(None)


def _one_line(output: str) -> str:
    text = " ".join(output.split())[-200:]
    return f": {text}" if text else ""
