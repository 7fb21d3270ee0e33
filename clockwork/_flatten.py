"""flatten and encapsulate: nested generators as one plain iterator."""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator, Iterator
from types import GeneratorType
from typing import Any, ParamSpec

from clockwork._classic import Call, Return, end_routine

__all__ = ["encapsulate", "flatten"]

P = ParamSpec("P")


def flatten(gen: Generator[Any, Any, Any]) -> Iterator[Any]:
    """Iterate over the plain values of a nested generator stack.

    A yielded generator is run as a subroutine (its return value is sent back
    into its caller); ``yield Return(v)`` returns ``v`` as ``return v`` does,
    and ``yield Call(gen)`` is a tail call; every other yielded value is
    produced (``Control`` is ``None``, so it is produced as ``None``). Nothing is
    scheduled: this is a plain iterator. The stack is a list, so deep nesting
    does not grow the Python stack.
    """
    stack: list[Generator[Any, Any, Any]] = [gen]
    value: Any = None
    error: BaseException | None = None
    while stack:
        top = stack[-1]
        try:
            if error is None:
                item = top.send(value)
            else:
                item, error = top.throw(error), None
        except StopIteration as stop:
            stack.pop()
            value = stop.value
            continue
        except BaseException as e:
            stack.pop()
            if not stack:
                raise
            value, error = None, e
            continue
        value = None
        if isinstance(item, GeneratorType):
            stack.append(item)
        elif isinstance(item, Return | Call):
            stack.pop()
            value, error = end_routine(top, item, stack)
            if error is not None and not stack:
                raise error
        else:
            yield item


def encapsulate(
    genfunc: Callable[P, Generator[Any, Any, Any]],
) -> Callable[P, Iterator[Any]]:
    """Decorator: ``genfunc(*a)`` returns ``flatten(genfunc(*a))``."""

    @functools.wraps(genfunc)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Iterator[Any]:
        return flatten(genfunc(*args, **kwargs))

    return wrapper
