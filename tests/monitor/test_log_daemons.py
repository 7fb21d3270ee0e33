"""The monitor's log sent to syslog or journald, never blocking it.

Each test binds a real datagram socket where ``/dev/log`` or journald's
socket would be (:class:`~tests.support.logs.LogDaemon`) and reads what
the monitor's :class:`DatagramWriter` sends: RFC 3164 and RFC 5424 framing,
journald's native fields with the binary form of a multi-line value and a
sealed memfd for a message too big for a datagram; a daemon that does not
read costs the monitor nothing but counted lines; a daemon restarted is
found again. The level filter is here too (the alerts' chatter at debug
is ``tests/monitor/test_alerts.py``'s). A real ``procwork monitor`` logging to both is
``tests/monitor/test_log_daemons_e2e.py``.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import LogLevel, PredicateResult

from procwork.monitor._logs import LevelFilter, daemon_text, dropped_notice
from procwork.monitor._logsocket import (
    FACILITIES,
    DatagramWriter,
    journal_message,
    syslog_message,
)
from tests.support import raised_in_thread
from tests.support.fake_monitor import HEADER, Operated, services
from tests.support.logs import (
    RFC3164,
    RFC5424,
    LogDaemon,
    WriterReactor,
    journal_fields,
)

NOW = 1_780_000_000.25  # a time of day with a fraction


def event(
    message: str = "hello", level: Any = LogLevel.info, **fields: Any
) -> dict[str, Any]:
    return {
        "log_namespace": "procwork.monitor",
        "log_level": level,
        "log_time": NOW,
        "log_format": message,
        **fields,
    }


def output_line(line: str) -> dict[str, Any]:
    """A service's output line, as the supervisor logs it."""
    return event(
        "[{service}] {line}",
        log_namespace="procwork.supervisor",
        service="web",
        stream="stdout",
        line=line,
        pid=42,
    )


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[LogDaemon]:
    made = LogDaemon(tmp_path / "log.sock")
    yield made
    made.close()


# -- the messages -----------------------------------------------------------------


def test_a_syslog_line_is_framed_as_syslog3_sends_it_to_dev_log() -> None:
    sent = syslog_message(event(level=LogLevel.warn), "[monitor] hello")
    match = RFC3164.fullmatch(sent)
    assert match is not None, sent
    assert int(match["pri"]) == FACILITIES["daemon"] * 8 + 4  # daemon.warning
    local = time.localtime(NOW)
    assert match["when"].decode() == time.strftime("%b %e %H:%M:%S", local)
    assert (match["ident"], int(match["pid"])) == (b"procwork", os.getpid())
    assert match["msg"] == b"[monitor] hello"


def test_rfc5424_has_the_utc_time_the_host_and_the_event_as_msgid() -> None:
    sent = syslog_message(
        event(level=LogLevel.error, event="check.failed"),
        "[checks] check disk failed",
        facility="local3",
        syslog_format="rfc5424",
        hostname="db1",
    )
    match = RFC5424.fullmatch(sent)
    assert match is not None, sent
    assert int(match["pri"]) == 19 * 8 + 3  # local3.err
    assert (
        match["when"]
        == time.strftime("%Y-%m-%dT%H:%M:%S.250000Z", time.gmtime(NOW)).encode()
    )
    assert (match["host"], match["app"], match["msgid"]) == (
        b"db1",
        b"procwork",
        b"check.failed",
    )
    assert match["msg"] == b"[checks] check disk failed"


def test_a_journal_message_carries_priority_identifier_and_the_service() -> None:
    line = output_line("listening on :8080")
    fields = journal_fields(journal_message(line, daemon_text(line)))
    assert fields == {
        "MESSAGE": [b"[web stdout] listening on :8080"],
        "PRIORITY": [b"6"],
        "SYSLOG_IDENTIFIER": [b"procwork"],
        "SYSLOG_FACILITY": [b"3"],
        "SERVICE": [b"web"],
        "STREAM": [b"stdout"],
    }
    failed = event(
        "check disk failed", LogLevel.error, check="disk", event="check.failed"
    )
    fields = journal_fields(journal_message(failed, daemon_text(failed)))
    assert (fields["PRIORITY"], fields["CHECK"], fields["PROCWORK_EVENT"]) == (
        [b"3"],
        [b"disk"],
        [b"check.failed"],
    )


def test_a_multi_line_value_takes_the_binary_length_prefixed_form() -> None:
    traceback = event("Traceback (most recent call last):\n  File ...\nValueError: x")
    sent = journal_message(traceback, daemon_text(traceback))
    assert sent.startswith(b"MESSAGE\n")  # not MESSAGE=...
    assert journal_fields(sent)["MESSAGE"] == [
        b"[monitor] Traceback (most recent call last):\n  File ...\nValueError: x"
    ]


# -- the writer ---------------------------------------------------------------------


def writer(daemon: LogDaemon, reactor: WriterReactor, **kwargs: Any) -> DatagramWriter:
    kwargs.setdefault("notice", dropped_notice(False))
    kwargs.setdefault("name", "syslog")
    return DatagramWriter(daemon.path, reactor, **kwargs)


def test_each_line_is_one_datagram_sent_at_once(daemon: LogDaemon) -> None:
    sending = writer(daemon, WriterReactor())
    for i in range(3):
        sending.write_line(f"<30>line {i}".encode())
    assert daemon.drain() == [b"<30>line 0", b"<30>line 1", b"<30>line 2"]
    assert (sending.dropped, sending.buffered) == (0, 0)
    sending.close()


def test_a_daemon_that_does_not_read_never_blocks_and_costs_counted_lines(
    daemon: LogDaemon,
) -> None:
    """Its queue fills (a few hundred datagrams), then the writer's own (at
    most max_buffered bytes); past that lines are dropped, counted, and said
    once the daemon has read: every line is received or counted."""
    reactor = WriterReactor()
    sending = writer(daemon, reactor, max_buffered=64 * 1024)
    lines = [f"<30>line {i:06d} {'x' * 80}".encode() for i in range(20_000)]

    def write() -> None:
        for line in lines:
            sending.write_line(line)

    assert raised_in_thread(write, 30) is None  # a blocking send would hang here
    reactor.advance(0)
    assert sending.dropped > 10_000
    assert sending.buffered <= 64 * 1024
    assert reactor.writers == {sending}  # waiting for the socket to be writable
    received: list[bytes] = []
    for _ in range(1000):  # the daemon reads; the reactor says writable
        received += daemon.drain()
        reactor.writable()
        if not sending.buffered and not reactor.writers:
            break
    received += daemon.drain()
    notices = [m for m in received if b"log lines dropped" in m]
    assert len(notices) == 1
    assert f"{sending.dropped} log lines dropped: syslog".encode() in notices[0]
    assert len(received) - 1 + sending.dropped == len(lines)
    assert [m for m in received if m not in notices] == [
        line for line in lines if line in set(received)
    ]  # in order, whole
    sending.close()


def test_a_restarted_daemon_is_found_again_and_what_waited_is_sent(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log.sock"
    first = LogDaemon(path)
    reactor = WriterReactor()
    sending = DatagramWriter(
        str(path), reactor, name="syslog", notice=dropped_notice(False)
    )
    sending.write_line(b"<30>before")
    assert first.drain() == [b"<30>before"]
    first.close()  # rsyslog restarts: its socket is gone...
    sending.write_line(b"<30>while gone")  # refused: waits, connects again later
    assert sending.buffered == len(b"<30>while gone")
    second = LogDaemon(path)  # ...and is made again
    try:
        reactor.advance(0.5)
        sending.write_line(b"<30>after")
        assert second.drain() == [b"<30>while gone", b"<30>after"]
        assert sending.dropped == 0
    finally:
        sending.close()
        second.close()


def test_a_daemon_absent_at_start_is_waited_for_lines_past_the_cap_counted(
    tmp_path: Path,
) -> None:
    """Nothing bound yet: the writer says why, queues at most max_buffered
    bytes, drops and counts the rest, tries again every half second, and
    once the daemon listens sends what waited and the notice of the rest."""
    path = tmp_path / "late.sock"
    reactor = WriterReactor()
    sending = DatagramWriter(
        str(path),
        reactor,
        name="syslog",
        notice=dropped_notice(False),
        max_buffered=100,
    )
    assert sending.absent is not None
    assert re.fullmatch(r"nothing listens on .*late\.sock \(.+\)", sending.absent)
    assert sending.fileno() == -1  # nothing for the reactor to watch
    for i in range(30):
        sending.write_line(f"<30>{i:02d}".encode())  # 6 bytes each
    assert (sending.buffered, sending.dropped) == (16 * 6, 14)
    reactor.advance(0.5)  # a try: still nobody
    assert sending.buffered == 16 * 6
    daemon = LogDaemon(path)
    try:
        reactor.advance(0.5)
        received: list[bytes] = []
        for _ in range(100):  # the daemon reads; the reactor says writable
            received += daemon.drain()
            reactor.writable()
            if not sending.buffered and not reactor.writers:
                break
        received += daemon.drain()
        [notice] = [m for m in received if b"dropped" in m]
        assert b"14 log lines dropped: syslog" in notice
        lines = [m for m in received if m is not notice]
        assert lines == [f"<30>{i:02d}".encode() for i in range(16)]
        sending.write_line(b"<30>now")
        assert daemon.drain() == [b"<30>now"]
        assert (sending.buffered, sending.dropped) == (0, 14)
    finally:
        sending.close()
        daemon.close()


def test_a_message_too_big_for_a_datagram_goes_to_journald_as_a_sealed_memfd(
    daemon: LogDaemon,
) -> None:
    sending = writer(
        daemon, WriterReactor(), name="journald", memfd=True, max_buffered=8 << 20
    )
    big = event("x" * (4 << 20))  # 4 MiB: past any datagram's size
    message = journal_message(big, daemon_text(big))
    sending.write_line(message)
    sending.write_line(b"MESSAGE=small\n")
    got = [daemon.receive(), daemon.receive()]
    assert got == [message, b"MESSAGE=small\n"]
    assert (daemon.fds_received, sending.sent_as_memfd) == (1, 1)
    assert journal_fields(message)["MESSAGE"] == [b"[monitor] " + b"x" * (4 << 20)]
    sending.close()


def test_for_syslog_a_message_too_big_for_a_datagram_is_dropped_and_counted(
    daemon: LogDaemon,
) -> None:
    sending = writer(daemon, WriterReactor(), max_buffered=8 << 20)
    sending.write_line(b"<30>" + b"x" * (4 << 20))
    sending.write_line(b"<30>next")
    assert daemon.drain() == [b"<30>next"]
    assert sending.dropped == 1
    sending.close()


def test_close_sends_what_waits_and_the_notice_within_its_timeout(
    daemon: LogDaemon,
) -> None:
    reactor = WriterReactor()
    sending = writer(daemon, reactor, max_buffered=1000)
    for i in range(5000):
        sending.write_line(f"<30>{i}".encode())
    assert sending.dropped > 0
    started = time.monotonic()
    sending.close(timeout=0.2)  # nobody reads: gives up after its timeout
    assert time.monotonic() - started < 5
    assert sending.buffered == 0
    received = daemon.drain()
    # What the daemon took, plus what was dropped (counted), is all.
    assert len([m for m in received if b"dropped" not in m]) + sending.dropped == 5000


def test_the_writer_uses_a_connected_socket_that_never_blocks(
    daemon: LogDaemon,
) -> None:
    sending = writer(daemon, WriterReactor())
    assert fcntl.fcntl(sending.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK
    sock = socket.socket(fileno=os.dup(sending.fileno()))
    try:
        assert sock.getpeername() == daemon.path
    finally:
        sock.close()
        sending.close()


# -- the level -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "passed"),
    [
        ("debug", ["debug", "info", "warn", "error", "critical"]),
        ("info", ["info", "warn", "error", "critical"]),
        ("warn", ["warn", "error", "critical"]),
        ("error", ["error", "critical"]),
    ],
)
def test_the_level_filter_lets_through_its_level_and_above(
    level: str, passed: list[str]
) -> None:
    levels = LevelFilter(level)
    let = [
        name
        for name in ("debug", "info", "warn", "error", "critical")
        if levels(event(level=LogLevel.levelWithName(name))) is PredicateResult.maybe
    ]
    assert let == passed


def test_a_reload_applies_a_changed_log_level_unless_the_command_line_chose_it(
    tmp_path: Path,
) -> None:
    operated = Operated(tmp_path, HEADER + services("web"))
    for pinned, after in ((False, "debug"), (True, "warn")):
        operated.path.write_text(HEADER + 'log_level = "warn"\n' + services("web"))
        operated.ask(command="reload")
        operated.monitor.log_levels = LevelFilter("warn", pinned=pinned)
        operated.path.write_text(HEADER + 'log_level = "debug"\n' + services("web"))
        answer = operated.ask(command="reload")
        assert answer["ok"] and answer["result"]["not_applied"] == []
        assert operated.monitor.log_levels.level == after
        operated.monitor.log_levels = None
