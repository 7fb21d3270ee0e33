"""Benchmarks of clockwork and untwisted against Twisted, asyncio and crochet.

Run from the repository root (crochet must be installed, ``pip install
crochet`` or the ``bench`` extra)::

    python benchmarks/bench_clockwork.py

It measures, side by side in one run:

1. task switches per second: two clockwork tasks taking turns with a bare
   ``yield`` on a ``clockwork.Worker`` (``w.work()``), against Twisted's
   ``inlineCallbacks`` yielding already-fired Deferreds (one generator: two
   cannot alternate there) and two asyncio tasks doing
   ``await asyncio.sleep(0)``;
2. blocking round trips per second: ``untwisted.run(defer.succeed(1))``
   against ``asyncio.Runner().run(coro())`` (one Runner, reused) and a crochet
   ``@wait_for`` function (crochet runs the reactor in a thread); and, for
   reference, ``untwisted.run`` of a Deferred that needs one reactor
   iteration to fire;
3. the CPU used while one task sleeps 2 s (CPU time / wall time).

Every contender runs in its own child Python process (crochet and untwisted
cannot share the global reactor in one process), repeats its measurement at
least 5 times after a warm-up, and reports the median. The table gives each
median and its ratio to procwork's contender (clockwork / untwisted) of the
same benchmark: for rates, "x 2.0" means procwork's is twice as fast.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from _table import print_table  # benchmarks/_table.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REPEATS = 7
SWITCHES = 200_000  # per task for clockwork and asyncio; yields for inlineCallbacks
ROUND_TRIPS = 50_000
SLEEP = 2.0


# -- the contenders: each returns one sample ----------------------------------------


def clockwork_switches() -> float:
    import clockwork

    def pingpong(n: int) -> Generator[None, None, None]:
        for _ in range(n):
            yield

    worker = clockwork.Worker()
    worker.assign(pingpong(SWITCHES))
    worker.assign(pingpong(SWITCHES))
    started = time.perf_counter()
    worker.work()
    return 2 * SWITCHES / (time.perf_counter() - started)


def inline_callbacks_switches() -> float:
    from twisted.internet import defer

    @defer.inlineCallbacks
    def yields(n: int) -> Generator[defer.Deferred[None], None, None]:
        for _ in range(n):
            yield defer.succeed(None)

    started = time.perf_counter()
    d = yields(SWITCHES)
    elapsed = time.perf_counter() - started
    assert d.called
    return SWITCHES / elapsed


def asyncio_switches() -> float:
    async def pingpong(n: int) -> None:
        for _ in range(n):
            await asyncio.sleep(0)

    async def main() -> float:
        started = time.perf_counter()
        await asyncio.gather(pingpong(SWITCHES), pingpong(SWITCHES))
        return 2 * SWITCHES / (time.perf_counter() - started)

    return asyncio.run(main())


def untwisted_round_trips() -> float:
    from twisted.internet import defer

    import untwisted

    started = time.perf_counter()
    for _ in range(ROUND_TRIPS):
        untwisted.run(defer.succeed(1))
    return ROUND_TRIPS / (time.perf_counter() - started)


def untwisted_reactor_round_trips() -> float:
    from twisted.internet import reactor as installed
    from twisted.internet import task

    import untwisted

    reactor: Any = installed  # mypy reads the module, not the reactor it is

    n = ROUND_TRIPS // 5
    started = time.perf_counter()
    for _ in range(n):
        untwisted.run(task.deferLater(reactor, 0, int))
    return n / (time.perf_counter() - started)


_runner: asyncio.Runner | None = None


def asyncio_runner_round_trips() -> float:
    global _runner
    if _runner is None:
        _runner = asyncio.Runner()

    async def one() -> int:
        return 1

    n = ROUND_TRIPS // 5
    started = time.perf_counter()
    for _ in range(n):
        _runner.run(one())
    return n / (time.perf_counter() - started)


_crochet_call: Callable[[], Any] | None = None


def crochet_round_trips() -> float:
    global _crochet_call
    if _crochet_call is None:
        import crochet
        from twisted.internet import defer

        crochet.setup()

        @crochet.wait_for(timeout=10)
        def call() -> defer.Deferred[int]:
            return defer.succeed(1)

        _crochet_call = call
    n = ROUND_TRIPS // 10
    started = time.perf_counter()
    for _ in range(n):
        _crochet_call()
    return n / (time.perf_counter() - started)


def clockwork_sleep_cpu() -> float:
    import clockwork
    import untwisted

    def nap() -> Generator[Any, Any, None]:
        yield clockwork.sleep(SLEEP)

    untwisted.run(clockwork.sleep(0))  # start the reactor outside the measurement
    worker = clockwork.Worker()
    worker.assign(nap())
    cpu, wall = time.process_time(), time.perf_counter()
    worker.work()
    return 100 * (time.process_time() - cpu) / (time.perf_counter() - wall)


# name: (benchmark, contender label, unit, function, repeats)
CONTENDERS: dict[str, tuple[str, str, str, Callable[[], float], int]] = {
    "clockwork_switches": (
        "task switches",
        "clockwork Worker, 2 tasks, yield",
        "switches/s",
        clockwork_switches,
        REPEATS,
    ),
    "inline_callbacks_switches": (
        "task switches",
        "Twisted inlineCallbacks, fired Deferreds",
        "switches/s",
        inline_callbacks_switches,
        REPEATS,
    ),
    "asyncio_switches": (
        "task switches",
        "asyncio, 2 tasks, sleep(0)",
        "switches/s",
        asyncio_switches,
        REPEATS,
    ),
    "untwisted_round_trips": (
        "blocking round trips",
        "untwisted.run(defer.succeed(1))",
        "calls/s",
        untwisted_round_trips,
        REPEATS,
    ),
    "asyncio_runner_round_trips": (
        "blocking round trips",
        "asyncio.Runner().run(coro()), reused",
        "calls/s",
        asyncio_runner_round_trips,
        REPEATS,
    ),
    "crochet_round_trips": (
        "blocking round trips",
        "crochet @wait_for, reactor thread",
        "calls/s",
        crochet_round_trips,
        REPEATS,
    ),
    "untwisted_reactor_round_trips": (
        "blocking round trips",
        "untwisted.run(deferLater(0)) [reference]",
        "calls/s",
        untwisted_reactor_round_trips,
        REPEATS,
    ),
    "clockwork_sleep_cpu": (
        f"CPU while a task sleeps {SLEEP:g} s",
        "clockwork Worker.work(), sleep(2)",
        "% of a core",
        clockwork_sleep_cpu,
        5,
    ),
}

# The contender that the others of its benchmark are compared with.
REFERENCE = {
    "task switches": "clockwork_switches",
    "blocking round trips": "untwisted_round_trips",
}

# (contender, reference, minimum ratio reference / contender)
TARGETS = [
    ("inline_callbacks_switches", "clockwork_switches", 1.5),
    ("asyncio_switches", "clockwork_switches", 2.0),
    ("asyncio_runner_round_trips", "untwisted_round_trips", 2.0),
]
CPU_TARGET = 1.0  # % of a core


# -- running --------------------------------------------------------------------------


def measure(name: str) -> list[float]:
    """Run one contender in this process: a warm-up, then its repeats."""
    *_, function, repeats = CONTENDERS[name]
    if not name.endswith("_cpu"):
        function()  # warm-up
    return [function() for _ in range(repeats)]


def measure_in_child(name: str) -> list[float]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH")) if p
    )
    child = subprocess.run(
        [sys.executable, __file__, "--contender", name],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if child.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{child.stderr}")
    samples: list[float] = json.loads(child.stdout.splitlines()[-1])
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--contender", choices=sorted(CONTENDERS), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.contender:
        print(json.dumps(measure(args.contender)))
        return 0

    print(
        f"Python {sys.version.split()[0]}, {sys.platform}, each contender in a child",
        flush=True,
    )
    medians: dict[str, float] = {}
    for name in CONTENDERS:
        print(f"  measuring {name} ...", file=sys.stderr, flush=True)
        medians[name] = statistics.median(measure_in_child(name))

    rows = [("benchmark", "contender", "median", "unit", "ratio vs procwork")]
    for name, (benchmark, label, unit, _, _) in CONTENDERS.items():
        reference = REFERENCE.get(benchmark)
        if reference is None or reference == name:
            ratio = "-"
        else:
            ratio = f"x {medians[reference] / medians[name]:.2f}"
        value = medians[name]
        shown = f"{value:.3f}" if unit.startswith("%") else f"{value:,.0f}"
        rows.append((benchmark, label, shown, unit, ratio))
    print_table(rows)

    print()
    failed = False
    for contender, reference, minimum in TARGETS:
        achieved = medians[reference] / medians[contender]
        ok = achieved >= minimum
        failed |= not ok
        print(
            f"{'ok  ' if ok else 'MISS'} {reference} / {contender} = {achieved:.2f}"
            f" (target >= {minimum})"
        )
    cpu = medians["clockwork_sleep_cpu"]
    ok = cpu < CPU_TARGET
    failed |= not ok
    print(f"{'ok  ' if ok else 'MISS'} CPU while sleeping = {cpu:.3f} % (target < 1 %)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
