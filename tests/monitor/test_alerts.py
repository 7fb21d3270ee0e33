"""Alerts, events, the status page and the log formats, without processes.

Timing (webhook timeouts, retries, the console rate limit) runs on Twisted's
``task.Clock``; webhooks go to a fake ``clockwork.net.request``; commands to
a fake ``run``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any, cast

import attrs
import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogLevel, globalLogPublisher

from clockwork.net import Response
from procwork import ConfigError, Result
from procwork.monitor import AlertSpec
from procwork.monitor._alerts import EVENTS, AlertDispatcher, Event
from procwork.monitor._events import ROUTINE_EVENTS, rule_events
from procwork.monitor._http import prometheus_text
from procwork.monitor._logs import json_record, text_observer
from procwork.monitor._metrics import monitor_metrics
from procwork.monitor._page import render_page, wants_html
from procwork.supervisor import ServiceSpec, ServiceState
from procwork.supervisor._servicelog import ServiceOutput
from tests.support.fake_monitor import CONFIG, World

# -- fakes ---------------------------------------------------------------------


class FakeRequest:
    """Stands in for ``clockwork.net.request``: records requests; each is
    answered by the test (or never)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Deferred[Any]]] = []

    def __call__(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.requests.append((method, url, d))
        return d


def event(name: str = "check.failed", about: str = "disk") -> Event:
    return Event(name, about, "failing", f"{about}: {name}", time=1.0)


def hook(**changes: Any) -> AlertSpec:
    return AlertSpec(**{"name": "hook", "webhook": "http://127.0.0.1:1/h", **changes})


def answer(agent: FakeRequest, i: int, code: int) -> None:
    _, url, d = agent.requests[i]
    d.callback(Response(code, "", {}, b"", False, url))


# -- which alerts want which events ---------------------------------------------


def test_an_alert_wants_the_events_its_globs_match_about_the_names_in_only() -> None:
    alert = hook(events=["check.*", "service.fatal"], only=["disk*"])
    assert alert.wants(event("check.failed", "disk-root"))
    assert alert.wants(event("service.fatal", "disk"))
    assert not alert.wants(event("service.exited", "disk"))
    assert not alert.wants(event("check.failed", "load"))


def test_by_default_an_alert_wants_every_event_but_the_routine_ones() -> None:
    alert = hook()
    wanted = [name for name in EVENTS if alert.wants(event(name))]
    assert wanted == [name for name in EVENTS if name not in ROUTINE_EVENTS]
    assert sorted(ROUTINE_EVENTS) == [
        "service.exited",
        "service.restarted",
        "service.started",
    ]


def test_a_glob_never_takes_a_routine_event_and_a_name_does() -> None:
    """One per start or exit: a crash loop would be dozens of alerts."""
    globbed = hook(events=["service.*"])
    assert [
        n for n in EVENTS if n.startswith("service.") and globbed.wants(event(n))
    ] == [
        "service.crashloop",
        "service.failed",
        "service.fatal",
        "service.recovered",
        "service.log_error",
        "service.log_recovered",
    ]
    named = hook(events=["service.exited", "service.restarted"])
    assert named.wants(event("service.exited"))
    assert named.wants(event("service.restarted"))
    assert not named.wants(event("service.started"))
    with pytest.raises(
        ConfigError,
        match=r"events has 'service.ex\*', which matches only service.exited: one "
        r"per start or exit, taken only when named exactly",
    ):
        hook(events=["service.ex*"])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"webhook": None}, "alert 'hook': needs a command, a webhook or mail"),
        ({"command": "true"}, "needs a command, a webhook or mail \\(one of them;"),
        ({"mail": "ops@example.com"}, "needs a command, a webhook or mail"),
        ({"webhook": None, "mail": "ops"}, "mail has 'ops', which is not a mail"),
        ({"events": ["chek.*"]}, "events has 'chek.\\*', which matches no event"),
        ({"timeout": 0}, "timeout must be a finite number > 0, not 0"),
        ({"retries": -1}, "retries must be a whole number >= 0, not -1"),
        ({"retry_delay": float("nan")}, "retry_delay must be a finite number"),
        (
            {"max_in_flight": 0},
            "alert 'hook': max_in_flight must be a whole number >= 1, not 0",
        ),
        ({"max_in_flight": 2.5}, "max_in_flight must be a whole number >= 1, not 2.5"),
        (
            {"max_in_flight": True},
            "max_in_flight must be a whole number >= 1, not True",
        ),
        ({"max_queued": -1}, "alert 'hook': max_queued must be a whole number >= 0"),
        ({"max_queued": "100"}, "max_queued must be a whole number >= 0, not '100'"),
    ],
)
def test_a_bad_alert_is_rejected_naming_it_and_the_key(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        hook(**changes)


# -- webhooks -------------------------------------------------------------------


def test_a_webhook_posts_the_event_as_json_and_counts_a_2xx_as_sent() -> None:
    clock, agent = Clock(), FakeRequest()
    alerts = AlertDispatcher([hook()], reactor=clock, request=agent)
    alerts.emit(event())
    [(method, url, _)] = agent.requests
    assert (method, url) == ("POST", "http://127.0.0.1:1/h")
    answer(agent, 0, 204)
    status = alerts.status["hook"]
    assert (status.sent, status.ok, status.failed, status.running) == (1, 1, 0, 0)
    assert status.last_result == "webhook answered 204"


def test_a_webhook_is_retried_retry_delay_after_a_failed_attempt() -> None:
    clock, agent = Clock(), FakeRequest()
    alerts = AlertDispatcher(
        [hook(retries=2, retry_delay=5)], reactor=clock, request=agent
    )
    alerts.emit(event())
    answer(agent, 0, 503)
    clock.advance(4.9)
    assert len(agent.requests) == 1
    clock.advance(0.1)
    assert len(agent.requests) == 2
    answer(agent, 1, 200)
    assert alerts.status["hook"].ok == 1


def test_a_webhook_that_never_answers_times_out_and_gives_up_after_retries() -> None:
    clock, agent = Clock(), FakeRequest()
    alerts = AlertDispatcher(
        [hook(timeout=10, retries=1, retry_delay=1)], reactor=clock, request=agent
    )
    alerts.emit(event())
    clock.advance(10)  # the first attempt is cancelled
    clock.advance(1)
    assert len(agent.requests) == 2
    clock.advance(10)
    status = alerts.status["hook"]
    assert (status.ok, status.failed, status.running) == (0, 1, 0)
    assert status.last_result == (
        "webhook gave up after 2 attempts: no answer within 10 s"
    )


def test_stopping_waits_for_a_webhook_in_flight_then_cancels_it() -> None:
    clock, agent = Clock(), FakeRequest()
    alerts = AlertDispatcher([hook(timeout=60)], reactor=clock, request=agent)
    alerts.emit(event("monitor.stopping", "m"))
    stopped = alerts.stop(timeout=5)
    clock.advance(4.9)
    assert not stopped.called
    clock.advance(0.1)
    assert stopped.called
    assert alerts.status["hook"].failed == 1
    assert len(agent.requests) == 1  # no retry while stopping


# -- commands ---------------------------------------------------------------------


def test_a_command_alert_runs_critical_with_the_event_in_its_environment() -> None:
    calls: list[tuple[list[str], dict[str, Any]]] = []

    def run(argv: list[str], **kwargs: Any) -> Deferred[Result]:
        calls.append((argv, kwargs))
        return succeed(Result(args=tuple(argv), pid=9, returncode=0, stdout=b"paged\n"))

    alerts = AlertDispatcher(
        [AlertSpec("page", command="pager --now", timeout=7)], reactor=Clock(), run=run
    )
    alerts.emit(
        Event(
            "service.fatal", "web", "FATAL", "web gave up", exit_status=2, duration=1.5
        )
    )
    [(argv, kwargs)] = calls
    assert argv == ["pager", "--now"]
    assert (kwargs["priority"], kwargs["timeout"]) == ("critical", 7.0)
    env = kwargs["env"]
    assert (env["PROCWORK_EVENT"], env["PROCWORK_NAME"], env["PROCWORK_STATE"]) == (
        "service.fatal",
        "web",
        "FATAL",
    )
    assert (env["PROCWORK_EXIT_STATUS"], env["PROCWORK_DURATION"]) == ("2", "1.500")
    assert "PATH" in env  # added to the monitor's own environment
    status = alerts.status["page"]
    assert (status.ok, status.last_result, status.last_output) == (
        1,
        "command exited 0",
        "paged\n",
    )


# -- a storm of events: bounded deliveries -----------------------------------------


class FakeRun:
    """A command alert's runs; each ends when the test says, in order."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, Deferred[Result]]] = []  # (event's name, run)
        self.peak = 0  # the most running at once

    def __call__(self, argv: list[str], **kwargs: Any) -> Deferred[Result]:
        d: Deferred[Result] = Deferred()
        self.runs.append((kwargs["env"]["PROCWORK_NAME"], d))
        self.peak = max(self.peak, self.running)
        return d

    @property
    def running(self) -> int:
        return sum(1 for _, d in self.runs if not d.called)

    def finish_all(self) -> None:
        """End the runs one by one, oldest first, the new ones too."""
        while self.running:
            d = next(d for _, d in self.runs if not d.called)
            d.callback(Result(args=("pager",), pid=9, returncode=0))

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.runs]


def pager(run: FakeRun, **limits: int) -> AlertDispatcher:
    """A command alert named ``page``, run by ``run``."""
    return AlertDispatcher(
        [AlertSpec("page", command="pager", **cast(dict[str, Any], limits))],
        reactor=Clock(),
        run=run,
    )


def storm(alerts: AlertDispatcher, count: int, first: int = 0) -> None:
    for i in range(first, first + count):
        alerts.emit(event(about=f"check-{i}"))


@pytest.fixture
def warnings() -> Any:
    """The alerts' warnings logged so far in the test, when called."""
    logged: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(cast(ILogObserver, logged.append))
    yield lambda: [
        e
        for e in logged
        if e.get("log_namespace") == "procwork.alerts"
        and e["log_level"] == LogLevel.warn
    ]
    globalLogPublisher.removeObserver(cast(ILogObserver, logged.append))


def test_each_delivery_and_its_success_are_logged_at_debug_a_failure_as_a_warning() -> (
    None
):
    """The monitor's own chatter stays out of an info log: a storm of
    deliveries does not bury the lines that matter."""
    logged: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(cast(ILogObserver, logged.append))
    try:
        run = FakeRun()
        alerts = pager(run)
        alerts.emit(event(about="disk"))
        alerts.emit(event(about="load"))
        run.runs[0][1].callback(Result(args=("pager",), pid=9, returncode=0))
        run.runs[1][1].callback(Result(args=("pager",), pid=9, returncode=1))
    finally:
        globalLogPublisher.removeObserver(cast(ILogObserver, logged.append))
    ours = [e for e in logged if e.get("log_namespace") == "procwork.alerts"]
    levels = [e["log_level"] for e in ours]
    assert levels == [LogLevel.debug] * 3 + [LogLevel.warn], ours


def test_a_storm_of_events_runs_at_most_max_in_flight_and_the_rest_in_order() -> None:
    run = FakeRun()
    alerts = pager(run, max_in_flight=2)
    storm(alerts, 50)
    status = alerts.status["page"]
    assert (run.running, status.running, status.queued) == (2, 2, 48)
    run.finish_all()
    assert run.peak == 2
    assert run.names == [f"check-{i}" for i in range(50)]
    assert (status.sent, status.ok, status.running, status.queued) == (50, 50, 0, 0)
    assert status.dropped == 0


def test_a_full_queue_drops_its_oldest_events_counted_and_logged_once_per_burst(
    warnings: Any,
) -> None:
    run = FakeRun()
    alerts = pager(run, max_in_flight=2, max_queued=5)
    storm(alerts, 50)
    status = alerts.status["page"]
    assert (status.running, status.queued, status.dropped) == (2, 5, 43)
    [started] = warnings()
    assert "dropping the oldest events" in started["log_format"]
    run.finish_all()
    # The two that started, then the newest five.
    assert run.names == ["check-0", "check-1"] + [f"check-{i}" for i in range(45, 50)]
    started, summary = warnings()
    assert summary["dropped"] == 43
    assert "dropped {dropped} events" in summary["log_format"]
    # A second burst: its own two lines.
    storm(alerts, 10, first=50)
    run.finish_all()
    assert status.dropped == 43 + 3
    assert [w.get("dropped") for w in warnings()] == [None, 43, None, 3]


def test_with_max_queued_0_an_event_that_finds_every_slot_busy_is_dropped() -> None:
    run = FakeRun()
    alerts = pager(run, max_in_flight=1, max_queued=0)
    storm(alerts, 3)
    run.finish_all()
    storm(alerts, 1, first=3)
    run.finish_all()
    assert run.names == ["check-0", "check-3"]
    assert alerts.status["page"].dropped == 2


def test_a_webhooks_retries_hold_its_slot() -> None:
    clock, agent = Clock(), FakeRequest()
    alerts = AlertDispatcher(
        [hook(max_in_flight=1, retries=1, retry_delay=5)], reactor=clock, request=agent
    )
    storm(alerts, 2)
    answer(agent, 0, 503)
    clock.advance(4.9)  # the first event waits to be tried again: still its slot
    assert len(agent.requests) == 1
    clock.advance(0.1)
    status = alerts.status["hook"]
    assert (len(agent.requests), status.sent, status.queued) == (2, 1, 1)
    answer(agent, 1, 200)  # the retry went out: now the second event
    assert (len(agent.requests), status.sent, status.ok, status.queued) == (3, 2, 1, 0)


def test_stopping_delivers_what_is_queued_if_it_can_within_the_timeout() -> None:
    clock, agent = Clock(), FakeRequest()
    alerts = AlertDispatcher([hook(max_in_flight=1)], reactor=clock, request=agent)
    storm(alerts, 1)
    alerts.emit(event("monitor.stopping", "m"))
    stopped = alerts.stop(timeout=5)
    answer(agent, 0, 200)
    assert not stopped.called
    answer(agent, 1, 200)  # monitor.stopping got out
    assert stopped.called
    assert (alerts.status["hook"].ok, alerts.status["hook"].dropped) == (2, 0)


def test_stopping_drops_the_queue_and_ends_within_its_timeout(warnings: Any) -> None:
    clock, agent = Clock(), FakeRequest()
    alerts = AlertDispatcher(
        [hook(timeout=60, max_in_flight=2)], reactor=clock, request=agent
    )
    storm(alerts, 10)
    stopped = alerts.stop(timeout=5)
    clock.advance(4.9)
    assert not stopped.called
    clock.advance(0.1)
    assert stopped.called
    status = alerts.status["hook"]
    assert (status.failed, status.dropped, status.running, status.queued) == (
        2,
        8,
        0,
        0,
    )
    assert len(agent.requests) == 2  # nothing started from the dropped queue
    [summary] = [w for w in warnings() if "dropped" in w]
    assert summary["dropped"] == 8


def test_metrics_count_each_alerts_deliveries_by_outcome_and_what_waits() -> None:
    """/metrics says how many events each alert delivered, failed and
    dropped, and how many run and wait now: a storm is visible there."""
    run = FakeRun()
    alerts = pager(run, max_in_flight=2, max_queued=5)
    storm(alerts, 20)
    run.runs[0][1].callback(Result(args=("pager",), pid=9, returncode=0))
    run.runs[1][1].callback(Result(args=("pager",), pid=9, returncode=1))
    text = prometheus_text(
        monitor_metrics(
            version="0",
            services={},
            checks={},
            rules={},
            queued=0,
            alerts=alerts.status,
        )
    )
    assert {
        'procwork_alert_deliveries_total{alert="page",outcome="ok"} 1',
        'procwork_alert_deliveries_total{alert="page",outcome="failed"} 1',
        'procwork_alert_deliveries_total{alert="page",outcome="dropped"} 13',
        'procwork_alert_deliveries_running{alert="page"} 2',
        'procwork_alert_events_queued{alert="page"} 3',
        "# TYPE procwork_alert_deliveries_total counter",
    } <= set(text.splitlines())


# -- a reload: alerts by name ----------------------------------------------------


def test_a_reload_keeps_an_alerts_counters_and_queue_and_applies_its_new_limits() -> (
    None
):
    """Matched by name, the alert goes on: what it sent and queued is kept,
    and a raised max_in_flight starts more of its queue at once."""
    run = FakeRun()
    alerts = pager(run, max_in_flight=1)
    storm(alerts, 5)
    run.runs[0][1].callback(Result(args=("pager",), pid=9, returncode=0))
    status = alerts.status["page"]
    assert (status.ok, status.running, status.queued) == (1, 1, 3)
    alerts.update([AlertSpec("page", command="pager", max_in_flight=3)])
    assert alerts.status["page"] is status
    assert (status.ok, status.running, status.queued, run.running) == (1, 3, 1, 3)
    run.finish_all()
    assert run.names == [f"check-{i}" for i in range(5)]
    assert (status.sent, status.ok, status.dropped) == (5, 5, 0)


def test_a_reload_that_removes_an_alert_drops_its_queue_and_lets_its_deliveries_end(
    warnings: Any,
) -> None:
    """A removed alert takes no new event; its queue is dropped in one log
    line; stopping the monitor still waits for what it is delivering."""
    run = FakeRun()
    alerts = pager(run, max_in_flight=2)
    storm(alerts, 6)
    alerts.update([])
    assert alerts.status == {}
    [summary] = [w for w in warnings() if "dropped" in w]
    assert (summary["dropped"], summary["why"]) == (
        4,
        "the alert was removed by a reload",
    )
    storm(alerts, 3, first=6)
    assert run.running == 2 and len(run.runs) == 2  # nothing new started
    stopped = alerts.stop(timeout=5)
    assert not stopped.called
    run.finish_all()
    assert stopped.called


def test_a_reload_that_adds_an_alert_sends_it_the_next_events() -> None:
    run = FakeRun()
    alerts = pager(run)
    alerts.update(
        [
            AlertSpec("page", command="pager"),
            AlertSpec("also", command="pager", events=("check.failed",)),
        ]
    )
    storm(alerts, 1)
    assert (alerts.status["page"].sent, alerts.status["also"].sent) == (1, 1)


# -- events from services and rules ----------------------------------------------


def test_a_rule_that_sent_a_signal_has_matched_and_acted() -> None:
    class Finding:
        class rule:
            name = "cgi"

        class process:
            pid, name = 42, "perl"

        command = "/usr/bin/perl /srv/cgi/slow.cgi"
        reason = "ran 700 s > max_age 600 s"
        action = "sent SIGTERM"

    names = [e.event for e in rule_events(Finding, 1.0)]
    assert names == ["rule.matched", "rule.acted"]
    Finding.action = "would send SIGTERM (dry run)"
    assert [e.event for e in rule_events(Finding, 1.0)] == ["rule.matched"]


# -- the console rate limit ---------------------------------------------------------


def test_over_its_console_rate_a_services_lines_are_counted_not_logged() -> None:
    clock = Clock()
    logged: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(cast(ILogObserver, logged.append))
    try:
        output = ServiceOutput(
            ServiceSpec("yes", ["yes"], console_rate=10), clock.seconds, lambda: 9
        )
        output.received(1, b"y\n" * 1000)
        clock.advance(1)
        output.received(1, b"y\n" * 1000)
    finally:
        globalLogPublisher.removeObserver(cast(ILogObserver, logged.append))
    lines = [e for e in logged if e.get("line") == "y"]
    notes = [e for e in logged if "dropped" in e]
    # 10 at first, 10 after a second; the rest counted in between.
    assert len(lines) == 20
    assert [n["dropped"] for n in notes] == [990]
    assert notes[0]["log_level"] == LogLevel.warn


# -- the status page ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),
        ("application/json", False),
        ("application/json, text/html;q=0.5", False),
        ("*/*", False),
        (None, False),
        ("text/html;q=0", False),
    ],
)
def test_browsers_get_html_and_every_other_client_json(
    accept: str | None, html: bool
) -> None:
    assert wants_html(accept) is html


def test_the_page_escapes_what_it_shows_and_colours_each_state() -> None:
    page = render_page(
        {
            "services": {
                "<b>web</b>": {"state": "FATAL", "last_exit": "exited <1>"},
                "db": {"state": "RUNNING", "pid": 5, "uptime": 90},
            },
            "checks": {"disk": {"failing": True, "last_outcome": "failed"}},
            "events": [event().to_dict()],
        },
        now=2.0,
    )
    assert "<b>web</b>" not in page and "&lt;b&gt;web&lt;/b&gt;" in page
    assert 'class="state bad">FATAL<' in page
    assert 'class="state ok">RUNNING<' in page
    assert 'class="state bad">failing<' in page
    assert "exited &lt;1&gt;" in page
    assert "<script" not in page


def test_the_page_never_shows_a_crash_loop_green_and_counts_what_is_unwell() -> None:
    """The title and the header count the services running and healthy, the
    unhealthy ones and the failing checks; a FATAL service shows why, and
    what it said last on stderr."""
    looping = {
        "state": "RUNNING",
        "pid": 9,
        "healthy": False,
        "crash_loop": True,
        "summary": "RUNNING (crash loop: 3 exits in 9 s, stable in 52 s)",
    }
    fatal = {
        "state": "FATAL",
        "healthy": False,
        "last_exit": "exited 3",
        "summary": "FATAL (exited 3: 6 unexpected exits within 60 s, more than "
        "max_restarts=5)",
        "last_stderr": ["Traceback (most recent call last):", "KeyError: 'DB'"],
    }
    poller = {
        "state": "BACKOFF",
        "healthy": True,
        "summary": "BACKOFF (next start in 4 s)",
    }
    page = render_page(
        {
            "services": {
                "api": looping,
                "worker": fatal,
                "db": {"state": "RUNNING", "healthy": True, "summary": "RUNNING"},
                "poll": poller,
            },
            "checks": {"disk": {"failing": True}, "load": {"failing": False}},
        },
        now=2.0,
    )
    assert "<title>procwork: 1/4 running, 2 unhealthy, 1 check failing</title>" in page
    assert "1/4 services running, 2 unhealthy; 1/2 checks failing" in page
    assert (
        'class="state warn">RUNNING (crash loop: 3 exits in 9 s, stable in 52 s)<'
        in page
    )
    assert 'class="state ok">RUNNING<' in page  # db
    assert 'class="state busy">BACKOFF (next start in 4 s)<' in page  # a poller
    row = page.split('<tr data-name="worker">')[1].split("</tr>")[0]
    assert 'class="state bad">FATAL (exited 3: 6 unexpected exits' in row
    assert (
        '<div class="stderr">Traceback (most recent call last):<br>'
        "KeyError: &#x27;DB&#x27;</div>"
    ) in row


def test_the_page_shows_how_many_events_each_alert_has_queued_and_dropped() -> None:
    alert = {"sent": 7, "failed": 0, "queued": 5, "dropped": 43}
    page = render_page({"alerts": {"chat": alert}}, now=2.0)
    row = page.split('<tr data-name="chat">')[1].split("</tr>")[0]
    assert "<td>7</td><td>0</td><td>5</td><td>43</td>" in row
    assert "<th>queued</th><th>dropped</th>" in page


# -- the log formats ------------------------------------------------------------------


def test_a_text_line_has_date_time_level_source_and_message() -> None:
    out = io.StringIO()
    observe = cast(Callable[[dict[str, Any]], None], text_observer(out))
    observe(
        {
            "log_time": 0.5,
            "log_level": LogLevel.warn,
            "log_namespace": "procwork.checks",
            "log_format": "check {check} failed",
            "check": "disk",
        }
    )
    observe(
        {
            "log_time": 0.5,
            "log_level": LogLevel.info,
            "log_namespace": "procwork.supervisor",
            "log_format": "[{service}] {line}",
            "service": "web",
            "stream": "stderr",
            "line": "oops",
        }
    )
    first, second = out.getvalue().splitlines()
    assert first.endswith(".500 WARN  [checks] check disk failed")
    assert second.endswith(".500 INFO  [web stderr] oops")
    assert first[:4].isdigit() and first[4] == "-"


def test_a_json_record_has_procworks_schema_and_no_twisted_internals() -> None:
    record = json_record(
        {
            "log_time": 0.25,
            "log_level": LogLevel.critical,
            "log_namespace": "procwork.supervisor",
            "log_format": "service {service!r} is FATAL",
            "log_logger": object(),
            "service": "web",
            "state": ServiceState.FATAL,
            "restarts": 3,
        }
    )
    assert record == {
        "time": "1970-01-01T00:00:00.250Z",
        "level": "critical",
        "event": "service.fatal",
        "logger": "procwork.supervisor",
        "service": "web",
        "message": "service 'web' is FATAL",
        "fields": {"state": "FATAL", "restarts": 3},
    }
    json.dumps(record)


# -- the monitor's events, on a clock ------------------------------------------------


def test_the_monitor_sends_service_check_rule_and_monitor_events_to_its_alerts() -> (
    None
):
    from procwork.monitor import Rule

    world = World()
    config = attrs.evolve(
        CONFIG,
        # A dry run: the fake table's pids are not ours to signal.
        rules=(
            Rule("cgi", process_name="perl", max_age=600, action="term", dry_run=True),
        ),
        # The fake request is never answered: a slot for every event. The
        # routine events of each start and exit are named, to have them too.
        alerts=(
            AlertSpec(
                "all",
                events=["*", "service.started", "service.exited", "service.restarted"],
                webhook="http://127.0.0.1:1/",
                max_in_flight=20,
            ),
        ),
    )
    world.monitor = type(world.monitor)(
        config,
        reactor=world.clock,
        scheduler=world.monitor.scheduler,
        run=world.run,
        process_factory=world.factory,
        process_table=world.table,
    )
    agent = FakeRequest()
    world.monitor.alerts._request = agent
    monitor = world.monitor
    monitor.start()
    world.clock.advance(1)  # web: RUNNING
    world.run.finish(0, 1, b"full\n")  # the disk check fails
    world.factory.children[0].end(code=2)  # web exits
    world.clock.advance(1)  # restarted
    world.clock.advance(1)  # running again
    stopped = monitor.stop()
    world.clock.advance(10)
    assert stopped.called
    names = [e["event"] for e in monitor.status()["events"]]
    assert names[:2] == ["monitor.started", "service.started"]
    assert "rule.acted" not in names  # a dry run only matches
    assert {
        "rule.matched",
        "check.failed",
        "service.exited",
        "service.restarted",
    } <= set(names)
    assert "service.recovered" not in names  # one crash is no loop
    assert names[-1] == "monitor.stopping"
    assert len(agent.requests) == len(names)  # one POST per event, no more
    [failed] = [e for e in monitor.status()["events"] if e["event"] == "check.failed"]
    assert (failed["exit_status"], failed["output"]) == (1, "full\n")
