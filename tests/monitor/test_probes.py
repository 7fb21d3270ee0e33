"""The monitor's own probes say in words what they found, and what failed.

Each probe is called directly on files the test writes (a fake /proc/meminfo,
a pressure file, a pidfile) or on a fake process table; ``statvfs`` and the
load average are replaced where a real machine's value would make the test
depend on the machine. :class:`OneThread` is driven by a hand-fired thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from procwork.monitor._probes import (
    CONTAINS_WINDOW,
    OneThread,
    Verdict,
    disk,
    file,
    load,
    memory,
    process,
)
from procwork.monitor._proctable import ProcInfo
from tests.support import FakeTable
from tests.support.checks import HandThreads

# -- disk ---------------------------------------------------------------------


class _Statvfs:
    """What statvfs says: 4 KiB blocks; ``used`` and ``free`` in blocks."""

    def __init__(self, used: int, free: int, files: int = 0, ffree: int = 0) -> None:
        self.f_frsize = 4096
        self.f_blocks = used + free
        self.f_bfree = free
        self.f_bavail = free
        self.f_files = files
        self.f_ffree = ffree


def _statvfs(monkeypatch: pytest.MonkeyPatch, result: _Statvfs) -> None:
    monkeypatch.setattr(os, "statvfs", lambda path: result)


def test_a_disk_over_its_max_says_how_full_it_is_and_the_max(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _statvfs(monkeypatch, _Statvfs(used=93, free=7))
    assert disk("/data", 90, None) == Verdict(
        False, "/data is 93 % used (28.0 KiB free), max 90 %"
    )


def test_a_disk_under_its_max_is_ok_and_says_how_full_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _statvfs(monkeypatch, _Statvfs(used=42, free=58, files=100, ffree=97))
    assert disk("/", 90, 90) == Verdict(
        True, "/ is 42 % used (232.0 KiB free), inodes 3 % used"
    )


def test_a_disk_out_of_inodes_fails_though_it_has_space(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _statvfs(monkeypatch, _Statvfs(used=10, free=90, files=1000, ffree=10))
    assert disk("/var", 90, 95) == Verdict(False, "/var inodes are 99 % used, max 95 %")


def test_a_file_system_without_an_inode_table_is_judged_on_its_space_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _statvfs(monkeypatch, _Statvfs(used=10, free=90, files=0, ffree=0))
    assert disk("/btrfs", 90, 90).ok


def test_a_disk_that_cannot_be_read_fails_saying_why(tmp_path: Path) -> None:
    assert disk(str(tmp_path / "gone"), 90, 90) == Verdict(
        False, f"cannot read {tmp_path / 'gone'}: No such file or directory"
    )


def test_a_real_disk_is_read(tmp_path: Path) -> None:
    verdict = disk(str(tmp_path), 100, None)
    assert verdict.ok and " % used (" in verdict.message


# -- load and memory ----------------------------------------------------------


def test_a_load_per_core_over_its_max_fails_saying_the_load_and_the_cores() -> None:
    verdict = load(4, None, loadavg=lambda: (9.0, 1.0, 1.0), cpus=lambda: 2)
    assert verdict == Verdict(False, "load 4.50 per core (9.00 on 2 cores), max 4")


def test_a_load_under_its_max_is_ok() -> None:
    verdict = load(4, None, loadavg=lambda: (1.0, 1.0, 1.0), cpus=lambda: 4)
    assert verdict == Verdict(True, "load 0.25 per core (1.00 on 4 cores)")


def test_cpu_pressure_over_its_max_fails(tmp_path: Path) -> None:
    pressure = tmp_path / "cpu"
    pressure.write_text(
        "some avg10=35.50 avg60=20.00 avg300=5.00 total=123\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
    )
    verdict = load(
        4, 20, loadavg=lambda: (1.0, 1, 1), cpus=lambda: 4, pressure_file=str(pressure)
    )
    assert verdict == Verdict(
        False,
        "CPU pressure 35.5 % (tasks waiting for a CPU, last 10 s), max 20 %",
    )


def test_cpu_pressure_that_cannot_be_read_fails_saying_so(tmp_path: Path) -> None:
    missing = tmp_path / "cpu"
    verdict = load(
        4, 20, loadavg=lambda: (1.0, 1, 1), cpus=lambda: 4, pressure_file=str(missing)
    )
    assert verdict == Verdict(
        False,
        f"cannot read the CPU pressure ({missing}: No such file or directory)",
    )


def _meminfo(tmp_path: Path, total_kb: int, available_kb: int) -> str:
    path = tmp_path / "meminfo"
    path.write_text(
        f"MemTotal:       {total_kb} kB\nMemFree:         1000 kB\n"
        f"MemAvailable:   {available_kb} kB\nBuffers:         100 kB\n"
    )
    return str(path)


def test_memory_below_its_min_available_fails_saying_how_much_is_left(
    tmp_path: Path,
) -> None:
    meminfo = _meminfo(tmp_path, 8 * 1024 * 1024, 400 * 1024)
    assert memory(10, meminfo) == Verdict(
        False, "5 % of memory available (400.0 MiB of 8.0 GiB), min 10 %"
    )


def test_memory_above_its_min_is_ok(tmp_path: Path) -> None:
    assert memory(10, _meminfo(tmp_path, 1024 * 1024, 512 * 1024)).ok


def test_the_real_meminfo_is_read() -> None:
    verdict = memory(0)
    assert verdict.ok and "% of memory available" in verdict.message


# -- file ---------------------------------------------------------------------


def test_a_missing_file_fails_saying_it_does_not_exist(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat"
    assert file(str(path)) == Verdict(False, f"{path} does not exist")


def test_a_stale_file_fails_saying_how_old_it_is(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat"
    path.write_text("beat")
    os.utime(path, (1000, 1000))
    assert file(str(path), max_age=300, now=lambda: 1312) == Verdict(
        False, f"{path} last changed 312 s ago, max_age 300 s"
    )


def test_a_file_out_of_its_size_bounds_fails_saying_its_size(tmp_path: Path) -> None:
    path = tmp_path / "dump"
    path.write_bytes(b"x" * 2048)
    assert file(str(path), max_size=1024) == Verdict(
        False, f"{path} is 2.0 KiB, max_size 1.0 KiB"
    )
    assert file(str(path), min_size=4096) == Verdict(
        False, f"{path} is 2.0 KiB, min_size 4.0 KiB"
    )
    assert file(str(path), min_size=1, max_size=4096).ok


def test_a_file_must_contain_its_pattern(tmp_path: Path) -> None:
    path = tmp_path / "status"
    path.write_text("state: degraded\n")
    assert file(str(path), contains="^state: ok$") == Verdict(
        False, f"{path} does not contain /^state: ok$/"
    )
    path.write_text("state: ok\n")
    assert file(str(path), contains="^state: ok$").ok


def test_contains_reads_only_the_last_64_kib_of_a_big_file(tmp_path: Path) -> None:
    """The cap: a pattern only at the start of a big log is not seen, and
    the message says where it was looked for."""
    path = tmp_path / "big.log"
    path.write_bytes(b"READY\n" + b"." * (3 * CONTAINS_WINDOW) + b"\n")
    assert file(str(path), contains="READY") == Verdict(
        False, f"{path} does not contain /READY/ in its last 64 KiB"
    )
    with path.open("ab") as f:
        f.write(b"READY again\n")
    assert file(str(path), contains="READY").ok


# -- process ------------------------------------------------------------------


def _proc(pid: int, name: str, cmdline: str, user: str = "www") -> ProcInfo:
    return ProcInfo(
        pid=pid,
        ppid=1,
        pgid=pid,
        uid=33,
        user=user,
        name=name,
        cmdline=tuple(cmdline.split()),
        state="S",
        start_time=0.0,
        cpu_seconds=0.0,
        rss_bytes=0,
    )


@pytest.fixture
def table() -> FakeTable:
    return FakeTable(
        _proc(10, "nginx", "nginx: master process"),
        _proc(11, "nginx", "nginx: worker process"),
        _proc(12, "python3", "/usr/bin/python3 /srv/app/gunicorn-main.py", "app"),
        _proc(13, "sleep", "sleep 60", "root"),
    )


def test_no_matching_process_fails_saying_what_was_looked_for(
    table: FakeTable,
) -> None:
    assert process("httpd", user="www", table=table) == Verdict(
        False, "no process matches name 'httpd', user 'www'"
    )


def test_processes_are_counted_against_min_and_max(table: FakeTable) -> None:
    assert process("nginx", table=table) == Verdict(
        True, "2 processes match name 'nginx'"
    )
    assert process("nginx", min_count=3, table=table) == Verdict(
        False, "2 processes match name 'nginx', min_count 3"
    )
    assert process("nginx", max_count=1, table=table) == Verdict(
        False, "2 processes match name 'nginx', max_count 1"
    )


def test_a_process_is_matched_by_command_line_and_a_long_script_name(
    table: FakeTable,
) -> None:
    """comm is cut to 15 characters: argv[0]'s last part is matched too."""
    table.add(_proc(14, "report-nightly-", "/srv/bin/report-nightly-all.sh"))
    assert process("*", cmdline="gunicorn", user="app", table=table).ok
    assert process("report-nightly-all.sh", table=table).ok


def test_zombies_are_not_counted(table: FakeTable) -> None:
    table.add(
        ProcInfo(20, 1, 20, 0, "root", "cron", (), "Z", 0.0, 0.0, 0),
    )
    assert process("cron", table=table) == Verdict(
        False, "no process matches name 'cron'"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "pidfile {pidfile} does not exist"),
        ("abc\n", "pidfile {pidfile} holds no pid ('abc')"),
        ("99\n", "no process 99 (from pidfile {pidfile})"),
        (
            "13\n",
            "process 13 (from pidfile {pidfile}) is 'sleep 60', which does not "
            "match name 'nginx'",
        ),
    ],
)
def test_a_pidfile_check_says_what_is_wrong_with_its_pidfile(
    table: FakeTable, tmp_path: Path, content: str | None, message: str
) -> None:
    pidfile = tmp_path / "nginx.pid"
    if content is not None:
        pidfile.write_text(content)
    verdict = process("nginx", pidfile=str(pidfile), table=table)
    assert verdict == Verdict(False, message.format(pidfile=pidfile))


def test_a_pidfile_naming_a_matching_process_is_ok(
    table: FakeTable, tmp_path: Path
) -> None:
    pidfile = tmp_path / "nginx.pid"
    pidfile.write_text("10\n")
    assert process("nginx", pidfile=str(pidfile), table=table) == Verdict(
        True, f"process 10 (nginx) from pidfile {pidfile} runs"
    )


def test_the_real_process_table_finds_this_test() -> None:
    assert process("*", cmdline="pytest|python").ok


# -- one thread per check -----------------------------------------------------


def test_a_call_still_going_is_not_piled_on_one_thread_per_check_at_most() -> None:
    """The cap: a function that never returns holds one thread, not one per
    run; the runs meanwhile fail saying so."""
    threads, clock = HandThreads(), Clock()
    one = OneThread(threads, clock)
    first = one(lambda: Verdict(True, "late"))
    first.cancel()  # its timeout
    seen: list[object] = []
    first.addErrback(lambda f: None)
    for _ in range(100):
        clock.advance(30)
        one(lambda: Verdict(True, "never called")).addCallback(seen.append)
    assert len(threads.pending) == 1
    assert seen[-1] == Verdict(
        False,
        "its previous call has not returned after 3000 s (not called again "
        "until it does)",
    )
    threads.finish()  # it returns at last: the next call is made
    one(lambda: Verdict(True, "now")).addCallback(seen.append)
    threads.finish()
    assert seen[-1] == Verdict(True, "now")


def test_a_thread_that_cannot_be_started_leaves_the_check_free_to_try_again() -> None:
    def no_thread(function: Callable[[], Any]) -> Deferred[Any]:
        raise RuntimeError("can't start new thread")

    one = OneThread(no_thread, Clock())
    with pytest.raises(RuntimeError, match="can't start new thread"):
        one(lambda: Verdict(True, "never"))
    assert one.busy_since is None
