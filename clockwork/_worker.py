"""The Worker: round-robin scheduler of generator tasks on a reactor."""

from __future__ import annotations

import inspect
import time
from collections import deque
from collections.abc import Coroutine, Generator
from contextvars import ContextVar
from types import GeneratorType
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure as _Failure

import untwisted
from clockwork._classic import (
    Call,
    Escaped,
    Input,
    Keyword,
    Output,
    Return,
    Value,
    end_routine,
)
from clockwork._task import Task

__all__ = ["Worker", "current_task", "current_worker"]

T = TypeVar("T")

# The worker whose task is being stepped right now (there is one reactor
# thread, so a plain global is enough); None outside any step.
_stepping: Worker | None = None
_default: Worker | None = None
# The task being stepped right now, likewise; None between steps.
_stepped_task: Task | None = None

# The worker of a task's coroutine. A coroutine resumes from Deferred
# callbacks, outside its task's steps, so _stepping can't say; but Twisted
# runs it in a copy of the context it was started in, which holds this.
_coroutine_worker: ContextVar[Worker | None] = ContextVar(
    "clockwork_coroutine_worker", default=None
)
# And its task, for the same reason.
_coroutine_task: ContextVar[Task | None] = ContextVar(
    "clockwork_coroutine_task", default=None
)


def current_worker() -> Worker:
    """The worker running the calling task, or the default worker outside tasks."""
    worker = _coroutine_worker.get()
    if worker is not None:
        return worker
    if _stepping is not None:
        return _stepping
    return default_worker()


def current_task() -> Task | None:
    """The task whose code is running, or None outside any task.

    A generator task's own steps and the ``async def`` coroutine it awaits
    count; a Deferred's callback that fires between steps does not (it
    runs on no task's behalf).
    """
    task = _coroutine_task.get()
    if task is not None:
        return task
    return _stepped_task


def default_worker() -> Worker:
    """The worker of ``clockwork.spawn``; its tasks advance when the reactor runs."""
    global _default
    if _default is None:
        _default = Worker(autorun=True)
    return _default


def _as_generator(
    x: Generator[Any, Any, T] | Coroutine[Any, Any, T],
) -> Generator[Any, Any, T]:
    if isinstance(x, GeneratorType):
        return x
    if inspect.iscoroutine(x):
        return _await_in_task(x)
    raise TypeError(f"a task must be a generator or a coroutine, not {x!r}")


def _await_in_task(coro: Coroutine[Any, Any, T]) -> Generator[Any, Any, T]:
    result: T = yield coro  # started by the worker, see Worker.as_deferred
    return result


_PENDING: Any = object()


class _Resume:
    """The callback a task hangs on a Deferred it waits for.

    If the Deferred has already fired, the callback runs at once, while the
    task's step is still on the stack: then it only records the result and the
    step goes on without a trip through the reactor (as inlineCallbacks does).
    Otherwise it hands the result to the task and makes the task ready again.
    """

    __slots__ = ("parked", "result", "task", "worker")

    def __init__(self, worker: Worker, task: Task) -> None:
        self.worker = worker
        self.task = task
        self.parked = False
        self.result: Any = _PENDING

    def __call__(self, result: Any, d: Deferred[Any]) -> None:
        if not self.parked:
            self.result = result
            return None
        if self.task.resume(d, result):  # else it was cancelled meanwhile
            self.worker._make_ready(self.task)
        return None  # the task consumed the result, errors included


class Worker:
    """Runs generator tasks round-robin, one step at a time, on a reactor.

    A step runs a task until it yields: a bare ``yield`` gives up control
    until its next turn; ``yield`` of a generator runs it as a subroutine (its
    ``return`` value is the value of the ``yield``); ``yield`` of a Deferred,
    coroutine or awaitable waits for it without using CPU. The first
    clockwork's keywords work too (``clockwork.classic``): ``yield Return(v)``
    is ``return v``, ``yield Call(gen)`` a tail call, ``yield Value(v)`` and
    ``yield Output(v)`` give up control like a bare ``yield``, and ``yield
    Input(...)`` waits for its answer.

    Tasks of a worker you create advance only when you call :meth:`tick` or
    :meth:`work`, which makes ``tick()`` a precise single-step tool. The
    default worker (``autorun=True``, used by ``clockwork.spawn``) advances
    whenever the reactor runs, whoever drives it.

    Call from the reactor's thread.

    Args:
        *tasks: Generators (or coroutines) to :meth:`assign` at once.
        driver: The untwisted driver (and so the reactor) to use; default the
            global one.
        autorun: Step ready tasks from reactor callbacks, without ``work()``.
        time_slice: At most about this many seconds of task steps run before
            the reactor gets to handle I/O and timers again.
    """

    def __init__(
        self,
        *tasks: Generator[Any, Any, Any] | Coroutine[Any, Any, Any],
        driver: untwisted.lowlevel.Driver | None = None,
        autorun: bool = False,
        time_slice: float = 0.002,
    ) -> None:
        self.driver = (
            driver if driver is not None else untwisted.lowlevel.default_driver()
        )
        self._autorun = autorun
        self._time_slice = time_slice
        self._ready: deque[Task] = deque()
        self._unfinished: set[Task] = set()
        self._slice_call: Any = None
        for task in tasks:
            if isinstance(task, untwisted.lowlevel.Driver):
                # Only to say what changed: the driver used to be the first
                # positional argument, the first clockwork took tasks there.
                raise TypeError(
                    f"Worker(*tasks) takes generators; pass {task!r} as driver=..."
                )
            self.assign(task)

    def __repr__(self) -> str:
        return (
            f"<Worker {len(self._unfinished)} tasks, {len(self._ready)} ready"
            f"{', autorun' if self._autorun else ''}>"
        )

    @property
    def reactor(self) -> untwisted.lowlevel.DrivableReactor:
        """The reactor this worker's tasks wait on."""
        return self.driver.reactor

    @property
    def tasks(self) -> frozenset[Task]:
        """The tasks assigned and not yet finished."""
        return frozenset(self._unfinished)

    # -- assigning --------------------------------------------------------

    def assign(
        self,
        gen: Generator[Any, Any, Any] | Coroutine[Any, Any, Any],
        name: str | None = None,
    ) -> Task:
        """Add a generator (or coroutine) as a new task, ready to run.

        Returns the :class:`Task`; its first step runs on a later tick.
        """
        g = _as_generator(gen)
        label = name or getattr(gen, "__qualname__", None) or repr(gen)
        task = Task(g, label, self._unfinished.discard)
        self._unfinished.add(task)
        self._make_ready(task)
        return task

    def as_deferred(self, x: object) -> Deferred[Any]:
        """A Deferred for ``x``; a generator becomes a task of this worker."""
        if isinstance(x, GeneratorType):
            return self.assign(x).deferred
        if inspect.iscoroutine(x):
            # So that clockwork.sleep, gather etc. inside the coroutine use
            # this worker (and its reactor) after its first await, too.
            token = _coroutine_worker.set(self)
            task_token = _coroutine_task.set(current_task())
            try:
                return Deferred.fromCoroutine(x)
            finally:
                _coroutine_task.reset(task_token)
                _coroutine_worker.reset(token)
        return untwisted.lowlevel.as_deferred(x)

    # -- running ------------------------------------------------------------

    def tick(self) -> Escaped | None:
        """Run one step of the next ready task, then one non-blocking reactor step.

        Returns:
            The ``Value``, ``Output`` or ``Input`` the step ended on, if it
            ended on one of the first clockwork's keywords; else None.

        Raises:
            untwisted.ReentrancyError: called from inside the reactor (a
                callback or a task); ``yield`` instead.
        """
        global _stepping
        self.driver.check_caller("clockwork.Worker.tick")
        escaped = None
        if self._ready:
            with self.driver.entered():
                outer, _stepping = _stepping, self
                try:
                    escaped = self._step(self._ready.popleft())
                finally:
                    _stepping = outer
        self.driver.tick(0)
        return escaped

    def doNextTask(self, timeout: float | None = None) -> Escaped | None:
        """The first clockwork's name for one step: :meth:`tick`, once a task is ready.

        Tasks take turns, a step each, in the order they became ready; the
        step that finds a task finished only removes it. If every task waits
        (on a sleep, a Deferred, an Input), waits in the reactor, without
        using CPU, until one is ready. Returns what :meth:`tick` returns.

        Raises:
            RuntimeError: the worker has no unfinished task.
            untwisted.Timeout: no task became ready within ``timeout``
                seconds (the tasks are left as they are).
            untwisted.ReentrancyError: called from inside the reactor.
        """
        self.driver.check_caller("clockwork.Worker.doNextTask")
        if not self._unfinished:
            raise RuntimeError(
                "Worker.doNextTask(): nothing in queue (every task has finished)"
            )
        if self._autorun:  # the reactor runs its tasks: nothing to wait for here
            return self.tick()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready and self._unfinished:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise untwisted.Timeout(
                    f"{self!r}.doNextTask(): no task was ready within {timeout:g} s"
                )
            self.driver.tick(remaining, until=self._has_work)
        return self.tick()

    def work(self, timeout: float | None = None) -> None:
        """Run until every assigned task has finished.

        Waits in the reactor (no CPU) while all tasks wait. On expiry of
        ``timeout`` seconds the unfinished tasks are cancelled and
        :class:`untwisted.Timeout` is raised.
        """
        self.driver.check_caller("clockwork.Worker.work")
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while self._unfinished:
                # Checked on every turn, not only when all tasks wait: a task
                # that never stops yielding must still time out.
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise untwisted.Timeout(
                        f"{self!r}.work() did not finish within {timeout:g} s; "
                        "its tasks were cancelled"
                    )
                if self._ready:
                    with self.driver.entered():
                        self._run_ready()
                    self.driver.tick(0)
                    continue
                # Stop waiting as soon as a task becomes ready: a Deferred a
                # task waits on may fire in the iteration's timers or thread
                # calls, before its wait for I/O.
                self.driver.tick(remaining, until=self._has_work)
        except BaseException:
            for task in list(self._unfinished):
                task.cancel()
            raise

    def _has_work(self) -> bool:
        return bool(self._ready) or not self._unfinished

    def _make_ready(self, task: Task) -> None:
        self._ready.append(task)
        if self._autorun and self._slice_call is None:
            self._slice_call = self.reactor.callLater(0, self._run_slice)

    def _run_slice(self) -> None:
        self._slice_call = None
        # Under a program's own reactor.run() the driver is not iterating, so
        # say here that tasks run inside the reactor: they must not block.
        with self.driver.entered():
            self._run_ready()
        if self._ready and self._slice_call is None:
            self._slice_call = self.reactor.callLater(0, self._run_slice)

    def _run_ready(self) -> None:
        # Round robin through the ready queue, a step per task per turn, for
        # up to one time slice; then the caller lets the reactor run.
        global _stepping
        ready = self._ready
        deadline = time.perf_counter() + self._time_slice
        steps = 0
        # This worker is current_worker() for the whole turn: between two
        # steps no task's code runs (set once, not per step: it is hot).
        outer, _stepping = _stepping, self
        try:
            while ready:
                self._step(ready.popleft())
                steps += 1
                if not steps & 31 and time.perf_counter() > deadline:
                    break
        finally:
            _stepping = outer

    def _step(self, task: Task) -> Escaped | None:
        """Advance ``task`` until it yields control, waits, or finishes.

        Returns the classic ``Value``/``Output``/``Input`` it stopped on.
        The caller makes this worker ``_stepping``.
        """
        global _stepped_task
        step = task.begin_step()
        if step is None:  # cancelled while it sat in the ready queue
            return None
        stack, value, error = step
        escaped: Escaped | None = None
        outer_task, _stepped_task = _stepped_task, task
        try:
            while True:
                gen = stack[-1]
                try:
                    if error is None:
                        yielded = gen.send(value)
                    else:
                        yielded, error = gen.throw(error), None
                except StopIteration as stop:
                    stack.pop()
                    if not stack:
                        task.finish(stop.value, None)
                        return None
                    value = stop.value
                    continue
                except BaseException as e:
                    stack.pop()
                    # Drop this scheduler frame from the traceback so it reads
                    # like a plain call chain of the user's generators.
                    if e.__traceback__ is not None:
                        e.__traceback__ = e.__traceback__.tb_next
                    if stack:
                        value, error = None, e
                        continue
                    task.finish(None, e)
                    if isinstance(e, KeyboardInterrupt | SystemExit):
                        raise
                    return None

                value = None
                if yielded is None:  # plain yield: back of the queue
                    self._ready.append(task)
                    return None
                if isinstance(yielded, GeneratorType):  # subroutine call
                    stack.append(yielded)
                    continue
                if isinstance(yielded, Keyword):  # the first clockwork's words
                    if isinstance(yielded, Return | Call):
                        stack.pop()
                        value, error = end_routine(gen, yielded, stack)
                        if not stack:
                            task.finish(value, error)
                            if isinstance(error, KeyboardInterrupt | SystemExit):
                                raise error
                            return None
                        continue
                    if isinstance(yielded, Value | Output):  # like a bare yield
                        self._ready.append(task)
                        return yielded
                    if isinstance(yielded, Input):  # wait for its answer
                        escaped, yielded = yielded, yielded.deferred
                if not isinstance(yielded, Deferred):
                    try:
                        yielded = self.as_deferred(yielded)
                    except TypeError:
                        error = TypeError(
                            f"task {task.name!r} yielded {yielded!r}; a clockwork "
                            "generator may yield None (give up control), a generator "
                            "(call it), or a Deferred, coroutine or awaitable (wait "
                            "for it)"
                        )
                        continue
                resume = _Resume(self, task)
                yielded.addBoth(resume, yielded)
                if resume.result is not _PENDING:  # already fired: go on now
                    escaped = None
                    if isinstance(resume.result, _Failure):
                        error = resume.result.value
                    else:
                        value = resume.result
                    continue
                resume.parked = True
                task.park(yielded)
                return escaped
        finally:
            _stepped_task = outer_task
            task.end_step()
