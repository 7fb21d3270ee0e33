"""The monitor's memory against a webhook that answers with an endless body.

Run from the repository root (Linux)::

    python benchmarks/bench_webhook_endless.py              # 60 s
    python benchmarks/bench_webhook_endless.py --seconds 15
    python benchmarks/bench_webhook_endless.py --code /path/to/other/checkout

What runs. A webhook server (a child Python, plain sockets, one thread per
connection) answers every request with ``500`` and a body that never ends,
sent as fast as the client takes it. A real ``procwork monitor`` process
runs one check that flaps (fails and recovers every 0.2 s), and an alert
that POSTs every ``check.*`` event to that webhook: ``timeout = 5``,
``retries = 3``, ``retry_delay = 0.1``, ``max_in_flight = 4``, so up to 4
endless replies are being answered at any moment, and every attempt fails
(a 500) and is retried. The monitor's log goes to a file.

Measured: the monitor's resident memory (``VmRSS`` of ``/proc/PID/status``)
every 0.25 s, its maximum; what the alert did (``/status.json``); how many
connections the server saw, and how many the monitor closed (a send on it
failed). Exits 1 when the RSS went over ``--max-rss`` MiB (default 100), or
the monitor died; a monitor over ``--kill-rss`` MiB (default 2048) is
killed at once (for running this against a checkout without the cap).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SERVER = r"""
import socket, sys, threading
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
lock = threading.Lock()
stats = {"connections": 0, "closed": 0, "sent": 0}
chunk = b"x" * 65536

def serve(sock):
    try:
        sock.recv(65536)
        sock.sendall(b"HTTP/1.1 500 Endless\r\ncontent-type: text/plain\r\n\r\n")
        while True:
            n = sock.send(chunk)
            with lock:
                stats["sent"] += n
    except OSError:
        with lock:
            stats["closed"] += 1
    finally:
        sock.close()

def report():
    for _ in sys.stdin:  # one line in: one line of stats out
        with lock:
            print(stats["connections"], stats["closed"], stats["sent"], flush=True)

threading.Thread(target=report, daemon=True).start()
while True:
    sock, _ = server.accept()
    with lock:
        stats["connections"] += 1
    threading.Thread(target=serve, args=(sock,), daemon=True).start()
"""


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--max-rss", type=float, default=100, help="MiB")
    parser.add_argument("--kill-rss", type=float, default=2048, help="MiB")
    parser.add_argument("--code", default=str(ROOT), help="checkout to run")
    args = parser.parse_args()

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (args.code, env.get("PYTHONPATH")) if p
    )
    with tempfile.TemporaryDirectory() as temp:
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdin is not None and server.stdout is not None
        port = int(server.stdout.readline())
        config = Path(temp, "monitor.toml")
        config.write_text(
            textwrap.dedent(
                f"""
                [monitor]
                summary_every = 0
                max_load = false

                [[check]]
                name = "flapping"
                command = ["{sys.executable}", "-c",
                           "import time, sys; sys.exit(int(time.time() * 5) % 2)"]
                every = 0.2

                [[alert]]
                name = "endless"
                events = ["check.*"]
                webhook = "http://127.0.0.1:{port}/hook"
                timeout = 5
                retries = 3
                retry_delay = 0.1
                max_in_flight = 4
                """
            )
        )
        command = [sys.executable, "-m", "procwork", "monitor", str(config)]
        command += ["--http", "127.0.0.1:0", "--socket", str(Path(temp, "ctl.sock"))]
        with Path(temp, "monitor.log").open("wb") as log:
            monitor = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=temp
            )
            try:
                return measure(args, monitor, server, Path(temp, "monitor.log"))
            finally:
                for child in (monitor, server):
                    if child.poll() is None:
                        child.kill()
                        child.wait(timeout=10)


def measure(
    args: argparse.Namespace,
    monitor: subprocess.Popen[bytes],
    server: subprocess.Popen[str],
    log: Path,
) -> int:
    assert server.stdin is not None and server.stdout is not None
    deadline = time.monotonic() + 30
    port = None
    while port is None and time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if "status on http://127.0.0.1:" in line:
                port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        time.sleep(0.1)
    if port is None:
        print("the monitor did not start:\n" + log.read_text(errors="replace"))
        return 1
    start = rss_mib(monitor.pid)
    peak, samples = start, []
    ended = time.monotonic() + args.seconds
    killed = False
    while time.monotonic() < ended and monitor.poll() is None:
        rss = rss_mib(monitor.pid)
        samples.append(rss)
        peak = max(peak, rss)
        if rss > args.kill_rss:
            monitor.kill()
            killed = True
            break
        time.sleep(0.25)
    alive = not killed and monitor.poll() is None
    alert: dict[str, object] = {}
    if alive:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/status.json", timeout=30
            ) as response:
                alert = json.loads(response.read())["alerts"]["endless"]
        except OSError as e:
            print(f"the monitor's status could not be read: {e}")
    server.stdin.write("\n")
    server.stdin.flush()
    connections, closed, sent = map(int, server.stdout.readline().split())
    print(
        f"monitor RSS: start {start:.1f} MiB, max {peak:.1f} MiB, "
        f"end {samples[-1]:.1f} MiB"
    )
    print(f"  ({len(samples)} samples over {args.seconds:g} s)")
    if killed:
        print(f"  killed: RSS over {args.kill_rss:g} MiB")
    print(
        f"alert: sent {alert.get('sent')}, ok {alert.get('ok')}, "
        f"failed {alert.get('failed')}, dropped {alert.get('dropped')}, "
        f"last result {alert.get('last_result')!r}"
    )
    print(
        f"webhook server: {connections} connections, {closed} of them closed "
        f"(a send failed), {sent / 2**20:.0f} MiB sent in all (the kernel's "
        "socket buffers take a few MiB of each before the monitor hangs up)"
    )
    if not alive:
        print("FAILED: the monitor is not running")
        return 1
    if peak > args.max_rss:
        print(f"FAILED: RSS max {peak:.1f} MiB > {args.max_rss:g} MiB")
        return 1
    print(f"ok: RSS max {peak:.1f} MiB <= {args.max_rss:g} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
