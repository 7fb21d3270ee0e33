"""``procwork ctl`` imports no Twisted: a call costs milliseconds, not 0.2 s.

Measured with ``benchmarks/bench_ctl_cpu.py`` (CPU per ``ctl status``);
here, what the measure rests on: a real ``ctl status`` against a real
monitor, and one finding it through ``--config``, in a fresh Python that
then says which modules it loaded (``tests/programs/ctl_alone.py``). No
timing is asserted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import run_program
from tests.support.monitor import (
    HEADER,
    MonitorProcess,
    python_service,
    start_monitor,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_ctl_status_and_ctl_by_config_load_nothing_of_twisted(
    tmp_path: Path, monitors: list[MonitorProcess], ours: str
) -> None:
    config = tmp_path / "monitor.toml"
    config.write_text(
        HEADER.replace("[monitor]\n", '[monitor]\nsocket = "ctl.sock"\n')
        + python_service("web", "import time; time.sleep(600)", ours)
    )
    start_monitor(monitors, tmp_path, config)
    for where in (["--socket", str(tmp_path / "ctl.sock")], ["-c", str(config)]):
        done = run_program("ctl_alone", *where, "status", "web")
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[1].split()[0] == "web"


def test_the_program_that_looks_would_see_twisted_if_ctl_loaded_it() -> None:
    """The check above can fail: the same program, made to import the
    reactor's package first, exits 99 naming it."""
    done = run_program("ctl_alone", "--socket", "/nonexistent/ctl.sock", "status")
    assert done.returncode == 3, done.stderr  # no monitor: ctl's own status
    done = run_program(
        "ctl_alone",
        *("--import-first", "twisted.internet.defer"),
        *("--socket", "/nonexistent/ctl.sock", "status"),
    )
    assert done.returncode == 99
    assert "procwork ctl imported " in done.stderr
    assert "twisted.internet.defer" in done.stderr
