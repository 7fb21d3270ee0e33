"""The process table: what is running on the machine, read from /proc."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from procwork.monitor._proctable import LinuxProcessTable, ProcInfo
from tests.support import running_sleeper, unique_token

BOOT_TIME = 1_700_000_000
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class FakeProc:
    """Writes a fake /proc tree: a ``stat`` with btime and one dir per process."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "stat").write_text(f"cpu  1 2 3\nbtime {BOOT_TIME}\nprocesses 9\n")
        (root / "self").mkdir()  # not a pid: must be ignored
        (root / "sys").mkdir()

    def add(
        self,
        pid: int,
        comm: str = "sleep",
        *,
        cmdline: bytes = b"sleep\x0060\x00",
        state: str = "S",
        ppid: int = 1,
        pgid: int = 0,
        uid: int = 0,
        utime: int = 0,
        stime: int = 0,
        start_ticks: int = 0,
        rss_pages: int = 0,
        flags: int = 0x400000,  # PF_FORKNOEXEC, as most processes have
        session: int = 0,
    ) -> Path:
        directory = self.root / str(pid)
        directory.mkdir()
        # Fields after comm, as in proc(5): state ppid pgrp session tty_nr
        # tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime
        # priority nice num_threads itrealvalue starttime vsize rss ...
        after = (
            f"{state} {ppid} {pgid or pid} {session or pid} 0 -1 {flags}"
            f" 0 0 0 0 {utime} {stime}"
            f" 0 0 20 0 1 0 {start_ticks} 1000000 {rss_pages} 18446744073709551615"
        )
        (directory / "stat").write_text(f"{pid} ({comm}) {after}\n")
        # Uid: real effective saved filesystem; the effective one counts.
        uids = f"{uid + 1}\t{uid}\t{uid}\t{uid}"
        (directory / "status").write_text(f"Name:\t{comm[:15]}\nUid:\t{uids}\n")
        (directory / "cmdline").write_bytes(cmdline)
        return directory


@pytest.fixture
def fake(tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path)


def test_a_snapshot_lists_every_process_directory_and_ignores_other_entries(
    fake: FakeProc,
) -> None:
    """Only numeric entries of /proc are processes; self, sys and files are not."""
    fake.add(10)
    fake.add(11)
    pids = sorted(p.pid for p in LinuxProcessTable(fake.root).snapshot())
    assert pids == [10, 11]


def test_a_process_is_described_by_its_ids_name_arguments_state_times_and_memory(
    fake: FakeProc,
) -> None:
    """Start time is boot time plus start ticks; CPU is user plus system time;
    session and the kernel's flags are read too."""
    fake.add(
        42,
        "perl",
        cmdline=b"/usr/bin/perl\x00/srv/cgi/slow.cgi\x00",
        state="R",
        ppid=7,
        pgid=40,
        session=30,
        uid=0,
        utime=3 * TICKS,
        stime=TICKS // 2,
        start_ticks=250 * TICKS,
        rss_pages=256,
    )
    process = LinuxProcessTable(fake.root).get(42)
    assert process == ProcInfo(
        pid=42,
        ppid=7,
        pgid=40,
        uid=0,
        user=pwd.getpwuid(0).pw_name,
        name="perl",
        cmdline=("/usr/bin/perl", "/srv/cgi/slow.cgi"),
        state="R",
        start_time=BOOT_TIME + 250.0,
        cpu_seconds=3.5,
        rss_bytes=256 * PAGE,
        session=30,
        flags=0x400000,
    )
    assert process.identity == (42, BOOT_TIME + 250.0)
    assert process.command_line() == "/usr/bin/perl /srv/cgi/slow.cgi"


def test_a_name_with_spaces_and_parentheses_is_read_up_to_the_last_parenthesis(
    fake: FakeProc,
) -> None:
    """comm may hold anything, even ``) R 99 (``: fields start after the last ')'."""
    fake.add(5, "evil) R 99 (name", ppid=3, start_ticks=TICKS)
    process = LinuxProcessTable(fake.root).get(5)
    assert process is not None
    assert process.name == "evil) R 99 (name"
    assert (process.state, process.ppid) == ("S", 3)
    assert process.start_time == BOOT_TIME + 1.0


def test_the_user_is_the_effective_uid_and_its_name_or_the_number_if_it_has_none(
    fake: FakeProc,
) -> None:
    """Like ``ps``: the effective uid counts, and an unknown uid keeps its number."""
    unknown = 4_000_000_000
    with pytest.raises(KeyError):
        pwd.getpwuid(unknown)
    fake.add(20, uid=0)
    fake.add(21, uid=unknown)
    table = LinuxProcessTable(fake.root)
    root, stranger = table.get(20), table.get(21)
    assert root is not None and stranger is not None
    assert (root.uid, root.user) == (0, pwd.getpwuid(0).pw_name)
    assert (stranger.uid, stranger.user) == (unknown, str(unknown))


def test_kernel_threads_have_no_arguments_and_are_recognised_by_PF_KTHREAD(
    fake: FakeProc,
) -> None:
    """kthreadd and its children carry the kernel's PF_KTHREAD flag (0x00200000)."""
    kthread = 0x00208040  # PF_KTHREAD | PF_NOFREEZE | PF_FORKNOEXEC
    fake.add(2, "kthreadd", cmdline=b"", ppid=0, flags=kthread)
    fake.add(30, "kworker/0:1", cmdline=b"", ppid=2, flags=kthread)
    fake.add(31, "bash", ppid=1)
    table = LinuxProcessTable(fake.root)
    by_pid = {p.pid: p for p in table.snapshot()}
    assert by_pid[30].cmdline == ()
    assert by_pid[30].command_line() == "[kworker/0:1]"
    assert by_pid[30].flags == kthread
    assert [by_pid[pid].is_kernel_thread for pid in (2, 30, 31)] == [True, True, False]


def test_in_a_pid_namespace_pid_2_and_its_children_are_ordinary_processes(
    fake: FakeProc,
) -> None:
    """Inside a container pid 2 may be the web server; its CGIs are not exempt."""
    fake.add(1, "tini", ppid=0)
    fake.add(2, "httpd", ppid=1)
    fake.add(40, "perl", ppid=2, pgid=2, session=1)
    table = LinuxProcessTable(fake.root)
    by_pid = {p.pid: p for p in table.snapshot()}
    assert [by_pid[pid].is_kernel_thread for pid in (2, 40)] == [False, False]
    assert (by_pid[40].ppid, by_pid[40].pgid, by_pid[40].session) == (2, 2, 1)


def test_a_zombie_is_dead(fake: FakeProc) -> None:
    """A process that exited but was not reaped has state Z and no arguments."""
    fake.add(50, "defunct", cmdline=b"", state="Z")
    process = LinuxProcessTable(fake.root).get(50)
    assert process is not None and process.is_dead


def test_a_rewritten_title_without_a_final_nul_is_kept_whole(fake: FakeProc) -> None:
    """setproctitle may leave one string without the terminating NUL."""
    fake.add(60, "nginx", cmdline=b"nginx: worker process")
    process = LinuxProcessTable(fake.root).get(60)
    assert process is not None
    assert process.cmdline == ("nginx: worker process",)


def test_a_process_that_vanishes_mid_read_is_left_out_silently(
    fake: FakeProc,
) -> None:
    """Its directory is there but its files are already gone: skipped, no error."""
    fake.add(70)
    (fake.add(71) / "status").unlink()
    table = LinuxProcessTable(fake.root)
    assert [p.pid for p in table.snapshot()] == [70]
    assert table.get(71) is None


def test_a_garbled_entry_is_left_out_and_does_not_stop_the_scan(
    fake: FakeProc,
) -> None:
    """One unreadable process must not blind the watchdog to all the others."""
    fake.add(80)
    (fake.add(81) / "stat").write_text("81 (truncated")
    assert [p.pid for p in LinuxProcessTable(fake.root).snapshot()] == [80]


def test_get_returns_None_for_a_pid_that_does_not_exist(fake: FakeProc) -> None:
    """Asking for a missing process is an answer, not an error."""
    assert LinuxProcessTable(fake.root).get(12345) is None


def test_a_proc_root_that_does_not_exist_raises_OSError(tmp_path: Path) -> None:
    """Not Linux, or /proc not mounted: the table says so at the first snapshot."""
    with pytest.raises(OSError):
        LinuxProcessTable(tmp_path / "missing").snapshot()


# Real processes -------------------------------------------------------------


@pytest.fixture
def child() -> Iterator[subprocess.Popen[str]]:
    """A sleeping Python child with a distinctive argument, killed afterwards."""
    with running_sleeper(unique_token()) as process:
        yield process


def test_the_real_table_sees_this_process_as_it_is() -> None:
    """Its ids, user and arguments match what the os module says."""
    me = LinuxProcessTable().get(os.getpid())
    assert me is not None
    assert (me.ppid, me.pgid, me.uid) == (os.getppid(), os.getpgid(0), os.geteuid())
    assert me.state == "R"
    # /proc start times are whole-second btime plus ticks: about a second off.
    assert me.start_time <= time.time() + 1
    assert me.rss_bytes > 0


def test_a_real_child_appears_in_a_snapshot_with_its_arguments(
    child: subprocess.Popen[str],
) -> None:
    """A child started a moment ago is found with its command line."""
    table = LinuxProcessTable()
    found = {p.pid: p for p in table.snapshot()}
    process = found[child.pid]
    assert process.cmdline[0] == sys.executable
    assert isinstance(child.args, list)
    assert process.cmdline[-1] == child.args[-1]
    assert process.ppid == os.getpid()
    assert time.time() - process.start_time < 30


def test_a_real_child_that_exited_and_was_reaped_is_gone_from_the_table(
    child: subprocess.Popen[str],
) -> None:
    """After it dies and is reaped, that process is no longer in the table."""
    table = LinuxProcessTable()
    before = table.get(child.pid)
    assert before is not None
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    after = table.get(child.pid)
    # The pid could in principle be reused already; the process could not.
    assert after is None or after.identity != before.identity
