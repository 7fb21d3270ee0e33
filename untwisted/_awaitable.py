"""AwaitableDeferred: a Deferred that asyncio's tasks can await too.

Twisted's ``Deferred.__await__`` yields the Deferred itself, which only
Twisted's coroutine runner (``Deferred.fromCoroutine``, ``ensureDeferred``)
understands; an asyncio Task fails with "Task got bad yield". An
:class:`AwaitableDeferred` looks at who runs the coroutine that awaits it:
an asyncio Task gets an asyncio future to wait on, Twisted's runner the
Deferred as before. Cancelling the Task cancels the Deferred (and waits,
bounded, for what its canceller left running: a process being killed).

Design: ARCHITECTURE.md, "asyncio".
"""

from __future__ import annotations

import asyncio
import contextlib
from asyncio import AbstractEventLoop, Future
from collections.abc import Callable, Generator
from collections.abc import Coroutine as CoroutineABC
from inspect import (
    CO_ASYNC_GENERATOR,
    CO_COROUTINE,
    CO_GENERATOR,
    CO_ITERABLE_COROUTINE,
    currentframe,
)
from types import CodeType, FrameType
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from untwisted._asyncio import running_loop

__all__ = ["CLEANUP_TIMEOUT", "AwaitableDeferred"]

_T = TypeVar("_T")

#: Seconds an asyncio task that cancelled an AwaitableDeferred waits for
#: its ``cleanup`` (the process group being killed) before it re-raises,
#: as long as ``untwisted.run`` waits after a timeout.
CLEANUP_TIMEOUT = 10.0

# A frame of one of these flags is a generator or coroutine awaiting (or
# yielding from) the next one up the chain; the first frame below the chain
# that is none of them is the code that runs the chain.
_SUSPENDABLE = CO_GENERATOR | CO_COROUTINE | CO_ITERABLE_COROUTINE | CO_ASYNC_GENERATOR


def _twisted_runners() -> frozenset[CodeType]:
    """The code of Twisted's coroutine runner: it sends values into a
    coroutine (``_inlineCallbacks``) or throws a failure into it."""
    codes = {Failure.throwExceptionIntoGenerator.__code__}
    runner = getattr(defer, "_inlineCallbacks", None)
    if runner is not None:
        codes.add(runner.__code__)
    return frozenset(codes)


_TWISTED_RUNNERS = _twisted_runners()


class AwaitableDeferred(Deferred[_T]):
    """A Deferred that both Twisted's coroutines and asyncio's tasks can await.

    Awaited from a coroutine that an asyncio Task runs, it waits on a future
    of that Task's loop, so ``asyncio.gather``, ``wait_for`` and
    ``asyncio.timeout`` work with it; cancelling the Task cancels the
    Deferred. Awaited from a coroutine that Twisted runs
    (``Deferred.fromCoroutine``, clockwork), it behaves as any Deferred.
    Everything else is a plain Deferred's.

    Which thread may call: the thread of the reactor that fires it; an
    asyncio task in another thread is woken through its loop's
    ``call_soon_threadsafe`` (but cancelling from there would cancel the
    Deferred in the wrong thread: await it in the reactor's own loop).

    Attributes:
        cleanup: Set by a canceller that left work running (a process group
            that got SIGTERM): an asyncio task that cancelled this Deferred
            waits for it to fire, at most :data:`CLEANUP_TIMEOUT` seconds
            (or until it is cancelled again), before it re-raises
            ``CancelledError``, so that a cancelled ``await`` returns with
            nothing left running.
    """

    cleanup: Deferred[Any] | None = None

    def __await__(self) -> Generator[Any, None, _T]:
        if not self.called or self.paused:
            # The caller of this frame: the coroutine frame that resumed it.
            here = currentframe()
            loop = _task_loop(here.f_back if here is not None else None)
            if loop is not None:
                yield from self._wait_in(loop)
        result: _T = yield from Deferred.__iter__(self)
        return result

    def _wait_in(self, loop: AbstractEventLoop) -> Generator[Any, None, None]:
        try:
            while not self.called or self.paused:
                waker: Future[None] = loop.create_future()
                self.addBoth(_wake, waker, loop)
                yield from waker
        except BaseException as e:
            # The task was cancelled (CancelledError), or the coroutine is
            # being closed unfinished (GeneratorExit): nothing will wait for
            # this Deferred any more, so what it stands for is cancelled.
            yield from self._abandon(e, loop)
            raise

    def _abandon(
        self, error: BaseException, loop: AbstractEventLoop | None
    ) -> Generator[Any, None, None]:
        """Cancel this Deferred for an await that ``error`` ended, and wait
        (bounded) for its cleanup if a cancel ended it."""
        if not self.called or self.paused:
            self.cancel()
        try:
            cleanup = self.cleanup
            if (
                isinstance(error, asyncio.CancelledError)
                and cleanup is not None
                and loop is not None
            ):
                yield from _linger(cleanup, loop)
        finally:
            _consume(self)

    # -- run by an asyncio Task itself ---------------------------------------
    #
    # asyncio.ensure_future, gather and wait_for (before Python 3.12) make a
    # Task of an awaitable that is not a coroutine through a wrapper
    # coroutine; a Task cancelled before its first step never starts it, so
    # the Deferred would never hear of the cancel and its process would run
    # on. Registered as a Coroutine (below), this Deferred is the Task's
    # coroutine instead: the Task calls send() and throw() on it, and a
    # cancel thrown in before any send still cancels it. Each Task drives
    # its own await (__await__) of it.

    _drivers: dict[object, Generator[Any, None, _T]] | None = None

    def send(self, value: None) -> Any:
        """Step the await of the asyncio Task that runs this Deferred."""
        task = asyncio.current_task()
        drivers = self._task_drivers()
        driver = drivers.get(task)
        if driver is None:
            driver = drivers[task] = self.__await__()
        return self._step(task, driver.send, value)

    def throw(self, error: BaseException, *_: object) -> Any:
        """Throw ``error`` (a cancel) into the await of the asyncio Task that
        runs this Deferred; before that await began, abandon it at once."""
        task = asyncio.current_task()
        drivers = self._task_drivers()
        driver = drivers.get(task)
        if driver is None:
            driver = drivers[task] = self._thrown_before_start(error)
            return self._step(task, driver.send, None)
        return self._step(task, driver.throw, error)

    def close(self) -> None:
        """Close every unfinished await that Tasks drive (each is abandoned)."""
        drivers = self._task_drivers()
        while drivers:
            _, driver = drivers.popitem()
            driver.close()

    def _task_drivers(self) -> dict[object, Generator[Any, None, _T]]:
        drivers = self._drivers
        if drivers is None:
            drivers = self._drivers = {}
        return drivers

    def _step(self, task: object, step: Callable[[Any], Any], arg: object) -> Any:
        try:
            return step(arg)
        except BaseException:  # StopIteration included: that await is over
            if self._drivers is not None:
                self._drivers.pop(task, None)
            raise

    def _thrown_before_start(self, error: BaseException) -> Generator[Any, None, _T]:
        yield from self._abandon(error, running_loop())
        raise error


# asyncio makes a Task of a Coroutine directly (see AwaitableDeferred.send).
# Said explicitly (its __await__, send, throw and close would make it one by
# structure as well). Twisted, clockwork and untwisted tell Deferreds apart
# from coroutines before they ask (by their type), so nothing else changes.
CoroutineABC.register(AwaitableDeferred)


def _task_loop(frame: FrameType | None) -> AbstractEventLoop | None:
    """The running loop, if an asyncio Task runs the coroutine of ``frame``.

    A Task is stepping (``current_task``) whenever an awaitable of its
    coroutine runs; but a coroutine started with ``Deferred.fromCoroutine``
    inside that step is run by Twisted, whose first steps happen right
    there. The code below the chain of awaiting frames tells them apart.
    """
    loop = running_loop()
    if loop is None or asyncio.current_task(loop) is None:
        return None
    while frame is not None and frame.f_code.co_flags & _SUSPENDABLE:
        frame = frame.f_back
    if frame is not None and frame.f_code in _TWISTED_RUNNERS:
        return None
    return loop


def _wake(result: object, waker: Future[None], loop: AbstractEventLoop) -> object:
    """A callback (and errback) that wakes an asyncio task; passes through."""
    if running_loop() is loop:
        _set(waker)
    else:
        loop.call_soon_threadsafe(_set, waker)
    return result


def _set(waker: Future[None]) -> None:
    if not waker.done():
        waker.set_result(None)


def _linger(
    cleanup: Deferred[Any], loop: AbstractEventLoop
) -> Generator[Any, None, None]:
    """Wait for ``cleanup`` to fire, at most CLEANUP_TIMEOUT seconds."""
    if cleanup.called:
        return
    waker: Future[None] = loop.create_future()
    cleanup.addBoth(_wake, waker, loop)
    timer = loop.call_later(CLEANUP_TIMEOUT, _set, waker)
    try:
        yield from waker
    finally:
        timer.cancel()


def _consume(d: Deferred[Any]) -> None:
    """Mark a failure ``d`` holds as handled, as awaiting it would.

    The failure stays its result; Twisted would otherwise log it as an
    "Unhandled error in Deferred" when ``d`` is collected.
    """
    if d.called and not d.paused and isinstance(d.result, Failure):
        with contextlib.suppress(BaseException):
            next(Deferred.__iter__(d))
