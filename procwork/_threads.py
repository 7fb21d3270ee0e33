"""Which thread may call procwork: the one that runs the reactor.

Twisted's reactor is not thread-safe, and neither is anything built on it.
``procwork.run`` called from another thread while the reactor thread sits in
``epoll_wait`` would start a child, register its pipes and arm its timers
under the reactor's feet: seen as bogus spawn errors (``EBADF``, "9", "16")
when both threads juggled descriptors at once, results delivered to nobody,
scheduler slots never freed and "Unhandled Error" tracebacks. So every entry
point that touches the reactor checks its caller first and raises
:class:`untwisted.ForeignThreadError`, before anything is started.

Who owns the global reactor is untwisted's driver's to say
(:meth:`untwisted.lowlevel.Driver.check_thread`): the first thread that calls
untwisted or procwork owns it, even when that call needed no reactor turn
(an ``untwisted.run`` whose result was already in hand) and even while that
thread is back in plain Python between two calls. Deciding it only when the
reactor first started left a window in which another thread's
``procwork.run`` was let in and then raced the owner inside Twisted. The
driver also knows a program that runs ``reactor.run()`` itself, in a thread
of its own: Twisted registers that thread as its I/O thread
(:func:`twisted.python.threadable.isInIOThread`), and it is the one allowed.

A real reactor other than the global one is checked by Twisted's I/O thread
alone, once it runs. Test fakes (``task.Clock``, ``MemoryReactor``) are not
real reactors and are driven by the test's own thread, so they are not
checked.
"""

from __future__ import annotations

import sys
import threading

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
    """
    # installReactor() puts the reactor itself in sys.modules under that
    # name; looking there never installs one (importing it would).
    global_reactor: object = sys.modules.get("twisted.internet.reactor")
    if reactor is None:
        reactor = global_reactor
    if not isinstance(reactor, ReactorBase):
        return  # not installed yet, or a test's fake
    if reactor is global_reactor:
        # Claims the reactor for this thread if nobody called before.
        untwisted.lowlevel.default_driver().check_thread(what)
    elif reactor.running and not threadable.isInIOThread():
        me = threading.current_thread().name
        raise ForeignThreadError(
            f"{what}() called from thread {me!r}, but the reactor runs in thread "
            f"{_thread_name(threadable.ioThread)!r}; call it from that thread, "
            "or hand the call over with reactor.callFromThread() "
            "(threads.blockingCallFromThread() to wait for its result)"
        )


def _thread_name(ident: object) -> str:
    for thread in threading.enumerate():
        if thread.ident == ident:
            return thread.name
    return str(ident)
