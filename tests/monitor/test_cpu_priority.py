"""``[monitor] nice`` and ``realtime``: the monitor's own CPU priority,
never handed on to what it starts.

A real ``procwork monitor`` raised to ``SCHED_RR`` and nice -10 starts its
services and command checks at the normal policy and nice 0
(``SCHED_RESET_ON_FORK``); one without the right says so in one line and
runs on. The function itself is tested with injected system calls; the
keys' bounds where the config is read.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import textwrap
from pathlib import Path

import pytest

from procwork import ConfigError
from procwork.monitor import parse_config
from procwork.monitor._cpupriority import (
    DEFAULT_NICE,
    REALTIME_PRIORITY,
    apply_cpu_priority,
)
from procwork.monitor._reload import diff_config
from tests.support import PY, ROOT
from tests.support.monitor import (
    HEADER,
    MonitorProcess,
    python_service,
    start_monitor,
    statuses,
    wait_for,
)
from tests.support.tools import need_tool

RESET = os.SCHED_RESET_ON_FORK
SLEEP = "import time; time.sleep(60)"
# A command check that writes down the policy and nice it runs at.
SAYS = (
    "import os, sys; open(sys.argv[1], 'w').write("
    "f'{os.sched_getscheduler(0)} {os.getpriority(os.PRIO_PROCESS, 0)}')"
)


def raised_config(tmp_path: Path, ours: str) -> Path:
    """A monitor at SCHED_RR and nice -10; a service at its default nice,
    one at nice 3, a check writing its own policy and nice to a file, and a
    disk check (in a thread)."""
    config = tmp_path / "monitor.toml"
    said = tmp_path / "check-says"
    config.write_text(
        HEADER.replace("[monitor]\n", "[monitor]\nnice = -10\nrealtime = true\n")
        + python_service("plain", SLEEP, ours)
        + python_service("niced", SLEEP, ours, "nice = 3\n")
        + textwrap.dedent(
            f"""
            [[check]]
            name = "says"
            command = ["{{python}}", "-c", "{SAYS}", "{said}", "{ours}"]
            every = 60

            [[check]]
            name = "disk"
            disk = "/"
            max_used_percent = 100
            every = 60
            """
        )
    )
    return config


def service_pids(sock: Path) -> dict[str, int] | None:
    """Each service's pid, once every one has one."""
    found = {name: s.get("pid") for name, s in statuses(sock).items()}
    if len(found) < 2 or not all(found.values()):
        return None
    return {name: int(pid) for name, pid in found.items() if pid}


def scheduling(pid: int) -> tuple[int, int, int]:
    """(policy with its reset-on-fork flag, real-time priority, nice) of
    ``pid``'s main thread; the policy and nice also as /proc says them."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    policy = os.sched_getscheduler(pid)
    nice = os.getpriority(os.PRIO_PROCESS, pid)
    # /proc/PID/stat: field 19 is the nice value, field 41 the policy
    # (without the flag); fields[0] here is field 3.
    assert (int(fields[16]), int(fields[38])) == (nice, policy & ~RESET)
    return policy, os.sched_getparam(pid).sched_priority, nice


@pytest.mark.e2e
@pytest.mark.slow
def test_a_raised_monitors_services_and_checks_start_at_the_normal_policy_and_nice_0(
    tmp_path: Path, monitors: list[MonitorProcess], ours: str
) -> None:
    """The monitor at SCHED_RR 1 and nice -10; its services, its command
    check and its thread pool at SCHED_OTHER and nice 0 (a service's nice =
    3: 3)."""
    if os.geteuid() != 0:
        pytest.skip("raising a priority needs root or CAP_SYS_NICE (CI runs as root)")
    sock = tmp_path / "ctl.sock"
    config = raised_config(tmp_path, ours)
    monitor = start_monitor(monitors, tmp_path, config, "--socket", str(sock))
    monitor.expect(
        r"the monitor runs at real-time priority 1 \(SCHED_RR\), nice -10; "
        "what it starts does not inherit it"
    )
    assert scheduling(monitor.proc.pid) == (
        os.SCHED_RR | RESET,
        REALTIME_PRIORITY,
        -10,
    )
    pids = wait_for("both services to run", lambda: service_pids(sock))
    assert scheduling(pids["plain"]) == (os.SCHED_OTHER, 0, 0)
    # A service's own nice is added to 0, not to the monitor's -10.
    assert scheduling(pids["niced"]) == (os.SCHED_OTHER, 0, 3)
    said = tmp_path / "check-says"
    text = wait_for("the check to run", lambda: said.exists() and said.read_text())
    assert text == f"{os.SCHED_OTHER} 0"
    # The disk check runs in a thread of Twisted's pool, started after the
    # priority was raised: it is not raised either.
    threads = wait_for("a thread beside the reactor's", lambda: others(monitor))
    assert {scheduling(tid) for tid in threads} == {(os.SCHED_OTHER, 0, 0)}


@pytest.mark.e2e
@pytest.mark.slow
def test_a_monitor_left_at_its_defaults_runs_at_nice_minus_10_and_its_services_at_0(
    tmp_path: Path, monitors: list[MonitorProcess], ours: str
) -> None:
    """No ``nice`` in the config: as root, the monitor takes nice -10 (a
    watchdog sees through the overload it is there for), and its services
    still start at nice 0 and the normal policy."""
    if os.geteuid() != 0:
        pytest.skip("raising a priority needs root or CAP_SYS_NICE (CI runs as root)")
    sock = tmp_path / "ctl.sock"
    config = tmp_path / "monitor.toml"
    config.write_text(
        HEADER
        + python_service("plain", SLEEP, ours)
        + python_service("niced", SLEEP, ours, "nice = 3\n")
    )
    monitor = start_monitor(monitors, tmp_path, config, "--socket", str(sock))
    monitor.expect(r"the monitor runs at nice -10; what it starts does not inherit")
    assert scheduling(monitor.proc.pid) == (os.SCHED_OTHER | RESET, 0, DEFAULT_NICE)
    pids = wait_for("both services to run", lambda: service_pids(sock))
    assert scheduling(pids["plain"]) == (os.SCHED_OTHER, 0, 0)
    assert scheduling(pids["niced"]) == (os.SCHED_OTHER, 0, 3)


def others(monitor: MonitorProcess) -> list[int]:
    """The monitor's threads but its main one (the reactor's)."""
    pid = monitor.proc.pid
    return [int(tid) for tid in os.listdir(f"/proc/{pid}/task") if int(tid) != pid]


@pytest.mark.e2e
@pytest.mark.slow
def test_a_monitor_refused_a_raised_priority_says_so_in_one_line_and_runs_on(
    tmp_path: Path, monitors: list[MonitorProcess], ours: str
) -> None:
    wrapper: list[str] = []
    if os.geteuid() == 0:
        # Root without CAP_SYS_NICE (nor RLIMIT_NICE / RLIMIT_RTPRIO, 0 by
        # default): as a monitor run as a user of its own.
        setpriv = need_tool("setpriv", package="util-linux")
        wrapper = [setpriv, "--inh-caps=-sys_nice", "--bounding-set=-sys_nice", "--"]
    elif resource.getrlimit(resource.RLIMIT_NICE)[0] > 20:
        pytest.skip("RLIMIT_NICE lets this user raise its priority")
    sock = tmp_path / "ctl.sock"
    config = raised_config(tmp_path, ours)
    monitor = MonitorProcess(
        str(config), "--socket", str(sock), stderr=tmp_path / "stderr", wrapper=wrapper
    )
    monitors.append(monitor)
    monitor.expect(r"control socket on ")
    refused = [line for line in monitor.lines if "CPU priority" in line]
    assert len(refused) == 1, monitor.lines
    assert (
        "the monitor's CPU priority is not raised: realtime = true (SCHED_RR): "
        "Operation not permitted (needs root or CAP_SYS_NICE); nice = -10: "
        "Permission denied (needs root or CAP_SYS_NICE); it runs at the "
        "priority it was started with"
    ) in refused[0]
    # What it could do without a right, it did: nothing it starts would
    # inherit a priority it was started with.
    assert scheduling(monitor.proc.pid) == (os.SCHED_OTHER | RESET, 0, 0)
    said = tmp_path / "check-says"
    text = wait_for("the check to run", lambda: said.exists() and said.read_text())
    assert text == f"{os.SCHED_OTHER} 0"


class FakeSystem:
    """``os.sched_setscheduler`` and ``os.setpriority``, recorded; refusing
    real-time policies and negative nice values when ``permitted`` is False."""

    def __init__(self, permitted: bool) -> None:
        self.permitted = permitted
        self.calls: list[tuple[str, int, int]] = []

    def set_scheduler(self, pid: int, policy: int, param: os.sched_param) -> None:
        if not self.permitted and policy & ~RESET != os.SCHED_OTHER:
            raise PermissionError(1, "Operation not permitted")
        self.calls.append(("policy", policy, param.sched_priority))

    def set_nice(self, which: int, who: int, nice: int) -> None:
        if not self.permitted and nice < 0:
            raise PermissionError(13, "Permission denied")
        self.calls.append(("nice", who, nice))

    def apply(self, nice: int | None, realtime: bool) -> str | None:
        return apply_cpu_priority(
            nice, realtime, set_scheduler=self.set_scheduler, set_nice=self.set_nice
        )


def test_nice_0_without_realtime_changes_nothing() -> None:
    system = FakeSystem(permitted=True)
    assert system.apply(0, False) is None
    assert system.calls == []


def test_nice_alone_keeps_the_normal_policy_and_flags_it_reset_on_fork() -> None:
    system = FakeSystem(permitted=True)
    assert system.apply(-5, False) is None
    assert system.calls == [
        ("policy", os.SCHED_OTHER | RESET, 0),
        ("nice", 0, -5),
    ]


def test_by_default_the_monitor_takes_nice_minus_10_where_it_may() -> None:
    """``nice`` left out: the monitor raises itself to DEFAULT_NICE (-10),
    reset on fork like an asked-for nice."""
    system = FakeSystem(permitted=True)
    assert DEFAULT_NICE == -10
    assert system.apply(None, False) is None
    assert system.calls == [
        ("policy", os.SCHED_OTHER | RESET, 0),
        ("nice", 0, DEFAULT_NICE),
    ]


def test_by_default_a_monitor_that_may_not_raise_itself_runs_on_quietly() -> None:
    """Not root: no warning for a default the user never asked for (an
    asked-for nice is said, see below); the flag is set all the same."""
    system = FakeSystem(permitted=False)
    assert system.apply(None, False) is None
    assert system.calls == [("policy", os.SCHED_OTHER | RESET, 0)]


def test_an_asked_for_nice_that_is_refused_is_said() -> None:
    system = FakeSystem(permitted=False)
    assert system.apply(-10, False) == (
        "nice = -10: Permission denied (needs root or CAP_SYS_NICE)"
    )


def test_a_refused_real_time_policy_is_said_alone_when_nice_is_the_default() -> None:
    system = FakeSystem(permitted=False)
    assert system.apply(None, True) == (
        "realtime = true (SCHED_RR): Operation not permitted "
        "(needs root or CAP_SYS_NICE)"
    )


def test_a_refused_real_time_policy_still_flags_the_monitor_reset_on_fork() -> None:
    """A monitor started at a raised priority (chrt, Nice=) and refused
    more never hands what it was started with on either."""
    system = FakeSystem(permitted=False)
    said = system.apply(0, True)
    assert said == (
        "realtime = true (SCHED_RR): Operation not permitted "
        "(needs root or CAP_SYS_NICE)"
    )
    assert system.calls == [("policy", os.SCHED_OTHER | RESET, 0)]


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("nice = 5", "nice must be a whole number from -20 to 0, not 5"),
        ("nice = -21", "nice must be a whole number from -20 to 0, not -21"),
        ('realtime = "yes"', "realtime must be true or false"),
    ],
)
def test_nice_above_0_below_minus_20_or_a_realtime_not_boolean_is_refused_at_load(
    key: str, words: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"t.toml: [monitor]: {words}")):
        parse_config(f"[monitor]\n{key}\n", "t.toml", check_system=False)


@pytest.mark.slow
def test_check_config_refuses_a_positive_nice_naming_the_file_and_the_key(
    tmp_path: Path,
) -> None:
    config = tmp_path / "monitor.toml"
    config.write_text("[monitor]\nnice = 5\n")
    done = subprocess.run(
        [PY, "-m", "procwork", "monitor", str(config), "--check-config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert f"{config}: [monitor]" in done.stderr
    assert "nice must be a whole number from -20 to 0, not 5" in done.stderr


def test_a_reload_that_changes_nice_or_realtime_says_they_take_a_restart() -> None:
    old = parse_config("[monitor]\n", "t.toml", check_system=False)
    new = parse_config("[monitor]\nnice = -5\nrealtime = true\n", "t.toml")
    assert diff_config(old, new).not_applied == ("nice", "realtime")
