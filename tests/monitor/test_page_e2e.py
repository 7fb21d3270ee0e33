"""The status page's buttons and live tail, in a real headless chromium.

A real ``procwork monitor`` process with ``http_control`` serves the page;
chromium loads it and is driven over its DevTools pipe
(:mod:`tests.support.browser`) as a person would use it: the token typed
into the page, real mouse clicks on the buttons, and what the page shows
read from its DOM, checked against the monitor's own status. Another page,
on another origin, tries what a hostile site would. Every wait is bounded;
the monitor and the browser are killed (by pid and process group) at the end.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import signal
import subprocess
import textwrap
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import Browser, Page, browser
from tests.support.monitor import MonitorProcess, get, wait_for
from tests.support.tools import need_tool

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TOKEN = "page-test-token-0123456789"

CONFIG = f"""
[monitor]
max_load = false
socket = false
summary_every = 0
http_control = {{control}}
http_token = "{TOKEN}"

[[service]]
name = "web"
command = ["{{{{python}}}}", "-u", "-c", '''
import itertools, sys, time
for i in itertools.count():
    print(f"tick {{{{i}}}}", flush=True)
    print(f"warn {{{{i}}}}", file=sys.stderr, flush=True)
    time.sleep(0.2)
''']
start_seconds = 0

[[service]]
name = "worker"
command = ["sleep", "600"]
start_seconds = 0
"""


@pytest.fixture
def chromium() -> Iterator[Browser]:
    with browser(need_tool("chromium", "chromium-browser", package="chromium")) as b:
        yield b


@pytest.fixture
def monitor(tmp_path: Path, started: list[int]) -> Iterator[Any]:
    """``monitor(control=True)`` starts ``procwork monitor`` on CONFIG; its
    base URL. SIGTERMed (then SIGKILLed) at the end."""
    running: list[MonitorProcess] = []

    def start(control: bool = True) -> str:
        config = tmp_path / f"monitor{len(running)}.toml"
        config.write_text(
            textwrap.dedent(CONFIG.format(control="true" if control else "false"))
        )
        process = MonitorProcess(
            str(config),
            "--http",
            "127.0.0.1:0",
            stderr=tmp_path / f"stderr{len(running)}",
        )
        running.append(process)
        started.append(process.proc.pid)
        port = process.expect(r"status on http://127\.0\.0\.1:(\d+)/").group(1)
        base = f"http://127.0.0.1:{port}"
        wait_for(
            "both services running",
            lambda: all(
                s["state"] == "RUNNING" for s in status(base)["services"].values()
            ),
        )
        return base

    try:
        yield start
    finally:
        for process in running:
            if process.proc.poll() is None:
                process.proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.proc.wait(timeout=20)
            process.close()


def status(base: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(get(base + "/status.json"))
    return result


def state_on_page(page: Page, service: str, column: str = "state") -> Any:
    """What the page's services table shows for ``service``: its state, or
    the text of another column (``pid``)."""
    index = {"state": 1, "pid": 2}[column]
    return page.evaluate(
        f"""(() => {{
            const row = document.querySelector('#services tr[data-name="{service}"]');
            return row ? row.children[{index}].textContent.trim() : null;
        }})()"""
    )


def shows(page: Page, service: str, state: str) -> None:
    page.wait_for(
        f"""(() => {{
            const row = document.querySelector('#services tr[data-name="{service}"]');
            return row && row.querySelector(".state").textContent === "{state}";
        }})()""",
        what=f"the page to show {service} {state}",
    )


def sign_in(page: Page, token: str = TOKEN) -> None:
    """Type the token into the page and press its Use button."""
    page.type("#token", token)
    page.click('#token-form button[type="submit"]')
    page.wait_for(
        "document.getElementById('token-state').textContent === "
        "'token set for this tab'",
        what="the page to take the token",
    )


def said(page: Page) -> str:
    text: str = page.evaluate("document.getElementById('control-result').textContent")
    return text


# -- the buttons ----------


def test_the_buttons_stop_start_and_restart_a_service_as_a_person_clicks_them(
    chromium: Browser, monitor: Any, started: list[int]
) -> None:
    base = monitor()
    page = chromium.open(base + "/")
    sign_in(page)
    # The token is the tab's alone: not a cookie, not in the URL.
    assert page.evaluate("sessionStorage.getItem('procwork-token')") == TOKEN
    assert page.evaluate("document.cookie") == ""
    assert page.evaluate("location.href") == base + "/"

    page.click('button[data-action="stop"][data-service="web"]')
    shows(page, "web", "STOPPED")
    assert status(base)["services"]["web"]["state"] == "STOPPED"
    assert said(page) == "stop web: STOPPED"
    assert state_on_page(page, "worker") == "RUNNING"  # only the one clicked

    page.click('button[data-action="start"][data-service="web"]')
    shows(page, "web", "RUNNING")
    pid = status(base)["services"]["web"]["pid"]
    started.append(pid)
    page.wait_for(
        "document.getElementById('control-result').textContent.startsWith("
        "'start web: ')",
        what="the start's answer",
    )

    page.click('button[data-action="restart"][data-service="web"]')
    page.wait_for(
        "document.getElementById('control-result').textContent === "
        "'restart web: RUNNING'",
        what="the restart's answer",
    )
    new_pid = status(base)["services"]["web"]["pid"]
    started.append(new_pid)
    assert new_pid != pid
    page.wait_for(
        f"""document.querySelector('#services tr[data-name="web"]')
            .children[2].textContent === "{new_pid}" """,
        what="the page to show the new pid",
    )
    shows(page, "web", "RUNNING")


def test_a_wrong_token_is_refused_and_changes_nothing(
    chromium: Browser, monitor: Any
) -> None:
    base = monitor()
    pid = status(base)["services"]["web"]["pid"]
    page = chromium.open(base + "/")
    sign_in(page, "not-the-token-at-all-000")
    page.click('button[data-action="stop"][data-service="web"]')
    page.wait_for(
        "document.getElementById('control-result').textContent.includes('refused')",
        what="the refusal",
    )
    assert said(page) == (
        "stop web refused: a control request needs 'Authorization: Bearer TOKEN'"
    )
    page.click('button[data-action="tail"][data-service="web"]')
    page.wait_for(
        "document.getElementById('tail-lines').textContent.startsWith('refused')",
        what="the tail's refusal",
    )
    assert page.evaluate("document.getElementById('tail-lines').textContent") == (
        "refused: a tail needs 'Authorization: Bearer TOKEN'"
    )
    now = status(base)
    assert (now["services"]["web"]["state"], now["services"]["web"]["pid"]) == (
        "RUNNING",
        pid,
    )
    assert now["http"]["refused_requests"].get("401", 0) >= 2


# -- the live tail ----------


def test_the_tail_shows_a_services_latest_lines_and_follows_them(
    chromium: Browser, monitor: Any
) -> None:
    base = monitor()
    page = chromium.open(base + "/")
    sign_in(page)
    page.click('button[data-action="tail"][data-service="web"]')
    assert page.evaluate("document.getElementById('tail').hidden") is False
    assert page.evaluate("document.getElementById('tail-service').textContent") == "web"
    last = "(() => { const t = document.getElementById('tail-lines').textContent"
    first = page.wait_for(
        f"{last}.trim().split('\\n').pop(); return /^tick \\d+$/.test(t) && t; }})()",
        what="tick lines in the tail",
    )
    number = int(first.split()[1])
    # Live: later lines come without a reload (the poll, every second).
    page.wait_for(
        f"{last}.trim().split('\\n').pop(); return /^tick \\d+$/.test(t) && "
        f"Number(t.split(' ')[1]) >= {number + 5}; }})()",
        what="newer lines in the tail",
    )
    lines = page.evaluate(
        "document.getElementById('tail-lines').textContent.split('\\n')"
    )
    assert all(line.startswith("tick ") for line in lines)
    # The other stream, chosen in the page.
    page.evaluate(
        "(() => { const s = document.getElementById('tail-stream');"
        " s.value = 'stderr'; s.dispatchEvent(new Event('change')); })()"
    )
    page.wait_for(
        "document.getElementById('tail-lines').textContent.includes('warn ')",
        what="the stderr lines",
    )
    page.click("#tail-close")
    assert page.evaluate("document.getElementById('tail').hidden") is True


# -- another origin ----------

HOSTILE = """<!DOCTYPE html><html><body><script>
const monitor = "MONITOR";
const outcome = async (request) => {
  try {
    const response = await request();
    return response.type === "opaque" ? "sent, answer unreadable"
                                      : "answered " + response.status;
  } catch (error) {
    return "blocked: " + error;
  }
};
window.results = (async () => ({
  // Even knowing the token, with it in a header (a CORS preflight first):
  withToken: await outcome(() => fetch(monitor + "/control", {
    method: "POST",
    headers: {"Authorization": "Bearer TOKEN", "Content-Type": "application/json"},
    body: JSON.stringify({command: "stop", names: ["web"]}),
  })),
  // A "simple" request, sent without a preflight (no token can go with it):
  simple: await outcome(() => fetch(monitor + "/control", {
    method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"},
    body: JSON.stringify({command: "stop", names: ["web"]}),
  })),
  tail: await outcome(() => fetch(monitor + "/tail?service=web", {
    headers: {"Authorization": "Bearer TOKEN"},
  })),
}))();
</script></body></html>"""


@contextlib.contextmanager
def hostile_site(base: str) -> Iterator[str]:
    """A page on another port of this host (another origin, the same site)."""
    page = HOSTILE.replace("MONITOR", base).replace("TOKEN", TOKEN).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_a_page_of_another_origin_can_neither_control_the_monitor_nor_read_its_tail(
    chromium: Browser, monitor: Any
) -> None:
    """Another origin's page, even one that knows the token: the requests
    carrying it need a CORS preflight, never granted; the one sent without
    a preflight is refused as cross-site before its body is read."""
    base = monitor()
    pid = status(base)["services"]["web"]["pid"]
    with hostile_site(base) as url:
        page = chromium.open(url)
        results = page.wait_for("window.results", what="the hostile page's attempts")
    assert results == {
        "withToken": "blocked: TypeError: Failed to fetch",
        "simple": "sent, answer unreadable",
        "tail": "blocked: TypeError: Failed to fetch",
    }
    now = status(base)
    assert (now["services"]["web"]["state"], now["services"]["web"]["pid"]) == (
        "RUNNING",
        pid,
    )
    refused = now["http"]["refused_requests"]
    assert refused.get("403") == 1, refused  # the simple POST: cross-site
    assert refused.get("405") == 2, refused  # the two preflights


# -- without http_control ----------


def test_without_http_control_the_page_has_no_buttons_and_the_endpoints_refuse(
    chromium: Browser, monitor: Any
) -> None:
    base = monitor(control=False)
    page = chromium.open(base + "/")
    shows(page, "web", "RUNNING")
    assert page.evaluate("document.scripts.length") == 0
    assert page.evaluate("document.querySelectorAll('button').length") == 0
    assert page.evaluate("document.getElementById('token')") is None
    for request in (
        urllib.request.Request(
            base + "/tail?service=web", headers={"Authorization": f"Bearer {TOKEN}"}
        ),
        urllib.request.Request(
            base + "/control",
            data=b'{"command": "stop", "names": ["web"]}',
            headers={"Authorization": f"Bearer {TOKEN}"},
        ),
    ):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 403
        answer = json.loads(refused.value.read())
        assert answer["error"].startswith("control over HTTP is off")
    assert status(base)["services"]["web"]["state"] == "RUNNING"


def test_the_page_forbids_framing_and_any_script_or_origin_but_its_own(
    monitor: Any,
) -> None:
    base = monitor()
    request = urllib.request.Request(base + "/", headers={"Accept": "text/html"})
    with urllib.request.urlopen(request, timeout=10) as response:
        headers = response.headers
    policy = headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "connect-src 'self'" in policy
    assert "script-src 'sha256-" in policy and "unsafe" not in policy
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
