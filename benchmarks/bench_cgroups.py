"""What starting a child inside a cgroup costs, against the process-group spawn.

Run from the repository root, as root (or with a delegated cgroup v2
subtree; elsewhere it says why it cannot run)::

    python benchmarks/bench_cgroups.py            # ~30 s here
    python benchmarks/bench_cgroups.py --quick    # fewer rounds

Python cannot start a child inside a cgroup directly (``clone3`` with
``CLONE_INTO_CGROUP`` is not in ``os``, nor in ``subprocess``); the ways
there are measured side by side, in one worker process that has imported
the monitor (so its memory is a monitor's, which is what ``fork`` copies),
each spawning ``/bin/true`` and waiting for it, rounds interleaved so that
background load hits all alike:

1. **process group**: ``Popen(start_new_session=True)``, CPython's ``vfork``
   path: what procwork does without cgroups;
2. **sh wrapper** (procwork's choice): the child is ``/bin/sh -c 'echo 0 >
   cgroup.procs; exec "$@"'``, still ``vfork``\\ ed;
3. **pre-exec write**: a ``preexec_fn`` writes ``0`` to ``cgroup.procs``;
   CPython must then ``fork`` (copy) the whole parent;
4. **moving the parent**: the parent writes itself into the child's cgroup,
   spawns, and writes itself back.

Then the whole path, ``procwork.run(["true"])`` against
``procwork.run(["true"], contain=True)`` (which also makes and removes a
cgroup per run, and waits for it to be empty through inotify).

Reported: medians of the rounds, per spawn: wall time, and the parent's CPU
(user + system of the worker, ``getrusage``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from _table import print_table  # benchmarks/_table.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from procwork._cgroup import _fs, discover, entering  # noqa: E402


def _spawners(
    child: str, leaf: str
) -> dict[str, Callable[[], subprocess.Popen[bytes]]]:
    procs = os.path.join(child, "cgroup.procs")
    fd = os.open(procs, os.O_WRONLY | os.O_CLOEXEC)
    wrapper = entering([procs], ["/bin/true"], env=None, cwd=None).argv

    def group() -> subprocess.Popen[bytes]:
        return subprocess.Popen(["/bin/true"], start_new_session=True)

    def sh() -> subprocess.Popen[bytes]:
        return subprocess.Popen(wrapper, start_new_session=True)

    def preexec() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            ["/bin/true"],
            start_new_session=True,
            preexec_fn=functools.partial(os.write, fd, b"0"),
        )

    def move() -> subprocess.Popen[bytes]:
        os.write(fd, b"0")
        try:
            return subprocess.Popen(["/bin/true"], start_new_session=True)
        finally:
            _fs.write_text(leaf, "cgroup.procs", "0")

    return {
        "process group (vfork)": group,
        "sh wrapper (chosen)": sh,
        "pre-exec write (fork)": preexec,
        "moving the parent": move,
    }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _measure(spawn: Callable[[], object], n: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), _cpu()
    for _ in range(n):
        child = spawn()
        assert isinstance(child, subprocess.Popen)
        child.wait()
    return (time.perf_counter() - wall) / n, (_cpu() - cpu) / n


def _measure_runs(contain: bool, n: int) -> tuple[float, float]:
    import procwork
    import untwisted

    wall, cpu = time.perf_counter(), _cpu()
    for _ in range(n):
        result = untwisted.run(
            procwork.run(["true"], priority="critical", contain=contain), timeout=30
        )
        assert result.ok, result
    return (time.perf_counter() - wall) / n, (_cpu() - cpu) / n


def worker(base: str, rounds: int, spawns: int) -> None:
    """Measure, in a process that sits in ``base``'s leaf; print JSON."""
    # A monitor's memory, for fork to copy.
    import procwork.monitor

    leaf = os.path.join(base, "leaf")
    child = os.path.join(base, "child")
    spawners = _spawners(child, leaf)
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in spawners}
    runs: dict[str, list[tuple[float, float]]] = {"group": [], "contain": []}
    import procwork

    procwork.scheduler().load = procwork.NoLoadLimit()
    _measure_runs(True, 20)  # warm-up: reactor, containment, code paths
    _measure_runs(False, 20)
    for n in range(rounds):
        names = list(spawners) if n % 2 == 0 else list(reversed(spawners))
        for name in names:
            results[name].append(_measure(spawners[name], spawns))
        for contain in (False, True) if n % 2 == 0 else (True, False):
            runs["contain" if contain else "group"].append(
                _measure_runs(contain, spawns)
            )
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    print(json.dumps({"spawn": results, "run": runs, "rss_kib": rss}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--worker", metavar="BASE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    rounds, spawns = (4, 50) if args.quick else (12, 100)
    if args.worker:
        worker(args.worker, rounds, spawns)
        return 0
    host = discover()
    if host.v2_base is None:
        print(f"cannot run: no cgroup v2 subtree to make cgroups in: {host.v2_why}")
        return 1
    base = os.path.join(host.v2_base, f"procwork.bench.{os.getpid()}")
    for name in ("", "leaf", "child"):
        os.mkdir(os.path.join(base, name))
    try:
        # The worker starts in the leaf (the parent's cgroup for every way).
        done = subprocess.run(
            entering(
                [os.path.join(base, "leaf", "cgroup.procs")],
                [sys.executable, __file__, "--worker", base]
                + (["--quick"] if args.quick else []),
                env=None,
                cwd=None,
            ).argv,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        report(json.loads(done.stdout.splitlines()[-1]), rounds, spawns)
    finally:
        _fs.remove(base)
    return 0


def report(data: dict[str, object], rounds: int, spawns: int) -> None:
    def us(seconds: float) -> str:
        return f"{seconds * 1e6:.0f} µs"

    def medians(samples: list[list[float]]) -> tuple[float, float]:
        return (
            statistics.median(s[0] for s in samples),
            statistics.median(s[1] for s in samples),
        )

    spawn = data["spawn"]
    assert isinstance(spawn, dict)
    base_wall, base_cpu = medians(spawn["process group (vfork)"])
    rows = [["spawn of /bin/true, waited", "wall", "ratio", "parent CPU", "ratio"]]
    for name, samples in spawn.items():
        wall, cpu = medians(samples)
        rows.append(
            [
                name,
                us(wall),
                f"{wall / base_wall:.2f}",
                us(cpu),
                f"{cpu / base_cpu:.2f}",
            ]
        )
    rss_kib = data["rss_kib"]
    assert isinstance(rss_kib, int)
    print(
        f"{spawns} spawns x {rounds} rounds each (medians); the worker's "
        f"resident memory {rss_kib / 1024:.0f} MiB\n"
    )
    print_table(rows)
    run = data["run"]
    assert isinstance(run, dict)
    group_wall, group_cpu = medians(run["group"])
    contain_wall, contain_cpu = medians(run["contain"])
    print()
    print_table(
        [
            ["procwork.run(['true'])", "wall", "ratio", "parent CPU", "ratio"],
            ["process group", us(group_wall), "1.00", us(group_cpu), "1.00"],
            [
                "contain=True",
                us(contain_wall),
                f"{contain_wall / group_wall:.2f}",
                us(contain_cpu),
                f"{contain_cpu / group_cpu:.2f}",
            ],
        ]
    )
    print(f"\n(python {sys.version.split()[0]}, {os.cpu_count()} cores)")


if __name__ == "__main__":
    sys.exit(main())
