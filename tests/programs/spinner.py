"""A process that burns a core: prints ``ready``, then spins for 60 s at most.

Run by ``tests/monitor/test_rule_thresholds.py`` as ``python -m
tests.programs.spinner TOKEN``: the token is how the test's rule finds it in
``/proc``. The bound keeps a test that fails to kill it from leaving a
spinner behind for long.
"""

from __future__ import annotations

import time

if __name__ == "__main__":
    print("ready", flush=True)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        pass
