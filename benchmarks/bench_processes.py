"""Benchmarks of procwork against raw Twisted, asyncio and a subprocess.Popen loop.

Run from the repository root (Linux; the children need /bin/true, /bin/sleep,
/bin/date and /bin/sh)::

    python benchmarks/bench_processes.py            # the full run, ~5 minutes here
    python benchmarks/bench_processes.py --quick    # fewer repeats, smaller N

It measures, side by side in one run:

1. **throughput**: 2 000 ``/bin/true`` at concurrency 32, in runs/s.
   procwork: ``procwork.run`` under ``Scheduler(max_running=32,
   load=NoLoadLimit())``, all 2 000 submitted at once and gathered by a
   clockwork task driven by ``untwisted.run``, and (a second procwork
   contender) the same runs gathered with ``defer.gatherResults`` inside one
   ``untwisted.run``, where a lost wake-up of the driver shows as lost runs/s
   or a hang; raw Twisted:
   ``reactor.spawnProcess`` with a ``ProcessProtocol``, the next one started
   from ``processEnded``; asyncio: ``create_subprocess_exec`` under a
   ``Semaphore(32)``; Popen: a loop keeping 32 in flight, ``communicate()``-ing
   the oldest before starting the next. A diagnostic contender, "procwork
   transport alone", drives procwork's process transport
   (``procwork._spawn.GroupProcess``) like the raw Twisted one, without the
   API, ``Process`` state, scheduler and ``Result`` above it: the difference
   between it and ``procwork.run`` is what those layers cost per run.
2. **scale**: 4 000 concurrent ``sleep 1``, all started at once; wall time from
   the first start to the last result. Raw Twisted is O(open fds) per spawn
   (it lists and fcntl()s every descriptor) and O(children) per SIGCHLD; its
   run is cut off at ``TWISTED_LIMIT`` seconds and shown as "> limit", and not
   repeated if it took over 20 s. ``--quick`` runs every contender with
   1 000 children instead.
3. **watchdog**: the CPU saturated by 2 busy loops per core (``sh -c 'while :;
   do :; done'``, started outside procwork and killed by pid at the end), 500
   ``low`` jobs (``sleep 0.5``) submitted to a pool of 16, then 50
   ``critical`` runs, one every 100 ms. Reported: each critical run's start
   latency, p50 and p99 over the 50. procwork uses a ``Scheduler(max_running=16)``
   with the real ``SystemLoad``; the asyncio pool is a ``Semaphore(16)`` that
   critical jobs share with the low ones (FIFO: they wait behind them).
4. **idle**: CPU used by the parent (``time.process_time`` delta / wall time,
   in % of a core) over a window while it waits on 1 000 ``sleep 5``
   children, after all have started. procwork, raw Twisted and asyncio.

Every contender does the same work: stdin is ``/dev/null``, stdout and stderr
are captured through pipes and read to the end, and each child leads its own
session (``start_new_session=True``) — except under raw Twisted, whose
``spawnProcess`` cannot do that. asyncio uses its default child watcher.

**Start latency, how it is measured** (scenario 3): the critical command is
``/bin/date +%s.%N`` run directly (no shell): a small C program, like
``/bin/true``, whose first act is to print the wall clock with nanosecond
resolution. The latency is that timestamp minus ``time.time()`` taken
immediately before the request (``procwork.run(...)``, or creating the asyncio
task). So it covers everything between the call and the child running its own
code: queueing/semaphore wait, fork/exec, dynamic linking and the kernel's
scheduling delay on the saturated CPU — the end-to-end figure a watchdog cares
about, and an upper bound of the time to *start*. ``/proc/PID/stat``'s
``starttime`` was rejected (fork time, in 10 ms clock ticks), and so was
``sh -c 'date ...'`` (a second exec under load inflates the figure). A
critical run that has not printed its timestamp ``CRITICAL_CAP`` seconds after
its request is counted as "> cap" (censored: its latency is unknown but
larger).

**Method.** Every sample is one fresh child Python process (a contender never
shares an interpreter, reactor or fd table with another, or with its own
previous repeat); the repeats of a scenario are interleaved round-robin over
the contenders, so background load from other users of the machine hits them
alike. Throughput runs do a 64-run warm-up first. The table shows the median
of the repeats and their spread (min-max) and the ratio to procwork's median:
"x 2.00" means procwork is twice as good (faster, or half the wall time /
latency / CPU); "x 0.50" means it is half as good. Each child raises
RLIMIT_NOFILE to its hard limit. The parent is a child subreaper: anything a
child leaves behind is re-parented to it, killed, and reported as a failed
cleanup check.

**Noise.** The machine may be shared. For every sample the parent computes the
CPU time other processes used meanwhile (busy time in ``/proc/stat`` minus its
own and its descendants' rusage); a sample during which they used more than
``NOISY`` cores is measured again (at most ``NOISY_RETRIES`` times), and the
ones kept anyway are listed. The parent/child CPU-per-run figures of the
throughput scenario hardly depend on such load, the runs/s do: with 2 cores
the runs are CPU-bound, so runs/s ~ cores / (parent + child CPU per run).

The exit status is 1 if a target is missed (or a child fails), else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import functools
import json
import math
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _table import print_table  # benchmarks/_table.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TRUE = "/bin/true"
SLEEP = "/bin/sleep"
DATE = "/bin/date"
SH = "/bin/sh"

# 1. throughput
TRUE_RUNS = 2_000
TRUE_CONCURRENCY = 32
WARMUP_RUNS = 64
GATHER_TIMEOUT = 100.0  # s; a gathered batch still running then has hung
# 2. scale
SCALE_CHILDREN = 4_000
SCALE_CHILDREN_QUICK = 1_000
SCALE_SLEEP = 1.0
TWISTED_LIMIT = 120.0  # seconds of measured wall time before raw Twisted is cut off
# 3. watchdog
LOW_JOBS = 500
LOW_COMMAND = [SLEEP, "0.5"]
POOL_SIZE = 16
CRITICAL_RUNS = 50
CRITICAL_EVERY = 0.1  # seconds between two critical requests
CRITICAL_COMMAND = [DATE, "+%s.%N"]
CRITICAL_CAP = 5.0  # seconds; a critical run not started by then counts as "> cap"
SATURATE_FIRST = 1.0  # seconds the busy loops run before the low jobs come
LOWS_FIRST = 0.5  # seconds the low jobs run before the first critical request
BUSY_PER_CORE = 2
# 4. idle
IDLE_CHILDREN = 1_000
IDLE_SLEEP = 5.0
IDLE_SETTLE = 0.2  # seconds between "all started" and the window
IDLE_WINDOW = 3.0  # seconds, shortened if the children were slow to start

# A sample during which other processes used more than NOISY cores is measured
# again, at most NOISY_RETRIES times, after NOISY_PAUSE seconds.
NOISY = 0.25
NOISY_RETRIES = 2
NOISY_PAUSE = 5.0

# Targets
TARGET_TRUE_VS_POPEN = 0.9  # procwork runs/s >= this x the Popen loop's
TARGET_PARENT_CPU_VS_POPEN = 1.3  # procwork parent CPU/run <= this x Popen's
TARGET_TRUE_VS_TWISTED = 1.5  # procwork runs/s >= this x raw Twisted's
TARGET_PARENT_CPU_VS_TWISTED = 0.65  # procwork parent CPU/run <= this x Twisted's
TARGET_SCALE_VS_POPEN = 1.3  # procwork wall <= this x the Popen loop's
TARGET_CRITICAL_P99_MS = 50.0
TARGET_IDLE_CPU = 1.0  # % of a core


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal the process group led by ``pid`` (a child we have not reaped)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile; ``inf`` (censored) values sort last."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    if math.isinf(ordered[hi]):
        return math.inf
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _latency_figures(latencies: list[float]) -> dict[str, float]:
    return {
        "p50": 1000 * _percentile(latencies, 0.50),
        "p99": 1000 * _percentile(latencies, 0.99),
        "censored": float(sum(math.isinf(x) for x in latencies)),
    }


def _cpu() -> float:
    """CPU seconds (user + system) used by this process so far, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _children_cpu() -> float:
    """CPU seconds (user + system) of our reaped children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class _CpuMeter:
    """Parent and children CPU per run over a throughput batch."""

    def __init__(self) -> None:
        self.parent, self.children = _cpu(), _children_cpu()
        self.started = time.perf_counter()

    def figures(self, runs: int) -> dict[str, float]:
        elapsed = time.perf_counter() - self.started
        return {
            "rate": runs / elapsed,
            "cpu_per_run": 1e6 * (_cpu() - self.parent) / runs,
            "child_cpu_per_run": 1e6 * (_children_cpu() - self.children) / runs,
        }


def _parse_date(stdout: bytes) -> float | None:
    try:
        return float(stdout.split()[0])
    except (IndexError, ValueError):
        return None


# ---------------------------------------------------------------------------
# The contenders. Each runs in a child process and returns {metric: value}.
# ---------------------------------------------------------------------------

# -- procwork ---------------------------------------------------------------


def _procwork_batch(
    n: int, argv: list[str], sched: Any
) -> Generator[Any, Any, list[Any]]:
    import clockwork
    import procwork

    ds = [procwork.run(argv, scheduler=sched) for _ in range(n)]
    results: list[Any] = yield clockwork.gather(*ds)
    return results


def procwork_throughput(p: dict[str, Any]) -> dict[str, float]:
    import procwork
    import untwisted

    sched = procwork.Scheduler(
        max_running=TRUE_CONCURRENCY, load=procwork.NoLoadLimit()
    )
    untwisted.run(_procwork_batch(WARMUP_RUNS, [TRUE], sched))
    meter = _CpuMeter()
    results = untwisted.run(_procwork_batch(TRUE_RUNS, [TRUE], sched))
    figures = meter.figures(TRUE_RUNS)
    assert len(results) == TRUE_RUNS and all(r.ok for r in results), results[:3]
    return figures


def procwork_gather_throughput(p: dict[str, Any]) -> dict[str, float]:
    # The same runs gathered by Twisted's own gatherResults inside one
    # untwisted.run: nothing but the driver wakes the waiter, so a lost
    # wake-up (a stall until some unrelated I/O) shows up as lost runs/s,
    # and a hang as this sample's error.
    from twisted.internet import defer

    import procwork
    import untwisted

    sched = procwork.Scheduler(
        max_running=TRUE_CONCURRENCY, load=procwork.NoLoadLimit()
    )

    def batch(n: int) -> defer.Deferred[list[Any]]:
        return defer.gatherResults(
            [procwork.run([TRUE], scheduler=sched) for _ in range(n)]
        )

    untwisted.run(batch(WARMUP_RUNS), timeout=GATHER_TIMEOUT)
    meter = _CpuMeter()
    results = untwisted.run(batch(TRUE_RUNS), timeout=GATHER_TIMEOUT)
    figures = meter.figures(TRUE_RUNS)
    assert len(results) == TRUE_RUNS and all(r.ok for r in results), results[:3]
    return figures


def procwork_scale(p: dict[str, Any]) -> dict[str, float]:
    import procwork
    import untwisted

    n = p["n"]
    sched = procwork.Scheduler(max_running=n, load=procwork.NoLoadLimit())
    untwisted.run(procwork.run([TRUE], scheduler=sched))  # start the reactor
    cpu, started = _cpu(), time.perf_counter()
    results = untwisted.run(
        _procwork_batch(n, [SLEEP, str(SCALE_SLEEP)], sched), timeout=p["limit"]
    )
    elapsed, cpu = time.perf_counter() - started, _cpu() - cpu
    assert len(results) == n and all(r.ok for r in results), results[:3]
    return {"wall": elapsed, "cpu": cpu}


def procwork_idle(p: dict[str, Any]) -> dict[str, float]:
    import clockwork
    import procwork
    import untwisted

    n = p["n"]
    sched = procwork.Scheduler(max_running=n, load=procwork.NoLoadLimit())
    untwisted.run(procwork.run([TRUE], scheduler=sched))  # start the reactor
    figures: dict[str, float] = {}

    def main() -> Generator[Any, Any, list[Any]]:
        first = time.monotonic()
        ds = [procwork.run([SLEEP, str(IDLE_SLEEP)], scheduler=sched) for _ in range(n)]
        assert sched.running == n, sched
        figures["start_s"] = time.monotonic() - first
        yield clockwork.sleep(IDLE_SETTLE)
        window = _idle_window(time.monotonic() - first)
        cpu, wall = time.process_time(), time.perf_counter()
        yield clockwork.sleep(window)
        figures["cpu"] = (
            100 * (time.process_time() - cpu) / (time.perf_counter() - wall)
        )
        figures["window_s"] = window
        results: list[Any] = yield clockwork.gather(*ds)
        return results

    results = untwisted.run(main())
    assert all(r.ok for r in results), results[:3]
    return figures


def _idle_window(since_first_start: float) -> float:
    # The window must end before the first child exits.
    window = min(IDLE_WINDOW, IDLE_SLEEP - since_first_start - 0.3)
    if window < 0.5:
        raise RuntimeError(
            f"starting {IDLE_CHILDREN} children took {since_first_start:.1f} s: "
            f"no idle window left before they exit ({IDLE_SLEEP:g} s)"
        )
    return window


def procwork_watchdog(p: dict[str, Any]) -> dict[str, float]:
    busy = _saturate()
    try:
        return _procwork_watchdog()
    finally:
        _unsaturate(busy)


def _procwork_watchdog() -> dict[str, float]:
    from twisted.internet.defer import Deferred, DeferredList

    import clockwork
    import procwork
    import untwisted

    sched = procwork.Scheduler(max_running=POOL_SIZE)  # the real SystemLoad
    untwisted.run(procwork.run([TRUE], priority="critical", scheduler=sched))
    lows: list[Deferred[Any]] = []
    latencies: list[float] = []
    figures: dict[str, float] = {}

    def main() -> Generator[Any, Any, None]:
        for _ in range(LOW_JOBS):
            d = procwork.run(LOW_COMMAND, priority="low", grace=0.5, scheduler=sched)
            d.addErrback(lambda f: None)  # cancelled at the end
            lows.append(d)
        yield clockwork.sleep(LOWS_FIRST)
        figures["low_running"] = float(sched.running)
        figures["low_queued"] = float(sched.queued)
        critical: list[tuple[float, Deferred[Any]]] = []
        for _ in range(CRITICAL_RUNS):
            t0 = time.time()
            d = procwork.run(
                CRITICAL_COMMAND,
                priority="critical",
                timeout=CRITICAL_CAP + 1,
                grace=0.5,
                scheduler=sched,
            )
            critical.append((t0, d))
            yield clockwork.sleep(CRITICAL_EVERY)
        results = yield DeferredList([d for _, d in critical], consumeErrors=True)
        for (t0, _), (ok, result) in zip(critical, results, strict=True):
            stamp = _parse_date(result.stdout) if ok else None
            late = math.inf if stamp is None else stamp - t0
            latencies.append(math.inf if late > CRITICAL_CAP else late)
        figures["critical_queued_max_ms"] = 1000 * max(
            (r.queued for ok, r in results if ok), default=math.nan
        )

    try:
        untwisted.run(main(), timeout=CRITICAL_RUNS * CRITICAL_EVERY + 3 * CRITICAL_CAP)
    finally:
        for d in lows:
            if not d.called:
                d.cancel()  # queued: withdrawn; running: SIGTERM to its group
        deadline = time.monotonic() + 10
        while sched.running and time.monotonic() < deadline:
            untwisted.tick(0.05)
    figures.update(_latency_figures(latencies))
    return figures


# -- raw Twisted ------------------------------------------------------------


def _twisted_run(main: Callable[[], Any]) -> Any:
    """Run ``main`` (returning a Deferred) under ``reactor.run()``; its result."""
    from twisted.internet import defer
    from twisted.internet import reactor as installed

    reactor: Any = installed  # mypy reads the module, not the reactor it is

    box: list[Any] = []

    def go() -> None:
        d = defer.maybeDeferred(main)
        d.addBoth(box.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run()
    from twisted.python.failure import Failure

    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


class _TwistedPool:
    """Runs ``n`` copies of ``argv`` through ``reactor.spawnProcess``, ``k`` at once."""

    def __init__(
        self, argv: list[str], n: int, k: int, *, transport_only: bool = False
    ) -> None:
        from twisted.internet import defer

        self.argv, self.n, self.k = argv, n, k
        # transport_only: procwork's process transport (GroupProcess: its
        # spawn, O(1) reaping, drain) under the same protocol, without the
        # API, Process state, scheduler and Result above it.
        self.transport_only = transport_only
        self.started = self.ended = 0
        self.failures: list[Any] = []
        self.done: defer.Deferred[None] = defer.Deferred()
        self.transports: list[Any] = []
        self._devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)

    def start(self) -> Any:
        from twisted.internet import reactor

        while self.started < min(self.k, self.n):
            self._spawn_one(reactor)
        return self.done

    def _spawn_one(self, reactor: Any) -> None:
        from twisted.internet.protocol import ProcessProtocol

        pool = self

        class Collect(ProcessProtocol):
            def __init__(self) -> None:
                self.out: list[bytes] = []
                self.err: list[bytes] = []

            def outReceived(self, data: bytes) -> None:
                self.out.append(data)

            def errReceived(self, data: bytes) -> None:
                self.err.append(data)

            def processEnded(self, reason: Any) -> None:
                pool._ended(reason)

        self.started += 1
        if self.transport_only:
            from procwork._spawn import GroupProcess

            self.transports.append(
                GroupProcess(reactor, Collect(), self.argv, stdin=False)
            )
            return
        self.transports.append(
            reactor.spawnProcess(
                Collect(),
                self.argv[0],
                self.argv,
                env=None,  # inherit, like the others
                childFDs={0: self._devnull, 1: "r", 2: "r"},
            )
        )

    def _ended(self, reason: Any) -> None:
        from twisted.internet import reactor

        self.ended += 1
        if reason.value.exitCode != 0:
            self.failures.append(reason)
        if self.started < self.n:
            self._spawn_one(reactor)
        elif self.ended == self.n and not self.done.called:
            os.close(self._devnull)
            self.done.callback(None)

    def kill_all(self) -> None:
        for transport in self.transports:
            if transport.pid is not None:
                with contextlib.suppress(OSError):
                    os.kill(transport.pid, signal.SIGKILL)


def twisted_throughput(
    p: dict[str, Any], *, transport_only: bool = False
) -> dict[str, float]:
    from twisted.internet import defer

    @defer.inlineCallbacks
    def main() -> Generator[Any, Any, dict[str, float]]:
        warm = _TwistedPool(
            [TRUE], WARMUP_RUNS, TRUE_CONCURRENCY, transport_only=transport_only
        )
        yield warm.start()
        pool = _TwistedPool(
            [TRUE], TRUE_RUNS, TRUE_CONCURRENCY, transport_only=transport_only
        )
        meter = _CpuMeter()
        yield pool.start()
        figures = meter.figures(TRUE_RUNS)
        assert not pool.failures, pool.failures[:3]
        return figures

    figures: dict[str, float] = _twisted_run(main)
    return figures


def twisted_scale(p: dict[str, Any]) -> dict[str, float]:
    from twisted.internet import defer
    from twisted.internet import reactor as installed

    reactor: Any = installed  # mypy reads the module, not the reactor it is

    n, limit = p["n"], p["limit"]
    pool = _TwistedPool([SLEEP, str(SCALE_SLEEP)], n, n)
    figures: dict[str, float] = {}

    def main() -> defer.Deferred[None]:
        started, cpu = time.perf_counter(), _cpu()

        def finished(_: object) -> None:
            if "wall" not in figures:  # not cut off
                figures["wall"] = time.perf_counter() - started
                figures["cpu"] = _cpu() - cpu

        def give_up() -> None:
            figures["wall"] = math.inf
            figures["started"] = float(pool.started)
            figures["ended"] = float(pool.ended)
            pool.kill_all()
            if not pool.done.called:
                pool.done.callback(None)

        timer = reactor.callLater(limit, give_up)

        def stop_timer(result: object) -> object:
            if timer.active():
                timer.cancel()
            return result

        pool.done.addCallback(finished)
        pool.done.addBoth(stop_timer)
        # All at once, in one loop like the others; the loop itself checks
        # the time limit (the timer cannot fire before it returns).
        while pool.started < n:
            if time.perf_counter() - started > limit:
                give_up()
                break
            pool._spawn_one(reactor)
        return pool.done

    try:
        _twisted_run(main)
    finally:
        pool.kill_all()
    if math.isinf(figures.get("wall", 0.0)):
        return figures
    assert not pool.failures, pool.failures[:3]
    return figures


def twisted_idle(p: dict[str, Any]) -> dict[str, float]:
    from twisted.internet import defer, task
    from twisted.internet import reactor as installed

    reactor: Any = installed  # mypy reads the module, not the reactor it is

    n = p["n"]
    pool = _TwistedPool([SLEEP, str(IDLE_SLEEP)], n, n)
    figures: dict[str, float] = {}

    @defer.inlineCallbacks
    def main() -> Generator[Any, Any, None]:
        first = time.monotonic()
        done = pool.start()
        figures["start_s"] = time.monotonic() - first
        yield task.deferLater(reactor, IDLE_SETTLE, lambda: None)
        window = _idle_window(time.monotonic() - first)
        cpu, wall = time.process_time(), time.perf_counter()
        yield task.deferLater(reactor, window, lambda: None)
        figures["cpu"] = (
            100 * (time.process_time() - cpu) / (time.perf_counter() - wall)
        )
        figures["window_s"] = window
        yield done

    try:
        _twisted_run(main)
    finally:
        pool.kill_all()
    assert not pool.failures, pool.failures[:3]
    return figures


# -- asyncio ----------------------------------------------------------------


async def _aio_run(argv: list[str], procs: set[Any] | None = None) -> tuple[Any, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    if procs is not None:
        procs.add(proc)
    out, _ = await proc.communicate()
    if procs is not None:
        procs.discard(proc)
    return proc.returncode, out


async def _aio_kill(procs: set[Any]) -> None:
    for proc in list(procs):
        if proc.returncode is None:
            _kill_group(proc.pid)
    for proc in list(procs):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 10)


def asyncio_throughput(p: dict[str, Any]) -> dict[str, float]:
    async def batch(n: int) -> list[Any]:
        sem = asyncio.Semaphore(TRUE_CONCURRENCY)

        async def one() -> Any:
            async with sem:
                code, _ = await _aio_run([TRUE])
                return code

        return await asyncio.gather(*(one() for _ in range(n)))

    async def main() -> dict[str, float]:
        await batch(WARMUP_RUNS)
        meter = _CpuMeter()
        codes = await batch(TRUE_RUNS)
        figures = meter.figures(TRUE_RUNS)
        assert codes == [0] * TRUE_RUNS
        return figures

    return asyncio.run(main())


def asyncio_scale(p: dict[str, Any]) -> dict[str, float]:
    n = p["n"]

    async def main() -> dict[str, float]:
        await _aio_run([TRUE])
        procs: set[Any] = set()
        cpu, started = _cpu(), time.perf_counter()
        try:
            results = await asyncio.wait_for(
                asyncio.gather(
                    *(_aio_run([SLEEP, str(SCALE_SLEEP)], procs) for _ in range(n))
                ),
                p["limit"],
            )
        finally:
            await _aio_kill(procs)
        elapsed, cpu = time.perf_counter() - started, _cpu() - cpu
        assert [code for code, _ in results] == [0] * n
        return {"wall": elapsed, "cpu": cpu}

    return asyncio.run(main())


def asyncio_idle(p: dict[str, Any]) -> dict[str, float]:
    n = p["n"]
    figures: dict[str, float] = {}

    async def main() -> None:
        await _aio_run([TRUE])
        procs: set[Any] = set()
        all_started = asyncio.Event()

        async def one() -> Any:
            proc = await asyncio.create_subprocess_exec(
                SLEEP,
                str(IDLE_SLEEP),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            procs.add(proc)
            if len(procs) == n:
                all_started.set()
            await proc.communicate()
            return proc.returncode

        first = time.monotonic()
        tasks = [asyncio.create_task(one()) for _ in range(n)]
        try:
            await all_started.wait()
            figures["start_s"] = time.monotonic() - first
            await asyncio.sleep(IDLE_SETTLE)
            window = _idle_window(time.monotonic() - first)
            cpu, wall = time.process_time(), time.perf_counter()
            await asyncio.sleep(window)
            figures["cpu"] = (
                100 * (time.process_time() - cpu) / (time.perf_counter() - wall)
            )
            figures["window_s"] = window
            codes = await asyncio.gather(*tasks)
            assert codes == [0] * n
        finally:
            for t in tasks:
                t.cancel()
            await _aio_kill(procs)

    asyncio.run(main())
    return figures


def asyncio_watchdog(p: dict[str, Any]) -> dict[str, float]:
    busy = _saturate()
    try:
        return asyncio.run(_asyncio_watchdog())
    finally:
        _unsaturate(busy)


async def _asyncio_watchdog() -> dict[str, float]:
    sem = asyncio.Semaphore(POOL_SIZE)
    procs: set[Any] = set()
    running = 0

    async def job(argv: list[str]) -> bytes:
        nonlocal running
        async with sem:
            running += 1
            try:
                _, out = await _aio_run(argv, procs)
            finally:
                running -= 1
            return out

    await _aio_run([TRUE])
    lows = [asyncio.create_task(job(LOW_COMMAND)) for _ in range(LOW_JOBS)]
    critical: list[tuple[float, asyncio.Task[bytes]]] = []
    figures: dict[str, float] = {}
    try:
        await asyncio.sleep(LOWS_FIRST)
        figures["low_running"] = float(running)
        figures["low_queued"] = float(sum(not t.done() for t in lows) - running)
        for _ in range(CRITICAL_RUNS):
            t0 = time.time()
            critical.append((t0, asyncio.create_task(job(CRITICAL_COMMAND))))
            await asyncio.sleep(CRITICAL_EVERY)
        # the last request gets its CRITICAL_CAP too; the earlier ones more
        await asyncio.wait([t for _, t in critical], timeout=CRITICAL_CAP)
        latencies = []
        for t0, t in critical:
            stamp = _parse_date(t.result()) if t.done() and not t.exception() else None
            late = math.inf if stamp is None else stamp - t0
            latencies.append(math.inf if late > CRITICAL_CAP else late)
        figures.update(_latency_figures(latencies))
    finally:
        for t in lows + [t for _, t in critical]:
            t.cancel()
        await asyncio.gather(*lows, *(t for _, t in critical), return_exceptions=True)
        await _aio_kill(procs)
    return figures


# -- subprocess.Popen loop --------------------------------------------------


def _popen(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _popen_finish(proc: subprocess.Popen[bytes]) -> None:
    proc.communicate()
    assert proc.returncode == 0, proc.returncode


def popen_throughput(p: dict[str, Any]) -> dict[str, float]:
    def batch(n: int) -> None:
        in_flight: deque[subprocess.Popen[bytes]] = deque()
        for _ in range(n):
            if len(in_flight) >= TRUE_CONCURRENCY:
                _popen_finish(in_flight.popleft())
            in_flight.append(_popen([TRUE]))
        while in_flight:
            _popen_finish(in_flight.popleft())

    batch(WARMUP_RUNS)
    meter = _CpuMeter()
    batch(TRUE_RUNS)
    return meter.figures(TRUE_RUNS)


def popen_scale(p: dict[str, Any]) -> dict[str, float]:
    n = p["n"]
    _popen_finish(_popen([TRUE]))
    procs: list[subprocess.Popen[bytes]] = []
    cpu, started = _cpu(), time.perf_counter()
    try:
        for _ in range(n):
            procs.append(_popen([SLEEP, str(SCALE_SLEEP)]))
        for proc in procs:
            _popen_finish(proc)
        return {"wall": time.perf_counter() - started, "cpu": _cpu() - cpu}
    finally:
        for proc in procs:
            if proc.returncode is None:
                _kill_group(proc.pid)
                proc.wait()


# -- CPU saturation for the watchdog scenario --------------------------------


def _saturate() -> list[subprocess.Popen[bytes]]:
    busy = []
    try:
        for _ in range(BUSY_PER_CORE * (os.cpu_count() or 1)):
            busy.append(
                subprocess.Popen(
                    [SH, "-c", "while :; do :; done"],
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        time.sleep(SATURATE_FIRST)
    except BaseException:
        _unsaturate(busy)
        raise
    return busy


def _unsaturate(busy: list[subprocess.Popen[bytes]]) -> None:
    for proc in busy:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()  # by pid: the shell runs the loop itself, no children
    for proc in busy:
        proc.wait()


# ---------------------------------------------------------------------------
# The scenarios
# ---------------------------------------------------------------------------


@dataclass
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    digits: int = 0


Contender = Callable[[dict[str, Any]], dict[str, float]]


@dataclass
class Scenario:
    key: str
    description: str
    metrics: list[Metric]
    contenders: dict[str, tuple[str, Contender]]
    repeats: int
    params: dict[str, Any] = field(default_factory=dict)
    child_timeout: float = 120.0
    # A censored value ("> limit") for a metric; shown as "> cap".
    cap: float | None = None
    # A contender whose sample took longer than this (s) is not repeated.
    slow_after: float = math.inf
    # contender -> params overriding ``params``
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)


def scenarios(quick: bool) -> list[Scenario]:
    scale_n = SCALE_CHILDREN_QUICK if quick else SCALE_CHILDREN
    twisted_limit = 60.0 if quick else TWISTED_LIMIT
    return [
        Scenario(
            "throughput",
            f"{TRUE_RUNS:,} /bin/true, {TRUE_CONCURRENCY} at once (after a "
            f"{WARMUP_RUNS}-run warm-up); parent CPU = user + system time of the "
            "parent (all threads) / runs; child CPU = the same for the reaped "
            "children (RUSAGE_CHILDREN, includes the pre-exec part of vfork)",
            [
                Metric("rate", "runs/s", "runs/s", True),
                Metric("cpu_per_run", "parent CPU/run", "us", False),
                Metric("child_cpu_per_run", "child CPU/run", "us", False),
            ],
            {
                "procwork": ("procwork.run, Scheduler(32)", procwork_throughput),
                "procwork-gather": (
                    "procwork.run, gatherResults",
                    procwork_gather_throughput,
                ),
                "twisted": ("raw Twisted spawnProcess", twisted_throughput),
                "transport": (
                    "procwork transport alone",
                    functools.partial(twisted_throughput, transport_only=True),
                ),
                "asyncio": ("asyncio, Semaphore(32)", asyncio_throughput),
                "popen": ("subprocess.Popen loop", popen_throughput),
            },
            repeats=3 if quick else 7,
        ),
        Scenario(
            "scale",
            f"{scale_n:,} concurrent sleep {SCALE_SLEEP:g}, all started at once; "
            f"wall time to the last result and the parent's CPU time (user + "
            f"system) meanwhile (raw Twisted cut off at "
            f"{twisted_limit:g} s, and not repeated if a run takes > 20 s)"
            + (" [--quick: N = 1,000, not 4,000]" if quick else ""),
            [
                Metric("wall", "wall", "s", False, 2),
                Metric("cpu", "parent CPU", "s", False, 2),
            ],
            {
                "procwork": ("procwork.run, Scheduler(N)", procwork_scale),
                "twisted": ("raw Twisted spawnProcess", twisted_scale),
                "asyncio": ("asyncio create_subprocess_exec", asyncio_scale),
                "popen": ("subprocess.Popen loop", popen_scale),
            },
            repeats=2 if quick else 5,
            params={"n": scale_n, "limit": 120.0},
            overrides={"twisted": {"n": scale_n, "limit": twisted_limit}},
            child_timeout=twisted_limit + 120,
            cap=twisted_limit,
            slow_after=20.0,
        ),
        Scenario(
            "idle",
            f"parent CPU while it waits on {IDLE_CHILDREN:,} sleep {IDLE_SLEEP:g}, "
            f"over a {IDLE_WINDOW:g} s window after all have started (% of one core)",
            [Metric("cpu", "CPU", "% core", False, 3)],
            {
                "procwork": ("procwork.run, Scheduler(N)", procwork_idle),
                "twisted": ("raw Twisted spawnProcess", twisted_idle),
                "asyncio": ("asyncio create_subprocess_exec", asyncio_idle),
            },
            repeats=2 if quick else 3,
            params={"n": IDLE_CHILDREN},
        ),
        Scenario(
            "watchdog",
            f"{BUSY_PER_CORE} busy loops per core, {LOW_JOBS} low jobs "
            f"(sleep 0.5) in a pool of {POOL_SIZE}, then {CRITICAL_RUNS} critical "
            f"'date +%s.%N', one every {1000 * CRITICAL_EVERY:g} ms: start latency "
            f"(child's timestamp - time before the call), p50/p99 of the "
            f"{CRITICAL_RUNS}; '> {1000 * CRITICAL_CAP:g}': not started within "
            f"{CRITICAL_CAP:g} s",
            [
                Metric("p50", "start p50", "ms", False, 1),
                Metric("p99", "start p99", "ms", False, 1),
            ],
            {
                "procwork": ("procwork critical, Scheduler(16)", procwork_watchdog),
                "asyncio": ("asyncio Semaphore(16) pool", asyncio_watchdog),
            },
            repeats=2 if quick else 3,
            cap=1000 * CRITICAL_CAP,
        ),
    ]


CONTENDER_FUNCTIONS = {
    f"{s.key}:{c}": fn for s in scenarios(False) for c, (_, fn) in s.contenders.items()
}


# ---------------------------------------------------------------------------
# The parent: run children, clean up after them, print the table
# ---------------------------------------------------------------------------

PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _orphans() -> list[int]:
    """Processes re-parented to us (we have no other children between samples)."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == me:
            found.append(int(entry))
    return found


def _clean_up_orphans() -> int:
    """Kill and reap whatever a finished child left behind; how many there were."""
    strays = _orphans()
    for pid in strays:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # our own child: its pid can't be reused
    for pid in strays:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    return len(strays)


@dataclass
class Sample:
    figures: dict[str, float] | None
    error: str | None
    strays: int
    seconds: float
    foreign: float  # CPU used by other processes meanwhile, in cores


def _busy_seconds() -> float:
    """CPU time the whole machine has spent busy since boot (all cores)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _our_seconds() -> float:
    """CPU time of this process and every descendant it has reaped."""
    return _cpu() + _children_cpu()


def run_child(key: str, params: dict[str, Any], timeout: float) -> Sample:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH")) if p
    )
    started, busy, ours = time.monotonic(), _busy_seconds(), _our_seconds()
    child = subprocess.Popen(
        [sys.executable, __file__, "--child", key, json.dumps(params)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    error = None
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGTERM)  # its finally blocks kill its children
        try:
            out, err = child.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            _kill_group(child.pid)
            out, err = child.communicate()
        error = f"no answer within {timeout:g} s"
    finally:
        if child.poll() is None:
            _kill_group(child.pid)
            child.wait()
    strays = _clean_up_orphans()
    seconds = time.monotonic() - started
    foreign = (_busy_seconds() - busy - (_our_seconds() - ours)) / seconds
    figures = None
    if error is None:
        if child.returncode != 0:
            tail = "\n".join(err.strip().splitlines()[-15:])
            error = f"exit status {child.returncode}:\n{tail}"
        else:
            figures = json.loads(out.splitlines()[-1])
    return Sample(figures, error, strays, seconds, max(0.0, foreign))


def child_main(key: str, params: str) -> int:
    _raise_fd_limit()
    figures = CONTENDER_FUNCTIONS[key](json.loads(params))
    print(json.dumps(figures), flush=True)
    return 0


def _show(value: float, digits: int, cap: float | None = None) -> str:
    if math.isinf(value):
        return f"> {cap:g}" if cap is not None else "inf"
    if math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(ref: float, value: float, metric: Metric, cap: float | None) -> str:
    """How many times better procwork's ``ref`` is than ``value``."""
    if math.isinf(ref) or ref == 0 or value == 0:
        return "-"
    if math.isinf(value):
        if cap is None or metric.higher_is_better:
            return "-"
        return f"> x {cap / ref:,.0f}" if cap / ref >= 100 else f"> x {cap / ref:.2f}"
    r = ref / value if metric.higher_is_better else value / ref
    return f"x {r:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller N")
    parser.add_argument(
        "--only",
        help="run only these scenarios, comma-separated: "
        "throughput,scale,idle,watchdog",
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(*args.child)

    subreaper = _become_subreaper()
    chosen = scenarios(args.quick)
    if args.only:
        keep = set(args.only.split(","))
        chosen = [s for s in chosen if s.key in keep]
    print(
        f"Python {sys.version.split()[0]}, {os.uname().sysname} "
        f"{os.uname().release}, {os.cpu_count()} cores, "
        f"RLIMIT_NOFILE hard {resource.getrlimit(resource.RLIMIT_NOFILE)[1]}, "
        f"{'--quick' if args.quick else 'full run'}; one child process per sample",
        flush=True,
    )
    t_all = time.monotonic()
    samples: dict[tuple[str, str], list[dict[str, float]]] = {}
    errors: list[str] = []
    strays: dict[str, int] = {}
    retried, noisy = 0, []
    for scenario in chosen:
        slow: set[str] = set()
        for rep in range(scenario.repeats):
            for contender in scenario.contenders:
                if contender in slow:
                    continue
                key = f"{scenario.key}:{contender}"
                params = scenario.overrides.get(contender, scenario.params)
                for attempt in range(1 + NOISY_RETRIES):
                    sample = run_child(key, params, scenario.child_timeout)
                    shown = (
                        json.dumps(sample.figures)
                        if sample.figures is not None
                        else f"ERROR {sample.error}"
                    )
                    print(
                        f"  {key} #{rep + 1} ({sample.seconds:.1f} s, other "
                        f"processes {sample.foreign:.2f} cores): {shown}",
                        file=sys.stderr,
                        flush=True,
                    )
                    if sample.foreign <= NOISY or sample.seconds > 60:
                        break
                    if attempt < NOISY_RETRIES:
                        retried += 1
                        print("    (noisy: measuring it again)", file=sys.stderr)
                        time.sleep(NOISY_PAUSE)
                else:
                    noisy.append(f"{key} #{rep + 1} ({sample.foreign:.2f} cores)")
                if sample.seconds > scenario.slow_after:
                    slow.add(contender)
                if sample.strays:
                    strays[key] = strays.get(key, 0) + sample.strays
                if sample.figures is None:
                    errors.append(f"{key} #{rep + 1}: {sample.error}")
                else:
                    samples.setdefault((scenario.key, contender), []).append(
                        sample.figures
                    )

    # -- the table ----------------------------------------------------------------
    medians: dict[tuple[str, str, str], float] = {}
    header = (
        "scenario",
        "contender",
        "median",
        "spread (min - max)",
        "n",
        "unit",
        "vs procwork",
    )
    rows: list[tuple[str, ...]] = [header]
    for scenario in chosen:
        for metric in scenario.metrics:
            for contender, (label, _) in scenario.contenders.items():
                figs = samples.get((scenario.key, contender), [])
                values = [f[metric.key] for f in figs if metric.key in f]
                name = f"{scenario.key}: {metric.label}"
                if not values:
                    rows.append((name, label, "failed", "", "0", metric.unit, ""))
                    continue
                med = statistics.median(values)
                lo, hi = min(values), max(values)
                medians[(scenario.key, contender, metric.key)] = med
                d, cap = metric.digits, scenario.cap
                spread = (
                    "-"
                    if len(values) == 1
                    else (f"{_show(lo, d, cap)} - {_show(hi, d, cap)}")
                )
                ref = medians.get((scenario.key, "procwork", metric.key))
                ratio = (
                    "-"
                    if contender == "procwork" or ref is None
                    else _ratio(ref, med, metric, cap)
                )
                rows.append(
                    (
                        name,
                        label,
                        _show(med, d, cap),
                        spread,
                        str(len(values)),
                        metric.unit,
                        ratio,
                    )
                )
    print()
    for scenario in chosen:
        print(f"{scenario.key}: {scenario.description}")
    print()
    print_table(rows, gap_between_groups=True)
    print()
    print(
        'vs procwork: "x 2.00" = procwork twice as good (twice the runs/s, or '
        'half the time / latency / CPU); "x 0.50" = half as good'
    )
    print(
        f"note: {retried} sample(s) were measured again because other processes "
        f"used more than {NOISY:g} cores meanwhile"
        + (f"; kept although still noisy: {', '.join(noisy)}" if noisy else "")
    )
    for scenario in chosen:
        for contender, (label, _) in scenario.contenders.items():
            figs = samples.get((scenario.key, contender), [])
            if not figs:
                continue
            if scenario.key == "idle":
                print(
                    f"note: idle, {label}: starting {IDLE_CHILDREN:,} took "
                    f"{[round(f['start_s'], 2) for f in figs]} s, window "
                    f"{[round(f['window_s'], 2) for f in figs]} s"
                )
            if scenario.key == "watchdog":
                print(
                    f"note: watchdog, {label}: at the first critical request "
                    f"low jobs running {[int(f['low_running']) for f in figs]}, "
                    f"queued {[int(f['low_queued']) for f in figs]}; critical runs "
                    f"not started within {CRITICAL_CAP:g} s "
                    f"{[int(f['censored']) for f in figs]} of {CRITICAL_RUNS}"
                )

    # -- the targets ----------------------------------------------------------------
    print()
    failed = False

    def target(ok: object, text: str) -> None:
        # ok: a truth value, or None when a figure it needs is missing
        nonlocal failed
        failed |= not ok
        tag = "ok    " if ok else "MISSED"
        print(f"{tag}  {text}" + (" (not measured)" if ok is None else ""))

    def median_of(s: str, c: str, m: str) -> float | None:
        return medians.get((s, c, m))

    keys = {s.key for s in chosen}
    if "throughput" in keys:
        pw, po, tw = (
            median_of("throughput", c, "rate") for c in ("procwork", "popen", "twisted")
        )
        popen_cpu = median_of("throughput", "popen", "cpu_per_run")
        # Both ways of waiting for the runs, against the same Popen samples:
        # a clockwork task, and gatherResults (where a stall shows first).
        for key, how in (("procwork", "clockwork"), ("procwork-gather", "gather")):
            rate = median_of("throughput", key, "rate")
            target(
                rate and po and rate >= TARGET_TRUE_VS_POPEN * po,
                f"throughput: procwork ({how}) >= {TARGET_TRUE_VS_POPEN} x the "
                "Popen loop's runs/s"
                + (
                    f": {rate:,.0f}/s vs {po:,.0f}/s = {rate / po:.2f} x"
                    if rate and po
                    else ""
                ),
            )
            cpu = median_of("throughput", key, "cpu_per_run")
            target(
                cpu and popen_cpu and cpu <= TARGET_PARENT_CPU_VS_POPEN * popen_cpu,
                f"throughput: procwork ({how}) parent CPU per run <= "
                f"{TARGET_PARENT_CPU_VS_POPEN} x the Popen loop's"
                + (
                    f": {cpu:.0f} us vs {popen_cpu:.0f} us = {cpu / popen_cpu:.2f} x"
                    if cpu and popen_cpu
                    else ""
                ),
            )
        target(
            pw and tw and pw >= TARGET_TRUE_VS_TWISTED * tw,
            f"throughput: procwork >= {TARGET_TRUE_VS_TWISTED} x raw Twisted"
            + (f": {pw:,.0f}/s vs {tw:,.0f}/s = {pw / tw:.2f} x" if pw and tw else ""),
        )
        # The 1.5 x was set against an older Twisted; 26.x spawns with
        # posix_spawnp and the 2 cores are saturated by the children's own
        # exec (~0.55 ms each), so runs/s can't show procwork's saving. Its
        # own cost per run can: the parent CPU each run takes.
        pc, tc = (
            median_of("throughput", c, "cpu_per_run") for c in ("procwork", "twisted")
        )
        target(
            pc and tc and pc <= TARGET_PARENT_CPU_VS_TWISTED * tc,
            f"throughput: procwork parent CPU per run <= "
            f"{TARGET_PARENT_CPU_VS_TWISTED} x raw Twisted's"
            + (f": {pc:.0f} us vs {tc:.0f} us = {pc / tc:.2f} x" if pc and tc else ""),
        )
        # Not a target: where procwork's parent CPU per run goes.
        trc = median_of("throughput", "transport", "cpu_per_run")
        if pc and trc and popen_cpu:
            print(
                f"note: parent CPU per run: procwork's transport alone {trc:.0f} us "
                f"({trc / popen_cpu:.2f} x Popen's); the API, Process, scheduler and "
                f"Result above it add {pc - trc:.0f} us ({(pc - trc) / pc:.0%} of "
                "procwork.run's)"
            )
    if "scale" in keys:
        pw = median_of("scale", "procwork", "wall")
        po = median_of("scale", "popen", "wall")
        target(
            pw and po and pw <= TARGET_SCALE_VS_POPEN * po,
            f"scale: procwork wall <= {TARGET_SCALE_VS_POPEN} x the Popen loop"
            + (f": {pw:.2f} s vs {po:.2f} s = {pw / po:.2f} x" if pw and po else "")
            + (" [--quick: N = 1,000]" if args.quick else ""),
        )
    if "watchdog" in keys:
        p99 = median_of("watchdog", "procwork", "p99")
        figs = samples.get(("watchdog", "procwork"), [])
        worst = max((f["p99"] for f in figs), default=math.nan)
        cap = 1000 * CRITICAL_CAP
        target(
            p99 is not None and p99 < TARGET_CRITICAL_P99_MS,
            f"watchdog: procwork critical start p99 < {TARGET_CRITICAL_P99_MS:g} ms"
            + (
                f": {_show(p99, 1, cap)} ms (median of the repeats; worst "
                f"{_show(worst, 1, cap)} ms)"
                if p99 is not None
                else ""
            ),
        )
    if "idle" in keys:
        cpu = median_of("idle", "procwork", "cpu")
        target(
            cpu is not None and cpu < TARGET_IDLE_CPU,
            f"idle: procwork parent CPU < {TARGET_IDLE_CPU:g} % of a core"
            + (f": {cpu:.3f} %" if cpu is not None else ""),
        )
    target(
        not strays,
        "cleanup: no process left behind by any sample"
        + ("" if subreaper else " (unchecked: could not become a subreaper)")
        + (f"; killed {strays}" if strays else ""),
    )
    for error in errors:
        print(f"ERROR   {error}")
    print(f"\n(total {time.monotonic() - t_all:.0f} s)")
    return 1 if failed or errors else 0


if __name__ == "__main__":
    sys.exit(main())
