"""``clockwork.net.listen``: a TCP server whose every connection is a task.

Each accepted connection is handed to the handler, a generator function (or
``async def``), which runs as a clockwork task of the worker that called
``listen``. The server holds the connections and their tasks, and bounds
them:

- at most ``max_connections`` at once: one past that is closed as soon as
  it is accepted (Twisted's listening port closes the socket when the
  factory builds no protocol), counted in :attr:`Server.refused` and
  logged once per burst, at most once a minute;
- a handler's connection is closed when the handler ends, however it ends
  (aborted if it was cancelled), and a handler that fails is logged: with
  its traceback, or in one line for a network error (the peer went away);
- ``close()`` stops listening and cancels every handler (their ``finally``
  blocks run), so nothing of the server is left.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.protocol import Factory
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from clockwork._connect import check_port
from clockwork._neterrors import NetworkError
from clockwork._stream import Connection, check_seconds, format_address
from clockwork._task import Task
from clockwork._tls import server_options
from clockwork._worker import Worker, current_worker

__all__ = ["Handler", "Server", "listen"]

_log = Logger(namespace="clockwork.net")

#: What ``listen`` runs for each connection.
Handler = Callable[[Connection], Generator[Any, Any, Any] | Coroutine[Any, Any, Any]]

#: Seconds between two warnings that connections are being refused.
_WARN_EVERY = 60.0


class _ServerFactory(Factory):
    noisy = False  # no "Starting factory" lines

    def __init__(self, server: Server) -> None:
        self._server = server

    def buildProtocol(self, addr: Any) -> Any:
        return self._server.accepted(addr)


class Server:
    """A listening TCP server, made by ``clockwork.net.listen``.

    Attributes:
        host: The address it listens on.
        port: Its port (the one the system chose, for ``listen(0, ...)``).
        max_connections: The most connections handled at once.
        refused: Connections closed at once because there were already
            ``max_connections``.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        host: str,
        max_connections: int,
        timeout: float | None,
        tls: bool,
        worker: Worker,
        reactor: Any,
    ) -> None:
        self.host = host
        self.port = 0
        self.max_connections = max_connections
        self.refused = 0
        self._handler = handler
        self._timeout = timeout
        self._tls = tls
        self._worker = worker
        self._reactor = reactor
        self._listening: Any = None
        self._open: dict[Connection, Task | None] = {}
        self._warned: float | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._open)} connections"
        return f"<Server {self.address} {state}>"

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def address(self) -> str:
        """``host:port``."""
        return format_address(self.host, self.port)

    @property
    def connections(self) -> int:
        """Connections open now (each with its handler, or in its TLS handshake)."""
        return len(self._open)

    def close(self) -> Deferred[None]:
        """Stop listening; cancel every handler and abort its connection.

        Yield the Deferred to wait until the port and every connection are
        closed. Closing twice is harmless.
        """
        waits: list[Deferred[Any]] = []
        if not self._closed:
            self._closed = True
            if self._listening is not None:
                stopped = self._listening.stopListening()
                if isinstance(stopped, Deferred):
                    waits.append(stopped)
        for connection, task in list(self._open.items()):
            waits.append(connection.when_closed())
            if task is not None:
                task.cancel()  # its stack closes, then its connection is aborted
            connection.abort()
        done: Deferred[Any] = DeferredList(waits, consumeErrors=True)
        return done.addCallback(lambda _: None)

    # -- for listen --------------------------------------------------------------

    def start(self, port: int, certificate: str | os.PathLike[str] | None) -> None:
        """For listen: listen on ``port`` (TLS with ``certificate``)."""
        from twisted.internet.error import CannotListenError

        factory = _ServerFactory(self)
        try:
            if certificate is None:
                self._listening = self._reactor.listenTCP(
                    port, factory, interface=self.host
                )
            else:
                self._listening = self._reactor.listenSSL(
                    port, factory, server_options(certificate), interface=self.host
                )
        except CannotListenError as e:
            reason = e.socketError if e.socketError is not None else e
            raise NetworkError(
                f"cannot listen on {format_address(self.host, port)}: {reason}",
                kind="cannot listen",
                address=format_address(self.host, port),
            ) from e
        self.port = int(self._listening.getHost().port)

    def accepted(self, addr: Any) -> Any:
        """For the factory: a connection came from ``addr``; its protocol,
        or None to close it (the server is full or closed)."""
        if self._closed:
            return None
        if len(self._open) >= self.max_connections:
            self.refused += 1
            now = self._reactor.seconds()
            if self._warned is None or now - self._warned >= _WARN_EVERY:
                self._warned = now
                _log.warn(
                    "{address}: {limit} connections open, the most allowed "
                    "(max_connections); new ones are refused ({refused} so far)",
                    address=self.address,
                    limit=self.max_connections,
                    refused=self.refused,
                )
            return None
        connection = Connection(
            format_address(str(addr.host), int(addr.port)),
            reactor=self._reactor,
            timeout=self._timeout,
            tls=self._tls,
        )
        self._open[connection] = None
        connection.when_closed().addCallback(lambda _: self._open.pop(connection, None))
        # A TLS handshake that fails ends the connection before any handler
        # sees it: nothing to report but its end.
        connection.ready.addCallbacks(self._serve, lambda _: None)
        if self._tls and self._timeout is not None:
            # A client that connects and never says hello must not hold one
            # of the max_connections for ever.
            timer = self._reactor.callLater(
                self._timeout, self._handshake_expired, connection
            )
            connection.ready.addBoth(self._stop_timer, timer)
        return connection.protocol

    def _handshake_expired(self, connection: Connection) -> None:
        if connection.ready.called:
            return
        _log.info(
            "{address}: no TLS handshake from {peer} within {timeout} s; "
            "connection closed",
            address=self.address,
            peer=connection.address,
            timeout=self._timeout,
        )
        connection.abort()

    @staticmethod
    def _stop_timer(result: object, timer: Any) -> object:
        if timer.active():
            timer.cancel()
        return result

    def _serve(self, connection: Connection) -> None:
        try:
            task = self._worker.assign(
                self._handler(connection),
                name=f"{_name(self._handler)} {connection.address}",
            )
        except Exception:
            _log.failure(
                "{address}: the handler could not start for {peer}",
                level=LogLevel.error,
                address=self.address,
                peer=connection.address,
            )
            connection.abort()
            return
        if connection in self._open:
            self._open[connection] = task
        connection.attach(task)  # aborted if the handler is cancelled
        task.when_finished(lambda _: connection.close())
        task.deferred.addErrback(self._handler_failed, connection)

    def _handler_failed(self, failure: Failure, connection: Connection) -> None:
        if failure.check(CancelledError):
            return  # the server is closing
        if failure.check(NetworkError):
            # The peer went away, was too slow, sent too much: the life of a
            # server, said in one line, not a traceback.
            _log.info(
                "{address}: the handler for {peer} ended: {error}",
                address=self.address,
                peer=connection.address,
                error=failure.getErrorMessage(),
            )
            return
        _log.failure(
            "{address}: the handler for {peer} failed",
            failure,
            level=LogLevel.error,
            address=self.address,
            peer=connection.address,
        )


def _name(handler: Handler) -> str:
    name = getattr(handler, "__qualname__", None)
    return name if isinstance(name, str) else type(handler).__name__


def listen(
    port: int,
    handler: Handler,
    host: str = "127.0.0.1",
    *,
    max_connections: int = 100,
    timeout: float | None = 60.0,
    certificate: str | os.PathLike[str] | None = None,
    reactor: Any = None,
) -> Server:
    """Listen on ``host:port``; run ``handler(connection)`` as a task for each
    connection. Returns the :class:`Server` at once (listening is not a wait).

    Args:
        port: The port, or 0 for one the system chooses (``server.port``).
        handler: A generator function (or ``async def``) taking the
            :class:`Connection`. Its tasks belong to the worker running the
            caller (outside tasks, the default one, which runs whenever the
            reactor does). The connection is closed when it ends.
        host: The address to listen on: loopback unless you say otherwise.
        max_connections: The most connections handled at once; one past
            that is closed at once (and counted in ``server.refused``).
        timeout: Each connection's :attr:`~Connection.timeout`: how long
            one of its reads or writes may wait, and with TLS how long its
            handshake may take. None: no limit.
        certificate: Speak TLS with this PEM file (the certificate, any
            intermediate ones, the private key).
        reactor: Default: the reactor of the worker running the caller.

    Raises:
        NetworkError: cannot listen there (kind ``"cannot listen"``: the
            port is taken, or needs privileges).
        TypeError, ValueError: a bad argument.
        OSError: ``certificate`` cannot be read.
    """
    what = "clockwork.net.listen()"
    port = check_port(what, port, zero=True)
    if not callable(handler):
        raise TypeError(
            f"{what}: handler must be a generator function, not {handler!r}"
        )
    if not isinstance(host, str) or not host:
        raise TypeError(f"{what}: host must be a non-empty str, not {host!r}")
    if (
        isinstance(max_connections, bool)
        or not isinstance(max_connections, int)
        or max_connections < 1
    ):
        raise ValueError(
            f"{what}: max_connections must be an int >= 1, not {max_connections!r}"
        )
    seconds = check_seconds(what, timeout)
    worker = current_worker()
    server = Server(
        handler,
        host=host,
        max_connections=max_connections,
        timeout=seconds,
        tls=certificate is not None,
        worker=worker,
        reactor=worker.reactor if reactor is None else reactor,
    )
    server.start(port, certificate)
    return server
