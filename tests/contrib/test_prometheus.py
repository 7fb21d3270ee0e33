"""contrib/prometheus and contrib/alertmanager: checked by Prometheus's own tools.

The rules are unit-tested with ``promtool test rules`` on input series made
from a real ``procwork monitor``'s ``/metrics``: the test runs a monitor with
a FATAL service, a failing check, a passing check and a rule, scrapes it, and
turns every scraped series (its name and labels, as Prometheus would store
them with ``job`` and ``instance`` added) into promtool input. A metric or
label renamed in ``procwork/monitor/_metrics.py`` therefore breaks these
tests instead of silently breaking the alerts.

The Alertmanager example is checked with ``amtool check-config``, its
routes with ``amtool config routes test``, and its inhibition on a real
Alertmanager fed the alerts the rules raise.

promtool, amtool and Alertmanager come from Debian's ``prometheus`` and
``prometheus-alertmanager`` packages; ``.ci/run`` installs them when missing.
Their absence is a failure, not a skip: these files are only as good as the
tools that check them. Every tool run and every wait is bounded.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, sigkill_leftovers
from tests.support.monitor import MonitorProcess, get, running_with, wait_for
from tests.support.tools import need_tool

PROMETHEUS = ROOT / "contrib" / "prometheus"
RULES = PROMETHEUS / "procwork.rules.yml"
ALERTMANAGER = ROOT / "contrib" / "alertmanager" / "alertmanager.yml"


def tool(
    name: str, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run a Prometheus tool (at most ``timeout`` s); skip if it is not installed."""
    package = "prometheus-alertmanager" if name == "amtool" else "prometheus"
    path = need_tool(name, package=package)
    return subprocess.run(
        [path, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


# -- a real monitor's /metrics ------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One series of a scrape: its name, labels and value."""

    name: str
    labels: dict[str, str]
    value: float


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    """The samples of a real monitor's ``/metrics``, scraped once it holds a
    RUNNING service ``steady``, a FATAL service ``crasher``, a check ``fine``
    that passed, a check ``broken`` that failed, and a rule ``runaway``."""
    from prometheus_client.parser import text_string_to_metric_families

    tmp = tmp_path_factory.mktemp("monitor")
    ours = f"--started-by-monitor-{uuid.uuid4().hex}"
    config = tmp / "monitor.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [monitor]
            summary_every = 0
            rules_every = 0.2
            http = false
            max_load = false

            [[service]]
            name = "steady"
            command = ["{{python}}", "-c", "import time; time.sleep(120)", "{ours}"]
            start_seconds = 0.2

            [[service]]
            name = "crasher"
            command = ["{{python}}", "-c", "raise SystemExit(1)", "{ours}"]
            start_seconds = 1
            max_restarts = 0

            [[check]]
            name = "fine"
            command = ["{{python}}", "-c", "pass", "{ours}"]
            every = 0.2

            [[check]]
            name = "broken"
            command = ["{{python}}", "-c", "raise SystemExit(3)", "{ours}"]
            every = 0.2

            [[alert]]
            name = "pager"
            command = ["{{python}}", "-c", "pass", "{ours}"]
            events = ["check.failed"]

            [[rule]]
            name = "runaway"
            cmdline = "--no-such-process-{uuid.uuid4().hex}"
            max_age = 0
            action = "term"
            """
        )
    )
    with sigkill_leftovers() as started:
        monitor = MonitorProcess(
            str(config), "--http", "127.0.0.1:0", stderr=tmp / "stderr"
        )
        started.append(monitor.proc.pid)
        try:
            port = monitor.expect(r"status on http://127\.0\.0\.1:(\d+)/").group(1)
            url = f"http://127.0.0.1:{port}/metrics"

            def ready() -> list[Sample] | None:
                samples = [
                    Sample(s.name, dict(s.labels), s.value)
                    for family in text_string_to_metric_families(get(url).decode())
                    for s in family.samples
                ]
                value = {(s.name, *s.labels.values()): s.value for s in samples}
                every_case = (
                    value.get(("procwork_service_state", "crasher", "FATAL")) == 1
                    and value.get(("procwork_service_up", "steady")) == 1
                    and value.get(("procwork_check_ok", "fine")) == 1
                    and value.get(("procwork_check_ok", "broken")) == 0
                    and value.get(("procwork_check_consecutive_failures", "broken"))
                    and value.get(("procwork_alert_deliveries_total", "pager", "ok"))
                )
                return samples if every_case else None

            samples = wait_for("the monitor's metrics to show every case", ready)
            monitor.proc.send_signal(signal.SIGTERM)
            assert monitor.proc.wait(timeout=30) == 0
        finally:
            monitor.close()
            started.extend(running_with(ours))
    return samples


# -- promtool test files from the scrape ---------------------------------------------


def series(name: str, labels: dict[str, str]) -> str:
    """A series in PromQL notation: ``name{label="value",...}``."""
    inner = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def values(points: list[float]) -> str:
    """promtool's ``values`` notation for one sample a minute."""
    return " ".join(repr(float(p)) for p in points)


MINUTES = 40
"""Length of every input series, one sample a minute."""

EVAL = "30m"
"""When the alerts are evaluated: past every rule's ``for`` and range."""


def alert(
    name: str, instance: str, severity: str, component: str, **labels: str
) -> dict[str, Any]:
    return {
        "alertname": name,
        "labels": {
            "job": "procwork",
            "instance": instance,
            "severity": severity,
            "component": component,
            **labels,
        },
    }


def alert_names() -> list[str]:
    return re.findall(r"^\s*- alert: (\w+)$", RULES.read_text(), re.MULTILINE)


@pytest.mark.e2e
def test_every_alert_and_recording_rule_passes_promtool_check_rules() -> None:
    done = tool("promtool", "check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 17 rules found" in done.stdout
    assert set(alert_names()) >= {
        "ProcworkMonitorDown",
        "ProcworkServiceFatal",
        "ProcworkServiceFlapping",
        "ProcworkCheckFailing",
        "ProcworkRuleKillingRepeatedly",
        "ProcworkMonitorFdsHigh",
        "ProcworkMonitorCpuHigh",
    }


@pytest.mark.e2e
def test_the_scrape_config_and_its_file_sd_targets_pass_promtool_check_config() -> None:
    """promtool reads the rule files and the file_sd target files it names too."""
    done = tool("promtool", "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout
    text = (PROMETHEUS / "prometheus.yml").read_text()
    assert "job_name: procwork" in text and "file_sd_configs:" in text


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads, found conservatively.

    Strings, label matchers, ranges and the label lists of ``by``, ``on``
    and their kin are removed; what is left that looks like a name, is not
    called like a function and is not a keyword is a metric name.
    """
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr
    )
    expr = re.sub(r"\boffset\s+-?\w+", " ", expr)
    keywords = {"and", "or", "unless", "bool", "inf", "nan"}
    return {
        name
        for name, call in re.findall(r"(?<![\w:.])([A-Za-z_:][\w:]*)\s*(\()?", expr)
        if not call and name.lower() not in keywords
    }


def test_the_metric_name_finder_finds_names_and_nothing_else() -> None:
    assert metric_names(
        'sum by (job, state) (rate(a_total{job="x", y=~"b|c"}[5m])) > 0.5 '
        "and on (instance) b:c / d offset 5m unless up == bool 1"
    ) == {"a_total", "b:c", "d", "up"}


def rule_exprs(text: str) -> list[str]:
    """Every ``expr:`` of a rules file, folded (``>-``) ones joined into one line."""
    exprs: list[str] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        found = re.match(r"^(\s*)expr: (.*)$", line)
        if not found:
            continue
        if found.group(2) != ">-":
            exprs.append(found.group(2))
            continue
        indent, folded = len(found.group(1)), []
        for more in lines[i + 1 :]:
            if len(more) - len(more.lstrip()) <= indent:
                break
            folded.append(more.strip())
        exprs.append(" ".join(folded))
    return exprs


@pytest.mark.e2e
@pytest.mark.slow
def test_every_metric_a_rule_reads_is_served_on_a_real_monitors_metrics(
    scraped: list[Sample],
) -> None:
    """Or is Prometheus's own ``up``, or a recording rule of the same file."""
    text = RULES.read_text()
    exprs = rule_exprs(text)
    recorded = set(re.findall(r"^\s*- record: (\S+)$", text, re.MULTILINE))
    served = {s.name for s in scraped}
    read = set().union(*(metric_names(e) for e in exprs))
    assert len(exprs) == 17
    assert {"up", "procwork_service_state", "process_open_fds"} <= read
    assert read - served - recorded == {"up"}


def scenario(
    scraped: list[Sample],
) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """Input series for three hosts, and the alerts expected at :data:`EVAL`.

    - ``a:8642`` serves exactly what the real monitor served, unchanged for
      the whole test: its FATAL service and its failing check alert, nothing
      else does.
    - ``b:8642`` serves the same series, in trouble: the running service is
      restarted every minute, the rule signals every minute, the monitor
      drops log lines, steady's log loses lines and the loop stalls, the monitor
      uses 90 % of its fds and a whole core, and it restarted 3 times.
    - ``c:8642`` cannot be scraped: ``up`` is 0 and it serves nothing.
    """
    inputs = []
    per_minute = range(MINUTES + 1)
    for instance in ("a:8642", "b:8642"):
        trouble = instance == "b:8642"
        max_fds = next(s.value for s in scraped if s.name == "process_max_fds")
        for s in scraped:
            points = [s.value for _ in per_minute]
            if trouble:
                if (
                    s.name == "procwork_service_restarts_total"
                    and s.labels == {"service": "steady"}
                ) or s.name == "procwork_rule_signals_total":
                    points = [s.value + m for m in per_minute]
                elif s.name == "procwork_alert_deliveries_total" and (
                    s.labels["outcome"] == "dropped"
                ):
                    points = [s.value + 5 * m for m in per_minute]
                elif s.name == "procwork_log_lines_dropped_total" or (
                    s.name == "procwork_service_log_lines_lost_total"
                    and s.labels == {"service": "steady"}
                ):
                    points = [s.value + 100 * m for m in per_minute]
                elif s.name == "procwork_monitor_loop_stalls_total":
                    points = [s.value + m for m in per_minute]
                elif s.name == "process_open_fds":
                    points = [0.9 * max_fds for _ in per_minute]
                elif s.name == "process_cpu_seconds_total":
                    points = [s.value + 60 * m for m in per_minute]
                elif s.name == "process_start_time_seconds":
                    points = [s.value + 600 * (m // 10) for m in per_minute]
            labels = {**s.labels, "job": "procwork", "instance": instance}
            inputs.append({"series": series(s.name, labels), "values": values(points)})
        up = {"job": "procwork", "instance": instance}
        inputs.append(
            {"series": series("up", up), "values": values([1] * (MINUTES + 1))}
        )
    down = {"job": "procwork", "instance": "c:8642"}
    inputs.append({"series": series("up", down), "values": values([0] * (MINUTES + 1))})

    fatal = [
        s.labels["service"]
        for s in scraped
        if s.name == "procwork_service_state"
        and s.labels["state"] == "FATAL"
        and s.value == 1
    ]
    failing = [
        s.labels["check"]
        for s in scraped
        if s.name == "procwork_check_ok"
        and s.value == 0
        and any(
            f.name == "procwork_check_consecutive_failures"
            and f.labels == s.labels
            and f.value > 0
            for f in scraped
        )
    ]
    assert (fatal, failing) == (["crasher"], ["broken"])
    expected = [
        alert("ProcworkMonitorDown", "c:8642", "critical", "monitor"),
        alert("ProcworkMonitorRestarting", "b:8642", "warning", "monitor"),
        alert(
            "ProcworkServiceFlapping", "b:8642", "warning", "service", service="steady"
        ),
        alert(
            "ProcworkRuleKillingRepeatedly", "b:8642", "warning", "rule", rule="runaway"
        ),
        alert(
            "ProcworkAlertsDropped",
            "b:8642",
            "warning",
            "alert",
            alert="pager",
            outcome="dropped",
        ),
        alert("ProcworkMonitorLogDropping", "b:8642", "warning", "monitor"),
        alert(
            "ProcworkServiceLogFailing",
            "b:8642",
            "warning",
            "service",
            service="steady",
        ),
        alert("ProcworkMonitorStalling", "b:8642", "warning", "monitor"),
        alert("ProcworkMonitorFdsHigh", "b:8642", "warning", "monitor"),
        alert("ProcworkMonitorCpuHigh", "b:8642", "warning", "monitor"),
    ]
    for instance in ("a:8642", "b:8642"):
        expected += [
            alert(
                "ProcworkServiceFatal",
                instance,
                "critical",
                "service",
                service=service,
                state="FATAL",
            )
            for service in fatal
        ]
        expected += [
            alert("ProcworkCheckFailing", instance, "warning", "check", check=check)
            for check in failing
        ]
    return inputs, expected


ANNOTATIONS = {
    "ProcworkMonitorDown": (
        "procwork monitor on {instance} is down",
        "Prometheus could not scrape {instance} for 2 minutes: its services are "
        "unwatched, or the host is unreachable.",
    ),
    "ProcworkMonitorRestarting": (
        "procwork monitor on {instance} keeps restarting",
        "The monitor on {instance} started 3 times in 30 minutes; see its journal.",
    ),
    "ProcworkServiceFatal": (
        "service {service} on {instance} is FATAL",
        "procwork gave up restarting {service} on {instance}; it stays down "
        "until started again.",
    ),
    "ProcworkServiceFlapping": (
        "service {service} on {instance} is flapping",
        "{service} on {instance} was restarted 15 times in 15 minutes.",
    ),
    "ProcworkCheckFailing": (
        "check {check} on {instance} is failing",
        "The last run of {check} on {instance} failed, and no run has succeeded "
        "for at least 10 minutes.",
    ),
    "ProcworkRuleKillingRepeatedly": (
        "rule {rule} on {instance} keeps killing",
        "Rule {rule} on {instance} sent 30 signals in the last hour.",
    ),
    "ProcworkAlertsDropped": (
        "alert {alert} on {instance} drops events",
        "The alert {alert} on {instance} dropped 75 events in 15 minutes: more "
        "came than its max_in_flight and max_queued let it deliver.",
    ),
    "ProcworkMonitorLogDropping": (
        "procwork monitor on {instance} drops log lines",
        "The monitor on {instance} dropped 1.5k lines of its own log in 15 "
        "minutes: its stdout is not read fast enough (a paused pager, a stuck "
        "journal).",
    ),
    "ProcworkServiceLogFailing": (
        "service {service} on {instance} loses log lines",
        "1.5k lines of {service}'s output on {instance} could not be written to "
        "its log files in 15 minutes (a full disk, or its log directory gone).",
    ),
    "ProcworkMonitorStalling": (
        "procwork monitor on {instance} stalls",
        "The monitor's event loop on {instance} stalled over 1 s 15 times in 15 "
        "minutes (an overloaded machine, or a blocking bug).",
    ),
    "ProcworkMonitorFdsHigh": (
        "procwork monitor on {instance} uses most of its fds",
        "90% of the monitor's file descriptor limit is in use on {instance}.",
    ),
    "ProcworkMonitorCpuHigh": (
        "procwork monitor on {instance} uses much CPU",
        "The monitor on {instance} has used 1 cores for 15 minutes.",
    ),
}


@pytest.mark.e2e
@pytest.mark.slow
def test_the_alerts_fire_on_series_shaped_like_a_real_monitors_metrics(
    scraped: list[Sample], tmp_path: Path
) -> None:
    """promtool test rules: each alert fires where expected, with its labels
    and annotations, and nowhere else; the recording rules give the fleet's
    totals."""
    inputs, expected = scenario(scraped)
    tests = []
    for name in alert_names():
        exp_alerts = []
        for a in (a for a in expected if a["alertname"] == name):
            summary, description = ANNOTATIONS[name]
            exp_alerts.append(
                {
                    "exp_labels": a["labels"],
                    "exp_annotations": {
                        "summary": summary.format(**a["labels"]),
                        "description": description.format(**a["labels"]),
                    },
                }
            )
        tests.append({"eval_time": EVAL, "alertname": name, "exp_alerts": exp_alerts})
    assert {t["alertname"] for t in tests if t["exp_alerts"]} == set(ANNOTATIONS)
    states = {
        s.labels["state"]: s.value
        for s in scraped
        if s.name == "procwork_service_state"
    }
    promql = [
        {
            "expr": f'job_state:procwork_services:sum{{state="{state}"}}',
            "eval_time": EVAL,
            "exp_samples": [
                {
                    "labels": series(
                        "job_state:procwork_services:sum",
                        {"job": "procwork", "state": state},
                    ),
                    "value": 2
                    * sum(
                        s.value
                        for s in scraped
                        if s.name == "procwork_service_state"
                        and s.labels["state"] == state
                    ),
                }
            ],
        }
        for state in states
    ]
    promql.append(
        {
            "expr": "instance:procwork_process_fds:ratio > 0.5",
            "eval_time": EVAL,
            "exp_samples": [
                {
                    "labels": series(
                        "instance:procwork_process_fds:ratio",
                        {"job": "procwork", "instance": "b:8642"},
                    ),
                    "value": 0.9,
                }
            ],
        }
    )
    test_file = tmp_path / "procwork.test.yml"
    # JSON is YAML: no YAML library needed to write promtool's input.
    test_file.write_text(
        json.dumps(
            {
                "rule_files": [str(RULES)],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": inputs,
                        "alert_rule_test": tests,
                        "promql_expr_test": promql,
                    }
                ],
            },
            indent=1,
        )
    )
    done = tool("promtool", "test", "rules", str(test_file))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@pytest.mark.e2e
@pytest.mark.slow
def test_promtool_fails_the_rule_test_when_an_expected_alert_does_not_fire(
    scraped: list[Sample], tmp_path: Path
) -> None:
    """The rule test above can fail: an alert expected on a healthy host is
    reported as missing."""
    inputs, _ = scenario(scraped)
    test_file = tmp_path / "wrong.test.yml"
    wrong = alert("ProcworkMonitorDown", "a:8642", "critical", "monitor")
    test_file.write_text(
        json.dumps(
            {
                "rule_files": [str(RULES)],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": inputs,
                        "alert_rule_test": [
                            {
                                "eval_time": EVAL,
                                "alertname": "ProcworkMonitorDown",
                                "exp_alerts": [{"exp_labels": wrong["labels"]}],
                            }
                        ],
                    }
                ],
            }
        )
    )
    done = tool("promtool", "test", "rules", str(test_file))
    assert done.returncode == 1
    assert 'instance="a:8642"' in done.stdout + done.stderr


# -- Alertmanager ---------------------------------------------------------------------


@pytest.mark.e2e
def test_the_alertmanager_example_passes_amtool_check_config() -> None:
    done = tool("amtool", "check-config", str(ALERTMANAGER))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 inhibit rules" in done.stdout


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=ProcworkMonitorDown", "severity=critical"], "procwork-pager"),
        (["alertname=ProcworkServiceFatal", "severity=critical"], "procwork-pager"),
        (["alertname=ProcworkCheckFailing", "severity=warning"], "procwork-mail"),
    ],
)
def test_critical_alerts_page_and_warnings_mail(
    labels: list[str], receiver: str
) -> None:
    done = tool(
        "amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == receiver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def api(url: str, body: object = None) -> Any:
    """GET (or POST ``body`` as JSON to) Alertmanager's API; 10 s at most."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """A real Alertmanager on the example config, alone (no cluster); its URL."""
    binary = need_tool(
        "prometheus-alertmanager", "alertmanager", package="prometheus-alertmanager"
    )
    port = free_port()
    with (
        sigkill_leftovers() as started,
        (tmp_path / "alertmanager.log").open("wb") as log,
    ):
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={ALERTMANAGER}",
                f"--storage.path={tmp_path}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        started.append(process.pid)
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(
                    "alertmanager exited:\n"
                    + (tmp_path / "alertmanager.log").read_text()
                )
            try:
                with urllib.request.urlopen(url + "/-/ready", timeout=5) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        try:
            wait_for("alertmanager to be ready", ready)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@pytest.mark.e2e
def test_a_hosts_monitor_down_silences_that_hosts_service_alerts_only(
    alertmanager: str,
) -> None:
    """Checked on a real Alertmanager: while a:8642's monitor is down, its
    service and check alerts are inhibited; b:8642's are not, nor is the
    monitor-down alert itself. A FATAL service silences its own flapping."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    fired = [
        alert("ProcworkMonitorDown", "a:8642", "critical", "monitor"),
        alert("ProcworkServiceFatal", "a:8642", "critical", "service", service="x"),
        alert("ProcworkCheckFailing", "a:8642", "warning", "check", check="disk"),
        alert("ProcworkServiceFatal", "b:8642", "critical", "service", service="x"),
        alert("ProcworkServiceFlapping", "b:8642", "warning", "service", service="x"),
        alert("ProcworkServiceFlapping", "b:8642", "warning", "service", service="y"),
    ]
    api(
        alertmanager + "/api/v2/alerts",
        [
            {"labels": {"alertname": a["alertname"], **a["labels"]}, "startsAt": now}
            for a in fired
        ],
    )
    status = {
        (
            a["labels"]["alertname"],
            a["labels"]["instance"],
            a["labels"].get("service"),
        ): a["status"]["state"]
        for a in api(alertmanager + "/api/v2/alerts")
    }
    assert status == {
        ("ProcworkMonitorDown", "a:8642", None): "active",
        ("ProcworkServiceFatal", "a:8642", "x"): "suppressed",
        ("ProcworkCheckFailing", "a:8642", None): "suppressed",
        ("ProcworkServiceFatal", "b:8642", "x"): "active",
        ("ProcworkServiceFlapping", "b:8642", "x"): "suppressed",
        ("ProcworkServiceFlapping", "b:8642", "y"): "active",
    }
