"""clockwork.net.listen: a task per connection, a cap on connections, a close
that leaves nothing behind.

Clients are clockwork routines on the same reactor, or raw sockets the
test reads without blocking (the server runs in this very process: a
blocking read would stop it). Every wait is bounded.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Generator
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.logger import formatEvent

import clockwork
from clockwork import net
from clockwork.net import Connection, Server
from tests.support import drive_until, observing, wait
from tests.support.certs import Certificates
from tests.support.net import free_port

Gen = Generator[Any, Any, Any]


def echo(conn: Connection) -> Gen:
    while line := (yield conn.readline()):
        yield conn.write(line)


def say(port: int, *lines: bytes) -> Gen:
    """A client: send each line, read its answer; the answers."""
    with (yield net.connect("127.0.0.1", port, timeout=5)) as conn:
        answers = []
        for line in lines:
            yield conn.write(line)
            answers.append((yield conn.readline()))
            yield clockwork.sleep(0.001)  # let the others have a turn
        return answers


def raw_client(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setblocking(False)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (a read without blocking sees the end)."""
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_each_connection_is_served_by_its_own_handler_at_the_same_time(
    servers: Callable[..., Server],
) -> None:
    server = servers(0, echo)
    assert repr(server) == f"<Server 127.0.0.1:{server.port} 0 connections>"
    clients = [say(server.port, b"%d-a\n" % i, b"%d-b\n" % i) for i in range(5)]
    answers = wait(clockwork.gather(*clients))
    assert answers == [[b"%d-a\n" % i, b"%d-b\n" % i] for i in range(5)]


def test_an_async_def_handler_serves_too(servers: Callable[..., Server]) -> None:
    async def shout(conn: Connection) -> None:
        line = await conn.readline()
        await conn.write(line.upper())

    server = servers(0, shout)
    assert wait(say(server.port, b"quiet\n")) == [b"QUIET\n"]


def test_a_handler_that_returns_has_its_connection_closed(
    servers: Callable[..., Server],
) -> None:
    def banner(conn: Connection) -> Gen:
        yield conn.write(b"220 ready\r\n")

    server = servers(0, banner)

    def client() -> Gen:
        with (yield net.connect("127.0.0.1", server.port, timeout=5)) as conn:
            return (yield conn.read_all())

    assert wait(client()) == b"220 ready\r\n"
    assert drive_until(lambda: server.connections == 0, 10)


def test_past_max_connections_a_new_one_is_closed_at_once_counted_and_logged_once(
    servers: Callable[..., Server],
) -> None:
    server = servers(0, echo, max_connections=2)
    events: list[dict[str, Any]] = []
    with observing(events.append):
        held = [raw_client(server.port) for _ in range(2)]
        assert drive_until(lambda: server.connections == 2, 10)
        extra = [raw_client(server.port) for _ in range(3)]
        assert drive_until(lambda: server.refused == 3, 10)
    try:
        assert all(closed_by_server(sock) for sock in extra)
        assert not any(closed_by_server(sock) for sock in held)
        assert server.connections == 2
        warnings = [formatEvent(e) for e in events if "refused" in formatEvent(e)]
        assert warnings == [
            f"127.0.0.1:{server.port}: 2 connections open, the most allowed "
            "(max_connections); new ones are refused (1 so far)"
        ]
        for sock in held:
            sock.close()
        assert drive_until(lambda: server.connections == 0, 10)
        assert wait(say(server.port, b"room again\n")) == [b"room again\n"]
    finally:
        for sock in held + extra:
            sock.close()


def test_a_handler_that_raises_is_logged_with_its_traceback_and_its_connection_closed(
    servers: Callable[..., Server],
) -> None:
    def broken(conn: Connection) -> Gen:
        yield conn.readline()
        raise LookupError("no such thing")

    server = servers(0, broken)
    events: list[dict[str, Any]] = []

    def client() -> Gen:
        with (yield net.connect("127.0.0.1", server.port, timeout=5)) as conn:
            yield conn.write(b"look it up\n")
            return (yield conn.read_all())

    with observing(events.append):
        assert wait(client()) == b""
    [failed] = [e for e in events if "failed" in e.get("log_format", "")]
    assert formatEvent(failed).startswith(
        f"127.0.0.1:{server.port}: the handler for 127.0.0.1:"
    )
    assert failed["log_failure"].check(LookupError)


def test_a_peer_that_goes_away_ends_its_handler_with_one_line_not_a_traceback(
    servers: Callable[..., Server],
) -> None:
    def patient(conn: Connection) -> Gen:
        yield conn.readline()
        yield conn.readline()  # the peer resets meanwhile

    server = servers(0, patient)
    events: list[dict[str, Any]] = []
    with observing(events.append):
        sock = raw_client(server.port)
        sock.send(b"one line\n")
        assert drive_until(lambda: server.connections == 1, 10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        sock.close()  # linger 0: a reset

        def lines() -> list[str]:
            return [formatEvent(e) for e in events if "the handler" in formatEvent(e)]

        assert drive_until(lambda: bool(lines()), 10)
    assert len(lines()) == 1
    assert lines()[0].endswith(": the connection was reset")
    assert not any(e.get("log_failure") for e in events)


def test_closing_the_server_cancels_its_handlers_runs_their_finally_and_closes_all(
    servers: Callable[..., Server],
) -> None:
    started: list[str] = []
    cleaned: list[str] = []

    def waiting(conn: Connection) -> Gen:
        started.append(conn.address)
        try:
            yield Deferred()  # for ever
        finally:
            cleaned.append(conn.address)

    server = servers(0, waiting)
    socks = [raw_client(server.port) for _ in range(3)]
    try:
        assert drive_until(lambda: len(started) == 3, 10)
        wait(server.close(), 10)
        assert len(cleaned) == 3 and server.connections == 0
        assert drive_until(lambda: all(closed_by_server(s) for s in socks), 10)
        with pytest.raises(net.Refused):
            wait(net.connect("127.0.0.1", server.port, timeout=5))
        wait(server.close(), 10)  # twice is harmless
    finally:
        for sock in socks:
            sock.close()


def test_listening_on_a_port_in_use_is_an_error_naming_the_address(
    servers: Callable[..., Server],
) -> None:
    server = servers(0, echo)
    with pytest.raises(net.NetworkError) as caught:
        net.listen(server.port, echo)
    assert str(caught.value).startswith(
        f"cannot listen on 127.0.0.1:{server.port}: [Errno 98] Address already in use"
    )
    assert caught.value.kind == "cannot listen"


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((-1, echo), {}, ValueError, r"port must be in 0..65535, not -1"),
        ((0, "echo"), {}, TypeError, "handler must be a generator function"),
        ((0, echo), {"max_connections": 0}, ValueError, "max_connections must be an "),
        ((0, echo), {"timeout": "1"}, TypeError, "timeout must be a number"),
    ],
)
def test_bad_arguments_to_listen_are_refused_naming_the_call(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=r"clockwork.net.listen\(\): " + message):
        net.listen(*args, **kwargs)


def test_a_server_is_a_context_manager_that_closes_it() -> None:
    port = free_port()
    with net.listen(port, echo) as server:
        assert server.port == port and server.address == f"127.0.0.1:{port}"
        assert wait(say(port, b"inside\n")) == [b"inside\n"]
    with pytest.raises(net.Refused):
        wait(net.connect("127.0.0.1", port, timeout=5))


def test_a_tls_client_that_never_says_hello_is_cut_off_after_the_timeout(
    servers: Callable[..., Server], certificates: Certificates
) -> None:
    """It would hold one of max_connections for ever; no handler saw it."""
    served: list[Connection] = []

    def handler(conn: Connection) -> Gen:
        served.append(conn)
        yield conn.readline()

    server = servers(0, handler, certificate=certificates.server, timeout=0.2)
    events: list[dict[str, Any]] = []
    sock = raw_client(server.port)
    client = f"127.0.0.1:{sock.getsockname()[1]}"
    try:
        with observing(events.append):
            assert drive_until(lambda: server.connections == 1, 10)
            assert drive_until(lambda: server.connections == 0, 10)
        assert drive_until(lambda: closed_by_server(sock), 10)
    finally:
        sock.close()
    assert served == []
    lines = [formatEvent(e) for e in events if "TLS handshake" in formatEvent(e)]
    assert lines == [
        f"127.0.0.1:{server.port}: no TLS handshake from {client} within 0.2 s; "
        "connection closed"
    ]
