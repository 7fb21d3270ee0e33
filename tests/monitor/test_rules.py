"""Watchdog rules: find runaway processes on the machine and stop them.

Timing is driven by ``twisted.internet.task.Clock`` over fake process tables
and fake signal senders (``tests/support/rules.py``); a few tests stop real
child processes. What a rule does to a process's tree is ``test_treekill.py``.
"""

from __future__ import annotations

import dataclasses
import os
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
from procwork.monitor._rules import Finding, RuleEngine, signal_process
from tests.support import (
    FakeTable,
    run_child,
    running_sleeper,
    start_sleeper,
    stop_sleeper,
)
from tests.support.rules import CGI, NOW, FakeSignals, clock_at, engine_for, proc

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
        "rule 'cgi': pid 1000 (/usr/bin/perl /srv/cgi/slow.cgi) ran 312 s > "
        "max_age 300 s: logged"
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
        "rule cgi: pid 1000 (/usr/bin/perl /srv/cgi/slow.cgi) ran 312 s > "
        "max_age 300 s: sent SIGTERM",
        "rule cgi: pid 1000 (/usr/bin/perl /srv/cgi/slow.cgi) ran 312 s > "
        "max_age 300 s: sent SIGKILL after grace 5 s",
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
