"""Signals that would kill the program become exceptions, raised where it is safe.

:func:`catch_fatal_signals` turns the fatal signals still at their default
disposition into exceptions (``KeyboardInterrupt`` for SIGINT,
``SystemExit(128 + signum)`` for the others), so cleanup runs; inside a
:func:`held` block the exception waits until the outermost block ends. A
program's own handlers are never replaced; under its own ``reactor.run()``
the signal stops the reactor instead (:func:`set_foreign_loop`). A signal
that lands while a ``__del__`` runs is raised after it, not inside it,
where Python would drop the exception.

Design: ARCHITECTURE.md, "Fatal signals".
"""

from __future__ import annotations

import _thread
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = [
    "FATAL_SIGNALS",
    "catch_fatal_signals",
    "exception_for",
    "forward_twisted_handlers",
    "held",
    "held_into",
    "raise_pending",
    "restore_after_twisted",
    "set_foreign_loop",
]

#: The signals turned into exceptions: those whose default action ends the
#: program and that a user, a terminal or a supervisor sends.
FATAL_SIGNALS: tuple[signal.Signals, ...] = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGALRM,
)


class _Gate:
    """The process-wide state of held signals (signal handlers are global)."""

    depth = 0  # > 0 inside held(): raising is postponed
    pending: int | None = None  # a signal that arrived while held
    redelivering = False  # a thread is about to simulate a deferred signal


_gate = _Gate()
_MAIN_THREAD = threading.main_thread().ident

# Returns a function that stops the reactor when a program's own
# reactor.run() drives it (see set_foreign_loop), else None.
_foreign_loop: Callable[[], Callable[[], object] | None] | None = None


def set_foreign_loop(check: Callable[[], Callable[[], object] | None]) -> None:
    """Register how to tell that a program's own ``reactor.run()`` is running.

    ``check()`` returns a function that stops that reactor gracefully, or
    None when no such loop runs (untwisted drives the reactor, or nothing
    does).
    """
    global _foreign_loop
    _foreign_loop = check


def _handler(signum: int, frame: FrameType | None) -> None:
    stop = _foreign_loop() if _foreign_loop is not None else None
    if stop is not None:
        # Twisted's own loop would catch and log our exception, and the
        # signal would be lost: stop the reactor, as Twisted does for SIGTERM.
        stop()
        return
    if _in_finalizer(frame):
        _redeliver_later(signum)
        return
    if _gate.depth and _gate.pending is None:
        _gate.pending = signum
        return
    # Not held, or a second signal while one is pending: raise now, so
    # Ctrl-C twice still interrupts a step stuck in a busy loop.
    _gate.pending = None
    raise exception_for(signum)


def _in_finalizer(frame: FrameType | None) -> bool:
    """Whether ``frame`` runs inside a ``__del__``.

    Python drops an exception raised there ("Exception ignored in ...") and
    the program runs on as if never signalled: a SIGINT that landed in
    Twisted 25.5's ``DebugInfo.__del__`` left 1 of 240 spawning programs
    looping for ever. (Weakref and GC callbacks drop exceptions too; they
    are not recognized here.)
    """
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def _redeliver_later(signum: int) -> None:
    """Simulate ``signum`` again from a new thread, so that the handler runs
    at the main thread's next step: after the finalizer, or here again if it
    still runs. A raw thread (``_thread``): the interrupted code may hold
    ``threading``'s own locks. One at a time; the signal itself is this one."""
    if _gate.redelivering:
        return
    _gate.redelivering = True
    _thread.start_new_thread(_redeliver, (signum,))


def _redeliver(signum: int) -> None:
    time.sleep(0.001)  # let the finalizer go on
    _gate.redelivering = False
    _thread.interrupt_main(signal.Signals(signum))


def exception_for(signum: int) -> BaseException:
    """The exception a fatal signal becomes."""
    if signum == signal.SIGINT:
        return KeyboardInterrupt()
    return SystemExit(128 + signum)


def _is_default(handler: Any) -> bool:
    return handler in (signal.SIG_DFL, signal.default_int_handler)


def catch_fatal_signals() -> bool:
    """Turn the fatal signals still at their default action into exceptions.

    Idempotent and cheap after the first call. Signals the program handles
    or ignores itself are left alone.

    Which thread may call: any; only the main thread can install handlers
    (a Python rule), so elsewhere this does nothing and returns False.

    Returns:
        True if the handlers are in place (installed now or before).
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    for signum in FATAL_SIGNALS:
        current = signal.getsignal(signum)
        if current is not _handler and _is_default(current):
            signal.signal(signum, _handler)
    return True


# The reactor methods Twisted's startup installs as signal handlers.
_TWISTED_HANDLERS = {"sigInt": signal.SIGINT, "sigTerm": signal.SIGTERM}


def _ours_or_theirs(handler: Any) -> Any:
    """What handles a signal whose handler was ``handler`` before Twisted's
    startup: ours where ours or none was, else the program's own."""
    return _handler if handler is _handler or _is_default(handler) else handler


def forward_twisted_handlers(reactor: object, before: dict[int, Any]) -> None:
    """Make the handlers Twisted's startup installs call those of ``before``.

    ``reactor.startRunning()`` installs ``reactor.sigTerm`` (and ``sigInt``)
    in its *during startup* phase, and :func:`restore_after_twisted` can put
    ours back only in the *after* phase: a SIGTERM landing in between would
    call ``reactor.stop()``, which kills every child and leaves a reactor
    that can never run again, while the signal itself is swallowed (the
    program went on). Shadowing those methods on the reactor instance, before
    ``startRunning`` binds them, closes that window: whatever Twisted
    installs hands the signal on as if it had never been replaced.

    Args:
        reactor: The reactor about to be started.
        before: Each signal's handler from just before ``startRunning``.
    """
    for name, signum in _TWISTED_HANDLERS.items():
        handler = _ours_or_theirs(before.get(signum, signal.SIG_DFL))
        if handler is signal.SIG_IGN:
            handler = _ignore
        setattr(reactor, name, handler)


def _ignore(signum: int, frame: FrameType | None) -> None:
    """A signal the program ignores, reaching a handler Twisted installed."""


def restore_after_twisted(before: dict[int, Any], reactor: object = None) -> None:
    """Undo Twisted's SIGINT/SIGTERM handlers where ours (or none) were before.

    ``reactor.startRunning()`` installs handlers that call ``reactor.stop()``,
    and a stopped reactor can never run again. ``before`` maps each signal
    to its handler from just before ``startRunning``; the methods
    :func:`forward_twisted_handlers` shadowed on ``reactor`` are removed.
    """
    for signum, handler in before.items():
        signal.signal(signum, _ours_or_theirs(handler))
    if reactor is not None:
        for name in _TWISTED_HANDLERS:
            vars(reactor).pop(name, None)


def handlers_now() -> dict[int, Any]:
    """The current handlers of the signals Twisted's startup replaces."""
    return {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}


def held() -> _Held:
    """Postpone fatal-signal exceptions until the outermost block ends.

    Use around a step that must not be torn in half: starting a child and
    recording it, one reactor iteration. When the outermost block ends, a
    signal that arrived meanwhile is raised (after the block's own
    exception, if any, has been chained to it).

    Which thread may call: any; off the main thread it does nothing, since
    Python runs signal handlers on the main thread only (holding there would
    raise the main thread's exception in this one).
    """
    return _Held()


class _Held:
    """The block of :func:`held`. A class rather than a ``@contextmanager``
    generator: it is entered twice per child started, and a generator-based
    manager costs several Python calls more each time."""

    __slots__ = ("_counted",)

    def __enter__(self) -> None:
        self._counted = threading.get_ident() == _MAIN_THREAD
        if self._counted:
            _gate.depth += 1

    def __exit__(self, *exc_info: object) -> None:
        if self._counted:
            _gate.depth -= 1
            if not _gate.depth:
                raise_pending()


def held_into(deliver: Callable[[BaseException], object]) -> _HeldInto:
    """:func:`held`, handing the postponed exception to ``deliver`` instead.

    For a block that runs inside code which would swallow the exception
    (Twisted's ``callWithLogger`` logs a ``SystemExit`` raised by a reader
    and carries on): ``deliver`` gets the exception when the outermost held
    block ends, and raises it where it can reach the program (an asyncio
    loop's next callback). Which thread may call: any, as :func:`held`.
    """
    return _HeldInto(deliver)


class _HeldInto(_Held):
    """The block of :func:`held_into`: entered as :func:`held`'s, it hands
    the exception on when it ends."""

    __slots__ = ("_deliver",)

    def __init__(self, deliver: Callable[[BaseException], object]) -> None:
        self._deliver = deliver

    def __exit__(self, *exc_info: object) -> None:
        if self._counted:
            _gate.depth -= 1
            signum = _gate.pending
            if signum is not None and not _gate.depth:
                _gate.pending = None
                self._deliver(exception_for(signum))


def raise_pending() -> None:
    """Raise the exception of a signal that arrived while held, if any."""
    signum = _gate.pending
    if signum is not None and not _gate.depth:
        _gate.pending = None
        raise exception_for(signum)
