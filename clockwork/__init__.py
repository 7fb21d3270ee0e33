"""clockwork: generator microthreads scheduled on a Twisted reactor.

    >>> import clockwork
    >>> def job(n):
    ...     yield                    # give up control for a tick
    ...     yield clockwork.sleep(0) # wait for a Deferred
    ...     return n * 2
    >>> clockwork.wrap(job(21))
    42

See ``specs/clockwork.md`` for the whole story.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

from twisted.internet.defer import CancelledError, Deferred

import untwisted
from clockwork._classic import (
    Call,
    Command,
    Control,
    Each,
    Input,
    Output,
    Return,
    Value,
    genwrap,
    standalone,
)
from clockwork._flatten import encapsulate, flatten
from clockwork._task import Task
from clockwork._waits import every, first, gather, sleep, timeout
from clockwork._worker import Worker, current_worker, default_worker

Timeout = untwisted.Timeout

# Includes the first clockwork's vocabulary (Call, Command, Control, Each, Input,
# Output, Return, Value, genwrap, standalone): code written for it says
# "from clockwork import *". See specs/clockwork_classic.md.
__all__ = [
    "Call",
    "CancelledError",
    "Command",
    "Control",
    "Each",
    "Input",
    "Output",
    "Return",
    "Task",
    "Timeout",
    "Value",
    "Worker",
    "current_worker",
    "default_worker",
    "encapsulate",
    "every",
    "first",
    "flatten",
    "gather",
    "genwrap",
    "sleep",
    "spawn",
    "standalone",
    "tick",
    "timeout",
    "work",
    "wrap",
]

T = TypeVar("T")


def spawn(
    gen: Generator[Any, Any, Any] | Coroutine[Any, Any, Any], name: str | None = None
) -> Task:
    """Start ``gen`` as a task of the default worker.

    It advances whenever the reactor runs (``untwisted.run``/``tick``,
    ``clockwork.tick``/``work``, or a program's own ``reactor.run()``).
    """
    return default_worker().assign(gen, name)


def tick() -> None:
    """One step of the default worker's next ready task, then one reactor step."""
    default_worker().tick()


def work(timeout: float | None = None) -> None:
    """Run until every task of the default worker has finished."""
    default_worker().work(timeout)


def wrap(
    gen: Generator[Any, Any, T] | Coroutine[Any, Any, T] | Deferred[T],
    timeout: float | None = None,
) -> T:
    """Run one generator to completion from blocking code; return its value.

    A Deferred (``procwork.waitfor(...)``, say) is waited for the same way.
    Raises what the generator raises; on expiry of ``timeout`` seconds the
    generator is cancelled and :class:`Timeout` is raised.
    """
    d = gen if isinstance(gen, Deferred) else spawn(gen).deferred
    result: T = untwisted.run(d, timeout)
    return result


def _run_generator(gen: Generator[Any, Any, Any]) -> Any:
    return spawn(gen).deferred


untwisted.set_generator_runner(_run_generator)
