"""clockwork: generator microthreads scheduled on a Twisted reactor.

Each test name is a sentence of the specification. Timing is tested on a
:class:`ClockReactor`, a fake whose time moves only when the worker waits (the
``worker`` fixture of ``conftest.py``), so it is exact and instant; a few tests
use the real reactor with loose bounds. The waits (``sleep``, ``every``,
``timeout``, ``gather``, ``first``) are ``test_waits.py``, deep stacks, long
tasks and the CPU of waiting ``test_scale.py``.
"""

from __future__ import annotations

import gc
import traceback
from collections.abc import Generator, Iterator
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred

import clockwork
import untwisted
from clockwork import Task, Timeout, Worker
from tests.support import ClockReactor, observing
from tests.support.routines import nest

Gen = Generator[Any, Any, Any]


# -- helpers -------------------------------------------------------------------


def names_of_frames_in_this_file(error: BaseException) -> list[str]:
    return [
        frame.name
        for frame in traceback.extract_tb(error.__traceback__)
        if frame.filename == __file__
    ]


# -- the worker: round robin, one step per tick -------------------------------------


def test_a_worker_works_until_its_work_is_done() -> None:
    done: list[int] = []

    def do_something() -> Gen:
        done.append(123)
        yield

    w = Worker()
    w.assign(do_something())
    w.work()
    assert done == [123]


def test_tasks_of_a_worker_take_turns_one_step_per_tick(worker: Worker) -> None:
    """The user's original clockwork: a finite and an infinite task interleave."""
    data: list[Any] = []

    def letters() -> Gen:
        data.append("a")
        yield
        data.append("z")
        yield

    def numbers() -> Gen:
        i = 0
        while True:
            i += 1
            data.append(i)
            yield

    worker.assign(letters())
    worker.assign(numbers())
    worker.tick()
    assert data == ["a"]
    worker.tick()
    assert data == ["a", 1]
    worker.tick()
    assert data == ["a", 1, "z"]
    worker.tick()
    assert data == ["a", 1, "z", 2]
    # The next step ends "letters": it leaves the queue, nothing is added.
    worker.tick()
    assert data == ["a", 1, "z", 2]
    worker.tick()
    assert data == ["a", 1, "z", 2, 3]
    worker.tick()
    assert data == ["a", 1, "z", 2, 3, 4]


def test_a_finished_task_leaves_the_queue_on_the_step_where_it_ends(
    worker: Worker,
) -> None:
    steps: list[str] = []

    def once(name: str) -> Gen:
        steps.append(name)
        yield

    first, second = worker.assign(once("first")), worker.assign(once("second"))
    worker.tick()
    worker.tick()
    assert steps == ["first", "second"] and not first.done
    worker.tick()
    assert first.done and not second.done
    worker.tick()
    assert second.done and worker.tasks == frozenset()


def test_a_task_runs_nothing_until_its_worker_is_ticked(worker: Worker) -> None:
    started: list[bool] = []

    def job() -> Gen:
        started.append(True)
        yield

    job_task = worker.assign(job())
    assert started == [] and not job_task.done
    worker.tick()
    assert started == [True]


def test_tasks_of_a_worker_you_create_advance_only_when_it_ticks_or_works() -> None:
    steps: list[int] = []

    def job() -> Gen:
        steps.append(1)
        yield
        steps.append(2)

    w = Worker()
    job_task = w.assign(job())
    untwisted.run(clockwork.sleep(0.01))  # the reactor runs; w's tasks do not
    assert steps == []
    w.tick()
    assert steps == [1]
    w.work(timeout=30)
    assert steps == [1, 2] and job_task.done


def test_tasks_of_the_default_worker_advance_whenever_the_reactor_runs() -> None:
    steps: list[int] = []

    def job() -> Gen:
        steps.append(1)
        yield
        steps.append(2)

    job_task = clockwork.spawn(job())
    untwisted.run(clockwork.sleep(0.01))
    assert steps == [1, 2] and job_task.done


def test_calling_a_subroutine_or_waiting_on_a_fired_deferred_keeps_the_turn(
    worker: Worker,
) -> None:
    """Only a bare ``yield`` (or waiting for something unfinished) ends a step."""
    data: list[str] = []

    def helper() -> Gen:
        data.append("helper")
        return "h"
        yield

    def job() -> Gen:
        data.append((yield helper()))
        data.append((yield defer.succeed("fired")))
        yield
        data.append("next step")

    worker.assign(job())
    worker.tick()
    assert data == ["helper", "h", "fired"]
    worker.tick()
    assert data == ["helper", "h", "fired", "next step"]


def test_work_returns_once_every_task_has_finished(worker: Worker) -> None:
    def job(n: int) -> Gen:
        for _ in range(n):
            yield
        return n

    tasks = [worker.assign(job(n)) for n in range(5)]
    worker.work()
    assert [t.result() for t in tasks] == [0, 1, 2, 3, 4]
    assert worker.tasks == frozenset()


def test_work_with_a_timeout_cancels_unfinished_tasks_and_raises_Timeout(
    worker: Worker,
) -> None:
    def forever() -> Gen:
        while True:
            yield

    busy = worker.assign(forever())
    with pytest.raises(Timeout, match=r"work\(\) did not finish within 0.05 s"):
        worker.work(timeout=0.05)
    assert busy.done
    with pytest.raises(CancelledError):
        busy.result()


def test_work_with_a_timeout_expires_while_every_task_waits() -> None:
    w = Worker()
    waiting = w.assign(iter_once(Deferred()))
    with pytest.raises(Timeout):
        w.work(timeout=0.01)
    assert waiting.done


def iter_once(x: object) -> Gen:
    yield x


# -- tasks ------------------------------------------------------------------------


def test_assign_returns_a_Task_named_after_its_generator(worker: Worker) -> None:
    def job() -> Gen:
        yield

    job_task = worker.assign(job())
    assert isinstance(job_task, Task)
    assert job_task.name.endswith("job")
    assert worker.assign(job(), name="custom").name == "custom"
    assert repr(worker.assign(job(), name="j")) == "<Task 'j' ready>"


def test_a_task_result_is_its_return_value_and_its_deferred_fires_with_it(
    worker: Worker,
) -> None:
    def job() -> Gen:
        yield
        return "value"

    job_task = worker.assign(job())
    assert not job_task.done
    with pytest.raises(
        RuntimeError, match=r"has not finished; wait for task\.deferred"
    ):
        job_task.result()
    worker.work()
    assert job_task.done and job_task.result() == "value"
    assert untwisted.run(job_task.deferred) == "value"
    assert repr(job_task).endswith("done>")


def test_a_failed_task_result_raises_its_exception(worker: Worker) -> None:
    def job() -> Gen:
        yield
        raise LookupError("gone")

    job_task = worker.assign(job())
    worker.work()
    assert repr(job_task).endswith("failed with LookupError>")
    with pytest.raises(LookupError, match="gone"):
        job_task.result()
    with pytest.raises(LookupError, match="gone"):
        untwisted.run(job_task.deferred)


def test_a_failure_nobody_looked_at_is_logged_when_the_task_is_collected(
    worker: Worker,
) -> None:
    """Like a Deferred's unhandled error; a cancelled task is not a failure."""
    from twisted.logger import LogEvent

    def job() -> Gen:
        yield
        raise LookupError("nobody asked")

    events: list[LogEvent] = []
    with observing(events.append):
        worker.assign(job(), name="ignored")
        worker.assign(nest(0, [], Deferred()), name="cancelled")
        for _ in range(3):
            worker.tick()
        (waiting,) = worker.tasks
        waiting.cancel()
        del waiting
        gc.collect()
    logged = [e for e in events if "Unobserved failure" in e.get("log_format", "")]
    assert [e["name"] for e in logged] == ["ignored"]
    assert logged[0]["log_failure"].check(LookupError)


def test_current_worker_is_the_worker_running_the_task(worker: Worker) -> None:
    seen: list[Worker] = []

    def job() -> Gen:
        seen.append(clockwork.current_worker())
        yield

    worker.assign(job())
    worker.work()
    assert seen == [worker]
    assert clockwork.current_worker() is clockwork.default_worker()


# -- subroutines ------------------------------------------------------------------


def test_yielding_a_generator_calls_it_and_evaluates_to_its_return_value(
    worker: Worker,
) -> None:
    def add(a: int, b: int) -> Gen:
        yield
        return a + b

    def job() -> Gen:
        three = yield add(1, 2)
        seven = yield add(three, 4)
        return seven

    job_task = worker.assign(job())
    worker.work()
    assert job_task.result() == 7


def test_an_exception_in_a_subroutine_propagates_to_its_caller_like_a_call(
    worker: Worker,
) -> None:
    def inner() -> Gen:
        yield
        raise ValueError("inner failed")

    def outer() -> Gen:
        try:
            yield inner()
        except ValueError as e:
            return f"caught: {e}"

    job_task = worker.assign(outer())
    worker.work()
    assert job_task.result() == "caught: inner failed"


def test_an_uncaught_exception_traceback_shows_the_users_frames_not_the_scheduler(
    worker: Worker,
) -> None:
    def inner() -> Gen:
        yield
        raise ValueError("boom")

    def middle() -> Gen:
        yield inner()

    def outer() -> Gen:
        yield middle()

    job_task = worker.assign(outer())
    worker.work()
    for blocking_call in (job_task.result, lambda: clockwork.wrap(outer())):
        with pytest.raises(ValueError, match="boom") as caught:
            blocking_call()
        frames = traceback.extract_tb(caught.value.__traceback__)
        assert names_of_frames_in_this_file(caught.value)[-3:] == [
            "outer",
            "middle",
            "inner",
        ]
        assert frames[-1].line == 'raise ValueError("boom")'
        assert not [f for f in frames if f.filename.endswith("_worker.py")]
        library = [f for f in frames if f.filename != __file__]
        assert len(library) <= 5, traceback.format_list(library)


# -- waiting on Deferreds, coroutines, awaitables ---------------------------------


def test_yielding_a_deferred_waits_for_it_and_evaluates_to_its_result(
    worker: Worker,
) -> None:
    d: Deferred[str] = Deferred()

    def job() -> Gen:
        return (yield d)

    job_task = worker.assign(job())
    worker.tick()
    worker.tick()
    assert not job_task.done
    d.callback("fired")
    worker.tick()
    assert job_task.result() == "fired"


def test_a_failed_deferred_raises_its_exception_in_the_task(worker: Worker) -> None:
    def job() -> Gen:
        try:
            yield defer.fail(KeyError("k"))
        except KeyError:
            return "caught"

    job_task = worker.assign(job())
    worker.work()
    assert job_task.result() == "caught"


def test_yielding_a_coroutine_waits_for_it(worker: Worker) -> None:
    async def double(n: int) -> int:
        await clockwork.sleep(1)
        return n * 2

    def job() -> Gen:
        return (yield double(21))

    job_task = worker.assign(job())
    worker.work()
    assert job_task.result() == 42


def test_an_async_def_coroutine_can_be_a_task(
    worker: Worker, clock: ClockReactor
) -> None:
    async def job(seconds: float) -> float:
        await clockwork.sleep(seconds)
        await clockwork.sleep(seconds)
        return clock.seconds()

    job_task = worker.assign(job(3))
    worker.work()
    assert job_task.result() == 6
    assert clockwork.wrap(job(0)) >= 0  # on the default worker too


def test_a_coroutine_uses_its_tasks_worker_after_its_first_await_too(
    worker: Worker,
) -> None:
    seen: list[Worker] = []

    def where() -> Gen:
        seen.append(clockwork.current_worker())
        yield

    async def job() -> None:
        await clockwork.sleep(1)
        seen.append(clockwork.current_worker())
        await clockwork.gather(where())

    def caller() -> Gen:
        yield job()

    worker.assign(job())
    worker.assign(caller())
    worker.work()
    assert seen == [worker] * 4


def test_assign_rejects_what_is_neither_a_generator_nor_a_coroutine(
    worker: Worker,
) -> None:
    with pytest.raises(TypeError, match="a task must be a generator or a coroutine"):
        worker.assign(lambda: None)  # type: ignore[arg-type]


def test_yielding_an_unknown_value_raises_TypeError_in_the_generator_naming_it(
    worker: Worker,
) -> None:
    def job() -> Gen:
        yield 42

    job_task = worker.assign(job(), name="job")
    worker.work()
    with pytest.raises(
        TypeError,
        match=r"^task 'job' yielded 42; a clockwork generator may yield None "
        r"\(give up control\), a generator \(call it\), or a Deferred, coroutine "
        r"or awaitable \(wait for it\)$",
    ):
        job_task.result()


def test_the_generator_may_catch_that_TypeError_and_go_on(worker: Worker) -> None:
    def job() -> Gen:
        try:
            yield "not a thing to yield"
        except TypeError as e:
            assert "yielded 'not a thing to yield'" in str(e)
        return (yield defer.succeed("went on"))

    job_task = worker.assign(job())
    worker.work()
    assert job_task.result() == "went on"


# -- cancel ------------------------------------------------------------------------


def test_cancel_closes_the_stack_innermost_first_so_every_finally_runs(
    worker: Worker,
) -> None:
    log: list[int] = []
    job_task = worker.assign(nest(3, log, Deferred()))
    worker.tick()
    assert repr(job_task).endswith("waiting>")
    assert job_task.cancel() is True
    assert log == [0, 1, 2, 3]
    assert job_task.done
    with pytest.raises(CancelledError, match="was cancelled"):
        job_task.result()


def test_cancel_cancels_the_deferred_the_task_waits_on(worker: Worker) -> None:
    cancelled: list[object] = []
    waited: Deferred[None] = Deferred(cancelled.append)
    job_task = worker.assign(nest(2, [], waited))
    worker.tick()
    job_task.cancel()
    assert cancelled == [waited]


def test_cancel_of_a_finished_task_returns_False(worker: Worker) -> None:
    job_task = worker.assign(iter_once(None))
    worker.work()
    assert job_task.cancel() is False
    assert job_task.result() is None


def test_a_task_cancelled_before_its_first_step_never_runs(worker: Worker) -> None:
    ran: list[bool] = []

    def job() -> Gen:
        ran.append(True)
        yield

    job_task = worker.assign(job())
    job_task.cancel()
    worker.work()
    assert ran == [] and job_task.done


def test_a_task_may_cancel_itself_and_its_finally_runs_after_the_step(
    worker: Worker,
) -> None:
    log: list[str] = []
    me: list[Task] = []

    def job() -> Gen:
        try:
            me[0].cancel()
            log.append("step goes on")
            yield
            log.append("never")
        finally:
            log.append("finally")

    me.append(worker.assign(job()))
    worker.work()
    assert log == ["step goes on", "finally"]
    assert me[0].done


def test_cancelling_a_tasks_deferred_cancels_the_task(worker: Worker) -> None:
    log: list[int] = []
    job_task = worker.assign(nest(1, log, Deferred()))
    worker.tick()
    job_task.deferred.cancel()
    assert log == [0, 1] and job_task.done


def test_a_task_may_cancel_another_that_waits_and_so_close_its_stack(
    worker: Worker,
) -> None:
    log: list[int] = []
    victim = worker.assign(nest(2, log, Deferred()))

    def killer() -> Gen:
        yield
        victim.cancel()
        return log[:]

    killer_task = worker.assign(killer())
    worker.work()
    assert killer_task.result() == [0, 1, 2]


# -- what a task holds: when_finished, current_task ---------------------------------
#
# A resource (a clockwork.net connection) is tied to the task that made it:
# the task says when it ends, and how.


def test_when_finished_hears_a_return_a_failure_and_a_cancel_before_the_deferred(
    worker: Worker,
) -> None:
    """None for a return, the exception for a failure, CancelledError for a
    cancel; always before the task's Deferred fires."""

    def returns() -> Gen:
        yield

    def fails() -> Gen:
        yield
        raise KeyError("lost")

    tasks = [worker.assign(returns()), worker.assign(fails())]
    tasks.append(worker.assign(nest(1, [], Deferred())))
    heard: list[list[str]] = [[], [], []]

    def listen(task: Task, log: list[str]) -> None:
        def finished(error: BaseException | None) -> None:
            log.append(type(error).__name__)

        def fired(result: object) -> None:
            log.append("deferred")

        task.when_finished(finished)
        task.deferred.addBoth(fired)

    for task, log in zip(tasks, heard, strict=True):
        listen(task, log)
    worker.tick()
    worker.tick()
    worker.tick()
    tasks[2].cancel()
    worker.work()
    assert heard == [
        ["NoneType", "deferred"],
        ["KeyError", "deferred"],
        ["CancelledError", "deferred"],
    ]


def test_when_finished_on_a_finished_task_is_called_at_once(worker: Worker) -> None:
    task = worker.assign(nest(0, [], defer.succeed(1)))
    worker.work()
    heard: list[BaseException | None] = []
    task.when_finished(heard.append)
    assert heard == [None]


def test_a_forgotten_when_finished_callback_is_not_called(worker: Worker) -> None:
    """A resource released before its task ends forgets its callback, so a
    task that lives for ever does not collect them."""
    heard: list[BaseException | None] = []
    task = worker.assign(nest(0, [], Deferred()))
    worker.tick()
    forget = task.when_finished(heard.append)
    forget()
    task.cancel()
    assert heard == []


def test_a_when_finished_callback_that_raises_is_logged_and_the_task_ends_anyway(
    worker: Worker,
) -> None:
    events: list[dict[str, Any]] = []
    task = worker.assign(nest(0, [], Deferred()))
    worker.tick()
    task.when_finished(lambda error: 1 / 0)
    with observing(events.append):
        task.cancel()
    assert task.done
    [event] = [e for e in events if "when_finished" in e.get("log_format", "")]
    assert event["log_failure"].check(ZeroDivisionError)


def test_current_task_is_the_task_being_stepped_and_None_between_steps(
    worker: Worker,
) -> None:
    from clockwork._worker import current_task

    seen: list[Task | None] = []

    def job() -> Gen:
        seen.append(current_task())
        yield
        seen.append(current_task())

    task = worker.assign(job())
    worker.work()
    assert seen == [task, task]
    assert current_task() is None


def test_current_task_of_an_async_def_task_is_its_task_after_an_await_too(
    worker: Worker,
) -> None:
    """A coroutine resumes from a Deferred's callback, outside any step."""
    from clockwork._worker import current_task

    seen: list[Task | None] = []

    async def job() -> None:
        seen.append(current_task())
        await clockwork.sleep(1)
        seen.append(current_task())

    task = worker.assign(job())
    worker.work()
    assert seen == [task, task]


# -- the default worker: spawn, tick, work, wrap --------------------------------------


def test_spawn_tick_and_work_use_the_default_worker() -> None:
    steps: list[int] = []

    def job() -> Gen:
        for i in range(3):
            steps.append(i)
            yield
        return "spawned"

    spawned = clockwork.spawn(job(), name="spawned")
    assert spawned in clockwork.default_worker().tasks
    clockwork.tick()
    assert steps[:1] == [0]
    clockwork.work(timeout=30)
    assert spawned.result() == "spawned" and steps == [0, 1, 2]


def test_wrap_runs_a_generator_from_blocking_code_and_returns_its_value() -> None:
    data: list[int] = []

    def routine() -> Gen:
        for x in range(4):
            data.append(x * x)
            yield
        return "squares"

    assert clockwork.wrap(routine()) == "squares"
    assert data == [0, 1, 4, 9]


def test_untwisted_run_of_a_generator_runs_it_as_a_default_worker_task() -> None:
    def job() -> Gen:
        yield
        return clockwork.current_worker()

    assert untwisted.run(job()) is clockwork.default_worker()


def test_work_called_from_inside_a_task_raises_ReentrancyError_telling_to_yield(
    worker: Worker,
) -> None:
    def job() -> Gen:
        yield
        worker.work()

    job_task = worker.assign(job())
    worker.work()
    with pytest.raises(
        untwisted.ReentrancyError,
        match=r"^clockwork.Worker.work\(\) called from inside the reactor .* use "
        r"'yield' in a generator",
    ):
        job_task.result()
    assert worker.tasks == frozenset()


def test_wrap_called_from_inside_a_task_raises_ReentrancyError() -> None:
    def job() -> Gen:
        yield
        clockwork.wrap(iter_once(None))

    with pytest.raises(untwisted.ReentrancyError, match="'yield'"):
        clockwork.wrap(job())


# -- flatten and encapsulate ---------------------------------------------------------


def test_flatten_iterates_over_the_plain_values_of_a_nested_generator_stack() -> None:
    def inner() -> Gen:
        yield "b"
        yield "c"
        return "inner's value"

    def outer() -> Gen:
        yield "a"
        value = yield inner()
        yield value
        yield "d"

    assert list(clockwork.flatten(outer())) == ["a", "b", "c", "inner's value", "d"]


def test_flatten_propagates_exceptions_through_the_stack_like_calls() -> None:
    def inner() -> Gen:
        yield 1
        raise KeyError("inner")

    def outer() -> Gen:
        try:
            yield inner()
        except KeyError:
            yield "caught"
        yield inner()

    values = clockwork.flatten(outer())
    assert [next(values), next(values)] == [1, "caught"]
    assert next(values) == 1
    with pytest.raises(KeyError, match="inner"):
        next(values)


def test_encapsulate_makes_a_generator_function_return_a_flat_iterator() -> None:
    def pair(x: int) -> Gen:
        yield x
        yield x

    @clockwork.encapsulate
    def pairs(n: int) -> Gen:
        """Each number twice."""
        for i in range(n):
            yield pair(i)

    flat: Iterator[Any] = pairs(3)
    assert list(flat) == [0, 0, 1, 1, 2, 2]
    assert pairs.__name__ == "pairs" and pairs.__doc__ == "Each number twice."


# -- untwisted's seam: generators are clockwork tasks ---------------------------------


def test_untwisted_add_of_a_generator_returns_a_deferred_for_its_task() -> None:
    def job() -> Gen:
        yield
        return "via the seam"

    d = untwisted.add(job())
    assert isinstance(d, Deferred)
    assert untwisted.run(d) == "via the seam"
