"""``procwork monitor`` end to end: a real monitor process on a test config.

The monitor runs a service, a check and a watchdog rule; the test reads its
HTTP endpoint, kills the service and sees it restarted, sees the rule kill a
runaway process the test started, stops the monitor with SIGTERM and checks
that nothing it started is left running. Every wait is bounded, and
everything the test started is killed (by pid) in ``finally`` blocks.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support import PY, alive
from tests.support.monitor import MonitorProcess, get, gone, running_with, wait_for

# A real procwork monitor process in every test.
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_the_monitor_restarts_a_killed_service_kills_a_runaway_and_stops_cleanly(
    tmp_path: Path, started: list[int]
) -> None:
    marker = f"--runaway-marker-{uuid.uuid4().hex}"
    ours = f"--started-by-monitor-{uuid.uuid4().hex}"  # in the service and check
    config = tmp_path / "monitor.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [monitor]
            summary_every = 1
            rules_every = 0.2
            http = false        # --http on the command line says where
            max_load = false

            [[service]]
            name = "sleeper"
            command = [
                "{{python}}", "-c", "import time\\nwhile True: time.sleep(1)", "{ours}"
            ]
            start_seconds = 0.2
            min_restart_delay = 0.1
            stop_timeout = 5

            [[check]]
            name = "fine"
            command = ["{{python}}", "-c", "print('all fine')", "{ours}"]
            every = 0.5

            [[rule]]
            name = "runaway"
            cmdline = "{marker}"
            max_age = 0
            action = "term"
            grace = 1
            """
        )
    )
    runaway = subprocess.Popen([PY, "-c", "import time; time.sleep(300)", marker])
    started.append(runaway.pid)
    monitor = MonitorProcess(
        str(config), "--http", "127.0.0.1:0", stderr=tmp_path / "stderr"
    )
    started.append(monitor.proc.pid)
    try:
        port = int(monitor.expect(r"status on http://127\.0\.0\.1:(\d+)/").group(1))
        base = f"http://127.0.0.1:{port}"

        def service() -> dict[str, Any]:
            status = json.loads(get(base + "/"))
            assert status["pid"] == monitor.proc.pid
            sleeper: dict[str, Any] = status["services"]["sleeper"]
            return sleeper

        # The service runs; its pid is in the status.
        first = wait_for("the service to run", lambda: service()["pid"])
        started.append(first)
        service_pids = [first]

        # The rule finds the runaway by its command line and SIGTERMs it.
        assert runaway.wait(timeout=30) == -signal.SIGTERM
        monitor.expect(
            rf"rule runaway: pid {runaway.pid} \(\S*python\S* .*\) .*sent SIGTERM"
        )

        # Killed from outside, the service is restarted with a new pid.
        os.kill(first, signal.SIGKILL)

        def restarted() -> int | None:
            status = service()
            pid = status["pid"]
            return pid if pid not in (None, first) and status["restarts"] else None

        second = wait_for("the service to be restarted", restarted)
        started.append(second)
        service_pids.append(second)
        assert not alive(first)

        # The metrics say so too, and the check has run.
        def metrics() -> list[str] | None:
            lines = get(base + "/metrics").decode().splitlines()
            wanted = {
                "procwork_up 1",
                'procwork_service_restarts_total{service="sleeper"} 1',
                'procwork_rule_signals_total{rule="runaway"} 1',
                'procwork_check_ok{check="fine"} 1',
            }
            return lines if wanted <= set(lines) else None

        lines = wait_for("the metrics", metrics)
        runs = next(x for x in lines if x.startswith("procwork_check_runs_total"))
        assert int(runs.rsplit(" ", 1)[1]) >= 1
        monitor.expect(r"summary: \d/1 services running; 1 checks; failing: none; ")

        # Prometheus' own parser reads the whole page.
        from prometheus_client.parser import text_string_to_metric_families

        families = {
            f.name: f
            for f in text_string_to_metric_families(get(base + "/metrics").decode())
        }
        states = {
            s.labels["state"]: s.value
            for s in families["procwork_service_state"].samples
        }
        assert sum(states.values()) == 1 and len(states) == 7
        assert families["procwork_service_restarts"].type == "counter"
        assert families["process_open_fds"].samples[0].value > 0
        [start] = families["procwork_service_start_time_seconds"].samples
        assert abs(start.value - time.time()) < 120
        running = {
            s.labels["kind"]: s.value
            for s in families["procwork_processes_running"].samples
        }
        assert running["service"] == 1

        # SIGTERM stops it cleanly: exit 0, and nothing it started left running.
        assert second in running_with(ours)
        monitor.proc.send_signal(signal.SIGTERM)
        assert monitor.proc.wait(timeout=30) == 0
        output = "\n".join(monitor.drain())
        assert "monitor stopped" in output
        assert "stopping service 'sleeper': SIGTERM to process group" in output
        assert "Traceback" not in output
        for pid in service_pids:
            assert wait_for(f"pid {pid} to be gone", functools.partial(gone, pid))
        assert wait_for(
            "every process of the service and check to be gone",
            lambda: not running_with(ours),
        )
        stderr = (tmp_path / "stderr").read_text()
        assert "Traceback" not in stderr, stderr
    finally:
        monitor.close()
        started.extend(running_with(ours))
        if runaway.poll() is None:
            runaway.kill()
            runaway.wait(timeout=10)


def test_json_log_emits_one_object_per_line_in_procworks_own_schema(
    tmp_path: Path, started: list[int]
) -> None:
    """--json-log: time, level, event, logger, the service/check it is about,
    message and fields; none of Twisted's log_* internals."""
    config = tmp_path / "monitor.toml"
    config.write_text(
        textwrap.dedent(
            """
            [[service]]
            name = "talker"
            command = [
                "{python}", "-u", "-c", "import time; print('hello'); time.sleep(60)"
            ]

            [[check]]
            name = "fails"
            command = ["{python}", "-c", "print('disk full'); raise SystemExit(4)"]
            every = 60
            """
        )
    )
    monitor = MonitorProcess(
        str(config),
        "--json-log",
        "--http",
        "127.0.0.1:0",
        stderr=tmp_path / "stderr",
    )
    started.append(monitor.proc.pid)
    try:
        monitor.expect(r'"message": "hello"')
        monitor.expect(r'"message": "check fails failed: exited 4: disk full"')
        monitor.proc.send_signal(signal.SIGTERM)
        assert monitor.proc.wait(timeout=30) == 0
        lines = monitor.drain()
    finally:
        monitor.close()
    events = [json.loads(line) for line in lines]
    schema = {"time", "level", "event", "logger", "message", "fields"}
    for e in events:
        assert schema <= set(e) <= schema | {"service", "check", "rule", "alert"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["time"])
        assert e["level"] in {"debug", "info", "warn", "error", "critical"}
        assert not any(key.startswith("log_") for key in e["fields"])
    [hello] = [e for e in events if e["message"] == "hello"]
    assert (hello["event"], hello["service"], hello["fields"]["stream"]) == (
        "service.output",
        "talker",
        "stdout",
    )
    assert any(
        re.fullmatch(
            r"status on http://127\.0\.0\.1:\d+/ and metrics on /metrics",
            e["message"],
        )
        for e in events
    )
    [failed] = [e for e in events if e["message"].startswith("check fails failed")]
    assert (failed["level"], failed["check"], failed["fields"]["outcome"]) == (
        "warn",
        "fails",
        "failed",
    )
    [started_event] = [e for e in events if e["event"] == "service.starting"]
    assert started_event["service"] == "talker"
    assert "Site starting" not in "\n".join(lines)
    assert events[-1]["message"] == "monitor stopped"


def test_the_built_in_config_runs_with_no_setup_for_its_duration(
    tmp_path: Path, started: list[int]
) -> None:
    monitor = MonitorProcess(
        "--http", "127.0.0.1:0", "--duration", "2", stderr=tmp_path / "stderr"
    )
    started.append(monitor.proc.pid)
    try:
        pid = int(monitor.expect(r"service 'heartbeat' started: pid (\d+)").group(1))
        started.append(pid)
        monitor.expect(r"check load (ok: load \d+\.\d\d per core|failed: exited 1)")
        assert monitor.proc.wait(timeout=60) == 0
        output = "\n".join(monitor.drain())
    finally:
        monitor.close()
    assert "monitor started from <built-in config>: 1 services, 2 checks, 1 rules" in (
        output
    )
    assert "monitor ran for its --duration of 2.0 s" in output
    assert "monitor stopped" in output
    assert wait_for(f"heartbeat pid {pid} to be gone", lambda: not alive(pid))


def test_supervisord_conventions_run_instances_from_an_include_and_a_poller_lives_on(
    tmp_path: Path, started: list[int]
) -> None:
    """include, numprocs with {instance}, ${VAR:-default}, a relative cwd, and a
    poller that exits 0 after start_seconds every time: restarted, never FATAL."""
    ours = f"--started-by-monitor-{uuid.uuid4().hex}"
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "conf.d" / "workers.toml").write_text(
        textwrap.dedent(
            f"""
            [[service]]
            name = "worker-{{instance}}"
            numprocs = 2
            cwd = "../data"
            command = [
                "{{python}}", "-u", "-c",
                "import os, sys, time; print(os.getcwd(), sys.argv[1]); time.sleep(60)",
                "${{QUEUE_NAME:-jobs}}-{{instance}}", "{ours}",
            ]
            start_seconds = 0.1

            [[service]]
            name = "poller"
            command = ["{{python}}", "-c", "import time; time.sleep(0.3)", "{ours}"]
            start_seconds = 0.1
            max_restarts = 1
            """
        )
    )
    config = tmp_path / "monitor.toml"
    config.write_text('include = ["conf.d/*.toml"]\n[monitor]\nhttp = false\n')
    monitor = MonitorProcess(str(config), stderr=tmp_path / "stderr")
    started.append(monitor.proc.pid)
    try:
        for instance in (0, 1):
            monitor.expect(
                rf"\[worker-{instance} stdout\] {re.escape(str(tmp_path / 'data'))} "
                rf"jobs-{instance}$"
            )
        # max_restarts = 1, yet the poller is restarted again and again.
        monitor.expect(r"service 'poller' exited 0 after .*; restarting now")
        for pid in running_with(ours):
            started.append(pid)
        for _ in range(3):
            monitor.expect(r"service 'poller' started: pid (\d+)")
            monitor.lines.clear()
        monitor.proc.send_signal(signal.SIGTERM)
        assert monitor.proc.wait(timeout=30) == 0
        output = "\n".join(monitor.drain())
    finally:
        monitor.close()
    assert "FATAL" not in output
    assert wait_for("every service to be gone", lambda: not running_with(ours))
