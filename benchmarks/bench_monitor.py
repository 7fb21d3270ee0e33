"""Benchmark of the monitor: 200 checks every second, on 2 cores.

Run from the repository root (Linux; the checks run ``/bin/true``)::

    python benchmarks/bench_monitor.py             # 20 s per contender, ~1 minute
    python benchmarks/bench_monitor.py --quick     # 8 s per contender
    python benchmarks/bench_monitor.py --repeats 3 # medians of 3 runs each

What runs. 200 checks, each ``/bin/true check-N`` every 1 s with a 1 s
timeout, for ``DURATION`` seconds (the first ``WARMUP`` seconds are not
measured). Contenders:

1. **procwork monitor**: a :class:`procwork.monitor.Monitor` built from a config
   (``http = false``, ``summary_every = 0``, ``max_load = false``; the checks
   have the default priority ``high``), with the default process scheduler
   (at most ``max(8, 4 x cores)`` = 8 runs at once on 2 cores), started and
   left to run on the reactor with ``untwisted.run``.
2. **procwork monitor, max_running = 200**: the same with the scheduler's cap
   raised so that all 200 may run at once, as in the asyncio loop.
3. **asyncio loop**: what one would write by hand: 200 tasks, each sleeping
   until its next due time, then ``asyncio.create_subprocess_exec`` (stdin
   ``/dev/null``, stdout and stderr piped and read with ``communicate()``,
   as procwork captures them) under ``asyncio.timeout(1)``, with asyncio's
   default child watcher. No cap on concurrency.

Both do the same work per check and keep the same schedule: a check never
overlaps itself, and a run that outlasts its interval makes the check skip
the grid points it missed (``LoopingCall``'s rule, which ``CheckRunner``
uses), counted as "skipped".

**CPU**: the contender process's own CPU time (``time.process_time()``, all
its threads: asyncio's child watcher threads count) over the measured window
divided by the window's wall time, in % of one core. The checks' own children
are not included (they are the same for every contender).

**Lateness of check starts**, how it is measured. Each check has an ideal
grid: the moment it was first started, plus whole intervals (a
``LoopingCall`` is anchored at its start in just that way). A run's lateness
is the time the spawn of its process *begins* minus the grid point it belongs
to. For procwork the ``run`` function the ``CheckRunner`` calls is wrapped
(the Monitor's own ``CheckRunner`` is replaced, before ``start()``, by one
built with the public API whose ``run`` is ``procwork.run`` on the monitor's
scheduler, as the Monitor's is, plus a timestamp): the timestamp at the call
is when the reactor's timer fired, and ``Result.queued`` (seconds from the
call until the scheduler admitted it and the spawn began) is added. For
asyncio it is the time just before ``create_subprocess_exec``. So both
include the reactor's/event loop's lag and any wait for a free slot, and
neither includes fork/exec itself. The table gives the median and p99 over
every run in the measured window, and for procwork also the p99 of the timer
alone (without the queue).

**Method.** Each contender runs in a fresh child Python process pinned to
two cores (``sched_setaffinity``, inherited by the checks); repeats are
interleaved round-robin over the contenders so that background load hits
them alike; the table shows medians over the repeats (with the min-max
spread when repeated). Ratios are asyncio's figure over procwork's: "x 2.00"
means procwork's is half (twice as good: less CPU, less lateness). Nothing
here is asserted; the numbers depend on the machine.

**A noisy service** (``--noisy``): one check (``/bin/true``) every 0.5 s,
side by side in three monitors: alone; beside a service running ``yes``
(it prints without pause) with the default ``console_rate`` (200 lines/s
reach the log, the rest are counted, not split into lines); and beside the
same service with no rate limit (``console_rate`` 1e9: every line is logged,
as before there was a limit). The log goes to ``/dev/null`` through the
monitor's own text observer, as ``procwork monitor > file`` would. The table
gives the check's runs over those due, the lateness of its starts (median
and p99, measured as above) and the monitor's own CPU; the ratios are the
noisy contenders' figures over the quiet one's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _table import print_table  # benchmarks/_table.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHECKS = 200
EVERY = 1.0
CORES = 2
DURATION = 20.0
WARMUP = 2.0
QUICK_DURATION = 8.0
QUICK_WARMUP = 1.0
COMMAND = "/bin/true"


def _pin_to_cores() -> int:
    """Pin this process (and its future children) to at most CORES cores."""
    cores = sorted(os.sched_getaffinity(0))[:CORES]
    os.sched_setaffinity(0, cores)
    return len(cores)


def _percentile(values: list[float], percent: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def _summary(
    lateness: list[float],
    timer_lateness: list[float] | None,
    cpu: float,
    wall: float,
    skipped: int,
    timed_out: int,
) -> dict[str, float]:
    return {
        "cpu_percent": 100 * cpu / wall,
        "p50_ms": 1000 * _percentile(lateness, 50),
        "p99_ms": 1000 * _percentile(lateness, 99),
        "timer_p99_ms": (
            1000 * _percentile(timer_lateness, 99)
            if timer_lateness is not None
            else float("nan")
        ),
        "runs_per_s": len(lateness) / wall,
        "skipped": float(skipped),
        "timed_out": float(timed_out),
    }


# -- the contenders: each runs in its own child and returns its figures ----------


def _monitor_config(max_running: int | None) -> str:
    lines = [
        "[monitor]",
        "http = false",
        "summary_every = 0",
        "max_load = false",
    ]
    if max_running is not None:
        lines.append(f"max_running = {max_running}")
    for i in range(CHECKS):
        lines += [
            "",
            "[[check]]",
            f'name = "check-{i}"',
            f'command = ["{COMMAND}", "check-{i}"]',
            f"every = {EVERY}",
        ]
    return "\n".join(lines) + "\n"


def procwork_monitor(
    duration: float, warmup: float, max_running: int | None
) -> dict[str, float]:
    from twisted.internet import task

    import procwork.monitor
    import untwisted
    from procwork.monitor._checks import CheckRunner

    config = procwork.monitor.parse_config(_monitor_config(max_running), "<bench>")
    monitor = procwork.monitor.Monitor(config)
    reactor: Any = monitor.supervisor.reactor  # the global one
    first_call: dict[str, float] = {}
    # (called, timer lateness, queued, timed out)
    runs: list[tuple[float, float, float, bool]] = []

    def timed_run(argv: list[str], **kwargs: Any) -> Any:
        called = time.time()
        name = argv[1]
        first = first_call.setdefault(name, called)
        # Runs are never early, but the first call is a few microseconds
        # after the loop's own start: allow 10 ms of slack before flooring.
        k = math.floor((called - first) / EVERY + 0.01)
        late = max(0.0, called - (first + k * EVERY))
        d = procwork.run(argv, scheduler=monitor.scheduler, **kwargs)

        def done(result: Any) -> Any:
            runs.append((called, late, result.queued, result.timed_out))
            return result

        return d.addCallback(done)

    monitor.checks = CheckRunner(config.checks, reactor=reactor, run=timed_run)

    def skipped() -> int:
        return sum(s.skipped for s in monitor.checks.status.values())

    window: dict[str, float] = {}

    def mark() -> None:
        window.update(wall=time.time(), cpu=time.process_time(), skipped=skipped())

    monitor.start()
    reactor.callLater(warmup, mark)
    untwisted.run(task.deferLater(reactor, duration, lambda: None))
    end = time.time()
    cpu = time.process_time() - window["cpu"]
    skipped_in_window = skipped() - int(window["skipped"])
    # Let the runs started in the window finish (even the last ones queued)
    # before stopping: stop() would cancel them, and they are the latest.
    untwisted.run(task.deferLater(reactor, 2 * EVERY, lambda: None))
    untwisted.run(monitor.stop(), timeout=60)
    measured = [r for r in runs if window["wall"] <= r[0] < end]
    return _summary(
        [late + queued for _, late, queued, _ in measured],
        [late for _, late, _, _ in measured],
        cpu,
        end - window["wall"],
        skipped_in_window,
        sum(1 for *_, timed_out in measured if timed_out),
    )


def asyncio_loop(duration: float, warmup: float) -> dict[str, float]:
    async def main() -> dict[str, float]:
        loop = asyncio.get_running_loop()
        runs: list[tuple[float, float, bool]] = []  # (started, lateness, timed out)
        missed: list[float] = []  # grid points skipped, by when it was noticed
        stop_at = loop.time() + duration

        async def check(i: int) -> None:
            first = loop.time()
            k = 0
            while True:
                ideal = first + k * EVERY
                delay = ideal - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                started = loop.time()
                if started >= stop_at:
                    return
                proc = await asyncio.create_subprocess_exec(
                    COMMAND,
                    f"check-{i}",
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
                timed_out = False
                try:
                    async with asyncio.timeout(EVERY):
                        await proc.communicate()
                except TimeoutError:
                    timed_out = True
                    proc.kill()
                    await proc.wait()
                runs.append((started, max(0.0, started - ideal), timed_out))
                # The next grid point still ahead; the ones missed are skipped.
                now = loop.time()
                following = math.floor((now - first) / EVERY) + 1
                missed.extend([now] * (following - k - 1))
                k = following

        tasks = [asyncio.create_task(check(i)) for i in range(CHECKS)]
        await asyncio.sleep(warmup)
        begin, cpu = loop.time(), time.process_time()
        await asyncio.sleep(duration - warmup)
        end, cpu = loop.time(), time.process_time() - cpu
        await asyncio.gather(*tasks)
        measured = [r for r in runs if begin <= r[0] < end]
        skipped = sum(1 for when in missed if begin <= when < end)
        return _summary(
            [late for _, late, _ in measured],
            None,
            cpu,
            end - begin,
            skipped,
            sum(1 for *_, timed_out in measured if timed_out),
        )

    return asyncio.run(main())


NOISY_EVERY = 0.5


def noisy_monitor(
    duration: float, warmup: float, rate: float | None
) -> dict[str, float]:
    """One check every NOISY_EVERY s; beside ``yes`` unless ``rate`` is None."""
    from twisted.internet import task

    import procwork.monitor
    import untwisted
    from procwork.monitor._checks import CheckRunner
    from procwork.monitor._logs import start_logging

    lines = ["[monitor]", "http = false", "summary_every = 0", "max_load = false"]
    if rate is not None:
        lines += ["", "[[service]]", 'name = "noisy"', 'command = ["yes"]']
        lines.append(f"console_rate = {rate}")
    lines += ["", "[[check]]", 'name = "tick"', f'command = ["{COMMAND}", "tick"]']
    lines.append(f"every = {NOISY_EVERY}")
    config = procwork.monitor.parse_config("\n".join(lines) + "\n", "<bench>")
    start_logging(False, open(os.devnull, "w"))  # noqa: SIM115 - for the run
    monitor = procwork.monitor.Monitor(config)
    reactor: Any = monitor.supervisor.reactor  # the global one
    first: list[float] = []
    runs: list[tuple[float, float]] = []  # (called, lateness incl. queue)

    def timed_run(argv: list[str], **kwargs: Any) -> Any:
        called = time.time()
        if not first:
            first.append(called)
        start = first[0]
        k = math.floor((called - start) / NOISY_EVERY + 0.01)
        late = max(0.0, called - (start + k * NOISY_EVERY))
        d = procwork.run(argv, scheduler=monitor.scheduler, **kwargs)

        def done(result: Any) -> Any:
            runs.append((called, late + result.queued))
            return result

        return d.addCallback(done)

    monitor.checks = CheckRunner(config.checks, reactor=reactor, run=timed_run)
    window: dict[str, float] = {}

    def mark() -> None:
        window.update(wall=time.time(), cpu=time.process_time())

    monitor.start()
    reactor.callLater(warmup, mark)
    untwisted.run(task.deferLater(reactor, duration, lambda: None))
    end = time.time()
    cpu = time.process_time() - window["cpu"]
    untwisted.run(task.deferLater(reactor, 2 * NOISY_EVERY, lambda: None))
    untwisted.run(monitor.stop(), timeout=60)
    wall = end - window["wall"]
    measured = [late for called, late in runs if window["wall"] <= called < end]
    return {
        "runs_percent": 100 * len(measured) / (wall / NOISY_EVERY),
        "p50_ms": 1000 * _percentile(measured, 50),
        "p99_ms": 1000 * _percentile(measured, 99),
        "cpu_percent": 100 * cpu / wall,
    }


NOISY_CONTENDERS: dict[str, tuple[str, Callable[[float, float], dict[str, float]]]] = {
    "quiet": (
        "the check alone",
        lambda duration, warmup: noisy_monitor(duration, warmup, None),
    ),
    "noisy_limited": (
        "beside `yes`, console_rate 200 (default)",
        lambda duration, warmup: noisy_monitor(duration, warmup, 200),
    ),
    "noisy_unlimited": (
        "beside `yes`, no rate limit",
        lambda duration, warmup: noisy_monitor(duration, warmup, 1e9),
    ),
}
NOISY_COLUMNS = [
    ("runs_percent", "check runs % of due", "{:.0f}"),
    ("p50_ms", "start lateness p50 ms", "{:.1f}"),
    ("p99_ms", "start lateness p99 ms", "{:.1f}"),
    ("cpu_percent", "monitor CPU % of a core", "{:.0f}"),
]

# name: (label, function(duration, warmup))
CONTENDERS: dict[str, tuple[str, Callable[[float, float], dict[str, float]]]] = {
    "procwork": (
        "procwork monitor (default cap 8)",
        lambda duration, warmup: procwork_monitor(duration, warmup, None),
    ),
    "procwork_uncapped": (
        "procwork monitor, max_running = 200",
        lambda duration, warmup: procwork_monitor(duration, warmup, CHECKS),
    ),
    "asyncio": ("asyncio loop, create_subprocess_exec", asyncio_loop),
}
REFERENCE = "procwork"

# (key, heading, format)
COLUMNS = [
    ("cpu_percent", "own CPU % of a core", "{:.1f}"),
    ("p50_ms", "start lateness p50 ms", "{:.1f}"),
    ("p99_ms", "start lateness p99 ms", "{:.1f}"),
    ("timer_p99_ms", "timer p99 ms", "{:.1f}"),
    ("runs_per_s", "runs/s", "{:.0f}"),
    ("skipped", "skipped", "{:.0f}"),
    ("timed_out", "timed out", "{:.0f}"),
]


# -- running -------------------------------------------------------------------


def measure_in_child(name: str, quick: bool) -> dict[str, float]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH")) if p
    )
    argv = [sys.executable, __file__, "--contender", name]
    if name in NOISY_CONTENDERS:
        argv.append("--noisy")
    if quick:
        argv.append("--quick")
    child = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    if child.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{child.stderr}")
    figures: dict[str, float] = json.loads(child.stdout.splitlines()[-1])
    return figures


def _cell(values: list[float], fmt: str) -> str:
    median = statistics.median(values)
    if math.isnan(median):
        return "-"
    text = fmt.format(median)
    if len(values) > 1:
        text += f" ({fmt.format(min(values))}-{fmt.format(max(values))})"
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_DURATION:g} s per contender instead of {DURATION:g} s",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs per contender (medians)"
    )
    parser.add_argument(
        "--noisy",
        action="store_true",
        help="measure a 0.5 s check beside a service printing without pause",
    )
    parser.add_argument(
        "--contender",
        choices=sorted({*CONTENDERS, *NOISY_CONTENDERS}),
        help=argparse.SUPPRESS,
    )
    args = parser.parse_args()
    duration, warmup = (
        (QUICK_DURATION, QUICK_WARMUP) if args.quick else (DURATION, WARMUP)
    )
    if args.contender:
        _pin_to_cores()
        _, function = {**CONTENDERS, **NOISY_CONTENDERS}[args.contender]
        print(json.dumps(function(duration, warmup)))
        return 0
    if args.noisy:
        return noisy_main(args.quick, args.repeats, duration, warmup)

    cores = len(sorted(os.sched_getaffinity(0))[:CORES])
    print(
        f"Python {sys.version.split()[0]}, {sys.platform}, {CHECKS} checks of "
        f"{COMMAND} every {EVERY:g} s, {duration - warmup:g} s measured after "
        f"{warmup:g} s warm-up, pinned to {cores} cores, {args.repeats} "
        "repeat(s), each contender in a child",
        flush=True,
    )
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in CONTENDERS}
    for repeat in range(args.repeats):
        for name in CONTENDERS:
            print(
                f"  measuring {name} ({repeat + 1}/{args.repeats}) ...",
                file=sys.stderr,
                flush=True,
            )
            samples[name].append(measure_in_child(name, args.quick))

    rows = [("contender", *(heading for _, heading, _ in COLUMNS))]
    for name, (label, _) in CONTENDERS.items():
        rows.append(
            (
                label,
                *(
                    _cell([s[key] for s in samples[name]], fmt)
                    for key, _, fmt in COLUMNS
                ),
            )
        )
    print_table(rows)

    def median(name: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[name])

    print()
    reference_label = CONTENDERS[REFERENCE][0]
    ratio_rows: list[tuple[str, ...]] = [
        ("asyncio / procwork", "own CPU", "start lateness p99")
    ]
    for name, (label, _) in CONTENDERS.items():
        if name == "asyncio":
            continue
        ratios = []
        for key in ("cpu_percent", "p99_ms"):
            ours = median(name, key)
            ratios.append(f"x {median('asyncio', key) / ours:.2f}" if ours > 0 else "-")
        ratio_rows.append((label, *ratios))
    print_table(ratio_rows)
    print(
        f"\n\"x 2.00\": procwork's figure is half asyncio's (better). "
        f"Reference: {reference_label}."
    )
    return 0


def noisy_main(quick: bool, repeats: int, duration: float, warmup: float) -> int:
    cores = len(sorted(os.sched_getaffinity(0))[:CORES])
    print(
        f"Python {sys.version.split()[0]}, one check of {COMMAND} every "
        f"{NOISY_EVERY:g} s, {duration - warmup:g} s measured after {warmup:g} s "
        f"warm-up, pinned to {cores} cores, {repeats} repeat(s)",
        flush=True,
    )
    samples: dict[str, list[dict[str, float]]] = {n: [] for n in NOISY_CONTENDERS}
    for repeat in range(repeats):
        for name in NOISY_CONTENDERS:
            print(
                f"  measuring {name} ({repeat + 1}/{repeats}) ...",
                file=sys.stderr,
                flush=True,
            )
            samples[name].append(measure_in_child(name, quick))
    rows = [("monitor", *(heading for _, heading, _ in NOISY_COLUMNS))]
    for name, (label, _) in NOISY_CONTENDERS.items():
        rows.append(
            (
                label,
                *(
                    _cell([s[key] for s in samples[name]], fmt)
                    for key, _, fmt in NOISY_COLUMNS
                ),
            )
        )
    print_table(rows)

    def median(name: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[name])

    print()
    ratio_rows: list[tuple[str, ...]] = [
        ("over the check alone", "runs", "lateness p50", "lateness p99")
    ]
    for name, (label, _) in NOISY_CONTENDERS.items():
        if name == "quiet":
            continue
        cells = []
        for key in ("runs_percent", "p50_ms", "p99_ms"):
            quiet = median("quiet", key)
            cells.append(f"x {median(name, key) / quiet:.2f}" if quiet > 0 else "-")
        ratio_rows.append((label, *cells))
    print_table(ratio_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
