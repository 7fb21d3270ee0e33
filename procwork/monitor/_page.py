"""The status page: the monitor's status as one HTML page, for people.

One self-contained page: inline CSS, no script, no external asset. It
refreshes itself every few seconds (``<meta http-equiv="refresh">``), shows
services, checks, rules, alerts and recent events, each state in its colour,
and is built from the same status dict ``/status.json`` serves, so the page
never says something the JSON does not.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["REFRESH_SECONDS", "render_page", "wants_html"]

#: Seconds between the page's own reloads.
REFRESH_SECONDS = 2

_COLOURS = {
    # green: fine; blue: on its way; amber: trouble; red: given up / failing
    "RUNNING": "ok",
    "ok": "ok",
    "STARTING": "busy",
    "STOPPING": "busy",
    "BACKOFF": "warn",
    "EXITED": "idle",
    "STOPPED": "idle",
    "FATAL": "bad",
    "failing": "bad",
    "failed": "bad",
    "timed out": "bad",
    "error": "bad",
}

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 .2em; }
h2 { font-size: 1.1em; margin: 1.4em 0 .4em; }
p.meta { color: #666; margin: 0; }
table { border-collapse: collapse; min-width: 40em; }
th, td { text-align: left; padding: .25em .8em .25em 0; border-bottom: 1px solid #ddd;
  vertical-align: top; }
th { font-weight: 600; color: #555; }
td.detail { font-family: ui-monospace, monospace; font-size: 12px; color: #444;
  max-width: 50em; overflow-wrap: anywhere; }
.state { font-weight: 600; padding: 0 .4em; border-radius: 3px; }
.ok { background: #d6f5d6; color: #145214; }
.busy { background: #d6e6f5; color: #143d66; }
.warn { background: #fbe9c6; color: #6b4a00; }
.bad { background: #f8d0d0; color: #7a1010; }
.idle { background: #e8e8e8; color: #444; }
.stderr { color: #7a1010; margin-top: .2em; }
"""


def wants_html(accept: str | None) -> bool:
    """Whether a client's ``Accept`` header prefers HTML to JSON.

    Browsers ask for ``text/html`` first; ``curl`` (``*/*``), scripts (no
    header) and clients asking for ``application/json`` get JSON, which is
    what ``/`` always served.
    """
    if not accept:
        return False
    best: dict[str, float] = {}
    for part in accept.split(","):
        kind, *params = (p.strip() for p in part.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        best[kind.lower()] = max(best.get(kind.lower(), 0.0), quality)
    html_q = max(best.get("text/html", 0.0), best.get("application/xhtml+xml", 0.0))
    json_q = best.get("application/json", 0.0)
    return html_q > 0 and html_q >= json_q


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _state(value: object) -> str:
    text = "" if value is None else str(value)
    colour = _COLOURS.get(text, "idle")
    return f'<span class="state {colour}">{_e(text or "-")}</span>'


def _service_state(s: Mapping[str, Any]) -> str:
    """A service's state cell: its summary (``BACKOFF (crash loop: 7 exits
    in 45 s, next start in 8 s)``), amber whenever it is not healthy (red
    when FATAL), so a crash loop is never green."""
    state = str(s.get("state"))
    if not s.get("healthy", True):
        colour = "bad" if state == "FATAL" else "warn"
    elif state == "BACKOFF":
        colour = "busy"  # a poller waiting for its next run
    else:
        colour = _COLOURS.get(state, "idle")
    text = s.get("summary") or state
    return f'<span class="state {colour}">{_e(text)}</span>'


def _service_detail(s: Mapping[str, Any]) -> str:
    """How it last ended; after a crash, what it said last on stderr."""
    detail = _e(s.get("last_exit") or "")
    stderr = s.get("last_stderr") or []
    if stderr and not s.get("healthy", True):
        lines = "<br>".join(_e(line) for line in stderr)
        detail += f'<div class="stderr">{lines}</div>'
    return detail


def _ago(stamp: float | None, now: float) -> str:
    if stamp is None:
        return "-"
    return _duration(max(0.0, now - stamp)) + " ago"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def _table(
    title: str,
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    section: str,
) -> str:
    body = "".join(
        f'<tr data-name="{_e(row[0])}">' + "".join(row[1:]) + "</tr>" for row in rows
    )
    if not body:
        body = f'<tr><td colspan="{len(headers)}">none</td></tr>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return (
        f'<h2>{_e(title)}</h2>\n<table id="{section}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>\n"
    )


def render_page(status: Mapping[str, Any], now: float | None = None) -> str:
    """The status page for a monitor's ``status()`` dict."""
    now = time.time() if now is None else now
    services = status.get("services", {})
    checks = status.get("checks", {})
    rules = status.get("rules", {})
    alerts = status.get("alerts", {})
    events = status.get("events", [])
    service_rows = [
        (
            name,
            f"<td>{_e(name)}</td>",
            f'<td class="service-state">{_service_state(s)}</td>',
            f"<td>{_e(s.get('pid') or '-')}</td>",
            f"<td>{_duration(s.get('uptime'))}</td>",
            f"<td>{_e(s.get('restarts'))}</td>",
            f'<td class="detail">{_service_detail(s)}</td>',
        )
        for name, s in services.items()
    ]
    check_rows = [
        (
            name,
            f"<td>{_e(name)}</td>",
            f'<td class="check-state">'
            f"{_state('failing' if c.get('failing') else c.get('last_outcome'))}</td>",
            f"<td>{_e(c.get('runs'))}</td>",
            f"<td>{_e(c.get('consecutive_failures'))}</td>",
            f"<td>{_ago(c.get('last_started'), now)}</td>",
            f'<td class="detail">{_e(c.get("last_detail"))} '
            f"{_e((c.get('last_output') or '').strip()[-200:])}</td>",
        )
        for name, c in checks.items()
    ]
    rule_rows = [
        (
            name,
            f"<td>{_e(name)}</td>",
            f"<td>{_e(r.get('action'))}{' (dry run)' if r.get('dry_run') else ''}</td>",
            f"<td>{_e(r.get('matches'))}</td>",
            f"<td>{_e(r.get('signals_sent'))}</td>",
        )
        for name, r in rules.items()
    ]
    alert_rows = [
        (
            name,
            f"<td>{_e(name)}</td>",
            f"<td>{_e(a.get('sent'))}</td>",
            f"<td>{_e(a.get('failed'))}</td>",
            f"<td>{_e(a.get('queued'))}</td>",
            f"<td>{_e(a.get('dropped'))}</td>",
            f"<td>{_e(a.get('last_event') or '-')}</td>",
            f'<td class="detail">{_e(a.get("last_result") or "")}</td>',
        )
        for name, a in alerts.items()
    ]
    event_rows = [
        (
            str(i),
            f"<td>{_ago(ev.get('time'), now)}</td>",
            f"<td>{_e(ev.get('event'))}</td>",
            f"<td>{_state(ev.get('state'))}</td>",
            f'<td class="detail">{_e(ev.get("message"))}</td>',
        )
        for i, ev in enumerate(reversed(events))
    ]
    # Running and well: a service in a crash loop is unhealthy, not running.
    running = sum(
        1
        for s in services.values()
        if s.get("state") == "RUNNING" and s.get("healthy", True)
    )
    unhealthy = sum(1 for s in services.values() if not s.get("healthy", True))
    failing = sum(1 for c in checks.values() if c.get("failing"))
    counts = f"{running}/{len(services)} running"
    counts += f", {unhealthy} unhealthy" if unhealthy else ""
    if failing:
        counts += f", {failing} check{'' if failing == 1 else 's'} failing"
    source = status.get("source", "")
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>procwork: {counts}</title>"
        f"<style>{_STYLE}</style></head><body>\n"
        "<h1>procwork monitor</h1>\n"
        f'<p class="meta">{_e(source)} &middot; pid {_e(status.get("pid"))} '
        f"&middot; up {_duration(status.get('uptime'))} &middot; "
        f'<span id="counts">{running}/{len(services)} services running'
        f"{f', {unhealthy} unhealthy' if unhealthy else ''}; "
        f"{failing}/{len(checks)} checks failing</span> &middot; "
        '<a href="/status.json">JSON</a> &middot; <a href="/metrics">metrics</a></p>\n'
        + _table(
            "Services",
            ["name", "state", "pid", "uptime", "restarts", "last exit"],
            service_rows,
            "services",
        )
        + _table(
            "Checks",
            ["name", "state", "runs", "failures in a row", "last run", "last result"],
            check_rows,
            "checks",
        )
        + _table(
            "Rules", ["name", "action", "matches", "signals sent"], rule_rows, "rules"
        )
        + _table(
            "Alerts",
            [
                "name",
                "sent",
                "failed",
                "queued",
                "dropped",
                "last event",
                "last result",
            ],
            alert_rows,
            "alerts",
        )
        + _table(
            "Recent events", ["when", "event", "state", "message"], event_rows, "events"
        )
        + "</body></html>\n"
    )
