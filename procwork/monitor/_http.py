"""The monitor's HTTP endpoint: the status page (HTML for browsers, JSON for
programs) and metrics as Prometheus text.

The endpoint must never cost the monitor its checks: at most
``max_connections`` are served at once (a new one past that is closed as
soon as it is accepted, so idle clients cannot take every file descriptor),
an idle connection is closed after ``IDLE_TIMEOUT`` seconds, and requests
are not logged one line each.

It is read-only unless the config says ``http_control = true`` (with an
``http_token``): then ``POST /control`` takes a request of the control
protocol as its JSON body, from a client that sends ``Authorization: Bearer
TOKEN``, and answers as the control socket does.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Iterable
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web import pages
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

__all__ = ["IDLE_TIMEOUT", "CappedFactory", "StatusSite", "prometheus_text"]

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

_MAX_BODY = 64 * 1024


class _Control(Resource):
    """``POST /control``: a control request, with the bearer token."""

    isLeaf = True

    def __init__(self, control: ControlFunction | None, token: str | None) -> None:
        super().__init__()
        self._control = control
        self._token = token

    def _answer(self, request: Request, code: int, answer: Any) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(answer, sort_keys=True).encode() + b"\n"

    def _refused(self, request: Request, code: int, why: str) -> bytes:
        return self._answer(request, code, {"procwork": 1, "ok": False, "error": why})

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"allow", b"POST")
        return self._refused(request, 405, "POST a control request here")

    def render_POST(self, request: Request) -> Any:
        if self._control is None or self._token is None:
            return self._refused(
                request,
                403,
                "control over HTTP is off: the monitor takes control requests "
                "on its socket (procwork ctl), or set http_control = true and "
                "http_token in [monitor]",
            )
        given = request.getHeader(b"authorization") or b""
        if isinstance(given, str):
            given = given.encode()
        expected = f"Bearer {self._token}".encode()
        # Compared in constant time: a timing difference would tell how much
        # of a guess was right.
        if not hmac.compare_digest(given, expected):
            request.setHeader(b"www-authenticate", b'Bearer realm="procwork"')
            return self._refused(
                request, 401, "a control request needs 'Authorization: Bearer TOKEN'"
            )
        assert request.content is not None
        body = request.content.read(_MAX_BODY + 1)
        try:
            if len(body) > _MAX_BODY:
                raise ValueError(f"request longer than {_MAX_BODY} bytes")
            message = json.loads(body)
            if not isinstance(message, dict):
                raise ValueError("expected a JSON object")
        except ValueError as e:
            return self._refused(request, 400, f"not a control request: {e}")

        def reply(answer: dict[str, Any]) -> None:
            if not request.finished and not request._disconnected:
                request.write(self._answer(request, 200, answer))
                request.finish()

        self._control(message).addCallback(reply)
        return NOT_DONE_YET


class _Negotiated(Resource):
    """``/``: the HTML page to browsers, JSON to everyone else."""

    isLeaf = True

    def __init__(self, json_leaf: _Leaf, page: Callable[[], str]) -> None:
        super().__init__()
        self._json = json_leaf
        self._page = page

    def render_GET(self, request: Request) -> bytes:
        from procwork.monitor._page import wants_html

        request.setHeader(b"vary", b"accept")
        accept = request.getHeader(b"accept")
        if not wants_html(None if accept is None else accept.decode("latin-1")):
            return self._json.render_GET(request)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return self._page().encode()


class _Root(Resource):
    def __init__(
        self,
        status: Callable[[], Any],
        metrics: Callable[[], list[Metric]],
        control: ControlFunction | None = None,
        token: str | None = None,
    ):
        super().__init__()
        from procwork.monitor._page import render_page

        json_leaf = _Leaf(
            b"application/json",
            lambda: json.dumps(status(), indent=2, sort_keys=True).encode() + b"\n",
        )
        metrics_leaf = _Leaf(
            b"text/plain; version=0.0.4; charset=utf-8",
            lambda: prometheus_text(metrics()).encode(),
        )
        # Resource provides IResource through zope, which mypy cannot see.
        root = _Negotiated(json_leaf, lambda: render_page(status()))
        self.putChild(b"", cast(IResource, root))
        self.putChild(b"status", cast(IResource, json_leaf))
        self.putChild(b"status.json", cast(IResource, json_leaf))
        self.putChild(b"metrics", cast(IResource, metrics_leaf))
        self.putChild(b"control", cast(IResource, _Control(control, token)))

    def getChild(self, path: bytes, request: Request) -> IResource:
        # Resource's default 404 page is deprecated (it does not escape HTML).
        return pages.notFound(
            message="Try / (the status page), /status.json or /metrics."
        )


class _QuietSite(Site):
    def log(self, request: Any) -> None:
        """No access log: a scrape every few seconds is not news."""


def StatusSite(
    status: Callable[[], Any],
    metrics: Callable[[], list[Metric]],
    *,
    control: ControlFunction | None = None,
    token: str | None = None,
) -> Site:
    """A Site serving ``/`` (the status page to browsers, JSON to others),
    ``/status`` and ``/status.json`` (JSON) and ``/metrics`` (Prometheus),
    and ``POST /control`` if given ``control`` and ``token``."""
    site = _QuietSite(_Root(status, metrics, control, token), timeout=IDLE_TIMEOUT)
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
