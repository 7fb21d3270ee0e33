"""The first clockwork's vocabulary, on the new implementation.

The user's original code (``yield Control``, ``yield Return(x)``, ``Value``,
``genwrap``, ``Input``/``Output``, ``Command``, ``Worker.doNextTask``) runs
unchanged; ``specs/clockwork_classic.md`` holds his own spec examples. These
tests pin the rest: edge cases, errors, no CPU while waiting, and the races of
waiting for answers, repeated many times. The first procwork's ``waitfor`` is
``tests/procwork/test_classic.py``.
"""

from __future__ import annotations

import random
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred

import clockwork
import untwisted
from clockwork import (
    Call,
    Command,
    Control,
    Each,
    Input,
    Output,
    Return,
    Value,
    Worker,
    genwrap,
    standalone,
)
from tests.support import (
    PY,
    ClockReactor,
    alive,
    drive_until,
    run_child,
    run_program,
    wait,
)

Gen = Generator[Any, Any, Any]

# These tests are not about load: a busy test machine must not queue them.
pytestmark = pytest.mark.usefixtures("no_load_gate")


# -- Control and Return ------------------------------------------------------------


def test_control_is_a_bare_yield_so_tasks_take_turns(worker: Worker) -> None:
    log: list[str] = []

    def task(name: str) -> Gen:
        for i in range(2):
            log.append(f"{name}{i}")
            yield Control

    worker.assign(task("a"))
    worker.assign(task("b"))
    worker.work()
    assert Control is None
    assert log == ["a0", "b0", "a1", "b1"]


def test_return_ends_the_routine_and_the_callers_yield_evaluates_to_its_value(
    worker: Worker,
) -> None:
    def sub() -> Gen:
        yield Control
        yield Return(41)
        raise AssertionError("a Return must end the routine")

    def caller() -> Gen:
        return (yield sub()) + 1

    task = worker.assign(caller())
    worker.work()
    assert task.result() == 42


def test_return_at_the_top_of_a_task_is_the_tasks_result(worker: Worker) -> None:
    def job() -> Gen:
        yield Return("result")

    task = worker.assign(job())
    worker.work()
    assert task.result() == "result"
    assert wait(task.deferred) == "result"
    assert clockwork.wrap(job()) == "result"


def test_return_closes_the_routine_at_once_so_its_finally_runs_first(
    worker: Worker,
) -> None:
    log: list[str] = []

    def sub() -> Gen:
        try:
            yield Return("value")
        finally:
            log.append("finally")

    def caller() -> Gen:
        value = yield sub()
        log.append(f"caller got {value}")

    worker.assign(caller())
    worker.work()
    assert log == ["finally", "caller got value"]


def test_an_error_raised_by_a_finally_at_return_goes_to_the_caller(
    worker: Worker,
) -> None:
    def sub() -> Gen:
        try:
            yield Return("lost")
        finally:
            raise ValueError("cleanup failed")

    def caller() -> Gen:
        try:
            yield sub()
        except ValueError as e:
            return f"caught {e}"

    task = worker.assign(caller())
    worker.work()
    assert task.result() == "caught cleanup failed"

    top = worker.assign(sub())
    worker.work()
    with pytest.raises(ValueError, match="cleanup failed"):
        top.result()


def test_a_routine_that_keeps_running_after_its_return_fails_in_its_caller(
    worker: Worker,
) -> None:
    """A routine that swallows GeneratorExit and yields on cannot return."""

    def stubborn() -> Gen:
        try:
            yield Return(1)
        except GeneratorExit:
            yield Control

    task = worker.assign(stubborn())
    worker.work()
    with pytest.raises(RuntimeError, match="ignored GeneratorExit"):
        task.result()


def test_return_after_waiting_on_a_deferred_returns_to_the_caller(
    worker: Worker, clock: ClockReactor
) -> None:
    def sub() -> Gen:
        yield clockwork.sleep(3)
        yield Return(clock.seconds())

    def caller() -> Gen:
        return (yield sub())

    task = worker.assign(caller())
    worker.work()
    assert task.result() == 3


def test_return_works_ten_thousand_levels_deep(worker: Worker) -> None:
    def depth(n: int) -> Gen:
        if n == 0:
            yield Return(0)
        yield Return((yield depth(n - 1)) + 1)

    task = worker.assign(depth(10_000))
    worker.work()
    assert task.result() == 10_000
    assert list(clockwork.flatten(depth(10_000))) == []
    assert list(genwrap(depth(10_000))) == []


def test_return_and_plain_return_mix_freely() -> None:
    def old(n: int) -> Gen:
        yield Control
        yield Return(n + 1)

    def new(n: int) -> Gen:
        yield
        return (yield old(n)) * 2

    def old_calling_new() -> Gen:
        yield Return((yield new(20)))

    assert clockwork.wrap(old_calling_new()) == 42


def test_flatten_returns_a_return_value_to_the_caller_and_produces_the_rest() -> None:
    def inner() -> Gen:
        yield "b"
        yield Return("returned")
        yield "never"

    def outer() -> Gen:
        yield "a"
        yield (yield inner())

    assert list(clockwork.flatten(outer())) == ["a", "b", "returned"]


def test_flatten_raises_an_error_of_a_finally_at_a_top_level_return() -> None:
    def top() -> Gen:
        try:
            yield Return(1)
        finally:
            raise ValueError("broken cleanup")

    with pytest.raises(ValueError, match="broken cleanup"):
        list(clockwork.flatten(top()))


# -- Call: the tail call -----------------------------------------------------------


def test_call_replaces_the_routine_and_its_result_goes_to_the_caller(
    worker: Worker,
) -> None:
    log: list[str] = []

    def replaced() -> Gen:
        try:
            yield Call(replacement())
            log.append("never resumed")
        finally:
            log.append("replaced closed")

    def replacement() -> Gen:
        log.append("replacement runs")
        yield Control
        return "from the replacement"

    def caller() -> Gen:
        return (yield replaced())

    task = worker.assign(caller())
    worker.work()
    assert task.result() == "from the replacement"
    assert log == ["replaced closed", "replacement runs"]


def test_a_chain_of_tail_calls_keeps_the_stack_one_routine_deep(
    worker: Worker,
) -> None:
    depths: list[int] = []

    def hop(n: int) -> Gen:
        depths.append(len(task._stack))
        if n == 0:
            return "landed"
        yield Call(hop(n - 1))

    task = worker.assign(hop(10_000))
    worker.work()
    assert task.result() == "landed"
    assert set(depths) == {1}


def test_call_of_a_deferred_waits_for_it_in_the_routines_place(
    worker: Worker,
) -> None:
    d: Deferred[str] = Deferred()

    def routine() -> Gen:
        yield Call(d)

    def caller() -> Gen:
        return (yield routine())

    task = worker.assign(caller())
    worker.tick()
    assert not task.done
    d.callback("fired")
    worker.work()
    assert task.result() == "fired"


def test_call_works_under_flatten_and_genwrap() -> None:
    def first() -> Gen:
        yield Value(1)
        yield Call(second())

    def second() -> Gen:
        yield Value(2)
        return "end"

    assert [getattr(v, "value", v) for v in clockwork.flatten(first())] == [1, 2]
    wrapped = genwrap(first())
    assert list(wrapped) == [1, 2]


# -- Value, Output and Input in a worker task ----------------------------------------


def test_a_value_or_output_gives_up_the_turn_and_the_step_returns_it(
    worker: Worker,
) -> None:
    log: list[str] = []

    def producer() -> Gen:
        sent = yield Value("v")
        log.append(f"producer got {sent}")
        yield Output("o")

    def other() -> Gen:
        log.append("other ran")
        yield Control

    worker.assign(producer())
    worker.assign(other())
    first = worker.doNextTask()
    assert isinstance(first, Value) and first.value == "v"
    assert worker.doNextTask() is None
    assert worker.tick() == Output("o")
    assert log == ["other ran", "producer got None"]


def test_an_input_makes_its_task_wait_until_answered_then_resumes_with_the_answer(
    worker: Worker,
) -> None:
    def deep() -> Gen:
        name = yield Input("name?", str)
        return f"hello, {name}"

    def top() -> Gen:
        return (yield deep())

    task = worker.assign(top())
    question = worker.doNextTask()
    assert isinstance(question, Input)
    assert (question.prompt, question.type) == ("name?", str)
    for _ in range(3):
        assert worker.tick() is None
    assert not task.done
    question.send("Ada")
    worker.work()
    assert task.result() == "hello, Ada"


def test_an_input_answered_before_its_task_reaches_it_resumes_at_once(
    worker: Worker,
) -> None:
    question = Input("ready?")
    question.send("yes")

    def job() -> Gen:
        answer = yield question
        return answer

    task = worker.assign(job())
    worker.tick()
    assert task.result() == "yes"


def test_an_input_is_answered_once() -> None:
    question = Input("once?")
    with pytest.raises(LookupError, match=r"Input\('once\?', None\) has no answer"):
        question.answer  # noqa: B018 - the property is the test
    question.send(1)
    assert question.answered and question.answer == 1
    with pytest.raises(RuntimeError, match=r"Input\('once\?', None\) was already"):
        question.send(2)


def test_a_task_waiting_for_an_input_can_be_cancelled_and_a_late_answer_is_harmless(
    worker: Worker,
) -> None:
    closed: list[bool] = []

    def job() -> Gen:
        try:
            yield Input("never answered")
        finally:
            closed.append(True)

    task = worker.assign(job())
    question = worker.doNextTask()
    assert isinstance(question, Input)
    assert task.cancel()
    assert closed == [True]
    question.send("too late")  # no error, nothing resumes
    with pytest.raises(CancelledError):
        task.result()


# -- genwrap and standalone ----------------------------------------------------------


def test_genwrap_lets_only_values_inputs_and_outputs_escape() -> None:
    question = Input("q")
    question.send("a")

    def routine() -> Gen:
        yield None
        yield Control
        yield 42  # any other object is filtered out, as in the first clockwork
        yield Value(1)
        yield question
        yield Output(2)

    assert list(genwrap(routine())) == [1, question, Output(2)]


def test_genwrap_send_reaches_the_yield_value_that_asked_at_any_depth() -> None:
    def deep() -> Gen:
        got = yield Value("first?")
        yield Control
        got2 = yield Value(f"deep got {got}")
        return got2

    def top() -> Gen:
        result = yield deep()
        yield Value(f"top got {result}")

    wrapped = genwrap(top())
    assert next(wrapped) == "first?"
    assert wrapped.send("x") == "deep got x"
    assert wrapped.send("y") == "top got y"


def test_genwrap_returns_what_the_routine_returns() -> None:
    def routine() -> Gen:
        yield Value(1)
        yield Return("done")

    wrapped = genwrap(routine())
    assert next(wrapped) == 1
    with pytest.raises(StopIteration) as stop:
        next(wrapped)
    assert stop.value.value == "done"


def test_genwrap_waits_for_a_deferred_or_coroutine_the_routine_yields() -> None:
    async def doubled(n: int) -> int:
        await clockwork.sleep(0.001)
        return n * 2

    def routine() -> Gen:
        yield clockwork.sleep(0.001)
        value = yield doubled(21)
        yield Value(value)

    assert list(genwrap(routine())) == [42]


def test_genwrap_raises_a_failed_deferred_in_the_routine_which_may_catch_it() -> None:
    def routine() -> Gen:
        d: Deferred[None] = Deferred()
        d.errback(ValueError("no luck"))
        try:
            yield d
        except ValueError as e:
            yield Value(f"caught {e}")

    assert list(genwrap(routine())) == ["caught no luck"]


def test_genwrap_raises_an_uncaught_error_to_whoever_iterates() -> None:
    def inner() -> Gen:
        yield Value(1)
        raise KeyError("inner")

    def outer() -> Gen:
        yield inner()

    wrapped = genwrap(outer())
    assert next(wrapped) == 1
    with pytest.raises(KeyError, match="inner"):
        next(wrapped)


def test_closing_genwrap_closes_the_routines_stack_innermost_first() -> None:
    log: list[str] = []

    def layer(name: str, inner: Gen | None) -> Gen:
        try:
            if inner is None:
                yield Value("deepest")
            else:
                yield inner
        finally:
            log.append(name)

    wrapped = genwrap(layer("outer", layer("middle", layer("inner", None))))
    assert next(wrapped) == "deepest"
    wrapped.close()
    assert log == ["inner", "middle", "outer"]


def test_genwrap_resumed_before_an_input_is_answered_raises_in_the_routine() -> None:
    def routine() -> Gen:
        try:
            yield Input("name?")
        except RuntimeError as e:
            yield Value(str(e))

    wrapped = genwrap(routine())
    assert isinstance(next(wrapped), Input)
    assert next(wrapped) == (
        "Input('name?', None) was not answered: call its send(answer), or send the "
        "answer into the genwrap generator, before resuming it"
    )


def test_the_answer_to_an_input_may_be_sent_into_the_genwrap_generator() -> None:
    def routine() -> Gen:
        name = yield Input("name?")
        yield Output(f"hi {name}")

    wrapped = genwrap(routine())
    question = next(wrapped)
    assert wrapped.send("Bo") == Output("hi Bo")
    assert isinstance(question, Input) and question.answer == "Bo"


def test_genwrap_inside_a_task_cannot_block_on_a_deferred() -> None:
    def routine() -> Gen:
        yield clockwork.sleep(0)

    def task() -> Gen:
        yield
        return list(genwrap(routine()))

    with pytest.raises(untwisted.ReentrancyError):
        clockwork.wrap(task(), timeout=10)


def test_standalone_makes_each_call_a_fresh_genwrap_generator() -> None:
    @standalone
    def count(n: int) -> Gen:
        """Counts."""
        for i in range(n):
            yield Control
            yield Value(i)

    assert count.__name__ == "count" and count.__doc__ == "Counts."
    assert list(count(3)) == [0, 1, 2]
    assert list(count(2)) == [0, 1]


# -- Each and Output -----------------------------------------------------------------


def test_each_yields_every_item_as_a_value_and_returns_what_was_sent() -> None:
    def routine() -> Gen:
        sent = yield Each(["a", "b", "c"])
        yield Value(sent)

    wrapped = genwrap(routine())
    assert next(wrapped) == "a"
    assert wrapped.send(1) == "b"
    assert next(wrapped) == "c"
    assert wrapped.send(3) == [1, None, 3]
    assert list(genwrap(Each(()))) == []


def test_outputs_are_equal_when_their_values_are() -> None:
    assert Output("x") == Output("x")
    assert Output("x") != Output("y")
    assert Output("x") != "x"
    assert len({Output(1), Output(1), Output(2)}) == 2
    assert repr(Output("x")) == "Output('x')"
    assert repr(Value(1)) == "Value(1)" and repr(Return(2)) == "Return(2)"
    assert repr(Call(None)) == "Call(None)"


# -- Worker(*tasks) and doNextTask ---------------------------------------------------


def test_a_worker_takes_its_first_tasks_as_arguments() -> None:
    log: list[int] = []

    def job(n: int) -> Gen:
        log.append(n)
        yield Control

    w = Worker(job(1), job(2))
    assert len(w.tasks) == 2
    w.work()
    assert log == [1, 2]


def test_a_driver_passed_where_tasks_go_is_refused_with_what_to_do() -> None:
    driver = untwisted.lowlevel.Driver(
        ClockReactor(), register_atexit=lambda hook: None
    )
    with pytest.raises(TypeError, match=r"takes generators; pass .* as driver=\.\.\."):
        Worker(driver)  # type: ignore[arg-type]


def test_do_next_task_takes_one_step_per_call_round_robin(worker: Worker) -> None:
    """His Generator spec: the step that disposes of a finished task changes nothing."""
    data: list[Any] = []

    def letters() -> Gen:
        data.append("a")
        yield Control
        data.append("z")
        yield Control

    def numbers() -> Gen:
        i = 0
        while True:
            i += 1
            data.append(i)
            yield Control

    worker.assign(letters())
    worker.assign(numbers())
    seen = []
    for _ in range(7):
        worker.doNextTask()
        seen.append(list(data))
    assert seen == [
        ["a"],
        ["a", 1],
        ["a", 1, "z"],
        ["a", 1, "z", 2],
        ["a", 1, "z", 2],
        ["a", 1, "z", 2, 3],
        ["a", 1, "z", 2, 3, 4],
    ]


def test_do_next_task_with_nothing_to_do_raises_RuntimeError() -> None:
    with pytest.raises(RuntimeError, match=r"nothing in queue"):
        Worker().doNextTask()


def test_do_next_task_waits_in_the_reactor_until_a_sleeping_task_is_ready(
    worker: Worker, clock: ClockReactor
) -> None:
    log: list[float] = []

    def sleeper() -> Gen:
        yield clockwork.sleep(7)
        log.append(clock.seconds())

    worker.assign(sleeper())
    worker.doNextTask()  # the first step: it goes to sleep
    assert log == []
    worker.doNextTask()  # waits the 7 s (of the fake clock), then steps
    assert log == [7]
    assert clock.iterations.count(7) == 1


def test_do_next_task_gives_up_after_its_timeout_and_leaves_the_tasks_alone() -> None:
    d: Deferred[None] = Deferred()

    def waiter() -> Gen:
        yield d

    w = Worker(waiter())
    w.doNextTask()
    with pytest.raises(untwisted.Timeout, match=r"no task was ready within 0\.05 s"):
        w.doNextTask(timeout=0.05)
    [task] = w.tasks
    assert not task.done
    d.callback(None)
    w.doNextTask(timeout=10)
    assert task.done


def test_do_next_task_on_the_default_worker_steps_without_waiting() -> None:
    log: list[str] = []

    def job() -> Gen:
        log.append("ran")
        yield Control

    clockwork.spawn(job())
    clockwork.default_worker().doNextTask()
    clockwork.work(timeout=10)
    assert log == ["ran"]


# -- Command ---------------------------------------------------------------------------


def test_a_command_routine_runs_it_and_leaves_its_output_readable() -> None:
    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    command = Command([PY, "-c", code])
    assert command.stdout.read() == b"" and command.returncode is None
    assert clockwork.wrap(command(), timeout=30) is None
    assert command.stdout.read() == b"out\n"
    assert command.stderr.read() == b"err\n"
    assert command.returncode == 3
    assert repr(command).startswith("Command([")


def test_cancelling_a_command_routine_kills_the_command(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = 'echo $$ > "$1.tmp" && mv "$1.tmp" "$1" && exec sleep 30'
    command = Command(["sh", "-c", script, "sh", str(pid_file)])
    task = clockwork.spawn(command())
    assert drive_until(pid_file.exists, 10), "the command never started"
    pid = int(pid_file.read_text())
    task.cancel()
    assert drive_until(lambda: not alive(pid), 10)


@pytest.mark.slow
def test_clockwork_reaches_procwork_only_when_a_command_runs() -> None:
    """The layers stay in order: importing clockwork does not import procwork."""
    child = run_child(
        """
        import sys
        from clockwork import *
        command = Command(["echo", "hi"])
        assert "procwork" not in sys.modules, "imported too early"
        wrap(command(), timeout=30)
        assert "procwork" in sys.modules
        print(command.stdout.read().decode(), end="")
        """
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout == "hi\n"


# -- no CPU while waiting --------------------------------------------------------------


@pytest.mark.slow
def test_waiting_in_the_old_vocabulary_costs_no_cpu() -> None:
    """Measured in a child: the first clockwork polled, at ~1 s of CPU each here."""
    child = run_program("idle_cpu", "classic")
    assert child.returncode == 0, child.stderr
    for cpu in map(float, child.stdout.split()):
        assert cpu < 0.2


# -- the risky interleavings, many times --------------------------------------------


@pytest.mark.slow
def test_a_thousand_inputs_answered_early_late_or_never_all_settle(
    worker: Worker, clock: ClockReactor
) -> None:
    """Answers come before the task asks, while it waits, or never (cancelled)."""
    rng = random.Random(9)
    tasks = []

    def asker(question: Input) -> Gen:
        yield Control
        answer = yield question
        yield Return(answer)

    for i in range(1000):
        question = Input(i)
        task = worker.assign(asker(question))
        tasks.append((task, question))
        when = rng.choice(["now", "later", "never"])
        if when == "now":
            question.send(i)
        elif when == "later":
            clock.callLater(rng.random(), question.send, i)
        else:
            clock.callLater(rng.random(), task.cancel)
    worker.work(timeout=30)
    outcomes = {"answered": 0, "cancelled": 0}
    for i, (task, _) in enumerate(tasks):
        assert task.done
        try:
            assert task.result() == i
            outcomes["answered"] += 1
        except CancelledError:
            outcomes["cancelled"] += 1
    assert outcomes["answered"] > 500 and outcomes["cancelled"] > 200, outcomes
