"""Things to yield: sleep, timeout, gather, first, every.

Each returns a Deferred (``every`` a generator), so the same call works with
``yield`` in a clockwork generator, ``await`` in ``async def`` and
``untwisted.run()`` from blocking code. Generators passed in become tasks of
the worker that runs the caller (the default worker outside tasks).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator
from typing import Any

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    FirstError,
)
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

import untwisted
from clockwork._worker import current_worker

__all__ = ["every", "first", "gather", "sleep", "timeout"]


def _check_seconds(what: str, seconds: float) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError(f"{what}: seconds must be a number, not {seconds!r}")
    if not seconds >= 0:
        raise ValueError(f"{what}: seconds must be >= 0, not {seconds!r}")
    return float(seconds)


def sleep(seconds: float) -> Deferred[None]:
    """A Deferred that fires after ``seconds``; yield it to wait without polling."""
    seconds = _check_seconds("clockwork.sleep()", seconds)
    return deferLater(current_worker().reactor, seconds, lambda: None)  # type: ignore[arg-type]


def timeout(seconds: float, x: object) -> Deferred[Any]:
    """``x``'s result, or :class:`untwisted.Timeout` after ``seconds``.

    On expiry ``x`` is cancelled (a generator's stack is closed, a process is
    killed) and the Deferred fails with ``Timeout``.
    """
    seconds = _check_seconds("clockwork.timeout()", seconds)
    worker = current_worker()
    inner = worker.as_deferred(x)
    expired: list[bool] = []

    def expire() -> None:
        expired.append(True)
        inner.cancel()

    timer = worker.reactor.callLater(seconds, expire)

    def done(result: object) -> object:
        if timer.active():
            timer.cancel()
        if expired and isinstance(result, Failure) and result.check(CancelledError):
            return Failure(
                untwisted.Timeout(f"{_name(x)} did not finish within {seconds:g} s")
            )
        return result

    return inner.addBoth(done)


def gather(*xs: object) -> Deferred[list[Any]]:
    """Run all of ``xs`` at once; the list of their results, in order.

    If one fails, the others are cancelled and its exception is raised.
    """
    worker = current_worker()
    ds = [worker.as_deferred(x) for x in xs]
    if not ds:
        return Deferred.fromCoroutine(_empty_list())
    joined: Deferred[Any] = DeferredList(ds, fireOnOneErrback=True, consumeErrors=True)

    def unpack(results: list[tuple[bool, Any]]) -> list[Any]:
        return [value for _, value in results]

    return joined.addCallbacks(unpack, _first_error, errbackArgs=(ds,))


async def _empty_list() -> list[Any]:
    return []


def first(*xs: object) -> Deferred[tuple[int, Any]]:
    """Run all of ``xs`` at once; ``(index, result)`` of the first to finish.

    The others are cancelled. If the first to finish failed, its exception is
    raised.
    """
    if not xs:
        raise ValueError("clockwork.first() needs at least one thing to wait for")
    worker = current_worker()
    ds = [worker.as_deferred(x) for x in xs]
    joined: Deferred[Any] = DeferredList(
        ds, fireOnOneCallback=True, fireOnOneErrback=True, consumeErrors=True
    )

    def winner(pair: tuple[Any, int]) -> tuple[int, Any]:
        value, index = pair
        _cancel_others(ds, index)
        return index, value

    return joined.addCallbacks(winner, _first_error, errbackArgs=(ds,))


def _first_error(failure: Failure, ds: list[Deferred[Any]]) -> Failure:
    failure.trap(FirstError)
    error = failure.value
    assert isinstance(error, FirstError)
    _cancel_others(ds, error.index)
    sub: Failure = error.subFailure
    return sub


def _cancel_others(ds: list[Deferred[Any]], keep: int) -> None:
    for i, d in enumerate(ds):
        if i != keep and not d.called:
            d.cancel()


def every(seconds: float, fn: Callable[[], Any]) -> Generator[Any, Any, None]:
    """Call ``fn`` every ``seconds``, for ever (cancel the task to stop).

    ``fn`` may be a plain function, a generator function (its generator is
    run as a subroutine, so a slow call delays the next one instead of
    overlapping it) or an ``async def`` function (awaited the same way).
    Starts are kept on a fixed grid: a late call does not shift the ones
    after it; grid points missed entirely are skipped.
    """
    seconds = _check_seconds("clockwork.every()", seconds)
    if seconds == 0:
        raise ValueError("clockwork.every(): seconds must be > 0")
    reactor = current_worker().reactor
    start = reactor.seconds()
    n = 0
    while True:
        out = fn()
        if inspect.isgenerator(out) or inspect.isawaitable(out):
            yield out  # a subroutine, or a Deferred/coroutine to wait for
        n += 1
        now = reactor.seconds()
        due = start + n * seconds
        if due <= now:  # fell behind: skip to the next grid point
            n = int((now - start) // seconds) + 1
            due = start + n * seconds
        yield sleep(due - now)


def _name(x: object) -> str:
    name = getattr(x, "__qualname__", None)
    return f"{name}()" if isinstance(name, str) else type(x).__name__
