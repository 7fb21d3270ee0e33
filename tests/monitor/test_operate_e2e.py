"""Operating ``procwork monitor`` end to end: alerts, logs, the status page.

Each test runs the real monitor as a process on its own config, with a real
HTTP server, a real browser or real sockets on loopback where the feature
needs them. Every wait is bounded; everything started is killed (by pid).
"""

from __future__ import annotations

import contextlib
import http.server
import itertools
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from tests.support.monitor import MonitorProcess, get, wait_for
from tests.support.smtp import SmtpServer
from tests.support.tools import need_tool

# A real procwork monitor process (and a real browser) in every test.
pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# -- helpers ----------------------------------------------------------------


class Hooks:
    """A webhook receiver on loopback: records every POSTed JSON body.

    ``fail_first`` requests are answered 500 (to see retries).
    """

    def __init__(self, fail_first: int = 0) -> None:
        self.posts: list[dict[str, Any]] = []
        self.answers: list[int] = []
        self._fail_left = fail_first
        self._lock = threading.Lock()
        hooks = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                with hooks._lock:
                    hooks.posts.append(json.loads(body))
                    code = 500 if hooks._fail_left > 0 else 200
                    hooks._fail_left -= 1
                    hooks.answers.append(code)
                self.send_response(code)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [p for p in self.posts if name is None or p["event"] == name]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    receiver = Hooks()
    try:
        yield receiver
    finally:
        receiver.close()


@pytest.fixture
def run_monitor(tmp_path: Path, started: list[int]) -> Iterator[Any]:
    """Starts ``procwork monitor`` on a config text; SIGKILLed at the end."""
    monitors: list[MonitorProcess] = []

    def run(text: str, *args: str, **kwargs: Any) -> tuple[MonitorProcess, str]:
        config = tmp_path / f"monitor{len(monitors)}.toml"
        config.write_text(textwrap.dedent(text))
        monitor = MonitorProcess(
            str(config),
            "--http",
            "127.0.0.1:0",
            *args,
            stderr=tmp_path / f"stderr{len(monitors)}",
            **kwargs,
        )
        monitors.append(monitor)
        started.append(monitor.proc.pid)
        port = monitor.expect(r"status on http://127\.0\.0\.1:(\d+)/").group(1)
        return monitor, f"http://127.0.0.1:{port}"

    try:
        yield run
    finally:
        for monitor in monitors:
            if monitor.proc.poll() is None:
                monitor.proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    monitor.proc.wait(timeout=20)
            monitor.close()


def status(base: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(get(base + "/status.json"))
    return result


# -- alerts --------------------------------------------------------------------


def test_a_webhook_gets_one_post_when_a_check_fails_reminders_and_one_on_recovery(
    tmp_path: Path, hooks: Hooks, run_monitor: Any
) -> None:
    """A check failing every run is one check.failed (after `failures` runs
    in a row), one reminder per repeat_every while it lasts, and one
    check.recovered: never one POST per failed run."""
    flag = tmp_path / "broken"
    flag.touch()
    _monitor, base = run_monitor(
        f"""
        [monitor]
        max_load = false

        [[check]]
        name = "flaky"
        # A shell, not a Python: a run costs milliseconds even on a loaded
        # machine, so that runs outnumber the once-a-second alerts.
        command = [
            "sh", "-c", 'if [ -e "$1" ]; then echo "the disk is on fire"; exit 3; fi',
            "sh", "{flag}",
        ]
        every = 0.1
        timeout = 10
        failures = 3
        repeat_every = 1

        [[alert]]
        name = "hook"
        events = ["check.*"]
        webhook = "{hooks.url}"
        """
    )
    # Deliveries run side by side (max_in_flight): on a loaded machine a
    # reminder can arrive before the first alert. Their order is the events'.
    [first] = wait_for(
        "the first POST",
        lambda: [p for p in hooks.events("check.failed") if not p["reminder"]],
    )
    assert first["name"] == "flaky" and first["state"] == "failing"
    assert first["fields"]["consecutive_failures"] == 3
    assert first["exit_status"] == 3, json.dumps(first)
    assert "the disk is on fire" in first["output"]
    assert first["reminder"] is False
    wait_for("two reminders", lambda: len(hooks.events("check.failed")) >= 3, 15)
    flag.unlink()
    wait_for("the recovery", lambda: hooks.events("check.recovered"), 15)
    time.sleep(1.5)  # a reminder or a recovery would be due by now
    failed = sorted(hooks.events("check.failed"), key=lambda p: float(p["time"]))
    runs = status(base)["checks"]["flaky"]["runs"]
    assert [p["reminder"] for p in failed][:1] == [False]
    assert all(p["reminder"] for p in failed[1:])
    # One reminder per second of failing (at least two), not one per run:
    # by the monitor's clock, not by when a loaded machine delivered them.
    times = [float(p["time"]) for p in failed]
    assert len(times) - 1 >= 2
    assert all(later - earlier > 0.9 for earlier, later in itertools.pairwise(times))
    assert runs >= 2 * len(failed)
    [recovered] = hooks.events("check.recovered")
    assert (recovered["name"], recovered["state"]) == ("flaky", "ok")
    hook = status(base)["alerts"]["hook"]
    assert hook["sent"] == len(hooks.posts) and hook["failed"] == 0
    assert hook["last_result"] == "webhook answered 200"


def test_a_webhook_answered_500_is_retried_after_retry_delay(
    run_monitor: Any,
) -> None:
    receiver = Hooks(fail_first=2)
    try:
        monitor, _base = run_monitor(
            f"""
            [[alert]]
            name = "hook"
            events = ["monitor.started"]
            webhook = "{receiver.url}"
            retries = 3
            retry_delay = 0.2
            """,
            "--log-level",
            "debug",  # a delivery's result is logged at debug
        )
        wait_for("three attempts", lambda: len(receiver.posts) >= 3)
        assert receiver.answers == [500, 500, 200]
        assert {p["event"] for p in receiver.posts} == {"monitor.started"}
        monitor.expect(r"alert hook: webhook answered 200")
        monitor.expect(r"webhook attempt 1 failed: answered 500; retrying in 0\.2 s")
    finally:
        receiver.close()


def test_a_webhook_that_never_answers_gives_up_after_its_retries(
    run_monitor: Any,
) -> None:
    # A listening socket that never accepts: every attempt times out.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(0)
    try:
        port = silent.getsockname()[1]
        monitor, base = run_monitor(
            f"""
            [[alert]]
            name = "hook"
            events = ["monitor.started"]
            webhook = "http://127.0.0.1:{port}/"
            timeout = 0.3
            retries = 1
            retry_delay = 0.1
            """
        )
        monitor.expect(
            r"alert hook failed: webhook gave up after 2 attempts: "
            r"no answer within 0\.3 s"
        )
        assert status(base)["alerts"]["hook"]["failed"] == 1
    finally:
        silent.close()


def test_a_command_alert_gets_the_event_in_its_environment(
    tmp_path: Path, run_monitor: Any
) -> None:
    out = tmp_path / "env.json"
    monitor, base = run_monitor(
        f"""
        [[service]]
        name = "crasher"
        command = ["{{python}}", "-c", "import time; time.sleep(0.3); exit(3)"]
        restart = "never"
        start_seconds = 0

        [[alert]]
        name = "note"
        events = ["service.exited"]
        command = ["{{python}}", "-c", '''
import json, os
env = {{k: v for k, v in os.environ.items() if k.startswith("PROCWORK_")}}
open({str(out)!r}, "w").write(json.dumps(env))
print("noted", env["PROCWORK_NAME"])
''']
        """,
        "--log-level",
        "debug",  # a delivery's result is logged at debug
    )

    def written() -> str | None:
        return out.read_text() if out.exists() else None

    env = wait_for("the command's file", written)
    got = json.loads(env)
    assert got["PROCWORK_EVENT"] == "service.exited"
    assert got["PROCWORK_KIND"] == "service"
    assert got["PROCWORK_NAME"] == "crasher"
    assert got["PROCWORK_STATE"] == "EXITED"
    assert got["PROCWORK_EXIT_STATUS"] == "3"
    assert "exited 3" in got["PROCWORK_MESSAGE"]
    assert got["PROCWORK_REMINDER"] == "0"
    monitor.expect(r"alert note: command exited 0: noted crasher")
    note = wait_for("the alert's status", lambda: status(base)["alerts"]["note"])
    assert (note["sent"], note["ok"], note["last_event"]) == (1, 1, "service.exited")
    assert note["last_output"] == "noted crasher\n"
    events = [e["event"] for e in status(base)["events"]]
    assert events[:3] == ["monitor.started", "service.started", "service.exited"]


def test_a_mail_alert_of_a_real_monitor_reaches_a_real_smtp_server(
    run_monitor: Any,
) -> None:
    """A service that exits 3: one message, which says so, to aiosmtpd (the
    delivery's outcome logged at debug)."""
    smtp = SmtpServer()
    try:
        monitor, base = run_monitor(
            f"""
            [monitor]
            log_level = "debug"
            smtp = "{smtp.address}"
            smtp_from = "monitor@example.com"

            [[service]]
            name = "crasher"
            command = ["{{python}}", "-c", "import time; time.sleep(0.3); exit(3)"]
            restart = "never"
            start_seconds = 0

            [[alert]]
            name = "ops"
            events = ["service.exited"]
            mail = "ops@example.com"
            """
        )
        [received] = wait_for("the message", smtp.received)
        assert (received.sender, received.recipients) == (
            "monitor@example.com",
            ("ops@example.com",),
        )
        assert received.message["Subject"].endswith(
            "] service 'crasher' exited 3; not restarted"
        )
        monitor.expect(
            rf"alert ops: mail accepted by {smtp.address} for 1 address: 250 "
        )
        ops = status(base)["alerts"]["ops"]
        assert (ops["sent"], ops["ok"], ops["failed"]) == (1, 1, 0)
    finally:
        smtp.close()


def test_a_check_with_start_delay_does_not_run_before_it(run_monitor: Any) -> None:
    _monitor, base = run_monitor(
        """
        [[check]]
        name = "late"
        command = ["true"]
        every = 0.1
        start_delay = 1.5
        """
    )
    assert status(base)["checks"]["late"]["runs"] == 0
    wait_for("a run", lambda: status(base)["checks"]["late"]["runs"] > 0, 15)


# -- logs -------------------------------------------------------------------------


def test_service_output_goes_to_rotated_files_keeping_log_backups(
    tmp_path: Path, run_monitor: Any
) -> None:
    monitor, _base = run_monitor(
        """
        [[service]]
        name = "chatty"
        command = ["{python}", "-u", "-c", '''
import sys, time
for i in range(100):
    print(f"line {i:03d} " + "x" * 90)
    print(f"err {i:03d}", file=sys.stderr)
print("done", flush=True)
time.sleep(60)
''']
        stdout_log = "logs/chatty.out"
        stderr_log = "logs/chatty.err"
        log_max_bytes = 2000
        log_backups = 2
        console_rate = 1000
        """
    )
    monitor.expect(r"\[chatty stdout\] done$")
    logs = tmp_path / "logs"  # relative to the config file's directory
    out = wait_for(
        "the last line in the log",
        lambda: (
            (logs / "chatty.out").exists()
            and "done" in (logs / "chatty.out").read_text()
        ),
    )
    assert out
    names = sorted(p.name for p in logs.iterdir())
    assert names == ["chatty.err", "chatty.out", "chatty.out.1", "chatty.out.2"]
    for name in names:
        assert (logs / name).stat().st_size <= 2000
    printed = [f"line {i:03d} " + "x" * 90 for i in range(100)] + ["done"]
    kept = [
        line
        for name in ("chatty.out.2", "chatty.out.1", "chatty.out")
        for line in (logs / name).read_text().splitlines()
    ]
    # The newest lines, in order, cut at line ends: the oldest were deleted.
    assert 2 * (2000 // 100) < len(kept) < len(printed)  # two full backups
    assert kept == printed[-len(kept) :]
    errors = (logs / "chatty.err").read_text().splitlines()
    assert errors == [f"err {i:03d}" for i in range(100)]


def test_console_lines_carry_date_time_level_and_stream_and_a_failed_check_says_why(
    run_monitor: Any,
) -> None:
    monitor, base = run_monitor(
        """
        [[service]]
        name = "talker"
        command = ["{python}", "-u", "-c", '''
import sys, time
print("to stdout")
print("to stderr", file=sys.stderr, flush=True)
time.sleep(60)
''']

        [[check]]
        name = "disk"
        command = ["{python}", "-c", "print('/ is 97% full'); exit(1)"]
        every = 60
        """
    )
    stamp = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} "
    monitor.expect(stamp + r"INFO  \[talker stdout\] to stdout$")
    monitor.expect(stamp + r"INFO  \[talker stderr\] to stderr$")
    monitor.expect(
        stamp + r"WARN  \[checks\] check disk failed: exited 1: / is 97% full$"
    )
    for _ in range(5):
        get(base + "/metrics")
        get(base + "/")
    monitor.proc.send_signal(signal.SIGTERM)
    assert monitor.proc.wait(timeout=30) == 0
    lines = monitor.drain()
    assert all(re.match(stamp, line) for line in lines), lines
    text = "\n".join(lines)
    # No Twisted chatter, and not one line per request.
    for noise in ("Site starting", "Starting factory", "Port", "GET /", "HTTP/1.1"):
        assert noise not in text


def test_a_service_printing_without_pause_does_not_starve_a_check(
    run_monitor: Any,
) -> None:
    """`yes` as a service: its lines over console_rate are counted, not
    shown, and a 0.25 s check still runs about on time."""
    monitor, base = run_monitor(
        """
        [monitor]
        max_load = false

        [[service]]
        name = "noisy"
        command = ["yes"]
        console_rate = 50

        [[check]]
        name = "tick"
        command = ["true"]
        every = 0.25
        """
    )
    monitor.expect(
        r"service 'noisy': \d+ output lines not shown \(over its "
        r"console_rate of 50 lines/s\)"
    )
    before = status(base)["checks"]["tick"]["runs"]
    time.sleep(4)
    runs = status(base)["checks"]["tick"]["runs"] - before
    # 16 are due; before the rate limit, such a service let ~55% run.
    assert runs >= 12, runs
    shown = [line for line in monitor.lines if "[noisy stdout]" in line]
    # At most the rate's worth a second (plus the first burst).
    assert len(shown) <= 50 * (4 + 2 + 10), len(shown)


# -- the status page and HTTP -------------------------------------------------------


def test_the_status_page_is_html_for_browsers_and_json_for_programs(
    run_monitor: Any,
) -> None:
    import urllib.request

    _monitor, base = run_monitor(
        """
        [[service]]
        name = "web"
        command = ["sleep", "60"]
        """
    )

    def fetch(path: str, accept: str | None) -> tuple[str, bytes]:
        request = urllib.request.Request(base + path)
        if accept is not None:
            request.add_header("Accept", accept)
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.headers["content-type"], response.read()

    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    kind, page = fetch("/", browser)
    assert kind == "text/html; charset=utf-8"
    assert b'<meta http-equiv="refresh"' in page and b"<script" not in page
    assert b"http://" not in page and b"https://" not in page  # no external asset
    for accept in ("application/json", "*/*", None):
        kind, body = fetch("/", accept)
        assert kind == "application/json"
        assert "web" in json.loads(body)["services"]
    kind, body = fetch("/status.json", browser)
    assert kind == "application/json" and json.loads(body)["services"]["web"]


def _chromium() -> str:
    return need_tool("chromium", "chromium-browser", package="chromium")


def _dump_dom(url: str) -> str:
    with tempfile.TemporaryDirectory(prefix="procwork-chromium-") as profile:
        result = subprocess.run(
            [
                _chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _state_in(dom: str, section: str, name: str) -> str | None:
    table = re.search(rf'<table id="{section}">(.*?)</table>', dom, re.S)
    assert table is not None, dom[:2000]
    row = re.search(
        rf'<tr data-name="{re.escape(name)}">.*?class="state \w+">([^<]*)<',
        table.group(1),
        re.S,
    )
    return None if row is None else row.group(1)


def test_a_real_browser_shows_every_service_with_its_state_and_sees_it_change(
    started: list[int], run_monitor: Any, tmp_path: Path
) -> None:
    """Headless chromium loads /: every configured service with its state;
    after one service's process is killed the page shows it EXITED, and after
    ``procwork ctl stop`` stops the other, STOPPED."""
    sock = tmp_path / "ctl.sock"
    monitor, base = run_monitor(
        """
        [monitor]
        max_load = false

        [[service]]
        name = "steady"
        command = ["sleep", "600"]
        start_seconds = 0

        [[service]]
        name = "victim"
        command = ["sleep", "600"]
        start_seconds = 0
        restart = "never"

        [[check]]
        name = "fine"
        command = ["true"]
        every = 1
        """,
        "--socket",
        str(sock),
    )
    pids = {
        name: int(monitor.expect(rf"service '{name}' started: pid (\d+)").group(1))
        for name in ("steady", "victim")
    }
    started.extend(pids.values())
    wait_for(
        "both running",
        lambda: all(s["state"] == "RUNNING" for s in status(base)["services"].values()),
    )
    dom = _dump_dom(base + "/")
    assert "<title>procwork: 2/2 running</title>" in dom
    assert _state_in(dom, "services", "steady") == "RUNNING"
    assert _state_in(dom, "services", "victim") == "RUNNING"
    assert _state_in(dom, "checks", "fine") in ("ok", "-")
    assert 'class="state ok"' in dom
    os.kill(pids["victim"], signal.SIGKILL)
    wait_for(
        "the victim EXITED",
        lambda: status(base)["services"]["victim"]["state"] == "EXITED",
    )
    dom = _dump_dom(base + "/")
    # Killed, not stopped: a failure, which the page says in amber, and why.
    assert _state_in(dom, "services", "victim") == (
        "EXITED (killed by SIGKILL: restart='never')"
    )
    assert 'class="state warn">EXITED' in dom
    assert _state_in(dom, "services", "steady") == "RUNNING"
    assert "<title>procwork: 1/2 running, 1 unhealthy</title>" in dom
    assert "service.exited" in dom  # in the recent events
    ctl = str(Path(sys.executable).with_name("procwork"))
    stopped = subprocess.run(
        [ctl, "ctl", "--socket", str(sock), "stop", "steady"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stopped.returncode == 0, stopped.stderr
    dom = _dump_dom(base + "/")
    assert _state_in(dom, "services", "steady") == "STOPPED"
    assert "<title>procwork: 0/2 running, 1 unhealthy</title>" in dom


def _count_closed(socks: list[socket.socket], *, at_least: int, within: float) -> int:
    """How many of ``socks`` the other end closed (read end of file), waiting
    at most ``within`` seconds, and no longer once ``at_least`` are."""
    closed = 0
    deadline = time.monotonic() + within
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        while closed < at_least and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(timeout=left):
                selector.unregister(key.fileobj)
                if cast(socket.socket, key.fileobj).recv(1) == b"":
                    closed += 1
    return closed


def test_idle_connections_past_the_cap_are_refused_and_checks_keep_working(
    started: list[int], run_monitor: Any
) -> None:
    """With 200 descriptors, 400 idle connections would leave the monitor
    none for its checks; past http_max_connections they are closed at
    once, and checks and services keep working while the rest are held."""
    monitor, base = run_monitor(
        """
        [monitor]
        max_load = false
        http_max_connections = 20

        [[service]]
        name = "svc"
        command = ["sleep", "600"]
        start_seconds = 0
        min_restart_delay = 0.1

        [[check]]
        name = "tick"
        command = ["true"]
        every = 0.2
        """,
        max_files=200,
    )
    port = int(base.rsplit(":", 1)[1])
    pid = int(monitor.expect(r"service 'svc' started: pid (\d+)").group(1))
    started.append(pid)
    before = status(base)["checks"]["tick"]
    held: list[socket.socket] = []
    try:
        for _ in range(400):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            held.append(sock)
        # Refused ones are closed by the monitor: they read end of file.
        closed = _count_closed(held, at_least=400 - 20 - 5, within=10)
        assert closed >= 400 - 20 - 5, closed
        monitor.expect(r"HTTP: 20 connections open, the most served at once")
        # While they are held: a killed service is restarted...
        os.kill(pid, signal.SIGKILL)
        new = int(
            monitor.expect(rf"service 'svc' started: pid (?!{pid}\b)(\d+)").group(1)
        )
        started.append(new)
        time.sleep(1)
    finally:
        for sock in held:
            sock.close()
    # ... and the checks kept running, none failed.
    after = wait_for(
        "the status again", lambda: status(base)["checks"]["tick"], timeout=40
    )
    assert after["runs"] >= before["runs"] + 4
    assert after["failed"] == before["failed"] == 0
    http_status = status(base)["http"]
    assert http_status["max_connections"] == 20
    assert http_status["refused_connections"] >= 400 - 20 - 5
