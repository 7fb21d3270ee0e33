"""Twisted's network failures turned into clockwork.net's errors, in words.

Twisted reports a failure by the class of its exception, often wrapped (the
web client's ``ResponseNeverReceived`` holds a list of Failures) and worded
for a programmer ("Connection was refused by other side: 111: Connection
refused."). A check needs the kind ("refused") and one line naming the
other end ("connecting to 127.0.0.1:8080: refused"). :func:`network_error`
is the one place that translates.
"""

from __future__ import annotations

import errno
import urllib.parse
from typing import Any

from twisted.internet import error as twisted_errors
from twisted.python.failure import Failure

from clockwork._neterrors import (
    Disconnected,
    DNSError,
    NetworkError,
    NetworkTimeout,
    Refused,
    TLSError,
)
from clockwork._tls import Certificate, tls_failure_words

__all__ = ["network_error", "root_cause"]

_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}


def root_cause(error: BaseException) -> BaseException:
    """The exception under Twisted's wrappers.

    The web client fails with ``ResponseFailed``, ``ResponseNeverReceived``
    or ``RequestTransmissionFailed`` holding Failures in ``reasons``; the
    most telling one is taken (a TLS failure, a cap exceeded, then any but
    a cancel, which is only the client cleaning up after the others).
    """
    reasons = getattr(error, "reasons", None)
    if not isinstance(reasons, list) or not reasons:
        return error
    causes = [
        root_cause(r.value)
        for r in reasons
        if isinstance(r, Failure) and isinstance(r.value, BaseException)
    ] + [root_cause(r) for r in reasons if isinstance(r, BaseException)]
    if not causes:
        return error
    from twisted.internet.defer import CancelledError

    def rank(cause: BaseException) -> int:
        if isinstance(cause, NetworkError) or _is_tls(cause):
            return 0
        if isinstance(cause, CancelledError):
            return 2
        return 1

    return min(causes, key=rank)


def _is_tls(error: BaseException) -> bool:
    from OpenSSL import SSL
    from service_identity.exceptions import VerificationError

    return isinstance(error, SSL.Error | VerificationError)


def network_error(
    error: BaseException | Failure,
    doing: str,
    address: str,
    certificate: Certificate | None = None,
) -> NetworkError:
    """The :class:`NetworkError` for a failure Twisted reported.

    Args:
        error: The exception (or Failure) as Twisted gave it.
        doing: What failed, naming the other end: "connecting to
            127.0.0.1:8080", "GET http://127.0.0.1:8080/".
        address: The other end, for the error's ``address``.
        certificate: The certificate the other end showed, if it came to
            that: it says why a TLS verification failed.
    """
    if isinstance(error, Failure):
        assert error.value is not None
        error = error.value
    cause = root_cause(error)
    if isinstance(cause, NetworkError):
        return cause

    def made(cls: type[NetworkError], words: str, **kw: Any) -> NetworkError:
        made_error = cls(f"{doing}: {words}", address=address, **kw)
        made_error.__cause__ = cause
        return made_error

    if _is_tls(cause):
        return made(TLSError, "TLS failed: " + tls_failure_words(cause, certificate))
    if isinstance(
        cause, twisted_errors.ConnectionRefusedError | ConnectionRefusedError
    ):
        return made(Refused, "refused (nothing listens there)")
    if isinstance(cause, twisted_errors.DNSLookupError):
        if "://" in address:
            host = urllib.parse.urlsplit(address).hostname or address
        else:
            host = address.rpartition(":")[0].strip("[]") or address
        return made(DNSError, f"DNS lookup failed: no address for {host}")
    if isinstance(
        cause,
        twisted_errors.TimeoutError | twisted_errors.TCPTimedOutError | TimeoutError,
    ):
        return made(NetworkTimeout, "timed out")
    if isinstance(cause, twisted_errors.ConnectionDone):
        return made(Disconnected, "the other end closed the connection")
    if isinstance(cause, twisted_errors.ConnectionLost | ConnectionResetError):
        return made(Disconnected, "the connection was reset", kind="reset")
    if isinstance(cause, twisted_errors.ConnectionAborted):
        return made(Disconnected, "the connection was aborted here")
    os_error = getattr(cause, "osError", None)
    number = getattr(cause, "errno", None)
    if isinstance(os_error, int):
        number = os_error
    if isinstance(cause, twisted_errors.NoRouteError) or number in _UNREACHABLE:
        return made(NetworkError, "unreachable (no route to it)", kind="unreachable")
    words = str(cause).strip() or type(cause).__name__
    return made(NetworkError, f"{type(cause).__name__}: {words}")
