"""A service's log files and console rate limit, on the real reactor.

The output path runs at every line a service prints and at every restart,
so it is repeated here many times: the files are opened once per service
(not once per run), every line reaches them, and nothing is left open.

A log write that fails is never silent (issue 15, item 6): a full disk is
a real one (a 64 KiB tmpfs mounted for the test, skipped where mounting is
not allowed) or ``/dev/full``; files moved, deleted or truncated under the
writer and directories that vanish are real too. Time is a ``Clock``: the
path is checked at most once a second of it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogPublisher

from procwork.supervisor import (
    LogStats,
    NoSuchService,
    ServiceLogTrouble,
    ServiceSpec,
    Supervisor,
)
from procwork.supervisor._logfile import LogFile, LogTrouble
from tests.support import PY, drive_until, observing, open_fds, wait
from tests.support.fake_supervisor import FakeWorld


@pytest.mark.slow
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
    globalLogPublisher.addObserver(cast(ILogObserver, logged.append))
    supervisor = Supervisor()
    supervisor.add(spec)
    supervisor.start()
    try:
        wait(supervisor.wait_for("talk", "RUNNING"), 30)
        assert drive_until(lambda: any(e.get("line") == "hi" for e in logged), 30)
    finally:
        globalLogPublisher.removeObserver(cast(ILogObserver, logged.append))
        wait(supervisor.stop(), 30)
    [error] = [e for e in logged if e.get("log_level") == LogLevel.error]
    assert formatEvent(error) == (
        f"service 'talk': its stdout log {blocker / 'talk.log'} cannot be opened: "
        "Not a directory; its lines are lost (and counted) until it can be, tried "
        "again at most every 1 s"
    )
    assert error["event"] == "service.log_error"


# -- a log write that fails is never silent ------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB file system (tmpfs), unmounted after the test."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def log_file(
    path: Path | str, clock: Clock, **kwargs: Any
) -> tuple[LogFile, list[LogTrouble]]:
    reports: list[LogTrouble] = []
    kwargs.setdefault("max_bytes", 10 * 1024 * 1024)
    kwargs.setdefault("backups", 0)
    log = LogFile(
        str(path),
        kwargs.pop("max_bytes"),
        kwargs.pop("backups"),
        clock=clock.seconds,
        report=reports.append,
        **kwargs,
    )
    return log, reports


def lines(count: int, start: int = 0) -> list[bytes]:
    return [f"line {i:05d} {'x' * 38}\n".encode() for i in range(start, start + count)]


def test_on_a_full_disk_lost_lines_are_counted_and_said_once_then_again_when_written(
    small_disk: Path,
) -> None:
    """Every line is in the file or counted lost, whatever the disk cut
    (a short write loses the rest of its chunk, counted too); one report
    when the writes start failing, one with the count when they work again."""
    filler = small_disk / "filler"
    filler.write_bytes(b"f" * 16 * 1024)
    clock = Clock()
    log, reports = log_file(small_disk / "web.log", clock)
    for chunk in lines(2000):  # 96 kB for the 48 KiB left
        log.write(chunk)
    written = (small_disk / "web.log").read_bytes().count(b"\n")
    assert written + log.lines_lost == 2000
    assert 0 < written < 2000
    assert log.errors == log.lines_lost  # one line a write here: each failed
    assert reports == [LogTrouble(log.path, "No space left on device")]
    assert log.failing == "No space left on device"
    filler.unlink()  # room again
    for chunk in lines(10, start=2000):
        log.write(chunk)
    assert reports[1:] == [LogTrouble(log.path, None, log.lines_lost)]
    assert (small_disk / "web.log").read_bytes().endswith(lines(1, start=2009)[0])
    assert log.failing is None
    log.close()


def test_dev_full_every_write_fails_counted_and_said_once() -> None:
    clock = Clock()
    log, reports = log_file("/dev/full", clock)
    for _ in range(100):
        log.write(b"a\nb\n")
        clock.advance(0.1)
    assert (log.errors, log.lines_lost) == (100, 200)
    assert reports == [LogTrouble("/dev/full", "No space left on device")]
    log.close()


def test_a_deleted_log_file_is_created_again_within_a_second_of_writing(
    tmp_path: Path,
) -> None:
    clock = Clock()
    path = tmp_path / "web.log"
    log, reports = log_file(path, clock)
    log.write(b"before\n")
    path.unlink()  # written to the deleted file until the next check
    log.write(b"lost to the deleted file\n")
    clock.advance(1)
    log.write(b"after\n")
    assert path.read_bytes() == b"after\n"
    assert reports == []  # nothing failed
    log.close()


def test_a_file_moved_away_by_a_rotation_tool_keeps_its_lines_and_a_new_one_is_opened(
    tmp_path: Path,
) -> None:
    clock = Clock()
    path = tmp_path / "web.log"
    log, _ = log_file(path, clock)
    log.write(b"one\n")
    path.rename(tmp_path / "web.log.1")  # logrotate without copytruncate
    log.write(b"two\n")  # the same second: still the moved file
    clock.advance(1)
    log.write(b"three\n")
    assert (tmp_path / "web.log.1").read_bytes() == b"one\ntwo\n"
    assert path.read_bytes() == b"three\n"
    log.close()


def test_a_file_truncated_under_the_writer_is_written_on_at_its_new_end(
    tmp_path: Path,
) -> None:
    """copytruncate: no hole of the old length before the next line."""
    clock = Clock()
    path = tmp_path / "web.log"
    log, _ = log_file(path, clock, max_bytes=2000)
    log.write(b"x" * 999 + b"\n")
    os.truncate(path, 0)
    log.write(b"next\n")
    assert path.read_bytes() == b"next\n"
    clock.advance(1)
    log.write(b"y" * 1500 + b"\n")  # its size known again: fits, no rotation
    assert path.stat().st_size == 5 + 1501
    assert not (tmp_path / "web.log.1").exists()
    log.close()


def test_a_vanished_directory_costs_counted_lines_until_it_is_back_and_is_not_remade(
    tmp_path: Path,
) -> None:
    clock = Clock()
    directory = tmp_path / "logs"
    path = directory / "web.log"
    log, reports = log_file(path, clock)
    assert directory.is_dir()  # made for the first open
    log.write(b"kept\n")
    shutil.rmtree(directory)
    clock.advance(1)
    for _ in range(5):
        log.write(b"lost\n")
    assert not directory.exists()  # an unmounted volume is not shadowed
    assert reports == [LogTrouble(log.path, "No such file or directory", opening=True)]
    directory.mkdir()  # back
    log.write(b"lost too: tried again only a second later\n")
    clock.advance(1)
    log.write(b"written\n")
    assert path.read_bytes() == b"written\n"
    assert (log.errors, log.lines_lost) == (6, 6)
    assert reports[1:] == [LogTrouble(log.path, None, 6)]
    log.close()


def test_the_path_is_checked_at_most_once_a_second_not_at_every_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    log, _ = log_file(tmp_path / "web.log", clock)
    stats: list[object] = []
    real_stat = os.stat

    def counted_stat(p: Any, *a: Any, **k: Any) -> os.stat_result:
        stats.append(p)
        return real_stat(p, *a, **k)

    monkeypatch.setattr(os, "stat", counted_stat)
    for _ in range(10):
        for _ in range(1000):
            log.write(b"line\n")
        clock.advance(1)
    assert len(stats) == 9  # one a second, after the first
    log.close()


def test_reopen_opens_a_new_file_at_once_after_a_tool_moved_the_old_one(
    tmp_path: Path,
) -> None:
    clock = Clock()
    path = tmp_path / "web.log"
    log, _ = log_file(path, clock)
    log.write(b"old\n")
    path.rename(tmp_path / "web.log.1")
    assert log.reopen()
    log.write(b"new\n")  # the same second: no check needed
    assert path.read_bytes() == b"new\n"
    assert (tmp_path / "web.log.1").read_bytes() == b"old\n"
    log.close()


@pytest.mark.parametrize(
    ("backups", "kept"), [(0, []), (2, ["web.log.1", "web.log.2"])]
)
def test_rotation_keeps_log_backups_files_none_past_log_max_bytes(
    tmp_path: Path, backups: int, kept: list[str]
) -> None:
    log, _ = log_file(tmp_path / "web.log", Clock(), max_bytes=1000, backups=backups)
    for chunk in lines(100):
        log.write(chunk)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["web.log", *kept]
    assert all(p.stat().st_size <= 1000 for p in tmp_path.iterdir())
    newest = b"".join(
        (tmp_path / name).read_bytes() for name in [*reversed(kept), "web.log"]
    )
    assert b"".join(lines(100)).endswith(newest)  # the newest lines, whole
    log.close()


def test_a_service_printing_20001_lines_onto_a_full_disk_loses_none_uncounted(
    small_disk: Path,
) -> None:
    """The issue's case: 7 367 of 20 001 lines were lost with no warning,
    metric or event. Now each is in the file or counted, the burst is one
    error line, and the supervisor's listeners are told once."""
    spec = ServiceSpec(
        "chatty",
        [PY, "-c", "import sys\nfor i in range(20001): print(f'line {i:05d}')"],
        stdout_log=str(small_disk / "chatty.log"),
        restart="never",
        start_seconds=0,
    )
    told: list[ServiceLogTrouble] = []
    logged: list[dict[str, Any]] = []
    supervisor = Supervisor()
    supervisor.listen_log_trouble(told.append)
    supervisor.add(spec)
    with observing(logged.append):
        supervisor.start()
        try:
            wait(supervisor.wait_for("chatty", "EXITED"), 60)
        finally:
            wait(supervisor.stop(), 30)
    stats = supervisor.log_stats()["chatty"]
    written = (small_disk / "chatty.log").read_bytes().count(b"\n")
    assert written + stats.lines_lost == 20001
    assert stats.lines_lost > 0 and stats.errors > 0
    assert [str(t) for t in told] == [
        f"service 'chatty': its stdout log {small_disk / 'chatty.log'} cannot be "
        "written: No space left on device; its lines are lost (and counted) until "
        "it can be"
    ]
    errors = [e for e in logged if e.get("event") == "service.log_error"]
    assert len(errors) == 1
    wait(supervisor.remove("chatty"), 30)


def test_reopen_logs_opens_a_services_files_again_now_and_names_one_it_cannot(
    tmp_path: Path,
) -> None:
    """``procwork ctl reopen`` after a rotation tool moved the files: the
    next line goes to a new file at once (on a Clock, no second passes, so
    the periodic check cannot be what did it)."""

    clock = Clock()
    world = FakeWorld(clock)
    supervisor = Supervisor(clock, process_factory=world)
    logs = tmp_path / "logs"
    out, both = logs / "talk.out", logs / "both.log"
    supervisor.add(ServiceSpec("talk", ["svc", "talk"], stdout_log=str(out)))
    supervisor.add(
        ServiceSpec("both", ["svc", "both"], stdout_log=str(both), stderr_log=str(both))
    )
    supervisor.add(ServiceSpec("quiet", ["svc", "quiet"]))
    supervisor.start()
    talk = world.current("talk")
    talk.say(b"one\n")
    out.rename(logs / "talk.out.1")
    talk.say(b"two\n")  # nothing reopened yet: the moved file
    assert supervisor.reopen_logs("talk") == [str(out)]
    talk.say(b"three\n")
    assert out.read_bytes() == b"three\n"
    assert (logs / "talk.out.1").read_bytes() == b"one\ntwo\n"
    # Files not written yet are opened; a shared one is one file.
    assert supervisor.reopen_logs("both") == [str(both)]
    assert both.exists() and open_on(both) != []
    assert supervisor.reopen_logs("quiet") == []
    with pytest.raises(NoSuchService):
        supervisor.reopen_logs("nosuch")
    # Its directory replaced by a file: the error names the file and why.
    for path in logs.iterdir():
        path.unlink()
    logs.rmdir()
    logs.write_text("")
    with pytest.raises(OSError, match=f"^cannot reopen {out}: Not a directory$"):
        supervisor.reopen_logs("talk")
    talk.say(b"lost\n")
    assert supervisor.log_stats()["talk"] == LogStats(1, 1)
    for name in ("talk", "both", "quiet"):
        supervisor.remove(name)
    clock.advance(10)


def test_a_reload_that_moves_a_services_log_writes_the_new_file_and_closes_the_old(
    tmp_path: Path,
) -> None:

    clock = Clock()
    world = FakeWorld(clock)
    supervisor = Supervisor(clock, process_factory=world)
    old, new = tmp_path / "old.log", tmp_path / "new.log"
    supervisor.add(ServiceSpec("talk", ["svc", "talk"], stdout_log=str(old)))
    supervisor.start()
    world.current("talk").say(b"one\n")
    supervisor.replace(ServiceSpec("talk", ["svc", "talk"], stdout_log=str(new)))
    clock.advance(10)  # the old process stops, the new one starts
    world.current("talk").say(b"two\n")
    assert (old.read_bytes(), new.read_bytes()) == (b"one\n", b"two\n")
    assert open_on(old) == []
    supervisor.remove("talk")
    clock.advance(10)
    assert open_on(new) == []
