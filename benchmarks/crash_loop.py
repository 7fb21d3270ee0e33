"""The crash loop of issue 16, with a real ``procwork monitor``: what it says.

One service ``sh -c 'sleep 1; exit 3'`` with the defaults, a check that
fails every other run (``failures = 2``) and one command alert on
``service.*`` that appends each event's name to a file. For ``--seconds``
(30) the script asks, every 0.5 s, ``procwork ctl status`` (the STATE
column), the status page (the service's state cell, its colour, the
title) and ``/status.json`` (its ``summary``, else its state); then it
prints, one line each, the restarts and unexpected exits, what each of
the three said (numbers replaced by ``N``, counted), and the alert's
deliveries by event.

Run from the repository root: ``.venv/bin/python benchmarks/crash_loop.py``
(``--seconds S``). Before issue 16: 30 restarts in 30 s, STARTING or a
green RUNNING, 76 to 86 deliveries; now: 5 exits, BACKOFF with the loop's
count, 1 delivery.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

# The venv's console script, as an operator runs it.
PROCWORK = str(Path(sys.executable).with_name("procwork"))

ROW = re.compile(
    r'<tr data-name="crash">.*?class="service-state"><span class="state (\w+)">'
    r"(.*?)</span>",
    re.S,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def shape(text: str) -> str:
    """``text`` with its numbers as N, so that samples group by form."""
    return re.sub(r"\d+(\.\d+)?", "N", text)


def fetch(url: str, accept: str) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=10) as response:
        body: bytes = response.read()
        return body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="crash-loop-") as tmp:
        d = Path(tmp)
        port, sock, said = free_port(), d / "ctl.sock", d / "alerts"
        flip = d / "flip"
        (d / "monitor.toml").write_text(
            f"""
[monitor]
http = "127.0.0.1:{port}"
socket = "{sock}"
summary_every = 0

[[service]]
name = "crash"
command = ["sh", "-c", "sleep 1; exit 3"]

[[check]]
name = "flaky"
command = ["sh", "-c", "if [ -e {flip} ]; then rm {flip}; exit 1; fi; touch {flip}"]
every = "1s"
failures = 2

[[alert]]
name = "count"
events = ["service.*"]
command = ["sh", "-c", "echo $PROCWORK_EVENT >> {said}"]
"""
        )
        with (d / "log").open("wb") as log:
            config, lock, until = d / "monitor.toml", d / "lock", args.seconds + 5
            monitor = subprocess.Popen(
                [
                    PROCWORK,
                    "monitor",
                    str(config),
                    "--lock-file",
                    str(lock),
                    "--duration",
                    str(until),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        seen: dict[str, collections.Counter[str]] = {
            k: collections.Counter() for k in ("ctl", "page", "title", "json")
        }
        status: dict[str, Any] = {}
        try:
            start = time.monotonic()
            while time.monotonic() - start < args.seconds:
                time.sleep(0.5)
                try:
                    table = subprocess.run(
                        [PROCWORK, "ctl", "--socket", str(sock), "status"],
                        capture_output=True,
                        text=True,
                        timeout=10,
                    ).stdout
                    page = fetch(f"http://127.0.0.1:{port}/", "text/html").decode()
                    status = json.loads(
                        fetch(f"http://127.0.0.1:{port}/status.json", "*/*")
                    )
                except (OSError, ValueError, subprocess.TimeoutExpired):
                    continue  # not up yet
                for line in table.splitlines():
                    if line.startswith("crash "):
                        seen["ctl"][shape(re.split(r"\s{2,}", line)[1])] += 1
                row = ROW.search(page)
                if row:
                    seen["page"][f"{shape(row.group(2))} [{row.group(1)}]"] += 1
                title = re.search(r"<title>(.*?)</title>", page)
                if title:
                    seen["title"][title.group(1)] += 1
                crash = status["services"]["crash"]
                seen["json"][shape(crash.get("summary") or crash["state"])] += 1
        finally:
            monitor.send_signal(signal.SIGTERM)
            monitor.wait(timeout=60)
        crash = status.get("services", {}).get("crash", {})
        events = said.read_text().split() if said.exists() else []
    print(
        f"in {args.seconds:g} s: restarts {crash.get('restarts')}, unexpected exits "
        f"{crash.get('failures', '(not counted)')}, state at the end "
        f"{crash.get('state')}"
    )
    for what, counts in seen.items():
        print(f"{what}: " + "; ".join(f"{n} x {s}" for s, n in counts.most_common()))
    by_event = collections.Counter(events).most_common()
    print(f"alert deliveries: {len(events)}: {dict(by_event)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
