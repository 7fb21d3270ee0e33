"""A program that ends with a child running.

Run by ``tests/procwork/test_killing.py``. It starts ``sleep 60`` with a
``sleep 60`` grandchild through procwork and prints both pids, then, by
MODE: ``exit`` exits at once; ``never-drove-the-reactor`` prints only the
child's pid and exits before anything ran the reactor; anything else prints
``ready`` and blocks waiting for the child (for the signal the test sends).
"""

from __future__ import annotations

import sys

import procwork
import untwisted


def main(mode: str) -> None:
    proc = procwork.spawn(["sh", "-c", "sleep 60 & echo $!; exec sleep 60"])
    if mode == "never-drove-the-reactor":
        print(proc.pid, flush=True)
        sys.exit(0)
    grandchild = int(untwisted.run(proc.readline(), timeout=30))
    print(proc.pid, grandchild, flush=True)
    if mode == "exit":
        sys.exit(0)
    print("ready", flush=True)
    untwisted.run(proc.wait(), timeout=60)


if __name__ == "__main__":
    main(sys.argv[1])
