"""The monitor's HTTP endpoint: status as JSON, metrics as Prometheus text.

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
from twisted.web import pages
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

__all__ = ["StatusSite", "prometheus_text"]

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


class _Root(Resource):
    def __init__(
        self,
        status: Callable[[], Any],
        metrics: Callable[[], list[Metric]],
        control: ControlFunction | None = None,
        token: str | None = None,
    ):
        super().__init__()
        json_leaf = _Leaf(
            b"application/json",
            lambda: json.dumps(status(), indent=2, sort_keys=True).encode() + b"\n",
        )
        metrics_leaf = _Leaf(
            b"text/plain; version=0.0.4; charset=utf-8",
            lambda: prometheus_text(metrics()).encode(),
        )
        # Resource provides IResource through zope, which mypy cannot see.
        self.putChild(b"", cast(IResource, json_leaf))
        self.putChild(b"status", cast(IResource, json_leaf))
        self.putChild(b"metrics", cast(IResource, metrics_leaf))
        self.putChild(b"control", cast(IResource, _Control(control, token)))

    def getChild(self, path: bytes, request: Request) -> IResource:
        # Resource's default 404 page is deprecated (it does not escape HTML).
        return pages.notFound(message="Try / or /status (JSON) or /metrics.")


def StatusSite(
    status: Callable[[], Any],
    metrics: Callable[[], list[Metric]],
    *,
    control: ControlFunction | None = None,
    token: str | None = None,
) -> Site:
    """A Site serving ``/`` and ``/status`` (JSON) and ``/metrics`` (Prometheus),
    and ``POST /control`` if given ``control`` and ``token``."""
    site = Site(_Root(status, metrics, control, token))
    site.displayTracebacks = False
    site.noisy = False
    return site


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
