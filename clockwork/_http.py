"""``clockwork.net.request``: HTTP(S) on Twisted's web client, bounded.

The request is Twisted's ``Agent`` (HTTP/1.1, a connection per request that
is closed when the request ends: its pool is not persistent) over Twisted's
endpoints (``HostnameEndpoint``, and ``wrapClientTLS`` for https, verified
by default). What this module adds is the bounds a monitor needs against a
server it does not control, learned on the monitor's webhooks:

- **The body**: at most ``max_body`` bytes are kept; past that reading
  stops and the connection is closed, and the response says it was cut
  (:attr:`Response.truncated`). The body is delivered to a reader as soon
  as the head is parsed (never left to Twisted's ``Response``, which
  buffers without bound until someone reads), and cancelling the read
  closes the connection (``readBody``'s cancel only aborts, and loses the
  reason).
- **The wire**: every byte the connection reads is counted. A head (status
  line and headers) past :data:`MAX_HEAD` bytes fails with
  :class:`~clockwork.net.TooLong`, and so does a body whose framing goes on
  far past ``max_body`` (a chunked body of 1-byte chunks takes 6 bytes a
  byte): the connection is aborted at once.
- **The time**: one timeout for the whole request (name, connection, TLS
  handshake, request, response, body, redirects); on expiry everything is
  cancelled and the error says what it was waiting for.
- **Redirects** are followed only when asked (``follow_redirects=True``), by
  this module rather than Twisted's ``RedirectAgent``: that one leaves each
  redirect's body unread (so buffered) and keeps every response of the
  chain. Here each redirect's body is read (capped) and its connection
  closed before the next request.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Protocol, connectionDone
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer
from zope.interface import implementer  # type: ignore[import-untyped]

from clockwork._connect import tcp_endpoint
from clockwork._neterrors import Disconnected, NetworkError, NetworkTimeout, TooLong
from clockwork._networds import network_error, root_cause
from clockwork._stream import check_seconds
from clockwork._task import Task
from clockwork._tls import Certificate, client_creator, peer_certificate
from clockwork._worker import current_worker

__all__ = [
    "MAX_BODY",
    "MAX_HEAD",
    "REDIRECT_LIMIT",
    "REQUEST_TIMEOUT",
    "Response",
    "request",
]

#: ``request``'s default ``max_body``: bytes of a response's body kept.
MAX_BODY = 1024 * 1024

#: Bytes of a response's head (status line and headers) read, at most.
MAX_HEAD = 64 * 1024

#: ``request``'s default timeout, in seconds.
REQUEST_TIMEOUT = 10.0

#: Redirects followed, at most, with ``follow_redirects=True``.
REDIRECT_LIMIT = 10

# The framing a body may take on the wire, per byte of body kept: a chunked
# body of 1-byte chunks takes 6 ("1\r\nx\r\n"); past 8 the server is not
# sending a body but noise.
_FRAMING = 8

_REDIRECTS = frozenset({301, 302, 303, 307, 308})

# Not sent to another origin by a redirect (as Twisted's RedirectAgent).
_SENSITIVE = frozenset({"authorization", "cookie", "cookie2", "proxy-authorization"})


@dataclass(frozen=True)
class Response:
    """An HTTP response, its body read (up to a cap).

    Attributes:
        status: The status code.
        reason: The status line's phrase (``"Not Found"``).
        headers: The headers, by lower-case name; a header sent several
            times has its values joined with ``", "``.
        body: The body, at most ``max_body`` bytes of it.
        truncated: The body went on past ``max_body`` (the rest was not read).
        url: The URL that answered (the last one, after redirects).
        redirects: The URLs that redirected, in order (empty if none).
        certificate: For https, the certificate the server showed.
    """

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes
    truncated: bool
    url: str
    redirects: tuple[str, ...] = ()
    certificate: Certificate | None = field(default=None, repr=False)

    def header(self, name: str, default: str | None = None) -> str | None:
        """The header ``name`` (any case), or ``default``."""
        return self.headers.get(name.lower(), default)

    def text(self, limit: int | None = None) -> str:
        """The body as text (UTF-8, undecodable bytes replaced), at most
        ``limit`` characters."""
        text = self.body.decode("utf-8", "replace")
        return text if limit is None else text[:limit]

    def describe(self) -> str:
        """``"status 503 Service Unavailable"``, and whether the body was cut."""
        words = f"status {self.status}"
        if self.reason:
            words += f" {self.reason}"
        if self.truncated:
            words += f" (body cut after {len(self.body)} bytes)"
        return words


class _Exchange:
    """What one request is doing: for the timeout's words and the caps.

    ``phase`` says what it waits for; ``received`` counts the bytes the
    current connection read, ``limit`` is how many it may (the head's cap
    until the head is in, then the body's framing allowance).
    """

    def __init__(self, method: str, url: str, max_body: int) -> None:
        self.method = method
        self.url = url
        self.max_body = max_body
        self.phase = "connecting"
        self.received = 0
        self.head_done = False
        self.limit = MAX_HEAD
        self.certificate: Certificate | None = None

    @property
    def doing(self) -> str:
        return f"{self.method} {self.url}"

    def new_hop(self, url: str) -> None:
        self.url = url
        self.phase = "connecting"
        self.received = 0
        self.head_done = False
        self.limit = MAX_HEAD
        self.certificate = None

    def head_received(self) -> None:
        self.head_done = True
        self.phase = "reading the body"
        self.limit = self.received + _FRAMING * self.max_body + MAX_HEAD

    def too_long(self) -> TooLong:
        if not self.head_done:
            words = f"the response head went on past {MAX_HEAD} bytes"
        else:
            words = (
                f"the response went on past {self.limit} bytes on the wire "
                f"for at most {self.max_body} bytes of body"
            )
        return TooLong(f"{self.doing}: {words}; connection closed", address=self.url)


@implementer(IHandshakeListener)
class _WireCounter(ProtocolWrapper):
    """Between the connection (TLS already undone) and the HTTP client:
    counts what the server sends, aborts the connection past the
    exchange's limit, notes the phase and the server's certificate."""

    factory: _WireCap

    def __init__(self, factory: _WireCap, wrapped: Any) -> None:
        # Twisted 26's annotations want an IProtocol here, 25.5's take any
        # object: the ignore is needed on one and unused on the other.
        super().__init__(factory, wrapped)  # type: ignore[arg-type, unused-ignore]
        self.exchange = factory.exchange
        self.exceeded = False

    def connectionMade(self) -> None:
        self.exchange.phase = (
            "the TLS handshake" if self.factory.tls else "waiting for the response"
        )
        super().connectionMade()

    def handshakeCompleted(self) -> None:
        self.exchange.phase = "waiting for the response"
        self._note_certificate()

    def dataReceived(self, data: bytes) -> None:
        if self.exceeded:
            return
        exchange = self.exchange
        exchange.received += len(data)
        # Passed on first: these bytes may end the head, which raises the
        # limit (a read holding a short head and 60 KiB of body is fine).
        super().dataReceived(data)
        if exchange.received > exchange.limit and not self.exceeded:
            self.exceeded = True
            assert self.transport is not None
            self.transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._note_certificate()  # a failed verification: says why
        if self.exceeded:
            reason = Failure(self.exchange.too_long())
        super().connectionLost(reason)

    def _note_certificate(self) -> None:
        if self.factory.tls and self.exchange.certificate is None:
            self.exchange.certificate = peer_certificate(self.transport)


class _WireCap(WrappingFactory):
    protocol = _WireCounter
    noisy = False

    def __init__(self, wrapped: Any, exchange: _Exchange, tls: bool) -> None:
        super().__init__(wrapped)
        self.exchange = exchange
        self.tls = tls


class _CountedEndpoint:
    """An endpoint whose connection goes through a :class:`_WireCounter`;
    ``connect`` fires with the client's own protocol, as the Agent wants."""

    def __init__(self, endpoint: Any, exchange: _Exchange, tls: bool) -> None:
        self._endpoint = endpoint
        self._exchange = exchange
        self._tls = tls

    def connect(self, factory: Any) -> Deferred[Any]:
        # The client's factory logs "Starting factory" and "Stopping factory"
        # for every connection: noise.
        factory.noisy = False
        d: Deferred[Any] = self._endpoint.connect(
            _WireCap(factory, self._exchange, self._tls)
        )
        return d.addCallback(lambda wrapper: wrapper.wrappedProtocol)


@implementer(IAgentEndpointFactory)
class _Endpoints:
    """Where the request's Agent connects: TCP, or TLS verified against
    ``ca_file`` (default the system's authorities), counted."""

    def __init__(
        self,
        reactor: Any,
        exchange: _Exchange,
        timeout: float | None,
        ca_file: str | os.PathLike[str] | None,
    ) -> None:
        self._reactor = reactor
        self._exchange = exchange
        self._timeout = timeout
        self._ca_file = ca_file

    def endpointForURI(self, uri: Any) -> _CountedEndpoint:
        from twisted.internet.endpoints import wrapClientTLS

        host = uri.host.decode("idna")
        endpoint = tcp_endpoint(self._reactor, host, uri.port, self._timeout)
        tls = uri.scheme == b"https"
        if tls:
            endpoint = wrapClientTLS(client_creator(host, self._ca_file), endpoint)
        return _CountedEndpoint(endpoint, self._exchange, tls)


@implementer(IBodyProducer)
class _Body:
    """A request body in memory, written at once (no cooperator, no timer)."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _BodyReader(Protocol):
    """Takes a response's body: keeps its first ``limit`` bytes, then stops
    the connection (no more is read) and fires :attr:`done` with ``(body,
    truncated)``. Cancelling :attr:`done` stops the connection too."""

    def __init__(self, exchange: _Exchange) -> None:
        self._exchange = exchange
        self._limit = exchange.max_body
        self._parts: list[bytes] = []
        self._size = 0
        self.done: Deferred[tuple[bytes, bool]] = Deferred(lambda _: self._hang_up())

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return  # cut or cancelled: the rest of the chunk in hand is dropped
        room = self._limit - self._size
        if room > 0:
            self._parts.append(data[:room])
            self._size += min(room, len(data))
        if len(data) > room:
            self._hang_up()
            self.done.callback((b"".join(self._parts), True))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:
            return
        from twisted.web.client import ResponseDone
        from twisted.web.http import PotentialDataLoss

        # PotentialDataLoss: a body without a length, ended by the server
        # closing the connection, which is how such a body ends.
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback((b"".join(self._parts), False))
            return
        cause = root_cause(reason.value) if reason.value is not None else None
        if not isinstance(cause, NetworkError):
            cause = Disconnected(
                f"{self._exchange.doing}: the connection ended before the end of "
                f"the body ({self._size} bytes read)",
                address=self._exchange.url,
            )
        self.done.errback(cause)

    def _hang_up(self) -> None:
        # The response's transport is the client's proxy of the connection:
        # stopping it closes the connection (TCP stops reading at once), so
        # a server that keeps sending is not read any further.
        if self.transport is not None:
            self.transport.stopProducing()


def _check_url(what: str, url: object) -> str:
    if not isinstance(url, str):
        raise TypeError(f"{what}: url must be a str, not {url!r}")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{what}: url {url!r} is not http:// or https://")
    if not parts.hostname:
        raise ValueError(f"{what}: url {url!r} names no host")
    try:
        parts.port  # noqa: B018 (it raises on a bad one)
    except ValueError as e:
        raise ValueError(f"{what}: url {url!r}: {e}") from None
    if any(c in url for c in " \r\n\t"):
        raise ValueError(f"{what}: url {url!r} has white space (quote it)")
    if not url.isascii():
        raise ValueError(
            f"{what}: url {url!r} is not ASCII (quote the path; a host in punycode)"
        )
    return url


def _check_headers(what: str, headers: object) -> dict[str, str]:
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise TypeError(f"{what}: headers must be a mapping of str to str")
    checked: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(
                f"{what}: headers must be str to str, not {name!r}: {value!r}"
            )
        if any(c in name + value for c in "\r\n") or not name or ":" in name:
            raise ValueError(f"{what}: header {name!r}: {value!r} is malformed")
        checked[name] = value
    return checked


def request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float | None = REQUEST_TIMEOUT,
    max_body: int = MAX_BODY,
    follow_redirects: bool = False,
    ca_file: str | os.PathLike[str] | None = None,
    reactor: Any = None,
) -> Deferred[Response]:
    """Make an HTTP(S) request; yield it for the :class:`Response`.

    Any status is a response (a 503 is not an error: ``response.status``
    says it); what is an error is not getting one.

    Args:
        method: ``"GET"``, ``"POST"``, ``"HEAD"``, ...
        url: ``http://`` or ``https://``.
        headers: Request headers (a ``User-Agent`` is added unless given).
        body: The request body, sent with its ``Content-Length``.
        timeout: Seconds for all of it, redirects included. None: no limit
            (a server that never answers then holds the request for ever).
        max_body: Bytes of the response's body kept; the rest is not read
            (``response.truncated``). 0 reads none.
        follow_redirects: Follow 301, 302, 303, 307 and 308 (at most
            :data:`REDIRECT_LIMIT`); off by default, so a check sees the
            redirect itself. A 303, or a 301/302 answering a POST, is
            followed with a GET, as browsers do.
        ca_file: For https, a PEM file of the authorities to trust instead
            of the system's (a self-signed server's own certificate will do).
        reactor: Default: the reactor of the worker running the caller.

    Raises:
        TypeError, ValueError: a bad argument (at once).
        (in the Deferred) Refused, DNSError, NetworkTimeout, TLSError,
        Disconnected, TooLong, NetworkError: no response, and why, naming
        the method and the URL.
    """
    what = "clockwork.net.request()"
    if not isinstance(method, str) or not method.isalpha():
        raise ValueError(f"{what}: method must be a word like 'GET', not {method!r}")
    method = method.upper()
    url = _check_url(what, url)
    fields = _check_headers(what, headers)
    if not any(name.lower() == "user-agent" for name in fields):
        fields["User-Agent"] = "procwork clockwork.net"
    if body is not None and not isinstance(body, bytes):
        raise TypeError(
            f"{what}: body must be bytes or None, not {type(body).__name__}"
        )
    if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 0:
        raise ValueError(f"{what}: max_body must be an int >= 0, not {max_body!r}")
    seconds = check_seconds(what, timeout)
    worker = current_worker()
    reactor = worker.reactor if reactor is None else reactor
    exchange = _Exchange(method, url, max_body)
    task = worker.assign(
        _fetch(exchange, fields, body, seconds, follow_redirects, ca_file, reactor),
        name=f"{method} {url}",
    )
    return _deadline(task, exchange, seconds, reactor)


def _deadline(
    task: Task, exchange: _Exchange, seconds: float | None, reactor: Any
) -> Deferred[Response]:
    """The task's Deferred, the task cancelled after ``seconds`` and its
    CancelledError then told as the timeout it is."""
    expired: list[str] = []

    def expire() -> None:
        expired.append(exchange.phase)
        task.cancel()

    timer = None if seconds is None else reactor.callLater(seconds, expire)

    def done(result: object) -> object:
        if timer is not None and timer.active():
            timer.cancel()
        if expired and isinstance(result, Failure) and result.check(CancelledError):
            return Failure(
                NetworkTimeout(
                    f"{exchange.doing}: timed out after {seconds:g} s ({expired[0]})",
                    address=exchange.url,
                )
            )
        return result

    d: Deferred[Response] = task.deferred
    return d.addBoth(done)


def _fetch(
    exchange: _Exchange,
    headers: dict[str, str],
    body: bytes | None,
    timeout: float | None,
    follow_redirects: bool,
    ca_file: str | os.PathLike[str] | None,
    reactor: Any,
) -> Generator[Any, Any, Response]:
    """The request's task: one exchange per hop, until an answer that is
    not a redirect to follow."""
    from twisted.web.client import Agent
    from twisted.web.http_headers import Headers

    redirects: list[str] = []
    method, url = exchange.method, exchange.url
    while True:
        exchange.new_hop(url)
        agent = Agent.usingEndpointFactory(
            reactor, _Endpoints(reactor, exchange, timeout, ca_file)
        )
        d: Deferred[Any] = agent.request(
            method.encode("ascii"),
            url.encode("ascii"),
            Headers({name: [value] for name, value in headers.items()}),
            None if body is None else _Body(body),
        )
        d.addCallback(_read_body, exchange)
        try:
            response, data, truncated = yield d
        except CancelledError:
            raise
        except Exception as e:
            raise network_error(
                e, exchange.doing, exchange.url, exchange.certificate
            ) from None
        location = _header(response, "location")
        if not follow_redirects or response.code not in _REDIRECTS or location is None:
            return Response(
                status=response.code,
                reason=response.phrase.decode("latin-1"),
                headers=_headers(response),
                body=data,
                truncated=truncated,
                url=url,
                redirects=tuple(redirects),
                certificate=exchange.certificate,
            )
        if len(redirects) >= REDIRECT_LIMIT:
            raise NetworkError(
                f"{exchange.doing}: more than {REDIRECT_LIMIT} redirects",
                kind="redirects",
                address=url,
            )
        redirects.append(url)
        target = urllib.parse.urljoin(url, location)
        try:
            _check_url("redirect", target)
        except ValueError:
            raise NetworkError(
                f"{exchange.doing}: redirected to {target!r}, not an http(s) URL",
                kind="redirects",
                address=url,
            ) from None
        if response.code == 303 or (response.code in (301, 302) and method == "POST"):
            method = "GET" if method != "HEAD" else method
            body = None
        if _origin(target) != _origin(url):
            headers = {k: v for k, v in headers.items() if k.lower() not in _SENSITIVE}
        exchange.method = method
        url = target


def _read_body(response: Any, exchange: _Exchange) -> Deferred[Any]:
    # Called as the head is parsed, before the connection reads on: the
    # body goes to the reader from its first byte (nothing is buffered by
    # Twisted's Response), and the wire limit becomes the body's.
    exchange.head_received()
    reader = _BodyReader(exchange)
    response.deliverBody(reader)
    return reader.done.addCallback(lambda got: (response, got[0], got[1]))


def _header(response: Any, name: str) -> str | None:
    values = response.headers.getRawHeaders(name.encode("ascii"))
    return None if not values else values[0].decode("latin-1")


def _headers(response: Any) -> dict[str, str]:
    return {
        name.decode("latin-1").lower(): ", ".join(v.decode("latin-1") for v in values)
        for name, values in response.headers.getAllRawHeaders()
    }


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.hostname, parts.port
