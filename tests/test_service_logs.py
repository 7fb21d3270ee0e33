"""A service's log files and console rate limit, on the real reactor.

The output path runs at every line a service prints and at every restart,
so it is repeated here many times: the files are opened once per service
(not once per run), every line reaches them, and nothing is left open.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from procwork.supervisor import ServiceSpec, Supervisor
from tests.support import PY, drive_until, open_fds, wait


def test_a_service_restarted_100_times_writes_every_line_to_one_open_log(
    tmp_path: Path,
) -> None:
    log = tmp_path / "logs" / "blink.log"
    counter = tmp_path / "runs"
    spec = ServiceSpec(
        "blink",
        [PY, "-c", f"f = open({str(counter)!r}, 'a'); f.write('x'); print('run')"],
        stdout_log=str(log),
        stderr_log=str(log),  # one file for both streams
        start_seconds=0,
        min_restart_delay=0,
        max_restart_delay=0,
        max_restarts=None,
    )
    supervisor = Supervisor()
    supervisor.add(spec)
    supervisor.start()
    try:

        def done() -> bool:
            opened.append(len(open_on(log)))
            return counter.exists() and len(counter.read_text()) >= 200

        opened: list[int] = []
        assert drive_until(done, 120)
    finally:
        wait(supervisor.stop(), 30)
    runs = len(counter.read_text())
    lines = log.read_text().splitlines()
    # Every run's line; the run stopped while starting may not have printed.
    assert runs - 1 <= len(lines) <= runs
    assert set(lines) == {"run"}
    assert max(opened) == 1  # one descriptor for both streams and all runs
    wait(supervisor.remove("blink"), 30)
    assert open_on(log) == []  # closed with the service


def open_on(path: Path) -> list[str]:
    """This process's descriptors open on ``path``."""
    found = []
    for fd in open_fds():
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                found.append(fd)
        except OSError:
            pass  # closed meanwhile (the listing's own descriptor)
    return found


def test_a_log_file_that_cannot_be_opened_is_reported_and_the_service_runs(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where the log's directory should be
    spec = ServiceSpec(
        "talk",
        [PY, "-c", "import time; print('hi', flush=True); time.sleep(30)"],
        stdout_log=str(blocker / "talk.log"),
        start_seconds=0,
    )
    logged: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(logged.append)
    supervisor = Supervisor()
    supervisor.add(spec)
    supervisor.start()
    try:
        wait(supervisor.wait_for("talk", "RUNNING"), 30)
        assert drive_until(lambda: any(e.get("line") == "hi" for e in logged), 30)
    finally:
        globalLogPublisher.removeObserver(logged.append)
        wait(supervisor.stop(), 30)
    [error] = [e for e in logged if e.get("log_level") == LogLevel.error]
    assert formatEvent(error) == (
        f"service 'talk': cannot open its stdout log {blocker / 'talk.log'}: "
        "File exists; its stdout is not written there"
    )
