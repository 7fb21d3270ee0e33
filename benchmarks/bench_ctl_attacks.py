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
import os
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
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

LOUD = textwrap.dedent(
    """
    import sys, time
    chunk = (b"x" * 999 + b"\\n") * 64
    per = len(chunk) / ({rate} * 1e6)
    out = sys.stdout.buffer
    due = time.monotonic()
    while True:
        out.write(chunk)
        out.flush()
        due += per
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    """
)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def descriptors(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def written(pid: int) -> int:
    """Bytes the monitor's children wrote (``wchar``)."""
    total = 0
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = f.read().split()
        for child in children:
            with open(f"/proc/{child}/io") as f:
                for line in f:
                    if line.startswith("wchar:"):
                        total += int(line.split()[1])
    except OSError:
        pass
    return total


class Monitor:
    """``procwork monitor CONFIG`` of the checkout ``code``, its log in a file."""

    def __init__(self, code: str, temp: Path, config: str, nofile: int | None) -> None:
        self.temp = temp
        self.sock = temp / "ctl.sock"
        self.log = temp / "monitor.log"
        (temp / "monitor.toml").write_text(config)
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (code, self.env.get("PYTHONPATH")) if p
        )
        command = [
            sys.executable,
            "-m",
            "procwork",
            "monitor",
            str(temp / "monitor.toml"),
        ]
        command += ["--socket", str(self.sock), "--lock-file", str(temp / "lock")]
        if nofile is not None:
            command = ["prlimit", f"--nofile={nofile}:{nofile}", "--", *command]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=temp
            )
        deadline = time.monotonic() + 30
        while not self.sock.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("the monitor did not start:\n" + self.text())
            time.sleep(0.05)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def ctl(self, *args: str) -> tuple[int, float, str]:
        started = time.monotonic()
        command = [sys.executable, "-m", "procwork", "ctl", "--socket", str(self.sock)]
        done = subprocess.run(
            [*command, "--timeout", "30", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
        )
        return done.returncode, time.monotonic() - started, done.stderr.strip()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def followers(args: argparse.Namespace, temp: Path) -> int:
    config = (
        "[monitor]\nhttp = false\nsummary_every = 0\nmax_load = false\n"
        '[[service]]\nname = "loud"\n'
        f'command = ["{{python}}", "-c", {json.dumps(LOUD.format(rate=args.rate))}]\n'
        "console_rate = 0\n"
    )
    monitor = Monitor(args.code, temp, config, None)
    stalled: list[subprocess.Popen[bytes]] = []
    try:
        time.sleep(2)
        before, cpu_before = rss_mib(monitor.proc.pid), cpu_seconds(monitor.proc.pid)
        wrote_before = written(monitor.proc.pid)
        print(
            f"before: RSS {before:.1f} MiB, {descriptors(monitor.proc.pid)} descriptors"
        )
        ctl = f"{sys.executable} -m procwork ctl --socket {monitor.sock}"
        for _ in range(args.followers):
            stalled.append(
                subprocess.Popen(
                    f"{ctl} tail -f -n 0 loud | sleep 100000",
                    shell=True,
                    start_new_session=True,
                    env=monitor.env,
                )
            )
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
            os.killpg(pipeline.pid, signal.SIGKILL)
            pipeline.wait(timeout=10)
        monitor.stop()


def connections(args: argparse.Namespace, temp: Path) -> int:
    config = (
        '[monitor]\nhttp = "127.0.0.1:0"\nsummary_every = 0\nmax_load = false\n'
        '[[check]]\nname = "tick"\ncommand = ["true"]\nevery = 0.5\n'
        '[[service]]\nname = "blink"\ncommand = ["sleep", "0.5"]\n'
        "start_seconds = 0.1\nmin_restart_delay = 0.01\nmax_restart_delay = 0.01\n"
    )
    monitor = Monitor(args.code, temp, config, args.nofile)
    held: list[socket.socket] = []
    try:
        match = None
        deadline = time.monotonic() + 30
        while match is None and time.monotonic() < deadline:
            match = re.search(r"status on http://127\.0\.0\.1:(\d+)/", monitor.text())
            time.sleep(0.05)
        if match is None:
            raise SystemExit("no HTTP port in the monitor's log")
        url = f"http://127.0.0.1:{match.group(1)}/status.json"

        def status() -> Any:
            with urllib.request.urlopen(url, timeout=30) as response:
                return json.loads(response.read())

        time.sleep(3)
        baseline = descriptors(monitor.proc.pid)
        first = status()
        started = time.monotonic()
        most = [baseline]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                most[0] = max(most[0], descriptors(monitor.proc.pid))
                time.sleep(0.005)

        threading.Thread(target=sample, daemon=True).start()
        for _ in range(args.connections):
            until = time.monotonic() + 30
            while True:
                client = socket.socket(socket.AF_UNIX)
                client.settimeout(30)
                try:
                    client.connect(str(monitor.sock))
                    held.append(client)
                    break
                except BlockingIOError:  # the listen backlog is full
                    client.close()
                    if time.monotonic() > until:
                        raise SystemExit("the monitor stopped accepting") from None
                    time.sleep(0.001)
        print(
            f"{len(held)} connections made in {time.monotonic() - started:.1f} s "
            f"(baseline {baseline} descriptors)"
        )
        code, took, error = monitor.ctl("status")
        print(f"ctl status while they are held: exit {code} in {took:.2f} s {error}")
        time.sleep(max(0.0, args.seconds - (time.monotonic() - started)))
        told: Counter[str] = Counter()
        for client in held:
            client.setblocking(False)
            try:
                data = client.recv(4096)
            except BlockingIOError:
                told["still open, told nothing"] += 1
                continue
            if not data:
                told["closed without a word"] += 1
            else:
                told[json.loads(data.splitlines()[0])["error"][:70] + "..."] += 1
        last = status()
        sampling.set()
        elapsed = time.monotonic() - started
        runs = last["checks"]["tick"]["runs"] - first["checks"]["tick"]["runs"]
        failed = last["checks"]["tick"]["failed"] - first["checks"]["tick"]["failed"]
        restarts = (
            last["services"]["blink"]["restarts"]
            - first["services"]["blink"]["restarts"]
        )
        print(f"over {elapsed:.1f} s: the held connections were told:")
        for what, count in told.most_common():
            print(f"  {count:5d} x {what}")
        print(
            f"check runs {runs} (schedule {elapsed / 0.5:.0f}), {failed} failed; "
            f"service restarts {restarts}; descriptors at most {most[0]} "
            f"(baseline {baseline})"
        )
        print(f"control: {json.dumps(last.get('control'))}")
        fd_errors = monitor.text().count("out of file descriptors")
        print(f"'out of file descriptors' in the log: {fd_errors} times")
        bounded = most[0] <= baseline + 64 + 16 + 8
        return 0 if failed == 0 and code == 0 and bounded else 1
    finally:
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
