"""No orphans: procwork's children die with the program.

Two layers. While the reactor can still run, a "before shutdown" trigger
(it fires at interpreter exit through untwisted, on Ctrl-C/SIGTERM through
SystemExit, or when a program's own ``reactor.run()`` stops) sends SIGTERM
to every live child's process group, gives them ``SHUTDOWN_GRACE`` seconds,
then SIGKILLs what is left. As a last resort an :mod:`atexit` hook,
registered when procwork is imported and so run after untwisted's, SIGKILLs
any group still alive.
"""

from __future__ import annotations

import atexit
import weakref
from typing import Any

from twisted.internet.defer import Deferred, DeferredList

from procwork._escalation import terminate_group
from procwork._reactor import Reactor
from procwork._spawn import kill_all_now, live_processes

__all__ = ["SHUTDOWN_GRACE", "terminate_all", "watch_reactor"]

SHUTDOWN_GRACE = 3.0

# Weak, not by id(): a new reactor may reuse a collected one's id.
_watched: weakref.WeakSet[Reactor] = weakref.WeakSet()


def watch_reactor(reactor: Reactor) -> None:
    """Make sure ``reactor``'s shutdown terminates procwork's children (once)."""
    if reactor in _watched or not hasattr(reactor, "addSystemEventTrigger"):
        return
    _watched.add(reactor)
    reactor.addSystemEventTrigger("before", "shutdown", terminate_all, reactor)


def terminate_all(
    reactor: Reactor, grace: float = SHUTDOWN_GRACE
) -> Deferred[Any] | None:
    """SIGTERM every live child's group, SIGKILL after ``grace`` seconds.

    Returns a Deferred that fires when all are reaped (None if there were
    none), so Twisted's shutdown waits for it.
    """
    procs = [p for p in live_processes() if p._reactor is reactor]
    if not procs:
        return None
    # One escalation per group, each cancelled by its own reaping.
    return DeferredList([terminate_group(p, reactor, grace) for p in procs])


atexit.register(kill_all_now)
