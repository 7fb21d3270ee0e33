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
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.support import PY, ROOT, alive, child_env, gone_within
from tests.support.cgroups import (
    cgroup_of,
    need_cgroups,
    need_controller,
    wait_gone,
)
from tests.support.monitor import (
    HEADER,
    MonitorProcess,
    ctl,
    get,
    start_monitor,
    statuses,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def daemonizer(ours: str, extra: str = "") -> str:
    return textwrap.dedent(
        f"""
        [[service]]
        name = "daemonizer"
        command = ["{{python}}", "-u", "-m", "tests.programs.escapee", "stay", "{ours}"]
        cwd = "{ROOT}"
        start_seconds = 0.2
        stop_timeout = 2
        """
    ) + textwrap.dedent(extra)


def escapee_of(sock: Path) -> int:
    """The daemon's pid, from the service's output (``ctl tail``)."""

    def probe() -> int | None:
        found = re.search(r"escapee (\d+)", ctl(sock, "tail", "daemonizer").stdout)
        return int(found.group(1)) if found else None

    return wait_for("the daemon's pid", probe)


def running(sock: Path) -> dict[str, Any]:
    """The daemonizer's status once it is RUNNING (its start_seconds passed)."""

    def probe() -> dict[str, Any] | None:
        status = statuses(sock)["daemonizer"]
        return status if status["state"] == "RUNNING" else None

    return wait_for("the daemonizer to run", probe)


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
    status = running(sock)
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


def test_status_ctl_and_metrics_say_which_limits_are_enforced_and_what_it_uses(
    tmp_path: Path, monitors: list[MonitorProcess], ours: str, started: list[int]
) -> None:
    """pids_max is enforced here (the pids controller); memory_max is where
    a memory controller is procwork's (not on this machine: its v1 memory
    hierarchy is the host's), else reported with the reason. The service's
    tasks (it and its daemon) are read from its cgroup."""
    host = need_controller("pids")
    memory = "memory" in host.controllers() or "memory" in host.v1_bases
    sock = tmp_path / "ctl.sock"
    config = tmp_path / "monitor.toml"
    config.write_text(
        "[monitor]\nsummary_every = 0\nmax_load = false\n"
        + daemonizer(ours, 'pids_max = 50\nmemory_max = "200M"\n')
    )
    monitor = MonitorProcess(
        str(config), "--socket", str(sock), "--http", "127.0.0.1:0",
        stderr=tmp_path / "stderr",
    )  # fmt: skip
    monitors.append(monitor)
    port = monitor.expect(r"status on http://127\.0\.0\.1:(\d+)/").group(1)
    started.append(escapee_of(sock))
    cgroup = statuses(sock)["daemonizer"]["cgroup"]
    assert cgroup["path"].endswith("/daemonizer.service")
    assert cgroup["usage"]["tasks"] == 2
    limits = {limit["limit"]: limit for limit in cgroup["limits"]}
    assert limits["pids_max"]["enforced"] is True
    assert limits["memory_max"]["enforced"] is memory
    if not memory:
        assert "no memory controller" in limits["memory_max"]["why"]

    table = ctl(sock, "status").stdout
    assert re.search(r"^daemonizer  pids_max 50: enforced \(cgroup v[12] pids\.max\)$",
                     table, re.MULTILINE)  # fmt: skip
    assert re.search(r"^daemonizer  memory_max 200M: (enforced|not enforced: )",
                     table, re.MULTILINE)  # fmt: skip

    metrics = get(f"http://127.0.0.1:{port}/metrics").decode()
    assert 'procwork_service_tasks{service="daemonizer"} 2' in metrics
    assert (
        'procwork_service_limit_enforced{limit="pids_max",service="daemonizer"} 1'
        in metrics
    )
    assert re.search(r'^procwork_service_cpu_seconds_total\{service="daemonizer"\} ',
                     metrics, re.MULTILINE)  # fmt: skip

    checked = subprocess.run(
        [PY, "-m", "procwork", "monitor", str(config), "--check-config"],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    lines = checked.stderr.splitlines()
    assert lines[1].startswith("containment: cgroups under ")
    assert re.fullmatch(
        r"service 'daemonizer': pids_max 50: enforced \(cgroup v[12] pids\.max\)",
        lines[2] if "pids" in lines[2] else lines[3],
    )


def test_with_contain_false_the_monitor_uses_process_groups_and_says_so(
    tmp_path: Path, monitors: list[MonitorProcess], ours: str, started: list[int]
) -> None:
    """The fallback a config may ask for (and what a machine without cgroups
    gets): said once at start, in the status; the limit is not enforced,
    with the reason; and the daemon that left the group survives the stop,
    as it always did without cgroups."""
    sock = tmp_path / "ctl.sock"
    config = tmp_path / "monitor.toml"
    config.write_text(
        HEADER.replace("[monitor]\n", "[monitor]\ncontain = false\n")
        + daemonizer(ours, "pids_max = 50\n")
    )
    monitor = start_monitor(monitors, tmp_path, config, "--socket", str(sock))
    monitor.expect(r"containment: process groups only: contain = false in \[monitor\]")
    escapee = escapee_of(sock)
    started.append(escapee)
    cgroup = statuses(sock)["daemonizer"]["cgroup"]
    assert (cgroup["path"], cgroup["usage"]) == (None, None)
    [limit] = cgroup["limits"]
    assert limit["enforced"] is False
    assert "contain = false in [monitor]" in limit["why"]
    assert ctl(sock, "stop", "daemonizer").returncode == 0
    assert alive(escapee)
    assert len([line for line in monitor.lines if "containment: " in line]) == 1


def test_where_cgroups_cannot_be_had_the_monitor_starts_with_process_groups(
    tmp_path: Path, monitors: list[MonitorProcess], ours: str, started: list[int]
) -> None:
    """contain = true (the default) on a machine where procwork may make no
    cgroup (forced here with a parent that is none): never a crash; process
    groups as without cgroups, and the reason said at start and in the
    status, once."""
    sock = tmp_path / "ctl.sock"
    config = tmp_path / "monitor.toml"
    config.write_text(HEADER + daemonizer(ours, "pids_max = 50\n"))
    env = child_env() | {"PROCWORK_CGROUP_PARENT": str(tmp_path / "not-a-cgroup")}
    monitor = MonitorProcess(
        str(config), "--socket", str(sock), stderr=tmp_path / "stderr", env=env
    )
    monitors.append(monitor)
    why = (
        rf"\$PROCWORK_CGROUP_PARENT \({re.escape(str(tmp_path))}/not-a-cgroup\) "
        "is not a directory of a cgroup2 hierarchy"
    )
    monitor.expect(r"containment: process groups only: " + why)
    started.append(escapee_of(sock))
    status = running(sock)
    [limit] = status["cgroup"]["limits"]
    assert limit["enforced"] is False and re.search(why, limit["why"])
    assert ctl(sock, "stop", "daemonizer").returncode == 0
    assert len([line for line in monitor.lines if "containment: " in line]) == 1
