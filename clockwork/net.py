"""clockwork.net: TCP, TLS and HTTP for clockwork routines, on Twisted.

Every operation that waits returns a Deferred: ``yield`` it in a clockwork
generator, ``await`` it in ``async def``, or ``untwisted.run`` it from
blocking code.

    >>> from clockwork import net
    >>> def greet(conn):                      # a handler: one task per connection
    ...     name = yield conn.readline(max_length=100)
    ...     yield conn.write(b"hello " + name)
    >>> server = net.listen(0, greet)
    >>> def client():
    ...     with (yield net.connect("127.0.0.1", server.port, timeout=5)) as conn:
    ...         yield conn.write(b"world\\n")
    ...         return (yield conn.readline())
    >>> import untwisted
    >>> untwisted.run(client(), timeout=10)
    b'hello world\\n'
    >>> untwisted.run(server.close(), timeout=10)

- :func:`connect` gives a :class:`Connection`: ``write``, ``read``,
  ``readline`` (capped), ``read_all`` (capped), ``close``; a timeout on
  every wait; TLS verified by default (``tls=True``, ``ca_file=``), the
  peer's :class:`Certificate` on ``conn.certificate``.
- :func:`listen` runs a handler per connection, as a task, at most
  ``max_connections`` at once; :class:`Server` ``.port``, ``.close()``.
- :func:`request` makes an HTTP(S) request with Twisted's web client: a
  :class:`Response` whose body is read up to ``max_body`` (``truncated``
  says if it was cut).
- Every failure is a :class:`NetworkError`, with a ``kind`` and a message
  naming the other end: :class:`Refused`, :class:`NetworkTimeout` (an
  ``untwisted.Timeout``), :class:`DNSError`, :class:`TLSError`,
  :class:`Disconnected`, :class:`TooLong`.

See ``specs/networking.md`` for the whole story. Call from the reactor's
thread.
"""

from __future__ import annotations

from clockwork._connect import CONNECT_TIMEOUT, connect
from clockwork._http import MAX_BODY, REQUEST_TIMEOUT, Response, request
from clockwork._listen import Server, listen
from clockwork._neterrors import (
    Disconnected,
    DNSError,
    NetworkError,
    NetworkTimeout,
    Refused,
    TLSError,
    TooLong,
)
from clockwork._stream import BUFFER_SIZE, MAX_LINE, MAX_READ_ALL, Connection
from clockwork._tls import Certificate

__all__ = [
    "BUFFER_SIZE",
    "CONNECT_TIMEOUT",
    "MAX_BODY",
    "MAX_LINE",
    "MAX_READ_ALL",
    "REQUEST_TIMEOUT",
    "Certificate",
    "Connection",
    "DNSError",
    "Disconnected",
    "NetworkError",
    "NetworkTimeout",
    "Refused",
    "Response",
    "Server",
    "TLSError",
    "TooLong",
    "connect",
    "listen",
    "request",
]
