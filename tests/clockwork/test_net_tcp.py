"""clockwork.net over real TCP on loopback: connect, read, write, close, and
what a routine's end does to its connections.

Peers are real: a ``clockwork.net.listen`` server, or a
:class:`~tests.support.net.Peer` on plain sockets in threads when the peer
must misbehave (send without end, never read). Caps are checked as bytes
read (:class:`~tests.support.net.CountingReactor`); every wait is bounded;
the exact timing of a timeout is ``test_net_stream.py``'s, on a clock.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Generator
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransport

import clockwork
from clockwork import net
from clockwork.net import Connection, Server
from tests.support import drive_until, global_reactor, wait
from tests.support.net import (
    CountingReactor,
    Peer,
    PeerConnection,
    endless,
    free_port,
    stuck_port,
)

Gen = Generator[Any, Any, Any]

#: What one read of Twisted's takes from a socket, at most.
ONE_READ = 65536


def echo(conn: Connection) -> Gen:
    while line := (yield conn.readline()):
        yield conn.write(line)


def holds_open(conn: PeerConnection) -> None:
    """A peer that reads until the client closes."""
    conn.drain()


# -- talking ---------------------------------------------------------------------------


def test_a_routine_talks_to_an_echo_server_a_line_at_a_time(
    servers: Callable[..., Server],
) -> None:
    server = servers(0, echo)

    def client() -> Gen:
        with (yield net.connect("127.0.0.1", server.port, timeout=5)) as conn:
            replies = []
            for word in (b"one\n", b"two\n"):
                yield conn.write(word)
                replies.append((yield conn.readline()))
            return replies, conn.peer

    replies, peer = wait(client())
    assert replies == [b"one\n", b"two\n"]
    assert peer == ("127.0.0.1", server.port)


def test_connect_read_and_write_work_from_blocking_code_too(
    servers: Callable[..., Server],
) -> None:
    server = servers(0, echo)
    conn = wait(net.connect("localhost", server.port, timeout=5))
    wait(conn.write(b"blocking\n"))
    assert wait(conn.readline()) == b"blocking\n"
    wait(conn.close())
    assert conn.closed


def test_an_async_def_routine_awaits_the_same_calls(
    servers: Callable[..., Server],
) -> None:
    server = servers(0, echo)

    async def client() -> bytes:
        with await net.connect("127.0.0.1", server.port, timeout=5) as conn:
            await conn.write(b"awaited\n")
            return await conn.readline()

    assert wait(client()) == b"awaited\n"


# -- failing to connect, in words ------------------------------------------------------


def test_a_port_nothing_listens_on_is_refused_naming_host_and_port() -> None:
    port = free_port()
    with pytest.raises(net.Refused) as caught:
        wait(net.connect("127.0.0.1", port, timeout=5))
    assert str(caught.value) == (
        f"connecting to 127.0.0.1:{port}: refused (nothing listens there)"
    )
    assert caught.value.kind == "refused"
    assert isinstance(caught.value, ConnectionRefusedError)
    assert isinstance(caught.value, clockwork.NetworkError)


def test_a_name_with_no_address_is_a_DNS_error() -> None:
    with pytest.raises(net.DNSError) as caught:
        wait(net.connect("nosuch.invalid", 80, timeout=10))
    assert str(caught.value) == (
        "connecting to nosuch.invalid:80: DNS lookup failed: no address for "
        "nosuch.invalid"
    )
    assert caught.value.kind == "DNS"


@pytest.mark.slow
def test_a_connection_attempt_nobody_answers_times_out_saying_where_it_was() -> None:
    with stuck_port() as port, pytest.raises(net.NetworkTimeout) as caught:
        wait(net.connect("127.0.0.1", port, timeout=0.3))
    assert str(caught.value) == (
        f"connecting to 127.0.0.1:{port}: timed out after 0.3 s (connecting)"
    )
    assert isinstance(caught.value, clockwork.Timeout)


def test_the_connect_timeout_bounds_the_name_the_connection_and_the_handshake() -> None:
    """On a clock: exactly at the timeout, in each phase, the attempt is
    given up and the error names the phase."""
    reactor = MemoryReactorClock()
    by_name = net.connect("example.com", 80, timeout=5, reactor=reactor)
    reactor.advance(4.9)
    assert not by_name.called
    reactor.advance(0.1)
    with pytest.raises(net.NetworkTimeout, match=r"after 5 s \(connecting\)"):
        wait(by_name)
    assert reactor.getDelayedCalls() == []

    handshake = net.connect("127.0.0.1", 443, timeout=5, tls=True, reactor=reactor)
    _, _, factory, *_ = reactor.tcpClients[-1]
    protocol: Any = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    reactor.advance(5)
    assert transport.disconnected  # aborted mid-handshake
    protocol.connectionLost(None)
    with pytest.raises(net.NetworkTimeout, match=r"after 5 s \(the TLS handshake\)"):
        wait(handshake)


def test_cancelling_a_connect_gives_the_attempt_up() -> None:
    reactor = MemoryReactorClock()
    attempt = net.connect("127.0.0.1", 80, timeout=5, reactor=reactor)
    [(_, _, _, _, _)] = reactor.tcpClients
    connector = reactor.connectors[-1]
    attempt.cancel()
    with pytest.raises(CancelledError):
        wait(attempt)
    assert connector.stoppedConnecting
    assert reactor.getDelayedCalls() == []


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        (("", 80), {}, TypeError, "host must be a non-empty str"),
        (("h", 0), {}, ValueError, r"port must be in 1..65535, not 0"),
        (("h", "80"), {}, TypeError, "port must be an int, not '80'"),
        (("h", 80), {"timeout": -1}, ValueError, "timeout must be >= 0 seconds"),
        (("h", 80), {"ca_file": "x.pem"}, ValueError, "ca_file and server_name are "),
    ],
)
def test_bad_arguments_to_connect_are_refused_at_once_naming_the_call(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=r"clockwork.net.connect\(\): " + message):
        net.connect(*args, **kwargs)


# -- a routine's end closes its connections --------------------------------------------


def open_and(then: Deferred[Any], port: int, opened: list[Connection]) -> Gen:
    conn = yield net.connect("127.0.0.1", port, timeout=5)
    opened.append(conn)
    return (yield then)


def test_cancelling_a_routine_closes_the_connections_it_opened(
    peers: Callable[..., Peer],
) -> None:
    peer = peers(holds_open)
    opened: list[Connection] = []
    task = clockwork.spawn(open_and(Deferred(), peer.port, opened))
    assert drive_until(lambda: len(peer.connections) == 1 and bool(opened), 10)
    task.cancel()
    assert drive_until(lambda: peer.all_closed(1), 10)
    assert opened[0].closed


def test_a_routine_timed_out_by_clockwork_timeout_has_its_connections_closed(
    peers: Callable[..., Peer],
) -> None:
    peer = peers(holds_open)
    opened: list[Connection] = []

    def outer() -> Gen:
        yield clockwork.timeout(0.2, open_and(Deferred(), peer.port, opened))

    with pytest.raises(clockwork.Timeout):
        wait(outer())
    assert drive_until(lambda: peer.all_closed(1), 10)


def test_a_routine_that_fails_has_its_connections_closed(
    peers: Callable[..., Peer],
) -> None:
    peer = peers(holds_open)
    failing: Deferred[None] = Deferred()
    task = clockwork.spawn(open_and(failing, peer.port, []))
    assert drive_until(lambda: len(peer.connections) == 1, 10)
    failing.errback(KeyError("oops"))
    with pytest.raises(KeyError):
        wait(task.deferred)
    assert drive_until(lambda: peer.all_closed(1), 10)


def test_a_connection_a_routine_returns_stays_open_for_its_caller(
    servers: Callable[..., Server],
) -> None:
    server = servers(0, echo)

    def opener() -> Gen:
        return (yield net.connect("127.0.0.1", server.port, timeout=5))

    def caller() -> Gen:
        conn = yield clockwork.timeout(5, opener())  # a task of its own, ended
        with conn:
            yield conn.write(b"still open\n")
            return (yield conn.readline())

    assert wait(caller()) == b"still open\n"


# -- caps against a peer that sends without end ----------------------------------------


def test_an_endless_line_costs_the_reader_its_cap_and_one_read_then_fails(
    peers: Callable[..., Peer],
) -> None:
    peer = peers(endless(b"x" * 16384))
    reactor = CountingReactor(global_reactor())

    def reader() -> Gen:
        conn = yield net.connect("127.0.0.1", peer.port, timeout=5, reactor=reactor)
        with conn:
            yield conn.readline(max_length=100_000)

    with pytest.raises(net.TooLong, match="no end of line within 100000 bytes"):
        wait(reader())
    assert 100_000 <= reactor.received <= 100_000 + ONE_READ
    assert drive_until(lambda: peer.all_closed(1), 10)


def test_read_all_of_an_endless_stream_stops_at_its_cap(
    peers: Callable[..., Peer],
) -> None:
    peer = peers(endless(b"y" * 16384))
    reactor = CountingReactor(global_reactor())

    def reader() -> Gen:
        conn = yield net.connect("127.0.0.1", peer.port, timeout=5, reactor=reactor)
        with conn:
            yield conn.read_all(max_bytes=300_000)

    with pytest.raises(net.TooLong, match="to its end: more than 300000 bytes"):
        wait(reader())
    assert 300_000 < reactor.received <= 300_001 + ONE_READ
    assert drive_until(lambda: peer.all_closed(1), 10)


def test_a_peer_that_closes_after_sending_is_read_to_its_end(
    peers: Callable[..., Peer],
) -> None:
    peer = peers(lambda conn: conn.send(b"banner 1.0\r\nand the rest"))

    def reader() -> Gen:
        with (yield net.connect("127.0.0.1", peer.port, timeout=5)) as conn:
            return (yield conn.readline()), (yield conn.read_all())

    assert wait(reader()) == (b"banner 1.0\r\n", b"and the rest")


# -- writing to a peer that does not read ----------------------------------------------


@pytest.mark.slow
def test_writes_to_a_peer_that_does_not_read_wait_then_resume_when_it_reads(
    peers: Callable[..., Peer],
) -> None:
    """The routine's memory is bounded by the buffers (the kernel's, which
    the test makes small, and Twisted's 64 KiB), not by what it has to
    send; once the peer reads, every byte arrives."""
    reading = __import__("threading").Event()

    def slow(conn: PeerConnection) -> None:
        reading.wait(30)
        conn.drain()

    peer = peers(slow, receive_buffer=32768)
    chunk, total = b"z" * 65536, 16 * 1024 * 1024
    written = [0]

    def writer() -> Gen:
        conn = yield net.connect("127.0.0.1", peer.port, timeout=None)
        handle = conn.protocol.transport.getHandle()
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        with conn:
            while written[0] < total:
                yield conn.write(chunk)
                written[0] += len(chunk)
        yield conn.when_closed()

    task = clockwork.spawn(writer())
    # Watch for a while (bounded): the writes stall at the buffers' size.
    bound = 1024 * 1024
    drive_until(lambda: written[0] > bound, 2.0)
    assert 0 < written[0] <= bound and not task.done
    reading.set()
    wait(task.deferred, 30)
    assert drive_until(lambda: peer.all_closed(1), 10)
    assert len(peer.connections[0].received) == total


@pytest.mark.slow
def test_closing_a_connection_whose_peer_does_not_read_aborts_it_after_the_timeout(
    peers: Callable[..., Peer],
) -> None:
    release = __import__("threading").Event()
    peer = peers(lambda conn: release.wait(30), receive_buffer=4096)

    def writer() -> Gen:
        conn = yield net.connect("127.0.0.1", peer.port, timeout=5)
        conn.protocol.transport.getHandle().setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 4096
        )
        try:
            while True:  # until the write waits past its timeout
                yield conn.write(b"w" * 65536, timeout=0.2)
        except net.NetworkTimeout:
            pass
        yield conn.close(timeout=0.2)  # the buffer cannot go: aborted
        return conn.closed

    try:
        assert wait(writer(), 30) is True
    finally:
        release.set()
