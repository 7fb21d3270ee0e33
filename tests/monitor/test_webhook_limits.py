"""A webhook reply costs the monitor a bounded read, whatever the webhook does.

Each test runs a real HTTP server on loopback (a thread with plain sockets,
so it can misbehave: an endless body, endless headers, a trickle) and the
real webhook client (``clockwork.net.request``) on the test's reactor. The
bound is checked as an amount: the bytes the client read (counted by a
:class:`~tests.support.net.CountingReactor`) and kept (the reply's body);
the server sees its connection closed; every wait has a bound, none is a
timing assertion.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from procwork.monitor import AlertSpec
from procwork.monitor._alerts import AlertDispatcher, Event
from procwork.monitor._webhook import MAX_REPLY, Reply, post
from tests.support import drive_until, global_reactor, observing, wait
from tests.support.net import CountingReactor

#: What one read of the client takes at most (Twisted's TCP read size).
ONE_READ = 65536


# -- a webhook that misbehaves ---------------------------------------------------


@dataclass
class Connection:
    """One connection the server accepted: what it sent, and whether the
    client has closed it (set when a send fails or a read ends)."""

    sent: int = 0
    closed: threading.Event = field(default_factory=threading.Event)


class Webhook:
    """An HTTP server on loopback that answers every POST with ``head``,
    then ``body()`` (an iterator, endless or not); ``pause`` seconds
    between body chunks."""

    def __init__(
        self, head: bytes, body: Callable[[], Iterator[bytes]], pause: float = 0.0
    ) -> None:
        self.connections: list[Connection] = []
        self._head, self._body, self._pause = head, body, pause
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}/hook"
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._server.accept()
            except OSError:
                return
            connection = Connection()
            self.connections.append(connection)
            threading.Thread(
                target=self._serve, args=(sock, connection), daemon=True
            ).start()

    def _serve(self, sock: socket.socket, connection: Connection) -> None:
        try:
            sock.settimeout(30)
            request = b""
            while b"\r\n\r\n" not in request:
                request += sock.recv(65536)
            sock.sendall(self._head)
            for chunk in self._body():
                if self._stop.is_set():
                    return
                sock.sendall(chunk)
                connection.sent += len(chunk)
                if self._pause:
                    time.sleep(self._pause)
            while sock.recv(65536):  # the body ended: wait for the client
                pass
            connection.closed.set()
        except OSError:  # the client closed (reset, broken pipe)
            connection.closed.set()
        finally:
            sock.close()

    def all_closed(self, count: int) -> bool:
        """Whether ``count`` connections were made, and the client closed
        each of them."""
        return len(self.connections) == count and all(
            c.closed.is_set() for c in self.connections
        )

    def close(self) -> None:
        self._stop.set()
        self._server.close()


def endless(chunk: bytes = b"x" * 16384) -> Callable[[], Iterator[bytes]]:
    def body() -> Iterator[bytes]:
        while True:
            yield chunk

    return body


def fixed(data: bytes) -> Callable[[], Iterator[bytes]]:
    return lambda: iter([data])


def head(code: int, *lines: bytes) -> bytes:
    return (
        b"HTTP/1.1 %d X\r\n" % code + b"".join(li + b"\r\n" for li in lines) + b"\r\n"
    )


@pytest.fixture
def webhooks() -> Iterator[Callable[..., Webhook]]:
    started: list[Webhook] = []

    def start(*args: Any, **kwargs: Any) -> Webhook:
        started.append(Webhook(*args, **kwargs))
        return started[-1]

    try:
        yield start
    finally:
        for webhook in started:
            webhook.close()


def deliver(alerts: AlertDispatcher, name: str = "hook") -> Any:
    """Emit one event; wait (bounded) for its delivery to end."""
    alerts.emit(Event("check.failed", "disk", "failing", "disk: full", time=1.0))
    status = alerts.status[name]
    assert drive_until(lambda: status.ok + status.failed == 1, timeout=30), status
    return status


# -- the body: 64 KiB read, then the connection closed --------------------------------


def test_of_an_endless_reply_64_KiB_is_read_then_the_connection_is_closed(
    webhooks: Callable[..., Webhook],
) -> None:
    webhook = webhooks(head(200, b"content-type: text/plain"), endless())
    reactor = CountingReactor(global_reactor())
    reply = wait(post(webhook.url, b"{}", reactor=reactor))
    assert reply == Reply(200, b"x" * MAX_REPLY, truncated=True)
    assert drive_until(lambda: webhook.all_closed(1), timeout=10)
    # Read, all told: the cap, and what came in the read that crossed it.
    assert MAX_REPLY < reactor.received <= MAX_REPLY + ONE_READ + 100


def test_a_delivery_answered_200_with_an_endless_body_is_ok_and_says_its_reply_was_cut(
    webhooks: Callable[..., Webhook],
) -> None:
    webhook = webhooks(head(200), endless(b"all good " * 1000))
    reactor = CountingReactor(global_reactor())
    spec = AlertSpec("hook", webhook=webhook.url, timeout=20)
    alerts = AlertDispatcher([spec], reactor=reactor)
    status = deliver(alerts)
    assert (status.ok, status.failed) == (1, 0)
    assert status.last_result == "webhook answered 200 (reply cut after 65536 bytes)"
    assert status.last_output == ("all good " * 1000)[:2000]
    assert drive_until(lambda: webhook.all_closed(1), timeout=10)
    assert reactor.received <= MAX_REPLY + ONE_READ + 100


def test_a_delivery_answered_500_with_an_endless_body_gives_up_all_connections_closed(
    webhooks: Callable[..., Webhook],
) -> None:
    webhook = webhooks(head(500), endless())
    reactor = CountingReactor(global_reactor())
    spec = AlertSpec("hook", webhook=webhook.url, timeout=20, retries=2, retry_delay=0)
    alerts = AlertDispatcher([spec], reactor=reactor)
    status = deliver(alerts)
    assert (status.ok, status.failed) == (0, 1)
    assert status.last_result == (
        "webhook gave up after 3 attempts: answered 500 (reply cut after 65536 bytes)"
    )
    assert drive_until(lambda: webhook.all_closed(3), timeout=10)
    assert reactor.received <= 3 * (MAX_REPLY + ONE_READ + 100)


def test_a_reply_that_fits_is_read_whole_and_its_connection_closed_after_it(
    webhooks: Callable[..., Webhook],
) -> None:
    webhook = webhooks(head(201, b"content-length: 7"), fixed(b"noted.\n"))
    reply = wait(post(webhook.url, b"{}", reactor=global_reactor()))
    assert reply == Reply(201, b"noted.\n", truncated=False)
    assert drive_until(lambda: webhook.all_closed(1), timeout=10)


def test_a_delivery_logs_its_result_not_its_connections(
    webhooks: Callable[..., Webhook],
) -> None:
    """Twisted's client factory would log two lines per connection. The two
    lines of a delivery that works are the monitor's chatter: at debug,
    below the default log level."""
    from twisted.logger import LogLevel, formatEvent

    webhook = webhooks(head(204, b"content-length: 0"), fixed(b""))
    alerts = AlertDispatcher([AlertSpec("hook", webhook=webhook.url, timeout=20)])
    lines: list[tuple[object, str]] = []
    with observing(
        lambda event: lines.append((event["log_level"], formatEvent(event)))
    ):
        status = deliver(alerts)
        assert drive_until(lambda: webhook.all_closed(1), timeout=10)
    assert status.last_result == "webhook answered 204"
    assert lines == [
        (LogLevel.debug, f"alert hook: check.failed disk -> {webhook.url}"),
        (LogLevel.debug, "alert hook: webhook answered 204"),
    ]


def test_a_reply_without_a_length_ends_when_the_server_closes_and_counts_as_whole(
    webhooks: Callable[..., Webhook],
) -> None:
    """An HTTP/1.0-style body, ended by the server closing the connection."""

    class Closing(Webhook):
        def _serve(self, sock: socket.socket, connection: Connection) -> None:
            with sock:
                sock.recv(65536)
                sock.sendall(b"HTTP/1.0 200 OK\r\n\r\nthanks")
            connection.closed.set()

    webhook = Closing(b"", fixed(b""))
    try:
        reply = wait(post(webhook.url, b"{}", reactor=global_reactor()))
    finally:
        webhook.close()
    assert reply == Reply(200, b"thanks", truncated=False)


# -- a reply that never ends in time, or never ends its head ---------------------------


@pytest.mark.slow
def test_a_reply_trickling_past_the_timeout_is_read_no_more_once_the_delivery_gives_up(
    webhooks: Callable[..., Webhook],
) -> None:
    webhook = webhooks(head(200), endless(b"."), pause=0.01)
    reactor = CountingReactor(global_reactor())
    spec = AlertSpec("hook", webhook=webhook.url, timeout=0.3, retries=1, retry_delay=0)
    alerts = AlertDispatcher([spec], reactor=reactor)
    status = deliver(alerts)
    assert status.last_result == (
        "webhook gave up after 2 attempts: no answer within 0.3 s"
    )
    # Both attempts' connections are closed: the server's sends fail.
    assert drive_until(lambda: webhook.all_closed(2), timeout=10)


def test_endless_headers_are_cut_off_at_64_KiB_and_the_attempt_fails_saying_so(
    webhooks: Callable[..., Webhook],
) -> None:
    webhook = webhooks(b"HTTP/1.1 200 OK\r\n", endless(b"x-more: header\r\n" * 1000))
    reactor = CountingReactor(global_reactor())
    spec = AlertSpec("hook", webhook=webhook.url, timeout=20, retries=0)
    alerts = AlertDispatcher([spec], reactor=reactor)
    status = deliver(alerts)
    assert status.last_result == (
        f"webhook gave up after 1 attempts: POST {webhook.url}: the response head "
        "went on past 65536 bytes; connection closed"
    )
    assert drive_until(lambda: webhook.all_closed(1), timeout=10)
    assert 65536 < reactor.received <= 65536 + ONE_READ


def test_a_body_of_tiny_chunks_is_cut_at_64_KiB_of_body_reading_under_1_MiB(
    webhooks: Callable[..., Webhook],
) -> None:
    """Chunk framing is not body: 1-byte chunks take 6 bytes each on the
    wire. The body is still cut at 64 KiB of it, and what is read stays
    under 1 MiB."""
    webhook = webhooks(
        head(200, b"transfer-encoding: chunked"), endless(b"1\r\nx\r\n" * 4096)
    )
    reactor = CountingReactor(global_reactor())
    reply = wait(post(webhook.url, b"{}", reactor=reactor))
    assert reply == Reply(200, b"x" * MAX_REPLY, truncated=True)
    assert drive_until(lambda: webhook.all_closed(1), timeout=10)
    assert reactor.received <= 6 * MAX_REPLY + ONE_READ < 1024 * 1024
