"""The scheduler: a concurrency cap, a priority queue and a load gate.

Each test name is a sentence of the specification. Unit tests run the
:class:`procwork.Scheduler` on a ``task.Clock`` with fake jobs and a fake
load source, so admission and re-checks are exact; a few tests then check
the same with real processes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task
from twisted.internet.defer import CancelledError

import procwork
from procwork import Priority, ProcessFailed, Scheduler
from tests.support import PY, wait

# Real-process tests here are not about the machine's load.
pytestmark = pytest.mark.usefixtures("no_load_gate")


class FakeLoad:
    """A load source the test switches between overloaded and not."""

    def __init__(self, reason: str | None = None) -> None:
        self.reason = reason
        self.reads = 0

    def overloaded(self) -> str | None:
        self.reads += 1
        return self.reason


class Job:
    """A fake job: records its start in ``started``; ``end()`` finishes it."""

    def __init__(
        self, scheduler: Scheduler, name: str, priority: str, started: list[str]
    ) -> None:
        self.scheduler = scheduler
        self.name = name
        self.priority = Priority[priority.upper()]
        self._started = started

    def _admitted(self) -> None:
        self._started.append(self.name)

    def end(self) -> None:
        self.scheduler.finished(self)


class Bench:
    """A scheduler on a Clock, and helpers to submit fake jobs to it."""

    def __init__(self, **kwargs: Any) -> None:
        self.clock = task.Clock()
        self.load = FakeLoad()
        kwargs.setdefault("load", self.load)
        self.scheduler = Scheduler(self.clock, **kwargs)
        self.started: list[str] = []
        self.jobs: dict[str, Job] = {}

    def submit(self, *names: str, priority: str = "normal") -> None:
        for name in names:
            job = Job(self.scheduler, name, priority, self.started)
            self.jobs[name] = job
            self.scheduler.submit(job)

    def end(self, *names: str) -> None:
        for name in names:
            self.jobs[name].end()


# -- the cap and the queue -------------------------------------------------------------


def test_at_most_max_running_jobs_run_and_the_rest_wait_in_order() -> None:
    bench = Bench(max_running=2)
    bench.submit("a", "b", "c", "d")
    assert bench.started == ["a", "b"]
    assert (bench.scheduler.running, bench.scheduler.queued) == (2, 2)
    bench.end("b")
    assert bench.started == ["a", "b", "c"]
    bench.end("a", "c")
    assert bench.started == ["a", "b", "c", "d"]
    bench.end("d")
    assert (bench.scheduler.running, bench.scheduler.queued) == (0, 0)


def test_queued_jobs_start_in_priority_order_then_first_come_first_served() -> None:
    bench = Bench(max_running=1)
    bench.submit("blocker")
    bench.submit("low1", priority="low")
    bench.submit("normal1")
    bench.submit("high1", priority="high")
    bench.submit("normal2")
    bench.submit("low2", priority="low")
    bench.submit("high2", priority="high")
    for name in ["blocker", "high1", "high2", "normal1", "normal2", "low1"]:
        bench.end(name)
    assert bench.started == [
        "blocker",
        "high1",
        "high2",
        "normal1",
        "normal2",
        "low1",
        "low2",
    ]


def test_a_higher_cap_admits_waiting_jobs_at_once() -> None:
    bench = Bench(max_running=1)
    bench.submit("a", "b", "c")
    bench.scheduler.set_max_running(3)
    assert bench.started == ["a", "b", "c"]
    with pytest.raises(ValueError, match=r"max_running must be an int >= 1, not 0"):
        bench.scheduler.set_max_running(0)


def test_a_withdrawn_job_never_starts() -> None:
    bench = Bench(max_running=1)
    bench.submit("a", "b", "c")
    assert bench.scheduler.withdraw(bench.jobs["b"])
    assert not bench.scheduler.withdraw(bench.jobs["b"])  # not queued any more
    assert bench.scheduler.queued == 1
    bench.end("a")
    assert bench.started == ["a", "c"]


def test_the_default_cap_suits_the_machine() -> None:
    assert Scheduler(task.Clock()).max_running == max(8, 4 * (os.cpu_count() or 1))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_running": 0}, r"Scheduler\(max_running=0\): must be an int >= 1"),
        ({"min_running": -1}, r"Scheduler\(min_running=-1\): must be an int >= 0"),
        ({"load_interval": 0}, r"Scheduler\(load_interval=0\): must be a.* > 0"),
    ],
)
def test_a_scheduler_refuses_unusable_limits(kwargs: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Scheduler(task.Clock(), **kwargs)


def test_jobs_that_end_inside_their_own_start_do_not_nest_admissions() -> None:
    """A child that exits at once can be reaped inside its own start; then
    ten thousand of them in a row must not recurse ten thousand deep."""
    bench = Bench(max_running=1)

    class Instant(Job):
        def _admitted(self) -> None:
            super()._admitted()
            self.end()

    bench.submit("blocker")
    for i in range(10_000):
        bench.scheduler.submit(
            Instant(bench.scheduler, str(i), "normal", bench.started)
        )
    assert bench.scheduler.queued == 10_000
    bench.end("blocker")
    assert len(bench.started) == 10_001
    assert (bench.scheduler.running, bench.scheduler.queued) == (0, 0)


# -- the critical lane -----------------------------------------------------------------


def test_a_critical_job_starts_at_once_despite_full_cap_long_queue_and_high_load() -> (
    None
):
    bench = Bench(max_running=1, min_running=0)
    bench.submit("running")
    bench.submit("w1", "w2", priority="high")
    bench.load.reason = "load 9.00 per core > 2"
    bench.submit("critical", priority="critical")
    assert bench.started == ["running", "critical"]
    assert (bench.scheduler.running, bench.scheduler.queued) == (2, 2)
    assert bench.scheduler.stats()["critical_running"] == 1


def test_critical_jobs_do_not_take_places_under_the_cap() -> None:
    bench = Bench(max_running=1)
    bench.submit("c1", "c2", priority="critical")
    bench.submit("n1", "n2")
    assert bench.started == ["c1", "c2", "n1"]
    bench.end("c1", "c2")  # ending a critical job admits nobody
    assert bench.started == ["c1", "c2", "n1"]
    bench.end("n1")
    assert bench.started == ["c1", "c2", "n1", "n2"]


# -- the load gate ---------------------------------------------------------------------


def test_under_overload_normal_and_low_jobs_wait_and_high_ones_obey_only_the_cap() -> (
    None
):
    bench = Bench(max_running=3, min_running=0, load_interval=1)
    bench.load.reason = "load 5.00 per core > 2"
    bench.submit("n")
    bench.submit("l", priority="low")
    bench.submit("h1", "h2", "h3", "h4", priority="high")
    assert bench.started == ["h1", "h2", "h3"]
    bench.end("h1", "h2", "h3")
    assert bench.started == ["h1", "h2", "h3", "h4"]
    assert bench.scheduler.waiting_for_load == "load 5.00 per core > 2"
    bench.end("h4")
    assert bench.started == ["h1", "h2", "h3", "h4"]


def test_when_the_load_drops_the_waiting_jobs_start_at_the_next_reading() -> None:
    bench = Bench(max_running=5, min_running=0, load_interval=2)
    bench.load.reason = "CPU pressure 90% > 50%"
    bench.submit("a", "b")
    assert bench.started == []
    bench.load.reason = None
    bench.clock.advance(1.5)
    assert bench.started == []  # not re-read yet
    bench.clock.advance(0.5)
    assert bench.started == ["a", "b"]
    assert bench.scheduler.waiting_for_load is None
    assert not bench.clock.getDelayedCalls()  # nothing waits: no more readings


def test_min_running_jobs_still_run_under_overload_so_the_queue_keeps_moving() -> None:
    bench = Bench(max_running=8, min_running=1)
    bench.load.reason = "load 5.00 per core > 2"
    bench.submit("a", "b", "c")
    assert bench.started == ["a"]
    bench.end("a")
    assert bench.started == ["a", "b"]
    bench.end("b")
    assert bench.started == ["a", "b", "c"]


def test_the_load_is_read_at_most_once_per_interval_and_only_while_jobs_wait() -> None:
    bench = Bench(max_running=8, min_running=0, load_interval=1)
    bench.submit("a", "b", "c")  # nothing waits: the load is read once, then cached
    assert bench.load.reads == 1
    bench.clock.advance(10)
    assert bench.load.reads == 1  # nobody waits: no polling
    bench.load.reason = "busy"
    bench.submit("d")
    assert bench.load.reads == 2
    bench.clock.pump([1] * 5)
    assert bench.load.reads == 7
    bench.scheduler.withdraw(bench.jobs["d"])
    bench.clock.pump([1] * 5)
    assert bench.load.reads == 7  # the queue is empty: readings stop


def test_running_and_queued_counts_are_exposed() -> None:
    bench = Bench(max_running=1)
    bench.submit("a", "b")
    bench.submit("c", priority="critical")
    assert bench.scheduler.stats() == {
        "running": 2,
        "queued": 1,
        "critical_running": 1,
        "max_running": 1,
        "started": 2,
        "waiting_for_load": None,
    }
    assert repr(bench.scheduler).startswith(
        "<Scheduler running=2 queued=1 max_running=1"
    )


# -- SystemLoad ------------------------------------------------------------------------


def fake_proc(tmp_path: Path, loadavg: str, pressure: str | None = None) -> str:
    (tmp_path / "loadavg").write_text(loadavg)
    if pressure is not None:
        (tmp_path / "pressure").mkdir()
        (tmp_path / "pressure" / "cpu").write_text(pressure)
    return str(tmp_path)


def test_SystemLoad_is_overloaded_above_max_load_per_core(tmp_path: Path) -> None:
    cores = os.cpu_count() or 1
    root = fake_proc(tmp_path, f"{3.0 * cores:.2f} 1.0 1.0 1/100 999\n")
    assert procwork.SystemLoad(max_load=2.0, proc_root=root).overloaded() == (
        "load 3.00 per core > 2"
    )
    assert procwork.SystemLoad(max_load=4.0, proc_root=root).overloaded() is None


def test_SystemLoad_reads_cpu_pressure_when_asked(tmp_path: Path) -> None:
    root = fake_proc(
        tmp_path,
        "0.00 0.00 0.00 1/100 999\n",
        "some avg10=75.50 avg60=10.00 avg300=2.00 total=1\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
    )
    load = procwork.SystemLoad(max_load=None, max_cpu_pressure=50, proc_root=root)
    assert load.overloaded() == "CPU pressure 76% > 50%"
    assert procwork.SystemLoad(max_cpu_pressure=80, proc_root=root).overloaded() is None


def test_SystemLoad_without_proc_files_is_never_overloaded(tmp_path: Path) -> None:
    load = procwork.SystemLoad(
        max_load=0.001, max_cpu_pressure=0.001, proc_root=str(tmp_path)
    )
    assert load.overloaded() is None


def test_NoLoadLimit_is_never_overloaded() -> None:
    assert procwork.NoLoadLimit().overloaded() is None


# -- queued processes on a fake clock --------------------------------------------------


def full_scheduler() -> tuple[task.Clock, Scheduler, Job]:
    """A Clock scheduler whose one place is taken by a fake job."""
    clock = task.Clock()
    scheduler = Scheduler(clock, max_running=1, load=procwork.NoLoadLimit())
    blocker = Job(scheduler, "blocker", "normal", [])
    scheduler.submit(blocker)
    return clock, scheduler, blocker


def test_a_run_that_times_out_while_queued_never_starts_and_says_so() -> None:
    clock, scheduler, _ = full_scheduler()
    d = procwork.run(["echo", "late"], timeout=5, scheduler=scheduler)
    assert scheduler.queued == 1
    clock.advance(4.5)
    assert not d.called
    clock.advance(0.5)
    result = wait(d)
    assert result.timed_out and not result.ok
    assert result.returncode is None and result.pid is None
    assert result.duration == 0
    assert result.describe() == "timed out after 5 s while queued, never started"
    assert scheduler.queued == 0


def test_check_True_raises_ProcessFailed_for_a_run_that_timed_out_while_queued() -> (
    None
):
    clock, scheduler, _ = full_scheduler()
    d = procwork.run(["echo", "late"], timeout=2, check=True, scheduler=scheduler)
    clock.advance(2)
    with pytest.raises(
        ProcessFailed,
        match=r"^'echo late' timed out after 2 s while queued, never started$",
    ):
        wait(d)


def test_a_run_cancelled_while_queued_is_withdrawn_and_never_starts() -> None:
    clock, scheduler, blocker = full_scheduler()
    started: list[str] = []
    scheduler.submit(Job(scheduler, "after", "normal", started))
    d = procwork.run(["echo", "never"], timeout=5, scheduler=scheduler)
    assert scheduler.queued == 2
    d.cancel()
    with pytest.raises(CancelledError):
        wait(d)
    assert scheduler.queued == 1
    blocker.end()
    assert started == ["after"]  # the cancelled run was skipped
    assert not clock.getDelayedCalls()  # and its timeout timer is gone


def test_a_pending_readline_ends_when_the_process_times_out_while_queued() -> None:
    clock, scheduler, _ = full_scheduler()
    proc = procwork.spawn(["echo", "late"], timeout=5, scheduler=scheduler)
    line = proc.readline()
    clock.advance(5)
    assert wait(line) == b""
    assert proc.state == "timed out"


def test_a_pending_readline_ends_when_a_queued_process_is_killed() -> None:
    _, scheduler, _ = full_scheduler()
    proc = procwork.spawn(["echo", "never"], scheduler=scheduler)
    line = proc.readline()
    assert wait(proc.kill()).describe() == "never started"
    assert wait(line) == b""
    assert proc.state == "cancelled"


def test_a_pending_readline_ends_when_a_queued_wait_is_cancelled() -> None:
    _, scheduler, _ = full_scheduler()
    proc = procwork.spawn(["echo", "never"], scheduler=scheduler)
    line = proc.readline()
    waiting = proc.wait()
    waiting.cancel()
    with pytest.raises(CancelledError, match="'echo' was cancelled while queued"):
        wait(waiting)
    assert wait(line) == b""
    assert proc.state == "cancelled"


# -- real processes --------------------------------------------------------------------


def nice_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(")")[2].split()[16])  # field 19 of stat


def test_low_priority_children_run_niced() -> None:
    """A low-priority child runs 10 steps nicer than we do; a normal one as nice."""
    # A busy machine must not queue them.
    scheduler = Scheduler(load=procwork.NoLoadLimit())
    low = procwork.spawn(["sleep", "30"], priority="low", scheduler=scheduler)
    normal = procwork.spawn(["sleep", "30"], scheduler=scheduler)
    try:
        assert low.pid is not None and normal.pid is not None
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        assert nice_of(normal.pid) == ours
        assert nice_of(low.pid) == min(19, ours + 10)
    finally:
        wait(low.kill())
        wait(normal.kill())


def test_a_critical_spawn_is_running_before_spawn_returns_whatever_the_queue() -> None:
    load = FakeLoad("load 9.00 per core > 2")
    scheduler = Scheduler(max_running=1, min_running=1, load=load)
    blocker = procwork.spawn(["sleep", "30"], scheduler=scheduler)
    waiting = [procwork.run(["true"], scheduler=scheduler) for _ in range(5)]
    assert (scheduler.running, scheduler.queued) == (1, 5)
    critical = procwork.spawn(["sleep", "30"], priority="critical", scheduler=scheduler)
    assert critical.pid is not None and critical.state == "running"
    assert (scheduler.running, scheduler.queued) == (2, 5)
    wait(critical.kill())
    wait(blocker.kill())
    load.reason = None
    assert [wait(d).ok for d in waiting] == [True] * 5
    assert (scheduler.running, scheduler.queued) == (0, 0)


@pytest.mark.slow
def test_real_runs_respect_the_cap() -> None:
    scheduler = Scheduler(max_running=2, load=procwork.NoLoadLimit())
    most = [0]

    def sample(_: object) -> None:
        most[0] = max(most[0], scheduler.running)

    procs = [
        procwork.spawn(
            [PY, "-c", "import time; print('up', flush=True); time.sleep(0.1)"],
            scheduler=scheduler,
            on_stdout=sample,
        )
        for _ in range(6)
    ]
    assert (scheduler.running, scheduler.queued) == (2, 4)
    results = [wait(p.wait()) for p in procs]
    assert all(r.ok for r in results)
    assert sum(1 for r in results if r.queued > 0.05) >= 4  # they waited their turn
    assert most[0] == 2
    assert (scheduler.running, scheduler.queued) == (0, 0)
    assert scheduler.started == 6
