"""A Task: one generator stack being run by a Worker."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["Task"]

_log = Logger()
_NOTHING: Any = object()


def _nothing_to_forget() -> None:
    pass


# when_finished's callbacks: a dict as an ordered set.
_Callbacks = dict[Callable[[BaseException | None], object], None]


class Task:
    """A generator running as a microthread of a :class:`Worker`.

    The task owns a stack of generators: the one it was assigned plus the
    subroutines it is inside (``yield helper()``). The stack is a list, not
    nested Python calls, so 10 000 levels of subroutines do not grow the C
    stack.

    A task is made by :meth:`Worker.assign` (or ``clockwork.spawn``), which
    steps it through the methods of the section "for the Worker"; its users
    need :attr:`done`, :meth:`result`, :attr:`deferred` and :meth:`cancel`.

    Args:
        gen: The generator to run.
        name: See below.
        on_finish: Called with the task once it has finished, however
            (the worker forgets it).

    Attributes:
        name: A label for logs and ``repr`` (default: the generator's name).
    """

    __slots__ = (
        "__weakref__",
        "_cancel_requested",
        "_deferred",
        "_error",
        "_finish_callbacks",
        "_observed",
        "_on_finish",
        "_result",
        "_running",
        "_stack",
        "_throw",
        "_value",
        "_waiting",
        "name",
    )

    def __init__(
        self,
        gen: Generator[Any, Any, Any],
        name: str,
        on_finish: Callable[[Task], None],
    ) -> None:
        self.name = name
        self._on_finish = on_finish
        self._stack: list[Generator[Any, Any, Any]] = [gen]
        self._value: Any = None  # sent into the top generator at its next step
        self._throw: BaseException | None = None  # ... or thrown into it
        self._waiting: Deferred[Any] | None = None
        self._running = False
        self._cancel_requested = False
        self._result: Any = _NOTHING
        self._error: BaseException | None = None
        self._observed = False
        self._deferred: Deferred[Any] | None = None
        # when_finished's callbacks; None until the first, since most tasks
        # never have one.
        self._finish_callbacks: _Callbacks | None = None

    def __repr__(self) -> str:
        if self._error is not None:
            state = f"failed with {type(self._error).__name__}"
        elif self._result is not _NOTHING:
            state = "done"
        elif self._waiting is not None:
            state = "waiting"
        else:
            state = "ready"
        return f"<Task {self.name!r} {state}>"

    @property
    def done(self) -> bool:
        """True once the task has returned, raised or been cancelled."""
        return self._result is not _NOTHING or self._error is not None

    def result(self) -> Any:
        """The task's return value; raises its exception if it failed.

        Raises:
            RuntimeError: the task has not finished yet.
            twisted.internet.defer.CancelledError: it was cancelled.
        """
        if self._error is not None:
            self._observed = True
            raise self._error
        if self._result is _NOTHING:
            raise RuntimeError(f"{self!r} has not finished; wait for task.deferred")
        return self._result

    @property
    def deferred(self) -> Deferred[Any]:
        """A Deferred for the task's result; cancelling it cancels the task."""
        if self._deferred is None:
            self._deferred = Deferred(self._cancel_from_deferred)
            if self.done:
                self._fire_deferred()
        return self._deferred

    def _cancel_from_deferred(self, _: Deferred[Any]) -> None:
        self.cancel()

    def when_finished(
        self, callback: Callable[[BaseException | None], object]
    ) -> Callable[[], None]:
        """Call ``callback`` once the task has finished, however it finished.

        It gets None if the task returned, else its exception (a
        ``CancelledError`` if it was cancelled), and is called before
        :attr:`deferred` fires: what it releases is released by the time
        anyone waiting for the task hears of its end. If the task has already
        finished, it is called at once. This is how a resource is tied to the
        task that holds it (clockwork.net closes a connection whose task was
        cancelled or failed); an exception it raises is logged, not raised.

        Returns:
            A function that forgets the callback: call it when the resource
            is released before the task ends, so that a long-lived task does
            not collect callbacks of things long gone.
        """
        if self.done:
            self._call_finish_callback(callback)
            return _nothing_to_forget
        if self._finish_callbacks is None:
            self._finish_callbacks = {}
        callbacks = self._finish_callbacks
        callbacks[callback] = None

        def forget() -> None:
            callbacks.pop(callback, None)

        return forget

    def _call_finish_callback(
        self, callback: Callable[[BaseException | None], object]
    ) -> None:
        try:
            callback(self._error)
        except Exception:
            _log.failure(
                "A when_finished callback of clockwork task {name} failed",
                name=self.name,
            )

    def cancel(self) -> bool:
        """Stop the task: cancel what it waits on, close its stack innermost first.

        Every ``finally:`` of the stack runs; a process the task waits on is
        killed. The task then fails with ``CancelledError``. Returns False if
        it had already finished.
        """
        if self.done:
            return False
        if self._running:
            # A task cancelling itself: its generator is executing and can't
            # be closed from inside; finish the job when the step returns.
            self._cancel_requested = True
            return True
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.cancel()
        closing_error: BaseException | None = None
        while self._stack:
            gen = self._stack.pop()
            try:
                gen.close()
            except BaseException as e:  # a finally that raised or yielded
                closing_error = closing_error or e
        error = CancelledError(f"task {self.name!r} was cancelled")
        if closing_error is not None:
            error.__context__ = closing_error
        self.finish(None, error)
        return True

    # -- for the Worker --------------------------------------------------
    #
    # How a worker steps the task; not for the task's users. A step is
    # begin_step(), then the worker runs the stack's top generator until it
    # yields control (end_step()), waits (park(), then end_step(); the
    # Deferred calls resume()) or the stack is empty (finish(), end_step()).

    def begin_step(
        self,
    ) -> tuple[list[Generator[Any, Any, Any]], Any, BaseException | None] | None:
        """For the Worker: start a step of the task; None if it has finished.

        Until :meth:`end_step`, the task is running: a :meth:`cancel` from
        inside it waits for the step to end.

        Returns:
            The task's stack of generators, innermost last: the worker runs
            the top one, pushes the subroutines it yields and pops those
            that end (the list itself, not a copy); then the value to send
            into the top one, or the exception to throw into it instead
            (what the Deferred it waited for gave, see :meth:`resume`).
        """
        if self._result is not _NOTHING or self._error is not None:
            return None  # cancelled while it was waiting for its turn
        value, error = self._value, self._throw
        self._value = self._throw = None
        self._running = True
        return self._stack, value, error

    def end_step(self) -> None:
        """For the Worker: the step is over, however it ended.

        A cancel the task asked for during its step happens now.
        """
        self._running = False
        if self._cancel_requested and not self.done:
            self._cancel_requested = False
            self.cancel()

    def park(self, d: Deferred[Any]) -> None:
        """For the Worker: the task waits for ``d`` (which calls :meth:`resume`).

        Cancelling the task cancels ``d``.
        """
        self._waiting = d

    def resume(self, d: Deferred[Any], result: Any) -> bool:
        """For the Worker: ``d``, which the task was parked on, fired.

        The next step sends ``result`` into the task, or throws it in if it
        is a :class:`~twisted.python.failure.Failure`. The worker then makes
        the task ready.

        Returns:
            False, changing nothing, if the task no longer waits for ``d``
            (it was cancelled meanwhile).
        """
        if self._waiting is not d:
            return False
        self._waiting = None
        if isinstance(result, Failure):
            self._throw = result.value
        else:
            self._value = result
        return True

    def finish(self, result: Any, error: BaseException | None) -> None:
        """For the Worker: the task's outermost generator returned ``result``,
        or raised ``error`` (then ``result`` is ignored).

        The stack is emptied, the task is done (:meth:`result` gives it
        now), its ``on_finish`` is called and :attr:`deferred` fires.
        """
        self._running = False
        self._stack.clear()
        self._waiting = None
        if error is not None:
            self._error = error
        else:
            self._result = result
        self._on_finish(self)
        if self._finish_callbacks:
            callbacks, self._finish_callbacks = self._finish_callbacks, None
            for callback in list(callbacks):
                self._call_finish_callback(callback)
        if self._deferred is not None:
            self._fire_deferred()

    def _fire_deferred(self) -> None:
        assert self._deferred is not None
        if self._deferred.called:  # cancelled through the Deferred itself
            return
        if self._error is not None:
            self._observed = True
            self._deferred.errback(Failure(self._error))
        else:
            self._deferred.callback(self._result)

    def __del__(self) -> None:
        # Like a Deferred, a task whose failure nobody looked at says so when
        # it is garbage collected, rather than losing the error silently.
        if (
            self._error is not None
            and not self._observed
            and not isinstance(self._error, CancelledError)
        ):
            _log.failure(
                "Unobserved failure in clockwork task {name}",
                Failure(self._error),
                name=self.name,
            )
