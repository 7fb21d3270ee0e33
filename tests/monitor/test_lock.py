"""One monitor per config: its lock, and its services dying with it.

A monitor holds a lock per configuration, which its lifeline keeps until the
old services are dead, so a restarted monitor never runs a second copy of a
service; a second monitor of the same config exits naming the lock and its
holder; SIGHUP does not kill it. Real ``procwork monitor`` processes, every
wait bounded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from tests.support import PY, ROOT, child_env, group_members
from tests.support.lifeline import GONE_WITHIN, STUBBORN_TREE, TREE, poll, running_with


def monitor_config(
    tmp_path: Path, marker: str, services: int = 3, script: str = TREE
) -> Path:
    config = tmp_path / "monitor.toml"
    text = "[monitor]\nhttp = false\nsummary_every = 0\n"
    for n in range(services):
        text += textwrap.dedent(
            f"""
            [[service]]
            name = "s{n}"
            command = ["sh", "-c", "{script}", "{marker}"]
            """
        )
    config.write_text(text)
    return config


def start_monitor(config: Path, lock: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [PY, "-m", "procwork", "monitor", str(config), "--lock-file", str(lock)],
            cwd=ROOT,
            env=child_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def service_groups(marker: str) -> set[int]:
    groups = set()
    for pid in running_with(marker):
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            continue
    return groups


def has_open(pid: int, path: Path) -> bool:
    """True if process ``pid`` has ``path`` open."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                return True
    return False


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


@pytest.mark.e2e
@pytest.mark.slow
def test_a_sigkilled_monitor_takes_its_services_along_and_a_restart_never_duplicates(
    tmp_path: Path, marker: str
) -> None:
    """SIGKILL of ``procwork monitor`` with three services (each a shell with
    two sleeps, all ignoring SIGTERM): every service process is gone within
    2 s. A second monitor of the same config, already waiting for the lock
    when the first is killed, gets it only once the old lifeline has killed
    the old services: at no moment do more than three run, then three do."""
    config = monitor_config(tmp_path, marker, script=STUBBORN_TREE)
    lock = tmp_path / "monitor.lock"
    old = start_monitor(config, lock, tmp_path / "old.log")
    new: subprocess.Popen[bytes] | None = None
    try:
        assert poll(lambda: len(service_groups(marker)) == 3, 30), (
            tmp_path / "old.log"
        ).read_text()
        groups = sorted(service_groups(marker))
        assert poll(lambda: all(len(group_members(g)) == 3 for g in groups), 10)
        new = start_monitor(config, lock, tmp_path / "new.log")
        assert poll(lambda: has_open(new.pid, lock), 30), "no wait for the lock"
        counts: list[int] = []

        def services_running() -> int:
            counts.append(len(service_groups(marker)))
            return counts[-1]

        old.kill()
        assert poll(
            lambda: (
                services_running() >= 0 and not any(group_members(g) for g in groups)
            ),
            GONE_WITHIN,
        ), "the old services outlived their monitor by 2 s"
        assert poll(lambda: services_running() == 3, 30)
        assert not poll(lambda: services_running() != 3, 1.0)  # and it stays 3
        assert max(counts) == 3
        assert new.poll() is None
        new.send_signal(signal.SIGTERM)
        assert new.wait(timeout=30) == 0
        assert poll(lambda: not running_with(marker), 5)
    finally:
        stop(old)
        if new is not None:
            stop(new)


@pytest.mark.e2e
@pytest.mark.slow
def test_a_second_monitor_of_the_same_config_exits_naming_the_lock_and_its_holder(
    tmp_path: Path, marker: str
) -> None:
    """While a monitor runs a config, another one for it waits a few seconds
    for the lock, then exits 1 with an error naming the lock file and the
    running monitor's pid; the running one is unaffected."""
    config = monitor_config(tmp_path, marker, services=1)
    lock = tmp_path / "monitor.lock"
    first = start_monitor(config, lock, tmp_path / "first.log")
    try:
        assert poll(lambda: len(service_groups(marker)) == 1, 30)
        second = subprocess.run(
            [PY, "-m", "procwork", "monitor", str(config), "--lock-file", str(lock)],
            cwd=ROOT,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert second.stderr == (
            "procwork monitor: another procwork monitor runs this configuration: "
            f"pid {first.pid} holds the lock {lock} (waited 5 s); stop it first, "
            "or give this one another --lock-file\n"
        )
        assert first.poll() is None and len(service_groups(marker)) == 1
    finally:
        stop(first)


@pytest.mark.e2e
@pytest.mark.slow
def test_the_monitor_survives_sighup_logs_it_and_keeps_its_services(
    tmp_path: Path, marker: str
) -> None:
    """SIGHUP (closed terminal, logrotate) does not stop ``procwork monitor``:
    it reloads its (unchanged) configuration and runs on with the same
    services, same pids; SIGTERM still stops it."""
    config = monitor_config(tmp_path, marker, services=1)
    log = tmp_path / "monitor.log"
    monitor = start_monitor(config, tmp_path / "monitor.lock", log)
    try:
        assert poll(lambda: len(service_groups(marker)) == 1, 30)
        groups = service_groups(marker)
        for _ in range(3):
            monitor.send_signal(signal.SIGHUP)
        assert poll(lambda: log.read_text().count("SIGHUP: reloading") >= 1, 10)
        time.sleep(0.3)
        assert monitor.poll() is None
        assert service_groups(marker) == groups
        monitor.send_signal(signal.SIGTERM)
        assert monitor.wait(timeout=30) == 0
    finally:
        stop(monitor)


@pytest.mark.e2e
@pytest.mark.slow
def test_a_monitor_that_cannot_create_its_lock_says_which_and_why(
    tmp_path: Path,
) -> None:
    """A lock file that can't be created (its directory is a file) stops the
    monitor before it starts anything: exit 1, naming the file and the
    reason, and the option that picks another."""
    (tmp_path / "not-a-dir").write_text("")
    lock = tmp_path / "not-a-dir" / "monitor.lock"
    done = subprocess.run(
        [PY, "-m", "procwork", "monitor", "--lock-file", str(lock)],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr == (
        f"procwork monitor: cannot take the single-instance lock {lock}: "
        "File exists; choose another with --lock-file PATH\n"
    )
    assert done.stdout == ""
