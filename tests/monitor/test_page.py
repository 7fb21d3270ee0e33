"""The status page's HTML: read-only without control, buttons and a tail with it.

What the page does in a browser is tested in a real chromium
(``tests/monitor/test_page_e2e.py``); these are the promises of its text.
"""

from __future__ import annotations

import base64
import hashlib
import re

from procwork.monitor._page import ACTIONS, SCRIPT, content_policy, render_page

STATUS = {
    "source": "m.toml",
    "services": {
        "web": {"state": "RUNNING", "pid": 12},
        '<b>"x"': {"state": "STOPPED"},
    },
}


def sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def test_a_read_only_page_has_no_script_no_button_and_reloads_itself() -> None:
    page = render_page(STATUS)
    assert "<script" not in page and "<button" not in page and "<form" not in page
    assert '<meta http-equiv="refresh" content="2">' in page
    assert "script-src" not in content_policy(control=False)


def test_with_control_each_service_has_its_buttons_and_the_page_its_script() -> None:
    page = render_page(STATUS, control=True)
    for action in (*ACTIONS, "tail"):
        assert (
            f'<button type="button" data-action="{action}" data-service="web">'
            f"{action}</button>"
        ) in page
        # A name is escaped in the attribute the script reads it from.
        assert f'data-action="{action}" data-service="&lt;b&gt;&quot;x&quot;"' in page
    assert page.count("<script>") == 1 and f"<script>{SCRIPT}</script>" in page
    assert '<input id="token" type="password" autocomplete="off"' in page
    # The script refreshes the tables in place: a reload would close the tail.
    assert '<noscript><meta http-equiv="refresh" content="2"></noscript>' in page


def test_the_content_policy_lets_only_the_pages_own_script_and_style_run() -> None:
    page = render_page(STATUS, control=True)
    policy = dict(
        part.strip().split(" ", 1) for part in content_policy(control=True).split(";")
    )
    [script] = re.findall(r"<script>(.*?)</script>", page, re.S)
    [style] = re.findall(r"<style>(.*?)</style>", page, re.S)
    assert policy == {
        "default-src": "'none'",
        "style-src": f"'{sha256(style)}'",
        "script-src": f"'{sha256(script)}'",
        "connect-src": "'self'",
        "base-uri": "'none'",
        "form-action": "'none'",
        "frame-ancestors": "'none'",
    }
    assert "unsafe" not in content_policy(control=True)


def test_the_script_sends_the_token_as_a_header_from_session_storage_only() -> None:
    assert "sessionStorage.getItem(KEY)" in SCRIPT
    assert '"Authorization": "Bearer " + token()' in SCRIPT
    assert "document.cookie" not in SCRIPT and "localStorage" not in SCRIPT
    assert 'credentials: "omit"' in SCRIPT
    # Its URLs are this endpoint's paths; the token is in none of them.
    urls = re.findall(r'"(/[a-z]*\??)', SCRIPT)
    assert set(urls) == {"/", "/control", "/tail?"}
