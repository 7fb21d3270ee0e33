"""Fixtures of the supervisor's tests: a Supervisor on a Clock, with fake processes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.task import Clock

from procwork.supervisor import Supervisor
from tests.support import observing
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


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    """The supervisor's log events while the test runs."""
    seen: list[dict[str, Any]] = []

    def observer(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "procwork.supervisor":
            seen.append(event)

    with observing(observer):
        yield seen
