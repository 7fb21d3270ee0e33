"""A clockwork.net Connection on a fake transport: its buffers, caps and timeouts.

The connection is driven by hand (Twisted's ``StringTransport`` as its
socket, a ``task.Clock`` as its reactor), so every cap is checked as bytes
held and every timeout at its exact second, instantly. The same behaviour
over real sockets is ``test_net_tcp.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from clockwork import net
from clockwork._stream import Connection
from clockwork._worker import Worker


class Ends:
    """A connection on a fake transport, and its clock."""

    def __init__(self, timeout: float | None = 5.0) -> None:
        self.clock = Clock()
        self.transport = StringTransport()
        self.conn = Connection(
            "example.com:7", reactor=self.clock, timeout=timeout, tls=False
        )
        self.conn.protocol.makeConnection(self.transport)

    def receive(self, data: bytes) -> None:
        self.conn.protocol.dataReceived(data)

    def lose(self, reason: BaseException) -> None:
        self.conn.protocol.connectionLost(Failure(reason))

    @property
    def reading(self) -> bool:
        """Whether the connection reads from its socket (not paused)."""
        return self.transport.producerState == "producing"


def result(d: Deferred[Any]) -> Any:
    """The result of a Deferred that has fired (its exception raised)."""
    assert d.called, "the Deferred has not fired"
    box: list[Any] = []
    d.addBoth(box.append)
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


@pytest.fixture
def ends() -> Ends:
    return Ends()


# -- reading ---------------------------------------------------------------------------


def test_a_connection_is_ready_once_connected(ends: Ends) -> None:
    assert result(ends.conn.ready) is ends.conn
    assert repr(ends.conn) == "<Connection to example.com:7 open>"


def test_read_gives_what_has_come_at_most_max_bytes_and_b_empty_at_the_end(
    ends: Ends,
) -> None:
    ends.receive(b"hello world")
    assert result(ends.conn.read(5)) == b"hello"
    assert result(ends.conn.read()) == b" world"
    waiting = ends.conn.read()
    assert not waiting.called
    ends.lose(ConnectionDone())
    assert result(waiting) == b""


def test_readline_waits_for_the_newline_across_reads_and_keeps_the_rest(
    ends: Ends,
) -> None:
    line = ends.conn.readline()
    ends.receive(b"GET / HT")
    assert not line.called
    ends.receive(b"TP/1.0\r\nHost: x\r\n")
    assert result(line) == b"GET / HTTP/1.0\r\n"
    assert result(ends.conn.readline()) == b"Host: x\r\n"


def test_readline_at_the_end_gives_the_last_partial_line_then_b_empty(
    ends: Ends,
) -> None:
    ends.receive(b"no newline")
    ends.lose(ConnectionDone())
    assert result(ends.conn.readline()) == b"no newline"
    assert result(ends.conn.readline()) == b""


def test_a_line_longer_than_max_length_is_an_error_holding_at_most_that_much(
    ends: Ends,
) -> None:
    line = ends.conn.readline(max_length=1000)
    ends.receive(b"x" * 999)
    assert not line.called
    ends.receive(b"x" * 10)
    with pytest.raises(
        net.TooLong,
        match=r"reading a line from example\.com:7: no end of line within 1000 bytes",
    ) as caught:
        result(line)
    assert caught.value.kind == "too long"
    assert caught.value.address == "example.com:7"


def test_a_line_of_exactly_max_length_with_its_newline_is_read(ends: Ends) -> None:
    ends.receive(b"x" * 9 + b"\n")
    assert result(ends.conn.readline(max_length=10)) == b"x" * 9 + b"\n"


def test_read_all_reads_to_the_end_and_fails_past_max_bytes(ends: Ends) -> None:
    whole = ends.conn.read_all(max_bytes=10)
    ends.receive(b"0123456789")
    assert not whole.called
    ends.lose(ConnectionDone())
    assert result(whole) == b"0123456789"
    other = Ends()
    too_much = other.conn.read_all(max_bytes=10)
    other.receive(b"0123456789x")
    with pytest.raises(net.TooLong, match="to its end: more than 10 bytes"):
        result(too_much)


def test_a_reset_fails_a_read_saying_so(ends: Ends) -> None:
    line = ends.conn.readline()
    ends.lose(ConnectionLost())
    with pytest.raises(net.Disconnected, match="the connection was reset") as caught:
        result(line)
    assert caught.value.kind == "reset"
    assert isinstance(caught.value, ConnectionResetError)


def test_one_read_at_a_time(ends: Ends) -> None:
    ends.conn.read()
    with pytest.raises(RuntimeError, match="a read is already waiting"):
        ends.conn.readline()


# -- the read buffer's cap: reading from the socket stops ------------------------------


def test_past_buffer_size_unread_the_connection_stops_reading_from_its_socket(
    ends: Ends,
) -> None:
    ends.receive(b"x" * (net.BUFFER_SIZE - 1))
    assert ends.reading
    ends.receive(b"x")
    assert not ends.reading
    ends.conn.read(net.BUFFER_SIZE)
    assert ends.reading


def test_a_readline_with_a_longer_cap_reads_on_up_to_its_cap_then_fails(
    ends: Ends,
) -> None:
    line = ends.conn.readline(max_length=200_000)
    ends.receive(b"x" * 150_000)
    assert ends.reading  # past the buffer's 64 KiB, but the line may be longer
    ends.receive(b"x" * 50_000)
    with pytest.raises(net.TooLong):
        result(line)
    assert not ends.reading  # 200 000 held, nobody reading: the socket waits


def test_an_endless_line_is_held_up_to_the_cap_never_more_than_one_chunk_past_it(
    ends: Ends,
) -> None:
    """What a peer sends while the socket is paused stays in the kernel."""
    line = ends.conn.readline(max_length=100_000)
    held = 0
    while ends.reading:
        ends.receive(b"y" * 65536)  # one read of Twisted's, at most
        held += 65536
    assert 100_000 <= held < 100_000 + 65536
    with pytest.raises(net.TooLong):
        result(line)


# -- timeouts: exact, on the clock -----------------------------------------------------


def test_a_read_times_out_after_the_connections_timeout_and_takes_nothing(
    ends: Ends,
) -> None:
    line = ends.conn.readline()
    ends.receive(b"half a li")
    ends.clock.advance(4.9)
    assert not line.called
    ends.clock.advance(0.1)
    with pytest.raises(
        net.NetworkTimeout,
        match=r"reading a line from example.com:7: timed out after 5 s",
    ) as caught:
        result(line)
    assert isinstance(caught.value, TimeoutError) and caught.value.kind == "timed out"
    ends.receive(b"ne\n")  # the connection goes on: nothing was lost
    assert result(ends.conn.readline()) == b"half a line\n"


def test_a_read_takes_its_own_timeout_or_none(ends: Ends) -> None:
    short = ends.conn.read(timeout=1)
    ends.clock.advance(1)
    with pytest.raises(net.NetworkTimeout, match="after 1 s"):
        result(short)
    forever = ends.conn.read(timeout=None)
    ends.clock.advance(3600)
    assert not forever.called
    assert ends.clock.getDelayedCalls() == []


def test_cancelling_a_read_leaves_the_data_for_the_next_and_stops_its_timer(
    ends: Ends,
) -> None:
    line = ends.conn.readline()
    ends.receive(b"par")
    line.cancel()
    assert ends.clock.getDelayedCalls() == []
    ends.receive(b"tial\n")
    assert result(ends.conn.readline()) == b"partial\n"


# -- writing: backpressure -------------------------------------------------------------


def test_a_write_is_done_at_once_while_twisteds_buffer_has_room(ends: Ends) -> None:
    assert result(ends.conn.write(b"ping\n")) is None
    assert ends.transport.value() == b"ping\n"


def test_a_write_waits_while_the_buffer_is_full_until_the_peer_takes_it(
    ends: Ends,
) -> None:
    """The connection is the transport's producer: Twisted pauses it when
    its buffer passes 64 KiB, resumes it when the peer has read."""
    assert ends.transport.producer is ends.conn.protocol
    ends.conn.protocol.pauseProducing()
    waiting = ends.conn.write(b"more")
    assert not waiting.called
    ends.conn.protocol.resumeProducing()
    assert result(waiting) is None


def test_a_write_the_peer_never_takes_times_out_saying_the_peer_is_not_reading(
    ends: Ends,
) -> None:
    ends.conn.protocol.pauseProducing()
    waiting = ends.conn.write(b"more", timeout=2)
    ends.clock.advance(2)
    with pytest.raises(
        net.NetworkTimeout,
        match=r"writing to example.com:7: timed out after 2 s \(the other end is "
        "not reading\\)",
    ):
        result(waiting)


def test_a_write_on_a_closed_connection_fails_saying_so(ends: Ends) -> None:
    ends.conn.close()
    with pytest.raises(net.Disconnected, match="the connection was closed here"):
        result(ends.conn.write(b"late"))
    with pytest.raises(TypeError, match="data must be bytes, not str"):
        ends.conn.write("text")  # type: ignore[arg-type]


# -- closing ---------------------------------------------------------------------------


def test_close_sends_what_is_buffered_then_aborts_if_the_peer_does_not_take_it(
    ends: Ends,
) -> None:
    closed = ends.conn.close()
    assert ends.transport.disconnecting  # loseConnection: flush, then close
    assert ends.transport.producer is None  # else Twisted would wait for it
    assert not closed.called
    ends.clock.advance(5)  # the connection's timeout
    assert ends.transport.disconnected  # abortConnection
    ends.lose(ConnectionLost())
    assert closed.called and ends.conn.closed


def test_close_fails_a_waiting_read_and_a_waiting_write(ends: Ends) -> None:
    line = ends.conn.readline()
    ends.conn.protocol.pauseProducing()
    write = ends.conn.write(b"x")
    ends.conn.close()
    for d in (line, write):
        with pytest.raises(net.Disconnected, match="closed here"):
            result(d)


def test_with_closes_the_connection(ends: Ends) -> None:
    with ends.conn as conn:
        assert conn is ends.conn and not conn.closed
    assert ends.conn.closed and ends.transport.disconnecting


def test_bad_arguments_are_refused_naming_the_call() -> None:
    conn = Ends().conn
    with pytest.raises(
        ValueError,
        match=r"Connection.readline\(\): max_length must "
        "be >= 1, not 0",
    ):
        conn.readline(max_length=0)
    with pytest.raises(TypeError, match="timeout must be a number of seconds or None"):
        conn.read(timeout="5")


# -- a connection belongs to its task --------------------------------------------------


def test_a_connection_is_aborted_when_its_task_is_cancelled_closed_when_it_fails() -> (
    None
):
    worker = Worker()
    for ending in ("cancel", "fail"):
        ends, gate = Ends(), Deferred[None]()

        def job(gate: Deferred[None] = gate) -> Any:
            yield gate

        task = worker.assign(job())
        task.deferred.addErrback(lambda failure: None)
        ends.conn.attach(task)
        worker.tick()
        if ending == "cancel":
            task.cancel()
        else:
            gate.errback(KeyError("oops"))
            worker.work()
        assert task.done, ending
        if ending == "cancel":
            assert ends.transport.disconnected  # abortConnection
        else:
            assert ends.transport.disconnecting and not ends.transport.disconnected


def test_a_connection_stays_open_when_its_task_returns_and_it_forgets_one_closed() -> (
    None
):
    worker = Worker()
    ends, closed_early = Ends(), Ends()

    def job() -> Any:
        yield

    task = worker.assign(job())
    ends.conn.attach(task)
    closed_early.conn.attach(task)
    closed_early.conn.close()
    closed_early.lose(ConnectionDone())
    worker.work()
    assert task.done and not ends.conn.closed and not ends.transport.disconnecting
