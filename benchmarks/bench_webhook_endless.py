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
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from _partners import ROOT, EndlessWebhook, Monitor, rss_mib  # beside this script


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--max-rss", type=float, default=100, help="MiB")
    parser.add_argument("--kill-rss", type=float, default=2048, help="MiB")
    parser.add_argument("--code", default=str(ROOT), help="checkout to run")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temp, EndlessWebhook() as server:
        config = textwrap.dedent(
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
            webhook = "{server.url}"
            timeout = 5
            retries = 3
            retry_delay = 0.1
            max_in_flight = 4
            """
        )
        monitor = Monitor(Path(temp), config, code=args.code, http=True)
        try:
            return measure(args, monitor, server)
        finally:
            if monitor.proc.poll() is None:
                monitor.proc.kill()
                monitor.proc.wait(timeout=10)


def measure(args: argparse.Namespace, monitor: Monitor, server: EndlessWebhook) -> int:
    pid = monitor.proc.pid
    start = rss_mib(pid)
    peak, samples = start, []
    ended = time.monotonic() + args.seconds
    killed = False
    while time.monotonic() < ended and monitor.proc.poll() is None:
        rss = rss_mib(pid)
        samples.append(rss)
        peak = max(peak, rss)
        if rss > args.kill_rss:
            monitor.proc.kill()
            killed = True
            break
        time.sleep(0.25)
    alive = not killed and monitor.proc.poll() is None
    alert: dict[str, object] = {}
    if alive:
        try:
            alert = monitor.status(timeout=30)["alerts"]["endless"]
        except OSError as e:
            print(f"the monitor's status could not be read: {e}")
    connections, closed, sent = server.stats()
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
