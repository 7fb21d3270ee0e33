"""One SSH connection to one host, and the runs and kill requests it carries.

A :class:`_Connection` opens its runs' session channels in order, at most
``max_sessions - 1`` at once (one stays free for kill requests); batches the
kill requests of its runs into exec requests; and notices when it dies or
goes silent: no answer to a keepalive drops it, a kill request unanswered
for :data:`KILL_WAIT` seconds marks it *stalled*, and from then on its kill
requests and new runs go over a new connection. Setting it up (the SSH
transport, host key, authentication) is :mod:`procwork._remote._auth`'s.
"""

from __future__ import annotations

import signal
from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from procwork._errors import RemoteConnectionLost, RemoteError, RemoteUnreachable
from procwork._remote._auth import _SSHConnection, _Transport
from procwork._remote._conch import ConchError, SSHChannel, common
from procwork._remote._target import SSHTarget

if TYPE_CHECKING:
    from procwork._remote._channel import _RunChannel
    from procwork._remote._pool import SSHPool

__all__ = ["KILL_WAIT"]

_log = Logger(namespace="procwork")

KILL_WAIT = 1.0

#: Refusals of a session channel, with none of ours open, retried before
#: a run fails with the server's refusal (0.2 + 0.4 + ... + 3.2 s).
REFUSED_RETRIES = 4
"""Seconds a kill request may go unanswered before it (and the connection's
later ones) go over a new connection; and seconds a run's exit status may
take after its SIGKILL before the run is given up, with no returncode."""


class _Signal(NamedTuple):
    """One signal to send there, and who waits for it to be sent."""

    pgid: int
    signum: int
    group: bool
    done: Deferred[None]
    relayed: bool


class _Connection:
    """One SSH connection to one target and the runs using it."""

    def __init__(self, pool: SSHPool, target: SSHTarget) -> None:
        self.pool = pool
        self.target = target
        self.reactor = pool.reactor
        self.conn: _SSHConnection | None = None
        self.lost: str | None = None
        self.channels: set[_RunChannel] = set()
        self.open: set[_RunChannel] = set()
        self.waiting: deque[_RunChannel] = deque()
        self.max_sessions = pool.max_sessions
        self._signals: list[_Signal] = []
        self._signalling = False
        self._kill_deadline: Any = None
        self.stalled = False  # a kill request went unanswered: see _stall
        self._idle_call: Any = None
        # Session channels the server refused with none of ours open, in a
        # row, and the retry waiting out the last refusal (see open_failed).
        self._refusals = 0
        self._refused_call: Any = None
        self._keepalive_call: Any = None
        self._closing = False
        self.transport: _Transport | None = None
        self._connect()

    def _connect(self) -> None:
        self.pool.connections_opened += 1
        endpoint = HostnameEndpoint(
            self.reactor,
            self.target.host.encode(),
            self.target.port,
            timeout=self.pool.connect_timeout,
        )
        factory = Factory.forProtocol(lambda: _Transport(self))
        d = endpoint.connect(factory)  # type: ignore[arg-type, unused-ignore]
        d.addErrback(self._unreachable)

    def _unreachable(self, failure: Failure) -> None:
        self._broken(
            RemoteUnreachable(
                f"cannot reach {self.target}: {failure.getErrorMessage()}"
            )
        )

    def _broken(self, error: BaseException) -> None:
        """The connection could not be set up: every run waiting for it fails."""
        self.lost = str(error)
        self.pool._forget(self)
        waiting, self.waiting = list(self.waiting), deque()
        self.channels.clear()
        for channel in waiting:
            channel._ended = True
            channel.owner.transport_failed(error)
        self._send_signals()  # lost: their waiters are told now
        self.pool._closed(self)

    def ready(self, conn: _SSHConnection) -> None:
        self.conn = conn
        self._pump()
        self._send_signals()  # asked for while connecting (a relay)
        self._keepalive_call = self.reactor.callLater(
            self.pool.keepalive, self._keepalive
        )

    def start(self, channel: _RunChannel) -> None:
        channel.connection = self
        self.channels.add(channel)
        self.waiting.append(channel)
        self._cancel_idle()
        if self.conn is not None:
            self._pump()

    def forget(self, channel: _RunChannel) -> None:
        if channel in self.waiting:
            self.waiting.remove(channel)
        self.channels.discard(channel)
        self._maybe_idle()

    def _pump(self) -> None:
        if self._refused_call is not None:
            return  # waiting out a refusal (see open_failed)
        # One session stays free for kill requests.
        while self.waiting and len(self.open) < max(1, self.max_sessions - 1):
            channel = self.waiting.popleft()
            self.open.add(channel)
            assert self.conn is not None
            self.conn.openChannel(channel)

    def _refusal_waited(self) -> None:
        self._refused_call = None
        if self.lost is None:
            self._pump()

    def opened(self) -> None:
        """A run's channel is open: the server takes sessions again."""
        self._refusals = 0

    def open_failed(self, channel: _RunChannel, reason: Failure | ConchError) -> None:
        self.open.discard(channel)
        if self.lost is not None:  # the connection ended while it opened
            self.channels.discard(channel)
            channel._ended = True
            channel.owner.transport_failed(
                RemoteConnectionLost(
                    f"the SSH connection to {self.target} was lost ({self.lost})"
                )
            )
            return
        if isinstance(reason, ConchError) and self.open:
            # Over the server's MaxSessions: learn its limit, retry later.
            self.max_sessions = len(self.open) + 1
            self.waiting.appendleft(channel)
            return
        if isinstance(reason, ConchError) and self._refusals < REFUSED_RETRIES:
            # Refused with none of ours open: the server may still count
            # sessions we have closed (sshd counts one until it has reaped
            # its child, which a loaded machine delays: seen under load with
            # MaxSessions 3). Wait and retry, a few times (about 3 s in all),
            # before saying the server refuses.
            self._refusals += 1
            self.waiting.appendleft(channel)
            self._refused_call = self.reactor.callLater(
                0.1 * 2**self._refusals, self._refusal_waited
            )
            return
        self._refusals = 0
        self.channels.discard(channel)
        channel._ended = True
        text = reason.getErrorMessage() if isinstance(reason, Failure) else str(reason)
        channel.owner.transport_failed(
            RemoteError(f"{self.target} refused a session channel: {text}")
        )
        self._maybe_idle()

    def release(self, channel: _RunChannel) -> None:
        self.open.discard(channel)
        self.channels.discard(channel)
        if self.lost is None and self.conn is not None:
            self._pump()
        self._maybe_idle()

    # signals ------------------------------------------------------------------

    def signal_group(
        self, pgid: int, signum: int, *, group: bool = True, relayed: bool = False
    ) -> Deferred[None]:
        """Send ``signum`` to group ``pgid`` (or process, ``group=False``) there.

        Returns a Deferred that fires once the kill request has run (or
        could not: the connection is gone). Requests made while one is on
        its way go together in the next. On a stalled connection, the
        request goes over the target's current one instead.

        Args:
            relayed: The request was sent once over a connection that did
                not answer it; it is relayed no further.
        """
        if self.stalled:
            current = self.pool._connection(self.target)
            return current.signal_group(pgid, signum, group=group, relayed=relayed)
        done: Deferred[None] = Deferred()
        self._signals.append(_Signal(pgid, int(signum), group, done, relayed))
        self._send_signals()
        return done

    def _send_signals(self) -> None:
        if self.lost is not None:
            batch, self._signals = self._signals, []
            for request in batch:
                request.done.callback(None)
            return
        if self._signalling or not self._signals or self.conn is None:
            return
        batch, self._signals = self._signals, []
        by_signal: dict[int, list[str]] = {}
        for request in batch:
            by_signal.setdefault(request.signum, []).append(
                f"-{request.pgid}" if request.group else str(request.pgid)
            )
        # One kill per target: in "kill -- -1 -2" a group already gone would
        # hide whether the others were signalled. A group id that is no group
        # (a server that gave the wrapper none of its own): the process itself.
        command = "; ".join(
            f"kill -s {name} -- {t} || kill -s {name} {t.lstrip('-')}"
            for signum, targets in by_signal.items()
            for name in [signal.Signals(signum).name[3:]]
            for t in targets
        )
        self._signalling = True
        self.pool.kill_requests += 1
        channel = _KillChannel(self, f"{{ {command}; }} 2>/dev/null".encode(), batch)
        self._kill_deadline = self.reactor.callLater(KILL_WAIT, self._stall, channel)
        self.conn.openChannel(channel)

    def signals_sent(self, channel: _KillChannel) -> None:
        """``channel``'s kill request has run (or cannot: refused, lost)."""
        if channel.relayed_away:
            return  # a late answer: its requests went over another connection
        deadline, self._kill_deadline = self._kill_deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()
        self._signalling = False
        for request in channel.batch:
            request.done.callback(None)
        self._send_signals()
        self._maybe_idle()  # a connection opened for kill requests alone

    def _stall(self, channel: _KillChannel) -> None:
        """A kill request got no answer in KILL_WAIT s: this connection is
        silent (a dead link, a stopped or swamped sshd), or too slow to be
        trusted with the next ones.

        Its kill requests, those waiting behind it and every later one go
        over a new connection, as do new runs and the runs still waiting for
        a channel (nothing of theirs has started there). The runs it carries
        stay on it: they end when it answers again, when they are given up
        (``_RunChannel._give_up``) or when its keepalive drops it.
        """
        self._kill_deadline = None
        self.stalled = True
        channel.relayed_away = True
        _log.warn(
            "{target}: a kill request got no answer in {seconds:g} s; sending "
            "it, and new runs, over a new connection",
            target=self.target,
            seconds=KILL_WAIT,
        )
        self.pool._forget(self)
        # From here on signal_group() hands requests to the target's current
        # connection, made when first needed.
        waiting, self.waiting = list(self.waiting), deque()
        for run in waiting:
            self.channels.discard(run)
            self.pool._connection(self.target).start(run)
        queued, self._signals = self._signals, []
        for request in channel.batch:
            if request.relayed:
                # The second connection that does not answer it: let it go
                # (the wrapper's watcher kills the group if the session dies).
                request.done.callback(None)
            else:
                self._relay(request, relayed=True)
        for request in queued:  # never sent here
            self._relay(request, relayed=request.relayed)
        self._maybe_idle()

    def _relay(self, request: _Signal, *, relayed: bool) -> None:
        sent = self.signal_group(
            request.pgid, request.signum, group=request.group, relayed=relayed
        )
        sent.chainDeferred(request.done)

    # life ------------------------------------------------------------------------

    def _keepalive(self) -> None:
        self._keepalive_call = None
        if self.conn is None or self.lost is not None:
            return
        answered = [False]

        def answer(_: object) -> None:
            answered[0] = True

        self.conn.sendGlobalRequest(b"keepalive@openssh.com", b"", wantReply=1).addBoth(
            answer
        )

        def check() -> None:
            if answered[0] or self.lost is not None:
                self._keepalive_call = (
                    self.reactor.callLater(self.pool.keepalive, self._keepalive)
                    if self.lost is None
                    else None
                )
                return
            self.lost = f"no answer to a keepalive in {self.pool.keepalive:g} s"
            if self.transport is not None and self.transport.transport is not None:
                self.transport.transport.abortConnection()

        self._keepalive_call = self.reactor.callLater(self.pool.keepalive, check)

    def keepalive_changed(self) -> None:
        """The pool's keepalive changed: probe one new interval from now
        (a probe in flight is given up; the new one asks again)."""
        call = self._keepalive_call
        if call is not None and call.active():
            call.cancel()
            self._keepalive_call = self.reactor.callLater(
                self.pool.keepalive, self._keepalive
            )

    def _maybe_idle(self) -> None:
        if not self.channels and self._idle_call is None and self.lost is None:
            self._idle_call = self.reactor.callLater(self.pool.idle_close, self.close)

    def _cancel_idle(self) -> None:
        if self._idle_call is not None:
            if self._idle_call.active():
                self._idle_call.cancel()
            self._idle_call = None

    def close(self) -> None:
        """Close the connection (runs still on it fail as dropped)."""
        self._idle_call = None
        self._closing = True
        self.pool._forget(self)
        if self.lost is not None:
            self.pool._closed(self)
        elif self.transport is not None and self.transport.transport is not None:
            self.transport.transport.loseConnection()  # type: ignore[misc]
        else:  # still connecting
            self._broken(RemoteError(f"the connection to {self.target} was closed"))

    def connection_lost(self, reason: str) -> None:
        if self.lost is None:
            self.lost = "closed by procwork" if self._closing else reason
        self.pool._forget(self)
        self._cancel_idle()
        for call in (self._keepalive_call, self._kill_deadline, self._refused_call):
            if call is not None and call.active():
                call.cancel()
        self._keepalive_call = self._kill_deadline = self._refused_call = None
        if not self._closing:
            # The groups of the runs it carried may live on: the sshd
            # serving it may be alive behind a dead link, or stopped. (If
            # it died, each wrapper's watcher is at it already.)
            alive = [
                (channel.pgid, channel.owner.grace)
                for channel in self.channels
                if channel.pgid is not None and not (channel.exited or channel._ended)
            ]
            if alive:
                self.pool._kill_orphans(self.target, alive)
        # Channels not yet opened (conch fails those being opened itself).
        error = RemoteConnectionLost(
            f"the SSH connection to {self.target} was lost ({self.lost})"
        )
        for channel in list(self.waiting):
            channel._ended = True
            channel.owner.transport_failed(error)
        self.waiting.clear()
        # The kill request on its way is failed by conch (its channel is
        # closed); those queued behind it are told here.
        self._send_signals()
        self.pool._closed(self)


class _KillChannel(SSHChannel):
    """``kill -s SIG -- -PGID ...`` as its own exec request."""

    name = b"session"

    def __init__(
        self, connection: _Connection, command: bytes, batch: list[_Signal]
    ) -> None:
        super().__init__()
        self._connection = connection
        self._command = command
        self.batch = batch
        self.relayed_away = False  # its requests were sent over another connection
        self._done = False

    def channelOpen(self, specificData: bytes) -> None:
        assert self.conn is not None
        reply = self.conn.sendRequest(
            self, b"exec", common.NS(self._command), wantReply=True
        )
        # What counts is that the channel closes (closed(): the kill ran, or
        # cannot); a reply lost with its connection is no error.
        reply.addErrback(lambda _: None)
        self.conn.sendEOF(self)

    def openFailed(self, reason: object) -> None:
        _log.warn(
            "{target}: could not send a kill request: {reason}",
            target=self._connection.target,
            reason=reason,
        )
        self._finished()

    def closed(self) -> None:
        self._finished()

    def _finished(self) -> None:
        if not self._done:
            self._done = True
            self._connection.signals_sent(self)
