"""``procwork monitor`` whose stdout nobody reads: does it still keep time?

Runs a real ``procwork monitor`` with its stdout a pipe that this script never
reads (``procwork monitor | less`` with the pager paused), a service that
prints about a thousand lines a second (so the pipe and the 1 MiB buffer
are full within seconds) and a check every 0.5 s. After ``--seconds`` of
that it reads the monitor's status over HTTP, reads the pipe again for
``--reader-back`` seconds (3; 0: not before the exit), sends SIGTERM and
times the exit, and prints:

- check runs during the window against the schedule (runs / due);
- how long the exit took after SIGTERM;
- ``procwork_log_lines_dropped_total`` from ``/metrics``, and the "N log
  lines dropped" line found in the output once it is read.

It fails (exit 1) when runs fall under 90 % of the schedule or the exit
takes over 2 s. Run: ``.venv/bin/python benchmarks/stalled_stdout.py``
(``--seconds 30`` by default; ``--load N`` adds N busy-looping processes).
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVERY = 0.5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body


def runs(base: str) -> int:
    status = json.loads(get(base + "/status.json"))
    return int(status["checks"]["tick"]["runs"])


def dropped(base: str) -> float | None:
    text = get(base + "/metrics").decode()
    match = re.search(r"^procwork_log_lines_dropped_total (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--load", type=int, default=0)
    parser.add_argument(
        "--reader-back",
        type=float,
        default=3.0,
        help="seconds the pipe is read before SIGTERM (0: SIGTERM while unread)",
    )
    args = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(args.load)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "monitor.toml"
        config.write_text(
            textwrap.dedent(
                f"""
                [monitor]
                max_load = false
                summary_every = 1
                socket = "{tmp}/monitor.sock"

                [[service]]
                name = "chatty"
                command = ["{{python}}", "-u", "-c", '''
import time
i = 0
while True:
    i += 1
    print(f"line {{i}} " + "x" * 60)
    time.sleep(0.001)
''']
                console_rate = 1000

                [[check]]
                name = "tick"
                command = ["true"]
                every = {EVERY}
                """
            )
        )
        monitor = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "procwork",
                "monitor",
                str(config),
                "--http",
                f"127.0.0.1:{port}",
                "--lock-file",
                f"{tmp}/lock",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,  # never read until the end
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    first = runs(base)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        print("the monitor did not answer within 30 s")
                        return 1
                    time.sleep(0.1)
            started = time.monotonic()
            time.sleep(args.seconds)
            try:
                last = runs(base)
                lost = dropped(base)
            except OSError as e:
                print(f"no answer over HTTP after {args.seconds:g} s: {e}")
                last, lost = first, None
            window = time.monotonic() - started
            due = window / EVERY
            # The reader comes back (the buffered lines, then the notice),
            # or with --reader-back 0 the SIGTERM finds the pipe still full.
            assert monitor.stdout is not None
            chunks: list[bytes] = []
            reader = threading.Thread(
                target=lambda: chunks.extend(iter(monitor.stdout.readline, b"")),
                daemon=True,
            )
            if args.reader_back:
                reader.start()
                time.sleep(args.reader_back)
            term = time.monotonic()
            monitor.send_signal(signal.SIGTERM)
            try:
                monitor.wait(timeout=30)
                exit_seconds: float | None = time.monotonic() - term
            except subprocess.TimeoutExpired:
                exit_seconds = None
            if not args.reader_back:
                reader.start()
            reader.join(10)
            output = b"".join(chunks)
        finally:
            if monitor.poll() is None:
                monitor.kill()
                monitor.wait(timeout=10)
            for hog in hogs:
                hog.kill()
                hog.wait(timeout=10)
    notices = re.findall(rb"(\d+) log lines dropped: stdout was not read", output)
    ratio = (last - first) / due
    print(
        f"window {window:.1f} s, stdout unread, {args.load} busy processes; "
        f"read again {args.reader_back:g} s before SIGTERM"
    )
    print(f"check runs: {last - first} of {due:.0f} due ({ratio:.0%})")
    print(
        "exit after SIGTERM: "
        + ("none within 30 s" if exit_seconds is None else f"{exit_seconds:.2f} s")
        + f", status {monitor.returncode}"
    )
    print(f"procwork_log_lines_dropped_total: {lost}")
    print(f"dropped-lines notices in the output: {[int(n) for n in notices]}")
    ok = ratio >= 0.9 and exit_seconds is not None and exit_seconds <= 2
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
