"""``procwork ctl`` as an operator uses it: found by config, names by pattern, waits.

A real ``procwork monitor`` process and the installed ``procwork ctl``
console script: ctl finds the monitor from the config file's ``socket =``
and from ``$PROCWORK_SOCKET``; takes globs and a numprocs family's name;
``start/restart --wait`` exits 0 once the services are RUNNING and 1 with
the reason when one goes FATAL, or when the wait ends first. Every wait is
bounded; every process started is killed by pid at the end.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.monitor import (
    CTL,
    HEADER,
    MonitorProcess,
    ctl,
    python_service,
    start_monitor,
    statuses,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SLEEPER = "import time; time.sleep(600)"
FAILING = "import sys; print('cannot bind :8080', file=sys.stderr); sys.exit(3)"


def run_ctl(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``procwork ctl ARGS`` as typed (no --socket added), bounded."""
    return subprocess.run(
        [CTL, "ctl", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )


def test_ctl_finds_its_monitor_by_the_configs_socket_and_by_PROCWORK_SOCKET(
    tmp_path: Path, monitors: list[MonitorProcess], ours: str
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    config = etc / "monitor.toml"
    config.write_text(
        HEADER.replace("[monitor]\n", '[monitor]\nsocket = "../run/ctl.sock"\n')
        + python_service("web", SLEEPER, ours)
    )
    start_monitor(monitors, tmp_path, config)
    sock = tmp_path / "run" / "ctl.sock"
    assert sock.exists()

    # By the config, from anywhere: its relative socket is the config's.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for option in ("-c", "--config"):
        done = run_ctl(option, str(config), "status", "web", cwd=elsewhere)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[1].split()[0] == "web"

    # By $PROCWORK_SOCKET, when neither --socket nor --config is given.
    env = {**os.environ, "PROCWORK_SOCKET": str(sock)}
    done = run_ctl("status", "web", env=env)
    assert done.returncode == 0, done.stderr
    # Without it, the default socket: nobody there.
    assert run_ctl("status").returncode == 3

    # One place at a time.
    done = run_ctl("--socket", str(sock), "-c", str(config), "status")
    assert done.returncode == 2
    assert "not allowed with argument" in done.stderr

    # A config that serves no socket, and one that cannot be read, are said.
    off = etc / "off.toml"
    off.write_text("[monitor]\nsocket = false\n")
    done = run_ctl("-c", str(off), "status")
    assert (done.returncode, done.stderr) == (
        3,
        f"procwork ctl: {off}: [monitor] socket = false: that monitor serves no "
        "control socket\n",
    )
    done = run_ctl("-c", str(etc / "missing.toml"), "status")
    assert done.returncode == 2
    assert "missing.toml: cannot read config" in done.stderr


def test_ctl_takes_globs_and_a_numprocs_familys_name_and_names_close_ones_for_a_typo(
    tmp_path: Path, monitors: list[MonitorProcess], ours: str
) -> None:
    sock = tmp_path / "ctl.sock"
    config = tmp_path / "monitor.toml"
    config.write_text(
        HEADER
        + python_service("worker-{instance}", SLEEPER, ours, "numprocs = 3\n")
        + python_service("web-a", SLEEPER, ours)
        + python_service("web-b", SLEEPER, ours)
    )
    start_monitor(monitors, tmp_path, config, "--socket", str(sock))
    wait_for("all to run", lambda: all(s["pid"] for s in statuses(sock).values()))
    before = {name: s["pid"] for name, s in statuses(sock).items()}

    done = ctl(sock, "restart", "worker")
    assert done.returncode == 0, done.stderr
    assert [line.split(":")[0] for line in done.stdout.splitlines()] == [
        "worker-0",
        "worker-1",
        "worker-2",
    ]
    after = {name: s["pid"] for name, s in statuses(sock).items()}
    for name in ("worker-0", "worker-1", "worker-2"):
        assert after[name] not in (None, before[name])
    assert after["web-a"] == before["web-a"]

    done = ctl(sock, "status", "web-*")
    assert [row.split()[0] for row in done.stdout.splitlines()[1:]] == [
        "web-a",
        "web-b",
    ]
    done = ctl(sock, "stop", "web-?")
    assert done.stdout == "web-a: STOPPED\nweb-b: STOPPED\n"

    done = ctl(sock, "restart", "wrker")
    assert done.returncode == 1
    assert done.stderr.startswith(
        "procwork ctl: no service named 'wrker'; did you mean 'worker'"
    )
    assert statuses(sock)["worker-0"]["pid"] == after["worker-0"]


def test_start_wait_exits_0_once_running_and_1_with_the_reason_when_FATAL(
    tmp_path: Path, monitors: list[MonitorProcess], ours: str
) -> None:
    sock = tmp_path / "ctl.sock"
    config = tmp_path / "monitor.toml"
    off = "autostart = false\n"
    config.write_text(
        HEADER
        + python_service("good", SLEEPER, ours, off)
        + python_service("bad", FAILING, ours, off + "max_restarts = 2\n")
        + python_service("slow", SLEEPER, ours, off).replace(
            "start_seconds = 0.2", 'start_seconds = "1h"'
        )
    )
    start_monitor(monitors, tmp_path, config, "--socket", str(sock))

    done = ctl(sock, "start", "--wait", "--timeout", "30", "good")
    assert done.returncode == 0, done.stderr
    pid = statuses(sock)["good"]["pid"]
    assert done.stdout == f"good: RUNNING pid {pid}\n"
    done = ctl(sock, "restart", "--wait", "good")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("good: RUNNING pid ")
    assert statuses(sock)["good"]["pid"] not in (None, pid)

    # Today's `ctl start` says STARTING and exits 0; --wait says the truth.
    done = ctl(sock, "start", "--wait", "--timeout", "30", "bad")
    assert done.returncode == 1
    assert done.stdout == "bad: FATAL\n"
    assert done.stderr == (
        "procwork ctl: bad is FATAL (exited 3: 3 unexpected exits within 60 s, "
        "more than max_restarts=2); its last stderr: cannot bind :8080\n"
    )

    done = ctl(sock, "start", "--wait", "--timeout", "1", "slow")
    assert done.returncode == 1
    assert done.stderr == "procwork ctl: slow: still STARTING after 1 s\n"

    done = ctl(sock, "stop", "--wait", "good")
    assert done.returncode == 2  # stop does not wait: argparse says so
