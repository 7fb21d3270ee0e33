"""A program with contained runs whose daemons left their process groups.

Run by ``tests/procwork/test_contain.py`` (``python -m
tests.programs.contained_runs N``): with the lifeline on, it starts N runs
of ``tests/programs/escapee.py stay`` with ``contain=True``, prints
``escapee PID`` for each daemon, then ``root DIR`` (its cgroup subtree),
and waits to be killed.
"""

from __future__ import annotations

import re
import sys
import time

import procwork
import untwisted
from procwork import _cgroup
from procwork._reactor import default_reactor


def main(count: int) -> None:
    procwork.enable_lifeline()
    # Not about load: a busy machine must not queue the runs.
    procwork.scheduler().load = procwork.NoLoadLimit()
    for _ in range(count):
        proc = procwork.spawn(
            [sys.executable, "-m", "tests.programs.escapee", "stay"], contain=True
        )
        while True:
            line = untwisted.run(proc.readline(), timeout=30)
            found = re.match(rb"escapee (\d+)", line)
            if found:
                print(f"escapee {int(found.group(1))}", flush=True)
                break
    containment = _cgroup.runs_containment(default_reactor())
    print(f"root {containment.root}", flush=True)
    time.sleep(120)


if __name__ == "__main__":
    main(int(sys.argv[1]))
