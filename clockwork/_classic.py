"""The first clockwork's vocabulary, running on the reactor-based scheduler.

The user's original clockwork (Python 2, busy-polling) spelled its keywords
as objects to yield: ``yield Control``, ``yield Return(x)``, ``yield
Value(x)``, ``yield Input(...)``. Code written for it runs here unchanged.
New code needs none of this: a bare ``yield`` is ``Control``, ``return x``
is ``Return(x)``, ``procwork.run`` is ``Command``. The whole story, with the
original specification's examples, is ``specs/clockwork_classic.md``.

The :class:`~clockwork.Worker` and :func:`~clockwork.flatten` understand
:class:`Return` and :class:`Call`; :func:`genwrap` understands everything
here. Call from the reactor's thread.
"""

from __future__ import annotations

import functools
import inspect
import io
from collections.abc import Callable, Generator, Iterable, Sequence
from types import GeneratorType
from typing import Any, Final, Generic, ParamSpec, TypeVar

from twisted.internet.defer import Deferred

import untwisted

__all__ = [
    "Call",
    "Command",
    "Control",
    "Each",
    "Input",
    "Keyword",
    "Output",
    "Return",
    "Value",
    "genwrap",
    "standalone",
]

T = TypeVar("T")
P = ParamSpec("P")

Control: Final = None
"""``yield Control`` gives up control for one step: it *is* a bare ``yield``.

In the first clockwork ``Control`` was a class, and the scheduler treated it
exactly as it treated ``None`` (a worker step, ``flatten`` and ``genwrap``
alike). Making it ``None`` keeps that identity for free: no scheduler needs
to know the name, and the step that yields it costs what a bare ``yield``
costs.
"""

_UNANSWERED: Any = object()


class Keyword:
    """Base of the objects a classic routine yields to talk to its driver."""

    __slots__ = ()


class Return(Keyword, Generic[T]):
    """``yield Return(v)``: return ``v`` to the caller, exactly like ``return v``.

    The routine that yields it ends there (it is closed, so its ``finally:``
    blocks run) and the ``(yield routine())`` of its caller evaluates to ``v``.
    """

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Return({self.value!r})"


class Call(Keyword):
    """``yield Call(gen)``: a tail call, the routine is replaced by ``gen``.

    The routine that yields it ends there (it is closed); ``gen`` runs in its
    place, and what ``gen`` returns goes to the routine's caller. ``gen`` may
    also be anything a routine may wait for (a Deferred, a coroutine).
    """

    __slots__ = ("target",)

    def __init__(self, target: object) -> None:
        self.target = target

    def __repr__(self) -> str:
        return f"Call({self.target!r})"


class Value(Keyword, Generic[T]):
    """``yield Value(v)``: produce ``v``, as a plain generator's ``yield v`` does.

    Under :func:`genwrap`, ``v`` escapes to whoever iterates, and what they
    ``send()`` back is the value of this ``yield``. A worker task that yields
    one gives up control for a step (the step's ``tick()`` returns it).
    """

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Value({self.value!r})"


class Output(Keyword, Generic[T]):
    """``yield Output(v)``: output for the user; escapes :func:`genwrap` as is.

    Two Outputs are equal when their values are. In a worker task it gives
    up control for a step, like :class:`Value`.
    """

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Output):
            return NotImplemented
        return bool(self.value == other.value)

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        return f"Output({self.value!r})"


class Input(Keyword):
    """``answer = yield Input(prompt, type)``: ask the user, and wait.

    The Input escapes :func:`genwrap` (and is what a worker's ``tick()``
    returns for that step); whoever shows the prompt calls :meth:`send` with
    the answer, which resumes the routine that asked, however deep in its
    call stack. A worker task waits for the answer without using CPU.

    Attributes:
        prompt: What to ask.
        type: What kind of answer is expected (for the asker's user
            interface; the answer is not converted).
    """

    __slots__ = ("_answer", "_answered", "prompt", "type")

    def __init__(self, prompt: object, type: object = None) -> None:
        self.prompt = prompt
        self.type = type
        self._answer: Any = _UNANSWERED
        # What a worker task waits on. A cancelled task cancels it; a later
        # callback() is then ignored by Twisted (no canceller), so a late
        # answer is harmless.
        self._answered: Deferred[Any] = Deferred()

    @property
    def deferred(self) -> Deferred[Any]:
        """A Deferred that fires with the answer when :meth:`send` is called.

        What a worker task that yields the Input waits on. Cancelling it
        (the task was cancelled) is harmless: a later :meth:`send` still
        records the answer.
        """
        return self._answered

    @property
    def answered(self) -> bool:
        """True once :meth:`send` has been called."""
        return self._answer is not _UNANSWERED

    @property
    def answer(self) -> Any:
        """The answer sent.

        Raises:
            LookupError: there is no answer yet.
        """
        if self._answer is _UNANSWERED:
            raise LookupError(f"{self!r} has no answer yet; call its send() first")
        return self._answer

    def send(self, answer: object) -> None:
        """Answer the prompt: the routine that asked resumes with ``answer``.

        Raises:
            RuntimeError: it was already answered (an Input is asked once).
        """
        if self._answer is not _UNANSWERED:
            raise RuntimeError(f"{self!r} was already answered ({self._answer!r})")
        self._answer = answer
        if not self._answered.called:
            self._answered.callback(answer)

    def __repr__(self) -> str:
        return f"Input({self.prompt!r}, {self.type!r})"


Escaped = Value[Any] | Output[Any] | Input
"""What a worker step hands back to the one ticking: see ``Worker.tick``."""


def Each(series: Iterable[T]) -> Generator[Value[T], Any, list[Any]]:
    """``yield Each(series)``: yield each item of ``series`` as a :class:`Value`.

    The same as ``for item in series: yield Value(item)``; its value is the
    list of what was sent back for each item (``None`` where nothing was).
    """
    sent: list[Any] = []
    for item in series:
        sent.append((yield Value(item)))
    return sent


def genwrap(routine: Generator[Any, Any, T]) -> Generator[Any, Any, T]:
    """Use a classic routine as a plain generator.

    Runs ``routine`` and its subroutines (yielded generators, ``Return``,
    ``Call``) synchronously, in the caller's thread. A ``Value(v)`` produces
    ``v``, and what the caller sends back with ``send()`` is the value of
    that ``yield Value(...)``; an :class:`Input` or :class:`Output` is produced as
    is. A Deferred, coroutine or awaitable is waited for with
    ``untwisted.run()`` (so not from inside the reactor). Everything else
    (``None``, ``Control``, any other object) is filtered out, as the first
    clockwork did. The generator returns what ``routine`` returns; closing it
    closes the routine's stack, innermost first.

    An Input must be answered before the wrapper is resumed: by its
    :meth:`Input.send`, or by sending the answer into the wrapper. If it is
    not, ``RuntimeError`` is raised in the routine at its ``yield Input``.
    """
    stack: list[Generator[Any, Any, Any]] = [routine]
    value: Any = None
    error: BaseException | None = None
    try:
        while True:
            top = stack[-1]
            try:
                item = top.send(value) if error is None else top.throw(error)
            except StopIteration as stop:
                stack.pop()
                value, error = stop.value, None
            except BaseException as e:
                stack.pop()
                value, error = None, e
            else:
                value = error = None
                if item is None:
                    continue
                if isinstance(item, GeneratorType):
                    stack.append(item)
                    continue
                if isinstance(item, Return | Call):
                    stack.pop()
                    value, error = end_routine(top, item, stack)
                    if error is None and isinstance(item, Call):
                        continue
                elif isinstance(item, Value):
                    value = yield item.value
                    continue
                elif isinstance(item, Output):
                    value = yield item
                    continue
                elif isinstance(item, Input):
                    sent = yield item
                    if not item.answered and sent is not None:
                        item.send(sent)
                    if item.answered:
                        value = item.answer
                    else:
                        error = RuntimeError(
                            f"{item!r} was not answered: call its send(answer), or "
                            "send the answer into the genwrap generator, before "
                            "resuming it"
                        )
                    continue
                elif isinstance(item, Deferred) or inspect.isawaitable(item):
                    try:
                        value = untwisted.run(item)
                    except Exception as e:
                        error = e
                    continue
                else:
                    continue  # filtered out, as in the first clockwork
            if not stack:
                if error is not None:
                    raise error
                result: T = value
                return result
    finally:
        close_stack(stack)


def end_routine(
    routine: Generator[Any, Any, Any],
    keyword: Return[Any] | Call,
    stack: list[Generator[Any, Any, Any]],
) -> tuple[Any, BaseException | None]:
    """A routine yielded ``Return`` or ``Call`` (and was popped off ``stack``).

    Closes it, so its ``finally:`` blocks run now. For ``Return`` gives
    ``(value, None)``, the value for its caller; for ``Call`` pushes the
    target in its place. If closing raised, gives ``(None, error)``: the
    error goes to the caller, as if the routine had raised it.
    """
    try:
        routine.close()
    except BaseException as e:
        return None, e
    if isinstance(keyword, Return):
        return keyword.value, None
    stack.append(_as_routine(keyword.target))
    return None, None


def _as_routine(target: object) -> Generator[Any, Any, Any]:
    if isinstance(target, GeneratorType):
        return target
    return _wait_for(target)


def _wait_for(target: object) -> Generator[Any, Any, Any]:
    # The driver sees the target yielded, as if the routine had yielded it:
    # a worker waits for a Deferred or coroutine, genwrap blocks on it.
    return (yield target)


def close_stack(stack: list[Generator[Any, Any, Any]]) -> None:
    """Close the generators of ``stack``, innermost first; the first error wins."""
    error: BaseException | None = None
    while stack:
        try:
            stack.pop().close()
        except BaseException as e:
            error = error or e
    if error is not None:
        raise error


def standalone(
    genfunc: Callable[P, Generator[Any, Any, T]],
) -> Callable[P, Generator[Any, Any, T]]:
    """Decorator: ``genfunc(*a)`` returns ``genwrap(genfunc(*a))``."""

    @functools.wraps(genfunc)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Generator[Any, Any, T]:
        return genwrap(genfunc(*args, **kwargs))

    return wrapper


class Command:
    """A command to run: calling it gives a routine that runs it.

    After the routine has finished, :attr:`stdout` and :attr:`stderr` are
    readable binary file objects holding the command's output (the last MiB
    of each, which is what ``procwork.run`` keeps) and :attr:`returncode` is
    its exit status. The routine waits without using CPU, and cancelling it kills the
    command's whole process group: it is ``yield procwork.run(argv)``.

    Attributes:
        cmd: The command, as given (a list of arguments, or a string split
            with :func:`shlex.split`, never given to a shell).
        stdout: Its standard output (empty until it has run).
        stderr: Its standard error (empty until it has run).
        returncode: Its exit status (negative signal number when killed by
            a signal); None until it has run.
    """

    def __init__(self, cmd: str | Sequence[str]) -> None:
        self.cmd = cmd
        self.stdout: io.BytesIO = io.BytesIO()
        self.stderr: io.BytesIO = io.BytesIO()
        self.returncode: int | None = None

    def __call__(self) -> Generator[Any, Any, None]:
        # clockwork sits below procwork and never imports it at import time;
        # running a command is procwork's job, so reach it only when one runs
        # (as untwisted reaches clockwork only when it meets a generator).
        import procwork

        result = yield procwork.run(self.cmd)
        self.stdout = io.BytesIO(result.stdout)
        self.stderr = io.BytesIO(result.stderr)
        self.returncode = result.returncode

    def __repr__(self) -> str:
        return f"Command({self.cmd!r})"
