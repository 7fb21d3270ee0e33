"""The Monitor: services, checks and rules on one reactor, and what it reports.

Unit tests run a Monitor on a ``Clock`` with fakes for everything that would
touch the machine: the checks' ``run``, the services' process factory and the
rules' process table. The HTTP endpoint is then served by a Monitor on the
real reactor at 127.0.0.1:0 and read with Twisted's own HTTP client, every
wait bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
from twisted.logger import formatEvent

import procwork
import untwisted
from procwork import ConfigError, NoLoadLimit, Scheduler
from procwork.monitor import CheckSpec, Monitor, MonitorConfig
from procwork.monitor._http import Metric, prometheus_text
from procwork.monitor._proctable import ProcInfo
from procwork.supervisor import ServiceSpec, ServiceState
from tests.support import PY, drive_until, observing
from tests.support.fake_monitor import CONFIG, NOW, World, cgi, metric_lines


def parsed(text: str) -> dict[str, Any]:
    """Metric families by name, as Prometheus' own text-format parser reads them."""
    from prometheus_client.parser import text_string_to_metric_families

    return {family.name: family for family in text_string_to_metric_families(text)}


def psutil_free_start_time() -> float:
    """When this process started, from ``ps``-free sources: boot time plus
    the start ticks, the way the kernel documents them."""
    with open("/proc/stat") as f:
        boot = next(float(line.split()[1]) for line in f if line.startswith("btime"))
    with open("/proc/self/stat") as f:
        ticks = int(f.read().rpartition(")")[2].split()[19])
    return boot + ticks / os.sysconf("SC_CLK_TCK")


# -- fakes ---------------------------------------------------------------------


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def monitor_events() -> Iterator[list[str]]:
    """The monitor's own log lines while the test runs."""
    seen: list[str] = []

    def observer(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "procwork.monitor":
            seen.append(formatEvent(event))

    with observing(observer):
        yield seen


# -- life cycle ----------------------------------------------------------------


def test_start_starts_the_services_runs_the_checks_and_scans_the_rules_at_once(
    world: World,
) -> None:
    world.monitor.start()
    [child] = world.factory.children
    assert world.monitor.supervisor.status()["web"].pid == child.pid
    assert [argv for argv, _ in world.run.calls] == [["check-disk"]]
    assert [str(f) for f in world.monitor.findings] == [
        "rule 'slow-cgi': pid 700 (/usr/bin/perl slow.cgi) ran 900 s > max_age "
        "600 s: logged"
    ]


def test_the_rules_are_scanned_every_rules_every_seconds(world: World) -> None:
    """Each runaway is reported once, not at every scan."""
    world.monitor.start()
    world.clock.advance(5)
    assert len(world.monitor.findings) == 1
    world.table.add(cgi(702, age=4000))
    world.clock.advance(4.9)
    assert len(world.monitor.findings) == 1
    world.clock.advance(0.1)
    assert [str(f) for f in world.monitor.findings] == [
        "rule 'slow-cgi': pid 700 (/usr/bin/perl slow.cgi) ran 900 s > max_age "
        "600 s: logged",
        "rule 'slow-cgi': pid 702 (/usr/bin/perl slow.cgi) ran 4010 s > max_age "
        "600 s: logged",
        "rule 'stale-cgi': pid 702 (/usr/bin/perl slow.cgi) ran 4010 s > max_age "
        "3600 s: would send SIGTERM (dry run)",
    ]


def test_a_process_table_that_cannot_be_read_is_logged_and_scanned_again_later(
    world: World, monitor_events: list[str]
) -> None:
    readable = world.table.snapshot

    def unreadable() -> list[ProcInfo]:
        raise PermissionError(13, "Permission denied", "/proc")

    world.table.snapshot = unreadable  # type: ignore[method-assign]
    world.monitor.start()
    assert world.monitor.findings == []
    assert (
        "rules not applied: cannot read the process table: "
        "[Errno 13] Permission denied: '/proc'" in monitor_events
    )
    world.table.snapshot = readable  # type: ignore[method-assign]
    world.clock.advance(5)
    assert len(world.monitor.findings) == 1


def test_only_the_most_recent_findings_are_kept(world: World) -> None:
    """recent_findings holds the last 20, one per process (a new one every scan)."""
    world.monitor.start()
    for pid in range(800, 840):
        world.table.add(cgi(pid, age=900))
        world.clock.advance(5)
    assert [f.process.pid for f in world.monitor.findings] == list(range(820, 840))
    assert world.monitor.rules.counters["slow-cgi"].matches == 41


def test_a_summary_line_is_logged_every_summary_every_seconds_not_at_start(
    world: World, monitor_events: list[str]
) -> None:
    world.monitor.start()
    assert not [line for line in monitor_events if line.startswith("summary")]
    world.run.finish(0, returncode=1)
    world.clock.advance(30)
    summaries = [line for line in monitor_events if line.startswith("summary")]
    assert summaries == [
        "summary: 1/1 services running; 1 checks; failing: check disk (failed); "
        "processes running: 1 services, 1 checks, 0 actions; 0 queued"
    ]


def test_the_summary_counts_a_FATAL_service_among_the_failing(
    monitor_events: list[str],
) -> None:
    world = World()
    world.monitor.supervisor.remove("web")
    world.monitor.supervisor.add(ServiceSpec("web", ["web"], max_restarts=0))
    world.monitor.start()
    world.factory.children[0].end(code=1)  # max_restarts=0: FATAL at once
    world.run.finish(0, returncode=0)
    world.clock.advance(30)
    summaries = [line for line in monitor_events if line.startswith("summary")]
    assert summaries[-1].startswith(
        "summary: 0/1 services running; 1 checks; failing: service web FATAL "
        "(exited 1: max_restarts=0 allows no restart); "
    )


def test_start_logs_what_the_monitor_runs(
    world: World, monitor_events: list[str]
) -> None:
    world.monitor.start()
    assert (
        "monitor started from test.toml: 1 services, 1 checks, 2 rules"
        in monitor_events
    )


def test_stop_stops_the_services_cancels_the_checks_and_ends_every_interval(
    world: World,
) -> None:
    world.monitor.start()
    stopped = world.monitor.stop()
    assert not stopped.called, "the service has not been reaped yet"
    world.clock.advance(0)
    assert stopped.called
    [child] = world.factory.children
    assert child.signals == [signal.SIGTERM]
    assert world.monitor.supervisor.status()["web"].state == "STOPPED"
    assert world.run.cancelled == [["check-disk"]]
    findings = len(world.monitor.findings)
    world.table.add(cgi(703, age=4000))  # a scan would report it
    world.clock.advance(3600)
    assert len(world.run.calls) == 1, "no check runs after stop()"
    assert len(world.monitor.findings) == findings, "no rule scan after stop()"
    assert len(world.factory.children) == 1, "no service restarts after stop()"
    assert not world.monitor.loop_lag.running


# -- what it reports -----------------------------------------------------------


def test_status_reports_services_checks_rules_and_the_monitor_itself(
    world: World,
) -> None:
    world.monitor.start()
    world.clock.advance(1)
    world.run.finish(0, returncode=0, stdout=b"9% full\n")
    status = json.loads(json.dumps(world.monitor.status()))
    assert status["source"] == "test.toml"
    assert status["uptime"] >= 0 and status["cpu_seconds"] >= 0
    assert status["max_rss_bytes"] > 0
    web = status["services"]["web"]
    assert (web["state"], web["pid"], web["restarts"]) == ("RUNNING", 500, 0)
    disk = status["checks"]["disk"]
    assert (disk["last_outcome"], disk["last_output"], disk["runs"]) == (
        "ok",
        "9% full\n",
        1,
    )
    assert status["rules"] == {
        "slow-cgi": {
            "matches": 1,
            "signals_sent": 0,
            "action": "log",
            "dry_run": False,
        },
        "stale-cgi": {
            "matches": 0,
            "signals_sent": 0,
            "action": "term",
            "dry_run": True,
        },
    }
    assert status["recent_findings"] == [
        "rule 'slow-cgi': pid 700 (/usr/bin/perl slow.cgi) ran 900 s > max_age "
        "600 s: logged"
    ]
    assert set(status["scheduler"]) >= {"running", "queued", "max_running"}


def test_status_before_start_has_no_uptime(world: World) -> None:
    status = world.monitor.status()
    assert (status["started"], status["uptime"]) == (None, None)


def test_metrics_count_restarts_check_outcomes_skips_and_rule_matches(
    world: World,
) -> None:
    world.monitor.start()
    world.clock.advance(1)
    world.factory.children[0].end(code=1)  # web crashes; restarted at once
    world.clock.pump([1] * 10)  # disk still runs at 10 s: that interval is skipped
    world.run.finish(0, returncode=2)
    lines = metric_lines(world.monitor)
    assert {
        "procwork_up 1",
        'procwork_service_up{service="web"} 1',
        'procwork_service_restarts_total{service="web"} 1',
        'procwork_service_state{service="web",state="RUNNING"} 1',
        'procwork_check_runs_total{check="disk"} 1',
        'procwork_check_failures_total{check="disk"} 1',
        'procwork_check_timeouts_total{check="disk"} 0',
        'procwork_check_skipped_total{check="disk"} 1',
        'procwork_check_actions_total{check="disk"} 0',
        'procwork_check_ok{check="disk"} 0',
        'procwork_rule_matches_total{rule="slow-cgi"} 1',  # one process
        'procwork_rule_matches_total{rule="stale-cgi"} 0',
        'procwork_rule_signals_total{rule="slow-cgi"} 0',
        'procwork_processes_running{kind="service"} 1',
        'procwork_processes_running{kind="check"} 0',
        'procwork_processes_running{kind="action"} 0',
        "procwork_processes_queued 0",
    } <= lines
    assert "# TYPE procwork_check_runs_total counter" in lines
    assert "# TYPE procwork_service_up gauge" in lines


def test_a_service_has_a_state_series_for_every_state_1_only_for_the_current_one(
    world: World,
) -> None:
    world.monitor.start()
    states = {
        line
        for line in metric_lines(world.monitor)
        if line.startswith("procwork_service_state{")
    }
    assert states == {
        f'procwork_service_state{{service="web",state="{state}"}} '
        f"{1 if state == 'STARTING' else 0}"
        for state in ServiceState
    }


def test_a_service_log_that_cannot_be_written_is_an_event_for_alerts_and_a_metric() -> (
    None
):
    """/dev/full stands for a full disk: ``service.log_error`` reaches the
    alerts once for the burst, and the failed writes and lost lines are
    counted per service."""
    config = attrs.evolve(
        CONFIG,
        services=(
            ServiceSpec("web", ["web"], start_seconds=1, stdout_log="/dev/full"),
        ),
    )
    world = World(config)
    world.monitor.start()
    [child] = world.factory.children
    child.protocol.childDataReceived(1, b"one\ntwo\n")
    child.protocol.childDataReceived(1, b"three\n")
    [event] = [
        e for e in world.monitor.alerts.recent if e.event.startswith("service.log")
    ]
    assert (event.event, event.name, event.state) == (
        "service.log_error",
        "web",
        "failing",
    )
    assert event.fields["path"] == "/dev/full"
    assert event.fields["error"] == "No space left on device"
    assert event.message.startswith(
        "service 'web': its stdout log /dev/full cannot be written"
    )
    assert {
        'procwork_service_log_errors_total{service="web"} 2',
        'procwork_service_log_lines_lost_total{service="web"} 3',
        "procwork_log_lines_dropped_total 0",  # no stdout writer in this test
    } <= metric_lines(world.monitor)


def test_a_blocked_reactor_turn_shows_as_loop_lag_in_the_metrics_and_a_warning(
    world: World, monitor_events: list[str]
) -> None:
    world.monitor.start()
    world.clock.advance(0.25)
    assert {
        "procwork_monitor_loop_lag_seconds 0",
        "procwork_monitor_loop_stalls_total 0",
    } <= metric_lines(world.monitor)
    world.clock.advance(3)  # the timer due at 0.5 s runs at 3.25 s
    assert {
        "procwork_monitor_loop_lag_seconds 2.75",
        "procwork_monitor_loop_stalls_total 1",
    } <= metric_lines(world.monitor)
    assert any(
        "reactor was blocked for at least 2.8 s" in line for line in monitor_events
    )
    world.clock.pump([0.25] * 250)  # a minute on time: the gauge forgets
    assert "procwork_monitor_loop_lag_seconds 0" in metric_lines(world.monitor)


def test_the_status_line_for_systemd_counts_running_services_and_names_failing_checks(
    world: World,
) -> None:
    world.monitor.start()
    assert world.monitor.status_line() == "0/1 services running; 0/1 checks failing"
    world.clock.advance(1)  # web has run its start_seconds
    world.run.finish(0, returncode=1)
    assert world.monitor.status_line() == (
        "1/1 services running; 1/1 checks failing: disk"
    )


def test_the_status_line_does_not_count_a_crash_looping_service_as_running(
    world: World,
) -> None:
    world.monitor.start()
    world.run.finish(0, returncode=0)
    for _ in range(2):
        world.clock.advance(1.5)  # up past start_seconds: RUNNING, then it crashes
        world.factory.children[-1].end(code=3)
        world.clock.advance(world.monitor.supervisor.status()["web"].restart_in or 0)
    world.clock.advance(1.5)
    assert world.monitor.supervisor.status()["web"].state == "RUNNING"
    assert world.monitor.status_line() == (
        "0/1 services running (1 unhealthy: web RUNNING); 0/1 checks failing"
    )


def test_metrics_give_start_time_last_exit_code_and_check_timestamps(
    world: World,
) -> None:
    world.monitor.start()  # at NOW: web starts, disk runs
    world.run.finish(0, returncode=0)
    world.clock.advance(1)
    world.factory.children[0].end(code=3)  # crashed after 1 s: restarted in 1 s
    world.clock.advance(1)
    world.clock.advance(8)  # disk runs again at NOW + 10, and fails
    world.run.finish(1, returncode=1)
    lines = metric_lines(world.monitor)
    assert {
        f'procwork_service_start_time_seconds{{service="web"}} {int(NOW) + 2}',
        'procwork_service_unexpected_exits_total{service="web"} 1',
        'procwork_service_crashes{service="web"} 1',
        'procwork_service_crash_loop{service="web"} 0',
        'procwork_service_last_exit_code{service="web"} 3',
        'procwork_check_last_duration_seconds{check="disk"} 0.1',
        f'procwork_check_last_run_timestamp_seconds{{check="disk"}} {int(NOW) + 10}',
        f'procwork_check_last_success_timestamp_seconds{{check="disk"}} {int(NOW)}',
        'procwork_check_consecutive_failures{check="disk"} 1',
    } <= lines


def test_metrics_name_the_version_and_the_monitor_process_itself(
    world: World,
) -> None:
    families = parsed(prometheus_text(world.monitor.metrics()))
    [info] = families["procwork_build_info"].samples
    assert (info.labels, info.value) == ({"version": procwork.__version__}, 1.0)
    assert families["process_cpu_seconds"].type == "counter"
    rss = families["process_resident_memory_bytes"].samples[0].value
    assert 1 << 20 < rss < 1 << 40
    fds = families["process_open_fds"].samples[0].value
    assert 3 <= fds <= families["process_max_fds"].samples[0].value
    started = families["process_start_time_seconds"].samples[0].value
    assert abs(started - psutil_free_start_time()) < 5


def test_the_metrics_parse_with_prometheus_own_text_format_parser(
    world: World,
) -> None:
    world.monitor.start()
    world.clock.advance(1)
    world.factory.children[0].end(code=1)
    world.run.finish(0, returncode=2)
    metrics = world.monitor.metrics()
    families = parsed(prometheus_text(metrics))
    assert set(families) == {
        name.removesuffix("_total") if kind == "counter" else name
        for name, kind, _help, _samples in metrics
    }
    for family in families.values():
        assert family.documentation, f"{family.name} has HELP text"
        if family.type == "counter":
            assert all(s.name == family.name + "_total" for s in family.samples)
    restarts = families["procwork_service_restarts"]
    assert [(s.labels, s.value) for s in restarts.samples] == [
        ({"service": "web"}, 1.0)
    ]


def test_every_metric_has_help_and_type_lines_before_its_samples(
    world: World,
) -> None:
    world.monitor.start()
    text = prometheus_text(world.monitor.metrics())
    names = [m[0] for m in world.monitor.metrics()]
    assert len(names) == len(set(names))
    for name in names:
        assert text.index(f"# HELP {name} ") < text.index(f"# TYPE {name} ")


def test_prometheus_text_escapes_labels_and_formats_numbers() -> None:
    metrics: list[Metric] = [
        (
            "demo_total",
            "counter",
            "A demo",
            [
                ({"b": 'say "hi"\\\n', "a": "x"}, 3.0),
                ({}, 0.25),
                ({"k": "nan"}, float("nan")),
            ],
        ),
        ("empty", "gauge", "No samples", []),
    ]
    assert prometheus_text(metrics) == (
        "# HELP demo_total A demo\n"
        "# TYPE demo_total counter\n"
        'demo_total{a="x",b="say \\"hi\\"\\\\\\n"} 3\n'
        "demo_total 0.25\n"
        'demo_total{k="nan"} NaN\n'
        "# HELP empty No samples\n"
        "# TYPE empty gauge\n"
    )


# -- the HTTP endpoint on the real reactor -------------------------------------


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    """GET ``url``: ``(code, headers, body)``, within 10 s.

    urllib runs in a daemon thread of its own while this thread drives the
    reactor that serves the request. (Not Twisted's Agent: its name lookup
    uses the reactor's thread pool, whose threads would keep the test run
    from exiting; see the report on untwisted's exit hook.)
    """
    box: list[tuple[int, dict[str, str], bytes] | BaseException] = []

    def fetch() -> None:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                headers = {k.lower(): v for k, v in response.headers.items()}
                box.append((response.status, headers, response.read()))
        except urllib.error.HTTPError as e:
            box.append((e.code, {k.lower(): v for k, v in e.headers.items()}, b""))
        except BaseException as e:
            box.append(e)

    thread = threading.Thread(target=fetch, daemon=True)
    thread.start()
    assert drive_until(lambda: bool(box), timeout=15), f"GET {url} did not finish"
    thread.join(timeout=5)
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


@pytest.fixture
def served() -> Iterator[Callable[[MonitorConfig], Monitor]]:
    """Starts Monitors on the real reactor with HTTP on a free port; stops them."""
    monitors: list[Monitor] = []

    def serve(config: MonitorConfig) -> Monitor:
        monitor = Monitor(config, scheduler=Scheduler(load=NoLoadLimit()))
        monitors.append(monitor)
        monitor.start(http=("127.0.0.1", 0))
        return monitor

    try:
        yield serve
    finally:
        for monitor in monitors:
            untwisted.run(monitor.stop(), timeout=30)


def test_the_endpoint_serves_the_status_as_json_and_the_metrics_as_prometheus_text(
    served: Callable[[MonitorConfig], Monitor],
) -> None:
    config = MonitorConfig(
        source="http-test.toml",
        checks=(CheckSpec("hello", [PY, "-c", "print('hi')"], every=60, timeout=20),),
    )
    monitor = served(config)
    status = monitor.checks.status["hello"]
    assert drive_until(lambda: status.last_outcome is not None, timeout=30)
    address = monitor.http_address
    assert address is not None and address[0] == "127.0.0.1" and address[1] > 0
    base = f"http://127.0.0.1:{address[1]}"

    code, headers, body = get(base + "/")
    assert (code, headers["content-type"]) == (200, "application/json")
    assert headers["cache-control"] == "no-store"
    document = json.loads(body)
    assert document["source"] == "http-test.toml"
    assert document["checks"]["hello"]["last_outcome"] == "ok"
    assert document["checks"]["hello"]["last_output"] == "hi\n"

    code, _, body = get(base + "/status")
    assert code == 200 and json.loads(body)["source"] == "http-test.toml"

    code, headers, body = get(base + "/metrics")
    assert code == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    lines = body.decode().splitlines()
    assert "procwork_up 1" in lines
    assert 'procwork_check_runs_total{check="hello"} 1' in lines
    assert 'procwork_check_ok{check="hello"} 1' in lines

    code, _, _ = get(base + "/nothing-here")
    assert code == 404


def test_the_endpoint_stops_listening_when_the_monitor_stops(
    served: Callable[[MonitorConfig], Monitor],
) -> None:
    monitor = served(MonitorConfig(source="t"))
    address = monitor.http_address
    assert address is not None
    untwisted.run(monitor.stop(), timeout=30)
    assert monitor.http_address is None
    with pytest.raises(urllib.error.URLError, match="Connection refused"):
        get(f"http://127.0.0.1:{address[1]}/")


def test_a_port_that_is_taken_is_a_config_error_that_says_what_to_do() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monitor = Monitor(MonitorConfig(source="t"), scheduler=Scheduler())
        try:
            with pytest.raises(
                ConfigError,
                match=rf"^cannot serve HTTP on 127\.0\.0\.1:{port}: .*; choose another "
                r"with --http HOST:PORT or set http = false in \[monitor\]$",
            ):
                monitor.start(http=("127.0.0.1", port))
        finally:
            untwisted.run(monitor.stop(), timeout=30)


def test_process_metrics_that_cannot_be_read_are_left_out_not_made_up() -> None:
    from procwork.monitor._metrics import process_metrics

    assert process_metrics("/nonexistent/proc/self") == []
