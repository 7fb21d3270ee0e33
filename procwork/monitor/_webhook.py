"""One webhook delivery: a POST with Twisted's web client, its reply capped.

A webhook is a partner the monitor does not control: it may answer with an
endless body, with endless headers, or not at all. Whatever it does, the
monitor reads a bounded amount of it and then hangs up:

- of the reply's body, at most :data:`MAX_REPLY` bytes are kept; past that
  reading stops and the connection is closed, and the reply says it was cut
  (:attr:`Reply.truncated`);
- the whole reply as it comes over the connection (status line, headers,
  body and its chunk framing) is at most :data:`MAX_WIRE` bytes: past that
  the connection is aborted and the attempt fails with
  :class:`ReplyTooLong` (endless headers, or a body of tiny chunks);
- a delivery cancelled (its timeout, or the monitor stopping) while the
  reply is coming stops reading it and closes the connection at once.

Connections are never kept for another request (the Agent's default pool
is not persistent), so each delivery closes its own when it ends, however
it ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Protocol, connectionDone
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer
from zope.interface import implementer  # type: ignore[import-untyped]

from procwork._errors import ProcworkError

__all__ = [
    "MAX_REPLY",
    "MAX_WIRE",
    "CappedEndpoints",
    "Reply",
    "ReplyTooLong",
    "describe_failure",
    "post",
    "webhook_agent",
]

#: Bytes of a reply's body that are read; the rest is never read.
MAX_REPLY = 64 * 1024

#: Bytes of a whole reply (head, body, framing) read from its connection.
MAX_WIRE = 1024 * 1024


@dataclass(frozen=True)
class Reply:
    """A webhook's answer.

    Attributes:
        code: The HTTP status.
        body: The start of its body, at most :data:`MAX_REPLY` bytes.
        truncated: The body went on past that (and was not read).
    """

    code: int
    body: bytes
    truncated: bool

    @property
    def ok(self) -> bool:
        """A 2xx status."""
        return 200 <= self.code < 300

    def describe(self) -> str:
        """``"answered 503"``, and whether the body was cut (the rest of it
        was not read: said in the result, and so in the log)."""
        cut = f" (reply cut after {len(self.body)} bytes)" if self.truncated else ""
        return f"answered {self.code}{cut}"

    def text(self, limit: int) -> str:
        """The start of the body as text, at most ``limit`` characters."""
        return self.body[:limit].decode("utf-8", "replace")


class ReplyTooLong(ProcworkError, ConnectionError):
    """A webhook's reply went on past :data:`MAX_WIRE` bytes."""


class _ReplyReader(Protocol):
    """Takes a response body: keeps its first ``limit`` bytes, then stops the
    connection (no more is read) and fires :attr:`done` with a :class:`Reply`.

    Cancelling :attr:`done` stops the connection too.
    """

    def __init__(self, code: int, limit: int) -> None:
        self._code = code
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0
        self.done: Deferred[Reply] = Deferred(lambda _: self._hang_up())

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return  # cut or cancelled: the rest of the chunk in hand is dropped
        room = self._limit - self._size
        self._parts.append(data[:room])
        self._size += min(room, len(data))
        if len(data) > room:
            self._hang_up()
            self.done.callback(self._reply(truncated=True))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:
            return
        from twisted.web.client import ResponseDone
        from twisted.web.http import PotentialDataLoss

        # PotentialDataLoss: a body without a length, ended by the server
        # closing the connection, which is how such a body ends.
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(self._reply(truncated=False))
        else:
            self.done.errback(reason)

    def _reply(self, truncated: bool) -> Reply:
        return Reply(self._code, b"".join(self._parts), truncated)

    def _hang_up(self) -> None:
        # The response's transport is the client's proxy of the connection:
        # stopping it closes the connection (TCP stops reading at once), so a
        # server that keeps sending is not read any further.
        if self.transport is not None:
            self.transport.stopProducing()


class _WireCounter(ProtocolWrapper):
    """Counts what the server sends on one connection; past the limit
    aborts the connection, which then fails with ReplyTooLong."""

    factory: _WireCap

    def __init__(self, factory: _WireCap, wrapped: Any) -> None:
        # Twisted 26's annotations want an IProtocol here, 25.5's take any
        # object: the ignore is needed on one and unused on the other.
        super().__init__(factory, wrapped)  # type: ignore[arg-type, unused-ignore]
        self.received = 0
        self.exceeded = False

    def dataReceived(self, data: bytes) -> None:
        if self.exceeded:
            return
        self.received += len(data)
        self.factory.endpoints.received += len(data)
        if self.received > self.factory.endpoints.limit:
            self.exceeded = True
            assert self.transport is not None
            self.transport.abortConnection()
            return
        super().dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.exceeded:
            reason = Failure(
                ReplyTooLong(
                    f"the reply went on past {self.factory.endpoints.limit} bytes "
                    "(headers and body); connection closed"
                )
            )
        super().connectionLost(reason)


class _WireCap(WrappingFactory):
    protocol = _WireCounter
    noisy = False

    def __init__(self, wrapped: Any, endpoints: CappedEndpoints) -> None:
        super().__init__(wrapped)
        self.endpoints = endpoints


class _CappedEndpoint:
    """An endpoint whose connections are counted by :class:`_WireCounter`;
    ``connect`` fires with the wrapped protocol, as the Agent's pool wants."""

    def __init__(self, endpoint: Any, endpoints: CappedEndpoints) -> None:
        self._endpoint = endpoint
        self._endpoints = endpoints

    def connect(self, factory: Any) -> Deferred[Any]:
        # The client's factory logs "Starting factory" and "Stopping factory"
        # for every connection, so for every delivery: noise in the log.
        factory.noisy = False
        d: Deferred[Any] = self._endpoint.connect(_WireCap(factory, self._endpoints))
        return d.addCallback(lambda wrapper: wrapper.wrappedProtocol)


@implementer(IAgentEndpointFactory)
class CappedEndpoints:
    """Where the webhook Agent connects: TCP for ``http``, TLS for
    ``https``, as the Agent's own endpoints; but each connection reads at
    most ``limit`` bytes of its reply, and what they read is counted.

    Args:
        reactor: A real reactor (TCP and name resolution).
        limit: Bytes a connection reads, at most, head and body.

    Attributes:
        received: Bytes read by all the connections made through it.
    """

    def __init__(self, reactor: Any, limit: int = MAX_WIRE) -> None:
        from twisted.web.client import BrowserLikePolicyForHTTPS

        self._reactor = reactor
        self._tls = BrowserLikePolicyForHTTPS()
        self.limit = limit
        self.received = 0

    def endpointForURI(self, uri: Any) -> _CappedEndpoint:
        """The endpoint for ``uri`` (a :class:`twisted.web.client.URI`)."""
        from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
        from twisted.web.error import SchemeNotSupported

        try:
            host = uri.host.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError(f"host {uri.host!r} is not ASCII") from None
        endpoint: Any = HostnameEndpoint(self._reactor, host, uri.port)
        if uri.scheme == b"https":
            creator = self._tls.creatorForNetloc(uri.host, uri.port)
            endpoint = wrapClientTLS(creator, endpoint)
        elif uri.scheme != b"http":
            raise SchemeNotSupported(f"unsupported scheme: {uri.scheme!r}")
        return _CappedEndpoint(endpoint, self)


def webhook_agent(reactor: Any, endpoints: CappedEndpoints | None = None) -> Any:
    """Twisted's :class:`~twisted.web.client.Agent` on ``reactor`` (a real
    one), connecting through ``endpoints`` (default: new
    :class:`CappedEndpoints` of :data:`MAX_WIRE`). Its pool is not
    persistent: a connection serves one request and is closed."""
    from twisted.web.client import Agent

    if endpoints is None:
        endpoints = CappedEndpoints(reactor)
    return Agent.usingEndpointFactory(reactor, endpoints)


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


def post(
    agent: Any, url: str, body: bytes, *, limit: int = MAX_REPLY
) -> Deferred[Reply]:
    """POST ``body`` (JSON) to ``url`` with ``agent``; fires with its
    :class:`Reply`, of which at most ``limit`` bytes of body were read.

    Cancelling it while the reply comes closes the connection: nothing more
    is read.
    """
    from twisted.web.http_headers import Headers

    d: Deferred[Any] = agent.request(
        b"POST",
        url.encode(),
        Headers(
            {
                b"content-type": [b"application/json"],
                b"user-agent": [b"procwork-monitor"],
            }
        ),
        _Body(body),
    )

    def read(response: Any) -> Deferred[Reply]:
        reader = _ReplyReader(response.code, limit)
        response.deliverBody(reader)
        return reader.done

    return d.addCallback(read)


def describe_failure(failure: Failure) -> str:
    """One line for a failed attempt: the client's wrapped reasons
    (``ResponseFailed``, ``ResponseNeverReceived``) by their own messages."""
    reasons = getattr(failure.value, "reasons", None)
    if isinstance(reasons, list) and reasons:
        return "; ".join(
            r.getErrorMessage() if isinstance(r, Failure) else str(r) for r in reasons
        )
    return failure.getErrorMessage()
