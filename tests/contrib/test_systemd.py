"""contrib/systemd/procwork-monitor.service: valid for systemd, and its
commands work.

``systemd-analyze verify`` (from Debian's ``systemd`` package; ``.ci/run``
installs it when missing) parses the unit as systemd would and checks that
its commands exist; it is run on a copy whose ``/usr/local/bin/procwork`` is
this checkout's installed ``procwork``. What the unit does at stop and
restart (KillMode, Restart, the watchdog) needs systemd as PID 1 and is not
run here; the notify protocol itself is tested against a real socket in
``tests/monitor/test_watched.py``.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.tools import need_tool

UNIT = ROOT / "contrib" / "systemd" / "procwork-monitor.service"
# The procwork command installed next to the Python running the tests (the
# venv's), else the one on PATH.
PROCWORK = str(Path(sys.executable).parent / "procwork")
if not Path(PROCWORK).exists():
    PROCWORK = shutil.which("procwork") or PROCWORK


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    analyze = need_tool("systemd-analyze", package="systemd")
    return subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )


def installed_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with procwork's path pointing at this checkout's ``procwork``."""
    unit = tmp_path / UNIT.name
    unit.write_text(
        (text or UNIT.read_text()).replace("/usr/local/bin/procwork", PROCWORK)
    )
    return unit


def settings() -> list[tuple[str, str]]:
    """The unit's ``Key=value`` lines, in order (comments left out)."""
    return [
        (key, value)
        for key, value in re.findall(r"^(\w+)=(.*)$", UNIT.read_text(), re.MULTILINE)
    ]


@pytest.mark.e2e
def test_systemd_analyze_verify_accepts_the_unit_without_a_warning(
    tmp_path: Path,
) -> None:
    done = verify(installed_copy(tmp_path))
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@pytest.mark.e2e
def test_systemd_analyze_verify_would_report_a_misspelt_setting(tmp_path: Path) -> None:
    """The check above can fail: systemd warns of a bad value or an unknown key."""
    text = UNIT.read_text().replace("KillMode=mixed", "KillMode=mixd")
    done = verify(installed_copy(tmp_path, text + "\n[Service]\nRestartt=no\n"))
    assert "Failed to parse kill mode" in done.stderr
    assert "Unknown key 'Restartt'" in done.stderr


def test_the_monitor_alone_gets_sigterm_restarts_on_failure_and_reloads_on_sighup() -> (
    None
):
    """KillMode=mixed: the monitor stops its services by their own stop
    signals, and systemd SIGKILLs what is left of the unit afterwards."""
    unit = dict(settings())
    assert unit["Type"] == "notify"
    assert unit["KillMode"] == "mixed"
    assert unit["KillSignal"] == "SIGTERM"
    assert unit["Restart"] == "on-failure"
    assert int(unit["TimeoutStopSec"]) > 5  # the default stop_timeout
    assert unit["ExecStart"] == (
        "/usr/local/bin/procwork monitor /etc/procwork/monitor.toml"
    )
    reloads = [value for key, value in settings() if key == "ExecReload"]
    assert reloads[-1] == "/bin/kill -HUP $MAINPID"
    assert unit["WantedBy"] == "multi-user.target"
    # Nothing that would stop ordinary commands from running under it.
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectSystem", "ProtectHome"):
        assert key not in unit


def test_the_unit_delegates_its_cgroup_subtree_to_the_monitor() -> None:
    """Delegate=yes: the monitor contains each service in a cgroup of its own
    below the unit's (so a stop, a restart, the limits and the monitor's
    death reach daemons that left their process group), and nothing makes
    that subtree read-only (ProtectControlGroups would)."""
    unit = dict(settings())
    assert unit["Delegate"] == "yes"
    assert "ProtectControlGroups" not in unit


def test_the_monitor_tells_systemd_it_is_ready_and_is_restarted_when_pings_stop() -> (
    None
):
    """Type=notify: started once the monitor says READY=1; WatchdogSec: the
    monitor pings every half of it from its event loop, so a stalled loop
    is killed and restarted (Restart=on-failure covers a watchdog timeout).
    Only the monitor may notify, never a service it runs."""
    unit = dict(settings())
    assert unit["Type"] == "notify"
    assert unit["NotifyAccess"] == "main"
    watchdog = unit["WatchdogSec"]
    assert watchdog.endswith("s") and 10 <= int(watchdog[:-1]) <= 120
    assert unit["Restart"] == "on-failure"


def config_check(tmp_path: Path, config: Path) -> subprocess.CompletedProcess[str]:
    """The unit's ExecStartPre command, run on ``config``."""
    [pre] = [value for key, value in settings() if key == "ExecStartPre"]
    assert pre in [value for key, value in settings() if key == "ExecReload"]
    argv = shlex.split(
        pre.replace("/usr/local/bin/procwork", PROCWORK).replace(
            "/etc/procwork/monitor.toml", str(config)
        )
    )
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )


@pytest.mark.slow
def test_the_config_check_before_start_and_reload_passes_a_good_config_quietly(
    tmp_path: Path,
) -> None:
    done = config_check(tmp_path, ROOT / "specs" / "example-monitor.toml")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert re.search(r"example-monitor\.toml: ok: \d+ services", done.stderr)


@pytest.mark.slow
def test_the_config_check_before_start_and_reload_fails_a_bad_config_naming_it(
    tmp_path: Path,
) -> None:
    config = tmp_path / "monitor.toml"
    config.write_text('[[service]]\nname = "web"\ncommand = ["true"]\nrestrat = 1\n')
    done = config_check(tmp_path, config)
    assert done.returncode != 0
    assert str(config) in done.stderr and "restrat" in done.stderr
