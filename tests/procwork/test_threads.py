"""Threads: procwork is called from the thread that runs the reactor.

Each test name is a sentence of the specification. Twisted's reactor is not
thread-safe; a call from another thread raises
:class:`untwisted.ForeignThreadError` before anything is started, and says how
to hand the call over. In this process the global reactor is driven by the
main thread (through untwisted); a reactor that a program runs itself, in a
thread of its own, is tested in a child Python.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import procwork
import untwisted
from procwork.supervisor import ServiceSpec, Supervisor
from tests.support import (
    PY,
    cpu_load,
    fd_table,
    my_children,
    no_load_limit,
    observing,
    opened_since,
    program_child,
    raised_in_thread,
    run_program,
    wait,
)
from untwisted import ForeignThreadError

# untwisted's driver owns the global reactor here, so its message is the one.
DRIVEN_ELSEWHERE = (
    r"\(\) called from thread \d+, but the reactor is driven by thread \d+; "
    r"hand the work to that thread with reactor.callFromThread\(\) instead$"
)


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[procwork.Scheduler]:
    """No fd, child, scheduler slot or logged failure is left by a test."""
    with no_load_limit() as scheduler:
        untwisted.tick()  # the main thread now drives the global reactor
        wait(procwork.run(["true"]))
        fds, children = fd_table(), set(my_children())
        failures: list[dict[str, Any]] = []
        with observing(
            lambda event: failures.append(event) if "log_failure" in event else None
        ):
            yield scheduler
            wait(procwork.run(["true"]))  # one more turn: late errors get logged
        assert failures == [], "an error was logged"
        assert opened_since(fds) == {}, "a file descriptor leaked"
        assert set(my_children()) <= children, "a child was left behind"
        assert scheduler.running == 0 and scheduler.queued == 0


def test_run_from_a_thread_that_does_not_drive_the_reactor_raises_ForeignThreadError(
    nothing_left_behind: procwork.Scheduler,
) -> None:
    scheduler = nothing_left_behind
    started = scheduler.started
    error = raised_in_thread(lambda: procwork.run(["echo", "hi"]))
    with pytest.raises(ForeignThreadError, match=rf"^procwork.run{DRIVEN_ELSEWHERE}"):
        raise error  # type: ignore[misc]
    assert scheduler.started == started, "something was started"


def test_spawn_from_another_thread_raises_ForeignThreadError_and_starts_nothing(
    nothing_left_behind: procwork.Scheduler,
) -> None:
    scheduler = nothing_left_behind
    started = scheduler.started
    error = raised_in_thread(lambda: procwork.spawn(["sleep", "30"]))
    with pytest.raises(ForeignThreadError, match=rf"^procwork.spawn{DRIVEN_ELSEWHERE}"):
        raise error  # type: ignore[misc]
    assert scheduler.started == started, "something was started"


def test_a_critical_run_from_another_thread_is_refused_too() -> None:
    """A critical run bypasses the queue; it does not bypass the check."""
    error = raised_in_thread(lambda: procwork.run(["true"], priority="critical"))
    assert isinstance(error, ForeignThreadError)


def test_changing_a_schedulers_cap_from_another_thread_raises_ForeignThreadError(
    nothing_left_behind: procwork.Scheduler,
) -> None:
    """A higher cap would start waiting runs then and there."""
    scheduler = nothing_left_behind
    cap = scheduler.max_running
    error = raised_in_thread(lambda: scheduler.set_max_running(cap + 1))
    with pytest.raises(
        ForeignThreadError, match=rf"^Scheduler.set_max_running{DRIVEN_ELSEWHERE}"
    ):
        raise error  # type: ignore[misc]
    assert scheduler.max_running == cap


@pytest.mark.parametrize(
    ("method", "call"),
    [
        ("write", lambda proc: proc.write(b"x")),
        ("close_stdin", lambda proc: proc.close_stdin()),
        ("readline", lambda proc: proc.readline()),
        ("signal", lambda proc: proc.signal("TERM")),
        ("signal_group", lambda proc: proc.signal_group("TERM")),
        ("terminate", lambda proc: proc.terminate()),
        ("kill", lambda proc: proc.kill()),
        ("wait", lambda proc: proc.wait()),
    ],
)
def test_a_process_handle_used_from_another_thread_raises_ForeignThreadError(
    method: str, call: Callable[[procwork.Process], object]
) -> None:
    proc = procwork.spawn(["sleep", "30"], priority="critical")
    try:
        error = raised_in_thread(lambda: call(proc))
        with pytest.raises(
            ForeignThreadError, match=rf"^Process.{method}{DRIVEN_ELSEWHERE}"
        ):
            raise error  # type: ignore[misc]
        assert proc.state == "running"
    finally:
        assert wait(proc.kill()).signal == 9


@pytest.mark.parametrize(
    ("method", "call"),
    [
        ("add", lambda sup: sup.add(ServiceSpec("other", [PY, "-c", "pass"]))),
        ("start", lambda sup: sup.start()),
        ("start_service", lambda sup: sup.start_service("idle")),
        ("stop", lambda sup: sup.stop()),
        ("stop_service", lambda sup: sup.stop_service("idle")),
        ("restart", lambda sup: sup.restart("idle")),
        ("remove", lambda sup: sup.remove("idle")),
        ("status", lambda sup: sup.status()),
        ("wait_for", lambda sup: sup.wait_for("idle", "RUNNING")),
    ],
)
def test_a_supervisor_called_from_another_thread_raises_ForeignThreadError(
    method: str, call: Callable[[Supervisor], object]
) -> None:
    supervisor = Supervisor()
    supervisor.add(ServiceSpec("idle", [PY, "-c", "pass"]))
    error = raised_in_thread(lambda: call(supervisor))
    with pytest.raises(
        ForeignThreadError, match=rf"^Supervisor.{method}{DRIVEN_ELSEWHERE}"
    ):
        raise error  # type: ignore[misc]
    assert [s.state.value for s in supervisor.status().values()] == ["STOPPED"]
    assert supervisor.specs() == [ServiceSpec("idle", [PY, "-c", "pass"])]


@pytest.mark.slow
def test_a_thread_hammering_the_api_while_the_main_thread_runs_processes_never_gets_in(
    nothing_left_behind: procwork.Scheduler,
) -> None:
    """Thousands of calls from a thread, at every moment of the main thread's
    runs (waiting in epoll, spawning, reaping, between runs): each one is
    refused, and the main thread's runs all give their right result."""
    scheduler = nothing_left_behind
    started = scheduler.started
    done = threading.Event()
    outcomes: Counter[str] = Counter()
    surprises: list[BaseException] = []
    calls: list[Callable[[], object]] = [
        lambda: procwork.run(["true"]),
        lambda: procwork.spawn(["true"], priority="critical"),
        lambda: procwork.run(["true"], timeout=5, input=b"x"),
        lambda: scheduler.set_max_running(scheduler.max_running),
    ]

    def hammer() -> None:
        i = 0
        while not done.is_set():
            try:
                calls[i % len(calls)]()
            except ForeignThreadError:
                outcomes["refused"] += 1
            except BaseException as e:
                surprises.append(e)
            else:
                outcomes["let in"] += 1
            i += 1

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    runs = 0
    try:
        while runs < 300 or outcomes["refused"] < 2000:
            assert runs < 5000, "the thread made too few calls"
            result = wait(procwork.run(["echo", str(runs)]), 30)
            assert result.stdout == f"{runs}\n".encode()
            runs += 1
    finally:
        done.set()
        thread.join(30)
    assert not thread.is_alive()
    assert surprises == []
    assert set(outcomes) == {"refused"}
    assert scheduler.started == started + runs


# -- a reactor the program runs itself, in its own thread: in a child Python -------


@pytest.mark.slow
def test_a_reactor_run_by_the_program_in_its_own_thread_is_protected_too() -> None:
    """untwisted never started that reactor; Twisted knows its thread."""
    child = run_program("threads", "own-reactor-thread")
    assert child.returncode == 0, child.stderr
    lines = child.stdout.splitlines()
    refusal = (
        r"() called from thread 'MainThread', but the reactor runs in thread "
        r"'Thread-1 (run)'; call it from that thread, or hand the call over with "
        r"reactor.callFromThread() (threads.blockingCallFromThread() to wait "
        r"for its result)"
    )
    assert lines == [
        f"refused: procwork.run{refusal}",
        f"refused: procwork.spawn{refusal}",
        f"refused: Scheduler.set_max_running{refusal}",
        "handed over: yes",
        "started: 1",
        "stopped: True",
    ]
    assert "Unhandled" not in child.stderr


@pytest.mark.slow
def test_a_first_caller_that_ended_leaves_its_runs_to_the_thread_that_drives() -> None:
    """The reactor was never started: once the first caller has ended, the
    next thread takes it over and finishes what the first one started."""
    child = run_program("threads", "first-caller-ended")
    assert child.returncode == 0, child.stderr
    assert child.stdout.splitlines() == ["hi", "['refused']"]


@pytest.mark.slow
def test_while_the_first_caller_lives_every_other_thread_is_refused_even_main() -> None:
    """It could call again at any moment: two threads would race in Twisted."""
    child = run_program("threads", "first-caller-lives")
    assert child.returncode == 0, child.stderr
    lines = child.stdout.splitlines()
    driven = (
        r"\(\) called from thread \d+, but the reactor is driven by thread \d+; "
        r"hand the work to that thread with reactor.callFromThread\(\) instead$"
    )
    assert [line.split("(")[0] for line in lines[:3]] == [
        "refused: procwork.run",
        "refused: untwisted.run",
        "refused: untwisted.tick",
    ]
    for line in lines[:3]:
        assert re.search(driven, line), line
    assert lines[3:] == ["b'mine\\n'"]


@pytest.mark.slow
def test_a_reactor_started_by_a_thread_that_ended_says_so_to_the_next_caller() -> None:
    child = run_program("threads", "started-by-an-ended-thread")
    assert child.returncode == 0, child.stderr
    assert re.fullmatch(
        r"untwisted.tick\(\) called from thread \d+, but the reactor is driven by "
        r"thread \d+, which has ended; a reactor it started cannot be driven by "
        r"another thread: drive it from one thread for the whole program\n",
        child.stdout,
    )


@pytest.mark.slow
def test_the_programs_own_reactor_thread_is_allowed_even_if_another_called_first() -> (
    None
):
    """Twisted's I/O thread is the one that runs the loop, whoever claimed
    the reactor before reactor.run()."""
    child = run_program("threads", "own-thread-after-a-first-call")
    assert child.returncode == 0, child.stderr
    assert child.stdout.splitlines() == [
        "refused: procwork.run() called from thread 'MainThread'",
        "handed over: yes",
        "stopped: True",
    ]
    assert "Unhandled" not in child.stderr


# -- the owner is decided at the first call, under load: in child Pythons ----------


@pytest.mark.slow
def test_foreign_calls_after_a_first_call_that_ran_no_reactor_are_all_refused() -> None:
    """The owner is the first caller even when its call returned at once
    (untwisted.run of a result in hand used to leave the reactor ownerless,
    and a thread calling procwork then got in: runs that never finished and
    slots never freed). Under two CPU spinners, in fresh programs so that
    the window after the first call is hit each time: no call is let in, no
    slot is left taken, every run of the owner gives its right output."""
    kinds = ["untwisted.run", "untwisted.add", "clockwork.wrap"]
    kinds.append("Scheduler.set_max_running")
    total: Counter[str] = Counter()
    with cpu_load(2):
        for kind in kinds * 2:
            with program_child("threads", "hammered", kind) as child:
                out, err = child.communicate(timeout=60)
            assert child.returncode == 0, err
            assert "Unhandled" not in err and "not registered" not in err, err
            counts = json.loads(out)
            assert counts["let in"] == 0, (kind, counts)
            assert counts["surprises"] == [], (kind, counts)
            assert counts["joined"] and counts["wrong"] == 0, (kind, counts)
            assert counts["running"] == counts["queued"] == 0, (kind, counts)
            assert counts["started"] == counts["runs"] + 1, (kind, counts)
            total["refused"] += counts["refused"]
            total["runs"] += counts["runs"]
    assert total["refused"] >= 8 * 1000 and total["runs"] >= 8 * 50
