"""Argument checks shared by the API, the scheduler and the config files.

One function per kind of value, so that a number of seconds is checked, and
its error worded, the same way wherever it is given: ``procwork.run(...,
timeout=)``, a service's ``stop_timeout``, a check's ``every`` in a TOML
file. The caller says what the value is (``what``, which starts the message:
``"procwork.run('make'): timeout"``, ``"service 'web': stop_timeout"``) and
which error to raise (a config raises :class:`~procwork.ConfigError`; the
API a ``TypeError`` for a wrong kind of value and a ``ValueError`` for a
wrong value).
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence

__all__ = ["clip", "command", "seconds"]

# How much of a value a message shows.
_SHOWN = 200


def clip(text: str) -> str:
    """``text`` for a message: cut, saying how long it was, if it is long."""
    if len(text) <= _SHOWN:
        return text
    return f"{text[:_SHOWN]}... ({len(text)} characters)"


def seconds(
    value: object,
    what: object,
    *,
    error: type[Exception] | None = None,
    positive: bool = False,
    minimum: float = 0.0,
) -> float:
    """A duration: a finite number of seconds, >= 0 (> 0 if ``positive``).

    Args:
        value: What was given (a bool is not a number here).
        what: What it is, for the message (``"procwork.run('make'): timeout"``);
            any object whose ``str()`` says it, formatted only for an error.
        error: The error to raise; default ``TypeError`` for a value that is
            no number and ``ValueError`` for one out of range.
        positive: Zero is refused too.
        minimum: A value other than zero must be at least this (an interval
            shorter than that is a busy loop).

    Returns:
        The value as a float.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise (error or TypeError)(
            f"{what} must be a number of seconds, not {clip(repr(value))}"
        )
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise (error or ValueError)(
            f"{what} must be a finite number {bound}, not {value!r}"
        )
    if 0 < value < minimum:
        raise (error or ValueError)(
            f"{what} must be at least {minimum:g} s (a shorter interval is a "
            f"busy loop), not {value!r}"
        )
    return float(value)


def command(value: object, what: str, *, error: type[Exception]) -> tuple[str, ...]:
    """A command from a config: a string split into words as a shell would
    (with :func:`shlex.split`; no shell runs it), or a list of strings.

    ``procwork.run`` takes more (bytes, paths, ``shell=True``) and checks
    its command in ``_api._argv``, with messages that show the call.

    Args:
        value: What was given.
        what: What it is, for the message (``"service 'web': command"``).
        error: The error to raise (:class:`~procwork.ConfigError`).

    Returns:
        The argv, at least one word, the first not empty.
    """
    if isinstance(value, str):
        try:
            argv = tuple(shlex.split(value))
        except ValueError as e:
            raise error(
                f"{what} {clip(repr(value))} cannot be split into words ({e})"
            ) from None
    elif (
        isinstance(value, Sequence)
        and not isinstance(value, bytes | bytearray)
        and all(isinstance(word, str) for word in value)
    ):
        argv = tuple(value)
    else:
        raise error(
            f"{what} must be a string or a list of strings, not {clip(repr(value))}"
        )
    if not argv or not argv[0]:
        raise error(f"{what} is empty")
    if any("\0" in word for word in argv):
        raise error(f"{what} contains a NUL character, not {clip(repr(value))}")
    return argv
