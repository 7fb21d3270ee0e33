"""Turn the things untwisted accepts into Deferreds.

untwisted knows nothing of clockwork: a generator is handed to the runner
that clockwork registers with :func:`set_generator_runner` when it is
imported. The first time untwisted meets a generator and no runner is
registered, it imports clockwork by name (the only place untwisted names a
higher layer), which registers itself.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable, Generator
from typing import Any

from twisted.internet.defer import Deferred

__all__ = ["GeneratorRunner", "as_deferred", "set_generator_runner"]

GeneratorRunner = Callable[[Generator[Any, Any, Any]], "Deferred[Any]"]

_GENERATOR_RUNNER_MODULE = "clockwork"
_generator_runner: GeneratorRunner | None = None


def set_generator_runner(runner: GeneratorRunner | None) -> None:
    """Register the function that starts a generator and returns a Deferred.

    clockwork calls this when it is imported; other generator schedulers may
    do the same. ``None`` unregisters.
    """
    global _generator_runner
    _generator_runner = runner


def _run_generator(gen: Generator[Any, Any, Any]) -> Deferred[Any]:
    if _generator_runner is None:
        importlib.import_module(_GENERATOR_RUNNER_MODULE)
    if _generator_runner is None:  # pragma: no cover - clockwork always registers
        raise TypeError(f"no generator runner is registered to run {gen!r}")
    return _generator_runner(gen)


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def as_deferred(x: object) -> Deferred[Any]:
    """Start ``x`` and return a Deferred for its result.

    Accepts a Deferred (returned as is), a coroutine or other awaitable
    (driven by :meth:`Deferred.fromCoroutine`), or a generator (run by the
    registered generator runner, normally a clockwork task).

    Raises:
        TypeError: ``x`` is none of these; the message names it.
    """
    if isinstance(x, Deferred):
        return x
    if inspect.isgenerator(x):
        return _run_generator(x)
    if inspect.iscoroutine(x):
        return Deferred.fromCoroutine(x)
    if inspect.isawaitable(x):
        return Deferred.fromCoroutine(_await(x))
    raise TypeError(
        f"cannot wait for {x!r} ({type(x).__name__}): expected a Deferred, a "
        "coroutine or awaitable, or a generator"
    )
