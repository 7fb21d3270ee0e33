"""Watchdog rules: find runaway processes on the machine and stop them.

Timing is driven by ``twisted.internet.task.Clock`` over fake process tables
and fake signal senders; a few tests stop real child processes.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any, cast

import attrs
import pytest
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger, LogLevel, formatEvent

from procwork import ConfigError
from procwork.monitor import Rule
from procwork.monitor._proctable import PF_KTHREAD, LinuxProcessTable, ProcInfo
from procwork.monitor._rules import Finding, RuleCounters, RuleEngine, signal_process
from tests.support import (
    PY,
    ROOT,
    FakeTable,
    alive,
    child_env,
    cpu_load,
    gone_within,
    program,
    run_child,
    running_sleeper,
    sigkill_leftovers,
    start_sleeper,
    stop_sleeper,
    unique_token,
)

NOW = 1_800_000_000.0
ME = pwd.getpwuid(os.geteuid()).pw_name


def proc(pid: int = 1000, name: str = "perl", **changes: Any) -> ProcInfo:
    """A process of this user that started 312 s before NOW."""
    base = ProcInfo(
        pid=pid,
        ppid=500,
        pgid=pid,
        uid=os.geteuid(),
        user=ME,
        name=name,
        cmdline=(f"/usr/bin/{name}", "/srv/cgi/slow.cgi"),
        state="S",
        start_time=NOW - 312,
        cpu_seconds=1.0,
        rss_bytes=10 * 2**20,
    )
    return dataclasses.replace(base, **changes)


class FakeSignals:
    """Records signals; SIGKILL always removes the process, SIGTERM if it obeys.

    ``sent`` holds the SIGTERMs and SIGKILLs; ``all_sent`` also the SIGSTOPs
    and SIGCONTs that freeze a tree while it is signalled.
    """

    def __init__(self, table: FakeTable, *, obey_term: bool = False) -> None:
        self.table = table
        self.obey_term = obey_term
        self.sent: list[tuple[int, signal.Signals]] = []
        self.all_sent: list[tuple[int, signal.Signals]] = []

    def __call__(self, process: ProcInfo, signum: int) -> bool:
        if self.table.get(process.pid) != process:
            return False
        self.all_sent.append((process.pid, signal.Signals(signum)))
        if signum in (signal.SIGSTOP, signal.SIGCONT):
            return True
        self.sent.append((process.pid, signal.Signals(signum)))
        if signum == signal.SIGKILL or self.obey_term:
            del self.table.processes[process.pid]
        return True


def clock_at(epoch: float) -> Clock:
    """A Clock whose seconds() reads as the given wall-clock time."""
    clock = Clock()
    clock.advance(epoch)
    return clock


def engine_for(
    *rules: Rule, table: FakeTable, obey_term: bool = False, **kwargs: Any
) -> tuple[RuleEngine, FakeSignals, Clock]:
    clock = clock_at(NOW)
    signals = FakeSignals(table, obey_term=obey_term)
    engine = RuleEngine(rules, table, reactor=clock, send_signal=signals, **kwargs)
    return engine, signals, clock


CGI = Rule("cgi", process_name="perl", max_age=300, action="term", grace=5)


# Rules are checked when they are made ---------------------------------------


def test_a_rule_without_any_selector_is_rejected_naming_the_rule() -> None:
    """A rule must say which processes it is about: name, cmdline or user."""
    with pytest.raises(ConfigError, match=r"rule 'loose': no selector: set at least"):
        Rule("loose", max_age=10)


def test_a_rule_without_any_threshold_is_rejected() -> None:
    """A rule must say when a process is a runaway."""
    with pytest.raises(ConfigError, match=r"rule 'idle': no threshold"):
        Rule("idle", process_name="perl")


@pytest.mark.parametrize("field", ["max_age", "max_cpu", "max_rss", "grace"])
def test_a_negative_threshold_is_rejected_naming_the_rule_and_the_field(
    field: str,
) -> None:
    """Negative seconds or bytes make no sense."""
    with pytest.raises(ConfigError, match=rf"rule 'cgi': {field} must be .* >= 0"):
        Rule("cgi", process_name="perl", **{"max_age": 1, field: -1})  # type: ignore[arg-type]


def test_a_threshold_that_is_not_a_number_is_rejected() -> None:
    """A config file giving "300" instead of 300 is caught at once."""
    with pytest.raises(ConfigError, match=r"rule 'cgi': max_age must be a number"):
        Rule("cgi", process_name="perl", max_age="300")


def test_an_unknown_action_is_rejected_naming_the_choices() -> None:
    """The actions are log, term and kill."""
    with pytest.raises(
        ConfigError, match=r"rule 'cgi': action must be one of 'log', 'term', 'kill'"
    ):
        Rule("cgi", process_name="perl", max_age=1, action="nuke")  # type: ignore[arg-type]


def test_a_bad_regular_expression_is_rejected_naming_the_field() -> None:
    """The cmdline pattern is compiled when the rule is made, not at the first scan."""
    with pytest.raises(
        ConfigError, match=r"rule 'cgi': cmdline is not a valid regular expression"
    ):
        Rule("cgi", cmdline="slow[.cgi", max_age=1)


def test_a_rule_needs_a_name() -> None:
    """Findings and errors name the rule, so it must have one."""
    with pytest.raises(ConfigError, match="rule name must be a non-empty string"):
        Rule("", process_name="perl", max_age=1)


def test_rule_errors_are_ValueErrors_too() -> None:
    """ConfigError is also the builtin ValueError."""
    with pytest.raises(ValueError, match="no selector"):
        Rule("loose", max_age=10)


def test_allowed_pids_from_a_config_list_are_kept_as_a_frozenset() -> None:
    """A TOML list of pids is accepted; a pid that is not positive is not."""
    rule = Rule("x", process_name="a", max_age=1, allow_pids=[1, 2])
    assert rule.allow_pids == frozenset({1, 2})
    with pytest.raises(ConfigError, match=r"rule 'x': allow_pids must hold positive"):
        Rule("x", process_name="a", max_age=1, allow_pids=frozenset({0}))


def test_two_rules_with_the_same_name_are_rejected_by_the_engine() -> None:
    """Counters and findings are per rule name, so names are unique."""
    with pytest.raises(ConfigError, match=r"rule 'cgi': name used twice"):
        RuleEngine([CGI, CGI], FakeTable(), reactor=Clock())


# Which processes a rule matches ---------------------------------------------


def test_a_process_name_matches_exactly_or_as_a_glob() -> None:
    """``perl`` matches perl only; ``*.cgi`` matches every CGI by name."""
    assert Rule("a", process_name="perl", max_age=0).selects(proc(name="perl"))
    assert not Rule("a", process_name="perl", max_age=0).selects(proc(name="perl5"))
    assert Rule("a", process_name="perl*", max_age=0).selects(proc(name="perl5"))


def test_a_long_program_name_is_also_matched_against_argv0() -> None:
    """The kernel cuts a process's name to 15 characters; argv[0] is whole."""
    cgi = proc(name="very_slow_repor", cmdline=("/srv/cgi/very_slow_report.cgi",))
    assert Rule("a", process_name="*_report.cgi", max_age=0).selects(cgi)


def test_a_command_line_pattern_is_searched_in_the_arguments_joined_by_spaces() -> None:
    """Any part of the command line can be matched with a regular expression."""
    rule = Rule("a", cmdline=r"perl /srv/cgi/\w+\.cgi$", max_age=0)
    assert rule.selects(proc())
    assert not rule.selects(proc(cmdline=("perl", "/srv/tools/x.pl")))


def test_every_selector_that_is_set_must_match() -> None:
    """Name and user together select that user's processes of that name."""
    rule = Rule("a", process_name="perl", user="www-data", max_age=0)
    assert not rule.selects(proc())
    assert rule.selects(proc(user="www-data"))


def test_a_process_matches_when_it_exceeds_any_threshold_and_says_which() -> None:
    """Age, CPU and memory are each enough; the reason lists every one exceeded."""
    rule = Rule("a", process_name="perl", max_age=300, max_cpu=10, max_rss=2**20)
    assert rule.match(proc(rss_bytes=0), NOW) == "ran 312 s > max_age 300 s"
    hog = proc(start_time=NOW, cpu_seconds=12.25, rss_bytes=3 * 2**20)
    assert rule.match(hog, NOW) == (
        "used 12 CPU s > max_cpu 10 s; RSS 3.0 MiB > max_rss 1.0 MiB"
    )


def test_a_process_within_every_threshold_does_not_match() -> None:
    """Exceeding means strictly more than the threshold."""
    rule = Rule("a", process_name="perl", max_age=312, max_cpu=1, max_rss=10 * 2**20)
    assert rule.match(proc(), NOW) is None


# What the engine does ---------------------------------------------------------


def test_a_log_rule_reports_a_runaway_and_touches_nothing() -> None:
    """``action="log"`` is the default."""
    table = FakeTable(proc())
    rule = Rule("cgi", process_name="perl", max_age=300)
    engine, signals, _ = engine_for(rule, table=table)
    [finding] = engine.check()
    assert str(finding) == (
        "rule 'cgi': pid 1000 (perl) ran 312 s > max_age 300 s: logged"
    )
    assert signals.sent == []


def test_a_process_older_than_max_age_gets_SIGTERM_then_SIGKILL_after_grace() -> None:
    """A process that ignores SIGTERM is killed when the grace period ends."""
    events: list[dict[str, Any]] = []
    table = FakeTable(proc())
    engine, signals, clock = engine_for(
        CGI, table=table, log=Logger(observer=cast(ILogObserver, events.append))
    )
    [finding] = engine.check()
    assert finding.action == "sent SIGTERM"
    assert signals.sent == [(1000, signal.SIGTERM)]

    clock.advance(4.9)
    assert signals.sent == [(1000, signal.SIGTERM)]
    clock.advance(0.1)
    assert signals.sent == [(1000, signal.SIGTERM), (1000, signal.SIGKILL)]
    assert [formatEvent(e) for e in events] == [
        "rule cgi: pid 1000 (perl) ran 312 s > max_age 300 s: sent SIGTERM",
        "rule cgi: pid 1000 (perl) ran 312 s > max_age 300 s:"
        " sent SIGKILL after grace 5 s",
    ]
    assert [e["log_level"] for e in events] == [LogLevel.warn, LogLevel.warn]
    assert isinstance(events[-1]["finding"], Finding)
    assert engine.counters["cgi"].signals_sent == 2


def test_a_process_that_exits_within_grace_is_not_SIGKILLed() -> None:
    """Most processes obey SIGTERM; they get nothing more."""
    table = FakeTable(proc())
    engine, signals, clock = engine_for(CGI, table=table, obey_term=True)
    engine.check()
    clock.advance(5)
    assert signals.sent == [(1000, signal.SIGTERM)]
    assert clock.getDelayedCalls() == []


def test_a_reused_pid_is_not_SIGKILLed_when_the_grace_period_ends() -> None:
    """Same pid but another start time is another process: it is left alone."""
    table = FakeTable(proc())
    engine, signals, clock = engine_for(CGI, table=table)
    engine.check()
    table.processes[1000] = proc(start_time=NOW + 1)  # the pid was reused
    clock.advance(5)
    assert signals.sent == [(1000, signal.SIGTERM)]


def test_a_process_already_being_escalated_is_not_signalled_or_reported_twice() -> None:
    """A scan during the grace period neither reports it again nor sends a second
    SIGTERM: one process is one match, one finding, one log line."""
    events: list[dict[str, Any]] = []
    table = FakeTable(proc())
    engine, signals, clock = engine_for(
        CGI, table=table, log=Logger(observer=cast(ILogObserver, events.append))
    )
    engine.check()
    for _ in range(4):
        clock.advance(1)
        assert engine.check() == []
    clock.advance(1)
    assert signals.sent == [(1000, signal.SIGTERM), (1000, signal.SIGKILL)]
    assert engine.counters["cgi"].matches == 1
    assert [e["action"] for e in events] == [
        "sent SIGTERM",
        "sent SIGKILL after grace 5 s",
    ]


def test_a_process_matching_two_rules_is_signalled_by_the_first_only() -> None:
    """Rules are applied in order; the second sees the process already signalled."""
    table = FakeTable(proc())
    by_cpu = Rule("cpu", process_name="perl", max_cpu=0.5, action="kill")
    engine, signals, _ = engine_for(CGI, by_cpu, table=table)
    findings = engine.check()
    assert [f.action for f in findings] == [
        "sent SIGTERM",
        "SIGTERM already sent; not signalled twice",
    ]
    assert signals.sent == [(1000, signal.SIGTERM)]


def test_a_kill_rule_sends_SIGKILL_at_once() -> None:
    """``action="kill"`` skips SIGTERM and the grace period."""
    table = FakeTable(proc())
    rule = Rule("cgi", process_name="perl", max_age=300, action="kill")
    engine, signals, clock = engine_for(rule, table=table)
    [finding] = engine.check()
    assert finding.action == "sent SIGKILL"
    assert signals.sent == [(1000, signal.SIGKILL)]
    assert clock.getDelayedCalls() == []


def test_a_dry_run_rule_says_what_it_would_do_and_signals_nothing() -> None:
    """``dry_run=True`` on a rule, or on the whole engine, touches nothing."""
    table = FakeTable(proc())
    dry = attrs.evolve(CGI, dry_run=True)
    engine, signals, clock = engine_for(dry, table=table)
    [finding] = engine.check()
    assert finding.action == "would send SIGTERM (dry run)"
    engine, signals, clock = engine_for(CGI, table=table, dry_run=True)
    assert [f.action for f in engine.check()] == ["would send SIGTERM (dry run)"]
    assert signals.sent == []
    assert clock.getDelayedCalls() == []


def test_the_engine_never_touches_its_own_pid_its_parent_pid_1_or_kernel_threads() -> (
    None
):
    """Even a rule matching everything spares them, and says why."""
    table = FakeTable(
        proc(os.getpid(), "python"),
        proc(os.getppid(), "bash"),
        proc(1, "init"),
        proc(2, "kthreadd", ppid=0, cmdline=(), flags=PF_KTHREAD),
        proc(77, "kworker/0:1", ppid=2, cmdline=(), flags=PF_KTHREAD),
    )
    everything = Rule("all", process_name="*", max_age=0, action="kill")
    engine, signals, _ = engine_for(everything, table=table)
    actions = {f.process.pid: f.action for f in engine.check()}
    assert signals.sent == []
    assert actions[os.getpid()].startswith("spared: procwork's own process")
    assert actions[os.getppid()].startswith("spared: procwork's parent")
    assert actions[1].startswith("spared: pid 1 (init)")
    assert actions[2].startswith("spared: a kernel thread")
    assert actions[77].startswith("spared: a kernel thread")
    assert engine.counters["all"].signals_sent == 0


def test_a_rule_may_touch_a_protected_pid_it_names_in_allow_pids() -> None:
    """Protection is a default, lifted by naming the pid explicitly."""
    table = FakeTable(proc(1, "init"))
    rule = Rule(
        "init", process_name="init", max_age=0, action="kill", allow_pids=frozenset({1})
    )
    engine, signals, _ = engine_for(rule, table=table)
    engine.check()
    assert signals.sent == [(1, signal.SIGKILL)]


def test_processes_of_other_users_are_spared_unless_the_rule_allows_them() -> None:
    """``allow_other_users`` or naming the ``user`` lets a rule reach them."""
    other_uid = os.geteuid() + 1
    table = FakeTable(proc(uid=other_uid, user="www-data"))
    engine, signals, _ = engine_for(CGI, table=table)
    [finding] = engine.check()
    assert finding.action.startswith("spared: process of another user, www-data")
    assert signals.sent == []

    for allowed in (
        attrs.evolve(CGI, allow_other_users=True),
        attrs.evolve(CGI, user="www-data"),
    ):
        table = FakeTable(proc(uid=other_uid, user="www-data"))
        engine, signals, _ = engine_for(allowed, table=table)
        engine.check()
        assert signals.sent == [(1000, signal.SIGTERM)]


def test_zombies_are_ignored() -> None:
    """A process that has exited cannot be stopped again; it waits for its parent."""
    table = FakeTable(proc(state="Z"))
    engine, _, _ = engine_for(CGI, table=table)
    assert engine.check() == []


def test_a_signal_that_cannot_be_sent_is_reported_not_raised() -> None:
    """Permission denied on one process must not stop the watchdog."""

    def refuse(process: ProcInfo, signum: int) -> bool:
        raise PermissionError(1, "Operation not permitted")

    engine = RuleEngine(
        [CGI], FakeTable(proc()), reactor=clock_at(NOW), send_signal=refuse
    )
    [finding] = engine.check()
    assert finding.action == "could not send SIGTERM: Operation not permitted"
    assert engine.counters["cgi"].signals_sent == 0


def test_a_process_gone_before_the_signal_is_reported_as_exited() -> None:
    """The table was read a moment ago; the process may have exited since."""
    table = FakeTable(proc())
    engine = RuleEngine(
        [CGI], table, reactor=clock_at(NOW), send_signal=lambda p, s: False
    )
    [finding] = engine.check()
    assert finding.action == "exited before SIGTERM could be sent"


def test_counters_count_matches_and_signals_per_rule() -> None:
    """Every process matched counts once, every signal delivered counts, per rule."""
    table = FakeTable(proc(1000), proc(1001), proc(1002, "bash"))
    logged = Rule("bash", process_name="bash", max_age=0)
    engine, _, _ = engine_for(CGI, logged, table=table, obey_term=True)
    engine.check()
    engine.check()
    assert dataclasses.astuple(engine.counters["cgi"]) == (2, 2)
    assert dataclasses.astuple(engine.counters["bash"]) == (1, 0)


def test_stop_cancels_pending_escalations() -> None:
    """After stop() no SIGKILL is sent, and no timer is left on the reactor."""
    table = FakeTable(proc())
    engine, signals, clock = engine_for(CGI, table=table)
    engine.check()
    engine.stop()
    assert clock.getDelayedCalls() == []
    clock.advance(10)
    assert signals.sent == [(1000, signal.SIGTERM)]


def test_an_update_keeps_what_an_unchanged_rule_knows_and_its_pending_SIGKILL() -> None:
    """The rule of the same name and spec goes on: its counters, the processes
    it reported (not reported again) and the SIGKILL due at the end of grace."""
    table = FakeTable(proc(1000), proc(1001, "bash"))
    logged = Rule("bash", process_name="bash", max_age=0)
    engine, signals, clock = engine_for(CGI, logged, table=table)
    engine.check()
    engine.update([attrs.evolve(CGI), logged])
    assert engine.check() == []
    assert dataclasses.astuple(engine.counters["cgi"]) == (1, 1)
    assert dataclasses.astuple(engine.counters["bash"]) == (1, 0)
    clock.advance(5)
    assert signals.sent == [(1000, signal.SIGTERM), (1000, signal.SIGKILL)]


def test_an_update_starts_a_changed_rule_afresh_and_cancels_its_pending_SIGKILL() -> (
    None
):
    """As a new rule: its escalation is cancelled, as stop() cancels it, its
    counters start at 0, and a process that still breaks it is acted on again."""
    table = FakeTable(proc(1000), proc(1001, "bash"))
    logged = Rule("bash", process_name="bash", max_age=0)
    engine, signals, clock = engine_for(CGI, logged, table=table)
    engine.check()
    engine.update([attrs.evolve(CGI, grace=60), logged])
    assert clock.getDelayedCalls() == []
    assert dataclasses.astuple(engine.counters["cgi"]) == (0, 0)
    [finding] = engine.check()
    assert (finding.rule.name, finding.action) == ("cgi", "sent SIGTERM")
    assert dataclasses.astuple(engine.counters["bash"]) == (1, 0)
    clock.advance(59.9)
    assert signals.sent == [(1000, signal.SIGTERM)] * 2
    clock.advance(0.1)
    assert signals.sent[-1] == (1000, signal.SIGKILL)


def test_an_update_adds_and_drops_rules_and_applies_them_in_the_new_order() -> None:
    """A dropped rule's escalation is cancelled and its counters go; an added
    rule acts at the next scan; the rules are applied in the new order."""
    table = FakeTable(proc(1000))
    killer = Rule("killer", process_name="perl", max_age=0, action="kill")
    engine, signals, clock = engine_for(CGI, table=table)
    engine.check()
    engine.update([killer])
    assert clock.getDelayedCalls() == []
    assert list(engine.counters) == ["killer"]
    [finding] = engine.check()
    assert (finding.rule.name, finding.action) == ("killer", "sent SIGKILL")
    assert signals.sent == [(1000, signal.SIGTERM), (1000, signal.SIGKILL)]
    logged = Rule("log", process_name="perl", max_age=0)
    table.add(proc(1002))
    engine.update([logged, killer])
    assert [r.name for r in engine.rules] == ["log", "killer"]
    assert [f.rule.name for f in engine.check()] == ["log", "killer"]
    assert signals.sent[-1] == (1002, signal.SIGKILL)


def test_an_update_with_two_rules_of_one_name_is_refused_and_changes_nothing() -> None:
    engine, _, _ = engine_for(CGI, table=FakeTable())
    with pytest.raises(ConfigError, match=r"rule 'x': name used twice"):
        engine.update([Rule("x", user="a", max_age=1), Rule("x", user="b", max_age=1)])
    assert engine.rules == (CGI,)


@pytest.mark.slow
def test_importing_the_rules_does_not_import_the_global_reactor() -> None:
    """A program can still choose its reactor after importing procwork's rules."""
    code = (
        "import sys, procwork.monitor._rules;"
        " sys.exit('twisted.internet.reactor' in sys.modules)"
    )
    child = run_child(code)
    assert child.returncode == 0, child.stderr


# Real processes -------------------------------------------------------------


@pytest.fixture
def token() -> str:
    return unique_token()


@pytest.fixture
def real_clock() -> Clock:
    # /proc start times are whole-second boot time plus ticks, about a second
    # off; a clock a few seconds ahead makes a fresh child older than max_age=0.
    return clock_at(time.time() + 5)


@pytest.fixture
def sleeper(token: str) -> Iterator[subprocess.Popen[str]]:
    with running_sleeper(token) as child:
        yield child


def test_a_real_process_past_max_age_is_found_and_stopped_with_SIGTERM(
    token: str, sleeper: subprocess.Popen[str], real_clock: Clock
) -> None:
    """The rule finds the child by an argument in /proc and SIGTERMs it."""
    rule = Rule("runaway", cmdline=token, max_age=0, action="term")
    engine = RuleEngine([rule], LinuxProcessTable(), reactor=real_clock)
    [finding] = engine.check()
    assert (finding.process.pid, finding.action) == (sleeper.pid, "sent SIGTERM")
    assert sleeper.wait(timeout=10) == -signal.SIGTERM
    engine.stop()


@pytest.mark.slow
def test_a_dry_run_leaves_a_real_process_running(
    token: str, sleeper: subprocess.Popen[str], real_clock: Clock
) -> None:
    """It is reported as what would be done, and it survives."""
    rule = Rule("runaway", cmdline=token, max_age=0, action="kill", dry_run=True)
    engine = RuleEngine([rule], LinuxProcessTable(), reactor=real_clock)
    [finding] = engine.check()
    assert (finding.process.pid, finding.action) == (
        sleeper.pid,
        "would send SIGKILL (dry run)",
    )
    with pytest.raises(subprocess.TimeoutExpired):
        sleeper.wait(timeout=0.5)


@pytest.mark.slow
def test_a_real_process_ignoring_SIGTERM_is_SIGKILLed_when_the_grace_period_ends(
    token: str, real_clock: Clock
) -> None:
    """Advancing the clock past ``grace`` sends the real SIGKILL."""
    child = start_sleeper(token, ignore_term=True)
    try:
        rule = Rule("stubborn", cmdline=token, max_age=0, action="term", grace=5)
        engine = RuleEngine([rule], LinuxProcessTable(), reactor=real_clock)
        [finding] = engine.check()
        assert finding.action == "sent SIGTERM"
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=0.5)  # SIGTERM was ignored
        real_clock.advance(5)
        assert child.wait(timeout=10) == -signal.SIGKILL
        assert engine.counters["stubborn"].signals_sent == 2
    finally:
        stop_sleeper(child)


def test_the_real_table_spares_this_process_its_parent_and_pid_1_by_default() -> None:
    """As seen in /proc, procwork itself, its parent and init are protected."""
    real = LinuxProcessTable()
    mine = [real.get(pid) for pid in (os.getpid(), os.getppid(), 1)]
    table = FakeTable(*[p for p in mine if p is not None])
    everything = Rule("all", process_name="*", max_age=0, action="kill")
    signals = FakeSignals(table)
    engine = RuleEngine(
        [everything], table, reactor=clock_at(time.time() + 5), send_signal=signals
    )
    findings = engine.check()
    assert len(findings) == len(table.processes)
    assert all(f.action.startswith("spared:") for f in findings)
    assert signals.sent == []


@pytest.mark.slow
def test_signal_process_never_signals_a_process_whose_start_time_differs(
    sleeper: subprocess.Popen[str],
) -> None:
    """A pid seen earlier may now name another process: no signal is sent."""
    table = LinuxProcessTable()
    seen = table.get(sleeper.pid)
    assert seen is not None
    earlier_holder = dataclasses.replace(seen, start_time=seen.start_time - 100)
    assert signal_process(table, earlier_holder, signal.SIGKILL) is False
    with pytest.raises(subprocess.TimeoutExpired):
        sleeper.wait(timeout=0.5)
    assert signal_process(table, seen, signal.SIGKILL) is True
    assert sleeper.wait(timeout=10) == -signal.SIGKILL


def test_signal_process_falls_back_to_kill_where_there_are_no_pidfds(
    sleeper: subprocess.Popen[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without os.pidfd_open it re-checks the start time, then uses os.kill."""
    monkeypatch.delattr(os, "pidfd_open")
    table = LinuxProcessTable()
    seen = table.get(sleeper.pid)
    assert seen is not None
    assert signal_process(table, seen, signal.SIGTERM) is True
    assert sleeper.wait(timeout=10) == -signal.SIGTERM
    assert signal_process(table, seen, signal.SIGTERM) is False


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
        return int(pid)

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
