"""A real ``procwork monitor`` logging to syslog and journald sockets the test binds.

``[monitor] log = "syslog:PATH"`` / ``"journald:PATH"`` point the monitor
at a datagram socket of the test's own (:class:`~tests.support.logs.
LogDaemon`), where ``/dev/log`` or journald's socket would be. Its lines
come framed as those daemons take them; ``--log-level`` keeps the lower
ones out; a daemon not listening yet at start gets the lines once it
does; a daemon that stops reading costs lines, counted on
``/metrics`` and said when it reads again, never the monitor's service.
Every wait is bounded; every process started is killed by pid.
"""

from __future__ import annotations

import json
import re
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.logs import RFC3164, LogDaemon, journal_fields
from tests.support.monitor import (
    HEADER,
    MonitorProcess,
    python_service,
    statuses,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HELLO = "import time; print('hello', flush=True); time.sleep(600)"
#: Says bye and exits 3: restarted once (max_restarts = 1), then FATAL.
CRASHING = "import sys; print('bye', flush=True); sys.exit(3)"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[LogDaemon]:
    made = LogDaemon(tmp_path / "log.sock")
    yield made
    made.close()


def run(
    monitors: list[MonitorProcess], tmp_path: Path, config: str, *args: str
) -> MonitorProcess:
    path = tmp_path / "monitor.toml"
    path.write_text(config)
    sock = tmp_path / "ctl.sock"
    monitor = MonitorProcess(
        str(path), "--socket", str(sock), *args, stderr=tmp_path / "stderr"
    )
    monitors.append(monitor)
    return monitor


def header(log: str, extra: str = "") -> str:
    return HEADER.replace("[monitor]\n", f'[monitor]\nlog = "{log}"\n{extra}')


def test_its_lines_reach_syslog_as_syslog3_frames_them(
    tmp_path: Path, daemon: LogDaemon, monitors: list[MonitorProcess], ours: str
) -> None:
    monitor = run(
        monitors,
        tmp_path,
        header(f"syslog:{daemon.path}", 'syslog_facility = "local4"\n')
        + python_service("web", HELLO, ours),
    )
    started = daemon.until(lambda m: b"monitor started from" in m)
    match = RFC3164.fullmatch(started)
    assert match is not None, started
    assert int(match["pri"]) == 20 * 8 + 6  # local4.info
    assert (match["ident"], int(match["pid"])) == (b"procwork", monitor.proc.pid)
    hello = daemon.until(lambda m: m.endswith(b"[web stdout] hello"))
    assert RFC3164.fullmatch(hello) is not None
    assert monitor.lines == []  # nothing on stdout: it all went to syslog
    monitor.proc.send_signal(signal.SIGTERM)
    daemon.until(lambda m: m.endswith(b"[monitor] monitor stopped"))
    assert monitor.proc.wait(timeout=30) == 0


def test_its_lines_reach_journald_with_the_service_and_priority_as_fields(
    tmp_path: Path, daemon: LogDaemon, monitors: list[MonitorProcess], ours: str
) -> None:
    run(
        monitors,
        tmp_path,
        header(f"journald:{daemon.path}")
        + python_service("web", HELLO, ours)
        + python_service("crashy", CRASHING, ours, "max_restarts = 1\n"),
    )
    hello = journal_fields(daemon.until(lambda m: b"[web stdout] hello" in m))
    assert hello == {
        "MESSAGE": [b"[web stdout] hello"],
        "PRIORITY": [b"6"],
        "SYSLOG_IDENTIFIER": [b"procwork"],
        "SYSLOG_FACILITY": [b"3"],
        "SERVICE": [b"web"],
        "STREAM": [b"stdout"],
    }
    fatal = journal_fields(daemon.until(lambda m: b"it is FATAL" in m))
    assert (fatal["PRIORITY"], fatal["SERVICE"]) == ([b"2"], [b"crashy"])


def test_log_level_warn_keeps_info_lines_out(
    tmp_path: Path, daemon: LogDaemon, monitors: list[MonitorProcess], ours: str
) -> None:
    run(
        monitors,
        tmp_path,
        header(f"syslog:{daemon.path}")
        + python_service("crashy", CRASHING, ours, "max_restarts = 1\n"),
        "--log-level",
        "warn",
    )
    fatal = daemon.until(lambda m: b"it is FATAL" in m)
    before = daemon.drain()
    for message in [fatal, *before]:
        match = RFC3164.fullmatch(message)
        assert match is not None and int(match["pri"]) % 8 <= 4, message
    # The service's "bye" (info) came before, and was kept out.
    assert not any(b"bye" in m for m in before)


def test_a_daemon_not_listening_at_start_is_named_and_gets_the_lines_once_it_is(
    tmp_path: Path, monitors: list[MonitorProcess], ours: str
) -> None:
    """The services start anyway; stderr names the socket; the daemon
    bound later gets the lines that waited (the first ones included)."""
    path = tmp_path / "late.sock"
    monitor = run(
        monitors,
        tmp_path,
        header(f"syslog:{path}") + python_service("web", HELLO, ours),
    )
    sock = tmp_path / "ctl.sock"
    wait_for(
        "web running",
        lambda: sock.exists() and statuses(sock)["web"]["state"] == "RUNNING",
    )
    error = (tmp_path / "stderr").read_text()
    assert re.search(r"log = 'syslog:.*late\.sock': nothing listens on", error)
    daemon = LogDaemon(path)
    try:
        started = daemon.until(lambda m: b"monitor started from" in m)
        assert RFC3164.fullmatch(started) is not None, started
        daemon.until(lambda m: m.endswith(b"[web stdout] hello"))
        assert monitor.proc.poll() is None
    finally:
        daemon.close()


@pytest.mark.timeout(330)  # over pytest's 120 s: its reading may take 200 s
def test_a_daemon_that_stops_reading_costs_counted_lines_never_the_services(
    tmp_path: Path, daemon: LogDaemon, monitors: list[MonitorProcess], ours: str
) -> None:
    loud = "import itertools\nfor i in itertools.count(): print('line', i)"
    run(
        monitors,
        tmp_path,
        header(f"syslog:{daemon.path}").replace("http = false", 'http = "127.0.0.1:0"')
        + python_service("loud", loud, ours, "console_rate = 100000\n")
        + python_service("web", HELLO, ours),
    )
    port = re.search(
        rb"status on http://127\.0\.0\.1:(\d+)/",
        daemon.until(lambda m: b"status on http" in m),
    )
    assert port is not None
    base = f"http://127.0.0.1:{port[1].decode()}"

    def dropped() -> float:
        with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
            text = response.read().decode()
        found = re.search(r"^procwork_log_lines_dropped_total (\S+)$", text, re.M)
        assert found is not None
        return float(found[1])

    # The daemon reads nothing more: the monitor drops, counts, and serves.
    wait_for("lines dropped", lambda: dropped() > 1000, timeout=60)
    sock = tmp_path / "ctl.sock"
    assert statuses(sock)["web"]["state"] == "RUNNING"
    with urllib.request.urlopen(base + "/status.json", timeout=10) as response:
        assert json.load(response)["services"]["loud"]["state"] == "RUNNING"
    # It reads again: the count is said, in its place among the lines: after
    # the whole queue (1 MiB, 17000 lines here), which comes ten datagrams a
    # wake-up (net.unix.max_dgram_qlen): 56 s on a loaded 2-core machine.
    notice = daemon.until(lambda m: b"log lines dropped: syslog" in m, timeout=200)
    count = re.search(rb"\] (\d+) log lines dropped", notice)
    assert count is not None and int(count[1]) > 0
