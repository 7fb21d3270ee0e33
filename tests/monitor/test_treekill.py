"""A rule acts on a tree: the matched process and all its descendants.

The tree is frozen from the top (SIGSTOP) before it is signalled and resumed
after, so nothing forked meanwhile escapes; SIGKILL after the grace reaches
what is left of it, never a reused pid. On fake process tables and signals on
a Clock, then on real CGI trees (``tests/programs/cgi_tree.py``).
"""

from __future__ import annotations

import dataclasses
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import attrs
import pytest
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger

from procwork.monitor import Rule
from procwork.monitor._proctable import PF_KTHREAD, ProcInfo
from procwork.monitor._rules import RuleCounters, RuleEngine
from tests.support import (
    PY,
    ROOT,
    FakeTable,
    alive,
    child_env,
    cpu_load,
    gone_within,
    program,
    sigkill_leftovers,
    start_sleeper,
    stop_sleeper,
)
from tests.support.rules import CGI, NOW, FakeSignals, clock_at, engine_for, proc

# Rules act on trees: the matched process and all its descendants -------------


def tree(*changes: dict[str, Any]) -> FakeTable:
    """A CGI (1000), its child (1001) and grandchild (1002, in its own session)
    and a bystander (1003) that is no descendant of it."""
    return FakeTable(
        proc(1000),
        proc(1001, "sh", ppid=1000, pgid=1000, cmdline=("sh", "-c", "x")),
        proc(1002, "sleep", ppid=1001, pgid=1002, session=1002, cmdline=("sleep",)),
        proc(1003, "sleep", ppid=500, cmdline=("sleep",)),
    )


def test_a_term_rule_signals_the_matched_process_and_all_its_descendants() -> None:
    """Children and grandchildren (even in a session of their own) get SIGTERM
    too, then SIGKILL after grace; a bystander is not touched."""
    table = tree()
    engine, signals, clock = engine_for(CGI, table=table)
    [finding] = engine.check()
    assert finding.action == (
        "sent SIGTERM to it and its 2 descendants (pids 1001, 1002)"
    )
    assert signals.sent == [(p, signal.SIGTERM) for p in (1000, 1001, 1002)]
    clock.advance(5)
    assert signals.sent[3:] == [(p, signal.SIGKILL) for p in (1000, 1001, 1002)]
    assert 1003 in table.processes
    assert all(pid != 1003 for pid, _ in signals.all_sent)
    assert engine.counters["cgi"] == RuleCounters(matches=1, signals_sent=6)


def test_a_tree_is_stopped_from_the_top_before_it_is_signalled_and_resumed_after() -> (
    None
):
    """SIGSTOP parent first (a stopped process can neither fork nor exit, so the
    tree cannot regrow or lose children to init), then SIGTERM to all, then
    SIGCONT leaves first so SIGTERM can be handled."""
    table = tree()
    engine, signals, _ = engine_for(CGI, table=table)
    engine.check()
    assert signals.all_sent == [
        *[(p, signal.SIGSTOP) for p in (1000, 1001, 1002)],
        *[(p, signal.SIGTERM) for p in (1000, 1001, 1002)],
        *[(p, signal.SIGCONT) for p in (1002, 1001, 1000)],
    ]


def test_descendants_forked_during_the_grace_period_are_killed_too() -> None:
    """At SIGKILL time the tree is looked up afresh from the survivors."""
    table = tree()
    engine, signals, clock = engine_for(CGI, table=table)
    engine.check()
    table.add(proc(1004, "sleep", ppid=1001, pgid=1000, cmdline=("late",)))
    clock.advance(5)
    assert (1004, signal.SIGKILL) in signals.sent
    assert 1003 in table.processes


def test_an_orphan_forked_during_grace_is_killed_if_a_tree_member_led_its_group() -> (
    None
):
    """A child whose parent then exited is handed to init and loses its parent
    link; the process group its exited ancestor led still marks it as the tree's."""
    table = tree()
    engine, signals, clock = engine_for(CGI, table=table)
    engine.check()
    del table.processes[1002]  # the session leader obeyed SIGTERM...
    table.add(proc(1005, "sleep", ppid=1, pgid=1002, session=1002))  # ...its child
    clock.advance(5)
    assert (1005, signal.SIGKILL) in signals.sent
    assert 1003 in table.processes


class ForkingTable(FakeTable):
    """Every process in ``forkers`` that is not stopped forks a child, which
    forks too, at every scan: a tree that grows while it is being signalled."""

    def __init__(self, *processes: ProcInfo) -> None:
        super().__init__(*processes)
        self.forkers = {p.pid for p in processes if p.name == "perl"}
        self.stopped: set[int] = set()
        self.next_pid = 2000

    def snapshot(self) -> list[ProcInfo]:
        for pid in sorted(self.forkers - self.stopped):
            self.next_pid += 1
            self.add(proc(self.next_pid, ppid=pid, pgid=1000, cmdline=("fork",)))
            self.forkers.add(self.next_pid)
        return super().snapshot()


def test_a_process_that_keeps_forking_is_frozen_with_all_its_children() -> None:
    """Each scan stops what the previous one found; when a scan finds no one
    new, the whole tree is stopped and every member gets SIGTERM."""
    table = ForkingTable(proc(1000), proc(1003, "sleep", ppid=500))
    signals = FakeSignals(table)

    def send(process: ProcInfo, signum: int) -> bool:
        sent = signals(process, signum)
        if sent and signum == signal.SIGSTOP:
            table.stopped.add(process.pid)
        elif sent and signum == signal.SIGCONT:
            table.stopped.discard(process.pid)
        return sent

    engine = RuleEngine([CGI], table, reactor=clock_at(NOW), send_signal=send)
    engine.check()
    termed = {pid for pid, signum in signals.sent if signum == signal.SIGTERM}
    assert termed == table.forkers  # every process of the tree, however many
    assert len(termed) > 2
    assert 1003 not in termed


def test_a_reused_pid_in_the_tree_is_not_SIGKILLed_when_the_grace_period_ends() -> None:
    """A descendant whose pid now names another process (another start time,
    another parent) is left alone; the rest of the tree is killed."""
    table = tree()
    engine, signals, clock = engine_for(CGI, table=table)
    engine.check()
    table.add(proc(1001, "bash", ppid=500, pgid=1001, start_time=NOW + 1))
    clock.advance(5)
    assert [pid for pid, s in signals.sent if s == signal.SIGKILL] == [1000, 1002]


def test_a_descendant_the_rule_may_not_touch_is_spared_with_its_subtree() -> None:
    """A setuid child (another user) is neither signalled nor descended into."""
    table = tree()
    table.add(dataclasses.replace(table.processes[1001], uid=os.geteuid() + 1))
    engine, signals, _ = engine_for(CGI, table=table)
    engine.check()
    assert signals.sent == [(1000, signal.SIGTERM)]


def test_a_matching_descendant_is_reported_once_as_signalled_with_its_ancestor() -> (
    None
):
    """The tree is handled from its top; a descendant matching the same rule is
    reported, not signalled a second time."""
    table = tree()
    table.add(dataclasses.replace(table.processes[1002], name="perl"))
    engine, signals, _ = engine_for(CGI, table=table)
    findings = engine.check()
    assert [(f.process.pid, f.action) for f in findings] == [
        (1000, "sent SIGTERM to it and its 2 descendants (pids 1001, 1002)"),
        (1002, "SIGTERM already sent with the tree of pid 1000"),
    ]
    assert [pid for pid, _ in signals.sent] == [1000, 1001, 1002]


def test_a_dry_run_lists_the_whole_tree_it_would_signal() -> None:
    table = tree()
    engine, signals, _ = engine_for(attrs.evolve(CGI, dry_run=True), table=table)
    [finding] = engine.check()
    assert finding.action == (
        "would send SIGTERM to it and its 2 descendants (pids 1001, 1002) (dry run)"
    )
    assert signals.all_sent == []


def test_a_kill_rule_sends_SIGKILL_to_the_whole_frozen_tree_at_once() -> None:
    table = tree()
    rule = attrs.evolve(CGI, action="kill")
    engine, signals, clock = engine_for(rule, table=table)
    engine.check()
    assert signals.sent == [(p, signal.SIGKILL) for p in (1000, 1001, 1002)]
    assert clock.getDelayedCalls() == []


def test_pid_2_without_the_kernel_thread_flag_is_an_ordinary_process() -> None:
    """Inside a pid namespace pid 2 may be the web server: its runaway CGIs are
    not exempt, nor is it (when it matches)."""
    table = FakeTable(
        proc(2, "httpd", ppid=1, cmdline=("httpd",)),
        proc(40, ppid=2, pgid=2),
        proc(3, "kworker/0:1", ppid=2, cmdline=(), flags=PF_KTHREAD),
    )
    everything = Rule("all", process_name="*", max_age=0, action="kill")
    engine, signals, _ = engine_for(everything, table=table)
    actions = {f.process.pid: f.action for f in engine.check()}
    assert actions[3].startswith("spared: a kernel thread")
    assert (2, signal.SIGKILL) in signals.sent
    assert (40, signal.SIGKILL) in signals.sent


def test_a_log_rule_logs_each_process_once_not_at_every_scan() -> None:
    """Scans every second for a minute: one line per runaway process; a new
    process with a reused pid is another process and is logged again."""
    events: list[dict[str, Any]] = []
    table = FakeTable(proc(1000), proc(1001))
    rule = Rule("cgi", process_name="perl", max_age=300)
    engine, _, clock = engine_for(
        rule, table=table, log=Logger(observer=cast(ILogObserver, events.append))
    )
    findings = []
    for _ in range(60):
        findings += engine.check()
        clock.advance(1)
    assert [f.process.pid for f in findings] == [1000, 1001]
    assert len(events) == 2
    table.add(proc(1001, start_time=NOW - 400))  # pid reused by another runaway
    [again] = engine.check()
    assert again.process.identity == (1001, NOW - 400)
    assert engine.counters["cgi"].matches == 3


def test_a_process_that_stops_matching_and_matches_again_is_reported_again() -> None:
    """Once per match: a process back under its threshold is forgotten."""
    table = FakeTable(proc(rss_bytes=2**30))
    rule = Rule("big", process_name="perl", max_rss=2**29)
    engine, _, _ = engine_for(rule, table=table)
    assert len(engine.check()) == 1
    assert engine.check() == []
    table.add(proc(rss_bytes=2**20))
    assert engine.check() == []
    table.add(proc(rss_bytes=2**30))
    assert len(engine.check()) == 1


# Trees of real processes ------------------------------------------------------


class CgiTree:
    """A real CGI tree (tests/programs/cgi_tree.py): ``cgi`` (our child),
    ``descendants`` by role."""

    def __init__(self, token: str, mode: str, leftovers: list[int]) -> None:
        self.cgi = subprocess.Popen(
            program("cgi_tree", token, mode),
            cwd=ROOT,
            env=child_env(),
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        leftovers.append(self.cgi.pid)
        self.leftovers = leftovers
        self.descendants: dict[str, int] = {}
        self.output = b""
        while len(self.descendants) < 2:
            self.read_pid()

    def read_pid(self) -> int:
        """The next pid a member of the tree printed (10 s at most)."""
        # Read the pipe unbuffered: several members write to it, and a
        # buffered reader would hide a second line from select().
        assert self.cgi.stdout is not None
        deadline = time.monotonic() + 10
        while b"\n" not in self.output:
            timeout = deadline - time.monotonic()
            if timeout <= 0 or not select.select([self.cgi.stdout], [], [], timeout)[0]:
                pytest.fail("the CGI tree did not report within 10 s")
            self.output += os.read(self.cgi.stdout.fileno(), 4096)
        line, _, self.output = self.output.partition(b"\n")
        role, pid = line.decode().split()
        self.descendants[role] = int(pid)
        self.leftovers.append(int(pid))
        # Each member prints its pid just before it execs sleep: until then
        # it still has the CGI's command line, and a scan would take it for
        # a second CGI. Wait (bounded) for the exec.
        deadline = time.monotonic() + 10
        while not self._exec_done(int(pid)):
            if time.monotonic() > deadline:
                pytest.fail(f"{role} {pid} did not exec sleep within 10 s")
            time.sleep(0.005)
        return int(pid)

    @staticmethod
    def _exec_done(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/comm").read_text().strip() == "sleep"
        except OSError:
            return True  # gone already: nothing for a scan to mistake

    def close(self) -> None:
        self.cgi.kill()
        self.cgi.wait(timeout=10)
        assert self.cgi.stdout is not None
        self.cgi.stdout.close()

    def all_gone_within(self, seconds: float) -> bool:
        try:
            self.cgi.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return False
        return all(gone_within(pid, seconds) for pid in self.descendants.values())


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    with sigkill_leftovers() as pids:
        yield pids


def cgi_rule(token: str, **changes: Any) -> Rule:
    # Matches the CGI's own arguments only: its descendants are found as such.
    rule = Rule("cgi", cmdline=rf"{token} \S+$", max_age=0, action="term")
    return attrs.evolve(rule, **changes)


def test_a_real_cgi_its_child_and_its_grandchild_in_another_session_all_get_SIGTERM(
    token: str, leftovers: list[int], real_clock: Clock
) -> None:
    """The CGI and both descendants are gone within 10 s; the process next to
    them (and the test itself, in the CGI's process group) are untouched."""
    bystander = start_sleeper(f"{token}-bystander")
    tree = CgiTree(token, "obey", leftovers)
    try:
        engine = RuleEngine([cgi_rule(token)], reactor=real_clock)
        [finding] = engine.check()
        pids = ", ".join(str(tree.descendants[r]) for r in ("child", "grandchild"))
        assert finding.process.pid == tree.cgi.pid
        assert (
            finding.action == f"sent SIGTERM to it and its 2 descendants (pids {pids})"
        )
        assert tree.all_gone_within(10)
        assert tree.cgi.returncode == -signal.SIGTERM
        assert bystander.poll() is None
        engine.stop()
    finally:
        tree.close()
        stop_sleeper(bystander)


def test_a_real_cgi_that_ignores_SIGTERM_gets_SIGKILL_after_grace(
    token: str, leftovers: list[int], real_clock: Clock
) -> None:
    tree = CgiTree(token, "ignore", leftovers)
    try:
        engine = RuleEngine([cgi_rule(token, grace=5)], reactor=real_clock)
        engine.check()
        assert all(gone_within(pid) for pid in tree.descendants.values())
        assert tree.cgi.poll() is None  # it ignored SIGTERM
        real_clock.advance(5)
        assert tree.cgi.wait(timeout=10) == -signal.SIGKILL
    finally:
        tree.close()


def test_a_real_child_forked_during_the_grace_period_is_killed_with_the_cgi(
    token: str, leftovers: list[int], real_clock: Clock
) -> None:
    """The CGI answers SIGTERM by forking; at SIGKILL time the new child is found."""
    tree = CgiTree(token, "fork-on-term", leftovers)
    try:
        engine = RuleEngine([cgi_rule(token, grace=5)], reactor=real_clock)
        engine.check()
        late = tree.read_pid()
        assert alive(late)
        real_clock.advance(5)
        assert tree.cgi.wait(timeout=10) == -signal.SIGKILL
        assert gone_within(late)
        assert engine.counters["cgi"].signals_sent == 3 + 2
    finally:
        tree.close()


@pytest.mark.slow
def test_real_cgi_trees_are_killed_whole_50_times_in_a_row_under_cpu_load(
    token: str, leftovers: list[int], real_clock: Clock
) -> None:
    """Stress: each tree is gone within 10 s, no stranger is touched, no process
    is left stopped, and every process is reported once."""
    bystander = start_sleeper(f"{token}-bystander")
    engine = RuleEngine([cgi_rule(token)], reactor=real_clock)
    try:
        findings = 0
        with cpu_load(2):
            for round in range(50):
                tree = CgiTree(token, "obey", leftovers)
                try:
                    found = engine.check()
                    # A descendant not yet past its exec still has the CGI's
                    # arguments and matches too: it is reported once, as
                    # signalled with the tree it belongs to.
                    assert found[0].process.pid == tree.cgi.pid, round
                    assert all("with the tree of pid" in f.action for f in found[1:])
                    findings += len(found)
                    assert tree.all_gone_within(10), round
                finally:
                    tree.close()
                real_clock.advance(5)  # the escalation finds the tree gone
        assert engine.counters["cgi"] == RuleCounters(findings, signals_sent=150)
        assert bystander.poll() is None
        with open(f"/proc/{bystander.pid}/stat") as stat:
            assert stat.read().rpartition(")")[2].split()[0] == "S"  # not stopped
        assert real_clock.getDelayedCalls() == []
    finally:
        engine.stop()
        stop_sleeper(bystander)


@pytest.mark.slow
@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="a new pid namespace needs root and unshare(1)",
)
def test_in_a_pid_namespace_the_CGIs_of_pid_2_are_not_spared_as_kernel_threads() -> (
    None
):
    """Inside a container pid 2 is the web server: a rule kills its runaway CGI
    (the real /proc of a real namespace, judged by PF_KTHREAD, not by pid)."""
    child = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", *program("pid_namespace_cgi")],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout == "sent SIGKILL\n"


# A CGI that forks without end: every 2 ms a child, which forks a grandchild;
# both exec sleep. All carry the marker in their environment.
FORKING_CGI = r"""
import os, sys, time
for _ in range(5000):
    if os.fork() == 0:
        os.fork()
        os.execv("/bin/sleep", ["sleep", "30"])
    time.sleep(0.002)
time.sleep(30)
"""


def marked(marker: bytes) -> list[int]:
    """Live processes whose environment holds ``marker``."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if marker in f.read().split(b"\0") and alive(int(entry)):
                        pids.append(int(entry))
            except OSError:
                pass  # gone, or not ours to read
    return pids


@pytest.mark.slow
def test_a_real_cgi_that_keeps_forking_is_killed_with_every_descendant(
    token: str, real_clock: Clock
) -> None:
    """Stopping from the top freezes the fork loop; re-scans catch the children
    forked meanwhile. Five times, under CPU load; nothing marked survives."""
    marker = f"PROCWORK_TREE={token}".encode()
    env = {**os.environ, "PROCWORK_TREE": token}
    engine = RuleEngine([cgi_rule(token, action="kill")], reactor=real_clock)
    try:
        with cpu_load(2):
            for round in range(5):
                cgi = subprocess.Popen([PY, "-c", FORKING_CGI, token, "forks"], env=env)
                try:
                    deadline = time.monotonic() + 10
                    while len(marked(marker)) < 30:
                        assert time.monotonic() < deadline, "the CGI did not fork"
                        time.sleep(0.01)
                    # Ages are measured on this clock: keep it ahead of the CGI.
                    real_clock.advance(time.time() + 5 - real_clock.seconds())
                    [finding] = engine.check()
                    assert finding.process.pid == cgi.pid
                    assert cgi.wait(timeout=10) == -signal.SIGKILL
                    deadline = time.monotonic() + 10
                    while left := marked(marker):
                        assert time.monotonic() < deadline, (round, left)
                        time.sleep(0.02)
                finally:
                    cgi.kill()
                    cgi.wait(timeout=10)
    finally:
        for pid in marked(marker):
            os.kill(pid, signal.SIGKILL)


def test_nothing_is_left_stopped_when_the_table_fails_while_a_tree_is_frozen() -> None:
    """A stopped process would hang for ever: an error mid-freeze resumes what
    was stopped, and the finding says what failed."""
    table = tree()
    scans = 0
    readable = table.snapshot

    def fails_after_the_first_scan() -> list[ProcInfo]:
        nonlocal scans
        scans += 1
        if scans > 1:
            raise PermissionError(13, "Permission denied", "/proc")
        return readable()

    table.snapshot = fails_after_the_first_scan  # type: ignore[method-assign]
    engine, signals, clock = engine_for(CGI, table=table)
    [finding] = engine.check()
    assert finding.action == "could not send SIGTERM: Permission denied"
    assert signals.all_sent == [(1000, signal.SIGSTOP), (1000, signal.SIGCONT)]
    assert clock.getDelayedCalls() == []


def test_a_session_member_below_a_spared_process_is_spared_too() -> None:
    """A matched session leader (a login shell) takes its session with it, but
    not procwork running in that session, nor procwork's own children."""
    me, parent = os.getpid(), os.getppid()
    table = FakeTable(
        proc(1000, "bash", session=1000),
        proc(parent, "bash", ppid=1000, pgid=parent, session=1000),
        proc(me, "python", ppid=parent, pgid=parent, session=1000),
        proc(1010, "sleep", ppid=me, pgid=parent, session=1000),
        proc(1020, "sleep", ppid=1, pgid=1020, session=1000),  # an orphan
    )
    rule = Rule("shell", process_name="bash", max_age=300, action="kill")
    engine, signals, _ = engine_for(rule, table=table)
    engine.check()
    assert [pid for pid, _ in signals.sent] == [1000, 1020]
