"""Threads: procwork is called from the thread that runs the reactor.

Each test name is a sentence of the specification. Twisted's reactor is not
thread-safe; a call from another thread raises
:class:`untwisted.ForeignThreadError` before anything is started, and says how
to hand the call over. In this process the global reactor is driven by the
main thread (through untwisted); a reactor that a program runs itself, in a
thread of its own, is tested in a child Python.
"""

from __future__ import annotations

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
    fd_table,
    my_children,
    no_load_limit,
    observing,
    opened_since,
    raised_in_thread,
    run_child,
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

OWN_REACTOR_THREAD = """
    import threading
    import procwork, untwisted
    from twisted.internet import reactor, threads

    up = threading.Event()
    reactor.callWhenRunning(up.set)
    thread = threading.Thread(
        target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True
    )
    thread.start()
    assert up.wait(30)
    for call in (
        lambda: procwork.run(["echo", "no"]),
        lambda: procwork.spawn(["echo", "no"]),
        lambda: procwork.scheduler().set_max_running(4),
    ):
        try:
            call()
        except untwisted.ForeignThreadError as e:
            print("refused:", e)
    # The way to do it: hand the call to the reactor's thread.
    result = threads.blockingCallFromThread(reactor, procwork.run, ["echo", "yes"])
    print("handed over:", result.stdout.decode().strip())
    print("started:", procwork.scheduler().started)
    reactor.callFromThread(reactor.stop)
    thread.join(30)
    print("stopped:", not thread.is_alive())
"""


def test_a_reactor_run_by_the_program_in_its_own_thread_is_protected_too() -> None:
    """untwisted never started that reactor; Twisted knows its thread."""
    child = run_child(OWN_REACTOR_THREAD)
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


def test_before_any_reactor_runs_any_thread_may_call_and_the_driver_finishes_it() -> (
    None
):
    child = run_child(
        """
        import threading
        import procwork, untwisted

        box = []
        start = lambda: box.append(procwork.run(["echo", "hi"]))
        thread = threading.Thread(target=start)
        thread.start()
        thread.join(30)
        print(untwisted.run(box[0], timeout=30).stdout.decode().strip())
        # run() of a result already in hand returns without starting the
        # reactor (the echo may have ended while it was being started): a
        # tick makes the main thread drive the reactor, and so own it.
        untwisted.tick()
        errors = []

        def late():
            try:
                procwork.run(["true"])
            except untwisted.ForeignThreadError:
                errors.append("refused")

        thread = threading.Thread(target=late)
        thread.start()
        thread.join(30)
        print(errors)
        """
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.splitlines() == ["hi", "['refused']"]
