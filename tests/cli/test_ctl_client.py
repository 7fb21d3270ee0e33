"""``procwork ctl`` in a flood of connections waits out what a busy monitor
does to a newcomer, within its ``--timeout``.

Found by the monitor soak (``benchmarks/monitor_soak.py``): while a wave of
2000 connections fills the control socket's listen backlog, the kernel
refuses a new connection at once (``EAGAIN``) instead of letting it wait,
and a connection the monitor closes over its cap with the request unread
ends in a reset, not an end of file; ctl exited 3 on either. Each test
plays the monitor on a plain Unix socket, in a thread, with a bound on
every wait.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from procwork.cli import _ctl
from procwork.monitor._protocol import ControlError, encode, ok

REQUEST = {"command": "status", "names": []}


@pytest.fixture
def listening(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A Unix socket listening with a backlog of one pending connection."""
    path = str(tmp_path / "ctl.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(0)  # Linux: one connection may wait, the next gets EAGAIN
    server.settimeout(10)
    yield path, server
    server.close()


def answer_one(server: socket.socket, received: list[bytes]) -> None:
    """Accept one connection, read its request line, answer it as a monitor."""
    conn, _ = server.accept()
    with conn:
        conn.settimeout(10)
        data = b""
        while b"\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        received.append(data)
        conn.sendall(encode(ok({"services": {}})))


def filled(path: str) -> socket.socket:
    """A connection left pending in the backlog of ``path``, now full."""
    pending = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    pending.settimeout(10)
    pending.connect(path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(10)
    with probe, pytest.raises(BlockingIOError):
        probe.connect(path)
    return pending


def test_a_full_listen_backlog_is_waited_out_like_a_busy_monitor(
    listening: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first connect is refused (EAGAIN); in the pause before the next
    try the monitor catches up, and ctl's request gets its answer."""
    path, server = listening
    pending = filled(path)
    received: list[bytes] = []
    monitor = threading.Thread(target=answer_one, args=(server, received))
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 1:  # the monitor accepts what waited, then ctl's
            server.accept()[0].close()
            pending.close()
            monitor.start()
        time.sleep(seconds)

    monkeypatch.setattr(
        _ctl, "time", SimpleNamespace(monotonic=time.monotonic, sleep=pause)
    )
    client, answer = _ctl._ask(path, 30, REQUEST)
    client.close()
    monitor.join(timeout=10)
    assert answer["ok"], answer
    assert len(pauses) == 1, "refused once, then answered"
    assert received == [encode(REQUEST)]


def test_a_backlog_that_stays_full_fails_after_the_timeout_saying_so(
    listening: tuple[str, socket.socket],
) -> None:
    """A monitor that never catches up: ctl gives up when its --timeout
    passes, naming the full backlog (exit 3, as for no answer)."""
    path, _server = listening
    with filled(path), pytest.raises(ControlError, match="listen backlog stayed full"):
        _ctl._ask(path, 0.3, REQUEST)


def test_a_connection_reset_with_the_request_unread_is_tried_again(
    listening: tuple[str, socket.socket],
) -> None:
    """The monitor closes the first connection with ctl's request unread (the
    client sees ECONNRESET); ctl connects again and is answered."""
    path, server = listening
    received: list[bytes] = []
    resets: list[bytes] = []

    def monitor() -> None:
        first, _ = server.accept()
        with first:
            if select.select([first], [], [], 10)[0]:  # the request is in
                resets.append(b"closed with the request unread")
        answer_one(server, received)

    thread = threading.Thread(target=monitor)
    thread.start()
    client, answer = _ctl._ask(path, 30, REQUEST)
    client.close()
    thread.join(timeout=10)
    assert answer["ok"], answer
    assert resets, "the first connection was closed with its request in"
    assert received == [encode(REQUEST)]
