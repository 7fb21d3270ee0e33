"""Which thread may call procwork: the one that runs the reactor.

:func:`check_thread` is called by every entry point that touches the
reactor, before anything is started, and raises
:class:`untwisted.ForeignThreadError` for any other thread. Who owns the
global reactor is untwisted's driver's to say
(:meth:`untwisted.lowlevel.Driver.check_thread`); an asyncio loop's own
reactor belongs to the loop's thread (``LoopReactor.check_thread``).
Inside a running asyncio loop, the global reactor (which nothing drives
there) is refused with :class:`untwisted.ReentrancyError`.

Design: ARCHITECTURE.md, "Which thread may call".
"""

from __future__ import annotations

import sys
import threading
from typing import Any, cast

from twisted.internet.base import ReactorBase
from twisted.python import threadable

import untwisted
from untwisted import ForeignThreadError

__all__ = ["check_thread"]


def check_thread(what: str, reactor: object | None) -> None:
    """Raise unless the calling thread may use ``reactor`` now.

    Args:
        what: The call to name in the message, e.g. ``"procwork.run"``.
        reactor: The reactor the call would use; ``None`` means the global
            one (if one is installed yet).

    Raises:
        ForeignThreadError: the reactor runs in another thread.
        ReentrancyError: the reactor is the global one, and an asyncio loop
            that it does not drive runs in this thread: nothing would run
            the reactor until the loop stopped.
    """
    # installReactor() puts the reactor itself in sys.modules under that
    # name; looking there never installs one (importing it would).
    global_reactor: object = sys.modules.get("twisted.internet.reactor")
    if reactor is None:
        if untwisted.lowlevel.running_loop() is not None:
            return  # it will be the running loop's own, made in this thread
        reactor = global_reactor
    if not isinstance(reactor, ReactorBase):
        return  # not installed yet, or a test's fake
    if reactor is global_reactor:
        _refuse_in_a_loop(what, reactor)
        # Claims the reactor for this thread if nobody called before.
        untwisted.lowlevel.default_driver().check_thread(what)
    elif untwisted.lowlevel.is_loop_reactor(reactor):
        cast(Any, reactor).check_thread(what)
    elif reactor.running and not threadable.isInIOThread():
        me = threading.current_thread().name
        raise ForeignThreadError(
            f"{what}() called from thread {me!r}, but the reactor runs in thread "
            f"{_thread_name(threadable.ioThread)!r}; call it from that thread, "
            "or hand the call over with reactor.callFromThread() "
            "(threads.blockingCallFromThread() to wait for its result)"
        )


def _refuse_in_a_loop(what: str, global_reactor: object) -> None:
    loop = untwisted.lowlevel.running_loop()
    # Unless the program installed Twisted's asyncio reactor on this loop.
    if loop is None or getattr(global_reactor, "_asyncioEventloop", None) is loop:
        return
    raise untwisted.ReentrancyError(
        f"{what}() called inside a running asyncio event loop, on Twisted's "
        "global reactor, which nothing runs while the loop does: start the "
        "process inside the loop (procwork.run and procwork.spawn use the "
        "loop's own reactor there, and so does a Scheduler made there), or "
        "use it from blocking code"
    )


def _thread_name(ident: object) -> str:
    for thread in threading.enumerate():
        if thread.ident == ident:
            return thread.name
    return str(ident)
