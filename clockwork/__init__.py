"""clockwork: generator microthreads scheduled on a Twisted reactor.

    >>> import clockwork
    >>> def job(n):
    ...     yield                    # give up control for a tick
    ...     yield clockwork.sleep(0) # wait for a Deferred
    ...     return n * 2
    >>> clockwork.wrap(job(21))
    42

See ``specs/clockwork.md`` for the whole story. TCP, TLS and HTTP for
routines are :mod:`clockwork.net` (``specs/networking.md``), whose failures
are all a :class:`NetworkError`. The first clockwork's vocabulary
(``Return``, ``Value``, ``genwrap``, ...) is :mod:`clockwork.classic`,
importable from here too so that code written for it runs unchanged.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

from twisted.internet.defer import CancelledError, Deferred

import untwisted
from clockwork import classic as classic
from clockwork._flatten import encapsulate, flatten
from clockwork._neterrors import NetworkError
from clockwork._task import Task
from clockwork._waits import every, first, gather, sleep, timeout
from clockwork._worker import Worker, current_worker, default_worker

# The first clockwork's vocabulary, re-exported whole (and added to __all__
# below): its code begins with "from clockwork import *".
from clockwork.classic import *  # noqa: F403

Timeout = untwisted.Timeout

# The distribution's one version (untwisted/_version.py).
__version__ = untwisted.__version__

__all__ = [
    "CancelledError",
    "NetworkError",
    "Task",
    "Timeout",
    "Worker",
    "current_worker",
    "default_worker",
    "encapsulate",
    "every",
    "first",
    "flatten",
    "gather",
    "sleep",
    "spawn",
    "tick",
    "timeout",
    "work",
    "wrap",
]
# The first clockwork's vocabulary lives in clockwork.classic and stays
# importable from here, by name and by star: code written for it begins with
# "from clockwork import *", which imports what __all__ lists and nothing
# else. See specs/clockwork_classic.md.
__all__ += classic.__all__

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
    # Before the generator becomes a task: inside a running asyncio loop (or
    # the reactor) the wait below would block, and the task would be left.
    untwisted.lowlevel.default_driver().check_caller("clockwork.wrap")
    d = gen if isinstance(gen, Deferred) else spawn(gen).deferred
    result: T = untwisted.run(d, timeout)
    return result


def _run_generator(gen: Generator[Any, Any, Any]) -> Any:
    return spawn(gen).deferred


untwisted.lowlevel.set_generator_runner(_run_generator)
