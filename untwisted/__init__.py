"""untwisted: use Twisted from ordinary blocking Python code.

    >>> import untwisted
    >>> d = untwisted.add(some_deferred_or_generator)   # start it
    >>> untwisted.tick()                                 # one reactor iteration
    >>> value = untwisted.run(d, timeout=5)              # block until it is done

The reactor starts lazily on first use and is never stopped until the
interpreter exits, so ``run()`` may be called any number of times. What
code built on untwisted needs (the ``Driver``, hooks, signal handling) is in
:mod:`untwisted.lowlevel`.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

from twisted.internet.defer import Deferred

from untwisted import _global
from untwisted import lowlevel as lowlevel
from untwisted._errors import ForeignThreadError, ReentrancyError, Timeout
from untwisted._version import __version__ as __version__

# The plumbing (the Driver, the generator runner's hook, signal handling) is
# in untwisted.lowlevel: these are what a program calls.
__all__ = [
    "ForeignThreadError",
    "ReentrancyError",
    "Timeout",
    "add",
    "run",
    "tick",
]

T = TypeVar("T")

_default_driver = _global.default_driver()


def add(x: object) -> Deferred[Any]:
    """Start ``x`` (a Deferred, coroutine or clockwork generator).

    Returns a Deferred for its result; it makes progress whenever the reactor
    runs (``tick``, ``run``, or the program's own ``reactor.run()``).
    """
    return _default_driver.add(x)


def tick(timeout: float | None = 0.0) -> None:
    """Run one reactor iteration: due timers, then at most ``timeout`` s of I/O.

    Call from the thread that drives the reactor, outside the reactor.
    """
    _default_driver.tick(timeout)


def run(
    x: Deferred[T] | Coroutine[Any, Any, T] | Generator[Any, Any, T] | object,
    timeout: float | None = None,
) -> Any:
    """Block until ``x`` finishes; return its result or raise its exception.

    On expiry of ``timeout`` seconds, ``x`` is cancelled (killing any process
    it owns) and :class:`Timeout` is raised. Call from the thread that drives
    the reactor, never from inside it (that raises :class:`ReentrancyError`).
    """
    return _default_driver.run(x, timeout)
