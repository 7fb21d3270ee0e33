"""untwisted's exceptions; ``Timeout`` is shared by all three packages."""

from __future__ import annotations

__all__ = ["ForeignThreadError", "ReentrancyError", "Timeout"]


class Timeout(TimeoutError):
    """Something took longer than the time it was given.

    The one timeout exception of untwisted, clockwork and procwork
    (``clockwork.Timeout`` and ``procwork.Timeout`` are this class). It is a
    builtin :class:`TimeoutError`, so ``except TimeoutError`` catches it.
    """


class ReentrancyError(RuntimeError):
    """A blocking call was made from inside the reactor.

    ``untwisted.run()`` (and ``clockwork.wrap()``, ``Worker.work()``) block
    until their argument finishes by driving the reactor. Called from a
    reactor callback or a clockwork task, that would wait on itself forever;
    there, ``yield`` (in a generator) or ``await`` (in ``async def``) the
    value instead.
    """


class ForeignThreadError(RuntimeError):
    """untwisted was called from a thread that does not drive the reactor.

    The reactor is driven by one thread: the first thread that calls
    untwisted or procwork, even if that call did not need the reactor to
    run (see :meth:`untwisted.lowlevel.Driver.check_thread`). Other threads must hand
    work to it with ``reactor.callFromThread`` (or run their own blocking
    code without untwisted).
    """


# Show the public import path in tracebacks: untwisted.Timeout.
for _cls in (Timeout, ReentrancyError, ForeignThreadError):
    _cls.__module__ = "untwisted"
