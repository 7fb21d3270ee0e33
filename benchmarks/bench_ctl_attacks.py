"""The monitor against control socket clients that misbehave: memory, descriptors.

Run from the repository root (Linux)::

    python benchmarks/bench_ctl_attacks.py followers      # 4 stalled tail -f, 30 s
    python benchmarks/bench_ctl_attacks.py connections    # 2000 held connections
    python benchmarks/bench_ctl_attacks.py followers --code /other/checkout

``followers``: a real ``procwork monitor`` runs one service printing
``--rate`` MB/s of 1000-byte lines; ``--followers`` shell pipelines
``procwork ctl tail -f -n 0 SERVICE | sleep 100000`` (a pager that stopped
reading) follow it for ``--seconds``. Measured every second: the
monitor's resident memory (``VmRSS``), its descriptors, its CPU, and what
the service wrote (``wchar``). Exits 1 when the RSS grew by more than
``--max-growth`` MiB (default 20).

``connections``: a real monitor under ``RLIMIT_NOFILE`` of ``--nofile``
(default 1024) runs a check every 0.5 s and a service that exits every
0.5 s and is restarted. ``--connections`` sockets connect to its control
socket (retrying while its listen backlog is full) and are held open for
``--seconds``; meanwhile ``procwork ctl status`` is run once. Measured:
the monitor's descriptors (sampled every 5 ms; the most), check runs and
failures and service restarts against the schedule (``/status.json``),
ctl's exit status and time, and what the held connections were told.
Exits 1 when a check run failed, ctl did not answer, or the descriptors
went over the baseline + 64 (the default cap) + 16 (closing at once) + 8.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _partners import (  # beside this script
    ROOT,
    Monitor,
    Sampler,
    cpu_seconds,
    descriptors,
    hold_connections,
    kill_group,
    loud_service,
    rss_mib,
    stalled_follower,
    told,
    written,
)


def followers(args: argparse.Namespace, temp: Path) -> int:
    config = "[monitor]\nhttp = false\nsummary_every = 0\nmax_load = false\n"
    config += loud_service("loud", args.rate)
    monitor = Monitor(temp, config, code=args.code)
    stalled: list[subprocess.Popen[bytes]] = []
    try:
        time.sleep(2)
        before, cpu_before = rss_mib(monitor.proc.pid), cpu_seconds(monitor.proc.pid)
        wrote_before = written(monitor.proc.pid)
        print(
            f"before: RSS {before:.1f} MiB, {descriptors(monitor.proc.pid)} descriptors"
        )
        for _ in range(args.followers):
            stalled.append(stalled_follower(monitor, "loud"))
        started = time.monotonic()
        peak = before
        while time.monotonic() - started < args.seconds:
            time.sleep(1)
            rss = rss_mib(monitor.proc.pid)
            peak = max(peak, rss)
            print(
                f"  {time.monotonic() - started:4.0f} s: RSS {rss:6.1f} MiB, "
                f"{descriptors(monitor.proc.pid)} descriptors, service wrote "
                f"{(written(monitor.proc.pid) - wrote_before) / 1e6:7.1f} MB"
            )
        elapsed = time.monotonic() - started
        after = rss_mib(monitor.proc.pid)
        cpu = (cpu_seconds(monitor.proc.pid) - cpu_before) / elapsed
        rate = (written(monitor.proc.pid) - wrote_before) / 1e6 / elapsed
        print(
            f"{args.followers} stalled followers of a service writing {rate:.1f} MB/s "
            f"for {elapsed:.0f} s: RSS {before:.1f} -> {after:.1f} MiB (max "
            f"{peak:.1f}); monitor CPU {100 * cpu:.0f}%"
        )
        cut = len(re.findall(r"read nothing for .* and was cut off", monitor.text()))
        print(f"followers cut off for reading nothing: {cut}")
        return 0 if peak - before <= args.max_growth else 1
    finally:
        for pipeline in stalled:
            kill_group(pipeline)
        monitor.stop()


def connections(args: argparse.Namespace, temp: Path) -> int:
    config = (
        "[monitor]\nsummary_every = 0\nmax_load = false\n"
        '[[check]]\nname = "tick"\ncommand = ["true"]\nevery = 0.5\n'
        '[[service]]\nname = "blink"\ncommand = ["sleep", "0.5"]\n'
        "start_seconds = 0.1\nmin_restart_delay = 0.01\nmax_restart_delay = 0.01\n"
    )
    monitor = Monitor(temp, config, code=args.code, http=True, nofile=args.nofile)
    held: list[socket.socket] = []
    sampler = None
    try:
        time.sleep(3)
        baseline = descriptors(monitor.proc.pid)
        first = monitor.status(timeout=30)
        started = time.monotonic()
        sampler = Sampler(monitor.proc.pid, every=0.005).start()
        try:
            held = hold_connections(monitor.sock, args.connections)
        except RuntimeError as e:
            raise SystemExit(f"the monitor stopped accepting: {e}") from None
        print(
            f"{len(held)} connections made in {time.monotonic() - started:.1f} s "
            f"(baseline {baseline} descriptors)"
        )
        code, took, error = monitor.ctl("status")
        print(f"ctl status while they are held: exit {code} in {took:.2f} s {error}")
        time.sleep(max(0.0, args.seconds - (time.monotonic() - started)))
        seen = told(held)
        last = monitor.status(timeout=30)
        sampler.stop()
        elapsed = time.monotonic() - started
        runs = last["checks"]["tick"]["runs"] - first["checks"]["tick"]["runs"]
        failed = last["checks"]["tick"]["failed"] - first["checks"]["tick"]["failed"]
        restarts = (
            last["services"]["blink"]["restarts"]
            - first["services"]["blink"]["restarts"]
        )
        print(f"over {elapsed:.1f} s: the held connections were told:")
        for what, count in seen.most_common():
            print(f"  {count:5d} x {what}")
        print(
            f"check runs {runs} (schedule {elapsed / 0.5:.0f}), {failed} failed; "
            f"service restarts {restarts}; descriptors at most {sampler.fds_max} "
            f"(baseline {baseline})"
        )
        print(f"control: {json.dumps(last.get('control'))}")
        fd_errors = monitor.text().count("out of file descriptors")
        print(f"'out of file descriptors' in the log: {fd_errors} times")
        bounded = sampler.fds_max <= baseline + 64 + 16 + 8
        return 0 if failed == 0 and code == 0 and bounded else 1
    finally:
        if sampler is not None:
            sampler.stop()
        for client in held:
            client.close()
        monitor.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("attack", choices=["followers", "connections"])
    parser.add_argument("--seconds", type=float, default=None, help="default 30/20")
    parser.add_argument("--followers", type=int, default=4)
    parser.add_argument("--rate", type=float, default=10, help="MB/s, default 10")
    parser.add_argument("--max-growth", type=float, default=20, help="MiB")
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--nofile", type=int, default=1024)
    parser.add_argument("--code", default=str(ROOT), help="checkout to run")
    args = parser.parse_args()
    if args.seconds is None:
        args.seconds = 30.0 if args.attack == "followers" else 20.0
    with tempfile.TemporaryDirectory() as temp:
        attack = followers if args.attack == "followers" else connections
        return attack(args, Path(temp))


if __name__ == "__main__":
    sys.exit(main())
