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

__all__ = ["clip", "seconds"]

# How much of a value a message shows.
_SHOWN = 200


def clip(text: str) -> str:
    """``text`` for a message: cut, saying how long it was, if it is long."""
    if len(text) <= _SHOWN:
        return text
    return f"{text[:_SHOWN]}... ({len(text)} characters)"


def seconds(
    value: object,
    what: str,
    *,
    error: type[Exception] | None = None,
    positive: bool = False,
    minimum: float = 0.0,
) -> float:
    """A duration: a finite number of seconds, >= 0 (> 0 if ``positive``).

    Args:
        value: What was given (a bool is not a number here).
        what: What it is, for the message (``"procwork.run('make'): timeout"``).
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
