"""Twisted inside a running asyncio loop: one reactor per loop.

A program run by ``asyncio.run`` drives no Twisted reactor. When Twisted is
needed there (``procwork.run`` inside a coroutine), :func:`loop_reactor`
gives the running loop a reactor of its own, a :class:`LoopReactor`
(Twisted's asyncio reactor on that loop, never installed as the global
reactor), made on first use. A guardian task stops it when the loop's tasks
are cancelled at the end of ``asyncio.run``: Twisted's shutdown triggers
run (procwork terminates and reaps its children there), then the reactor is
taken off the loop, so the next ``asyncio.run`` starts a fresh one.

Blocking calls (``untwisted.run``) inside a running loop would stop it dead:
:func:`refuse_blocking` raises :class:`ReentrancyError` instead.

Design: ARCHITECTURE.md, "asyncio".
"""

from __future__ import annotations

import sys
import weakref
from asyncio import AbstractEventLoop, Future, get_running_loop
from typing import TYPE_CHECKING

from twisted.logger import Logger

from untwisted._errors import ReentrancyError
from untwisted._signals import catch_fatal_signals

if TYPE_CHECKING:
    from untwisted._loopreactor import LoopReactor

__all__ = [
    "SHUTDOWN_TIMEOUT",
    "is_loop_reactor",
    "loop_reactor",
    "refuse_blocking",
    "running_loop",
]

_log = Logger(namespace="untwisted")

#: Seconds the end of ``asyncio.run`` waits for a loop's reactor to shut down
#: (procwork's children: SIGTERM, 3 s, SIGKILL, reaped), as at interpreter
#: exit for the global reactor; what is left then is disconnected.
SHUTDOWN_TIMEOUT = 30.0

# The reactor of each loop that used Twisted, until it is shut down. (A
# reactor holds its loop, so an entry goes only when it is removed: at its
# shutdown, or once its loop is found closed.)
_reactors: weakref.WeakKeyDictionary[AbstractEventLoop, LoopReactor] = (
    weakref.WeakKeyDictionary()
)


def running_loop() -> AbstractEventLoop | None:
    """The asyncio loop running in this thread, or None."""
    try:
        return get_running_loop()
    except RuntimeError:  # asyncio's way to say that none runs
        return None


def loop_reactor() -> LoopReactor | None:
    """The reactor of the asyncio loop running in this thread, or None.

    None when no loop runs in this thread, or when a Twisted reactor drives
    the loop already (the program installed Twisted's asyncio reactor
    itself): then the global reactor is the one to use. Otherwise the loop's
    own :class:`LoopReactor`, made and started on the first call in that
    loop, which also starts a guardian task that shuts it down when
    ``asyncio.run`` cancels the loop's tasks at its end.

    Which thread may call: any; each thread's running loop has its own.
    """
    loop = running_loop()
    if loop is None:
        return None
    reactor = _reactors.get(loop)
    if reactor is not None:
        return reactor
    if _driven_by_twisted(loop):
        return None
    return _start(loop)


def is_loop_reactor(reactor: object) -> bool:
    """Whether ``reactor`` is a :class:`LoopReactor` (without importing it)."""
    module = sys.modules.get("untwisted._loopreactor")
    return module is not None and isinstance(reactor, module.LoopReactor)


def refuse_blocking(what: str) -> None:
    """Raise :class:`ReentrancyError` if an asyncio loop runs in this thread.

    A blocking call there (``untwisted.run``, ``clockwork.wrap``) would
    stop the loop, and everything else it runs, until it returned.
    """
    if running_loop() is not None:
        raise ReentrancyError(
            f"{what}() called inside a running asyncio event loop would block "
            "it until the call returned; 'await' the Deferred or coroutine "
            "instead (procwork's Deferreds are awaitable in asyncio code)"
        )


def _driven_by_twisted(loop: AbstractEventLoop) -> bool:
    # installReactor() puts the global reactor in sys.modules under this
    # name; looking there never installs one.
    reactor = sys.modules.get("twisted.internet.reactor")
    asyncioreactor = sys.modules.get("twisted.internet.asyncioreactor")
    return (
        asyncioreactor is not None
        and isinstance(reactor, asyncioreactor.AsyncioSelectorReactor)
        and getattr(reactor, "_asyncioEventloop", None) is loop
    )


def _start(loop: AbstractEventLoop) -> LoopReactor:
    from untwisted._loopreactor import LoopReactor

    _forget_closed_loops()
    # SIGTERM and the other fatal signals end the program with an exception,
    # so that asyncio.run's end (the guardian below) stops the children.
    # Only where the program left them at their default; asyncio.run's own
    # SIGINT handler is kept.
    catch_fatal_signals()
    reactor = LoopReactor(loop)
    # Not run(): the loop is running already. No signal handlers: the loop
    # is the program's, and so are its signals.
    reactor.startRunning(installSignalHandlers=False)
    _reactors[loop] = reactor
    guardian = loop.create_task(_guard(reactor), name=f"untwisted guardian of {loop!r}")
    _guardians.add(guardian)
    guardian.add_done_callback(_guardians.discard)
    return reactor


# Tasks are referenced weakly by their loop: keep the guardians.
_guardians: set[Future[None]] = set()


async def _guard(reactor: LoopReactor) -> None:
    """Wait, doing nothing, until cancelled; then shut ``reactor`` down.

    ``asyncio.run`` (and ``asyncio.Runner``) cancel every task left when the
    main coroutine ends, and run the loop until they are done, before they
    close it: that is when the reactor stops.
    """
    try:
        await reactor.loop.create_future()  # only a cancel ends this
    finally:
        await _shut_down(reactor)


async def _shut_down(reactor: LoopReactor) -> None:
    loop = reactor.loop
    stopped: Future[None] = loop.create_future()
    reactor.addSystemEventTrigger("after", "shutdown", _set, stopped)
    timer = loop.call_later(SHUTDOWN_TIMEOUT, _set, stopped)
    try:
        if reactor.running:
            # Twisted's shutdown, on the loop: the "before" triggers
            # (procwork terminates its children and waits for them), then
            # every connection and pipe closed.
            reactor.stop()
        await stopped
    finally:
        timer.cancel()
        if reactor.running:
            _log.warn(
                "{reactor} did not shut down within {seconds} s; "
                "disconnecting what is left",
                reactor=reactor,
                seconds=SHUTDOWN_TIMEOUT,
            )
        reactor.close()
        if _reactors.get(loop) is reactor:
            del _reactors[loop]


def _set(future: Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _forget_closed_loops() -> None:
    """Take the reactors of loops closed without ``asyncio.run``'s final
    cancel off the table, their descriptors closed (their children, if any,
    are killed at interpreter exit)."""
    for loop, reactor in list(_reactors.items()):
        if loop.is_closed():
            del _reactors[loop]
            reactor.close()
