"""Peers for the tests of clockwork.net: servers that misbehave, ports where
nothing answers, and a reactor that counts what its connections read.

- :class:`Peer`: a TCP server on loopback, in threads on plain sockets (so
  it can do what no well-behaved server does: send without end, never read,
  trickle), that records each connection: what it received, what it sent,
  and whether the other end closed it.
- :func:`free_port` (nothing listens: refused), :func:`stuck_port` (a
  listener whose backlog is full: a connection attempt hangs).
- :class:`CountingReactor`: the real reactor, but every TCP connection made
  through it counts the bytes it reads, so that a test checks a cap as an
  amount read, not as a timing or a memory figure.

Every wait is bounded: the threads give up after ``timeout`` seconds.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

__all__ = [
    "CountingReactor",
    "Peer",
    "PeerConnection",
    "endless",
    "free_port",
    "listen_web",
    "stuck_port",
    "web_site",
]


@dataclass
class PeerConnection:
    """One connection a :class:`Peer` accepted.

    Attributes:
        received: What the client sent, as far as the behaviour read it.
        sent: Bytes the behaviour sent.
        closed: Set when the client closed the connection (a read got the
            end, or a send failed), or the behaviour ended.
    """

    sock: socket.socket
    received: bytearray = field(default_factory=bytearray)
    sent: int = 0
    closed: threading.Event = field(default_factory=threading.Event)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)
        self.sent += len(data)

    def recv_until(self, marker: bytes, limit: int = 1 << 20) -> bytes:
        """Read until ``marker`` has come (or the end); what came."""
        while marker not in self.received and len(self.received) < limit:
            data = self.sock.recv(65536)
            if not data:
                break
            self.received += data
        return bytes(self.received)

    def drain(self) -> None:
        """Read until the client closes; then mark the connection closed."""
        while True:
            data = self.sock.recv(65536)
            if not data:
                self.closed.set()
                return
            self.received += data


Behaviour = Callable[[PeerConnection], None]


class Peer:
    """A TCP server on 127.0.0.1 that runs ``behaviour`` for every
    connection, each in a thread; a behaviour's OSError (the client
    closed) marks the connection closed.

    Args:
        behaviour: What to do with a connection.
        timeout: Each socket operation gives up after this many seconds.
        receive_buffer: SO_RCVBUF of accepted sockets (small: the kernel
            then holds little of what a client sends unread).
    """

    def __init__(
        self,
        behaviour: Behaviour,
        timeout: float = 30,
        receive_buffer: int | None = None,
    ) -> None:
        self.connections: list[PeerConnection] = []
        self._behaviour = behaviour
        self._timeout = timeout
        self._server = socket.socket()
        if receive_buffer is not None:
            self._server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self.port: int = self._server.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._server.accept()
            except OSError:
                return
            connection = PeerConnection(sock)
            self.connections.append(connection)
            threading.Thread(
                target=self._serve, args=(connection,), daemon=True
            ).start()

    def _serve(self, connection: PeerConnection) -> None:
        connection.sock.settimeout(self._timeout)
        try:
            self._behaviour(connection)
        except OSError:  # the client closed or reset the connection
            pass
        finally:
            connection.closed.set()
            connection.sock.close()

    def all_closed(self, count: int) -> bool:
        """Whether ``count`` connections came and each is closed."""
        return len(self.connections) == count and all(
            c.closed.is_set() for c in self.connections
        )

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        for connection in self.connections:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)


def endless(chunk: bytes) -> Behaviour:
    """Send ``chunk`` for ever (until the client closes)."""

    def behaviour(connection: PeerConnection) -> None:
        while True:
            connection.send(chunk)

    return behaviour


def free_port() -> int:
    """A loopback port nothing listens on (connecting is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def stuck_port() -> Iterator[int]:
    """A loopback port where a connection attempt hangs: a listener with a
    backlog of 0 that already holds a connection it never accepts, so the
    kernel drops the next one's SYNs (Linux, ``tcp_abort_on_overflow=0``)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port: int = listener.getsockname()[1]
    holder = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        yield port
    finally:
        holder.close()
        listener.close()


class _Counter(ProtocolWrapper):
    factory: _CountingFactory

    def dataReceived(self, data: bytes) -> None:
        self.factory.counter.received += len(data)
        super().dataReceived(data)


class _CountingFactory(WrappingFactory):
    protocol = _Counter
    noisy = False

    def __init__(self, wrapped: Any, counter: CountingReactor) -> None:
        super().__init__(wrapped)
        self.counter = counter


class CountingReactor:
    """The reactor ``reactor``, whose ``connectTCP`` connections count the
    bytes they read (TLS records included) in :attr:`received`; all else is
    the reactor's own."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.received = 0

    def connectTCP(self, host: str, port: int, factory: Any, *a: Any, **kw: Any) -> Any:
        return self._reactor.connectTCP(
            host, port, _CountingFactory(factory, self), *a, **kw
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


# -- an HTTP server: Twisted's own, on loopback ----------------------------------------


def web_site() -> Any:
    """A ``twisted.web`` site for the HTTP tests and the guide:

    - ``/``: ``hello`` (text/plain);
    - ``/status/N``: status N, its phrase as the body;
    - ``/echo``: the request as JSON (method, headers by lower-case name,
      body);
    - ``/redirect/N?to=URL``: status N (301, 302, 303, 307, 308) to URL;
    - ``/loop``: a redirect to itself;
    - ``/never``: no answer, ever;
    - ``/endless``: 200, then a body without end (64 KiB a reactor turn).
    """
    import json

    from twisted.web import resource, server

    class Hello(resource.Resource):
        isLeaf = True

        def render(self, request: Any) -> bytes:
            request.setHeader(b"content-type", b"text/plain")
            return b"hello\n"

    class Status(resource.Resource):
        isLeaf = True

        def render(self, request: Any) -> bytes:
            code = int(request.postpath[0])
            request.setResponseCode(code)
            request.setHeader(b"content-type", b"text/plain")
            return bytes(request.code_message)

    class Echo(resource.Resource):
        isLeaf = True

        def render(self, request: Any) -> bytes:
            request.setHeader(b"content-type", b"application/json")
            headers = {
                name.decode().lower(): values[0].decode()
                for name, values in request.requestHeaders.getAllRawHeaders()
            }
            seen = {
                "method": request.method.decode(),
                "headers": headers,
                "body": request.content.read().decode(),
            }
            return json.dumps(seen).encode()

    class Redirect(resource.Resource):
        isLeaf = True

        def render(self, request: Any) -> bytes:
            request.setResponseCode(int(request.postpath[0]))
            request.setHeader(b"location", request.args[b"to"][0])
            return b"moved\n"

    class Loop(resource.Resource):
        isLeaf = True

        def render(self, request: Any) -> bytes:
            request.setResponseCode(302)
            request.setHeader(b"location", b"/loop")
            return b""

    class Never(resource.Resource):
        isLeaf = True

        def render(self, request: Any) -> Any:
            return server.NOT_DONE_YET

    class Endless(resource.Resource):
        isLeaf = True

        def render(self, request: Any) -> Any:
            from tests.support import global_reactor

            reactor = global_reactor()

            def more() -> None:
                if request.finished or request.channel is None:
                    return
                request.write(b"x" * 65536)
                reactor.callLater(0, more)

            more()
            return server.NOT_DONE_YET

    class Quiet(server.Site):
        noisy = False

        def log(self, request: Any) -> None:
            pass  # no access log in the tests' output

    root = resource.Resource()
    pages: dict[bytes, Any] = {
        b"": Hello(),
        b"status": Status(),
        b"echo": Echo(),
        b"redirect": Redirect(),
        b"loop": Loop(),
        b"never": Never(),
        b"endless": Endless(),
    }
    for name, page in pages.items():
        root.putChild(name, page)
    return Quiet(root)


def listen_web(certificate: Path | None = None) -> Any:
    """Serve :func:`web_site` on 127.0.0.1 (a port the system chooses): with
    a ``certificate`` (a PEM file, certificate and key), over TLS. Returns
    Twisted's listening port (``getHost().port``, ``stopListening()``).
    """
    from clockwork._tls import server_options
    from tests.support import global_reactor

    reactor = global_reactor()
    site = web_site()
    if certificate is None:
        return reactor.listenTCP(0, site, interface="127.0.0.1")
    # The site offers its protocols (h2, http/1.1) for ALPN; Twisted 25.5
    # then sets the negotiation on a TLS context already used for a
    # connection, which recent pyOpenSSL refuses (the handshake fails).
    # Wrapped, the factory offers none: plain HTTP/1.1 over TLS.
    return reactor.listenSSL(
        0, WrappingFactory(site), server_options(certificate), interface="127.0.0.1"
    )
