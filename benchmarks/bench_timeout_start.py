"""How fast ``procwork timeout`` starts, beside coreutils and ``procwork run``.

Run from the repository root, with the venv's ``procwork`` console script
installed (``pip install -e .``)::

    python benchmarks/bench_timeout_start.py            # ~30 s here
    python benchmarks/bench_timeout_start.py --quick    # fewer rounds

Each round runs every variant once, in a rotating order (so background load
hits all alike), on ``/bin/true`` with a 5 s timeout that never fires:

- ``python -I -S -c pass``: the floor, one Python starting;
- ``python -c pass``: the floor of a console script, with ``site`` (and,
  in an editable install, setuptools' import finder);
- ``/usr/bin/timeout 5 true``: coreutils;
- ``procwork timeout 5 true``: the console script, which imports only
  ``procwork/cli/_timeout.py`` (standard library; no Twisted, no argparse);
- ``python -m procwork timeout 5 true``: the same through ``-m``;
- ``procwork run --timeout 5 -- true``: the Twisted path.

Reported: the median wall time of each (from fork to reaping, the command
included) and its CPU (user + system, of the variant and its children: the
lifeline helper's too once it is reaped, which it is not in the wall time),
and the ratio of medians to coreutils and to ``procwork run``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

from _table import print_table  # benchmarks/_table.py, beside this script


def variants() -> dict[str, list[str]]:
    script = shutil.which("procwork", path=os.path.dirname(sys.executable))
    if script is None:
        sys.exit("no procwork console script beside this Python: pip install -e .")
    timeout = shutil.which("timeout") or "/usr/bin/timeout"
    return {
        "python -I -S -c pass": [sys.executable, "-I", "-S", "-c", "pass"],
        "python -c pass": [sys.executable, "-c", "pass"],
        "coreutils timeout": [timeout, "5", "true"],
        "procwork timeout": [script, "timeout", "5", "true"],
        "python -m procwork timeout": [
            sys.executable,
            "-m",
            "procwork",
            "timeout",
            "5",
            "true",
        ],
        "procwork run": [script, "run", "--timeout", "5", "--", "true"],
    }


def once(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (with its reaped children) of one run."""
    before = time.monotonic()
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - before
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"{argv} exited {process.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 rounds, not 40")
    rounds = 10 if parser.parse_args().quick else 40
    runs = variants()
    names = list(runs)
    walls: dict[str, list[float]] = {name: [] for name in names}
    cpus: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            seconds, cpu_seconds = once(runs[name])
            walls[name].append(seconds)
            cpus[name].append(cpu_seconds)
    wall = {name: statistics.median(walls[name]) for name in names}
    cpu = {name: statistics.median(cpus[name]) for name in names}
    rows = [["variant", "wall ms", "CPU ms", "/ coreutils", "/ procwork run"]]
    for name in names:
        rows.append(
            [
                name,
                f"{wall[name] * 1000:.1f}",
                f"{cpu[name] * 1000:.1f}",
                f"{wall[name] / wall['coreutils timeout']:.1f}x",
                f"{wall[name] / wall['procwork run']:.2f}x",
            ]
        )
    print(f"medians of {rounds} rounds, load average {os.getloadavg()[0]:.1f}")
    print_table(rows)


if __name__ == "__main__":
    main()
