"""clockwork at scale: deep stacks, long tasks, and what an idle task costs.

Memory is measured with tracemalloc, the CPU of a parked task in a fresh
program (``tests/programs/idle_cpu.py``).
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Generator
from typing import Any

import pytest
from twisted.internet.defer import Deferred

import clockwork
from clockwork import Worker
from tests.support import run_program
from tests.support.routines import nest

Gen = Generator[Any, Any, Any]


def countdown(n: int) -> Gen:
    """10 000 levels deep without recursion in the scheduler."""
    if n == 0:
        return 0
        yield
    return (yield countdown(n - 1)) + 1


def test_ten_thousand_levels_of_subroutines_work(worker: Worker) -> None:
    job_task = worker.assign(countdown(10_000))
    worker.work()
    assert job_task.result() == 10_000
    assert clockwork.wrap(countdown(10_000)) == 10_000
    assert sum(1 for _ in clockwork.flatten(countdown(10_000))) == 0


def test_an_exception_propagates_through_ten_thousand_levels(worker: Worker) -> None:
    def fail(n: int) -> Gen:
        if n == 0:
            raise ArithmeticError("at the bottom")
        yield fail(n - 1)

    def top() -> Gen:
        try:
            yield fail(10_000)
        except ArithmeticError as e:
            return str(e)

    job_task = worker.assign(top())
    worker.work()
    assert job_task.result() == "at the bottom"


def test_cancelling_a_ten_thousand_deep_stack_runs_every_finally_innermost_first(
    worker: Worker,
) -> None:
    log: list[int] = []
    job_task = worker.assign(nest(10_000, log, Deferred()))
    worker.tick()
    job_task.cancel()
    assert log == list(range(10_001))


@pytest.mark.slow
def test_a_million_steps_of_a_long_task_do_not_grow_memory(worker: Worker) -> None:
    """Each step calls a subroutine, then gives up control with a bare yield."""

    def one() -> Gen:
        return 1
        yield

    def long_task(steps: int) -> Gen:
        total = 0
        for _ in range(steps):
            total += yield one()  # a subroutine call in every step
            yield
        return total

    gc.collect()
    tracemalloc.start()
    try:
        job_task = worker.assign(long_task(1_000_000))
        worker.work()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert job_task.result() == 1_000_000
    assert peak < 2_000_000, f"peak {peak} bytes"


@pytest.mark.slow
def test_a_task_parked_on_a_sleep_costs_no_cpu() -> None:
    """Measured in a child: a busy-polling worker would use ~1 s of CPU here."""
    child = run_program("idle_cpu", "worker")
    assert child.returncode == 0, child.stderr
    worker_cpu, default_worker_cpu = map(float, child.stdout.split())
    assert worker_cpu < 0.2
    assert default_worker_cpu < 0.2
