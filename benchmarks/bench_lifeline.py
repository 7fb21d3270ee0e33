"""What the lifeline (``procwork.enable_lifeline()``) costs, measured side by side.

Run from the repository root (Linux; the children are ``/bin/true``)::

    python benchmarks/bench_lifeline.py            # ~20 s here
    python benchmarks/bench_lifeline.py --quick    # fewer rounds

In one program, on one reactor, rounds without and with the lifeline
alternate, in ABBA order (so background load and warm-up hit both alike):

1. **per run**: ``RUNS`` sequential ``procwork.run(["true"])`` (critical, so
   no admission wait), wall time and parent CPU per run. With the lifeline,
   each run also writes to the helper's pipe before its fork (the inodes of
   its pipes, one ``fstat`` each), after it (its group) and as it is reaped.
2. **the writes alone**: those three calls, as the spawn path makes them,
   timed over ``WRITES`` rounds (on three pipes of our own and a group id
   no process can have, so nothing is ever signalled).
3. **the helper's side**: its CPU per run once started (the total over all
   rounds divided by the runs: it is counted in 10 ms clock ticks, and the
   helper wakes only four times a second to read the records), and
   what it costs once per program: starting it (in the parent: a fork/exec
   of ``python -I -S``) and its resident memory.

Reported: medians over the rounds, and the with/without ratios. On a busy
machine the wall time per run varies more from round to round than the
lifeline adds: read its ratio with the parent-CPU ratio and the cost of the
writes alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

from _table import print_table  # benchmarks/_table.py, beside this script

import procwork
import untwisted
from procwork import _lifeline

#: A group id above any pid_max: killpg() on it can only fail with ESRCH.
NO_SUCH_GROUP = 2**31 - 1


def per_run(runs: int) -> tuple[float, float]:
    """Seconds of wall time and of parent CPU per sequential /bin/true run."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(runs):
        result = untwisted.run(procwork.run(["true"], priority="critical"), timeout=30)
        assert result.ok, result
    return (
        (time.perf_counter() - wall) / runs,
        (time.process_time() - cpu) / runs,
    )


class _Child:
    """What the lifeline reads of a started child: its group (and pid)."""

    pid = pgid = NO_SUCH_GROUP


def writes_alone(rounds: int) -> float:
    """Seconds per announce (before the fork) + register + unregister on the
    lifeline's pipe, for a child with three pipes."""
    line = _lifeline._lifeline
    pipes = [os.pipe() for _ in range(3)]
    ours = tuple(end for end, _ in pipes)
    child: Any = _Child()
    try:
        start = time.perf_counter()
        for _ in range(rounds):
            line.started(child, line.forking(ours))
            line.reaped(child)
        return (time.perf_counter() - start) / rounds
    finally:
        for ends in pipes:
            for end in ends:
                os.close(end)


def helper_cpu(pid: int) -> float:
    """CPU seconds the helper used so far (user + system, in clock ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until_set_up(pid: int) -> None:
    """Wait (at most 10 s) until the helper ignores SIGTERM: it has started."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/status") as f:
            ignored = next(line for line in f if line.startswith("SigIgn:"))
        if int(ignored.split()[1], 16) & (1 << (15 - 1)):
            return
        time.sleep(0.005)
    raise RuntimeError("the lifeline helper did not start within 10 s")


def helper_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    rounds, runs, pairs = (4, 50, 2_000) if args.quick else (24, 100, 20_000)
    procwork.scheduler().load = procwork.NoLoadLimit()
    per_run(50)  # warm-up: reactor started, code paths hot

    walls: dict[bool, list[float]] = {False: [], True: []}
    cpus: dict[bool, list[float]] = {False: [], True: []}
    writes: list[float] = []
    starts: list[float] = []
    rss: list[int] = []
    helper_cpus: list[float] = []
    for n in range(rounds):
        # ABBA order: whatever the first of a pair suffers, both suffer alike.
        for with_lifeline in (False, True) if n % 2 == 0 else (True, False):
            if with_lifeline:
                started = time.perf_counter()
                _lifeline.start_lifeline()
                starts.append(time.perf_counter() - started)
                pid = _lifeline.lifeline_pid()
                assert pid is not None
                wait_until_set_up(pid)
                helper_before = helper_cpu(pid)
            wall, cpu = per_run(runs)
            walls[with_lifeline].append(wall)
            cpus[with_lifeline].append(cpu)
            if with_lifeline:
                assert pid is not None  # set in the branch above
                helper_cpus.append(helper_cpu(pid) - helper_before)
                writes.append(writes_alone(pairs))
                rss.append(helper_rss_kib(pid))
                _lifeline.disable_lifeline()

    def us(seconds: float) -> str:
        return f"{seconds * 1e6:.1f} µs"

    wall_off, wall_on = (statistics.median(walls[k]) for k in (False, True))
    cpu_off, cpu_on = (statistics.median(cpus[k]) for k in (False, True))
    print(
        f"procwork.run(['true']) x {runs}, sequential, {rounds} rounds each way "
        f"(medians)\n"
    )
    print_table(
        [
            ["", "without", "with lifeline", "ratio"],
            ["wall per run", us(wall_off), us(wall_on), f"{wall_on / wall_off:.3f}"],
            [
                "parent CPU per run",
                us(cpu_off),
                us(cpu_on),
                f"{cpu_on / cpu_off:.3f}",
            ],
        ]
    )
    print()
    print_table(
        [
            ["lifeline", "median"],
            ["the helper's CPU per run", us(sum(helper_cpus) / (runs * rounds))],
            [
                "announce + register + unregister (the writes alone)",
                us(statistics.median(writes)),
            ],
            [
                "starting the helper (once per program)",
                f"{statistics.median(starts) * 1e3:.2f} ms",
            ],
            ["helper's resident memory", f"{statistics.median(rss) / 1024:.1f} MiB"],
        ]
    )
    print(f"\n(python {sys.version.split()[0]}, {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
