"""A crash loop, as a real ``procwork monitor`` tells it: ctl, the page,
/metrics, and a real command alert.

The service crashes at once, saying why on stderr; with the backoff
doubling from 1 s and max_restarts = 3 it is FATAL about 7 s later. Every
wait is bounded; the monitor and what it started are killed by pid.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest

from tests.support.monitor import (
    MonitorProcess,
    ctl,
    get,
    start_monitor,
    statuses,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CRASH = (
    "import sys; print('no DATABASE_URL in the environment', file=sys.stderr); "
    "sys.exit(3)"
)


def test_a_real_crash_loop_is_BACKOFF_with_its_count_everywhere_and_two_alerts(
    monitors: list[MonitorProcess], tmp_path: Path, ours: str
) -> None:
    said = tmp_path / "alerts"
    config = tmp_path / "monitor.toml"
    config.write_text(
        f"""
[monitor]
http = "127.0.0.1:0"
socket = "{tmp_path / "ctl.sock"}"
summary_every = 0
max_load = false
"""
        + f"""
[[service]]
name = "crash"
command = ["{{python}}", "-c", {json.dumps(CRASH)}, "{ours}"]
min_restart_delay = 1
max_restarts = 3
"""
        + f"""
[[alert]]
name = "page"
events = ["service.*"]
command = ["sh", "-c", "echo $PROCWORK_EVENT >> {said}"]
"""
    )
    monitor = start_monitor(monitors, tmp_path, config)
    port = monitor.expect(r"status on http://127\.0\.0\.1:(\d+)/").group(1)
    sock = tmp_path / "ctl.sock"

    def looping_in_ctl() -> str | None:
        # BACKOFF for 2 s after the second crash, 4 s after the third.
        table = ctl(sock, "status").stdout
        row = re.search(r"^crash +(BACKOFF \(crash loop: .*?\)) ", table, re.M)
        return None if row is None else row.group(1)

    state = wait_for("ctl status to show the crash loop", looping_in_ctl)
    assert re.fullmatch(
        r"BACKOFF \(crash loop: [23] exits in [\d.]+ s, next start in [\d.]+ s\)",
        state,
    )
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/", headers={"Accept": "text/html"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        page = response.read().decode()
    assert "<title>procwork: 0/1 running, 1 unhealthy</title>" in page
    assert re.search(r'class="state warn">\w+ \(crash loop: [23] exits in', page)
    metrics = get(f"http://127.0.0.1:{port}/metrics").decode()
    assert 'procwork_service_crash_loop{service="crash"} 1' in metrics

    fatal = wait_for(
        "the service to be FATAL",
        lambda: statuses(sock)["crash"]["state"] == "FATAL" and statuses(sock),
    )["crash"]
    assert fatal["summary"] == (
        "FATAL (exited 3: 4 unexpected exits within 60 s, more than max_restarts=3)"
    )
    assert fatal["last_stderr"] == ["no DATABASE_URL in the environment"]
    table = ctl(sock, "status").stdout
    assert "| no DATABASE_URL in the environment" in table
    wait_for("two alerts", lambda: said.exists() and len(said.read_text().split()) >= 2)
    assert said.read_text().split() == ["service.crashloop", "service.fatal"]
