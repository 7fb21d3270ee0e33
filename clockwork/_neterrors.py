"""What can go wrong on the network, in words: clockwork.net's exceptions.

Every failure of :mod:`clockwork.net` is a :class:`NetworkError`, an
:class:`OSError` like the standard library's socket errors, whose ``kind``
says in a word or two what happened (``"refused"``, ``"timed out"``,
``"DNS"``, ``"TLS"``, ...) and whose message names the other end
(``host:port``, or the URL) and the reason. The common kinds have classes of
their own, each also the matching builtin, so ``except
ConnectionRefusedError`` and ``except TimeoutError`` work as they do around
a plain socket; a timeout is an :class:`untwisted.Timeout`, the one timeout
class of untwisted, clockwork and procwork.

This module imports nothing from Twisted: ``import clockwork`` gets
:class:`NetworkError` without loading the network code. Turning Twisted's
failures into these is :mod:`clockwork._networds`.
"""

from __future__ import annotations

import untwisted

__all__ = [
    "DNSError",
    "Disconnected",
    "NetworkError",
    "NetworkTimeout",
    "Refused",
    "TLSError",
    "TooLong",
]


class NetworkError(OSError):
    """A network operation of clockwork failed.

    Args:
        message: What happened, naming the other end and the reason.
        kind: The failure in a word or two, for a check's verdict or a
            metric's label. Each subclass has its own; this base class is
            used for the rest: ``"unreachable"`` (no route to the host),
            ``"cannot listen"``, ``"redirects"`` (too many), ``"error"``.
        address: The other end: ``"host:port"``, or a URL.

    Attributes:
        kind: See above.
        address: See above.
    """

    default_kind = "error"

    def __init__(
        self, message: str, *, kind: str | None = None, address: str | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind if kind is not None else self.default_kind
        self.address = address

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[object, ...]:
        # OSError pickles its args only; keep the keywords too.
        return (_rebuild, (type(self), str(self), self.kind, self.address))


def _rebuild(
    cls: type[NetworkError], message: str, kind: str, address: str | None
) -> NetworkError:
    return cls(message, kind=kind, address=address)


class Refused(NetworkError, ConnectionRefusedError):
    """Nothing listens there: the connection was refused (kind ``"refused"``)."""

    default_kind = "refused"


class NetworkTimeout(NetworkError, untwisted.Timeout):
    """Connecting, a read, a write or a request took longer than its timeout
    (kind ``"timed out"``). An :class:`untwisted.Timeout`, so a
    :class:`TimeoutError` too."""

    default_kind = "timed out"


class DNSError(NetworkError):
    """The host's name has no address (kind ``"DNS"``)."""

    default_kind = "DNS"


class TLSError(NetworkError):
    """The TLS handshake failed (kind ``"TLS"``): the certificate was not
    trusted, not for that host, expired, or the two ends share no
    protocol."""

    default_kind = "TLS"


class Disconnected(NetworkError, ConnectionResetError):
    """The other end closed or reset the connection before the operation
    could end, or it was closed here already (kind ``"reset"`` or
    ``"closed"``)."""

    default_kind = "closed"


class TooLong(NetworkError):
    """The other end sent more than the operation's cap: a line longer than
    its ``max_length``, more than ``max_bytes`` before the end, an HTTP
    response head past its cap (kind ``"too long"``). What was read stays
    bounded by the cap; the connection is left as it is (close it)."""

    default_kind = "too long"


# Show the public import path in tracebacks: clockwork.net.Refused, ...
for _cls in (
    NetworkError,
    Refused,
    NetworkTimeout,
    DNSError,
    TLSError,
    Disconnected,
    TooLong,
):
    _cls.__module__ = "clockwork.net"
