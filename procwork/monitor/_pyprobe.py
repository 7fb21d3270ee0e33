"""``python = "module:function"`` checks: a function of the user's, no fork.

The module is found beside the config file (``checks.py``, or
``checks/__init__.py``; ``pkg.mod`` is ``pkg/mod.py``) and imported at the
check's first run, in a thread, under a private name: it is not added to
``sys.modules`` and ``sys.path`` is not changed. It is kept with the check:
a reload imports it again only if the check's spec changed. The function is called with
no arguments, and may be:

- a plain function: called in a thread (so that it cannot block the
  reactor), one call at a time (see :class:`~procwork.monitor._probes.OneThread`);
  a call past its timeout goes on in its thread, and the check fails without
  calling it again until it returns;
- a generator function: run as a clockwork task (``yield`` a Deferred to wait);
- an ``async def``: awaited (Twisted's Deferreds are awaitable).

The timeout cancels the last two. What it returns says how it went:
``True``/``None`` ok, ``False`` failed, a string failed with that message,
``(ok, message)`` both. An exception fails the check with its text.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from procwork.monitor._probes import OneThread, Verdict

__all__ = ["PythonProbe", "module_file", "verdict_of"]

_MESSAGE = 400  # characters of a returned message or an exception kept


def module_file(directory: str, module: str) -> str | None:
    """Where ``module`` (dotted) is beside the config: ``a/b.py`` or
    ``a/b/__init__.py`` under ``directory``; None if neither exists."""
    base = os.path.join(directory, *module.split("."))
    for candidate in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(candidate):
            return candidate
    return None


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE else text[:_MESSAGE] + "..."


def verdict_of(value: object) -> Verdict:
    """What a check function returned, as a Verdict."""
    if isinstance(value, Verdict):
        return value
    if value is None or value is True:
        return Verdict(True, "ok")
    if value is False:
        return Verdict(False, "returned False")
    if isinstance(value, str):
        return Verdict(False, _cut(value) or "returned an empty message")
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], bool)
        and isinstance(value[1], str)
    ):
        ok, message = value
        return Verdict(ok, _cut(message) or ("ok" if ok else "returned False"))
    return Verdict(
        False,
        f"returned {_cut(repr(value))[:80]}, not a bool, a message or (bool, message)",
    )


def _raised(error: BaseException) -> Verdict:
    text = str(error)
    return Verdict(
        False, _cut(f"raised {type(error).__name__}" + (f": {text}" if text else ""))
    )


class PythonProbe:
    """Calls one check's ``module:function``.

    Args:
        target: ``"module:function"``.
        directory: Where the module is (the config file's directory).
        one_thread: The check's thread (plain functions and the import).
        as_deferred: Runs a generator as a clockwork task, or a coroutine,
            to a Deferred (``Worker.as_deferred`` of the monitor's worker).
    """

    def __init__(
        self,
        target: str,
        directory: str,
        *,
        one_thread: OneThread,
        as_deferred: Callable[[Any], Deferred[Any]],
    ) -> None:
        self._module, _, self._function_name = target.partition(":")
        self._directory = directory
        self._thread = one_thread
        self._as_deferred = as_deferred
        self._function: Callable[[], Any] | None = None

    def __call__(self) -> Deferred[Verdict]:
        """One run: a Deferred of its Verdict (an exception is one too)."""
        if self._function is None:
            d: Deferred[Any] = self._thread(self._load)
            d.addCallback(self._loaded)
        else:
            d = self._call(self._function)
        return d.addCallbacks(verdict_of, self._failed)

    def _failed(self, failure: Failure) -> Verdict | Failure:
        if failure.check(CancelledError):
            return failure  # the runner's: timed out, or stopped
        assert failure.value is not None
        return _raised(failure.value)

    def _load(self) -> Callable[[], Any] | Verdict:
        """Import the module (in a thread: its top level may be slow)."""
        path = module_file(self._directory, self._module)
        if path is None:
            return Verdict(False, f"no module {self._module!r} in {self._directory}")
        spec = importlib.util.spec_from_file_location(
            f"procwork_check.{self._module}", path
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            return Verdict(False, _cut(f"cannot import {path}: " + _raised(e).message))
        return self._function_of(module, path)

    def _function_of(
        self, module: ModuleType, path: str
    ) -> Callable[[], Any] | Verdict:
        function = getattr(module, self._function_name, None)
        if not callable(function):
            return Verdict(False, f"{path} has no function {self._function_name!r}")
        return function  # type: ignore[no-any-return]

    def _loaded(self, found: Callable[[], Any] | Verdict) -> Any:
        if isinstance(found, Verdict):
            return found  # not imported: tried again at the next run
        self._function = found
        return self._call(found)

    def _call(self, function: Callable[[], Any]) -> Deferred[Any]:
        if inspect.isgeneratorfunction(function) or inspect.iscoroutinefunction(
            function
        ):
            try:
                return self._as_deferred(function())
            except Exception:
                d: Deferred[Any] = Deferred()
                d.errback()
                return d
        return self._thread(function)
