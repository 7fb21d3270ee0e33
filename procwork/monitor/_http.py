"""The monitor's HTTP endpoint: status as JSON, metrics as Prometheus text."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, cast

from twisted.web import pages
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site

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


class _Root(Resource):
    def __init__(self, status: Callable[[], Any], metrics: Callable[[], list[Metric]]):
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

    def getChild(self, path: bytes, request: Request) -> IResource:
        # Resource's default 404 page is deprecated (it does not escape HTML).
        return pages.notFound(message="Try / or /status (JSON) or /metrics.")


def StatusSite(status: Callable[[], Any], metrics: Callable[[], list[Metric]]) -> Site:
    """A Site serving ``/`` and ``/status`` (JSON) and ``/metrics`` (Prometheus)."""
    site = Site(_Root(status, metrics))
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
