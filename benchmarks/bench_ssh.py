"""Remote runs: procwork over one SSH connection vs the OpenSSH client.

Run from the repository root (Linux, as a user that may start an sshd: the
server is the test suite's, tests/support/sshd.py, on 127.0.0.1)::

    python benchmarks/bench_ssh.py            # 500 runs x 3 rounds
    python benchmarks/bench_ssh.py --quick    # 100 runs x 1 round

Each contender runs ``/bin/true`` on the same sshd, N times, 16 at a time,
in the same process, rounds interleaved; the figure is the median wall time
of the rounds, and the ratios are of those medians.

- **procwork**: ``procwork.run(["/bin/true"], host=...)`` x N, all submitted
  at once under ``Scheduler(max_running=16, load=NoLoadLimit())``; one
  connection (opened before timing starts), one channel per run.
- **ssh**: ``ssh -p PORT ... 127.0.0.1 /bin/true`` from 16 threads, a new
  connection (TCP, key exchange, authentication) per run.
- **ssh ControlMaster**: the same through a master connection started before
  timing (``-o ControlPath=...``): a channel of it per run, as procwork does,
  but a client process per run.

The sshd session itself (fork, the shell, exec) is paid by every contender
alike; the test sshd gives sessions a HOME without dotfiles (tests/support/sshd.py),
so a slow ~/.bashrc on the machine does not drown the differences.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _table import print_table  # noqa: E402
from twisted.internet.defer import DeferredList  # noqa: E402

import procwork  # noqa: E402
import untwisted  # noqa: E402
from tests.support.sshd import Sshd, start_sshd  # noqa: E402

CONCURRENCY = 16


def ssh_base(server: Sshd) -> list[str]:
    return [
        *("ssh", "-p", str(server.port), "-i", str(server.identity)),
        *("-o", f"UserKnownHostsFile={server.known_hosts}"),
        *("-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"),
        *("-o", "LogLevel=ERROR", "127.0.0.1"),
    ]


def procwork_round(server: Sshd, n: int) -> float:
    scheduler = procwork.Scheduler(max_running=CONCURRENCY, load=procwork.NoLoadLimit())
    where: dict[str, Any] = {
        "host": server.host,
        "known_hosts": server.known_hosts,
        "identity": server.identity,
    }
    started = time.perf_counter()
    runs = [procwork.run(["/bin/true"], scheduler=scheduler, **where) for _ in range(n)]
    results = untwisted.run(DeferredList(runs, fireOnOneErrback=True), timeout=600)
    elapsed = time.perf_counter() - started
    assert all(r.ok for _, r in results), [r for _, r in results if not r.ok][:3]
    return elapsed


RETRIED: dict[str, int] = {}


def client_round(name: str, argv: list[str], n: int) -> float:
    def one(_: int) -> int:
        for _attempt in range(2):
            code = subprocess.run(
                argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=120
            ).returncode
            if code == 0:
                return 0
            # A client killed from outside (a busy shared machine): run it
            # again, and say so below.
            RETRIED[name] = RETRIED.get(name, 0) + 1
        return code

    started = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        codes = list(pool.map(one, range(n)))
    elapsed = time.perf_counter() - started
    assert codes == [0] * n, sorted(set(codes))
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 runs, 1 round")
    parser.add_argument("--rounds", type=int, default=3, help="default 3")
    args = parser.parse_args()
    n, rounds = (100, 1) if args.quick else (500, args.rounds)

    with tempfile.TemporaryDirectory() as tmp:
        server = start_sshd(Path(tmp) / "sshd")
        master: subprocess.Popen[bytes] | None = None
        try:
            pool = procwork.ssh_pool()
            pool.max_sessions = CONCURRENCY + 1  # one more for kill requests
            # Open procwork's connection before timing, as the master's is.
            assert untwisted.run(
                procwork.run(
                    ["/bin/true"],
                    host=server.host,
                    known_hosts=server.known_hosts,
                    identity=server.identity,
                ),
                timeout=60,
            ).ok
            control = str(Path(tmp) / "control.sock")
            master = subprocess.Popen(
                [
                    *ssh_base(server)[:-1],
                    *("-M", "-N", "-o", f"ControlPath={control}", "127.0.0.1"),
                ],
                stdin=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 30
            while not os.path.exists(control):
                if time.monotonic() > deadline or master.poll() is not None:
                    raise RuntimeError("the ssh ControlMaster did not start")
                time.sleep(0.05)
            plain = [*ssh_base(server), "/bin/true"]
            muxed = [
                *ssh_base(server)[:-1],
                *("-o", f"ControlPath={control}", "127.0.0.1", "/bin/true"),
            ]
            contenders: dict[str, Callable[[], float]] = {
                "procwork (1 connection)": lambda: procwork_round(server, n),
                "ssh (1 connection per run)": lambda: client_round("ssh", plain, n),
                "ssh ControlMaster": lambda: client_round("mux", muxed, n),
            }
            times: dict[str, list[float]] = {name: [] for name in contenders}
            for _ in range(rounds):
                for name, round_ in contenders.items():
                    times[name].append(round_())
            opened, kills = pool.connections_opened, pool.kill_requests
        finally:
            if master is not None:
                master.terminate()
                master.wait(10)
            server.stop()

    medians = {name: statistics.median(t) for name, t in times.items()}
    ours = medians["procwork (1 connection)"]
    print(
        f"{n} remote /bin/true at concurrency {CONCURRENCY}, "
        f"median of {rounds} round(s); load {os.getloadavg()[0]:.1f}"
    )
    rows = [["contender", "wall s", "ms/run", "runs/s", "x procwork time"]]
    for name, median in medians.items():
        rows.append(
            [
                name,
                f"{median:.2f}",
                f"{1000 * median / n:.1f}",
                f"{n / median:.0f}",
                f"{median / ours:.2f}",
            ]
        )
    print_table(rows)
    if RETRIED:
        print(f"client runs that failed and were run again: {RETRIED}")
    print(
        f"procwork opened {opened} SSH connection(s) in all and sent {kills} "
        "kill request(s) (leftovers of runs whose channel closed late)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
