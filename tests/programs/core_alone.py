"""``import procwork`` loads the process core alone.

Run by ``tests/project/test_layering.py`` in a fresh program: neither the
supervisor, the monitor, the command, procmon nor conch is imported, and the
names procwork exported before they had rooms of their own still resolve,
on use. Fails (an AssertionError) otherwise.
"""

from __future__ import annotations

import importlib
import sys


def main() -> None:

    rooms = ("procwork.supervisor", "procwork.monitor", "procwork.cli")
    loaded = sorted(m for m in sys.modules if m.startswith(rooms))
    assert not loaded, loaded
    assert "twisted.runner.procmon" not in sys.modules
    assert "twisted.conch" not in sys.modules  # until a run names a host
    from procwork import Monitor, Supervisor  # resolved on use

    monitor = importlib.import_module("procwork.monitor")
    supervisor = importlib.import_module("procwork.supervisor")
    assert Monitor is monitor.Monitor
    assert Supervisor is supervisor.Supervisor


if __name__ == "__main__":
    main()
