"""The reactor procwork runs on: its type, and the one way to get the default.

Every procwork class takes its reactor as a parameter (tests pass a
``task.Clock`` or a ``MemoryReactorClock``) and, when none is given, uses
:func:`default_reactor`: inside a running asyncio loop, that loop's own
reactor (``untwisted.lowlevel.loop_reactor()``, see ARCHITECTURE.md,
"asyncio"); elsewhere the global Twisted reactor, which is the one that
untwisted's default driver runs, imported on first use so that importing
procwork installs no reactor.

:class:`Reactor` is what procwork needs of every reactor: time
(``seconds``, ``callLater``), which a ``task.Clock`` has. What only a real
reactor has is asked for where it is used, and code that uses it checks
first, so a test clock does without: ``addSystemEventTrigger`` (children
killed at shutdown, :mod:`procwork._shutdown`), ``callFromThread`` and
``running`` (:mod:`procwork._spawn`), the file-descriptor set
(``IReactorFDSet``, for pidfds) and ``spawnProcess`` (procmon). The small
protocols below name those extras, for the code that has checked for them
(or, like the monitor, is only ever given a real reactor).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = [
    "DelayedCall",
    "DescriptorReactor",
    "ProcessReactor",
    "Reactor",
    "ReactorTime",
    "SystemEvents",
    "ThreadCalls",
    "default_reactor",
]


# Structural stand-ins for Twisted's IReactorTime and IDelayedCall: mypy
# cannot check zope interfaces (their methods are declared without self).
class DelayedCall(Protocol):
    """A call scheduled with ``callLater``."""

    def active(self) -> bool: ...
    def cancel(self) -> None: ...


class Reactor(Protocol):
    """What procwork needs of every reactor: ``IReactorTime``."""

    def seconds(self) -> float: ...
    # Positional-only: a test's fake reactor may name them as it likes.
    def callLater(
        self, delay: float, callable: Callable[..., Any], /, *args: Any, **kw: Any
    ) -> Any: ...


class ReactorTime(Reactor, Protocol):
    """All of ``IReactorTime``: procmon also lists the pending calls."""

    def getDelayedCalls(self) -> Any: ...


class SystemEvents(Protocol):
    """``IReactorCore``'s system event triggers (shutdown hooks)."""

    def addSystemEventTrigger(
        self, phase: str, eventType: str, callable: Callable[..., Any], /, *args: Any
    ) -> Any: ...
    def removeSystemEventTrigger(self, triggerID: Any, /) -> None: ...


class ThreadCalls(Protocol):
    """``IReactorThreads.callFromThread``: a call queued to the reactor's thread."""

    def callFromThread(
        self, callable: Callable[..., Any], /, *args: Any, **kw: Any
    ) -> None: ...


class DescriptorReactor(Reactor, Protocol):
    """A :class:`Reactor` with readers (``IReactorFDSet``): pidfds are watched."""

    # Any: Twisted's IReadDescriptor is a zope interface mypy cannot check.
    def addReader(self, reader: Any, /) -> None: ...
    def removeReader(self, reader: Any, /) -> None: ...


class ProcessReactor(Reactor, Protocol):
    """A :class:`Reactor` that spawns processes (``IReactorProcess``)."""

    # Any: the arguments and the transport are Twisted's, passed through as is.
    def spawnProcess(
        self,
        processProtocol: Any,
        executable: Any,
        args: Any = ...,
        env: Any = ...,
        path: Any = ...,
        uid: Any = ...,
        gid: Any = ...,
        usePTY: Any = ...,
        childFDs: Any = ...,
    ) -> Any: ...


def default_reactor() -> Any:
    """The reactor to use when none is given.

    Inside a running asyncio loop that no Twisted reactor drives, the loop's
    own reactor (made on first use, shut down at the end of
    ``asyncio.run``); elsewhere the global reactor, the one
    ``untwisted.run``/``tick`` drive, imported on first use (untwisted does
    so): library code never imports it at module import time, so a program
    may still install another first. Typed ``Any``: it is the whole of
    Twisted's reactor, not just :class:`Reactor`.
    """
    import untwisted

    reactor = untwisted.lowlevel.loop_reactor()
    if reactor is not None:
        return reactor
    return untwisted.lowlevel.default_driver().reactor
