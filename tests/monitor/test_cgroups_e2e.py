"""A real ``procwork monitor`` contains its services in cgroups: a daemon
that left its service's process group dies on ``ctl stop``, when the
monitor is SIGKILLed (by its lifeline), and when the monitor and its
lifeline are both SIGKILLed (by the next monitor of the same config, before
it starts anything: never a duplicate).

The service is ``tests/programs/escapee.py``: it setsid()s and
double-forks a daemon that prints ``escapee PID``. These tests need a
writable cgroup v2 (root, as on this machine and in CI; skipped elsewhere
with the reason).
"""

from __future__ import annotations

import os
import re
import signal
import textwrap
from pathlib import Path

import pytest

from tests.support import ROOT, alive, gone_within
from tests.support.cgroups import cgroup_of, need_cgroups, wait_gone
from tests.support.monitor import (
    HEADER,
    MonitorProcess,
    ctl,
    start_monitor,
    statuses,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def daemonizer(ours: str) -> str:
    return textwrap.dedent(
        f"""
        [[service]]
        name = "daemonizer"
        command = ["{{python}}", "-u", "-m", "tests.programs.escapee", "stay", "{ours}"]
        cwd = "{ROOT}"
        start_seconds = 0.2
        stop_timeout = 2
        """
    )


def escapee_of(sock: Path) -> int:
    """The daemon's pid, from the service's output (``ctl tail``)."""

    def probe() -> int | None:
        found = re.search(r"escapee (\d+)", ctl(sock, "tail", "daemonizer").stdout)
        return int(found.group(1)) if found else None

    return wait_for("the daemon's pid", probe)


def lifeline_of(monitor: MonitorProcess) -> int:
    """The monitor's lifeline helper: its child running procwork's
    ``_lifeline_main.py``."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == monitor.proc.pid and b"_lifeline_main" in cmdline:
            return int(entry)
    raise AssertionError("the monitor has no lifeline")


def started_contained(
    monitors: list[MonitorProcess], tmp_path: Path, ours: str, started: list[int]
) -> tuple[MonitorProcess, Path, int]:
    """A monitor of the daemonizer, its socket and the daemon's pid, once
    the daemon runs in the service's cgroup."""
    need_cgroups()
    sock = tmp_path / "ctl.sock"
    config = tmp_path / "monitor.toml"
    config.write_text(HEADER + daemonizer(ours))
    monitor = start_monitor(monitors, tmp_path, config, "--socket", str(sock))
    monitor.expect(r"containment: cgroups under ")
    escapee = escapee_of(sock)
    started.append(escapee)
    assert cgroup_of(escapee).endswith("/daemonizer.service")
    return monitor, sock, escapee


def test_ctl_stop_kills_the_daemon_that_left_the_services_process_group(
    tmp_path: Path, monitors: list[MonitorProcess], ours: str, started: list[int]
) -> None:
    _, sock, escapee = started_contained(monitors, tmp_path, ours, started)
    status = statuses(sock)["daemonizer"]
    assert status["state"] == "RUNNING"
    assert os.getpgid(escapee) != os.getpgid(status["pid"])
    done = ctl(sock, "stop", "daemonizer")
    assert done.returncode == 0, done.stderr
    assert gone_within(escapee, 2.0), "the daemon outlived ctl stop"


def test_a_sigkilled_monitors_lifeline_kills_the_daemons_of_its_services(
    tmp_path: Path, monitors: list[MonitorProcess], ours: str, started: list[int]
) -> None:
    monitor, _, escapee = started_contained(monitors, tmp_path, ours, started)
    where = cgroup_of(escapee)
    host = need_cgroups()
    assert host.mountpoint is not None
    directory = os.path.join(host.mountpoint, where.lstrip("/"))
    monitor.proc.send_signal(signal.SIGKILL)
    monitor.proc.wait(timeout=10)
    assert gone_within(escapee, 5.0), "the daemon outlived its monitor"
    assert wait_gone(directory, 5.0), f"{directory} outlived its monitor"


def test_the_next_monitor_kills_what_a_monitor_killed_with_its_lifeline_left(
    tmp_path: Path, monitors: list[MonitorProcess], ours: str, started: list[int]
) -> None:
    """Both SIGKILLed, the lifeline first: nothing killed the service and its
    daemon. The next monitor of the same config (its lock, its subtree)
    kills them before it starts the service again, and says so."""
    first, sock, escapee = started_contained(monitors, tmp_path, ours, started)
    service = statuses(sock)["daemonizer"]["pid"]
    started.append(service)
    lifeline = lifeline_of(first)
    started.append(lifeline)
    os.kill(lifeline, signal.SIGKILL)
    assert gone_within(lifeline, 5.0)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(timeout=10)
    assert alive(escapee) and alive(service)  # left running, as the issue says

    config = tmp_path / "monitor.toml"
    second = MonitorProcess(
        str(config), "--socket", str(sock), stderr=tmp_path / "stderr2"
    )
    monitors.append(second)
    second.expect(
        r"2 processes are left in \S+ by an earlier procwork of the same name"
    )
    second.expect(r"control socket on ")
    assert gone_within(escapee, 2.0) and gone_within(service, 2.0)
    again = escapee_of(sock)
    started.append(again)
    assert again != escapee and alive(again)
