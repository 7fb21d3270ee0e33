"""The status page: the monitor's status as one HTML page, for people.

One self-contained page: inline CSS, no external asset. It refreshes itself
every few seconds (``<meta http-equiv="refresh">``), shows services, checks,
rules, alerts and recent events, each state in its colour, and is built
from the same status dict ``/status.json`` serves, so the page never says
something the JSON does not. Read-only, it has no script at all.

With ``http_control`` (:func:`render_page` with ``control``), each service
has start, stop, restart and tail buttons, and one inline script
(:data:`SCRIPT`) makes them work: the operator types the token once into
the page, which keeps it in the tab's ``sessionStorage`` (never a cookie,
never in a URL) and sends it as ``Authorization: Bearer`` with each
``POST /control`` and each ``GET /tail`` (polled every second while a tail
is open). The script refreshes the tables in place (a reload would close
the tail), from ``/`` as the page itself. The page's Content-Security-Policy
(:func:`content_policy`) lets only that script and style run, and only
this endpoint be fetched, and no other site frame the page.
"""

from __future__ import annotations

import base64
import hashlib
import html
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "ACTIONS",
    "REFRESH_SECONDS",
    "SCRIPT",
    "TAIL_EVERY",
    "content_policy",
    "render_page",
    "wants_html",
]

#: Seconds between the polls of an open tail.
TAIL_EVERY = 1

#: The buttons of a service, with control on: the control requests they send.
ACTIONS = ("start", "stop", "restart")

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
td.actions button { font-size: 12px; margin-right: .3em; }
#control { margin: 1em 0 0; }
#control-result.bad { color: #7a1010; }
#tail pre { background: #111; color: #ddd; padding: .6em; max-height: 30em;
  overflow: auto; font-size: 12px; white-space: pre-wrap; overflow-wrap: anywhere; }
"""

#: The script of a page with control: its buttons, its tail, its refresh.
SCRIPT = """
"use strict";
(() => {
  const KEY = "procwork-token";
  const $ = (id) => document.getElementById(id);
  const token = () => sessionStorage.getItem(KEY) || "";
  const say = (text, bad) => {
    $("control-result").textContent = text;
    $("control-result").className = bad ? "bad" : "";
  };
  const showToken = () => {
    $("token-state").textContent = token()
      ? "token set for this tab"
      : "no token: type it to use the buttons and the tail";
  };
  // The token goes in a header, never a cookie or a URL: so no other
  // site can have a browser send it, and it is in no log or history.
  const call = async (method, url, body) => {
    const headers = {"Authorization": "Bearer " + token()};
    const init = {method, headers, cache: "no-store", credentials: "omit",
                  redirect: "error"};
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(url, init);
    return {status: response.status, answer: await response.json()};
  };
  const refresh = async () => {
    try {
      const response = await fetch("/", {headers: {"Accept": "text/html"},
                                         cache: "no-store", credentials: "omit"});
      const fresh = new DOMParser().parseFromString(await response.text(),
                                                    "text/html");
      const tables = fresh.getElementById("status");
      if (tables) {
        $("status").replaceWith(document.adoptNode(tables));
        document.title = fresh.title;
      }
    } catch (error) {
      say("the monitor does not answer: " + error, true);
    }
  };
  let tailing = null;
  const pollTail = async () => {
    if (tailing === null) return;
    if (!token()) {
      $("tail-lines").textContent = "type the token to see the output";
      return;
    }
    const url = "/tail?service=" + encodeURIComponent(tailing) +
                "&stream=" + encodeURIComponent($("tail-stream").value) +
                "&lines=200";
    try {
      const {answer} = await call("GET", url);
      const text = answer.ok ? answer.result.lines.join("\\n")
                             : "refused: " + answer.error;
      const pre = $("tail-lines");
      if (pre.textContent !== text) {
        const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.textContent = text;
        if (atEnd) pre.scrollTop = pre.scrollHeight;
      }
    } catch (error) {
      $("tail-lines").textContent = "tail failed: " + error;
    }
  };
  const act = async (action, name) => {
    if (!token()) {
      say("type the token first", true);
      return;
    }
    say(action + " " + name + "...");
    try {
      const {answer} = await call("POST", "/control",
                                  {command: action, names: [name]});
      if (answer.ok) {
        const service = answer.result.services[name];
        say(action + " " + name + ": " + (service ? service.state : "done"));
      } else {
        say(action + " " + name + " refused: " + answer.error, true);
      }
    } catch (error) {
      say(action + " " + name + " failed: " + error, true);
    }
    refresh();
  };
  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const {action, service} = button.dataset;
    if (action === "tail") {
      tailing = service;
      $("tail-service").textContent = service;
      $("tail-lines").textContent = "";
      $("tail").hidden = false;
      pollTail();
    } else {
      act(action, service);
    }
  });
  $("tail-close").addEventListener("click", () => {
    tailing = null;
    $("tail").hidden = true;
  });
  $("tail-stream").addEventListener("change", pollTail);
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $("token").value);
    $("token").value = "";
    showToken();
    pollTail();
  });
  $("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    showToken();
  });
  showToken();
  setInterval(refresh, REFRESH_MS);
  setInterval(pollTail, TAIL_MS);
})();
""".replace("REFRESH_MS", str(REFRESH_SECONDS * 1000)).replace(
    "TAIL_MS", str(TAIL_EVERY * 1000)
)

_CONTROLS = """
<form id="token-form" autocomplete="off">
<label>Token <input id="token" type="password" autocomplete="off" size="24"></label>
<button type="submit">Use</button>
<button type="button" id="token-forget">Forget</button>
<span id="token-state" class="meta"></span>
</form>
<p id="control-result" role="status"></p>
"""

_TAIL = """
<section id="tail" hidden>
<h2>Output of <span id="tail-service"></span>
<select id="tail-stream"><option>stdout</option><option>stderr</option></select>
<button type="button" id="tail-close">close</button></h2>
<pre id="tail-lines"></pre>
</section>
"""


def _digest(text: str) -> str:
    return (
        "'sha256-"
        + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        + "'"
    )


def content_policy(control: bool) -> str:
    """The page's Content-Security-Policy: its own style (and, with
    control, its own script, which may fetch from this endpoint alone);
    no other resource, no form sent anywhere, no framing by any site."""
    script = f"script-src {_digest(SCRIPT)}; connect-src 'self'" if control else ""
    return "; ".join(
        part
        for part in (
            "default-src 'none'",
            f"style-src {_digest(_STYLE)}",
            script,
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
        if part
    )


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


def _buttons(name: str) -> str:
    return (
        '<td class="actions">'
        + "".join(
            f'<button type="button" data-action="{action}" '
            f'data-service="{_e(name)}">{action}</button>'
            for action in (*ACTIONS, "tail")
        )
        + "</td>"
    )


def render_page(
    status: Mapping[str, Any], now: float | None = None, *, control: bool = False
) -> str:
    """The status page for a monitor's ``status()`` dict; with ``control``,
    its buttons, its tail and its script."""
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
            *([_buttons(name)] if control else []),
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
    refresh = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
    if control:  # the script refreshes the tables (a reload would close the tail)
        refresh = f"<noscript>{refresh}</noscript>"
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        + refresh
        + '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>procwork: {counts}</title>"
        f"<style>{_STYLE}</style></head><body>\n"
        "<h1>procwork monitor</h1>\n"
        + (_CONTROLS + _TAIL if control else "")
        + '<div id="status">\n'
        f'<p class="meta">{_e(source)} &middot; pid {_e(status.get("pid"))} '
        f"&middot; up {_duration(status.get('uptime'))} &middot; "
        f'<span id="counts">{running}/{len(services)} services running'
        f"{f', {unhealthy} unhealthy' if unhealthy else ''}; "
        f"{failing}/{len(checks)} checks failing</span> &middot; "
        '<a href="/status.json">JSON</a> &middot; <a href="/metrics">metrics</a></p>\n'
        + _table(
            "Services",
            ["name", "state", "pid", "uptime", "restarts", "last exit"]
            + (["actions"] if control else []),
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
        + "</div>\n"
        + (f"<script>{SCRIPT}</script>\n" if control else "")
        + "</body></html>\n"
    )
