"""A Task: one generator stack being run by a Worker."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from clockwork._worker import Worker

__all__ = ["Task"]

_log = Logger()
_NOTHING: Any = object()


class Task:
    """A generator running as a microthread of a :class:`Worker`.

    The task owns a stack of generators: the one it was assigned plus the
    subroutines it is inside (``yield helper()``). The stack is a list, not
    nested Python calls, so 10 000 levels of subroutines do not grow the C
    stack.

    Attributes:
        name: A label for logs and ``repr`` (default: the generator's name).
    """

    __slots__ = (
        "__weakref__",
        "_cancel_requested",
        "_deferred",
        "_error",
        "_observed",
        "_result",
        "_running",
        "_stack",
        "_throw",
        "_value",
        "_waiting",
        "_worker",
        "name",
    )

    def __init__(
        self, gen: Generator[Any, Any, Any], worker: Worker, name: str
    ) -> None:
        self.name = name
        self._worker = worker
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
        self._finish(_NOTHING, error)
        return True

    # -- used by the Worker ----------------------------------------------

    def _finish(self, result: Any, error: BaseException | None) -> None:
        self._stack.clear()
        self._waiting = None
        if error is not None:
            self._error = error
        else:
            self._result = result
        self._worker._task_finished(self)
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
