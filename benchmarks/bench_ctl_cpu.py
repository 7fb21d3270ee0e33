"""CPU of one ``procwork ctl status``: what an operator's call costs the machine.

Run from the repository root (Linux)::

    python benchmarks/bench_ctl_cpu.py                    # 20 calls
    python benchmarks/bench_ctl_cpu.py --code /other/checkout --calls 50
    python benchmarks/bench_ctl_cpu.py --python /plain/venv/bin/python

A real ``procwork monitor`` of the checkout ``--code`` runs 3 services;
``python -m procwork ctl status`` of the same checkout is run ``--calls``
times, one after the other, in a temporary directory, by ``--python``
(default this interpreter; give one of a plain venv to leave out what an
editable install adds to every Python start, ~10 ms for its import
finder). Its bytecode is cached first (``PYTHONPYCACHEPREFIX``), as an
installed package's is; ``--no-bytecode`` compiles every module on every
call instead. Each call's CPU, user + system, is the difference of
``getrusage(RUSAGE_CHILDREN)`` taken before and after it (the monitor is
not a child that has been waited for yet, so its CPU is not in it); the
median of the calls is the figure, min and max beside it; the wall time
is each call's, for information. Also printed: the CPU of ``python -c
pass`` by the same interpreter (the floor of any Python command), and how
many Twisted modules the call's imports load (``sys.modules`` of a child
Python running ``procwork.cli.main`` for ``ctl status``). CPU time grows
with the load of the machine: compare figures taken together.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _partners import ROOT, Monitor  # beside this script

_SERVICES = "".join(
    f'[[service]]\nname = "web-{i}"\ncommand = ["sleep", "3600"]\n' for i in range(3)
)

# Runs `procwork ctl ARGS` in this Python and says which Twisted modules it
# loaded, on stderr (its stdout is the status table).
_PROBE = (
    "import sys\n"
    "from procwork.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print(sum(m.split('.')[0] == 'twisted' for m in sys.modules), file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--code", default=str(ROOT), help="checkout to run")
    parser.add_argument(
        "--python", default=sys.executable, help="the interpreter of the ctl calls"
    )
    parser.add_argument(
        "--no-bytecode",
        action="store_true",
        help="compile every module on every call, as PYTHONDONTWRITEBYTECODE "
        "with no cached bytecode does (default: the calls' bytecode is cached, "
        "as an installed package's is)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        config = "[monitor]\nhttp = false\nsummary_every = 0\nmax_load = false\n"
        monitor = Monitor(Path(temp), config + _SERVICES, code=args.code)
        try:
            command = [args.python, "-m", "procwork", "ctl"]
            command += ["--socket", str(monitor.sock), "status"]
            env = dict(monitor.env)
            if not args.no_bytecode:
                # A checkout run with PYTHONDONTWRITEBYTECODE=1 (as the tests
                # are) has no .pyc: each call would compile procwork's
                # modules, ~10 ms that an installed package never pays. A
                # first call writes them to a cache of its own instead.
                env.pop("PYTHONDONTWRITEBYTECODE", None)
                env["PYTHONPYCACHEPREFIX"] = str(Path(temp) / "pycache")
                subprocess.run(command, capture_output=True, env=env, timeout=60)
            walls: list[float] = []
            cpus: list[tuple[float, float]] = []  # (user, system) of each call
            for _ in range(args.calls):
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                started = time.monotonic()
                done = subprocess.run(
                    command,
                    capture_output=True,
                    env=env,
                    cwd=temp,
                    timeout=60,
                )
                walls.append(time.monotonic() - started)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpus.append(
                    (after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime)
                )
                if done.returncode != 0:
                    print(done.stderr.decode(), file=sys.stderr)
                    return 1
            # The floor: the same interpreter starting and doing nothing.
            bare = [
                _child_cpu([args.python, "-c", "pass"], env, temp)
                for _ in range(args.calls)
            ]
            probe = subprocess.run(
                [
                    args.python,
                    "-c",
                    _PROBE,
                    "ctl",
                    "--socket",
                    str(monitor.sock),
                    "status",
                ],
                capture_output=True,
                text=True,
                env=monitor.env,
                cwd=temp,
                timeout=60,
            )
        finally:
            monitor.stop()
    print(f"{args.calls} x procwork ctl status ({args.code}, {args.python})")
    totals = [user + system for user, system in cpus]
    median = statistics.median(totals)
    user = statistics.median(u for u, _ in cpus)
    system = statistics.median(s for _, s in cpus)
    print(
        f"CPU per call: median {median * 1000:.1f} ms (user {user * 1000:.1f} ms, "
        f"system {system * 1000:.1f} ms), min {min(totals) * 1000:.1f} ms, "
        f"max {max(totals) * 1000:.1f} ms"
    )
    print(
        f"wall per call: median {statistics.median(walls) * 1000:.1f} ms, "
        f"max {max(walls) * 1000:.1f} ms"
    )
    print(
        f"python -c pass, for comparison: median {statistics.median(bare) * 1000:.1f} "
        "ms of CPU"
    )
    print(f"twisted modules imported: {probe.stderr.strip().splitlines()[-1]}")
    return 0


def _child_cpu(command: list[str], env: dict[str, str], cwd: str) -> float:
    """Seconds of CPU (user + system) ``command`` used, run to its end."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, capture_output=True, env=env, cwd=cwd, timeout=60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


if __name__ == "__main__":
    sys.exit(main())
