"""Benchmark: checks asked in the monitor (no fork) against the same checks
as commands, side by side in one run, on 2 cores.

Run from the repository root (Linux; needs ``curl``)::

    python benchmarks/bench_native_checks.py            # 20 s per contender
    python benchmarks/bench_native_checks.py --quick    # 8 s per contender
    python benchmarks/bench_native_checks.py --hogs 16  # beside 16 CPU hogs
    python benchmarks/bench_native_checks.py --quick --rounds 3 --hogs 16 --http

What runs. A :class:`procwork.monitor.Monitor` from a config (``http =
false``, ``summary_every = 0``, ``max_load = false``, ``max_running =
200``), for ``DURATION`` seconds, the first ``WARMUP`` not measured:

1. **http native**: 100 checks ``http = URL`` every 1 s (timeout 1 s), URL a
   local ``http.server`` (threads, a listen backlog of 1024; a process of
   its own at nice -10, not measured: beside ``--hogs`` it must not be
   what is starved, or the checks would measure its lateness, not theirs).
2. **http curl**: the same 100 checks as ``command = ["curl", "-fsS", "-o",
   "/dev/null", "--max-time", "1", URL]``.
3. **system native**: 20 checks every 1 s, a third each ``load = true``,
   ``disk = "/"``, ``memory = true``.
4. **system command**: the same 20 as the ``{python} -c`` one-liners the
   built-in config used before (``os.getloadavg()``, ``shutil.disk_usage``,
   ``/proc/meminfo``).

**CPU**: the monitor process's own CPU (``time.process_time()``, all its
threads) plus its children's (``os.times()``'s children_user +
children_system: the reaped checks) over the measured window, divided by the
window's wall time, in % of one core. **Runs** are the check runs that ended
in the window, over those due (checks x seconds); **ok** the share that
succeeded; **late** the median and p99, in ms, of the lateness of the runs'
starts: when the run began minus its place on the check's grid (its first
start plus whole intervals). An http check begins when its request's
routine takes its first step (a clockwork task, a turn of the reactor after
the interval's timer fired); the others when the interval's timer fired; a
command check's spawn begins later still, after the scheduler admits it
(not counted); **gc ms** the CPU time of the longest garbage collection in
the monitor in the window (a pause every check then waits through);
**wait %** the share of the window the monitor's reactor thread spent runnable but
waiting for a CPU (``run_delay`` of its ``/proc/thread-self/schedstat``):
where lateness beside hogs comes from. The checks share their interval, so
the monitor spreads them over it (each at a place taken from its name). Each
contender runs in a fresh child Python pinned to two cores
(``sched_setaffinity``, inherited by its checks and, with ``--hogs N``, by N
busy-looping processes started beside it, at nice 0 like the monitor).
With ``--spread``, check i of N has ``start_delay = i/N``: evenly spread
over each second instead of at the places the monitor gives them; with
``--together``, all have ``start_delay = 0.001``: none is spread, all fall
due at the same instant (as every check did before the monitor spread them).
With ``--rounds R`` each contender runs R times (the contenders in turn),
and each figure is the median of its R rounds. ``--http`` runs the http
contenders only. ``--monitor-nice N`` runs the monitors (and so their
command checks) at nice N, as ``Nice=`` in their systemd unit would;
``--nice N`` and ``--realtime`` instead set ``[monitor] nice = N`` and
``realtime = true`` in their config (the monitor's alone: its command
checks start at nice 0); left out, the monitors take their default, nice
-10 where permitted (``--nice 0``: as started). With
``--no-fork`` (as root), each monitor runs as ``nobody`` with
``RLIMIT_NPROC`` at the number of tasks that user has: it can neither fork
nor start a thread, and the table shows which checks keep their schedule and
what the others say. Nothing is asserted; the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DURATION, WARMUP = 20.0, 4.0
QUICK_DURATION, QUICK_WARMUP = 8.0, 2.0
HTTP_CHECKS, SYSTEM_CHECKS = 100, 20
CONTENDERS = ("http native", "http curl", "system native", "system command")

_SYSTEM_COMMANDS = [
    "import os, sys; sys.exit(os.getloadavg()[0] / os.cpu_count() > 4)",
    "import shutil, sys; u = shutil.disk_usage('/'); sys.exit(u.used / u.total > 0.99)",
    "import sys; m = open('/proc/meminfo').read(); sys.exit('MemAvailable' not in m)",
]
_SYSTEM_NATIVE = ["load = true", 'disk = "/"\nmax_used_percent = 99', "memory = true"]


def _pin_to_cores() -> None:
    cores = sorted(os.sched_getaffinity(0))[:2]
    os.sched_setaffinity(0, cores)


def _config(
    name: str,
    url: str,
    spread: bool = False,
    together: bool = False,
    priority: tuple[int | None, bool] = (None, False),
) -> str:
    lines = [
        "[monitor]",
        "http = false",
        "summary_every = 0",
        "max_load = false",
        "max_running = 200",
        f"realtime = {'true' if priority[1] else 'false'}",
    ]
    if priority[0] is not None:  # left out: the monitor's default
        lines.append(f"nice = {priority[0]}")
    count = HTTP_CHECKS if name.startswith("http") else SYSTEM_CHECKS
    for i in range(count):
        if name == "http native":
            ask = f'http = "{url}"'
        elif name == "http curl":
            argv = ["curl", "-fsS", "-o", "/dev/null", "--max-time", "1", url]
            ask = f"command = {json.dumps(argv)}"
        elif name == "system native":
            ask = _SYSTEM_NATIVE[i % 3]
        else:
            argv = [sys.executable, "-c", _SYSTEM_COMMANDS[i % 3]]
            ask = f"command = {json.dumps(argv)}"
        lines += ["", "[[check]]", f'name = "c{i}"', ask, "every = 1", "timeout = 1"]
        if spread:  # the checks' grids spread over the second, not all at 0
            lines.append(f"start_delay = {i / count:.4f}")
        elif together:  # one start_delay for all: all due at the same instant
            lines.append("start_delay = 0.001")
    return "\n".join(lines) + "\n"


def _cannot_fork() -> None:
    """Become ``nobody`` with its pid limit reached: no fork, no new thread
    (Linux counts threads towards RLIMIT_NPROC; root is exempt from it)."""
    import resource

    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    tasks = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            text = status.read_text()
            if "\nUid:\t65534\t" in text:
                tasks += int(text.split("\nThreads:\t")[1].split()[0])
    resource.setrlimit(resource.RLIMIT_NPROC, (tasks, tasks))


def _timed_routines(began: Any) -> None:
    """Call ``began(spec)`` when an http or tcp check's routine takes its
    first step: when the check's request really begins."""
    from procwork.monitor import _netprobe

    routine = _netprobe.routine

    def timed(spec: Any) -> Any:
        inner = routine(spec)

        def run() -> Any:
            began(spec)
            return (yield from inner)

        return run()

    _netprobe.routine = timed


def _run_delay() -> float:
    """Seconds this thread has spent runnable, waiting for a CPU."""
    with open("/proc/thread-self/schedstat") as f:
        return int(f.read().split()[1]) / 1e9


def _gc_pauses() -> list[tuple[float, float]]:
    """From now on, each garbage collection's (end, CPU seconds it took:
    its thread's, so that the process being descheduled does not count)."""
    import gc

    pauses: list[tuple[float, float]] = []
    began: list[float] = []

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began[:] = [time.thread_time()]
        elif began:
            pauses.append((time.time(), time.thread_time() - began[0]))

    gc.callbacks.append(timed)
    return pauses


def contender(
    name: str,
    url: str,
    duration: float,
    warmup: float,
    fork: bool = True,
    spread: bool = False,
    together: bool = False,
    priority: tuple[int | None, bool] = (None, False),
) -> dict[str, Any]:
    """One contender, in this (child) process: its figures."""
    from twisted.internet import task

    import procwork.monitor
    import untwisted
    from procwork.monitor._cpupriority import apply_cpu_priority

    _pin_to_cores()
    config = procwork.monitor.parse_config(
        _config(name, url, spread, together, priority), "<bench>"
    )
    # As procwork monitor does, on the thread that will run the reactor.
    if apply_cpu_priority(config.nice, config.realtime) is not None:
        raise SystemExit("--nice/--realtime: not permitted here")
    monitor = procwork.monitor.Monitor(config)
    reactor: Any = monitor.supervisor.reactor
    checks = monitor.checks.status
    # Lateness of each run's start: when it began (an http check: its
    # routine's first step; the others: its interval's timer), minus its
    # place on the check's grid (first start + whole intervals). For a
    # command check the spawn begins later still (not counted here).
    first: dict[str, float] = {}
    starts: list[tuple[float, float]] = []
    due: dict[str, float] = {}  # a run's place on its grid, until it begins
    tick = monitor.checks._tick

    def began(spec: Any) -> None:
        now = time.time()
        if spec.name in due:
            starts.append((now, max(0.0, now - due.pop(spec.name))))

    def timed_tick(spec: Any) -> None:
        called = time.time()
        grid = first.setdefault(spec.name, called)
        k = math.floor((called - grid) / spec.every + 0.01)
        due[spec.name] = grid + k * spec.every
        if name != "http native":
            began(spec)
        tick(spec)

    if name == "http native":
        _timed_routines(began)

    monitor.checks._tick = timed_tick  # type: ignore[method-assign]
    pauses = _gc_pauses()

    def ended() -> tuple[int, int]:
        done = sum(s.ok + s.failed + s.timed_out for s in checks.values())
        return done, sum(s.ok for s in checks.values())

    window: dict[str, Any] = {}

    def mark() -> None:
        times = os.times()
        window.update(
            waited=_run_delay(),
            wall=time.time(),
            cpu=time.process_time(),
            children=times.children_user + times.children_system,
            ended=ended(),
        )

    if not fork:
        # Import now what the checks will (the standard library may be where
        # nobody cannot read it), then drop root.
        import clockwork.net
        import procwork.monitor._netprobe

        untwisted.run(clockwork.net.request("GET", url, timeout=5))
        _cannot_fork()
    monitor.start()
    reactor.callLater(warmup, mark)
    untwisted.run(task.deferLater(reactor, duration, lambda: None))
    end = time.time()
    wall = end - window["wall"]
    own = time.process_time() - window["cpu"]
    waited = _run_delay() - window["waited"]
    times = os.times()
    children = times.children_user + times.children_system - window["children"]
    done, ok = ended()
    done -= window["ended"][0]
    ok -= window["ended"][1]
    failures = sorted(
        {s.last_detail for s in checks.values() if s.last_outcome != "ok"}
    )
    untwisted.run(monitor.stop(), timeout=60)
    due = len(checks) * wall
    late = sorted(x for t, x in starts if window["wall"] <= t < end) or [0.0]
    gc_ms = [1000 * x for t, x in pauses if window["wall"] <= t < end]
    return {
        "gc": max(gc_ms, default=0.0),
        "wait": 100 * waited / wall,
        "late50": 1000 * late[len(late) // 2],
        "late99": 1000 * late[min(len(late) - 1, int(len(late) * 0.99))],
        "failure": failures[0] if failures else "",
        "cpu": 100 * (own + children) / wall,
        "own": 100 * own / wall,
        "children": 100 * children / wall,
        "runs": done / due,
        "ok": ok / done if done else 0.0,
    }


# http.server's, with a listen backlog for 100 connections at once (its
# default, 5, drops the SYNs of checks that start together).
_SERVER = """
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

class Server(ThreadingHTTPServer):
    request_queue_size = 1024

class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

Server(("127.0.0.1", int(sys.argv[1])), Quiet).serve_forever()
"""


def _above_hogs() -> None:
    """Nice -10 (as root; else as it is): what the checks ask must answer."""
    with contextlib.suppress(OSError):
        os.nice(-10)


@contextlib.contextmanager
def _server() -> Iterator[str]:
    """http.server on loopback (see _SERVER), in a process of its own."""
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / "index.html").write_text("ok\n")
        port = 18000 + os.getpid() % 1000
        server = subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(port)],
            cwd=directory,
            preexec_fn=_above_hogs,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(1.0)  # let it listen (a benchmark, not a test)
            yield f"http://127.0.0.1:{port}/"
        finally:
            server.kill()
            server.wait(timeout=10)


@contextlib.contextmanager
def _hogs(count: int) -> Iterator[None]:
    hogs = [
        subprocess.Popen(
            [sys.executable, "-c", "while True: pass"],
            preexec_fn=_pin_to_cores,  # the same two cores as the contender
        )
        for _ in range(count)
    ]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait(timeout=10)


def _medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the rounds (a failure: the first said)."""
    medians: dict[str, Any] = {}
    for key in rounds[0]:
        if key == "failure":
            medians[key] = next((r[key] for r in rounds if r[key]), "")
        else:
            medians[key] = statistics.median(r[key] for r in rounds)
    return medians


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--hogs", type=int, default=0)
    parser.add_argument(
        "--spread",
        action="store_true",
        help="start_delay = i/N s for check i: their starts spread over 1 s",
    )
    parser.add_argument(
        "--together",
        action="store_true",
        help="start_delay = 0.001 s for all: all due at the same instant",
    )
    parser.add_argument(
        "--no-fork",
        action="store_true",
        help="run the monitors as nobody at its pid limit (needs root)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="figures are medians of R rounds"
    )
    parser.add_argument("--http", action="store_true", help="http contenders only")
    parser.add_argument(
        "--monitor-nice",
        type=int,
        default=0,
        help="the monitors' nice value (below 0 needs root), as systemd's Nice=",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=None,
        help="[monitor] nice = N in the monitors' config (-20..0; default: "
        "left out, so -10 where permitted)",
    )
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="[monitor] realtime = true in the monitors' config (needs root)",
    )
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    duration, warmup = (
        (QUICK_DURATION, QUICK_WARMUP)
        if args.quick
        else (
            DURATION,
            WARMUP,
        )
    )
    if args.contender:
        os.nice(args.monitor_nice)
        fork = not args.no_fork
        figures = contender(
            args.contender,
            args.url,
            duration,
            warmup,
            fork,
            args.spread,
            args.together,
            (args.nice, args.realtime),
        )
        print(json.dumps(figures))
        return 0
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH")) if p
    )
    rounds: dict[str, list[dict[str, Any]]] = {}
    names = [n for n in CONTENDERS if n.startswith("http") or not args.http]
    with _server() as url, _hogs(args.hogs):
        for name in names * args.rounds:
            argv = [sys.executable, __file__, "--contender", name, "--url", url]
            if args.quick:
                argv.append("--quick")
            if args.no_fork:
                argv.append("--no-fork")
            if args.spread:
                argv.append("--spread")
            if args.together:
                argv.append("--together")
            argv.append(f"--monitor-nice={args.monitor_nice}")
            if args.nice is not None:
                argv.append(f"--nice={args.nice}")
            if args.realtime:
                argv.append("--realtime")
            child = subprocess.run(
                argv, capture_output=True, text=True, env=env, timeout=600
            )
            if child.returncode != 0:
                raise RuntimeError(f"{name} failed:\n{child.stderr}")
            figures = json.loads(child.stdout.splitlines()[-1])
            rounds.setdefault(name, []).append(figures)
    results = {name: _medians(each) for name, each in rounds.items()}
    print(
        f"{HTTP_CHECKS} http checks/s, {SYSTEM_CHECKS} system checks/s; "
        f"{duration - warmup:g} s measured; {args.hogs} CPU hogs beside"
        + ("; the monitors cannot fork nor start a thread" if args.no_fork else "")
        + ("; start_delay = i/N" if args.spread else "")
        + ("; all due at the same instant" if args.together else "")
        + (f"; the monitors at nice {args.monitor_nice}" if args.monitor_nice else "")
        + (f"; [monitor] nice = {args.nice}" if args.nice is not None else "")
        + ("; [monitor] realtime = true" if args.realtime else "")
        + (f"; medians of {args.rounds} rounds" if args.rounds > 1 else "")
    )
    print(
        f"{'contender':16} {'CPU %':>7} {'monitor':>8} {'children':>9} "
        f"{'runs/due':>9} {'ok':>6} {'late p50':>9} {'p99 ms':>7} {'gc ms':>6} "
        f"{'wait %':>7}"
    )
    for name, f in results.items():
        print(
            f"{name:16} {f['cpu']:7.1f} {f['own']:8.1f} {f['children']:9.1f} "
            f"{f['runs']:9.2f} {f['ok']:6.2f} {f['late50']:9.1f} {f['late99']:7.1f} "
            f"{f['gc']:6.1f} {f['wait']:7.1f}"
        )
    for name, f in results.items():
        if f["failure"]:
            print(f"{name}: a failure: {f['failure'][:150]}")
    for kind, command in (("http", "http curl"), ("system", "system command")):
        if command not in results:
            continue
        native = results[f"{kind} native"]["cpu"]
        ratio = native / results[command]["cpu"] if results[command]["cpu"] else 0
        print(f"{kind}: native CPU / command CPU = {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
