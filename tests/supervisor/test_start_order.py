"""What a service waits for before it starts (``after=``): pure functions.

The supervisor asks :mod:`procwork.supervisor._order` and acts on the answer;
each rule of the start order is a sentence here, asked of plain values (no
reactor, no process). How the supervisor acts on them (a waiting service
starts when its dependency is RUNNING, ...) is tests/supervisor/test_supervisor.py's.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from procwork import ConfigError
from procwork.supervisor import ServiceSpec, ServiceState
from procwork.supervisor._order import (
    check_after,
    check_removable,
    first_blocker,
    is_ready,
    never_ready,
)

STOPPED = ServiceState.STOPPED
STARTING = ServiceState.STARTING
RUNNING = ServiceState.RUNNING
BACKOFF = ServiceState.BACKOFF
STOPPING = ServiceState.STOPPING
EXITED = ServiceState.EXITED
FATAL = ServiceState.FATAL


@dataclass(frozen=True)
class At:
    """Where a service stands: its state, and whether its last process
    ended with a success code."""

    state: ServiceState
    succeeded: bool = False


def spec(name: str, *after: str) -> ServiceSpec:
    return ServiceSpec(name, ["svc", name], after=after)


# (sentence, standing, ready, never ready)
STANDINGS = [
    ("a RUNNING service is ready", At(RUNNING), True, False),
    (
        "a service that EXITED with a success code is ready (a setup step done)",
        At(EXITED, succeeded=True),
        True,
        False,
    ),
    (
        "a service that EXITED with a failure code is not, and will not be",
        At(EXITED),
        False,
        True,
    ),
    ("a FATAL service is not ready, and will not be", At(FATAL), False, True),
    (
        "a FATAL service whose last exit counted as success is still not ready",
        At(FATAL, succeeded=True),
        False,
        True,
    ),
    ("a STARTING service is not ready yet", At(STARTING), False, False),
    ("a service in BACKOFF is not ready yet", At(BACKOFF), False, False),
    ("a STOPPED service is not ready, until started", At(STOPPED), False, False),
    ("a STOPPING service is not ready", At(STOPPING, succeeded=True), False, False),
]


@pytest.mark.parametrize(
    ("standing", "ready", "never"),
    [row[1:] for row in STANDINGS],
    ids=[row[0] for row in STANDINGS],
)
def test_a_dependency_is_ready_when_running_or_exited_with_success(
    standing: At, ready: bool, never: bool
) -> None:
    """Ready: the services after it may start. Never ready: it will not
    become ready by itself, so they are not started."""
    assert is_ready(standing) is ready
    assert never_ready(standing) is never


def test_a_service_waits_for_the_first_service_it_names_that_is_not_ready() -> None:
    """In the order ``after`` names them; one ready is passed over."""
    web = spec("web", "db", "cache", "queue")
    services = {"db": At(RUNNING), "cache": At(STARTING), "queue": At(BACKOFF)}
    assert first_blocker(web, services) == "cache"
    assert first_blocker(web, {**services, "db": At(STOPPED)}) == "db"
    assert first_blocker(web, {**services, "cache": At(EXITED, True)}) == "queue"


def test_a_service_whose_dependencies_are_all_ready_waits_for_none() -> None:
    web = spec("web", "db", "migrate")
    services = {"db": At(RUNNING), "migrate": At(EXITED, succeeded=True)}
    assert first_blocker(web, services) is None


def test_a_service_without_after_waits_for_nothing() -> None:
    assert first_blocker(spec("web"), {"db": At(STOPPED)}) is None


def test_a_dependency_no_longer_among_the_services_is_not_waited_for() -> None:
    """A service removed meanwhile holds nothing up."""
    assert first_blocker(spec("web", "gone", "db"), {"db": At(FATAL)}) == "db"
    assert first_blocker(spec("web", "gone"), {}) is None


def test_a_service_may_be_added_after_services_already_added() -> None:
    check_after(spec("web", "db", "cache"), {"db", "cache", "other"})
    check_after(spec("web"), set())


def test_a_service_naming_one_not_added_is_refused_with_the_name() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^service 'web': after names 'cache', which has not been added "
        r"\(add it first\)$",
    ):
        check_after(spec("web", "db", "cache"), {"db", "web"})


def test_a_replaced_spec_may_name_any_other_service_added() -> None:
    check_after(spec("db", "web"), {"db", "web"}, replacing=True)


def test_a_replaced_spec_naming_a_service_not_added_is_refused() -> None:
    """(Naming itself, a ServiceSpec refuses before it gets here.)"""
    with pytest.raises(
        ConfigError,
        match=r"^service 'db': after names 'cache', which is not another "
        "service that has been added$",
    ):
        check_after(spec("db", "web", "cache"), {"db", "web"}, replacing=True)
    with pytest.raises(ConfigError, match="after names the service itself"):
        spec("db", "db")


def test_a_service_others_start_after_cannot_be_removed_before_them() -> None:
    """The message names the first such service, in the order given."""
    others = [spec("db"), spec("web", "db"), spec("worker", "db")]
    with pytest.raises(
        ConfigError,
        match=r"^service 'db' cannot be removed: service 'web' starts after it "
        r"\(remove that one first\)$",
    ):
        check_removable("db", others)
    check_removable("web", others)
    check_removable("db", [spec("db"), spec("cache")])
