"""The monitor soak, quick: one real ``procwork monitor`` against all its I/O
partners at once, under CPU load, keeps every bound.

``benchmarks/monitor_soak.py --quick`` runs them together for 20 s: its
stdout unread, a webhook with an endless body, stalled ``ctl tail -f``
followers of a service writing MB/s, floods of the control socket, 300 MB
POSTs and deeply nested JSON, a service log on a full disk, checks and
restarts on a schedule; then it reads stdout again and sends SIGTERM. It
measures and checks its own bounds (RSS, check runs and restarts against
the schedule, descriptors against the config's caps, every dropped log
line and every lost service log line counted, every request answered, the
exit after SIGTERM, no process left) and exits 1 naming any it broke. The
test holds the child to a hard limit and reads its report; the timing
bounds are the script's, never this test's.
"""

from __future__ import annotations

import pytest

from tests.support import PY, ROOT, run_bounded

# A real monitor against all its partners, for 20 s.
pytestmark = [pytest.mark.e2e, pytest.mark.slow]

#: Every line of the report, by its label: each must be printed.
REPORT = (
    "load",
    "RSS max",
    "check runs",
    "restarts",
    "fds max",
    "log lines dropped",
    "service log on a full disk",
    "webhook",
    "followers",
    "control flood",
    "ctl status",
    "HTTP",
    "hostile JSON",
    "status polls",
    "SIGTERM exit",
    "processes left",
    "partners",
)

#: Seconds the quick soak may take in all (it takes about 35).
LIMIT = 95


@pytest.mark.timeout(LIMIT + 20)  # SIGTERM's grace, and some
def test_a_monitor_against_all_its_partners_at_once_under_load_keeps_every_bound() -> (
    None
):
    """The quick soak exits 0 (no bound broken), and its report has every
    line, each with its figures."""
    status, out, err = run_bounded(
        [PY, str(ROOT / "benchmarks" / "monitor_soak.py"), "--quick"],
        LIMIT,
        grace=15,  # SIGTERM first: the soak unwinds (monitor, mount, files)
    )
    assert status is not None, f"no end within {LIMIT} s:\n{out}\n{err[-3000:]}"
    assert status == 0, f"exit {status}:\n{out}\n{err[-3000:]}"
    printed = {line.split(":", 1)[0]: line for line in out.splitlines()}
    missing = [label for label in REPORT if label not in printed]
    assert not missing, f"no line for {missing}:\n{out}"
    assert all(printed[label].endswith(": ok]") for label in REPORT[1:]), out
    assert out.rstrip().endswith("OK: every bound held"), out
