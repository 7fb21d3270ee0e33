"""The monitor's HTTP endpoint: the status page (HTML for browsers, JSON for
programs) and metrics as Prometheus text.

:func:`StatusSite` serves ``/``, ``/status.json``, ``/metrics`` and, when the
config allows it, ``POST /control``; :class:`CappedFactory` caps the
connections; :class:`Guard` decides from a request's head, before any body
is read, what the endpoint takes, and counts what it refuses.

With ``http_control``, ``GET /tail`` answers a service's last lines to
clients with the token (:class:`_Tail`), and requests a browser marks as
coming from another site are refused (:meth:`Guard.cross_site`).

Design: ARCHITECTURE.md, "The HTTP endpoint".
"""

from __future__ import annotations

import hmac
import io
import json
from collections.abc import Callable, Iterable
from typing import Any, cast
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IAddress
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web import pages
from twisted.web.http import RESPONSES, HTTPChannel
from twisted.web.http_headers import Headers
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from procwork.monitor._protocol import decode, parse_request

__all__ = [
    "IDLE_TIMEOUT",
    "MAX_BODY",
    "CappedFactory",
    "Guard",
    "StatusSite",
    "prometheus_text",
]

_log = Logger(namespace="procwork.monitor")

#: Seconds an HTTP connection may stay idle before it is closed.
IDLE_TIMEOUT = 30

Metric = tuple[str, str, str, Iterable[tuple[dict[str, str], float]]]
"""``(name, type, help, samples)``; a sample is ``(labels, value)``."""


class _Leaf(Resource):
    isLeaf = True

    def __init__(self, content_type: bytes, render: Callable[[], bytes]) -> None:
        super().__init__()
        self._content_type = content_type
        self._render = render

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", self._content_type)
        request.setHeader(b"cache-control", b"no-store")
        return self._render()


#: Carries out one control request (a decoded JSON object); the answer is a
#: JSON object with ``ok``.
ControlFunction = Callable[[dict[str, Any]], Deferred[dict[str, Any]]]

#: The longest request body read (bytes): a control request's.
MAX_BODY = 64 * 1024

_CONTROL_OFF = (
    "control over HTTP is off: the monitor takes control requests on its "
    "socket (procwork ctl), or set http_control = true and http_token in [monitor]"
)
_NEEDS_TOKEN = "a control request needs 'Authorization: Bearer TOKEN'"

#: Lines a ``GET /tail`` answers by default, and at most.
TAIL_LINES = 200
MAX_TAIL_LINES = 1000

#: Bytes of lines (as JSON) a ``GET /tail`` answer holds, at most: the
#: oldest lines are left out past it (and counted).
MAX_TAIL_BYTES = 64 * 1024

#: The last lines a service printed on a stream: ``(service, stream,
#: count)``; raises a LookupError for no such service, a ValueError for no
#: such stream (the supervisor's ``output``).
TailFunction = Callable[[str, str, int], list[str]]


def _answer_body(answer: Any) -> bytes:
    return json.dumps(answer, sort_keys=True).encode() + b"\n"


def _refusal(why: str) -> dict[str, Any]:
    return {"procwork": 1, "ok": False, "error": why}


def _printable(value: bytes, limit: int = 80) -> str:
    """Bytes from a client, for a message: decoded, escaped, cut short."""
    text = value.decode("latin-1")
    shown = text[:limit].encode("unicode_escape").decode("ascii")
    return shown + ("..." if len(text) > limit else "")


class Guard:
    """What the endpoint takes, decided from a request's head; and what it
    refused, counted by status.

    Args:
        control: Whether ``POST /control`` is served (``http_control``).
        token: The bearer token it needs.
        max_body: The longest body read.
    """

    def __init__(
        self, control: bool, token: str | None, max_body: int = MAX_BODY
    ) -> None:
        self.control = control and token is not None
        self._expected = None if token is None else f"Bearer {token}".encode()
        self.max_body = max_body
        #: Requests refused, by HTTP status (400, 401, 403, 413).
        self.refused: dict[int, int] = {}

    def authorized(self, headers: Headers) -> bool:
        """Whether the request carries ``Authorization: Bearer TOKEN``."""
        if self._expected is None:
            return False
        given = headers.getRawHeaders(b"authorization") or [b""]
        # Compared in constant time: a timing difference would tell how much
        # of a guess was right.
        return len(given) == 1 and hmac.compare_digest(given[0], self._expected)

    def cross_site(self, headers: Headers) -> str | None:
        """Why a request comes from another site, as a browser says it
        (None: it does not, or no browser sent it).

        ``Sec-Fetch-Site`` (which a page cannot set) must be ``same-origin``
        or ``none`` (typed by the user): ``same-site`` is refused too, as
        another port of this host is the same site. ``Origin``, if sent,
        must be this endpoint's own: ``http://`` or ``https://`` (behind a
        proxy) and the request's ``Host``. Clients that are not browsers
        (``curl``, scripts) send neither.
        """
        fetch_site = headers.getRawHeaders(b"sec-fetch-site")
        if fetch_site is not None and fetch_site[-1].lower() not in (
            b"same-origin",
            b"none",
        ):
            return (
                "cross-site request refused: a page of another site "
                f"(Sec-Fetch-Site: {_printable(fetch_site[-1])}) may not send it"
            )
        origin = headers.getRawHeaders(b"origin")
        if origin is not None:
            host = (headers.getRawHeaders(b"host") or [b""])[-1]
            if not host or origin[-1] not in (b"http://" + host, b"https://" + host):
                return (
                    f"cross-site request refused: Origin {_printable(origin[-1])} "
                    "is not this monitor's"
                )
        return None

    def count(self, code: int) -> None:
        """One more request refused with ``code``."""
        self.refused[code] = self.refused.get(code, 0) + 1

    def refusal(
        self, method: bytes, path: bytes, headers: Headers, length: int | None
    ) -> tuple[int, str] | None:
        """Why a request with this head must not have its body read, as
        ``(status, message)``; None: read it.

        Args:
            method: The request's method.
            path: Its target, as sent.
            headers: Its headers.
            length: Its Content-Length; None for a chunked body.
        """
        if length == 0:
            return None  # no body: the resource answers, as to any request
        if method != b"POST" or not _is_control(path):
            return 413, (
                f"{_printable(method)} {_printable(path)} takes no request body"
            )
        if not self.control:
            return 403, _CONTROL_OFF
        if (why := self.cross_site(headers)) is not None:
            return 403, why
        if not self.authorized(headers):
            return 401, _NEEDS_TOKEN
        if length is not None and length > self.max_body:
            return 413, (
                f"a control request is at most {self.max_body} bytes, not {length}"
            )
        return None


def _is_control(path: bytes) -> bool:
    """Whether Site's traversal takes ``path`` to ``/control``: it splits
    the path after its first character and unquotes each segment."""
    segments = path.split(b"?", 1)[0][1:].split(b"/")
    return unquote_to_bytes(segments[0]) == b"control"


class _GuardedChannel(HTTPChannel):
    """twisted.web's HTTP channel, which asks its site's :class:`Guard`
    whether to read a request's body once the head is in, and answers
    malformed requests with a 400 that says why.

    A refused request is answered on the spot, before the body (and before
    any ``100 Continue``), and the connection closed: the transport stops
    reading, and what the client sent on is never read.
    """

    _refused = False
    _stalled = False  # the client reads nothing: the transport's buffer is full
    site: _StatusSite  # set by Site.buildProtocol on the channel it builds

    def _guard(self) -> Guard:
        return self.site.guard

    def refuse(self, code: int, why: str) -> None:
        """Answer ``code`` with ``why`` now, and close the connection."""
        if self._refused:
            return
        self._refused = True
        self._guard().count(code)
        body = _answer_body(_refusal(why))
        head = [
            b"HTTP/1.1 %d %s" % (code, RESPONSES.get(code, b"Refused")),
            b"content-type: application/json",
            b"cache-control: no-store",
            b"content-length: %d" % len(body),
            b"connection: close",
        ]
        if code == 401:
            head.append(b'www-authenticate: Bearer realm="procwork"')
        # Any: ITransport is a zope interface, which mypy cannot check.
        transport: Any = self.transport
        transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self.loseConnection()

    # twisted.web goes on to the next pipelined request when one is done,
    # even while the client reads none of the answers: a client sending a
    # thousand requests and reading nothing would have a thousand answers
    # piled up in the transport's buffer (64 MiB of tails). Once the
    # transport has asked to pause (its buffer holds more than 64 KiB
    # unsent), the answer being written is the connection's last.
    def pauseProducing(self) -> None:
        self._stalled = True
        super().pauseProducing()

    def resumeProducing(self) -> None:
        self._stalled = False
        super().resumeProducing()

    def requestDone(self, request: Request) -> None:
        if self._stalled:
            self.persistent = False  # closed after this answer, not reused
        super().requestDone(request)

    def allHeadersReceived(self) -> None:
        request = self.requests[-1]
        refusal = self._guard().refusal(
            self._command,
            # Twisted's parser names this attribute's value "request".
            cast(bytes, self._path),
            request.requestHeaders,
            self.length,
        )
        if refusal is None:
            super().allHeadersReceived()
        else:
            self.refuse(*refusal)

    # Once refused, nothing more is parsed: the rest of the data in hand
    # (the connection reads no more) is dropped, no request is processed.
    def lineReceived(self, line: bytes) -> None:
        if not self._refused:
            super().lineReceived(line)

    def rawDataReceived(self, data: bytes) -> None:
        if not self._refused:
            super().rawDataReceived(data)

    def allContentReceived(self) -> None:
        if not self._refused:
            super().allContentReceived()

    def lineLengthExceeded(self, line: bytes) -> None:
        self.refuse(
            400, f"a request line or header is longer than {self.MAX_LENGTH} bytes"
        )

    def _respondToBadRequestAndDisconnect(self) -> None:
        # twisted.web's own answer is a bare 400, without a word of why.
        self.refuse(
            400,
            "malformed request: a bad request line, header or chunked body, "
            f"or headers over {self.totalHeadersSize} bytes or "
            f"{self.maxHeaders} lines",
        )


class _MemoryRequest(Request):
    """A request whose body is kept in memory, at most the guard's
    ``max_body`` bytes: twisted.web's own spools one over 100 KiB to a
    temporary file. A chunked body is refused (413) when it gets longer."""

    channel: _GuardedChannel

    def gotLength(self, length: int | None) -> None:
        self.content = io.BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        assert self.content is not None
        limit = self.channel._guard().max_body
        if self.content.tell() + len(data) > limit:
            self.channel.refuse(413, f"a request body is at most {limit} bytes")
            return
        self.content.write(data)


def decode_control(body: bytes) -> dict[str, Any]:
    """A control request from a body: what the control socket takes on a
    line (:func:`~procwork.monitor._protocol.decode`: a JSON object, in
    UTF-8, nested at most ``MAX_DEPTH`` deep), of the protocol's keys and types.

    Raises:
        ValueError: it is not; the message says why.
    """
    return parse_request(decode(body))


class _Control(Resource):
    """``POST /control``: a control request, with the bearer token."""

    isLeaf = True

    def __init__(self, control: ControlFunction | None, guard: Guard) -> None:
        super().__init__()
        self._control = control
        self._guard = guard

    def _answer(self, request: Request, code: int, answer: Any) -> bytes:
        body = _answer_body(answer)
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        # Said even when the answer is written later: not chunked.
        request.setHeader(b"content-length", b"%d" % len(body))
        return body

    def _refused(self, request: Request, code: int, why: str) -> bytes:
        self._guard.count(code)
        return self._answer(request, code, _refusal(why))

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"allow", b"POST")
        return self._answer(request, 405, _refusal("POST a control request here"))

    def render_OPTIONS(self, request: Request) -> bytes:
        # A CORS preflight: never granted, no other origin may send these.
        self._guard.count(405)
        request.setHeader(b"allow", b"GET, POST")
        return self._answer(
            request, 405, _refusal("no cross-origin requests: there is no CORS here")
        )

    def render_POST(self, request: Request) -> Any:
        # A request with a body was let through by the guard only with the
        # token; one without a body is checked here.
        if self._control is None or not self._guard.control:
            return self._refused(request, 403, _CONTROL_OFF)
        if (why := self._guard.cross_site(request.requestHeaders)) is not None:
            return self._refused(request, 403, why)
        if not self._guard.authorized(request.requestHeaders):
            request.setHeader(b"www-authenticate", b'Bearer realm="procwork"')
            return self._refused(request, 401, _NEEDS_TOKEN)
        assert request.content is not None
        try:
            message = decode_control(request.content.read(self._guard.max_body + 1))
        except ValueError as e:
            return self._refused(request, 400, f"not a control request: {e}"[:500])

        def send(code: int, answer: dict[str, Any]) -> None:
            if not request.finished and not request._disconnected:
                request.write(self._answer(request, code, answer))
                request.finish()

        def failed(failure: Failure) -> None:
            # A fault of the monitor's, not the client's: logged, and said.
            _log.failure("HTTP control request failed", failure)
            send(500, _refusal(f"internal error: {failure.getErrorMessage()}"))

        d = maybeDeferred(self._control, message)
        d.addCallback(lambda answer: send(200, answer)).addErrback(failed)
        return NOT_DONE_YET


class _Tail(_Control):
    """``GET /tail?service=NAME&stream=stdout&lines=200``: the last lines a
    service printed, for the page's live tail (polled). With the token only,
    and from no other site: output may hold secrets.

    An answer holds at most :data:`MAX_TAIL_LINES` lines and
    :data:`MAX_TAIL_BYTES` of them; the monitor keeps nothing per client,
    so a client that stops polling (or reading) costs it nothing more than
    its connection, which the idle timeout closes.
    """

    def __init__(self, tail: TailFunction | None, guard: Guard) -> None:
        super().__init__(None, guard)
        self._tail = tail

    def render_POST(self, request: Request) -> Any:
        request.setHeader(b"allow", b"GET")
        return self._answer(request, 405, _refusal("GET the tail here"))

    def render_GET(self, request: Request) -> bytes:
        if self._tail is None or not self._guard.control:
            return self._refused(request, 403, _CONTROL_OFF)
        if (why := self._guard.cross_site(request.requestHeaders)) is not None:
            return self._refused(request, 403, why)
        if not self._guard.authorized(request.requestHeaders):
            request.setHeader(b"www-authenticate", b'Bearer realm="procwork"')
            return self._refused(
                request, 401, "a tail needs 'Authorization: Bearer TOKEN'"
            )
        try:
            service, stream, count = _tail_query(request.args or {})
        except ValueError as e:
            return self._refused(request, 400, str(e))
        try:
            lines = self._tail(service, stream, count)
        except LookupError as e:
            # (A KeyError's str() is the repr of its message.)
            return self._refused(request, 404, str(e.args[0] if e.args else e))
        except ValueError as e:
            return self._refused(request, 400, str(e))
        kept: list[str] = []
        size = 0
        for line in reversed(lines):
            size += len(json.dumps(line)) + 2
            if size > MAX_TAIL_BYTES:
                break
            kept.append(line)
        kept.reverse()
        result = {
            "service": service,
            "stream": stream,
            "lines": kept,
            "cut": len(lines) - len(kept),  # left out to stay under the cap
        }
        return self._answer(request, 200, {"procwork": 1, "ok": True, "result": result})


def _tail_query(args: dict[bytes, list[bytes]]) -> tuple[str, str, int]:
    """``service``, ``stream`` (default stdout) and ``lines`` (default
    :data:`TAIL_LINES`, at most :data:`MAX_TAIL_LINES`) of a tail's query.

    Raises:
        ValueError: one is missing or wrong; the message says which.
    """

    def one(key: bytes, default: str | None) -> str:
        values = args.get(key)
        if not values:
            if default is None:
                raise ValueError(f"{key.decode()}= is missing (/tail?service=NAME)")
            return default
        try:
            return values[-1].decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{key.decode()}= is not UTF-8") from None

    service = one(b"service", None)
    stream = one(b"stream", "stdout")
    if stream not in ("stdout", "stderr"):
        raise ValueError(f"stream= must be stdout or stderr, not {stream[:40]!r}")
    lines = one(b"lines", str(TAIL_LINES))
    if not (lines.isascii() and lines.isdigit() and 1 <= int(lines) <= MAX_TAIL_LINES):
        raise ValueError(
            f"lines= must be a whole number from 1 to {MAX_TAIL_LINES}, "
            f"not {lines[:40]!r}"
        )
    return service, stream, int(lines)


class _Negotiated(Resource):
    """``/``: the HTML page to browsers, JSON to everyone else."""

    isLeaf = True

    def __init__(self, json_leaf: _Leaf, page: Callable[[], str], policy: str) -> None:
        super().__init__()
        self._json = json_leaf
        self._page = page
        self._policy = policy.encode()

    def render_GET(self, request: Request) -> bytes:
        from procwork.monitor._page import wants_html

        request.setHeader(b"vary", b"accept")
        accept = request.getHeader(b"accept")
        if not wants_html(None if accept is None else accept.decode("latin-1")):
            return self._json.render_GET(request)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        # Only the page's own script and style run, it talks to this
        # endpoint alone, and no other site may frame it (a framed page's
        # buttons could be clicked through a decoy).
        request.setHeader(b"content-security-policy", self._policy)
        request.setHeader(b"x-frame-options", b"DENY")
        request.setHeader(b"referrer-policy", b"no-referrer")
        request.setHeader(b"x-content-type-options", b"nosniff")
        return self._page().encode()


class _Root(Resource):
    def __init__(
        self,
        status: Callable[[], Any],
        metrics: Callable[[], list[Metric]],
        control: ControlFunction | None,
        guard: Guard,
        tail: TailFunction | None = None,
    ):
        super().__init__()
        from procwork.monitor._page import content_policy, render_page

        json_leaf = _Leaf(
            b"application/json",
            lambda: json.dumps(status(), indent=2, sort_keys=True).encode() + b"\n",
        )
        metrics_leaf = _Leaf(
            b"text/plain; version=0.0.4; charset=utf-8",
            lambda: prometheus_text(metrics()).encode(),
        )
        # Resource provides IResource through zope, which mypy cannot see.
        buttons = guard.control and tail is not None
        root = _Negotiated(
            json_leaf,
            lambda: render_page(status(), control=buttons),
            content_policy(control=buttons),
        )
        self.putChild(b"", cast(IResource, root))
        self.putChild(b"status", cast(IResource, json_leaf))
        self.putChild(b"status.json", cast(IResource, json_leaf))
        self.putChild(b"metrics", cast(IResource, metrics_leaf))
        self.putChild(b"control", cast(IResource, _Control(control, guard)))
        self.putChild(b"tail", cast(IResource, _Tail(tail, guard)))

    def getChild(self, path: bytes, request: Request) -> IResource:
        # Resource's default 404 page is deprecated (it does not escape HTML).
        return pages.notFound(
            message="Try / (the status page), /status.json or /metrics."
        )


class _StatusSite(Site):
    """The status site: its channels guard what they read (see the module's
    docstring), its requests keep their bodies in memory."""

    # HTTPFactory's protocol builds a channel that may speak HTTP/2 (over
    # TLS, which this site never has); a plain HTTP/1.1 one is what we guard.
    # (The ignore: Twisted 26 annotates HTTPFactory.protocol, 25.5 does not.)
    protocol = _GuardedChannel  # type: ignore[assignment, unused-ignore]
    requestFactory = _MemoryRequest

    def __init__(self, resource: Resource, guard: Guard, timeout: float) -> None:
        super().__init__(resource, timeout=timeout)
        self.guard = guard

    def log(self, request: Any) -> None:
        """No access log: a scrape every few seconds is not news."""


def StatusSite(
    status: Callable[[], Any],
    metrics: Callable[[], list[Metric]],
    *,
    control: ControlFunction | None = None,
    token: str | None = None,
    tail: TailFunction | None = None,
) -> _StatusSite:
    """A Site serving ``/`` (the status page to browsers, JSON to others),
    ``/status`` and ``/status.json`` (JSON) and ``/metrics`` (Prometheus),
    and ``POST /control`` if given ``control`` and ``token``, and ``GET
    /tail`` if given ``tail`` too (then the page has its buttons and its
    tail). Its ``guard`` (a :class:`Guard`) counts the requests it refused."""
    guard = Guard(control is not None, token)
    root = _Root(status, metrics, control, guard, tail)
    site = _StatusSite(root, guard, IDLE_TIMEOUT)
    site.displayTracebacks = False
    site.noisy = False
    return site


class CappedFactory(WrappingFactory):
    """Serves at most ``limit`` connections at once; closes the rest at once.

    Returning None from ``buildProtocol`` makes the listening port close the
    socket it has just accepted, so a refused connection holds no
    descriptor. A refusal is logged once per burst (at most every
    ``warn_every`` seconds), not once per connection.
    """

    protocol = ProtocolWrapper
    noisy = False

    def __init__(
        self,
        wrapped: Any,
        limit: int,
        clock: Callable[[], float],
        warn_every: float = 60.0,
    ) -> None:
        super().__init__(wrapped)
        self.limit = limit
        self.refused = 0
        self._clock = clock
        self._warn_every = warn_every
        self._warned: float | None = None

    def buildProtocol(self, addr: IAddress | None) -> Any:
        if len(self.protocols) >= self.limit:
            self.refused += 1
            now = self._clock()
            if self._warned is None or now - self._warned >= self._warn_every:
                self._warned = now
                _log.warn(
                    "HTTP: {limit} connections open, the most served at once "
                    "(http_max_connections); new ones are refused ({refused} so far)",
                    limit=self.limit,
                    refused=self.refused,
                )
            return None
        return super().buildProtocol(addr)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_value(value: float) -> str:
    if value != value:  # NaN
        return "NaN"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def prometheus_text(metrics: Iterable[Metric]) -> str:
    """Render metrics in the Prometheus text exposition format."""
    lines: list[str] = []
    for name, kind, help_text, samples in metrics:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label_text = ",".join(
                f'{k}="{_escape(v)}"' for k, v in sorted(labels.items())
            )
            suffix = "{" + label_text + "}" if label_text else ""
            lines.append(f"{name}{suffix} {_format_value(value)}")
    return "\n".join(lines) + "\n"
