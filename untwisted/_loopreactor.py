"""LoopReactor: Twisted's asyncio reactor on a loop the program runs itself.

Imported the first time Twisted is used inside a running asyncio loop
(:func:`untwisted._asyncio.loop_reactor`), never by a program that does not
use asyncio: Twisted's asyncio reactor brings its TCP, UDP and Unix modules.

Design: ARCHITECTURE.md, "asyncio".
"""

from __future__ import annotations

import threading
from asyncio import AbstractEventLoop
from collections.abc import Callable
from typing import Any

from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.internet.posixbase import PosixReactorBase

from untwisted._errors import ForeignThreadError
from untwisted._signals import held, held_into

__all__ = ["LoopReactor"]


class LoopReactor(AsyncioSelectorReactor):
    """Twisted's ``AsyncioSelectorReactor`` bound to one running asyncio loop.

    Not installed as the global reactor: each loop that uses Twisted gets
    its own (:func:`untwisted.lowlevel.loop_reactor`), started without
    Twisted's signal handlers and stopped when the loop's tasks are
    cancelled at the end of ``asyncio.run``. The loop belongs to the
    program, so this reactor never runs or stops it.

    Which thread may call: the loop's own (:meth:`check_thread`); another
    thread hands calls over with :meth:`callFromThread`.

    Attributes:
        loop: The asyncio loop that runs this reactor's I/O and timers.
        thread: The thread that runs that loop.
        closed: True once the reactor was stopped and taken off its loop; a
            new one serves the loop (or the next loop) from then on.
    """

    # The global reactor's I/O thread (threadable.ioThread) stays its own:
    # this reactor's thread is checked by check_thread below.
    _registerAsIOThread = False

    def __init__(self, loop: AbstractEventLoop) -> None:
        super().__init__(loop)
        self.loop = loop
        self.thread = threading.current_thread()
        self.closed = False

    def __repr__(self) -> str:
        return f"<LoopReactor of {self.loop!r}{' closed' if self.closed else ''}>"

    def check_thread(self, what: str) -> None:
        """Raise unless called from the thread that runs this reactor's loop.

        Raises:
            ForeignThreadError: called from another thread.
        """
        thread = threading.current_thread()
        if thread is not self.thread:
            raise ForeignThreadError(
                f"{what}() called from thread {thread.name!r}, but its reactor "
                f"runs on the asyncio event loop of thread {self.thread.name!r}; "
                "call it from a coroutine or callback of that loop, or hand it "
                "over with loop.call_soon_threadsafe() "
                "(asyncio.run_coroutine_threadsafe() to wait for its result)"
            )

    # (The ignore: Twisted 26's AsyncioSelectorReactor names the callable
    # "callable", its ReactorBase and Twisted 25.5 "f".)
    def callFromThread(  # type: ignore[override, unused-ignore]
        self, f: Callable[..., Any], *args: object, **kwargs: object
    ) -> None:
        """Call ``f`` on a later turn of the loop, from any thread.

        From the loop's own thread this is a timer due now: no write to the
        loop's self-pipe and no wake-up (procwork queues one such call per
        turn in which children ended).
        """
        if threading.current_thread() is self.thread:
            self.callLater(0, f, *args, **kwargs)
        else:
            super().callFromThread(f, *args, **kwargs)

    def crash(self) -> None:
        # AsyncioSelectorReactor.crash also stops the asyncio loop, which is
        # the program's here: asyncio.run would fail with "Event loop
        # stopped before Future completed". Stopping this reactor (at the
        # end of asyncio.run) must leave the loop running.
        PosixReactorBase.crash(self)

    def _readOrWrite(self, selectable: Any, read: bool) -> None:
        # Fatal signals wait while Twisted handles a descriptor (a child's
        # pipe or pidfd: an exception between its waitpid and its record
        # would lose a child). Twisted's callWithLogger around this would
        # log and swallow a SystemExit, so it is raised from the loop's
        # next callback instead.
        with held_into(self._raise_soon):
            super()._readOrWrite(selectable, read)

    def _onTimer(self) -> None:
        # Timers run straight from the loop: a postponed signal's exception
        # raised at the end of this block reaches the program.
        with held():
            super()._onTimer()

    def _raise_soon(self, error: BaseException) -> None:
        self.loop.call_soon(_raise, error)

    def close(self) -> None:
        """Take this reactor off its loop for good.

        Whatever is still registered is disconnected (Twisted's shutdown
        did it already unless it was cut short), the pending timed calls
        are cancelled, and the reactor's waker pipe is closed. Call after
        the reactor's shutdown, from the loop's thread.
        """
        self.closed = True
        if self.running:
            # Cut short (or never stopped: its loop was closed by hand).
            # Not running, the pipes and pidfds disconnected below close
            # for real instead of taking it for a stale event.
            self.crash()
        self.disconnectAll()
        calls: list[Any] = list(self.getDelayedCalls())
        for call in calls:
            call.cancel()
        waker = self.waker
        if waker is not None:
            self.removeReader(waker)
            waker.connectionLost(None)
            self.waker = None


def _raise(error: BaseException) -> None:
    raise error
