"""clockwork's waits: sleep and every, timeout, gather and first.

On a :class:`~tests.support.ClockReactor` (the ``worker`` fixture), whose
time moves only when the worker waits, so the timing is exact and instant.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred

import clockwork
import untwisted
from clockwork import Task, Timeout, Worker
from tests.support import ClockReactor
from tests.support.routines import nest

Gen = Generator[Any, Any, Any]


# -- sleep and every, on a fake clock ----------------------------------------------


def test_sleep_resumes_after_the_given_seconds(
    worker: Worker, clock: ClockReactor
) -> None:
    times: list[float] = []

    def job() -> Gen:
        yield clockwork.sleep(5)
        times.append(clock.seconds())
        yield clockwork.sleep(0.5)
        times.append(clock.seconds())

    worker.assign(job())
    worker.work()
    assert times == [5, 5.5]


def test_sleeping_tasks_wake_in_order_of_their_deadlines(
    worker: Worker, clock: ClockReactor
) -> None:
    woke: list[tuple[str, float]] = []

    def sleeper(name: str, seconds: float) -> Gen:
        yield clockwork.sleep(seconds)
        woke.append((name, clock.seconds()))

    worker.assign(sleeper("slow", 3))
    worker.assign(sleeper("fast", 1))
    worker.assign(sleeper("middle", 2))
    worker.work()
    assert woke == [("fast", 1), ("middle", 2), ("slow", 3)]


def test_sleep_rejects_negative_or_non_numeric_seconds() -> None:
    with pytest.raises(ValueError, match=r"seconds must be >= 0, not -1"):
        clockwork.sleep(-1)
    with pytest.raises(TypeError, match=r"seconds must be a number, not '1'"):
        clockwork.sleep("1")  # type: ignore[arg-type]


def stop_after(seconds: float, victim: list[Task]) -> Gen:
    yield clockwork.sleep(seconds)
    victim[0].cancel()


def test_every_calls_a_function_at_a_fixed_interval(
    worker: Worker, clock: ClockReactor
) -> None:
    calls: list[float] = []
    ticker = [worker.assign(clockwork.every(10, lambda: calls.append(clock.seconds())))]
    worker.assign(stop_after(35, ticker))
    worker.work()
    assert calls == [0, 10, 20, 30]


def test_every_runs_a_generator_function_as_a_subroutine_and_skips_missed_slots(
    worker: Worker, clock: ClockReactor
) -> None:
    """A call that overruns its slot delays the next call to the next grid point."""
    starts: list[float] = []

    def slow() -> Gen:
        starts.append(clock.seconds())
        yield clockwork.sleep(15)

    ticker = [worker.assign(clockwork.every(10, slow))]
    worker.assign(stop_after(65, ticker))
    worker.work()
    assert starts == [0, 20, 40, 60]


def test_every_waits_for_an_async_def_function(
    worker: Worker, clock: ClockReactor
) -> None:
    ends: list[float] = []

    async def fn() -> None:
        await clockwork.sleep(1)
        ends.append(clock.seconds())

    ticker = [worker.assign(clockwork.every(5, fn))]
    worker.assign(stop_after(12, ticker))
    worker.work()
    assert ends == [1, 6, 11]


def test_every_rejects_a_zero_interval() -> None:
    with pytest.raises(ValueError, match=r"every\(\): seconds must be > 0"):
        next(clockwork.every(0, lambda: None))


def test_sleep_and_every_on_the_real_reactor_take_about_the_time_asked() -> None:
    calls: list[int] = []

    def job() -> Gen:
        yield clockwork.sleep(0.02)
        ticker = clockwork.spawn(clockwork.every(0.01, lambda: calls.append(1)))
        while len(calls) < 3:
            yield clockwork.sleep(0.005)
        ticker.cancel()
        return "done"

    assert clockwork.wrap(job(), timeout=10) == "done"
    assert len(calls) >= 3


# -- timeout --------------------------------------------------------------------------


def test_timeout_returns_the_value_when_it_comes_in_time(worker: Worker) -> None:
    def quick() -> Gen:
        yield clockwork.sleep(1)
        return "quick"

    def job() -> Gen:
        return (yield clockwork.timeout(5, quick()))

    job_task = worker.assign(job())
    worker.work()
    assert job_task.result() == "quick"


def test_timeout_raises_Timeout_in_the_caller(
    worker: Worker, clock: ClockReactor
) -> None:
    def job() -> Gen:
        try:
            yield clockwork.timeout(2, nest(0, [], Deferred()))
        except TimeoutError as e:
            return type(e), str(e), clock.seconds()

    job_task = worker.assign(job())
    worker.work()
    kind, message, when = job_task.result()
    assert kind is Timeout and when == 2
    assert message.endswith("nest() did not finish within 2 s")


def test_timeout_closes_the_stack_innermost_first_and_cancels_the_awaited_one(
    worker: Worker,
) -> None:
    log: list[int] = []
    cancelled: list[object] = []
    waited: Deferred[None] = Deferred(cancelled.append)

    def job() -> Gen:
        with pytest.raises(Timeout):
            yield clockwork.timeout(1, nest(3, log, waited))
        return log[:]

    job_task = worker.assign(job())
    worker.work()
    assert job_task.result() == [0, 1, 2, 3]
    assert cancelled == [waited]


def test_timeout_of_a_deferred_cancels_it(worker: Worker) -> None:
    cancelled: list[object] = []
    waited: Deferred[None] = Deferred(cancelled.append)

    def job() -> Gen:
        with pytest.raises(Timeout, match="Deferred did not finish within 1 s"):
            yield clockwork.timeout(1, waited)

    job_task = worker.assign(job())
    worker.work()
    job_task.result()
    assert cancelled == [waited]


def test_a_cancel_of_the_caller_inside_a_timeout_is_not_reported_as_Timeout(
    worker: Worker,
) -> None:
    log: list[int] = []

    def job() -> Gen:
        yield clockwork.timeout(100, nest(1, log, Deferred()))

    job_task = worker.assign(job())
    worker.tick()  # job starts nest() as a task of the worker and waits
    worker.tick()  # nest() runs, and waits
    job_task.cancel()
    assert log == [0, 1]
    with pytest.raises(CancelledError):
        job_task.result()


def test_wrap_with_a_timeout_closes_the_generator_and_raises_Timeout() -> None:
    log: list[int] = []
    with pytest.raises(Timeout):
        clockwork.wrap(nest(2, log, Deferred()), timeout=0.01)
    assert log == [0, 1, 2]


# -- gather and first -----------------------------------------------------------------


def sleep_then(seconds: float, value: object, log: list[str] | None = None) -> Gen:
    try:
        yield clockwork.sleep(seconds)
        return value
    finally:
        if log is not None:
            log.append(f"{value} closed")


def test_gather_returns_the_results_in_the_order_given(
    worker: Worker, clock: ClockReactor
) -> None:
    def job() -> Gen:
        results = yield clockwork.gather(
            sleep_then(3, "slow"), defer.succeed("ready"), sleep_then(1, "fast")
        )
        return results, clock.seconds()

    job_task = worker.assign(job())
    worker.work()
    assert job_task.result() == (["slow", "ready", "fast"], 3)


def test_gather_of_nothing_is_an_empty_list() -> None:
    assert untwisted.run(clockwork.gather()) == []


def test_gather_raises_the_first_failure_and_cancels_the_others(
    worker: Worker,
) -> None:
    log: list[str] = []
    cancelled: list[object] = []

    def failing() -> Gen:
        yield clockwork.sleep(1)
        raise OSError("no such thing")

    def job() -> Gen:
        try:
            yield clockwork.gather(
                sleep_then(5, "a", log), failing(), Deferred(cancelled.append)
            )
        except OSError as e:
            return str(e)

    job_task = worker.assign(job())
    worker.work()
    assert job_task.result() == "no such thing"
    assert log == ["a closed"] and len(cancelled) == 1


def test_first_gives_index_and_result_of_the_first_to_finish_and_cancels_others(
    worker: Worker, clock: ClockReactor
) -> None:
    log: list[str] = []
    cancelled: list[object] = []

    def job() -> Gen:
        winner = yield clockwork.first(
            sleep_then(5, "slow", log),
            sleep_then(2, "fast"),
            Deferred(cancelled.append),
        )
        return winner, clock.seconds()

    job_task = worker.assign(job())
    worker.work()
    assert job_task.result() == ((1, "fast"), 2)
    assert log == ["slow closed"] and len(cancelled) == 1


def test_first_raises_when_the_first_to_finish_failed(worker: Worker) -> None:
    def job() -> Gen:
        with pytest.raises(ZeroDivisionError):
            yield clockwork.first(defer.fail(ZeroDivisionError()), sleep_then(1, "x"))
        return "raised"

    job_task = worker.assign(job())
    worker.work()
    assert job_task.result() == "raised"


def test_first_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="needs at least one thing to wait for"):
        clockwork.first()
