"""A TCP (or TLS) connection whose reads and writes a clockwork routine yields.

:class:`Connection` is what ``clockwork.net.connect`` gives and what a
``clockwork.net.listen`` handler is handed. Each operation returns a
Deferred, so the same call works with ``yield`` in a clockwork generator,
``await`` in ``async def`` and ``untwisted.run`` from blocking code.

Everything it holds is bounded:

- **Reading.** What arrives waits in a buffer until a read takes it. Past
  :attr:`Connection.buffer_size` bytes (64 KiB), or past what the waiting
  read needs to decide (a ``readline``'s ``max_length``, a ``read_all``'s
  ``max_bytes``), the connection stops reading from the socket
  (``pauseProducing``), so a peer that sends faster than the routine reads
  fills the kernel's buffers and then waits: memory stays at the buffer
  plus one read of the socket.
- **Writing.** The connection is the transport's streaming producer: when
  Twisted's write buffer is full, ``write`` returns a Deferred that fires
  only once the peer has taken enough of it, so a routine that yields its
  writes cannot bloat memory writing to a slow peer.
- **Waiting.** Every operation has a timeout (the connection's
  :attr:`Connection.timeout` unless given), and failing on expiry with
  :class:`~clockwork.net.NetworkTimeout` leaves the connection as it was: a
  read that timed out took nothing from the buffer.
- **Closing.** ``close`` sends what is buffered, then closes; a peer that
  does not take it within the timeout is cut off (``abortConnection``). A
  connection belongs to the task that opened it: when that task is
  cancelled, the connection is aborted; when it fails, closed (see
  :meth:`Connection.attach`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.error import ConnectionDone as ConnectionDoneError
from twisted.internet.interfaces import IHandshakeListener, IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer  # type: ignore[import-untyped]

from clockwork._neterrors import Disconnected, NetworkError, NetworkTimeout, TooLong
from clockwork._networds import network_error
from clockwork._task import Task
from clockwork._tls import Certificate, peer_certificate

__all__ = [
    "BUFFER_SIZE",
    "CLOSE_GRACE",
    "MAX_LINE",
    "MAX_READ_ALL",
    "Connection",
    "check_seconds",
    "format_address",
]

#: Bytes a connection keeps unread before it stops reading from the socket.
BUFFER_SIZE = 64 * 1024

#: ``readline``'s default ``max_length``.
MAX_LINE = 64 * 1024

#: ``read_all``'s default ``max_bytes``.
MAX_READ_ALL = 1024 * 1024

#: Seconds ``close`` gives the peer to take what is buffered, when the
#: connection has no timeout of its own.
CLOSE_GRACE = 10.0

# "The connection's own timeout", as a default argument.
_OWN: Any = object()


def check_seconds(what: str, seconds: object) -> float | None:
    """``seconds`` as a float (None stays None), or a clear error."""
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError(
            f"{what}: timeout must be a number of seconds or None, not {seconds!r}"
        )
    if not seconds >= 0:
        raise ValueError(f"{what}: timeout must be >= 0 seconds, not {seconds!r}")
    return float(seconds)


def _check_size(what: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what}: {name} must be an int, not {value!r}")
    if value < 1:
        raise ValueError(f"{what}: {name} must be >= 1, not {value!r}")
    return value


def format_address(host: str, port: int) -> str:
    """``host:port``; an IPv6 address in brackets (``[::1]:80``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Read:
    """A read waiting for enough data: ``kind`` is ``"some"`` (any bytes,
    at most ``limit``), ``"line"`` (up to a newline within ``limit`` bytes)
    or ``"all"`` (to the end, at most ``limit`` bytes)."""

    __slots__ = ("deferred", "doing", "kind", "limit", "timer")

    def __init__(self, kind: str, limit: int, doing: str) -> None:
        self.kind = kind
        self.limit = limit
        self.doing = doing
        self.deferred: Deferred[bytes] = Deferred()
        self.timer: Any = None

    @property
    def needs(self) -> int:
        """Bytes the buffer may need to hold for this read to be decided."""
        return {"some": 1, "line": self.limit, "all": self.limit + 1}[self.kind]


@implementer(IHandshakeListener, IPushProducer)
class _Protocol(Protocol):
    """Twisted's side of a :class:`Connection`: passes every event on.

    It is also the producer registered on the transport, so that Twisted
    says when its write buffer is full (``pauseProducing``) and when it has
    room again (``resumeProducing``).
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def connectionMade(self) -> None:
        self.connection.transport_made(self.transport)

    def handshakeCompleted(self) -> None:
        self.connection.handshake_completed()

    def dataReceived(self, data: bytes) -> None:
        self.connection.data_received(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connection.connection_lost(reason)

    def pauseProducing(self) -> None:
        self.connection.writes_paused(True)

    def resumeProducing(self) -> None:
        self.connection.writes_paused(False)

    def stopProducing(self) -> None:
        pass  # connection_lost follows, and says why


class Connection:
    """A TCP connection, TLS or not, whose operations a routine yields.

    Made by ``clockwork.net.connect`` (or handed to a ``listen`` handler);
    the constructor and the methods under "for connect and listen" are
    theirs. Call from the reactor's thread.

    One read at a time may wait (a second is a ``RuntimeError``); writes
    may be yielded or not, but a routine that writes much should yield
    them, which is what keeps its memory bounded.

    Attributes:
        address: The other end as asked for: ``"example.com:443"`` for a
            connection made by name, the peer's address for one accepted.
        timeout: Seconds each read or write may wait when not given its
            own, None for no limit. Settable.
        certificate: For TLS, the certificate the other end showed (after
            the handshake); None without TLS.
        buffer_size: Bytes kept unread before reading from the socket
            stops (:data:`BUFFER_SIZE`). Settable.
        ready: For connect and listen: fires with the connection once it
            is connected (and, for TLS, the handshake done); fails with the
            :class:`~clockwork.net.NetworkError` if it is lost first.
        protocol: For connect and listen: the Twisted protocol to connect.
    """

    def __init__(
        self,
        address: str,
        *,
        reactor: Any,
        timeout: float | None,
        tls: bool,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.certificate: Certificate | None = None
        self.buffer_size = BUFFER_SIZE
        self.ready: Deferred[Connection] = Deferred()
        self.protocol = _Protocol(self)
        self._reactor = reactor
        self._tls = tls
        self._transport: Any = None
        self._buffer = bytearray()
        self._scanned = 0  # how much of the buffer is known to hold no b"\n"
        self._ended: Failure | None = None  # why it ended; None while open
        self._closing = False  # close() or abort() was called here
        self._read: _Read | None = None
        self._reading_paused = False
        self._writes_paused = False
        self._writers: list[tuple[Deferred[None], Any]] = []
        self._on_close: list[Deferred[None]] = []
        self._close_timer: Any = None
        self._forget_owner: Callable[[], None] | None = None

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open" if self.ready.called else "opening"
        return f"<Connection to {self.address} {state}>"

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once it was closed here (``close``/``abort``) or by the peer."""
        return self._closing or self._ended is not None

    @property
    def peer(self) -> tuple[str, int] | None:
        """The address connected to, ``(ip, port)``; None before connecting."""
        if self._transport is None:
            return None
        peer = self._transport.getPeer()
        return (str(peer.host), int(peer.port))

    # -- reading ------------------------------------------------------------

    def read(
        self, max_bytes: int = BUFFER_SIZE, timeout: Any = _OWN
    ) -> Deferred[bytes]:
        """Up to ``max_bytes`` bytes, as soon as there are any; ``b""`` at
        the end (the peer closed).

        Raises (in the Deferred):
            NetworkTimeout: nothing came within ``timeout`` seconds.
            Disconnected: the connection was reset, or closed here.
        """
        limit = _check_size("Connection.read()", "max_bytes", max_bytes)
        return self._start_read("some", limit, f"reading from {self.address}", timeout)

    def readline(
        self, max_length: int = MAX_LINE, timeout: Any = _OWN
    ) -> Deferred[bytes]:
        """The next line, up to and including its ``b"\\n"``.

        At the end, what is left without a newline (``b""`` if nothing).
        A line of more than ``max_length`` bytes (newline included) is an
        error, not memory: at most ``max_length`` bytes of it are held.

        Raises (in the Deferred):
            TooLong: no newline within ``max_length`` bytes (they stay
                unread; close the connection).
            NetworkTimeout: no whole line came within ``timeout`` seconds.
            Disconnected: the connection was reset, or closed here.
        """
        limit = _check_size("Connection.readline()", "max_length", max_length)
        return self._start_read(
            "line", limit, f"reading a line from {self.address}", timeout
        )

    def read_all(
        self, max_bytes: int = MAX_READ_ALL, timeout: Any = _OWN
    ) -> Deferred[bytes]:
        """Everything until the peer closes the connection.

        Raises (in the Deferred):
            TooLong: the peer sent more than ``max_bytes`` bytes (they stay
                unread; close the connection).
            NetworkTimeout: the peer did not close within ``timeout``
                seconds.
            Disconnected: the connection was reset, or closed here.
        """
        limit = _check_size("Connection.read_all()", "max_bytes", max_bytes)
        return self._start_read(
            "all", limit, f"reading from {self.address} to its end", timeout
        )

    def _start_read(
        self, kind: str, limit: int, doing: str, timeout: Any
    ) -> Deferred[bytes]:
        seconds = self._timeout_for(doing, timeout)
        if self._read is not None:
            raise RuntimeError(
                f"{doing}: a read is already waiting on this connection "
                "(one read at a time)"
            )
        read = _Read(kind, limit, doing)
        self._read = read
        self._serve_read()
        if self._read is read:  # still waiting
            read.deferred = Deferred(lambda _: self._withdraw(read))
            if seconds is not None:
                read.timer = self._reactor.callLater(
                    seconds, self._read_expired, read, seconds
                )
            self._flow()
        return read.deferred

    def _withdraw(self, read: _Read) -> None:
        # Cancelled (its task was, say): the data stays for the next read.
        if self._read is read:
            self._read = None
            self._stop_timer(read.timer)
            self._flow()

    def _read_expired(self, read: _Read, seconds: float) -> None:
        if self._read is not read:
            return
        read.timer = None
        self._finish_read(
            Failure(
                NetworkTimeout(
                    f"{read.doing}: timed out after {seconds:g} s",
                    address=self.address,
                )
            )
        )

    def _finish_read(self, result: bytes | Failure) -> None:
        read, self._read = self._read, None
        assert read is not None
        self._stop_timer(read.timer)
        self._flow()
        if isinstance(result, Failure):
            read.deferred.errback(result)
        else:
            read.deferred.callback(result)

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        self._scanned = 0
        return data

    def _serve_read(self) -> None:
        """Answer the waiting read if the buffer (or the end) decides it."""
        read = self._read
        if read is None:
            return
        if self._closing:
            return self._finish_read(Failure(self._closed_here(read.doing)))
        buffer = self._buffer
        if read.kind == "some":
            if buffer:
                return self._finish_read(self._take(read.limit))
        elif read.kind == "line":
            newline = buffer.find(b"\n", self._scanned, read.limit)
            if newline >= 0:
                return self._finish_read(self._take(newline + 1))
            self._scanned = min(len(buffer), read.limit)
            if len(buffer) >= read.limit:
                return self._finish_read(
                    Failure(
                        TooLong(
                            f"{read.doing}: no end of line within {read.limit} bytes",
                            address=self.address,
                        )
                    )
                )
        elif len(buffer) > read.limit:
            return self._finish_read(
                Failure(
                    TooLong(
                        f"{read.doing}: more than {read.limit} bytes",
                        address=self.address,
                    )
                )
            )
        if self._ended is None:
            return None  # wait for more
        if not self._ended.check(ConnectionDoneError):
            return self._finish_read(
                Failure(network_error(self._ended, read.doing, self.address))
            )
        return self._finish_read(self._take(len(buffer)))

    def _flow(self) -> None:
        """Stop or resume reading from the socket, as the buffer is full or not."""
        if self._transport is None or self._ended is not None:
            return
        needs = self._read.needs if self._read is not None else 0
        full = len(self._buffer) >= max(self.buffer_size, needs)
        if full and not self._reading_paused:
            self._reading_paused = True
            self._transport.pauseProducing()
        elif not full and self._reading_paused:
            self._reading_paused = False
            self._transport.resumeProducing()

    # -- writing -----------------------------------------------------------

    def write(self, data: bytes, timeout: Any = _OWN) -> Deferred[None]:
        """Send ``data``. The Deferred fires at once if Twisted's buffer has
        room; else once the peer has taken enough of it.

        Raises:
            TypeError: ``data`` is not bytes.
            (in the Deferred) NetworkTimeout: the buffer stayed full for
                ``timeout`` seconds (the peer is not reading); the data is
                still buffered.
            (in the Deferred) Disconnected: the connection is closed, or
                was lost before the buffer emptied.
        """
        doing = f"writing to {self.address}"
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"{doing}: data must be bytes, not {type(data).__name__}")
        seconds = self._timeout_for(doing, timeout)
        if self.closed or self._transport is None:
            return fail(self._lost_error(doing))
        self._transport.write(bytes(data))
        if not self._writes_paused:
            return succeed(None)
        waiter: Deferred[None] = Deferred(lambda d: self._forget_writer(d))
        timer = None
        if seconds is not None:
            timer = self._reactor.callLater(
                seconds, self._write_expired, waiter, doing, seconds
            )
        self._writers.append((waiter, timer))
        return waiter

    def _forget_writer(self, waiter: Deferred[None]) -> None:
        for entry in self._writers:
            if entry[0] is waiter:
                self._writers.remove(entry)
                self._stop_timer(entry[1])
                return

    def _write_expired(
        self, waiter: Deferred[None], doing: str, seconds: float
    ) -> None:
        self._writers = [entry for entry in self._writers if entry[0] is not waiter]
        waiter.errback(
            NetworkTimeout(
                f"{doing}: timed out after {seconds:g} s "
                "(the other end is not reading)",
                address=self.address,
            )
        )

    def _release_writers(self, error: BaseException | None) -> None:
        writers, self._writers = self._writers, []
        for waiter, timer in writers:
            self._stop_timer(timer)
            if error is None:
                waiter.callback(None)
            else:
                waiter.errback(error)

    # -- closing -------------------------------------------------------------

    def close(self, timeout: Any = _OWN) -> Deferred[None]:
        """Close the connection: send what is buffered, then close. If the
        peer has not taken it within ``timeout`` seconds (the connection's
        own, or :data:`CLOSE_GRACE` if it has none), abort instead.

        A read or write waiting fails with :class:`Disconnected`. Closing
        twice is harmless. Yielding the Deferred waits until it is closed.
        """
        seconds = self._timeout_for("Connection.close()", timeout)
        d = self.when_closed()
        if self._closing or self._ended is not None:
            return d
        self._closing = True
        self._fail_waiters()
        if self._transport is None:
            return d
        self._transport.unregisterProducer()  # else loseConnection waits for it
        self._transport.loseConnection()
        grace = CLOSE_GRACE if seconds is None else seconds
        self._close_timer = self._reactor.callLater(grace, self.abort)
        return d

    def when_closed(self) -> Deferred[None]:
        """A Deferred that fires (with None) once the connection is gone,
        closed by either end or lost; at once if it is already."""
        d: Deferred[None] = Deferred()
        if self._ended is not None:
            d.callback(None)
        else:
            self._on_close.append(d)
        return d

    def abort(self) -> None:
        """Close the connection at once, dropping what is buffered
        (``abortConnection``). A read or write waiting fails."""
        if self._ended is not None:
            return
        self._closing = True
        self._fail_waiters()
        if self._transport is not None:
            self._transport.abortConnection()

    def _fail_waiters(self) -> None:
        if self._read is not None:
            self._finish_read(Failure(self._closed_here(self._read.doing)))
        self._release_writers(self._closed_here(f"writing to {self.address}"))

    def _closed_here(self, doing: str) -> Disconnected:
        return Disconnected(
            f"{doing}: the connection was closed here", address=self.address
        )

    def _lost_error(self, doing: str) -> NetworkError:
        if self._closing or self._ended is None:
            return self._closed_here(doing)
        if self._ended.check(ConnectionDoneError):
            return Disconnected(
                f"{doing}: the other end closed the connection", address=self.address
            )
        return network_error(self._ended, doing, self.address)

    # -- ownership -----------------------------------------------------------

    def attach(self, task: Task | None) -> None:
        """The connection belongs to ``task`` (None: to nobody): if the task
        is cancelled while the connection is open, it is aborted; if it
        fails, it is closed. (When the task returns, the connection stays
        open: it may be what the task returns.) ``connect`` attaches a
        connection to the task that called it."""
        if self._forget_owner is not None:
            self._forget_owner()
            self._forget_owner = None
        if task is not None and not self.closed:
            self._forget_owner = task.when_finished(self._owner_finished)

    def _owner_finished(self, error: BaseException | None) -> None:
        self._forget_owner = None
        if isinstance(error, CancelledError):
            self.abort()  # stop now
        elif error is not None:
            self.close()  # what was written still goes, within the timeout

    # -- for connect and listen -------------------------------------------------

    def transport_made(self, transport: Any) -> None:
        """For the protocol: connected (TLS: the handshake begins)."""
        self._transport = transport
        transport.registerProducer(self.protocol, True)
        if not self._tls:
            self.ready.callback(self)

    def handshake_completed(self) -> None:
        """For the protocol: the TLS handshake is done and verified."""
        self.certificate = self._peer_certificate()
        if getattr(self._transport, "disconnecting", False):
            # Twisted before 26 checks the host name once the handshake is
            # done, and tells of the handshake even when that check has
            # just aborted the connection: connection_lost says why.
            return
        if not self.ready.called:
            self.ready.callback(self)

    def data_received(self, data: bytes) -> None:
        """For the protocol: bytes came."""
        if self._closing:
            return  # closed here: nobody will read them
        self._buffer += data
        self._serve_read()
        self._flow()

    def writes_paused(self, paused: bool) -> None:
        """For the protocol: Twisted's write buffer is full, or has room again."""
        self._writes_paused = paused
        if not paused:
            self._release_writers(None)

    def connection_lost(self, reason: Failure) -> None:
        """For the protocol: the connection is gone, for ``reason``."""
        self._ended = reason
        self._stop_timer(self._close_timer)
        self._close_timer = None
        if self._forget_owner is not None:
            self._forget_owner()
            self._forget_owner = None
        if not self.ready.called:
            # Lost while connecting or during the TLS handshake.
            self.ready.errback(
                network_error(
                    reason,
                    f"connecting to {self.address}",
                    self.address,
                    self._peer_certificate(),
                )
            )
        if self._read is not None:
            self._serve_read()
        self._release_writers(self._lost_error(f"writing to {self.address}"))
        waiting, self._on_close = self._on_close, []
        for d in waiting:
            d.callback(None)

    # -- helpers -----------------------------------------------------------------

    def _peer_certificate(self) -> Certificate | None:
        if not self._tls or self._transport is None:
            return None
        return peer_certificate(self._transport)

    def _timeout_for(self, doing: str, timeout: Any) -> float | None:
        return check_seconds(doing, self.timeout if timeout is _OWN else timeout)

    @staticmethod
    def _stop_timer(timer: Any) -> None:
        if timer is not None and timer.active():
            timer.cancel()
