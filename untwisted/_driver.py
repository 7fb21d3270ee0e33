"""Drive a Twisted reactor from blocking code, one iteration at a time.

The :class:`Driver` starts the reactor lazily (``startRunning``), runs the
body of Twisted's main loop only while a caller waits, never stops it until
interpreter exit, and decides which thread owns it. It calls the two halves
of an iteration itself, checking its caller between them, so that no
wake-up is lost.

Design: ARCHITECTURE.md, "The driver".
"""

from __future__ import annotations

import atexit
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Generator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar, cast

from twisted.internet.defer import Deferred
from twisted.python import threadable
from twisted.python.failure import Failure

from untwisted import _signals
from untwisted._adapt import as_deferred
from untwisted._asyncio import refuse_blocking
from untwisted._errors import ForeignThreadError, ReentrancyError, Timeout

__all__ = ["DrivableReactor", "Driver"]

T = TypeVar("T")


class DrivableReactor(Protocol):
    """What the driver needs of a reactor: Twisted's ``ReactorBase`` has it.

    ``runUntilCurrent`` and ``doIteration`` are the two halves of
    ``IReactorCore.iterate()`` (the driver calls them separately, so that no
    wake-up is lost: ARCHITECTURE.md, "The driver"). A reactor may also have
    ``threadCallQueue``, the calls queued by ``callFromThread`` and not yet
    run.
    """

    running: bool

    def startRunning(self, installSignalHandlers: bool = True) -> None: ...
    def runUntilCurrent(self) -> None: ...
    def doIteration(self, delay: float | None) -> None: ...
    def timeout(self) -> float | None: ...
    def stop(self) -> None: ...
    def addSystemEventTrigger(
        self, phase: str, eventType: str, callable: Callable[..., Any], *args: Any
    ) -> Any: ...
    def callLater(
        self, delay: float, callable: Callable[..., Any], *args: Any
    ) -> Any: ...
    def seconds(self) -> float: ...


def _global_reactor() -> DrivableReactor:
    # Imported here, not at module import: importing untwisted must not
    # install a reactor, so a program can still choose its own first.
    from twisted.internet import reactor

    return cast(DrivableReactor, reactor)


class Driver:
    """Runs one reactor on behalf of blocking callers.

    Which thread may call: the first thread that calls this driver (or
    procwork on its reactor) owns the reactor, whether or not that call
    needed to start it; a call from any other thread raises
    :class:`ForeignThreadError`. See :meth:`check_thread` for the two ways
    ownership moves (a first thread that ended before the reactor started;
    a program's own ``reactor.run()``).

    Args:
        reactor: The reactor to drive; default the global Twisted reactor,
            imported on first use.
        register_atexit: Called once with the shutdown hook when the reactor
            is started; tests inject it. By default the hook runs at
            interpreter exit *before* non-daemon threads are joined, because
            Twisted's thread pool threads only stop when the reactor shuts
            down: a plain :mod:`atexit` hook would wait for them for ever.
        shutdown_timeout: At most this many seconds are spent at exit waiting
            for Twisted's shutdown triggers.
        cleanup_timeout: At most this many seconds ``run()`` spends, after
            cancelling on timeout or Ctrl-C, on cleanups registered with
            :meth:`linger`.
    """

    def __init__(
        self,
        reactor: DrivableReactor | None = None,
        *,
        register_atexit: Callable[[Callable[[], None]], object] | None = None,
        shutdown_timeout: float = 30.0,
        cleanup_timeout: float = 10.0,
    ) -> None:
        self._reactor = reactor
        self._register_atexit = register_atexit or _register_at_exit
        self._shutdown_timeout = shutdown_timeout
        self._started = False
        # The owning thread, decided at the first call (see check_thread).
        # A Thread, not its ident: an ident is reused once a thread ends,
        # and whether the owner has ended is part of the rule.
        self._owner: threading.Thread | None = None
        self._claiming = threading.Lock()
        self._depth = 0  # > 0 while code runs inside this driver's reactor
        self._lingering: set[Deferred[Any]] = set()
        self.cleanup_timeout = cleanup_timeout

    # -- the reactor ---------------------------------------------------

    @property
    def reactor(self) -> DrivableReactor:
        """The reactor this driver runs (imported lazily)."""
        if self._reactor is None:
            self._reactor = _global_reactor()
        return self._reactor

    @property
    def inside(self) -> bool:
        """True while code runs inside this reactor (a callback, a task)."""
        return self._depth > 0

    def stopper_if_foreign(self) -> Callable[[], object] | None:
        """A graceful stop of the reactor if a program's own ``reactor.run()``
        drives it, else None (see :func:`untwisted._signals.set_foreign_loop`).
        """
        if self._started:
            return None
        # Never import (install) the global reactor from a signal handler.
        reactor = self._reactor or sys.modules.get("twisted.internet.reactor")
        if reactor is None or not getattr(reactor, "running", False):
            return None
        return lambda: _call_from_thread(reactor, _stop_quietly, reactor)

    def check_caller(self, what: str) -> None:
        """Raise unless the caller may block on this reactor now.

        Blocking calls (``run``, ``tick``, clockwork's ``Worker.work``) call
        this first.

        Args:
            what: The call to name in the message, e.g. ``"untwisted.run"``.

        Raises:
            ForeignThreadError: called from a thread that does not drive the
                reactor.
            ReentrancyError: called from inside the reactor, or inside a
                running asyncio loop (which the wait would block).
        """
        # First: a loop's thread must not claim the reactor on its way out.
        refuse_blocking(what)
        self.check_thread(what)
        if self._depth:
            raise ReentrancyError(
                f"{what}() called from inside the reactor (a callback or a "
                "clockwork task) would wait on itself forever; use 'yield' in a "
                "generator or 'await' in 'async def' instead"
            )

    def check_thread(self, what: str) -> None:
        """Raise unless called from the thread that owns this reactor.

        Every call of this driver checks it, and so do procwork's calls that
        touch the global reactor (``run``, ``spawn``, a ``Process``'s or a
        ``Supervisor``'s methods). The owner is decided at the first such
        call, *whatever it does*: a ``run()`` whose result is already in
        hand, which never starts the reactor, claims it as surely as a
        ``tick()``. (It used not to, and a thread calling procwork between
        that ``run()`` and the next one raced the owner inside Twisted:
        runs that never finished, slots never freed.)

        Ownership moves in two cases only:

        - The owner has ended and the reactor was never started: the next
          thread to call takes it over. So a worker thread may prepare runs
          (``procwork.run`` starts them) and, once joined, leave them to the
          main thread to drive. While the first thread lives, every other
          thread is refused, the main thread included: it could call again
          at any moment. Once this driver has started the reactor it never
          changes hands (its signal handling and Twisted's notion of the
          I/O thread were set up for that thread), even if the owner ends.
        - The program runs the reactor itself (``reactor.run()`` in some
          thread): that thread, which Twisted registers as its I/O thread,
          is the one allowed while it runs, whoever called first.

        Args:
            what: The call to name in the message, e.g. ``"procwork.run"``.

        Raises:
            ForeignThreadError: called from another thread.
        """
        thread = threading.current_thread()
        owner = self._owner
        if self._started:
            # Fixed since the start: no lock on the path every call takes.
            if owner is not thread:
                raise self._foreign(what, thread, owner)
            return
        if self._foreign_loop_running():
            if not threadable.isInIOThread():
                raise ForeignThreadError(
                    f"{what}() called from thread {thread.name!r}, but the "
                    f"reactor runs in thread {_thread_name(threadable.ioThread)!r}; "
                    "call it from that thread, or hand the call over with "
                    "reactor.callFromThread() (threads.blockingCallFromThread() "
                    "to wait for its result)"
                )
            return
        with self._claiming:
            owner = self._owner
            if owner is None or (owner is not thread and not owner.is_alive()):
                self._owner = thread
            elif owner is not thread:
                raise self._foreign(what, thread, owner)

    def _foreign(
        self, what: str, thread: threading.Thread, owner: threading.Thread | None
    ) -> ForeignThreadError:
        ended = owner is not None and not owner.is_alive()
        return ForeignThreadError(
            f"{what}() called from thread {thread.ident}, but the reactor is "
            f"driven by thread {owner.ident if owner else None}"
            + (
                ", which has ended; a reactor it started cannot be driven by "
                "another thread: drive it from one thread for the whole program"
                if ended
                else "; hand the work to that thread with "
                "reactor.callFromThread() instead"
            )
        )

    def _foreign_loop_running(self) -> bool:
        # The program's own reactor.run() (never this driver's, it did not
        # start it). Never import (install) the global reactor here.
        reactor = self._reactor or sys.modules.get("twisted.internet.reactor")
        return reactor is not None and bool(getattr(reactor, "running", False))

    def _ensure_started(self, what: str) -> DrivableReactor:
        self.check_caller(what)
        reactor = self.reactor
        if self._started:
            return reactor
        if reactor.running:
            raise ReentrancyError(
                f"{what}() called while the program's own reactor.run() "
                "is running; inside it, 'yield' or 'await' instead of blocking"
            )
        on_main = threading.current_thread() is threading.main_thread()
        if on_main:
            # startRunning installs Twisted's SIGINT/SIGTERM handlers, which
            # call reactor.stop(), and a stopped reactor can never restart.
            # Replace them once startup has finished (an 'after' trigger runs
            # after Twisted's own 'during' install, even if startup waits).
            # Added before startRunning: the startup event usually fires and
            # finishes inside that call, and a trigger added later would wait
            # for a startup that never comes again.
            _signals.catch_fatal_signals()
            before = _signals.handlers_now()
            _signals.forward_twisted_handlers(reactor, before)
            reactor.addSystemEventTrigger(
                "after", "startup", _signals.restore_after_twisted, before, reactor
            )
        with self.entered():
            # Marked started first: a fatal signal landing during startup is
            # then the driver's (held, and raised when this block ends), not
            # taken for one reaching a program's own reactor.run() (which
            # stops the reactor for good); and once it is raised, the next
            # run() knows the reactor is the driver's, not reentrant use.
            self._started = True
            try:
                reactor.startRunning(installSignalHandlers=on_main)
            finally:
                if reactor.running:
                    self._register_atexit(self.shutdown)
                else:
                    self._started = False
        return reactor

    @contextmanager
    def entered(self) -> Generator[None, None, None]:
        """Code in this block counts as running inside the reactor.

        Blocking calls made there raise :class:`ReentrancyError`. The driver
        enters it around each reactor iteration; clockwork enters it while it
        steps tasks (which may happen outside any iteration, in
        ``Worker.tick()`` or under a program's own ``reactor.run()``).
        Fatal signals (Ctrl-C, SIGTERM, ...) are held inside it and raised
        when the outermost such block ends: an exception raised from a
        signal handler in the middle of a Twisted callback could leave the
        reactor half-updated.
        """
        self._depth += 1
        try:
            with _signals.held():
                yield
        finally:
            self._depth -= 1

    # -- the public operations ------------------------------------------

    def add(self, x: object) -> Deferred[Any]:
        """Start ``x`` (Deferred, coroutine, awaitable or clockwork generator).

        Returns a Deferred for its result. Nothing runs further until the
        reactor is driven (``tick``, ``run``, or a program's ``reactor.run()``).

        Raises:
            ForeignThreadError: called from a thread that does not drive the
                reactor (it may be called from inside the reactor, unlike
                ``run``).
            TypeError: ``x`` is none of the accepted kinds; the message names it.
        """
        self.check_thread("untwisted.add")
        return as_deferred(x)

    def tick(
        self,
        timeout: float | None = 0.0,
        *,
        until: Callable[[], bool] | None = None,
    ) -> None:
        """Run one reactor iteration.

        Runs the timers and thread calls that are due, then waits at most
        ``timeout`` seconds (less if a timer falls due sooner or a call is
        queued; ``None``: until a timer, a call or I/O) for I/O and handles it.

        Args:
            timeout: The longest wait for I/O, in seconds.
            until: Checked after the due calls ran; when it returns True the
                iteration ends there, without waiting. A caller waiting for
                a condition passes it, so that a result delivered by a timer
                or another thread never leaves it blocked.
        """
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"untwisted.tick(timeout={timeout!r}): must be >= 0")
        reactor = self._ensure_started("untwisted.tick")
        self._step(reactor, timeout, until)

    def _step(
        self,
        reactor: DrivableReactor,
        limit: float | None,
        until: Callable[[], bool] | None,
    ) -> None:
        # The body of Twisted's mainLoop, with the caller's check between its
        # two halves: iterate() would block in doIteration with a result that
        # runUntilCurrent just delivered (a timer, a callFromThread) in hand.
        with self.entered():
            reactor.runUntilCurrent()
            if until is None or not until():
                reactor.doIteration(_delay(reactor, limit))

    def run(
        self,
        x: Deferred[T] | Coroutine[Any, Any, T] | Generator[Any, Any, T] | object,
        timeout: float | None = None,
    ) -> Any:
        """Block until ``x`` finishes; return its result or raise its error.

        Args:
            x: A Deferred, coroutine, awaitable or clockwork generator.
            timeout: Seconds to wait; on expiry ``x`` is cancelled (which
                kills any process it owns) and :class:`Timeout` is raised.
                ``None`` waits for ever, at no CPU cost.

        Raises:
            Timeout: ``x`` did not finish in time.
            ReentrancyError: called from inside the reactor.
            KeyboardInterrupt: Ctrl-C while waiting; ``x`` is cancelled first
                and the reactor stays usable.
        """
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"untwisted.run(timeout={timeout!r}): must be >= 0")
        self.check_caller("untwisted.run")
        d = self.add(x)
        box: list[object] = []
        d.addBoth(_capture, box)
        if not box:
            self._wait(d, box, x, timeout)
        result = box[0]
        if isinstance(result, Failure):
            raise _exception_of(result)
        return result

    def _wait(
        self, d: Deferred[Any], box: list[object], x: object, timeout: float | None
    ) -> None:
        reactor = self._ensure_started("untwisted.run")
        deadline = None if timeout is None else time.monotonic() + timeout

        def done() -> bool:
            return bool(box)

        try:
            while not box:
                if deadline is None:
                    self._step(reactor, None, done)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    d.cancel()
                    expired = Timeout(
                        f"untwisted.run({_describe(x)}) did not finish within "
                        f"{timeout:g} s; it was cancelled"
                    )
                    # Whatever the cancel made of x (a CancelledError, or a
                    # FirstError of gatherResults wrapping one, or a value
                    # its canceller chose), the caller's answer is Timeout;
                    # a failure is kept as its cause.
                    if box and isinstance(box[0], Failure):
                        expired.__cause__ = box[0].value
                    box[:] = [Failure(expired)]
                    self._settle(reactor)
                    return
                self._step(reactor, remaining, done)
        except BaseException:
            # Ctrl-C, SystemExit or a bug: don't leave x running unattended.
            if not box:
                d.cancel()
                self._settle(reactor)
            raise

    def linger(self, cleanup: Deferred[Any]) -> None:
        """Ask ``run()`` to wait for ``cleanup`` after it cancels its argument.

        Cancelling fails a Deferred at once, but what it owned may need a few
        more reactor turns to be cleaned up (procwork escalates SIGTERM to
        SIGKILL after a grace period). When ``run()`` cancels on timeout or
        Ctrl-C, it keeps driving the reactor until every lingering cleanup has
        fired, for at most ``cleanup_timeout`` seconds, so that nothing is
        left half-killed when the blocking caller gets control back.
        """
        self._lingering.add(cleanup)
        cleanup.addBoth(self._done_lingering, cleanup)

    def _done_lingering(self, result: object, cleanup: Deferred[Any]) -> None:
        self._lingering.discard(cleanup)

    def _settle(self, reactor: DrivableReactor) -> None:
        deadline = time.monotonic() + self.cleanup_timeout
        while self._lingering:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._step(reactor, remaining, self._settled)

    def _settled(self) -> bool:
        return not self._lingering

    def shutdown(self) -> None:
        """Stop the reactor once, firing Twisted's shutdown triggers.

        Registered with :mod:`atexit` when the reactor is started. After it
        the reactor cannot be driven again, so call it only at the very end.
        """
        if not self._started or self._owner is not threading.current_thread():
            return
        reactor = self.reactor
        if not reactor.running:
            return
        reactor.stop()
        deadline = time.monotonic() + self._shutdown_timeout
        while reactor.running:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._step(reactor, remaining, _stopped(reactor))


def _register_at_exit(hook: Callable[[], None]) -> None:
    # threading._register_atexit is what concurrent.futures uses for the same
    # reason; it exists on every CPython this package supports (3.9+), but it
    # is private, so fall back to atexit (after threads) if it ever goes.
    register = getattr(threading, "_register_atexit", None)
    if register is None:  # pragma: no cover
        atexit.register(hook)
        return
    try:
        register(hook)
    except RuntimeError:  # already shutting down: nothing left to hook
        atexit.register(hook)


def _capture(result: object, box: list[object]) -> None:
    # Taking the result (success or Failure) out of the chain also marks a
    # Failure as handled, so Twisted does not log "Unhandled error".
    box.append(result)


def _exception_of(failure: Failure) -> BaseException:
    error = failure.value
    assert isinstance(error, BaseException)
    return error


def _delay(reactor: DrivableReactor, limit: float | None) -> float | None:
    """How long the next wait for I/O may last: never past a due call."""
    if getattr(reactor, "threadCallQueue", None):
        return 0.0  # queued by callFromThread (from any thread): run them now
    delay = reactor.timeout()  # also counts calls added since runUntilCurrent
    if limit is not None and (delay is None or delay > limit):
        return limit
    return delay


# Any: the reactor may come from sys.modules, a ModuleType to mypy.
def _call_from_thread(reactor: Any, f: Callable[..., object], *args: object) -> None:
    # What Twisted's own SIGTERM handler does: never stop from inside a
    # signal handler, which may have interrupted the reactor mid-call.
    reactor.callFromThread(f, *args)


def _stop_quietly(reactor: DrivableReactor) -> None:
    if reactor.running:
        reactor.stop()


def _stopped(reactor: DrivableReactor) -> Callable[[], bool]:
    return lambda: not reactor.running


def _describe(x: object) -> str:
    # Say what the caller passed in, not the state the wait left it in.
    if isinstance(x, Deferred):
        return "<Deferred>"
    name = getattr(x, "__qualname__", None)
    if isinstance(name, str):
        return f"{name}(...)"
    text = repr(x)
    return text if len(text) <= 80 else text[:77] + "..."


def _thread_name(ident: object) -> str:
    for thread in threading.enumerate():
        if thread.ident == ident:
            return thread.name
    return str(ident)
