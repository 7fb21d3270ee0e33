"""Which thread may call procwork: the one that runs the reactor.

Twisted's reactor is not thread-safe, and neither is anything built on it.
``procwork.run`` called from another thread while the reactor thread sits in
``epoll_wait`` would start a child, register its pipes and arm its timers
under the reactor's feet: seen as bogus spawn errors (``EBADF``, "9", "16")
when both threads juggled descriptors at once, results delivered to nobody,
scheduler slots never freed and "Unhandled Error" tracebacks. So every entry
point that touches the reactor checks its caller first and raises
:class:`untwisted.ForeignThreadError`, before anything is started.

Who runs the reactor is known in two ways, and both are checked:

- untwisted's driver: the first thread that drives the global reactor owns
  it (:meth:`untwisted.Driver.check_thread`), even while that thread is back
  in plain Python between two ``untwisted.run`` calls;
- Twisted itself: ``startRunning`` registers the thread that starts a
  reactor as its I/O thread (:func:`twisted.python.threadable.isInIOThread`).
  That covers a program that runs ``reactor.run()`` in a thread of its own,
  which untwisted never sees.

Before any reactor runs, any thread may call (the thread that later drives
the reactor will pick the work up). Test fakes (``task.Clock``,
``MemoryReactor``) are not real reactors and are driven by the test's own
thread, so they are not checked.
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
        untwisted.default_driver().check_thread(what)
    if reactor.running and not threadable.isInIOThread():
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
