"""The soak of tests/procwork/test_soak.py, for minutes instead of seconds.

Run from the repository root (Linux)::

    python benchmarks/soak.py                 # about 5 minutes
    python benchmarks/soak.py --seconds 1200  # about 20 minutes
    python benchmarks/soak.py --quick         # about 1 minute

The scenarios are the test suite's own (its child programs and runners,
imported from ``tests/support/soak.py``, so the two never drift apart):

- ``wakeups``: results from a thread pool, plain threads, timers, pipes and
  process ends, alone, gathered, racing ``untwisted.run``'s deadline or
  cancelled at random moments (every core kept busy meanwhile);
- ``io-callback-spawns``: runs started from ``on_stdout`` line callbacks while
  runs whose pipes a background job holds end around them;
- ``cancels-and-timeouts``: runs with random timeouts, cancels, terminates and
  kills, queued and running, every Result checked against its contract (one
  core kept busy);
- ``threads-calling``: threads calling ``procwork.run``/``spawn`` directly
  (must raise ``ForeignThreadError``) and through ``callFromThread``;
- ``mixed-spawns``: every kind of run at once (input, /dev/null stdin, line
  callbacks starting runs, timeouts, cancels), counted for leaks from right
  after one warm-up run, as a user's own check would (both cores kept busy);
- ``signals``: SIGINT, SIGTERM, SIGHUP and SIGQUIT at random moments while a
  program starts children from blocking code; none may survive it.

They take turns, one child Python at a time, each for a slice of the time,
until the time is up (every scenario runs at least once). Printed: per
scenario and in total, the runs, cancels, timeouts, signals, wrong results,
leaked fds, zombies, orphans and leaked scheduler slots, then examples of
what went wrong. The exit status is 1 if any of the bad counts (wrong, leaked
fds, zombies, orphans, slots) is not 0, else 0.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

from _table import print_table  # benchmarks/_table.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support import cpu_load  # noqa: E402  (needs ROOT on sys.path)
from tests.support.soak import BAD_COUNTS, signal_soak, soak_in_child  # noqa: E402

COLUMNS = (
    "runs",
    "cancels",
    "timeouts",
    "signals",
    "wrong",
    "leaked_fds",
    "zombies",
    "orphans",
    "slots",
)
SCENARIOS = (
    "wakeups",
    "io-callback-spawns",
    "cancels-and-timeouts",
    "threads-calling",
    "mixed-spawns",
    "signals",
)
# Busy-looping processes kept running during a scenario, as in the tests.
LOAD = {"wakeups": 2, "cancels-and-timeouts": 1, "mixed-spawns": 2}
SIGNAL_ROUND_SECONDS = 4.0  # about what one round of 4 signalled programs takes


def one_slice(name: str, seconds: float, rng: random.Random) -> dict[str, Any]:
    """Run scenario ``name`` for about ``seconds``; its report."""
    seed = rng.randrange(1 << 30)
    if name == "signals":
        rounds = max(1, round(seconds / SIGNAL_ROUND_SECONDS))
        return signal_soak(rounds, seed=seed)
    hogs = LOAD.get(name, 0)
    if hogs:
        with cpu_load(hogs):
            return soak_in_child(name, seconds, seed=seed)
    return soak_in_child(name, seconds, seed=seed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=300.0, help="how long in all (default 300)"
    )
    parser.add_argument("--quick", action="store_true", help="about 60 s in all")
    parser.add_argument("--seed", type=int, help="random seed (default: random)")
    args = parser.parse_args()
    total = 60.0 if args.quick else args.seconds
    slice_seconds = min(30.0, max(5.0, total / (2 * len(SCENARIOS))))
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    print(
        f"soak: {total:g} s in all, slices of {slice_seconds:g} s, seed {seed}",
        flush=True,
    )

    sums = {name: dict.fromkeys(COLUMNS, 0) for name in SCENARIOS}
    slices = dict.fromkeys(SCENARIOS, 0)
    examples: list[str] = []
    started = time.monotonic()
    while True:
        for name in SCENARIOS:
            t0 = time.monotonic()
            report = one_slice(name, slice_seconds, rng)
            slices[name] += 1
            for column in COLUMNS:
                sums[name][column] += int(report.get(column, 0))
            bad = {c: report[c] for c in BAD_COUNTS if report.get(c)}
            print(
                f"  {name} ({time.monotonic() - t0:.0f} s, seed {report.get('seed')}): "
                + ", ".join(f"{c} {report.get(c, 0)}" for c in COLUMNS),
                flush=True,
            )
            if bad:
                examples.extend(
                    f"{name} (seed {report.get('seed')}): {example}"
                    for example in report.get("examples", [])[:5]
                )
        if time.monotonic() - started >= total:
            break

    rows: list[tuple[str, ...]] = [("scenario", "slices", *COLUMNS)]
    for name in SCENARIOS:
        rows.append((name, str(slices[name]), *(f"{sums[name][c]:,}" for c in COLUMNS)))
    rows.append(
        (
            "total",
            str(sum(slices.values())),
            *(f"{sum(s[c] for s in sums.values()):,}" for c in COLUMNS),
        )
    )
    print()
    print_table(rows)
    print(f"\n({time.monotonic() - started:.0f} s)")
    failed = {c: sum(s[c] for s in sums.values()) for c in BAD_COUNTS}
    failed = {c: n for c, n in failed.items() if n}
    if failed:
        print(f"\nFAILED: {failed}")
        for example in examples[:20]:
            print(f"  {example}")
        return 1
    print("\nok: no wrong result, leaked fd, zombie, orphan or leaked slot")
    return 0


if __name__ == "__main__":
    sys.exit(main())
