"""PID 1 and subreapers: procwork reaps the orphans the kernel hands it, and
never the exit status of a child other code of the program waits for.

The scheduling of sweeps is tested on a ``task.Clock``. Everything that needs
orphans runs in a child Python made a subreaper with
``prctl(PR_SET_CHILD_SUBREAPER)``, or in a new pid namespace where
``procwork monitor`` is PID 1 (``unshare --pid --fork --mount-proc``). Every
wait is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import process as twisted_process
from twisted.internet import task

from procwork import _orphans
from tests.support import (
    PY,
    ROOT,
    child_env,
    observing,
    program,
    run_program,
)

# -- sweeps: when they run ------------------------------------------------------


@pytest.fixture
def clock_reaper() -> Iterator[tuple[task.Clock, _orphans.OrphanReaper]]:
    """A started reaper on a Clock (hooked into Twisted's table); stopped after."""
    clock = task.Clock()
    reaper = _orphans.OrphanReaper(clock, min_interval=0.05, backstop=1.0, max_busy=0)
    reaper.start()
    try:
        yield clock, reaper
    finally:
        reaper.stop()


def hook() -> Any:
    """The reaper's entry in Twisted's reap table."""
    table: dict[Any, Any] = twisted_process.reapProcessHandlers
    return table[_orphans._HOOK_KEY]


def test_twisteds_sigchld_reaping_asks_the_reaper_for_a_sweep(
    clock_reaper: tuple[task.Clock, _orphans.OrphanReaper],
) -> None:
    """The reaper is an entry of Twisted's reap table, so the reapAllProcesses()
    that Twisted runs on every SIGCHLD asks for a sweep, on a later turn."""
    clock, reaper = clock_reaper
    clock.advance(0)
    assert reaper.sweeps == 1  # start() sweeps once, for orphans already there
    clock.advance(0.5)
    twisted_process.reapAllProcesses()
    assert reaper.sweeps == 1
    clock.advance(0)
    assert reaper.sweeps == 2


def test_its_entry_in_twisteds_table_is_not_a_pid(
    clock_reaper: tuple[task.Clock, _orphans.OrphanReaper],
) -> None:
    """No code that walks the table for pids can signal or wait on a process
    group because of it: its key is a string."""
    table: dict[Any, Any] = twisted_process.reapProcessHandlers
    [key] = [k for k, v in table.items() if v is hook()]
    assert isinstance(key, str)


def test_a_burst_of_sigchld_makes_one_sweep_and_sweeps_are_spaced(
    clock_reaper: tuple[task.Clock, _orphans.OrphanReaper],
) -> None:
    """A thousand SIGCHLDs before the sweep runs make one sweep; the next one
    waits until min_interval after it."""
    clock, reaper = clock_reaper
    for _ in range(1000):
        hook().reapProcess()
    clock.advance(0)
    assert reaper.sweeps == 1
    for _ in range(1000):
        hook().reapProcess()
    clock.advance(0.04)
    assert reaper.sweeps == 1
    clock.advance(0.01)
    assert reaper.sweeps == 2


def test_slow_sweeps_are_spaced_by_what_they_cost() -> None:
    """A sweep that took 3 ms (thousands of children to list) is followed by
    the next one 0.15 s later at the soonest: at most 2 % of the time goes to
    sweeping, however many SIGCHLD arrive."""
    clock = task.Clock()
    reaper = _orphans.OrphanReaper(clock, min_interval=0.05, max_busy=0.02)
    ticks = iter([0.0, 0.003] * 10)
    reaper._timer = lambda: next(ticks)
    reaper.start()
    try:
        clock.advance(0)
        assert reaper.sweeps == 1
        hook().reapProcess()
        clock.advance(0.149)
        assert reaper.sweeps == 1
        clock.advance(0.001)
        assert reaper.sweeps == 2
    finally:
        reaper.stop()


def test_the_backstop_sweeps_every_second_without_any_sigchld(
    clock_reaper: tuple[task.Clock, _orphans.OrphanReaper],
) -> None:
    """For a reactor with no SIGCHLD handling (driven off the main thread)."""
    clock, reaper = clock_reaper
    clock.advance(0)
    for _ in range(3):
        clock.advance(1.0)
    assert reaper.sweeps == 4


def test_stopping_unhooks_from_twisted_and_cancels_every_timer() -> None:
    clock = task.Clock()
    reaper = _orphans.OrphanReaper(clock)
    reaper.start()
    reaper.stop()
    table: dict[Any, Any] = twisted_process.reapProcessHandlers
    assert _orphans._HOOK_KEY not in table
    assert clock.getDelayedCalls() == []
    reaper.request_sweep()
    assert clock.getDelayedCalls() == []


def test_a_failing_sweep_is_logged_and_the_reaper_goes_on(
    clock_reaper: tuple[task.Clock, _orphans.OrphanReaper],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock, reaper = clock_reaper
    events: list[dict[str, Any]] = []
    monkeypatch.setattr(_orphans, "_peek_zombie", lambda: 1 / 0)
    with observing(events.append):
        clock.advance(0)
        clock.advance(1.0)
    failures = [e for e in events if "log_failure" in e]
    assert [e["log_format"] for e in failures] == ["sweep for orphans failed"] * 2
    assert failures[0]["log_failure"].check(ZeroDivisionError)
    assert reaper.sweeps == 2


# -- when reaping starts ---------------------------------------------------------


def reported(scenario: str) -> dict[str, Any]:
    """Run the ``scenario`` of tests/programs/orphans.py; its last stdout line
    is JSON."""
    done = run_program("orphans", scenario, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_a_subreaper_is_detected_and_its_first_spawn_starts_reaping() -> None:
    report = reported("subreaper-detected")
    assert report == {"role": "subreaper", "before": True, "after": True}


@pytest.mark.slow
def test_an_ordinary_process_reaps_nothing_and_its_spawns_look_once() -> None:
    """Neither PID 1 nor a subreaper: reap_orphans() does nothing, and after
    the first spawn had a look, spawns don't look again."""
    report = reported("ordinary")
    assert report == {
        "role": None,
        "looked": False,
        "explicit": False,
        "reaper": False,
        "hooked": False,
    }


# -- a subreaper's orphans ---------------------------------------------------------


@pytest.mark.slow
def test_a_subreaper_reaps_the_orphans_of_its_runs_and_popen_keeps_its_status() -> None:
    """Runs that leave a grandchild behind (kill_leftovers=False), 100 times:
    every orphan is reaped, while a plain subprocess.Popen child of the same
    program, and one in a new session, still return their exit status."""
    report = reported("subreaper-runs")
    assert report["zombies"] == []
    assert report["reaped"] >= 100
    assert report["statuses"] == [7, 5, 9]
    assert report["children"] == {}


@pytest.mark.slow
def test_sigchld_alone_wakes_the_reaper() -> None:
    """With the backstop an hour away, orphans are still reaped: Twisted's
    SIGCHLD handling is what wakes the reaper."""
    report = reported("sigchld-alone")
    assert report == {"zombies": [], "reaped": 20}


@pytest.mark.slow
def test_without_twisteds_sigchld_handling_the_backstop_reaps() -> None:
    """The reactor driven from another thread gets no SIGCHLD handler; the
    backstop's sweep every second reaps the orphans all the same."""
    report = reported("backstop")
    assert report == {"handler": True, "zombies": [], "reaped": 10}


@pytest.mark.slow
def test_by_default_an_orphan_that_leads_its_own_session_is_left_alone() -> None:
    """The limit of the default rule: such an orphan looks exactly like a child
    the program started with start_new_session=True, so it stays a zombie."""
    report = reported("session-leader")
    assert report == {"zombies": 1, "reaped": 0, "leads": [True]}


@pytest.mark.slow
def test_all_children_reaps_every_orphan_but_never_procworks_or_twisteds_own() -> None:
    """procwork monitor's choice: every unclaimed zombie child is reaped, the
    session leader orphan too, while procwork's runs, Twisted's own
    spawnProcess children and a helper procwork claimed keep their exit
    status."""
    report = reported("all-children")
    assert report["zombies"] == []
    assert report["reaped"] >= 60
    assert report["codes"] == [3]
    assert report["twisted"] == [4]
    assert report["helper"] == 6


# -- stress -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["orphans", "all"])
def test_stress_hundreds_of_orphans_amid_runs_and_popen_children(mode: str) -> None:
    """400 runs, each leaving two orphans (killed or not), 25 at a time; in the
    default mode a thread starts and waits 150 plain Popen children meanwhile.
    Every status is right, and no zombie is left."""
    done = subprocess.run(
        program("orphans", "stress", mode),
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["wrong"] == []
    assert report["zombies"] == []
    assert report["children"] == {}
    assert report["reaped"] >= 800


# -- procwork monitor as PID 1 ---------------------------------------------------


def _unshare_prefix() -> list[str]:
    """The unshare command that works here, or skip the test saying why not."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare(1) is not installed: no new pid namespace here")
    reasons = []
    for extra in ([], ["--user", "--map-root-user"]):
        prefix = [unshare, *extra, "--pid", "--fork", "--mount-proc", "--kill-child"]
        try:
            probe = subprocess.run(
                [*prefix, "true"], capture_output=True, text=True, timeout=20
            )
        except subprocess.TimeoutExpired:
            reasons.append(f"{' '.join(prefix)} true: no answer in 20 s")
            continue
        if probe.returncode == 0:
            return prefix
        reasons.append(f"{' '.join(prefix)} true: {probe.stderr.strip()}")
    pytest.skip(
        "unshare --pid --fork --mount-proc is not permitted on this machine: "
        + "; ".join(reasons)
    )


def _children_of(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.extend(int(p) for p in f.read().split())
    except OSError:
        pass
    return found


def _state(pid: int) -> str | None:
    """The state letter of ``pid`` (``Z`` for a zombie), None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except OSError:
        return None


MONITOR_CONFIG = """
[monitor]
summary_every = 0
http = false
max_load = false

# Three grandchildren left behind every 0.1 s: when sh exits they are
# re-parented to PID 1. The kill of sh's process group makes the first a
# zombie at once; the other two have left the group (in 0.02 s, most likely)
# for sessions of their own, and end a little later: only all_children reaps
# them. The check fails so that each run is logged (and counted).
[[check]]
name = "orphans"
command = [
    "sh", "-c",
    "sleep 1 & setsid sleep 0.05 & setsid sleep 0.05 & sleep 0.02; exit 1",
]
every = 0.1

# Fails every 0.5 s, and its action has priority "critical" (the default):
# it runs when the check starts failing, then every repeat_every.
[[check]]
name = "watch"
command = ["{python}", "-c", "raise SystemExit(1)"]
every = 0.5
repeat_every = 0.5
on_failure = ["{python}", "-c", "print('fixed')"]
"""


@pytest.mark.e2e
@pytest.mark.slow
def test_procwork_monitor_as_pid_1_reaps_the_orphans_of_its_checks(
    tmp_path: Path,
) -> None:
    """In a new pid namespace, a check leaving three orphans every 0.1 s for 4 s
    (over a hundred in all): the monitor's zombies stay a handful, its critical
    actions keep starting, and it stops cleanly."""
    prefix = _unshare_prefix()
    config = tmp_path / "monitor.toml"
    config.write_text(MONITOR_CONFIG)
    stdout = (tmp_path / "stdout").open("w+")
    outer = subprocess.Popen(
        [*prefix, PY, "-m", "procwork", "monitor", str(config), "--duration", "4"],
        cwd=ROOT,
        env=child_env(),
        stdout=stdout,
        stderr=subprocess.STDOUT,
    )
    monitor: int | None = None
    try:
        deadline = time.monotonic() + 20
        while monitor is None and time.monotonic() < deadline:
            monitor = next(iter(_children_of(outer.pid)), None)
            time.sleep(0.01)
        assert monitor is not None, "unshare started no child within 20 s"
        most_zombies = 0
        deadline = time.monotonic() + 60
        while outer.poll() is None and time.monotonic() < deadline:
            states = [_state(pid) for pid in _children_of(monitor)]
            zombies = states.count("Z")
            most_zombies = max(most_zombies, zombies)
            time.sleep(0.02)
        assert outer.wait(timeout=30) == 0
    finally:
        for pid in (monitor, outer.pid):
            if pid is not None and _state(pid) is not None:
                os.kill(pid, 9)
        if outer.poll() is None:
            outer.wait(timeout=10)
        stdout.seek(0)
        output = stdout.read()
        stdout.close()
    # Each failed run left three orphans to PID 1.
    assert output.count("check orphans failed: exited 1") >= 15, output
    assert most_zombies < 10, output
    assert output.count("check watch: action exited 0") >= 3, output
    assert "monitor stopped" in output
    assert "Traceback" not in output


@pytest.mark.slow
def test_procwork_run_as_a_containers_entrypoint_reaps_what_its_command_orphans() -> (
    None
):
    """``procwork run -- CMD`` as PID 1: the 30 grandchildren CMD leaves
    behind, half of them leading their own session, are reaped while CMD
    still runs."""
    prefix = _unshare_prefix()
    done = subprocess.run(
        [*prefix, PY, "-m", "procwork", "run", "--", *program("orphaning_entrypoint")],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == "zombies of PID 1: 0\n", done.stdout + done.stderr
