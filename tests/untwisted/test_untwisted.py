"""untwisted: Twisted's reactor driven from ordinary blocking code.

Each test name is a sentence of the specification. Unit tests drive a
:class:`ClockReactor`, a fake whose time moves only when it is iterated, so
timing is exact; the rest use the real global reactor, and behaviour that
needs its signal handlers or interpreter exit runs in a child Python process.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

import pytest
from twisted.internet import defer, task
from twisted.internet.defer import Deferred

import clockwork
import untwisted
from tests.support import (
    ClockReactor,
    program_child,
    raised_in_thread,
    readable,
    run_child,
    run_program,
)
from untwisted import ForeignThreadError, ReentrancyError, Timeout

# -- helpers -------------------------------------------------------------------


def fake_driver() -> tuple[ClockReactor, untwisted.lowlevel.Driver, list[object]]:
    reactor = ClockReactor()
    hooks: list[object] = []
    return (
        reactor,
        untwisted.lowlevel.Driver(reactor, register_atexit=hooks.append),
        hooks,
    )


def run_in_thread(fn: Callable[[], object]) -> BaseException | None:
    """Call ``fn`` in a new thread (joined within 10 s); what it raised."""
    return raised_in_thread(fn, 10)


def signal_child_when_ready(scenario: str, *signums: int) -> tuple[int, str, str]:
    """Start the ``scenario`` of tests/programs/driver.py; when it prints
    ``ready``, send it ``signums``.

    It prints ``ready`` just before it blocks, inside the ``try`` that
    expects the signal. Every wait is bounded. Returns the child's exit code,
    stdout and stderr.
    """
    with program_child("driver", scenario) as child:
        assert child.stdout is not None
        assert readable(child.stdout, 30), "the child never printed 'ready'"
        first_line = child.stdout.readline()
        assert first_line == "ready\n", first_line
        for signum in signums:
            # Give the child a moment to get into the blocking call (a signal
            # a little early raises just the same, a few lines earlier).
            time.sleep(0.2)
            child.send_signal(signum)
        out, err = child.communicate(timeout=30)
    return child.returncode, first_line + out, err


async def double_later(n: int) -> int:
    await task.deferLater(_global_reactor(), 0.001, lambda: None)
    return n * 2


def _global_reactor() -> Any:
    from twisted.internet import reactor

    return reactor


# -- the exceptions ------------------------------------------------------------


def test_Timeout_is_the_builtin_TimeoutError_shared_by_clockwork() -> None:
    """``except TimeoutError`` catches it, and clockwork raises the same class."""
    assert issubclass(Timeout, TimeoutError)
    assert clockwork.Timeout is Timeout


def test_ReentrancyError_and_ForeignThreadError_are_RuntimeErrors() -> None:
    assert issubclass(ReentrancyError, RuntimeError)
    assert issubclass(ForeignThreadError, RuntimeError)


# -- starting the reactor lazily -----------------------------------------------


def test_importing_untwisted_and_clockwork_installs_no_reactor() -> None:
    """A program can still choose its reactor after importing them."""
    child = run_child(
        """
        import sys
        import untwisted, clockwork
        print("twisted.internet.reactor" in sys.modules)
        """
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout == "False\n"


def test_the_reactor_is_started_the_first_time_it_is_driven_not_before() -> None:
    reactor, driver, hooks = fake_driver()
    d = driver.add(Deferred())
    assert not reactor.running
    driver.tick()
    assert reactor.running
    assert not d.called
    assert hooks == [driver.shutdown]  # the atexit hook, registered once
    driver.tick()
    assert hooks == [driver.shutdown]


def test_signal_handlers_are_installed_only_when_started_on_the_main_thread() -> None:
    reactor, driver, _ = fake_driver()
    driver.tick()
    assert reactor.install_signal_handlers is True

    reactor, driver, _ = fake_driver()
    assert run_in_thread(driver.tick) is None
    assert reactor.install_signal_handlers is False


def test_shutdown_stops_the_reactor_once_so_its_shutdown_triggers_fire() -> None:
    reactor, driver, _ = fake_driver()
    driver.shutdown()  # never started: nothing to stop
    assert not reactor.stopped
    driver.tick()
    driver.shutdown()
    assert reactor.stopped and not reactor.running
    driver.shutdown()  # a second call is harmless


# -- tick ------------------------------------------------------------------------


def test_tick_runs_the_timers_that_are_due_without_waiting() -> None:
    reactor, driver, _ = fake_driver()
    fired: list[str] = []
    reactor.callLater(0, fired.append, "now")
    reactor.callLater(5, fired.append, "later")
    driver.tick()
    assert fired == ["now"]
    assert reactor.seconds() == 0


def test_tick_waits_at_most_its_timeout_when_nothing_is_due() -> None:
    reactor, driver, _ = fake_driver()
    fired: list[float] = []
    reactor.callLater(10, lambda: fired.append(reactor.seconds()))
    driver.tick(3)
    assert reactor.seconds() == 3 and fired == []


def test_tick_waits_less_than_its_timeout_when_a_timer_falls_due_sooner() -> None:
    reactor, driver, _ = fake_driver()
    reactor.callLater(2, lambda: None)
    driver.tick(30)
    assert reactor.iterations[-1] == 2


def test_tick_with_timeout_None_waits_until_the_next_timer() -> None:
    reactor, driver, _ = fake_driver()
    fired: list[float] = []
    reactor.callLater(7, lambda: fired.append(reactor.seconds()))
    driver.tick(None)  # waits 7 s, the timer runs on the next iteration
    driver.tick()
    assert fired == [7]


def test_tick_on_the_real_reactor_returns_after_about_its_timeout_when_idle() -> None:
    started = time.monotonic()
    untwisted.tick(0.05)
    assert time.monotonic() - started < 5


def test_tick_rejects_a_negative_timeout() -> None:
    with pytest.raises(ValueError, match=r"timeout=-1.*must be >= 0"):
        untwisted.tick(-1)


# -- add ---------------------------------------------------------------------------


def test_add_of_a_deferred_returns_that_deferred() -> None:
    d: Deferred[int] = Deferred()
    assert untwisted.add(d) is d


def test_add_starts_a_coroutine_which_advances_as_the_reactor_ticks() -> None:
    d = untwisted.add(double_later(21))
    assert isinstance(d, Deferred)
    deadline = time.monotonic() + 10
    while not d.called and time.monotonic() < deadline:
        untwisted.tick(0.01)
    assert untwisted.run(d) == 42


def test_add_starts_a_clockwork_generator_which_advances_as_the_reactor_ticks() -> None:
    steps: list[int] = []

    def job() -> Generator[Any, Any, str]:
        steps.append(1)
        yield
        steps.append(2)
        return "done"

    d = untwisted.add(job())
    assert steps == []  # started, but nothing runs until the reactor does
    deadline = time.monotonic() + 10
    while not d.called and time.monotonic() < deadline:
        untwisted.tick()
    assert steps == [1, 2]
    assert untwisted.run(d) == "done"


def test_add_of_something_that_cannot_be_waited_for_raises_TypeError_naming_it() -> (
    None
):
    with pytest.raises(TypeError, match=r"cannot wait for 'text' \(str\)"):
        untwisted.add("text")


# -- run ----------------------------------------------------------------------------


def test_run_returns_the_result_of_a_deferred() -> None:
    assert untwisted.run(defer.succeed(1)) == 1
    later = task.deferLater(_global_reactor(), 0.001, lambda: "later")
    assert untwisted.run(later) == "later"


def test_run_returns_the_result_of_a_coroutine() -> None:
    assert untwisted.run(double_later(4)) == 8


def test_run_returns_the_result_of_another_awaitable() -> None:
    class Awaitable:
        def __await__(self) -> Generator[Any, Any, str]:
            return double_later(5).__await__()  # type: ignore[return-value]

    assert untwisted.run(Awaitable()) == 10


def test_run_returns_the_result_of_a_clockwork_generator() -> None:
    def job() -> Generator[Any, Any, int]:
        yield
        value: int = yield double_later(3)
        return value + 1

    assert untwisted.run(job()) == 7


def test_run_raises_the_exception_of_what_it_waits_for() -> None:
    async def fail() -> None:
        await task.deferLater(_global_reactor(), 0, lambda: None)
        raise ZeroDivisionError("as if 1/0")

    with pytest.raises(ZeroDivisionError, match="as if 1/0"):
        untwisted.run(fail())
    with pytest.raises(KeyError):
        untwisted.run(defer.fail(KeyError("k")))


def test_run_can_be_called_any_number_of_times() -> None:
    for n in range(200):
        assert untwisted.run(double_later(n)) == 2 * n


def test_run_works_again_after_an_exception() -> None:
    with pytest.raises(ValueError):
        untwisted.run(defer.fail(ValueError()))
    assert untwisted.run(double_later(1)) == 2


def test_run_with_timeout_raises_Timeout_naming_what_it_waited_for() -> None:
    with pytest.raises(
        Timeout,
        match=r"^untwisted.run\(<Deferred>\) did not finish within 0.05 s; "
        r"it was cancelled$",
    ):
        untwisted.run(Deferred(), timeout=0.05)


def test_run_returns_normally_when_x_finishes_within_its_timeout() -> None:
    assert untwisted.run(double_later(2), timeout=30) == 4


def test_run_works_again_after_a_Timeout() -> None:
    with pytest.raises(Timeout):
        untwisted.run(Deferred(), timeout=0.01)
    assert untwisted.run(double_later(3)) == 6
    with pytest.raises(Timeout):
        untwisted.run(Deferred(), timeout=0)
    assert untwisted.run(double_later(4), timeout=30) == 8


def test_run_timeout_cancels_a_deferred_so_its_canceller_runs() -> None:
    cancelled: list[Deferred[None]] = []
    d: Deferred[None] = Deferred(cancelled.append)
    with pytest.raises(Timeout):
        untwisted.run(d, timeout=0.01)
    assert cancelled == [d]


def test_run_timeout_cancels_a_generator_so_its_finally_runs() -> None:
    log: list[str] = []

    def job() -> Generator[Any, Any, None]:
        try:
            yield Deferred()
        finally:
            log.append("finally")

    with pytest.raises(
        Timeout, match=r"^untwisted.run\(\S*job\(...\)\) did not finish"
    ):
        untwisted.run(job(), timeout=0.01)
    assert log == ["finally"]


def test_run_timeout_cancels_a_coroutine_so_its_finally_runs() -> None:
    log: list[str] = []
    cancelled: list[object] = []

    async def job() -> None:
        try:
            await Deferred(cancelled.append)
        finally:
            log.append("finally")

    with pytest.raises(Timeout):
        untwisted.run(job(), timeout=0.01)
    assert log == ["finally"]
    assert len(cancelled) == 1


def test_run_rejects_a_negative_timeout() -> None:
    with pytest.raises(ValueError, match=r"timeout=-0.5.*must be >= 0"):
        untwisted.run(defer.succeed(1), timeout=-0.5)


def test_run_of_something_that_cannot_be_waited_for_raises_TypeError_naming_it() -> (
    None
):
    with pytest.raises(TypeError, match=r"cannot wait for 42 \(int\): expected a"):
        untwisted.run(42)


# -- reentrancy and threads ------------------------------------------------------------

YIELD_INSTEAD = (
    r"called from inside the reactor \(a callback or a clockwork task\) would "
    r"wait on itself forever; use 'yield' in a generator or 'await' in "
    r"'async def' instead"
)


def test_run_from_a_reactor_callback_raises_ReentrancyError_telling_to_yield() -> None:
    called_back = task.deferLater(
        _global_reactor(), 0, lambda: untwisted.run(Deferred())
    )
    with pytest.raises(ReentrancyError, match=r"^untwisted.run\(\) " + YIELD_INSTEAD):
        untwisted.run(called_back)


def test_run_from_a_callback_raises_even_when_its_argument_has_fired() -> None:
    called_back = task.deferLater(
        _global_reactor(), 0, lambda: untwisted.run(defer.succeed(1))
    )
    with pytest.raises(ReentrancyError):
        untwisted.run(called_back)


def test_tick_from_a_reactor_callback_raises_ReentrancyError() -> None:
    called_back = task.deferLater(_global_reactor(), 0, untwisted.tick)
    with pytest.raises(ReentrancyError, match=r"^untwisted.tick\(\) " + YIELD_INSTEAD):
        untwisted.run(called_back)


def test_run_from_a_clockwork_task_raises_ReentrancyError_telling_to_yield() -> None:
    def job() -> Generator[Any, Any, None]:
        yield
        untwisted.run(Deferred())

    with pytest.raises(ReentrancyError, match=r"^untwisted.run\(\) " + YIELD_INSTEAD):
        clockwork.wrap(job())


def test_run_from_a_task_of_a_worker_you_made_raises_ReentrancyError() -> None:
    def job() -> Generator[Any, Any, None]:
        untwisted.run(defer.succeed(1))
        yield

    worker = clockwork.Worker()
    job_task = worker.assign(job())
    worker.work(timeout=30)
    with pytest.raises(ReentrancyError, match=YIELD_INSTEAD):
        job_task.result()


def test_add_may_be_called_from_inside_the_reactor() -> None:
    def start_another() -> Deferred[Any]:
        return untwisted.add(double_later(10))

    assert untwisted.run(task.deferLater(_global_reactor(), 0, start_another)) == 20


def test_run_from_a_thread_not_driving_the_reactor_raises_ForeignThreadError() -> None:
    untwisted.tick()  # the reactor is now driven by this (the main) thread
    error = run_in_thread(lambda: untwisted.run(defer.succeed(1)))
    assert isinstance(error, ForeignThreadError)
    with pytest.raises(
        ForeignThreadError,
        match=r"^untwisted.run\(\) called from thread \d+, but the reactor is "
        r"driven by thread \d+; hand the work to that thread with "
        r"reactor.callFromThread\(\) instead$",
    ):
        raise error


def test_tick_and_add_from_another_thread_raise_ForeignThreadError() -> None:
    untwisted.tick()
    assert isinstance(run_in_thread(untwisted.tick), ForeignThreadError)
    assert isinstance(
        run_in_thread(lambda: untwisted.add(Deferred())), ForeignThreadError
    )


def test_the_first_thread_to_call_owns_the_reactor_even_if_it_started_nothing() -> None:
    """A run() of a result in hand claims the reactor as a tick() does: no
    other thread may call while that thread lives."""
    _, driver, _ = fake_driver()
    claimed, finish = threading.Event(), threading.Event()

    def first() -> None:
        driver.run(defer.succeed(1))  # returns at once, the reactor not started
        claimed.set()
        finish.wait(30)

    thread = threading.Thread(target=first, daemon=True)
    thread.start()
    try:
        assert claimed.wait(30)
        with pytest.raises(ForeignThreadError, match=r"is driven by thread \d+;"):
            driver.run(defer.succeed(1))
        assert isinstance(run_in_thread(driver.tick), ForeignThreadError)
    finally:
        finish.set()
        thread.join(30)
    assert not thread.is_alive()


def test_a_first_thread_that_ended_before_the_reactor_started_hands_it_over() -> None:
    _, driver, _ = fake_driver()
    assert run_in_thread(lambda: driver.run(defer.succeed(1))) is None  # not started
    assert run_in_thread(driver.tick) is None  # takes over, starts and owns it
    with pytest.raises(ForeignThreadError, match=r", which has ended; "):
        driver.tick()  # that one ended too, but it had started the reactor


# -- signals and interpreter exit: in a child process --------------------------------


@pytest.mark.slow
def test_ctrl_c_in_run_raises_KeyboardInterrupt_and_a_later_run_works() -> None:
    code, out, err = signal_child_when_ready("ctrl-c-in-run", signal.SIGINT)
    assert code == 0, err
    assert out == "ready\nKeyboardInterrupt\n['job closed']\nNone\nquick\n"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "raised", "status"),
    [
        (signal.SIGINT, "KeyboardInterrupt", -signal.SIGINT),
        (signal.SIGTERM, "SystemExit", 128 + signal.SIGTERM),
    ],
    ids=["SIGINT", "SIGTERM"],
)
def test_a_signal_landing_in_a_finalizer_is_raised_after_it_not_lost(
    signum: signal.Signals, raised: str, status: int
) -> None:
    """Python drops an exception raised while a ``__del__`` runs: the
    handler lets the finalizer end and raises the signal's exception just
    after, so the program still ends of it (a SIGINT in Twisted 25.5's
    ``DebugInfo.__del__`` left a spawning program looping for ever)."""
    with program_child("finalizer_signal", signum.name) as child:
        out, err = child.communicate(timeout=30)
    assert out == f"raised after the finalizer: {raised}\n", err
    assert child.returncode == status
    assert "Exception ignored" not in err


@pytest.mark.slow
def test_sigterm_in_run_exits_through_SystemExit_so_finally_and_atexit_run() -> None:
    code, out, err = signal_child_when_ready("sigterm-in-run", signal.SIGTERM)
    assert out == "ready\nSystemExit 143\nfinally\natexit\n", err
    assert code == 128 + signal.SIGTERM


@pytest.mark.slow
def test_ctrl_c_in_clockwork_work_raises_KeyboardInterrupt_and_cancels_the_tasks() -> (
    None
):
    code, out, err = signal_child_when_ready("ctrl-c-in-work", signal.SIGINT)
    assert code == 0, err
    assert out == "ready\njob closed\nKeyboardInterrupt True\n"


@pytest.mark.slow
def test_a_second_ctrl_c_interrupts_a_task_stuck_in_a_busy_loop() -> None:
    """The first Ctrl-C waits for the step to end; the second one does not."""
    code, out, _ = signal_child_when_ready("busy-loop", signal.SIGINT, signal.SIGINT)
    assert code == 0
    assert out == "ready\nbusy closed\nKeyboardInterrupt\nNone\n"


def test_twisted_shutdown_triggers_fire_at_interpreter_exit() -> None:
    child = run_child(
        """
        import untwisted
        from twisted.internet import reactor, task
        for phase in ("before", "during", "after"):
            reactor.addSystemEventTrigger(phase, "shutdown", print, phase)
        print(untwisted.run(task.deferLater(reactor, 0.01, lambda: "ran")))
        print("end of script")
        """
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout == "ran\nend of script\nbefore\nduring\nafter\n"


def test_shutdown_triggers_do_not_fire_when_untwisted_never_started_the_reactor() -> (
    None
):
    child = run_child(
        """
        import untwisted
        from twisted.internet import defer, reactor
        reactor.addSystemEventTrigger("before", "shutdown", print, "before")
        print(untwisted.run(defer.succeed("fired")))
        """
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout == "fired\n"


@pytest.mark.slow
def test_run_in_a_program_is_repeatable_after_a_Timeout() -> None:
    child = run_child(
        """
        import untwisted, clockwork
        for attempt in range(3):
            try:
                untwisted.run(clockwork.sleep(10), timeout=0.02)
            except TimeoutError as e:
                print(type(e).__name__)
            print(untwisted.run(clockwork.sleep(0.001)))
        """
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout == "Timeout\nNone\n" * 3


def test_a_program_that_calls_its_own_reactor_run_can_use_clockwork_spawn_tasks() -> (
    None
):
    child = run_program("driver", "own-reactor-run")
    assert child.returncode == 0, child.stderr
    lines = child.stdout.splitlines()
    assert lines[0] == "[2, 4]"
    assert lines[1].startswith("ReentrancyError: untwisted.run() called ")
    assert "'yield'" in lines[1]
    assert lines[2] == "after reactor.run()"


@pytest.mark.slow
def test_a_reactor_first_driven_from_a_thread_belongs_to_that_thread() -> None:
    child = run_program("driver", "thread-first")
    assert child.returncode == 0, child.stderr
    assert child.stdout == "None\nForeignThreadError\n"


@pytest.mark.slow
def test_a_timed_out_run_waits_for_the_cleanups_its_cancel_started() -> None:
    """What cancelling set in motion (registered with linger) finishes before
    run() raises Timeout, so the blocking caller finds it done."""
    reactor = _global_reactor()
    driver = untwisted.lowlevel.default_driver()
    cleaned: list[str] = []

    def cancel(_: defer.Deferred[None]) -> None:
        cleanup = task.deferLater(reactor, 0.2, cleaned.append, "done")
        driver.linger(cleanup)

    with pytest.raises(untwisted.Timeout):
        untwisted.run(defer.Deferred(cancel), timeout=0.05)
    assert cleaned == ["done"]


def test_lingering_is_bounded_by_the_cleanup_timeout() -> None:
    """A cleanup that never finishes delays run()'s Timeout by at most
    cleanup_timeout, then the caller gets control back anyway."""
    reactor = ClockReactor()
    hooks: list[object] = []
    driver = untwisted.lowlevel.Driver(
        reactor, register_atexit=hooks.append, cleanup_timeout=0.1
    )
    driver.linger(defer.Deferred())
    reactor.callLater(3600, lambda: None)  # something to wait for
    started = time.monotonic()
    with pytest.raises(untwisted.Timeout):
        driver.run(defer.Deferred(), timeout=0.05)
    assert time.monotonic() - started < 5


@pytest.mark.slow
def test_run_raises_timeout_whatever_the_cancel_makes_of_its_argument() -> None:
    """On expiry run() raises Timeout even when the cancel fails x otherwise.

    ``gatherResults`` answers a cancel with a ``FirstError``; the caller still
    gets ``untwisted.Timeout``, with that failure as its cause.
    """
    from twisted.internet.defer import FirstError, gatherResults

    reactor, driver, _ = fake_driver()
    reactor.callLater(100, lambda: None)  # something to wait for until expiry
    gathered = gatherResults([Deferred[None](), Deferred[None]()], consumeErrors=True)
    with pytest.raises(untwisted.Timeout, match="did not finish within 5 s") as info:
        driver.run(gathered, timeout=5)
    assert isinstance(info.value.__cause__, FirstError)
