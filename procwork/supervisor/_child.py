"""A service's child: how it is started, and how its end is read.

procmon asks the supervisor for each child (``spawnProcess``):
:func:`spawn_child` builds it with the supervisor's :class:`ProcessFactory`
(a :class:`~procwork._spawn.GroupProcess` unless a test passes a fake) from
the service's spec (environment, working directory, niceness, credentials),
connected through a :class:`ServiceProtocol`. When procmon reports the end,
:func:`describe_exit` reads Twisted's reason into an
:class:`~procwork.supervisor._restart.Exit`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

from twisted.internet import error as twisted_error
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from procwork._process import _spawn_error
from procwork._reactor import Reactor
from procwork._result import describe_returncode
from procwork._shutdown import watch_reactor
from procwork.supervisor._procmon import ChildTransport
from procwork.supervisor._restart import Exit
from procwork.supervisor._servicelog import ServiceOutput
from procwork.supervisor._spec import ServiceSpec

if TYPE_CHECKING:
    from procwork._cgroup import Cgroup

__all__ = [
    "ProcessFactory",
    "ServiceProtocol",
    "child_env",
    "credentials",
    "describe_exit",
    "spawn_child",
]


class ProcessFactory(Protocol):
    """Builds a service's child; :class:`~procwork._spawn.GroupProcess` is one.

    It must start the child in its own process group, connect ``protocol``
    (``makeConnection``) before returning, and call ``protocol.processEnded``
    once the child is reaped. Tests pass a fake that never starts anything.
    ``user``, ``group``, ``extra_groups`` (ids) and ``umask`` are passed as
    keywords only for a service that sets them, and ``cgroup`` only for a
    service run in one, so a factory that does not take them still serves
    every other service.
    """

    def __call__(
        self,
        reactor: Reactor,
        protocol: ProcessProtocol,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None,
        cwd: str | None,
        nice: int,
        stdin: bool,
        user: int | None = ...,
        group: int | None = ...,
        extra_groups: Sequence[int] | None = ...,
        umask: int = ...,
        cgroup: Cgroup | None = ...,
    ) -> ChildTransport: ...


class ServiceProtocol(ProcessProtocol):
    """Connects a service's child to procmon's protocol and to the supervisor
    (``started``, called with the child's transport as it is connected).

    procmon's own ``LoggingProtocol`` still receives ``processEnded`` (that
    is how procmon learns of the exit); output is handled here instead,
    because procmon's line logger has no bound that works (a line over 16 KiB
    hits ``loseConnection`` on a dummy transport that lacks it) and logs an
    empty line at every exit.
    """

    def __init__(
        self,
        output: ServiceOutput,
        procmon_protocol: ProcessProtocol,
        started: Callable[[ChildTransport], object],
    ) -> None:
        self._output = output
        self._procmon_protocol = procmon_protocol
        self._started = started
        output.new_run()

    def connectionMade(self) -> None:
        transport = cast(ChildTransport, self.transport)
        self._procmon_protocol.makeConnection(self.transport)
        self._started(transport)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self._output.received(childFD, data)

    def processEnded(self, reason: Failure) -> None:
        self._output.ended()
        self._procmon_protocol.processEnded(reason)


def spawn_child(
    factory: ProcessFactory,
    reactor: Reactor,
    spec: ServiceSpec,
    output: ServiceOutput,
    procmon_protocol: ProcessProtocol,
    started: Callable[[ChildTransport], object],
    cgroup: Cgroup | None = None,
) -> ChildTransport:
    """Start a service's child, for procmon's ``spawnProcess`` call (inside
    ``cgroup``, if given).

    Raises:
        SpawnError: it could not be started (an ``OSError``: procmon catches
            it and reports the exit, as for any process that could not
            start); the message says why.
    """
    env = child_env(spec)
    kwargs = credentials(spec)
    if cgroup is not None:
        kwargs["cgroup"] = cgroup
    watch_reactor(reactor)
    try:
        return factory(
            reactor,
            ServiceProtocol(output, procmon_protocol, started),
            spec.argv,
            env=env,
            cwd=spec.cwd,
            nice=spec.nice,
            stdin=False,
            **kwargs,
        )
    except (OSError, ValueError, TypeError) as e:
        raise _spawn_error(spec.argv, spec.cwd, env, e) from e


def credentials(spec: ServiceSpec) -> dict[str, Any]:
    """The factory's keywords for who the child runs as; none if unchanged.

    Resolved at every start: a user deleted since the spec was made fails
    that start (a ConfigError, reported like any spawn error).
    """
    kwargs: dict[str, Any] = {}
    credentials = spec.credentials()
    if credentials is not None:
        kwargs.update(
            user=credentials.uid,
            group=credentials.gid,
            extra_groups=list(credentials.groups),
        )
    if spec.umask is not None:
        kwargs["umask"] = spec.umask
    return kwargs


def child_env(spec: ServiceSpec) -> dict[str, str] | None:
    """The child's whole environment (None: the supervisor's own)."""
    if spec.env is None:
        return None if spec.inherit_env else {}
    env = dict(os.environ) if spec.inherit_env else {}
    env.update(spec.env)
    return env


def describe_exit(reason: Failure | None) -> Exit:
    """How a process ended, from the reason Twisted gives."""
    value = None if reason is None else reason.value
    if isinstance(value, twisted_error.ProcessDone | twisted_error.ProcessTerminated):
        if value.signal is not None:
            returncode = -int(value.signal)
        else:
            returncode = int(value.exitCode or 0)
        return Exit(returncode, describe_returncode(returncode))
    if isinstance(value, OSError):
        return Exit(None, str(value), could_not_start=True)
    if value is None:
        return Exit(None, "ended for an unknown reason")
    return Exit(None, f"ended: {value}")
