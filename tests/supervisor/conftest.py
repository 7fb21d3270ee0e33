"""Fixtures of the supervisor's tests: a Supervisor on a Clock, with fake processes."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from procwork.supervisor import Supervisor
from tests.support.fake_supervisor import FakeWorld


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def world(clock: Clock) -> FakeWorld:
    return FakeWorld(clock)


@pytest.fixture
def sup(clock: Clock, world: FakeWorld) -> Supervisor:
    return Supervisor(clock, process_factory=world)
