"""procwork inside ``asyncio.run`` beside ``asyncio.create_subprocess_exec``.

Run from the repository root (Linux; the children need /bin/true and
/bin/sleep)::

    python benchmarks/bench_asyncio.py                  # 5 rounds, ~2 minutes here
    python benchmarks/bench_asyncio.py --rounds 3 --sleepers 1000

Both contenders run in one ``asyncio.run`` of a fresh Python process each
(so that one's rusage, descriptors and zombies never reach the other), one
round after the other, alternating, so that a busy machine slows both; the
medians over the rounds are printed, with procwork's ratio to asyncio:

1. **throughput**: 2 000 ``/bin/true`` at concurrency 32, after 100 warm-up
   runs: runs/s, and the parent's CPU (user + system, ``getrusage``) per
   run. procwork: ``await asyncio.gather`` of 2 000 ``procwork.run`` under
   a ``Scheduler(max_running=32, load=NoLoadLimit())`` made inside the
   loop (so on the loop's own reactor); asyncio: ``create_subprocess_exec``
   + ``communicate()`` under a ``Semaphore(32)``.
2. **scale**: ``--sleepers`` (4 000) concurrent ``sleep 1``, all started at
   once: wall time from the first start to the last result, and the
   parent's CPU. procwork's scheduler allows them all at once.

Every child does the same work: stdin is ``/dev/null``, stdout and stderr are
captured through pipes and read to the end, and each child leads its own
session (``start_new_session=True``; procwork always does). asyncio uses its
default child watcher (a pidfd watcher on Python 3.12+ and Linux 5.3+, a
thread per child before).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from _table import print_table  # benchmarks/_table.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TRUE = "/bin/true"
SLEEP = "/bin/sleep"
TRUE_RUNS = 2000
WARMUP_RUNS = 100
CONCURRENCY = 32
SLEEPERS = 4000
#: Seconds a contender may take before the round counts as failed.
ROUND_LIMIT = 300.0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the contenders: each runs in a child process, returns {metric: value} -----


async def _procwork_throughput() -> dict[str, float]:
    import procwork

    sched = procwork.Scheduler(max_running=CONCURRENCY, load=procwork.NoLoadLimit())

    async def batch(n: int) -> list[procwork.Result]:
        runs = [procwork.run([TRUE], scheduler=sched) for _ in range(n)]
        return await asyncio.gather(*runs)

    await batch(WARMUP_RUNS)
    cpu, started = _cpu(), time.perf_counter()
    results = await batch(TRUE_RUNS)
    elapsed, cpu = time.perf_counter() - started, _cpu() - cpu
    assert all(r.ok for r in results), results[:3]
    return {"rate": TRUE_RUNS / elapsed, "cpu_per_run": 1e6 * cpu / TRUE_RUNS}


async def _aio_run(argv: list[str]) -> int | None:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    await proc.communicate()
    return proc.returncode


async def _asyncio_throughput() -> dict[str, float]:
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one() -> int | None:
        async with sem:
            return await _aio_run([TRUE])

    async def batch(n: int) -> list[int | None]:
        return await asyncio.gather(*(one() for _ in range(n)))

    await batch(WARMUP_RUNS)
    cpu, started = _cpu(), time.perf_counter()
    codes = await batch(TRUE_RUNS)
    elapsed, cpu = time.perf_counter() - started, _cpu() - cpu
    assert codes == [0] * TRUE_RUNS, codes[:3]
    return {"rate": TRUE_RUNS / elapsed, "cpu_per_run": 1e6 * cpu / TRUE_RUNS}


async def _procwork_scale(n: int) -> dict[str, float]:
    import procwork

    sched = procwork.Scheduler(max_running=n, load=procwork.NoLoadLimit())
    await procwork.run([TRUE], scheduler=sched)
    cpu, started = _cpu(), time.perf_counter()
    results = await asyncio.gather(
        *(procwork.run([SLEEP, "1"], scheduler=sched) for _ in range(n))
    )
    elapsed, cpu = time.perf_counter() - started, _cpu() - cpu
    assert all(r.ok for r in results), [r for r in results if not r.ok][:3]
    return {"wall": elapsed, "cpu": cpu}


async def _asyncio_scale(n: int) -> dict[str, float]:
    await _aio_run([TRUE])
    cpu, started = _cpu(), time.perf_counter()
    codes = await asyncio.gather(*(_aio_run([SLEEP, "1"]) for _ in range(n)))
    elapsed, cpu = time.perf_counter() - started, _cpu() - cpu
    assert codes == [0] * n, codes[:3]
    return {"wall": elapsed, "cpu": cpu}


CONTENDERS: dict[str, Callable[[int], Coroutine[Any, Any, dict[str, float]]]] = {
    "throughput/procwork": lambda n: _procwork_throughput(),
    "throughput/asyncio": lambda n: _asyncio_throughput(),
    "scale/procwork": _procwork_scale,
    "scale/asyncio": _asyncio_scale,
}


def child_main(key: str, n: int) -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    figures = asyncio.run(CONTENDERS[key](n))
    print(json.dumps(figures), flush=True)
    return 0


def run_round(key: str, n: int) -> dict[str, float]:
    """One contender in a fresh process (its own session: killed whole on a hang)."""
    child = subprocess.Popen(
        [sys.executable, __file__, "--child", key, str(n)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = child.communicate(timeout=ROUND_LIMIT)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, 9)
        child.communicate()
        raise SystemExit(f"{key}: no answer within {ROUND_LIMIT:g} s") from None
    if child.returncode != 0:
        raise SystemExit(f"{key}: exit status {child.returncode}")
    figures: dict[str, float] = json.loads(out.splitlines()[-1])
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sleepers", type=int, default=SLEEPERS)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(args.child[0], int(args.child[1]))

    samples: dict[str, list[dict[str, float]]] = {key: [] for key in CONTENDERS}
    for i in range(args.rounds):
        for key in CONTENDERS:
            samples[key].append(run_round(key, args.sleepers))
        print(f"round {i + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    def median(key: str, metric: str) -> float:
        return statistics.median(s[metric] for s in samples[key])

    rows = [["scenario", "metric", "procwork", "asyncio", "procwork / asyncio"]]
    for scenario, metric, label, digits in [
        ("throughput", "rate", f"runs/s, {TRUE_RUNS} true at {CONCURRENCY}", 0),
        ("throughput", "cpu_per_run", "parent CPU per run, us", 0),
        ("scale", "wall", f"wall s, {args.sleepers} concurrent sleep 1", 2),
        ("scale", "cpu", "parent CPU s, same", 2),
    ]:
        ours = median(f"{scenario}/procwork", metric)
        theirs = median(f"{scenario}/asyncio", metric)
        rows.append(
            [
                scenario,
                label,
                f"{ours:.{digits}f}",
                f"{theirs:.{digits}f}",
                f"{ours / theirs:.2f}x",
            ]
        )
    print(
        f"medians of {args.rounds} rounds; Python {sys.version.split()[0]}, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the end"
    )
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
