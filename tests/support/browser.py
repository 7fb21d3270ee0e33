"""A real headless chromium, driven over the DevTools protocol.

The status page's buttons are tested as a person uses them: a real mouse
click on a real button (``Input.dispatchMouseEvent`` at its place on the
page), real typing (``Input.insertText``), and what the page then shows
read from its DOM. The browser talks DevTools over a pipe
(``--remote-debugging-pipe``: JSON messages ended by a NUL on descriptors 3
and 4), so no websocket client is needed. Every read has a deadline; the
browser runs in a session of its own, killed whole (by its process group)
with its fresh profile when the test ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from tests.support import ROOT, child_env, program

#: chromium's flags for a test: headless, quiet, nothing fetched from outside.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


class BrowserError(AssertionError):
    """The browser answered a command with an error, or not in time."""


class Browser:
    """A headless chromium and its DevTools pipe.

    Args:
        chromium: Its path (see :func:`tests.support.tools.need_tool`).
    """

    def __init__(self, chromium: str) -> None:
        self._profile = tempfile.mkdtemp(prefix="procwork-chromium-")
        commands_read, self._commands = os.pipe()
        self._answers, answers_write = os.pipe()
        self._log = open(os.path.join(self._profile, "stderr.log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            program(
                "with_pipes",
                str(commands_read),
                str(answers_write),
                chromium,
                *FLAGS,
                "--remote-debugging-pipe",
                f"--user-data-dir={self._profile}",
                "about:blank",
            ),
            cwd=ROOT,
            env=child_env(),
            pass_fds=(commands_read, answers_write),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            start_new_session=True,  # its helpers too: killed as one group
        )
        os.close(commands_read)
        os.close(answers_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        timeout: float = 30,
    ) -> dict[str, Any]:
        """Send one command; its result (events met meanwhile are kept)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method}
        message["params"] = params or {}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read(deadline, method)
            if answer.get("id") != self._next_id:
                self.events.append(answer)
                continue
            if "error" in answer:
                raise BrowserError(f"{method}: {answer['error']}")
            result: dict[str, Any] = answer.get("result", {})
            return result

    def _read(self, deadline: float, method: str) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"{method}: no answer from chromium in time")
            ready, _, _ = select.select([self._answers], [], [], left)
            if ready:
                data = os.read(self._answers, 1 << 20)
                if not data:
                    raise BrowserError(f"{method}: chromium exited ({self.stderr()})")
                self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\0")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def open(self, url: str) -> Page:
        """A new tab, at ``url`` once it has loaded."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send(
            "Target.attachToTarget", {"targetId": target, "flatten": True}
        )["sessionId"]
        page = Page(self, session)
        page.go(url)
        return page

    def stderr(self) -> str:
        """The end of what chromium printed."""
        with open(os.path.join(self._profile, "stderr.log"), "rb") as f:
            return f.read()[-2000:].decode("utf-8", "replace")

    def close(self) -> None:
        """Kill the browser and its helpers (its process group), and reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        for fd in (self._commands, self._answers):
            os.close(fd)
        self._log.close()
        shutil.rmtree(self._profile, ignore_errors=True)


class Page:
    """One tab of a :class:`Browser`."""

    def __init__(self, browser: Browser, session: str) -> None:
        self._browser = browser
        self._session = session

    def send(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """A command to this tab."""
        return self._browser.send(method, params, session=self._session)

    def go(self, url: str) -> None:
        """Load ``url``, and wait (bounded) until it has loaded."""
        self.send("Page.navigate", {"url": url})
        self.wait_for(
            f"location.href === {json.dumps(url)} && document.readyState === "
            "'complete'",
            what=f"{url} loaded",
        )

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise is
        waited for)."""
        answer = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in answer:
            raise BrowserError(f"{expression}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def wait_for(self, expression: str, what: str, timeout: float = 30) -> Any:
        """Poll ``expression`` until it is truthy; its value. Fails after
        ``timeout`` seconds, saying ``what`` was awaited."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.1)

    def click(self, selector: str) -> None:
        """Click the element ``selector`` finds with the mouse, as a person
        would: pressed and released at its middle."""
        where = self.wait_for(
            f"""(() => {{
                const element = document.querySelector({json.dumps(selector)});
                if (!element) return null;
                element.scrollIntoView({{block: "center"}});
                const box = element.getBoundingClientRect();
                return [box.x + box.width / 2, box.y + box.height / 2];
            }})()""",
            what=f"{selector} on the page",
        )
        x, y = where
        self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
        for kind in ("mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
            )

    def type(self, selector: str, text: str) -> None:
        """Click into ``selector`` and type ``text``."""
        self.click(selector)
        self.send("Input.insertText", {"text": text})


@contextlib.contextmanager
def browser(chromium: str) -> Iterator[Browser]:
    """A :class:`Browser` for the block; killed, with its profile, after it."""
    started = Browser(chromium)
    try:
        yield started
    finally:
        started.close()
