"""The connections of remote runs: :class:`SSHPool`, one per host, shared.

A connection is opened for a target's first run and closed after
``idle_close`` seconds without one. At reactor shutdown the pool kills the
remote groups of live runs (bounded: a host that does not answer cannot hold
up the exit), then closes every connection. :func:`remote_process` is what
``procwork.run`` and ``procwork.spawn`` build for ``host=``.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList

from procwork import _validate as validate
from procwork._escalation import Escalation
from procwork._process import RunOptions
from procwork._reactor import Reactor, default_reactor
from procwork._remote._channel import RemoteProcess
from procwork._remote._connection import _Connection
from procwork._remote._target import SSHTarget, parse_host

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_IDLE_CLOSE",
    "DEFAULT_KEEPALIVE",
    "DEFAULT_MAX_SESSIONS",
    "SSHPool",
    "remote_process",
    "ssh_pool",
]

DEFAULT_IDLE_CLOSE = 30.0
"""Seconds a connection with no run stays open for the next one."""
DEFAULT_CONNECT_TIMEOUT = 15.0
DEFAULT_MAX_SESSIONS = 10  # OpenSSH's MaxSessions default
DEFAULT_KEEPALIVE = 15.0
"""A live connection is probed this often; no answer in as long: dropped."""


class SSHPool:
    """Connections to remote hosts: one per target, shared by all its runs.

    Args:
        reactor: The reactor (default: the global one); a real one, as the
            connections are made on it too.
        idle_close: Seconds a connection without runs stays open (default 30).
        connect_timeout: Seconds to wait for a host to answer (default 15).
        max_sessions: Channels one connection may carry at once, as the
            server's ``MaxSessions`` (default 10, OpenSSH's); one is kept for
            kill requests, the other runs wait. Learned lower when a server
            refuses.
        keepalive: Seconds between probes of a connection; one left
            unanswered as long drops it, failing its runs (default 15), so a
            silent network never hangs a run.
    """

    def __init__(
        self,
        reactor: Reactor | None = None,
        *,
        idle_close: float = DEFAULT_IDLE_CLOSE,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        keepalive: float = DEFAULT_KEEPALIVE,
    ) -> None:
        self.reactor: Reactor = default_reactor() if reactor is None else reactor
        self.idle_close = idle_close
        self.connect_timeout = connect_timeout
        self.max_sessions = max_sessions
        self._keepalive = keepalive
        self.connections_opened = 0
        self.kill_requests = 0  # exec requests that signalled remote groups
        self._connections: dict[SSHTarget, _Connection] = {}
        self._live: set[_Connection] = set()
        self._closed_waiters: dict[_Connection, list[Deferred[None]]] = {}
        self._watching = False

    def __repr__(self) -> str:
        return f"<SSHPool {len(self._connections)} connections>"

    @property
    def keepalive(self) -> float:
        """Seconds between probes; a new value applies at once to open
        connections (their next probe comes one new interval from now)."""
        return self._keepalive

    @keepalive.setter
    def keepalive(self, seconds: float) -> None:
        self._keepalive = validate.seconds(seconds, "SSHPool.keepalive", positive=True)
        for connection in list(self._live):
            connection.keepalive_changed()

    def _connection(self, target: SSHTarget) -> _Connection:
        if not self._watching and hasattr(self.reactor, "addSystemEventTrigger"):
            self._watching = True
            self.reactor.addSystemEventTrigger("before", "shutdown", self._shutdown)
        connection = self._connections.get(target)
        if connection is None:
            connection = _Connection(self, target)
            self._connections[target] = connection
            self._live.add(connection)
        return connection

    def _forget(self, connection: _Connection) -> None:
        if self._connections.get(connection.target) is connection:
            del self._connections[connection.target]
        if connection.lost is not None:
            self._live.discard(connection)

    def connected(self) -> list[str]:
        """The targets with a connection open or opening, as ``user@host:port``."""
        return sorted(str(t) for t in self._connections)

    def _kill_orphans(self, target: SSHTarget, groups: list[tuple[int, float]]) -> None:
        """The runs of a lost connection are over here, but their groups may
        live on there: each gets SIGTERM over the target's current connection
        (a new one), then SIGKILL after its ``grace``, as a timeout would.

        Fire and forget, and bounded: an unreachable host fails each request's
        connection within ``connect_timeout``.
        """
        for pgid, grace in groups:
            Escalation(_OrphanGroup(self, target, pgid), self.reactor).terminate(grace)

    def _closed(self, connection: _Connection) -> None:
        self._live.discard(connection)
        for d in self._closed_waiters.pop(connection, []):
            d.callback(None)

    def close_all(self) -> Deferred[None]:
        """Close every connection; fires when all are closed."""
        waits = []
        for connection in list(self._live):
            d: Deferred[None] = Deferred()
            self._closed_waiters.setdefault(connection, []).append(d)
            waits.append(d)
            connection.close()
        return DeferredList(waits).addCallback(lambda _: None)

    def _shutdown(self) -> Deferred[None] | None:
        """At reactor shutdown: the remote groups of live runs die, then we close.

        As for local children (``procwork/_shutdown.py``): SIGTERM, then
        SIGKILL to what has not ended after ``SHUTDOWN_GRACE`` seconds. Every
        step is bounded, so a host that does not answer cannot hold up the
        exit. Returns a Deferred Twisted's shutdown waits for.
        """
        # Not an Escalation (procwork/_escalation.py), on purpose, although
        # it has the same TERM, grace, KILL shape. Here every signal is a
        # kill request over the network, and the sweep must wait (bounded)
        # until the SIGKILL request has run before close_all(): closing the
        # connection first can drop the request and leave the tree alive.
        # Escalation cannot say when that happens: its target's signal_group
        # returns a bool (a local killpg is done when it returns), so
        # _RunChannel.signal_group drops _Connection.signal_group's Deferred. Its
        # SIGKILL is also a timer of its own, due at the same instant as the
        # bounded wait below, and two calls due together run in no set order.
        # And it would change what happens: Escalation sets
        # kill_group_on_exit (the leftovers of a kill_leftovers=False run
        # would be killed, with one more request), and a run's own
        # Escalation, if already terminating with a longer grace, does not
        # re-arm with SHUTDOWN_GRACE. Making it fit means an asynchronous
        # signal_group on GroupTarget, which the local transport and the
        # supervisor implement too: not a small extension.
        from procwork._shutdown import SHUTDOWN_GRACE

        live = [
            (connection, channel)
            for connection in list(self._live)  # stalled ones too
            for channel in list(connection.channels)
            if channel.pgid is not None and not channel.exited
        ]
        if not live and not self._live:
            return None
        done: Deferred[None] = Deferred()
        ended = [channel.owner.wait() for _, channel in live]
        for connection, channel in live:
            assert channel.pgid is not None
            connection.signal_group(channel.pgid, signal.SIGTERM)

        def kill_the_rest() -> Deferred[object]:
            sent = [
                connection.signal_group(channel.pgid, signal.SIGKILL)
                for connection, channel in live
                if channel.pgid is not None and not channel.exited
            ]
            return _within(self.reactor, DeferredList(sent), 2.0)

        def close(_: object) -> Deferred[object]:
            return _within(self.reactor, self.close_all(), 2.0)

        waited = _within(
            self.reactor, DeferredList(ended, consumeErrors=True), SHUTDOWN_GRACE
        )
        waited.addBoth(lambda _: kill_the_rest()).addBoth(close)
        waited.addBoth(lambda _: done.callback(None))
        return done


def _within(reactor: Reactor, d: Deferred[Any], seconds: float) -> Deferred[object]:
    """``d``'s outcome ignored, or None after ``seconds``: a bounded wait."""
    bounded: Deferred[object] = Deferred()
    timer = reactor.callLater(seconds, lambda: bounded.callback(None))

    def settled(_: object) -> None:
        if timer.active():
            timer.cancel()
            bounded.callback(None)

    d.addBoth(settled)
    return bounded


_default_pool: SSHPool | None = None


def ssh_pool() -> SSHPool:
    """The pool remote runs use unless given another."""
    global _default_pool
    if _default_pool is None:
        import untwisted

        _default_pool = SSHPool(untwisted.lowlevel.default_driver().reactor)
    return _default_pool


def remote_process(
    where: object, remote: tuple[str | None, object, object], inherit_stdio: bool
) -> Callable[..., RemoteProcess]:
    """What ``procwork.run/spawn`` build for ``host=``: a RemoteProcess maker.

    Raises:
        TypeError, ValueError: ``host``, ``known_hosts`` or ``identity`` is
            unusable, or ``capture=False`` (a remote run has no terminal of
            ours to share); the message names the command.
    """
    host, known_hosts, identity = remote
    if host is None:
        raise ValueError(f"{where}: known_hosts= and identity= need host=")
    if inherit_stdio:
        raise ValueError(f"{where}: capture=False cannot be used with host=")
    for name, value in (("known_hosts", known_hosts), ("identity", identity)):
        if value is not None and not isinstance(value, str | os.PathLike):
            raise TypeError(f"{where}: {name} must be a path, not {value!r}")
    try:
        target = parse_host(host, known_hosts=known_hosts, identity=identity)  # type: ignore[arg-type]
    except (TypeError, ValueError) as e:
        raise type(e)(f"{where}: {e}") from None
    pool = ssh_pool()

    def make(options: RunOptions, **kw: Any) -> RemoteProcess:
        return RemoteProcess(options, target=target, pool=pool, **kw)

    return make


class _OrphanGroup:
    """The group of a run whose connection was lost, as an escalation's
    target: each signal is a kill request over the target's current
    connection (nothing tells when the leader is reaped there)."""

    def __init__(self, pool: SSHPool, target: SSHTarget, pgid: int) -> None:
        self.kill_group_on_exit = True
        self._pool = pool
        self._target = target
        self._pgid = pgid

    def signal_group(self, signum: int) -> bool:
        self._pool._connection(self._target).signal_group(self._pgid, signum)
        return True
