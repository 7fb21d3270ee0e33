"""``procwork monitor`` as a real child process, and ``procwork ctl`` run on it.

For the end-to-end tests of the monitor, the command and contrib/: every
wait here is bounded, and :class:`MonitorProcess` reads the monitor's output
from a thread so that no read can hang the test. The fixtures ``started``,
``ours`` and ``monitors`` (in ``tests/conftest.py``) kill what a test
started.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tests.support import PY, ROOT, alive, argv_of

T = TypeVar("T")


def gone(pid: int) -> bool:
    """True once ``pid`` is not :func:`~tests.support.alive`."""
    return not alive(pid)


def running_with(argument: str) -> list[int]:
    """Pids of the live processes that have ``argument`` among their arguments."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        args = argv_of(entry)
        if args and argument.encode() in args and alive(int(entry)):
            found.append(int(entry))
    return found


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class MonitorProcess:
    """``procwork monitor`` as a child process, its stdout read line by line.

    A reader thread puts each line in a queue, so every read has a bound.
    """

    def __init__(
        self,
        *args: str,
        stderr: Path,
        max_files: int | None = None,
        env: dict[str, str] | None = None,
        wrapper: Sequence[str] = (),
    ) -> None:
        self._stderr = stderr.open("wb")
        # A command the monitor is started through (setpriv ... --).
        prefix: list[str] = list(wrapper)
        if max_files is not None:
            # Started under a lower RLIMIT_NOFILE: descriptors run out sooner.
            prefix += ["prlimit", f"--nofile={max_files}:{max_files}", "--"]
        self.proc = subprocess.Popen(
            [*prefix, PY, "-m", "procwork", "monitor", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def expect(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """The first line ``pattern`` is found in, read already or from now on."""
        for line in self.lines:
            match = re.search(pattern, line)
            if match:
                return match
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line matching {pattern!r} in {timeout} s")
            try:
                item = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if item is None:
                raise AssertionError(
                    f"the monitor exited before printing {pattern!r}:\n"
                    + "\n".join(self.lines)
                )
            self.lines.append(item)
            match = re.search(pattern, item)
            if match:
                return match

    def drain(self, timeout: float = 10) -> list[str]:
        """Every line up to the end of the output (the monitor must be exiting)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
        return self.lines

    def close(self) -> None:
        """SIGKILL the monitor if it is still running (by pid), and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._stderr.close()


def get(url: str) -> bytes:
    """The body at ``url`` (10 s at most)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body


CTL = str(Path(PY).with_name("procwork"))
"""The installed ``procwork`` console script of this venv."""


def ctl(sock: Path | str | None, *args: str) -> subprocess.CompletedProcess[str]:
    """``procwork ctl [--socket SOCK] ARGS``, bounded."""
    where = [] if sock is None else ["--socket", str(sock)]
    return subprocess.run(
        [CTL, "ctl", *where, "--timeout", "30", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def statuses(sock: Path | str | None) -> dict[str, dict[str, Any]]:
    """``procwork ctl status --json``, which must succeed: the services by name."""
    done = ctl(sock, "status", "--json")
    assert done.returncode == 0, done.stderr
    result: dict[str, dict[str, Any]] = json.loads(done.stdout)
    return result


def python_service(name: str, code: str, ours: str, extra: str = "") -> str:
    """A [[service]] running ``code``, tagged with ``ours`` to find it in /proc."""
    return textwrap.dedent(
        f"""
        [[service]]
        name = "{name}"
        command = ["{{python}}", "-u", "-c", {json.dumps(code)}, "{ours}"]
        start_seconds = 0.2
        min_restart_delay = 0.1
        stop_timeout = 5
        """
    ) + textwrap.dedent(extra)


HEADER = "[monitor]\nhttp = false\nsummary_every = 0\nmax_load = false\n"
"""A [monitor] table for a test's monitor: no HTTP, no summary, no load gate."""


def start_monitor(
    monitors: list[MonitorProcess], tmp_path: Path, config: Path, *args: str
) -> MonitorProcess:
    """A monitor of ``config`` (in ``monitors``, the fixture that kills them),
    once it says its control socket listens."""
    monitor = MonitorProcess(str(config), *args, stderr=tmp_path / "stderr")
    monitors.append(monitor)
    monitor.expect(r"control socket on ")
    return monitor
