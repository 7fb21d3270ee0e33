"""The watchdog is itself watched (issue 15, item 12): systemd's notify
protocol, and the reactor's lag.

Unit tests run a :class:`SystemdNotifier` and a :class:`LoopLag` on a
``Clock`` against real datagram sockets the test binds. The end-to-end
tests run a real ``procwork monitor`` with ``NOTIFY_SOCKET`` set to such a
socket: READY, STATUS, the watchdog pings, none while the monitor is
SIGSTOPped, and STOPPING at SIGTERM. Pings are counted, never timed.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import formatEvent

from procwork.monitor._looplag import LoopLag
from procwork.monitor._sdnotify import SystemdNotifier
from tests.support import observing, raised_in_thread
from tests.support.monitor import MonitorProcess, wait_for


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound at a path, as systemd's: (socket, path)."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        yield sock, str(path)
    finally:
        sock.close()


def received(sock: socket.socket, timeout: float = 0.0) -> list[str]:
    """The datagrams waiting on ``sock`` (waiting ``timeout`` s for a first)."""
    messages = []
    wait = timeout
    while select.select([sock], [], [], wait)[0]:
        messages.append(sock.recv(4096).decode())
        wait = 0.0
    return messages


def logged() -> tuple[list[str], Any]:
    lines: list[str] = []
    return lines, observing(lambda event: lines.append(formatEvent(event)))


# -- the protocol, on a clock ----------------------------------------------------


def test_from_the_environment_it_takes_the_socket_half_the_watchdog_and_removes_them(
    notify_socket: tuple[socket.socket, str],
) -> None:
    _, path = notify_socket
    environ = {
        "NOTIFY_SOCKET": path,
        "WATCHDOG_USEC": "30000000",
        "WATCHDOG_PID": str(os.getpid()),
        "HOME": "/root",
    }
    notifier = SystemdNotifier.from_environment(Clock(), environ)
    assert notifier is not None
    assert (notifier.address, notifier.watchdog, notifier.interval) == (
        path,
        30.0,
        15.0,
    )
    assert environ == {"HOME": "/root"}  # services do not inherit them
    notifier.close()


def test_without_notify_socket_there_is_no_notifier_and_a_bad_one_is_refused() -> None:
    assert SystemdNotifier.from_environment(Clock(), {}) is None
    with pytest.raises(ValueError, match="NOTIFY_SOCKET must be a socket path"):
        SystemdNotifier.from_environment(Clock(), {"NOTIFY_SOCKET": "relative"})


def test_a_watchdog_meant_for_another_pid_is_not_pinged(
    notify_socket: tuple[socket.socket, str],
) -> None:
    _, path = notify_socket
    environ = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    notifier = SystemdNotifier.from_environment(Clock(), environ)
    assert notifier is not None and notifier.watchdog is None
    notifier.close()


def test_ready_then_a_ping_every_half_watchdog_and_status_only_when_it_changes(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    clock = Clock()
    notifier = SystemdNotifier(path, clock, watchdog=2.0)
    status = {"line": "1/1 services running; 0/1 checks failing"}
    notifier.ready(lambda: status["line"])
    assert received(sock) == [
        "READY=1\nSTATUS=1/1 services running; 0/1 checks failing"
    ]
    clock.pump([1.0] * 4)
    assert received(sock) == ["WATCHDOG=1"] * 4
    status["line"] = "0/1 services running; 0/1 checks failing"
    clock.advance(1.0)
    assert received(sock) == [
        "WATCHDOG=1\nSTATUS=0/1 services running; 0/1 checks failing"
    ]
    notifier.stopping()
    assert received(sock) == ["STOPPING=1\nSTATUS=stopping"]
    clock.advance(1.0)  # a long stop must not look like a hang
    assert received(sock) == ["WATCHDOG=1"]
    notifier.close()
    clock.advance(10)
    assert received(sock) == [] and clock.getDelayedCalls() == []


def test_a_stop_before_the_first_turn_says_stopping_and_never_ready_after_it(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    clock = Clock()
    notifier = SystemdNotifier(path, clock, watchdog=2.0)
    clock.callLater(0, notifier.ready, lambda: "ok")  # as main() arms it
    notifier.stopping()  # SIGTERM before the reactor turned
    clock.pump([1.0] * 3)
    assert received(sock) == ["STOPPING=1\nSTATUS=stopping"]
    notifier.close()


def test_without_a_watchdog_status_changes_are_sent_every_5_s_and_nothing_else(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    clock = Clock()
    notifier = SystemdNotifier(path, clock)
    status = {"line": "starting"}
    notifier.ready(lambda: status["line"])
    received(sock)
    clock.pump([5.0] * 3)
    assert received(sock) == []
    status["line"] = "changed"
    clock.advance(5.0)
    assert received(sock) == ["STATUS=changed"]
    notifier.close()


def test_an_abstract_socket_name_is_spoken_to_as_such() -> None:
    name = f"procwork-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    try:
        notifier = SystemdNotifier(f"@{name}", Clock())
        notifier.ready(lambda: "ok")
        assert received(sock) == ["READY=1\nSTATUS=ok"]
        notifier.close()
    finally:
        sock.close()


def test_a_full_socket_buffer_drops_a_message_without_waiting_and_says_so_once(
    notify_socket: tuple[socket.socket, str],
) -> None:
    """systemd not reading: each send that finds no room is dropped and
    counted; the sends never wait (a thread would hang, joined with a bound)."""
    sock, path = notify_socket
    notifier = SystemdNotifier(path, Clock(), watchdog=1.0)
    lines, watching = logged()
    with watching:
        error = raised_in_thread(
            lambda: [notifier.send("WATCHDOG=1") for _ in range(5000)], 30
        )
        assert error is None
        assert notifier.dropped > 0
        assert notifier.sent + notifier.dropped == 5000
        received(sock)  # systemd reads again
        assert notifier.send("WATCHDOG=1")
    warnings = [line for line in lines if line.startswith("cannot notify systemd")]
    assert warnings == [
        f"cannot notify systemd on {path}: Resource temporarily unavailable; "
        "dropped, and tried again at the next message"
    ]
    assert (
        f"systemd notified again on {path}; {notifier.dropped} messages were dropped"
        in lines
    )
    notifier.close()


# -- the reactor's lag, on a clock --------------------------------------------------


def test_the_lag_is_how_late_a_timer_ran_and_the_gauge_keeps_the_minutes_largest() -> (
    None
):
    clock = Clock()
    lag = LoopLag(clock)
    lag.start()
    clock.pump([0.25] * 4)
    assert (lag.last, lag.recent_max) == (0.0, 0.0)
    clock.advance(0.75)  # due at 1.25, ran at 1.75
    assert (lag.last, lag.recent_max, lag.stalls) == (0.5, 0.5, 0)
    clock.pump([0.25] * 100)
    assert (lag.last, lag.recent_max) == (0.0, 0.5)  # within the minute
    clock.pump([0.25] * 200)
    assert lag.recent_max == 0.0  # a minute later
    lag.stop()
    assert not lag.running and clock.getDelayedCalls() == []


def test_stalls_over_1_s_are_counted_and_warned_of_once_a_minute_the_rest_counted() -> (
    None
):
    clock = Clock()
    lag = LoopLag(clock)
    lines, watching = logged()
    with watching:
        lag.start()
        for _ in range(3):  # three stalls within a minute
            clock.advance(2.25)
            clock.advance(0.25)
        clock.pump([0.25] * 240)
        clock.advance(3.25)  # a fourth, over a minute after the first warning
    stalls = [line for line in lines if "reactor was blocked" in line]
    assert lag.stalls == 4
    assert stalls == [
        "the monitor's reactor was blocked for at least 2.0 s (a timer ran that "
        "late): checks, restarts and control requests waited",
        "the monitor's reactor was blocked for at least 3.0 s (a timer ran that "
        "late): checks, restarts and control requests waited; 2 more such stalls "
        "since the last warning",
    ]
    lag.stop()


def test_a_wall_clock_set_back_is_no_negative_lag() -> None:
    clock = Clock()
    lag = LoopLag(clock)
    lag.start()
    clock.rightNow -= 100
    clock.advance(100.25)
    assert lag.last >= 0 and lag.recent_max >= 0
    lag.stop()


# -- a real monitor under a notify socket ----------------------------------------


def monitor_config(tmp_path: Path) -> Path:
    config = tmp_path / "monitor.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [monitor]
            max_load = false
            socket = "{tmp_path / "monitor.sock"}"

            [[service]]
            name = "env"
            command = ["{{python}}", "-u", "-c", '''
import os, time
print("NOTIFY_SOCKET=" + str(os.environ.get("NOTIFY_SOCKET")))
print("WATCHDOG_USEC=" + str(os.environ.get("WATCHDOG_USEC")))
time.sleep(600)
''']

            [[check]]
            name = "tick"
            command = ["true"]
            every = 1
            """
        )
    )
    return config


def stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0] in ("T", "t")


@pytest.mark.e2e
@pytest.mark.slow
def test_a_real_monitor_says_ready_pings_sends_none_while_stopped_and_says_stopping(
    tmp_path: Path,
    notify_socket: tuple[socket.socket, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sock, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # a ping every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monitor = MonitorProcess(
        str(monitor_config(tmp_path)),
        "--http",
        "127.0.0.1:0",
        "--lock-file",
        str(tmp_path / "lock"),
        stderr=tmp_path / "stderr",
    )
    try:
        [first] = received(sock, 60)[:1] or [""]
        assert first.startswith("READY=1\nSTATUS=")
        assert "services running;" in first and "checks failing" in first
        # Its services are launched by then, and inherit none of it.
        monitor.expect(r"\[env stdout\] NOTIFY_SOCKET=None$")
        monitor.expect(r"\[env stdout\] WATCHDOG_USEC=None$")
        pings: list[str] = []

        def five_pings() -> bool:
            pings.extend(received(sock, 1))
            return pings.count("WATCHDOG=1") >= 5

        wait_for("5 watchdog pings", five_pings)
        assert all(m.startswith(("WATCHDOG=1", "STATUS=")) for m in pings)
        # A stopped monitor (its reactor cannot run) sends nothing: systemd
        # would kill it after WatchdogSec.
        monitor.proc.send_signal(signal.SIGSTOP)
        wait_for("the monitor stopped", lambda: stopped(monitor.proc.pid), 10)
        received(sock)  # sent before it stopped
        assert received(sock, 1.5) == []  # 15 pings due meanwhile
        monitor.proc.send_signal(signal.SIGCONT)
        again: list[str] = []

        def pinged_again() -> bool:
            again.extend(received(sock, 1))
            return "WATCHDOG=1" in again

        wait_for("pings again", pinged_again)
        # The stop was a blocked turn as the reactor sees it: said once.
        monitor.expect(
            r"WARN  \[monitor\] the monitor's reactor was blocked for at least"
        )
        monitor.proc.send_signal(signal.SIGTERM)
        status = monitor.proc.wait(timeout=60)
        assert status == 0, (tmp_path / "stderr").read_text()[-2000:]
        last = received(sock, 1)
        stopping = [m for m in last if m.startswith("STOPPING=1")]
        assert stopping == ["STOPPING=1\nSTATUS=stopping"]
    finally:
        monitor.close()


@pytest.mark.e2e
@pytest.mark.slow
def test_a_real_monitor_speaks_to_an_abstract_notify_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"procwork-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    monkeypatch.setenv("NOTIFY_SOCKET", f"@{name}")
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monitor = MonitorProcess(
        str(monitor_config(tmp_path)),
        "--http",
        "127.0.0.1:0",
        "--lock-file",
        str(tmp_path / "lock"),
        stderr=tmp_path / "stderr",
    )
    try:
        assert received(sock, 60)[0].startswith("READY=1\n")
        monitor.proc.send_signal(signal.SIGTERM)
        status = monitor.proc.wait(timeout=60)
        assert status == 0, (tmp_path / "stderr").read_text()[-2000:]
        assert any(m.startswith("STOPPING=1") for m in received(sock, 1))
    finally:
        monitor.close()
        sock.close()
