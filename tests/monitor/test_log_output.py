"""The monitor's own log output never blocks it (issue 15, item 1).

Unit tests drive a :class:`LogWriter` over real pipes, terminals and
sockets nobody reads, with a fake reactor that says when the descriptor is
writable (the test calls ``doWrite``); a write that blocked would hang the
test, so every batch of writes runs in a thread joined within a bound. The
end-to-end test runs a real ``procwork monitor`` whose stdout is a pipe
nobody reads.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import select
import signal
import socket
import subprocess
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from procwork._reactor import default_reactor
from procwork.monitor._logs import dropped_notice
from procwork.monitor._logwriter import LogWriter
from tests.support import (
    PY,
    ROOT,
    cpu_load,
    drive_until,
    raised_in_thread,
    sigkill_leftovers,
)
from tests.support.logs import WriterReactor

LINE = b"x" * 99 + b"\n"  # 100 bytes


@contextlib.contextmanager
def unread_pipe() -> Iterator[tuple[int, int]]:
    """(read end, write end) of a pipe the test reads only when it says."""
    r, w = os.pipe()
    try:
        yield r, w
    finally:
        os.close(r)
        os.close(w)


def read_all(fd: int) -> bytes:
    """What ``fd`` holds now, read without waiting."""
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 1 << 20)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def write_lines(writer: LogWriter, lines: list[bytes]) -> None:
    """Hand ``lines`` to ``writer`` in a thread that must finish within 30 s
    (a write that blocked would not); then run what the thread handed to
    the reactor (``callFromThread``)."""

    def write() -> None:
        for line in lines:
            writer.write_line(line)

    error = raised_in_thread(write, 30)
    assert error is None
    writer._reactor.advance(0)  # type: ignore[attr-defined]


def numbered(count: int, start: int = 0) -> list[bytes]:
    return [
        f"line {i:06d} ".encode() + b"x" * 87 + b"\n"
        for i in range(start, start + count)
    ]


def blocking(fd: int) -> bool:
    return not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK


# -- a stalled reader -------------------------------------------------------------


def test_a_line_is_written_at_once_while_the_reader_keeps_up() -> None:
    with unread_pipe() as (r, w):
        writer = LogWriter(w, WriterReactor())
        writer.write_line(b"hello\n")
        assert read_all(r) == b"hello\n"
        assert (writer.buffered, writer.dropped) == (0, 0)
        writer.close()


def test_an_unread_pipe_never_blocks_and_lines_past_the_cap_are_dropped_counted() -> (
    None
):
    reactor = WriterReactor()
    with unread_pipe() as (r, w):
        writer = LogWriter(w, reactor, max_buffered=16 * 1024)
        write_lines(writer, numbered(5000))  # 500 kB into a 64 KiB pipe
        assert writer.buffered <= 16 * 1024  # the cap holds
        assert reactor.writers == {writer}  # told when the reader is back
        assert writer.dropped > 0
        # Nothing is lost without being counted: what the pipe took, what
        # waits, and what was dropped make every line.
        in_pipe = read_all(r)
        reactor.writable()
        rest = read_all(r)
        lines = (in_pipe + rest).splitlines()
        got = [line for line in lines if line.startswith(b"line ")]
        [notice] = [line for line in lines if b"dropped" in line]
        assert len(got) + writer.dropped == 5000
        assert (
            notice
            == f"{writer.dropped} log lines dropped: stdout was not read".encode()
        )
        writer.close()


def test_a_reader_back_gets_the_waiting_lines_then_one_saying_how_many_dropped() -> (
    None
):
    reactor = WriterReactor()
    with unread_pipe() as (r, w):
        writer = LogWriter(w, reactor, max_buffered=8 * 1024)
        write_lines(writer, numbered(2000))
        dropped = writer.dropped
        assert dropped > 0
        # The reader catches up; the next lines follow the notice.
        text = read_all(r)
        reactor.writable()
        text += read_all(r)
        write_lines(writer, numbered(3, start=2000))
        text += read_all(r)
        lines = text.decode().splitlines()
        at = lines.index(f"{dropped} log lines dropped: stdout was not read")
        # The lines before it are the first ones, in order, with no gap;
        # after it come the lines handed over after the reader came back.
        before = [int(line.split()[1]) for line in lines[:at]]
        assert before == list(range(len(before)))
        assert len(before) + dropped == 2000
        assert [line.split()[1] for line in lines[at + 1 :]] == [
            "002000",
            "002001",
            "002002",
        ]
        assert writer.dropped == dropped  # nothing dropped since
        writer.close()


def test_after_a_stall_lines_are_taken_again_only_once_half_the_buffer_is_read() -> (
    None
):
    """A reader just slower than the writer gets a notice per half buffer,
    not one every other line."""
    reactor = WriterReactor()
    with unread_pipe() as (r, w):
        writer = LogWriter(w, reactor, max_buffered=10_000)
        read_all(r)
        write_lines(writer, [LINE] * 1000)  # the pipe and the buffer full
        full = writer.buffered
        assert full > 9_000
        dropped = writer.dropped
        writer.write_line(LINE)
        assert writer.dropped == dropped + 1  # still full: dropped
        os.read(r, 64 * 1024)  # room in the pipe for part of the buffer
        reactor.writable()
        assert writer.buffered <= 5_000  # half read: lines taken again
        before = writer.dropped
        writer.write_line(LINE)
        assert writer.dropped == before
        writer.close(timeout=0)


def test_a_line_longer_than_the_cap_is_cut_to_it() -> None:
    with unread_pipe() as (r, w):
        writer = LogWriter(w, WriterReactor(), max_buffered=1000)
        writer.write_line(b"y" * 5000 + b"\n")
        assert read_all(r) == b"y" * 999 + b"\n"
        writer.close()


def test_a_reader_that_closes_the_pipe_costs_every_later_line_counted_as_dropped() -> (
    None
):
    reactor = WriterReactor()
    r, w = os.pipe()
    try:
        writer = LogWriter(w, reactor)
        writer.write_line(b"read\n")
        assert os.read(r, 100) == b"read\n"
        os.close(r)  # the pager quit
        writer.write_line(b"one\n")  # EPIPE: Python ignores SIGPIPE
        writer.write_line(b"two\n")
        assert writer.dropped == 2
        assert reactor.writers == set()
        writer.close()
    finally:
        os.close(w)


def test_close_writes_what_waits_and_the_notice_within_its_timeout() -> None:
    reactor = WriterReactor()
    with unread_pipe() as (r, w):
        writer = LogWriter(w, reactor, max_buffered=4096)
        write_lines(writer, numbered(2000))
        dropped = writer.dropped
        got: list[bytes] = []
        reader = threading.Thread(target=lambda: got.append(_read_until_eof(r)))
        reader.start()
        error = raised_in_thread(lambda: writer.close(timeout=10), 30)
        assert error is None
        reader.join(30)
        text = got[0].decode()
        assert text.endswith(f"{dropped} log lines dropped: stdout was not read\n")
        assert writer.dropped == dropped


def _read_until_eof(fd: int) -> bytes:
    chunks = []
    deadline = time.monotonic() + 20
    os.set_blocking(fd, False)
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        if not chunk:
            break
        chunks.append(chunk)
        if chunks[-1].endswith(b"not read\n"):
            break
    return b"".join(chunks)


def test_close_gives_up_after_its_timeout_and_counts_the_lines_left() -> None:
    with unread_pipe() as (_r, w):
        writer = LogWriter(w, WriterReactor(), max_buffered=64 * 1024)
        write_lines(writer, numbered(3000))
        waiting = writer.buffered
        assert waiting > 0
        dropped = writer.dropped
        error = raised_in_thread(lambda: writer.close(timeout=0.2), 30)
        assert error is None
        assert writer.buffered == 0
        # The lines left waiting are counted; so is the notice never written.
        assert writer.dropped > dropped


@pytest.mark.slow
def test_threads_logging_to_a_stalling_reader_lose_no_line_uncounted_under_load() -> (
    None
):
    """4 threads log 2 500 lines each through one writer on the real
    reactor, while a reader reads in bursts and pauses, on a loaded machine,
    10 times: every line comes out whole or is counted dropped, never cut
    or mixed, and every dropped line is said."""
    with cpu_load(2):
        for _ in range(10):
            _threads_against_a_stalling_reader()


def _threads_against_a_stalling_reader() -> None:
    r, w = os.pipe()
    received: list[bytes] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set() or select.select([r], [], [], 0.2)[0]:
            for _ in range(20):  # a burst, then a pause
                if not select.select([r], [], [], 0.05)[0]:
                    break
                received.append(os.read(r, 4096))
            time.sleep(0.05)

    writer = LogWriter(w, default_reactor(), max_buffered=32 * 1024)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def log(thread: int) -> None:
        for i in range(2500):
            writer.write_line(f"t{thread} {i:05d} ".encode() + b"z" * 80 + b"\n")

    threads = [threading.Thread(target=log, args=(n,), daemon=True) for n in range(4)]
    try:
        for thread in threads:
            thread.start()
        assert drive_until(lambda: not any(t.is_alive() for t in threads), 60)
        assert drive_until(lambda: writer.buffered == 0, 60)
        writer.close(timeout=5)
    finally:
        done.set()
        reader.join(30)
        os.close(r)
        os.close(w)
    assert not reader.is_alive()
    lines = b"".join(received).splitlines()
    notices = [line for line in lines if line.endswith(b"was not read")]
    logged = [line for line in lines if not line.endswith(b"was not read")]
    assert all(re.fullmatch(rb"t[0-3] \d{5} z{80}", line) for line in logged)
    assert len(set(logged)) == len(logged)
    assert writer.dropped > 0  # the reader did stall
    assert len(logged) + writer.dropped == 10_000
    assert sum(int(line.split()[0]) for line in notices) == writer.dropped


# -- never disturbing others: who else shares the descriptor ---------------------


def test_a_pipe_is_reopened_for_the_monitor_alone_the_shared_one_stays_blocking() -> (
    None
):
    with unread_pipe() as (_r, w):
        writer = LogWriter(w, WriterReactor())
        assert writer.how == "pipe, reopened non-blocking"
        assert writer.fileno() != w
        write_lines(writer, numbered(2000))
        assert blocking(w)
        writer.close(timeout=0)
        assert blocking(w)


def test_a_terminal_is_reopened_so_the_shells_descriptor_stays_blocking() -> None:
    """Ctrl-S on the terminal (the master not read) stalls it like a pager."""
    master, slave = os.openpty()
    try:
        writer = LogWriter(slave, WriterReactor(), max_buffered=16 * 1024)
        assert writer.how == "terminal, reopened non-blocking"
        write_lines(writer, numbered(3000))  # far more than a tty buffers
        assert writer.dropped > 0
        assert blocking(slave)  # what the shell reads and writes
        writer.close(timeout=0)
    finally:
        os.close(master)
        os.close(slave)


def test_a_socket_is_written_with_msg_dontwait_and_stays_blocking() -> None:
    """journald's stdout under systemd is a stream socket."""
    ours, journald = socket.socketpair()
    try:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        writer = LogWriter(ours.fileno(), WriterReactor(), max_buffered=8192)
        assert writer.how == "socket, MSG_DONTWAIT"
        write_lines(writer, numbered(3000))
        assert writer.dropped > 0
        assert ours.getblocking()
        assert journald.recv(100).startswith(b"line 000000 ")
        writer.close(timeout=0)
    finally:
        ours.close()
        journald.close()


def test_when_reopening_is_refused_the_shared_description_is_non_blocking_until_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A terminal owned by another user (after ``su``) cannot be opened
    again: then O_NONBLOCK is set on the shared description, and put back."""
    real_open = os.open

    def refuse(path: Any, *args: Any, **kwargs: Any) -> int:
        if str(path).startswith("/proc/self/fd/"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    with unread_pipe() as (_r, w):
        writer = LogWriter(w, WriterReactor())
        assert writer.how == "pipe, O_NONBLOCK until exit"
        write_lines(writer, numbered(2000))  # still never blocks
        assert not blocking(w)
        writer.close(timeout=0)
        assert blocking(w)


def test_a_full_disk_under_a_redirected_stdout_is_tried_again_not_given_up() -> None:
    """/dev/full says ENOSPC to every write, as a full disk would to
    ``procwork monitor > file``: lines wait (up to the cap), tried again on
    a timer; nothing is lost uncounted and the writer never stops trying."""
    reactor = WriterReactor()
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        writer = LogWriter(fd, reactor, max_buffered=1000)
        assert writer.how == "file, written as is"
        write_lines(writer, [LINE] * 20)
        assert writer.buffered == 1000
        assert writer.dropped == 10
        assert reactor.writers == set()  # a timer, not the reactor's epoll
        assert len(reactor.getDelayedCalls()) == 1
        reactor.advance(1)
        assert len(reactor.getDelayedCalls()) == 1  # still trying
        writer.close(timeout=0)
        assert writer.dropped == 20 + 1  # and the notice
    finally:
        os.close(fd)


def test_a_closed_stdout_drops_and_counts_every_line() -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)  # ``procwork monitor >&-``
    writer = LogWriter(w, WriterReactor())
    writer.write_line(b"gone\n")
    assert writer.dropped == 1
    writer.close()


def test_the_notice_is_a_log_line_like_the_others() -> None:
    line = dropped_notice(False)(17288, "stdout").decode()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} WARN  \[monitor\] 17288 log lines "
        r"dropped: stdout was not read\n",
        line,
    )
    record = dropped_notice(True)(5, "stdout").decode()
    assert '"event": "log.dropped"' in record and '"dropped": 5' in record


# -- a real monitor whose stdout nobody reads ------------------------------------


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _metric(base: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", _get(base + "/metrics"), re.MULTILINE)
    assert match, name
    return float(match.group(1))


def _check_runs(base: str) -> int:
    import json

    return int(json.loads(_get(base + "/status.json"))["checks"]["tick"]["runs"])


def _wait_for(what: str, probe: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


@pytest.mark.e2e
@pytest.mark.slow
def test_a_monitor_with_stdout_unread_checks_answers_ctl_and_exits_on_sigterm(
    tmp_path: Path,
) -> None:
    """``procwork monitor | less`` with the pager paused: the stdout pipe
    fills, then the buffer; lines are dropped and counted, while checks
    run and ``ctl status`` answers; the reader, back, is told how many
    lines it missed; paused again, a SIGTERM still stops the monitor."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    sock = tmp_path / "monitor.sock"
    config = tmp_path / "monitor.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [monitor]
            max_load = false
            socket = "{sock}"

            [[service]]
            name = "chatty"
            command = ["{{python}}", "-u", "-c", '''
import time
while True:
    print("x" * 2000)
    time.sleep(0.002)
''']
            console_rate = 1000

            [[check]]
            name = "tick"
            command = ["true"]
            every = 0.25
            """
        )
    )
    with sigkill_leftovers() as pids:
        monitor = subprocess.Popen(
            [
                PY,
                "-m",
                "procwork",
                "monitor",
                str(config),
                "--http",
                f"127.0.0.1:{port}",
                "--lock-file",
                str(tmp_path / "lock"),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,  # not read until the end
            stderr=subprocess.DEVNULL,
        )
        pids.append(monitor.pid)
        assert monitor.stdout is not None
        try:
            _wait_for("the HTTP endpoint", lambda: _answers(base), 60)
            # The pipe and the 1 MiB buffer fill: lines are being dropped.
            _wait_for(
                "dropped lines",
                lambda: _metric(base, "procwork_log_lines_dropped_total") > 0,
                60,
            )
            runs = _check_runs(base)
            _wait_for("8 more check runs", lambda: _check_runs(base) >= runs + 8, 30)
            status = subprocess.run(
                [PY, "-m", "procwork", "ctl", "--socket", str(sock), "status"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert status.returncode == 0, status.stderr
            assert re.search(r"chatty\s+RUNNING", status.stdout)
            # The reader comes back: it is told how many lines it missed.
            # Then it stops reading again, for good.
            seen: list[bytes] = []
            notice = threading.Event()

            def read() -> None:
                assert monitor.stdout is not None
                for line in monitor.stdout:
                    seen.append(line)
                    if b"log lines dropped: stdout was not read" in line:
                        notice.set()
                        return

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            assert notice.wait(30), b"".join(seen[-5:])
            reader.join(10)
            dropped = _metric(base, "procwork_log_lines_dropped_total")
            _wait_for(
                "the pipe stalled again",
                lambda: _metric(base, "procwork_log_lines_dropped_total") > dropped,
                60,
            )
            # SIGTERM finds the pipe full: it still stops everything.
            monitor.send_signal(signal.SIGTERM)
            assert monitor.wait(timeout=30) == 0
        finally:
            if monitor.poll() is None:
                monitor.kill()
                monitor.wait(timeout=10)
    [line] = [line for line in seen if b"log lines dropped" in line]
    assert re.search(
        rb"WARN  \[monitor\] \d+ log lines dropped: stdout was not read", line
    )


def _answers(base: str) -> bool:
    try:
        _get(base + "/status.json")
    except OSError:
        return False
    return True
