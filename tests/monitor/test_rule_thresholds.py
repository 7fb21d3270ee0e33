"""Rules over time: CPU as a share of a core, thresholds held for scans,
the SIGKILL escalation as an event, and findings that name the command.

Fake process tables on a Clock (``tests/support/rules.py``); one spinning
real process read from ``/proc``.
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
from collections.abc import Iterator

import pytest
from twisted.internet.task import Clock

from procwork import NoLoadLimit, Scheduler
from procwork.monitor import Monitor, Rule, parse_config
from procwork.monitor._events import escalation_event
from procwork.monitor._proctable import LinuxProcessTable, ProcInfo
from procwork.monitor._rules import Finding, RuleEngine
from tests.support import PY, ROOT, FakeTable, readable, running_sleeper
from tests.support.fake_monitor import HEADER, FakeRun
from tests.support.rules import CGI, NOW, FakeSignals, engine_for, proc

HOT = Rule("hot", process_name="perl", cpu_percent=50)


def burning(process: ProcInfo, cpu: float) -> ProcInfo:
    """``process`` as it is once it has used ``cpu`` CPU seconds in all."""
    return dataclasses.replace(process, cpu_seconds=cpu)


# -- cpu_percent ------------------------------------------------------------------


def test_cpu_percent_is_the_share_of_a_core_between_two_scans() -> None:
    table = FakeTable(proc(cpu_seconds=10.0), proc(1001, cpu_seconds=10.0))
    engine, _, clock = engine_for(HOT, table=table)
    assert engine.check() == []  # first seen: nothing to compare with yet
    clock.advance(5)
    table.add(burning(proc(), 14.0), burning(proc(1001), 11.0))  # 80 %, 20 %
    [finding] = engine.check()
    assert finding.process.pid == 1000
    assert finding.reason == "CPU 80% of a core > cpu_percent 50%"


def test_a_process_with_several_busy_threads_can_pass_one_core() -> None:
    table = FakeTable(proc(cpu_seconds=0.0))
    engine, _, clock = engine_for(
        Rule("hot", process_name="perl", cpu_percent=150), table=table
    )
    engine.check()
    clock.advance(2)
    table.add(burning(proc(), 3.6))
    [finding] = engine.check()
    assert finding.reason == "CPU 180% of a core > cpu_percent 150%"


def test_a_reused_pid_is_judged_afresh_not_against_the_old_process() -> None:
    table = FakeTable(proc(cpu_seconds=0.0))
    engine, _, clock = engine_for(HOT, table=table)
    engine.check()
    clock.advance(5)
    table.add(proc(cpu_seconds=400.0, start_time=NOW + 1))  # another process
    assert engine.check() == []


def test_only_the_processes_of_the_last_scan_are_remembered() -> None:
    """The samples and the streaks are bounded by the processes alive and
    breaking a rule, whatever came and went before."""
    table = FakeTable(*(proc(2000 + i) for i in range(500)))
    engine, _, clock = engine_for(
        HOT, Rule("old", process_name="perl", max_age=60, for_scans=3), table=table
    )
    engine.check()
    assert (len(engine._cpu), len(engine._streaks)) == (500, 500)
    table.processes = {1000: proc()}
    clock.advance(5)
    engine.check()
    assert (len(engine._cpu), len(engine._streaks)) == (1, 1)


# -- for_scans ---------------------------------------------------------------------


def test_for_scans_acts_only_once_a_threshold_held_that_many_scans_in_a_row() -> None:
    table = FakeTable(proc(cpu_seconds=0.0))
    rule = Rule("hot", process_name="perl", cpu_percent=80, for_scans=3)
    engine, _, clock = engine_for(rule, table=table)
    engine.check()
    found: list[list[Finding]] = []
    # CPU per 5 s scan: 100 %, 100 %, 20 % (the streak breaks), then 100 % x3.
    cpu = 0.0
    for used in (5, 5, 1, 5, 5, 5):
        clock.advance(5)
        cpu += used
        table.add(burning(proc(), cpu))
        found.append(engine.check())
    assert [len(f) for f in found] == [0, 0, 0, 0, 0, 1]
    assert found[-1][0].reason == "CPU 100% of a core > cpu_percent 80% for 3 scans"


def test_for_scans_applies_to_any_threshold() -> None:
    table = FakeTable(proc(rss_bytes=900 * 2**20))
    rule = Rule("fat", process_name="perl", max_rss="512M", for_scans=2)
    engine, _, _ = engine_for(rule, table=table)
    assert engine.check() == []
    [finding] = engine.check()
    assert finding.reason == "RSS 900.0 MiB > max_rss 512.0 MiB for 2 scans"


def test_for_scans_and_cpu_percent_take_their_units_and_bounds() -> None:
    with pytest.raises(ValueError, match="for_scans must be a whole number >= 1"):
        Rule("x", process_name="perl", max_age=1, for_scans=0)
    with pytest.raises(ValueError, match="cpu_percent must be a finite number >= 0"):
        Rule("x", process_name="perl", cpu_percent=-5)


# -- findings name the command line ---------------------------------------------------


def test_a_finding_names_the_command_line_cut_to_120_characters() -> None:
    long = proc(cmdline=("/usr/bin/python3", "-m", "app.worker", "x" * 300))
    bare = proc(1001, cmdline=())
    engine, _, _ = engine_for(
        Rule("old", process_name="*", max_age=60), table=FakeTable(long, bare)
    )
    first, second = engine.check()
    assert str(first) == (
        f"rule 'old': pid 1000 (/usr/bin/python3 -m app.worker {'x' * 86}...) "
        "ran 312 s > max_age 60 s: logged"
    )
    assert len(first.command) == 120
    assert str(second).startswith("rule 'old': pid 1001 ([perl]) ran 312 s")


# -- the SIGKILL escalation ----------------------------------------------------------


def test_a_SIGKILL_after_the_grace_is_told_to_listeners_as_rule_escalated() -> None:
    table = FakeTable(proc())
    engine, _, clock = engine_for(CGI, table=table)
    heard: list[Finding] = []
    engine.listen(heard.append)
    engine.check()
    clock.advance(5)
    [finding] = heard
    assert finding.action == "sent SIGKILL after grace 5 s"
    event = escalation_event(finding, clock.seconds())
    assert (event.event, event.name, event.state) == (
        "rule.escalated",
        "cgi",
        "sent SIGKILL",
    )
    assert event.message == (
        "rule 'cgi': pid 1000 (/usr/bin/perl /srv/cgi/slow.cgi) ran 312 s > "
        "max_age 300 s: sent SIGKILL after grace 5 s"
    )
    assert event.fields["command"] == "/usr/bin/perl /srv/cgi/slow.cgi"


def test_a_tree_that_obeyed_SIGTERM_is_no_escalation() -> None:
    engine, _, clock = engine_for(CGI, table=FakeTable(proc()), obey_term=True)
    heard: list[Finding] = []
    engine.listen(heard.append)
    engine.check()
    clock.advance(5)
    assert heard == []


def test_the_monitor_sends_rule_escalated_to_its_alerts() -> None:
    table = FakeTable(dataclasses.replace(proc(), start_time=NOW - 4000))
    clock = Clock()
    clock.rightNow = NOW
    config = parse_config(
        HEADER + '[[rule]]\nname = "cgi"\nprocess_name = "perl"\nmax_age = 600\n'
        'action = "term"\ngrace = 5\n'
        '[[alert]]\nname = "page"\nevents = "rule.*"\ncommand = ["true"]\n'
    )
    monitor = Monitor(
        config,
        reactor=clock,
        scheduler=Scheduler(clock, load=NoLoadLimit()),
        run=FakeRun(),
        process_table=table,
    )
    # Signals go to the fake table, not to whatever has these pids here.
    monitor.rules._send_signal = FakeSignals(table)
    monitor.start()  # the first scan: SIGTERM
    clock.advance(5)  # the grace is over: SIGKILL
    events = [e for e in monitor.alerts.recent if e.kind == "rule"]
    assert [e.event for e in events] == ["rule.matched", "rule.acted", "rule.escalated"]
    assert monitor.alerts.status["page"].sent == 3
    assert "(/usr/bin/perl /srv/cgi/slow.cgi)" in events[-1].message


# -- on a real process ----------------------------------------------------------------


@pytest.fixture
def spinner(token: str) -> Iterator[subprocess.Popen[str]]:
    child = subprocess.Popen(
        [PY, "-m", "tests.programs.spinner", token],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert child.stdout is not None
        assert readable(child.stdout, 10) and child.stdout.readline() == "ready\n"
        yield child
    finally:
        child.kill()
        child.wait(timeout=10)
        assert child.stdout is not None
        child.stdout.close()


@pytest.mark.slow
def test_a_real_spinning_process_breaks_cpu_percent_and_a_sleeping_one_does_not(
    token: str, spinner: subprocess.Popen[str], real_clock: Clock
) -> None:
    """Read from /proc's ticks: the spinner uses most of a core (at least 5 %
    even on a loaded machine), the sleeper none, over scans 0.3 s apart."""
    rule = Rule("hot", cmdline=token, cpu_percent=5, for_scans=2)
    engine = RuleEngine([rule], LinuxProcessTable(), reactor=real_clock)
    found: list[Finding] = []
    with running_sleeper(token):
        last = time.monotonic()
        for _ in range(40):  # 12 s at most
            time.sleep(0.3)
            now = time.monotonic()
            real_clock.advance(now - last)
            last = now
            found += engine.check()
            if found:
                break
    assert [f.process.pid for f in found] == [spinner.pid]
    assert found[0].reason.endswith("> cpu_percent 5% for 2 scans")
