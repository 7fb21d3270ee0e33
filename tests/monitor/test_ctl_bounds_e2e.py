"""The control socket against clients that misbehave: a real monitor, real clients.

Each test runs ``procwork monitor`` as a process and attacks its control
socket as the issue found it attacked: ``procwork ctl tail -f`` followers
whose output nobody reads (a pager left paused), thousands of connections
held open, requests built to break the parser. The monitor must stay
within its bounds (memory, descriptors), keep its checks and services
going, and answer every request, bad ones with an error on the same
connection. ``ctl reopen`` and a user given as digits are here too, as
they act on real files and processes. Every wait is bounded; every process
started is killed by pid at the end.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import select
import socket
import subprocess
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from procwork.monitor._controlserver import CLOSING_AT_ONCE
from procwork.monitor._protocol import MAX_LINE
from tests.support.monitor import (
    CTL,
    HEADER,
    MonitorProcess,
    ctl,
    python_service,
    start_monitor,
    statuses,
    wait_for,
)

# A real procwork monitor process in every test.
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def rss_mib(pid: int) -> float:
    """The resident memory of process ``pid``, in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def descriptors(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


@pytest.fixture
def followers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """``procwork ctl tail -f`` clients the test starts; killed at the end."""
    made: list[subprocess.Popen[bytes]] = []
    yield made
    for follower in made:
        if follower.poll() is None:
            follower.kill()
        follower.wait(timeout=10)
        if follower.stdout is not None:
            follower.stdout.close()


def follow(
    followers: list[subprocess.Popen[bytes]], sock: Path, name: str
) -> subprocess.Popen[bytes]:
    """A ``tail -f`` client whose output nobody reads until the test does."""
    follower = subprocess.Popen(
        [CTL, "ctl", "--socket", str(sock), "tail", "-f", "-n", "0", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    followers.append(follower)
    return follower


SKIPPED = re.compile(
    rb"\[procwork ctl: (\d+) lines \((\d+) bytes\) skipped: they came faster "
    rb"than they were read\]"
)


def count_lines(
    follower: subprocess.Popen[bytes], total: int, timeout: float = 60
) -> tuple[int, int, int]:
    """Read a follower of :func:`loud` until ``total`` lines are accounted
    for; ``(lines received, lines said skipped, skipped lines)``."""
    assert follower.stdout is not None
    fd = follower.stdout.fileno()
    received = skipped = notices = 0
    rest = b""
    deadline = time.monotonic() + timeout
    while received + skipped < total and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if not ready:
            continue
        data = os.read(fd, 1 << 20)
        if not data:
            break
        *lines, rest = (rest + data).split(b"\n")
        for line in lines:
            match = SKIPPED.fullmatch(line)
            if match:
                notices += 1
                skipped += int(match.group(1))
                assert int(match.group(2)) == 1000 * int(match.group(1))
            else:
                assert line == b"x" * 999, line[:100]
                received += 1
    return received, skipped, notices


LOUD = textwrap.dedent(
    """
    import os, sys, time
    while not os.path.exists({flag!r}):
        time.sleep(0.05)
    chunk = (b"x" * 999 + b"\\n") * 64
    out = sys.stdout.buffer
    for _ in range({chunks}):
        out.write(chunk)
        if {pace}:
            time.sleep(len(chunk) / {pace})
    out.flush()
    print("done", file=sys.stderr, flush=True)
    time.sleep(600)
    """
)


def loud(tmp_path: Path, tag: str, megabytes: int, pace: float = 0) -> str:
    """A service that, once ``tmp_path/go`` exists, prints ``megabytes`` MB
    of 1000-byte lines (at ``pace`` bytes/s; 0: as fast as it can), then
    says ``done`` on stderr."""
    code = LOUD.format(
        flag=str(tmp_path / "go"), chunks=megabytes * 1000 * 1000 // 64000, pace=pace
    )
    return python_service("loud", code, tag, "console_rate = 0\n")


# -- followers that stop reading --------------------------------------------------


def test_followers_that_stop_reading_cost_no_memory_and_are_told_what_they_missed(
    tmp_path: Path,
    monitors: list[MonitorProcess],
    ours: str,
    followers: list[subprocess.Popen[bytes]],
) -> None:
    """Two ``tail -f`` clients nobody reads while the service prints 40 MB:
    the monitor's memory does not grow with what they do not read (before,
    it queued every line for them: about 1 MB of memory per MB printed,
    per follower), and each is told how much it missed once it reads."""
    sock = tmp_path / "ctl.sock"
    config = tmp_path / "monitor.toml"
    config.write_text(HEADER + loud(tmp_path, ours, megabytes=40))
    monitor = start_monitor(monitors, tmp_path, config, "--socket", str(sock))
    wait_for("loud to run", lambda: statuses(sock)["loud"]["state"] == "RUNNING")
    stalled = [follow(followers, sock, "loud") for _ in range(2)]
    for follower in stalled:
        monitor.expect(rf"control: tail loud \(from pid {follower.pid} uid ")
    before = rss_mib(monitor.proc.pid)
    (tmp_path / "go").touch()
    wait_for(
        "loud to print its 40 MB",
        lambda: "done" in ctl(sock, "tail", "--stderr", "loud").stdout,
        timeout=120,
    )
    grown = rss_mib(monitor.proc.pid) - before
    assert grown < 20, f"the monitor grew by {grown:.1f} MiB"
    for follower in stalled:
        # Every line is either received or counted in a skipped line.
        received, skipped, notices = count_lines(follower, 40000)
        assert received + skipped == 40000
        assert skipped > 30000 and notices, "most were skipped, and it was told"
        assert follower.poll() is None, "it follows on"
    monitor.expect(r"control: a follower of 'loud' .* fell behind: \d+ lines")


def test_a_follower_that_reads_nothing_for_the_idle_timeout_is_cut_off(
    tmp_path: Path,
    monitors: list[MonitorProcess],
    ours: str,
    followers: list[subprocess.Popen[bytes]],
) -> None:
    sock = tmp_path / "ctl.sock"
    config = tmp_path / "monitor.toml"
    config.write_text(
        HEADER
        + "control_idle_timeout = 1\n"
        + loud(tmp_path, ours, megabytes=1000, pace=5e6)
    )
    monitor = start_monitor(monitors, tmp_path, config, "--socket", str(sock))
    wait_for("loud to run", lambda: statuses(sock)["loud"]["state"] == "RUNNING")
    stalled = follow(followers, sock, "loud")
    monitor.expect(rf"control: tail loud \(from pid {stalled.pid} uid ")
    (tmp_path / "go").touch()
    monitor.expect(
        r"control: a follower of 'loud' \(pid \d+ uid \d+\) read nothing for 1 s "
        r"\(control_idle_timeout\) and was cut off; \d+ lines were not sent to it",
        timeout=60,
    )
    # Read now, it gets what was sent before, then the reason, and ends.
    assert stalled.stdout is not None and stalled.stderr is not None
    fd = stalled.stdout.fileno()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if ready and not os.read(fd, 1 << 20):
            break
    assert stalled.wait(timeout=30) in (1, 3)
    error = stalled.stderr.read().decode()
    # Its last line, if it read it within the close grace; else the hang-up.
    assert (
        "cut off: this follower read nothing for 1 s (control_idle_timeout)" in error
        or "hung up" in error
    ), error
    assert statuses(sock)["loud"]["state"] == "RUNNING"


# -- thousands of connections -------------------------------------------------------


def test_2000_connections_held_open_leave_checks_starts_and_ctl_working(
    tmp_path: Path,
    monitors: list[MonitorProcess],
    ours: str,
) -> None:
    """With 256 descriptors (before: 2000 connections took them all, every
    check and start failed "out of file descriptors" and ctl status could
    not connect), the monitor holds at most its cap of connections and a
    few closing ones, its checks and restarts go on, and ctl answers."""
    sock = tmp_path / "ctl.sock"
    config = tmp_path / "monitor.toml"
    config.write_text(
        HEADER.replace("http = false", 'http = "127.0.0.1:0"')
        + '[[check]]\nname = "tick"\ncommand = ["true"]\nevery = 0.5\n'
        + python_service(
            "blink", "import time; time.sleep(0.3)", ours, "max_restart_delay = 0.1\n"
        )
    )
    monitor = MonitorProcess(
        str(config), "--socket", str(sock), stderr=tmp_path / "stderr", max_files=256
    )
    monitors.append(monitor)
    port = int(monitor.expect(r"status on http://127\.0\.0\.1:(\d+)/").group(1))

    def status() -> dict[str, Any]:
        url = f"http://127.0.0.1:{port}/status.json"
        with urllib.request.urlopen(url, timeout=30) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result

    wait_for(
        "a check run and a restart", lambda: status()["services"]["blink"]["restarts"]
    )
    baseline = descriptors(monitor.proc.pid)
    before = status()
    most = [baseline]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            most[0] = max(most[0], descriptors(monitor.proc.pid))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    held: list[socket.socket] = []
    try:
        for _ in range(2000):
            deadline = time.monotonic() + 30
            while True:
                client = socket.socket(socket.AF_UNIX)
                client.settimeout(30)
                try:
                    client.connect(str(sock))
                    held.append(client)
                    break
                except BlockingIOError:  # the listen backlog is full: again
                    client.close()
                    assert time.monotonic() < deadline, "the monitor stopped accepting"
                    time.sleep(0.001)
        done = ctl(sock, "status")  # while they are all held open
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[1].split()[0] == "blink"
        # A few of the schedule's check runs and restarts, with all held.
        runs = before["checks"]["tick"]["runs"]
        wait_for(
            "checks to run on", lambda: status()["checks"]["tick"]["runs"] > runs + 4
        )
        after = status()
    finally:
        sampling.set()
        sampler.join(timeout=10)
        told: dict[str, int] = {}
        for client in held:
            client.setblocking(False)
            try:
                said = client.recv(4096).decode()
            except BlockingIOError:
                said = "(nothing yet)"
            key = json.loads(said)["error"][:40] if said.startswith("{") else said
            told[key] = told.get(key, 0) + 1
            client.close()
    assert after["checks"]["tick"]["failed"] == before["checks"]["tick"]["failed"]
    assert (
        after["services"]["blink"]["restarts"] > before["services"]["blink"]["restarts"]
    )
    assert most[0] <= baseline + 64 + CLOSING_AT_ONCE + 8, (most[0], baseline)
    assert after["control"]["open"] <= 64
    assert after["control"]["refused"] + after["control"]["evicted"] >= 2000 - 64
    # Those refused with a word were told why.
    assert told.get("the control socket has 64 connections op", 0) > 0, told
    monitor.proc.terminate()
    assert monitor.proc.wait(timeout=30) == 0
    log = "\n".join(monitor.drain())
    assert "out of file descriptors" not in log
    assert "control: 64 connections open, the most allowed" in log


# -- hostile requests ----------------------------------------------------------------


def test_hostile_requests_get_an_error_answer_on_the_same_connection(
    tmp_path: Path,
    monitors: list[MonitorProcess],
    ours: str,
) -> None:
    sock = tmp_path / "ctl.sock"
    config = tmp_path / "monitor.toml"
    config.write_text(
        HEADER + python_service("web", "import time; time.sleep(600)", ours)
    )
    monitor = start_monitor(monitors, tmp_path, config, "--socket", str(sock))
    hostile = [
        (b"[" * 60000, "not a line of JSON: nested more than 8 levels deep"),
        (b'{"command": "status", "names": ' + b"{" * 30000, "not a line of JSON: "),
        (b"\xc3\x28 not utf-8", "not a line of JSON: not UTF-8 (byte 0xc3 at 0)"),
        (b"x" * (3 * MAX_LINE), f"request longer than {MAX_LINE} bytes; skipped"),
        (b'["status"]', "expected a JSON object, not list"),
        (b'{"command": "stop", "names": "web"}', "stop: names must be a list of "),
        (b'{"command": "tail", "name": "web", "lines": 1e999}', "tail: lines must "),
        (b'{"command": "tail", "lines": 1' + b"0" * 9000 + b"}", "not a line of "),
    ]
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(30)
        client.connect(str(sock))
        replies = client.makefile("rb")
        for line, error in hostile:
            client.sendall(line + b"\n")
            answer = json.loads(replies.readline())
            assert answer["ok"] is False and answer["error"].startswith(error), answer
        client.sendall(b'{"command": "status"}\n')
        answer = json.loads(replies.readline())
        assert answer["ok"] is True
        assert answer["result"]["services"]["web"]["state"] in ("STARTING", "RUNNING")
    monitor.proc.terminate()
    assert monitor.proc.wait(timeout=30) == 0
    log = "\n".join(monitor.drain())
    assert "Traceback" not in log and "Unhandled" not in log


# -- reopen, and a user given as digits ---------------------------------------------


def test_ctl_reopen_sends_output_to_new_files_after_an_external_rotation(
    tmp_path: Path,
    monitors: list[MonitorProcess],
    ours: str,
) -> None:
    sock = tmp_path / "ctl.sock"
    config = tmp_path / "monitor.toml"
    log = tmp_path / "logs" / "talker.log"
    talker = "import time\nn = 0\nwhile True:\n    n += 1\n    print(n, flush=True)\n"
    talker += "    time.sleep(0.05)\n"
    config.write_text(
        HEADER
        + python_service("talker", talker, ours, f"stdout_log = '{log}'\n")
        + python_service("quiet", "import time; time.sleep(600)", ours)
    )
    start_monitor(monitors, tmp_path, config, "--socket", str(sock))
    wait_for("the log to fill", lambda: log.exists() and log.stat().st_size > 20)
    rotated = log.with_name("talker.log.1")
    log.rename(rotated)  # as logrotate does; then its postrotate:
    done = ctl(sock, "reopen")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"talker: reopened {log}\nquiet: no log files\n"
    wait_for("the new log to fill", lambda: log.exists() and log.stat().st_size > 20)
    old = rotated.read_text().split()
    new = log.read_text().split()
    assert int(new[0]) == int(old[-1]) + 1, "no line lost or doubled across them"
    done = ctl(sock, "reopen", "talker", "nope")
    assert done.returncode == 1
    assert done.stderr == (
        "procwork ctl: no service named 'nope' (services: talker, quiet)\n"
    )


@pytest.mark.skipif(
    os.getuid() != 0, reason="running a service as another user needs root"
)
def test_a_service_with_user_65534_in_quotes_runs_as_uid_65534(
    tmp_path: Path,
    monitors: list[MonitorProcess],
    ours: str,
) -> None:
    sock = tmp_path / "ctl.sock"
    config = tmp_path / "monitor.toml"
    # sh, not the tests' Python: uid 65534 may not be allowed into its venv.
    config.write_text(
        HEADER
        + '[[service]]\nname = "nobody"\nuser = "65534"\n'
        + 'command = ["sh", "-c", "echo $(id -u) $(id -g); sleep 600", '
        + f'"{ours}"]\n'
    )
    start_monitor(monitors, tmp_path, config, "--socket", str(sock))
    gid = pwd.getpwuid(65534).pw_gid
    wait_for(
        "it to say who it is",
        lambda: ctl(sock, "tail", "nobody").stdout == f"65534 {gid}\n",
    )
