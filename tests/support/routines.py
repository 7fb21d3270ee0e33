"""Generator routines that clockwork's tests run, nest and cancel."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

Gen = Generator[Any, Any, Any]
"""A clockwork routine: yields what it waits for, returns its result."""


def nest(depth: int, log: list[int], bottom: object) -> Gen:
    """``depth`` nested subroutines waiting on ``bottom``; logs its finallys."""
    try:
        if depth == 0:
            return (yield bottom)
        return (yield nest(depth - 1, log, bottom))
    finally:
        log.append(depth)
