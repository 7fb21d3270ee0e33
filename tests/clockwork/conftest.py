"""Fixtures of clockwork's tests: a worker on a reactor whose clock moves only
when the worker waits, so sleeps, timeouts and intervals are exact and instant."""

from __future__ import annotations

import pytest

import untwisted
from clockwork import Worker
from tests.support import ClockReactor


@pytest.fixture
def clock() -> ClockReactor:
    return ClockReactor()


@pytest.fixture
def worker(clock: ClockReactor) -> Worker:
    """A worker on the fake clock: its tasks' sleeps take no real time."""
    return Worker(
        driver=untwisted.lowlevel.Driver(clock, register_atexit=lambda hook: None)
    )
