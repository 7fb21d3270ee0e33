"""The start order (``after=``): what a service still waits for before it starts.

A service that names others in ``after`` starts once each of them is
*ready*: RUNNING, or EXITED with a success code (a setup step that ran once
and finished). It waits for the first one that is not, in the order named;
when that one becomes ready it goes on to the next, and starts when none is
left. A service it waits for that will not become ready by itself (FATAL, or
EXITED without success) leaves it unstarted. ``after`` names only services
already added, and a service others start after cannot be removed before
them.

These rules are pure functions of the specs and of where each service
stands: no reactor, no process, no logging. The supervisor asks them and
acts (:mod:`procwork.supervisor._supervisor`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Protocol

from procwork._errors import ConfigError
from procwork.supervisor._spec import ServiceSpec, ServiceState

__all__ = [
    "Standing",
    "check_after",
    "check_removable",
    "first_blocker",
    "is_ready",
    "never_ready",
]


class Standing(Protocol):
    """Where a service stands, as far as the start order is concerned."""

    @property
    def state(self) -> ServiceState:
        """Its state."""

    @property
    def succeeded(self) -> bool:
        """Its last process ended with one of its success codes."""


def is_ready(service: Standing) -> bool:
    """The services that start after ``service`` may start: it is RUNNING,
    or EXITED with a success code."""
    return service.state is ServiceState.RUNNING or (
        service.state is ServiceState.EXITED and service.succeeded
    )


def never_ready(service: Standing) -> bool:
    """``service`` will not become ready by itself: FATAL, or EXITED without
    success (until it is started again by name)."""
    return not is_ready(service) and service.state in (
        ServiceState.FATAL,
        ServiceState.EXITED,
    )


def first_blocker(spec: ServiceSpec, services: Mapping[str, Standing]) -> str | None:
    """The first service of ``spec.after`` that is not ready, if any.

    Args:
        spec: The service about to start.
        services: Every service, by name; a name of ``after`` not among them
            (removed meanwhile) is not waited for.
    """
    for after in spec.after_names:
        other = services.get(after)
        if other is not None and not is_ready(other):
            return after
    return None


def check_after(
    spec: ServiceSpec, added: Collection[str], *, replacing: bool = False
) -> None:
    """``spec`` may be added, or replace the spec of the service of its name
    (``replacing``): its ``after`` names only services in ``added``. (Not
    itself: a :class:`ServiceSpec` refuses that already.)

    Raises:
        ConfigError: it names another; the message says which.
    """
    for after in spec.after_names:
        if after not in added:
            why = (
                "is not another service that has been added"
                if replacing
                else "has not been added (add it first)"
            )
            raise ConfigError(
                f"service {spec.name!r}: after names {after!r}, which {why}"
            )


def check_removable(name: str, others: Iterable[ServiceSpec]) -> None:
    """Service ``name`` may be removed: none of ``others`` starts after it.

    Raises:
        ConfigError: one does; the message names the first.
    """
    for other in others:
        if name in other.after_names:
            raise ConfigError(
                f"service {name!r} cannot be removed: service {other.name!r} "
                "starts after it (remove that one first)"
            )
