"""Fixtures of the monitor's tests that stop real processes."""

from __future__ import annotations

import time

import pytest
from twisted.internet.task import Clock

from tests.support import unique_token
from tests.support.rules import clock_at


@pytest.fixture
def token() -> str:
    """An argument no other process on the machine has, to find a test's."""
    return unique_token()


@pytest.fixture
def real_clock() -> Clock:
    """A Clock that reads as the wall clock, 5 s ahead, for rules' ages."""
    # /proc start times are whole-second boot time plus ticks, about a second
    # off; a clock a few seconds ahead makes a fresh child older than max_age=0.
    return clock_at(time.time() + 5)
