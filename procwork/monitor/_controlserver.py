"""The control socket's server: connections, and the bounds that keep them cheap.

:class:`ControlServer` makes at most ``control_max_connections``
connections (an idle one makes room; otherwise a ``busy`` refusal); each
:class:`_Connection` checks its peer (``SO_PEERCRED``), reads bounded request
lines, hands them to the :class:`~procwork.monitor._control.Controller`, is
closed when idle, and is the push producer of its transport, so a client
that does not read gets nothing more queued (a follower's lines are counted
instead).

Design: ARCHITECTURE.md, "The control socket".
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer  # type: ignore[import-untyped]

from procwork._reactor import ReactorTime
from procwork.monitor._protocol import MAX_LINE, PROTOCOL, decode, encode, error
from procwork.supervisor import NoSuchService

if TYPE_CHECKING:
    from procwork.monitor._control import Controller

__all__ = [
    "CLOSE_GRACE",
    "CLOSING_AT_ONCE",
    "EVICT_AFTER",
    "HEARTBEAT",
    "ControlServer",
    "ControlStats",
    "peer_credentials",
]

_log = Logger(namespace="procwork.monitor")

#: Seconds between the heartbeats a ``tail -f`` client receives, so it can
#: tell a quiet service from a monitor that stopped answering.
HEARTBEAT = 5.0

#: Seconds a connection must have been idle before a newcomer over the cap
#: may take its place: a client gets that long to send its request.
EVICT_AFTER = 1.0

#: Seconds a connection being closed has to take its last line; then it is
#: cut (a client that reads nothing would otherwise hold it for ever).
CLOSE_GRACE = 5.0

#: Connections that may be closing at once (each holds its descriptor
#: until its last line is sent, at the next reactor turn). A flood of
#: connections over the cap is refused with a line up to this many at a
#: time, and closed without one beyond, as soon as accepted: so the
#: descriptors never exceed the cap plus this many.
CLOSING_AT_ONCE = 16

#: The most often (seconds) the log says that connections are refused.
_WARN_EVERY = 60.0

Answer = dict[str, Any]


@dataclass
class ControlStats:
    """What the control socket has done, for the status and ``/metrics``.

    Attributes:
        open: Connections open now (counted against the cap).
        refused: Connections refused over the cap (none idle to close).
        evicted: Idle connections closed to make room for a new one.
        idle_closed: Connections closed after ``control_idle_timeout``.
        followers_cut: Followers cut off after reading nothing for
            ``control_idle_timeout``.
        skipped_lines: Output lines not sent to followers that fell behind.
        skipped_bytes: Their bytes (newlines included).
    """

    open: int = 0
    refused: int = 0
    evicted: int = 0
    idle_closed: int = 0
    followers_cut: int = 0
    skipped_lines: int = 0
    skipped_bytes: int = 0

    def to_dict(self) -> dict[str, int]:
        """JSON-ready."""
        return dict(vars(self))


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of the process at the other end of a Unix socket."""
    size = struct.calcsize("3i")
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, size)
    pid, uid, gid = struct.unpack("3i", data)
    return pid, uid, gid


class ControlServer(Factory):
    """Makes the connections of a control socket, at most the config's cap.

    Args:
        controller: Carries out the requests; its monitor's config gives
            ``control_max_connections`` and ``control_idle_timeout``, read
            at each use, so a reload applies them.
        reactor: For the timers.
    """

    noisy = False

    def __init__(self, controller: Controller, reactor: ReactorTime) -> None:
        self.controller = controller
        self.reactor = reactor
        self.stats = controller.stats
        self.connections: set[_Connection] = set()
        #: Connections (and refusals) closing: out of ``connections``, but
        #: each still holds its descriptor until its last line is sent.
        self.closing = 0
        self._warned: float | None = None

    @property
    def max_connections(self) -> int:
        """The cap, from the monitor's config."""
        return int(self.controller.monitor.config.control_max_connections)

    @property
    def idle_timeout(self) -> float:
        """Seconds before an idle connection is closed, from the config."""
        return float(self.controller.monitor.config.control_idle_timeout)

    def buildProtocol(self, addr: Any) -> Protocol | None:
        if len(self.connections) >= self.max_connections and not self._make_room():
            self.stats.refused += 1
            self._warn()
            if self.closing >= CLOSING_AT_ONCE:
                return None  # the port closes it at once, without a word
            self.closing += 1
            return _Refusal(
                self,
                {
                    **error(
                        f"the control socket has {len(self.connections)} "
                        "connections open, its most (control_max_connections), "
                        "and none is idle; try again"
                    ),
                    "busy": True,
                },
            )
        connection = _Connection(self)
        self.connections.add(connection)
        self.stats.open = len(self.connections)
        return connection

    def forget(self, connection: _Connection) -> None:
        """``connection`` no longer counts against the cap (it is closing)."""
        self.connections.discard(connection)
        self.stats.open = len(self.connections)

    def _make_room(self) -> bool:
        """Close the connection idle longest, if one has been idle long
        enough; whether room was made."""
        if self.closing >= CLOSING_AT_ONCE:
            return False
        now = self.reactor.seconds()
        idle = [
            c
            for c in self.connections
            if c.idle_since is not None and now - c.idle_since >= EVICT_AFTER
        ]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.idle_since or 0.0)
        self.stats.evicted += 1
        oldest.close(
            error(
                f"closed: {len(self.connections)} control connections were open, "
                "the most allowed (control_max_connections), and this one was "
                "idle longest"
            )
        )
        self._warn()
        return True

    def _warn(self) -> None:
        # Once per burst, not once per connection: a flood must not flood
        # the log too.
        now = self.reactor.seconds()
        if self._warned is not None and now - self._warned < _WARN_EVERY:
            return
        self._warned = now
        _log.warn(
            "control: {limit} connections open, the most allowed "
            "(control_max_connections): idle ones are closed to make room "
            "({evicted} so far), new ones refused when none is idle ({refused} "
            "so far)",
            limit=self.max_connections,
            evicted=self.stats.evicted,
            refused=self.stats.refused,
        )


class _Refusal(Protocol):
    """A connection over the cap: one line saying so, then closed."""

    def __init__(self, server: ControlServer, answer: Answer) -> None:
        self._server = server
        self._line = encode(answer)

    def connectionMade(self) -> None:
        # A new socket's kernel buffer has room for one line: the write
        # goes out at the next turn, and then the socket is closed.
        transport: Any = self.transport  # (zope interfaces confuse mypy)
        transport.write(self._line)
        transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._server.closing -= 1


@implementer(IPushProducer)
class _Connection(Protocol):
    """One client: one request line, one answer line (``tail -f``: more).

    It is the push producer of its own transport: the transport pauses it
    when more than its ``bufferSize`` is waiting to be sent to the client.
    """

    def __init__(self, server: ControlServer) -> None:
        self._server = server
        self._reactor = server.reactor
        self._controller = server.controller
        self._stats = server.stats
        self._peer = "unknown peer"
        self._buffer = bytearray()
        self._discarding = False  # in a line too long, skipping to its end
        self._busy = False  # a request is being answered (or followed)
        self._following: str | None = None  # the service followed
        self._unfollow: Callable[[], None] | None = None
        self._paused = False  # the transport's write buffer is full
        self._skipped = (0, 0)  # lines, bytes not sent while paused
        self._closing = False
        self._closed_here = False  # counted in the server's closing
        #: Since when (reactor seconds) the connection is idle; None while
        #: it is answering or its follower is receiving.
        self.idle_since: float | None = None
        self._timer: Any = None  # the idle timeout
        self._heartbeat: Any = None
        self._backstop: Any = None

    @property
    def _out(self) -> Any:
        # The UNIX transport; typed loosely, as zope interfaces are to mypy.
        return self.transport

    # -- the connection --------------------------------------------------------

    def connectionMade(self) -> None:
        self._out.registerProducer(self, True)
        self._idle()
        try:
            pid, uid, _gid = peer_credentials(self._out.getHandle())
        except OSError as e:
            self._refuse(f"cannot tell who is connecting: {e}")
            return
        self._peer = f"pid {pid} uid {uid}"
        if uid not in (os.getuid(), 0):
            self._refuse(
                f"uid {uid} may not control this monitor (only uid {os.getuid()} "
                "and root may)"
            )

    def _refuse(self, why: str) -> None:
        _log.warn("control: connection refused: {why}", why=why)
        self.close(error(why))

    def close(self, answer: Answer) -> None:
        """Send ``answer``, then close; cut after :data:`CLOSE_GRACE` seconds
        if the client does not take it."""
        if self._closing:
            return
        self._closing = True
        self._server.forget(self)
        self._server.closing += 1  # until connectionLost
        self._closed_here = True
        self._stop_following()
        self._cancel_timer()
        self._out.write(encode(answer))
        self._out.unregisterProducer()  # else a paused one would keep it open
        self._out.loseConnection()
        self._backstop = self._reactor.callLater(CLOSE_GRACE, self._out.abortConnection)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._closed_here:
            self._closed_here = False
            self._server.closing -= 1
        self._closing = True
        self._server.forget(self)
        self._stop_following()
        self._cancel_timer()
        if self._backstop is not None and self._backstop.active():
            self._backstop.cancel()
        self._backstop = None

    # -- idle or not -----------------------------------------------------------

    def _idle(self) -> None:
        """Idle from now: closed if it stays so for control_idle_timeout."""
        self.idle_since = self._reactor.seconds()
        self._cancel_timer()
        self._timer = self._reactor.callLater(
            self._server.idle_timeout, self._timed_out
        )

    def _working(self) -> None:
        self.idle_since = None
        self._cancel_timer()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        timeout = self._server.idle_timeout
        if self._following is None:
            self._stats.idle_closed += 1
            self.close(error(f"closed: idle for {timeout:g} s (control_idle_timeout)"))
            return
        self._stats.followers_cut += 1
        lines, _bytes = self._skipped
        _log.warn(
            "control: a follower of {service!r} ({peer}) read nothing for "
            "{timeout:g} s (control_idle_timeout) and was cut off; {lines} lines "
            "were not sent to it",
            service=self._following,
            peer=self._peer,
            timeout=timeout,
            lines=lines,
        )
        self.close(
            error(
                f"cut off: this follower read nothing for {timeout:g} s "
                f"(control_idle_timeout); {lines} lines were not sent to it"
            )
        )

    # -- the producer: the transport's write buffer ----------------------------

    def pauseProducing(self) -> None:
        """The client is not reading: stop reading its requests, and send a
        follower's lines no more (they are counted)."""
        if self._paused or self._closing:
            return
        self._paused = True
        self._out.pauseProducing()  # stop reading: no requests, no answers
        if self._following is not None:
            self._idle()  # stalled from now

    def resumeProducing(self) -> None:
        """The client has read everything sent: go on."""
        if not self._paused or self._closing:
            return
        self._paused = False
        self._out.resumeProducing()
        if self._following is not None:
            self._working()
            lines, size = self._skipped
            if lines:
                self._skipped = (0, 0)
                _log.info(
                    "control: a follower of {service!r} ({peer}) fell behind: "
                    "{lines} lines ({size} bytes) were not sent to it",
                    service=self._following,
                    peer=self._peer,
                    lines=lines,
                    size=size,
                )
                self._send(
                    {
                        "procwork": PROTOCOL,
                        "ok": True,
                        "skipped": {"lines": lines, "bytes": size},
                    }
                )
        self._process()

    def stopProducing(self) -> None:
        """The connection is gone (:meth:`connectionLost` follows)."""

    # -- requests --------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        if self.idle_since is not None:
            self._idle()  # it spoke: idle from now on
        self._buffer += data
        self._process()

    def _process(self) -> None:
        """Handle the complete lines received, while the client reads."""
        buffer = self._buffer
        start = 0
        while not self._paused and not self._closing:
            end = buffer.find(b"\n", start)
            if end < 0:
                if self._discarding:
                    start = len(buffer)
                elif len(buffer) - start > MAX_LINE:
                    self._too_long()
                    self._discarding = True
                    start = len(buffer)
                break
            if self._discarding:
                self._discarding = False
            elif end - start > MAX_LINE:
                self._too_long()
            else:
                self._line(bytes(buffer[start:end]))
            start = end + 1
        del buffer[:start]  # once, not per line: a chunk may hold thousands

    def _too_long(self) -> None:
        self._send(error(f"request longer than {MAX_LINE} bytes; skipped"))

    def _line(self, line: bytes) -> None:
        if self._busy:
            self._send(error("one request at a time: wait for the answer"))
            return
        try:
            message = decode(line)
        except ValueError as e:
            self._send(error(str(e)))
            return
        self._busy = True
        self._working()
        if message.get("command") == "tail" and message.get("follow") is True:
            self._follow(message)
            return
        self._controller.handle(message, self._peer).addCallback(self._answered)

    def _answered(self, answer: Answer) -> None:
        self._busy = False
        if not self._closing:
            self._idle()
        self._send(answer)

    def _send(self, answer: Answer) -> None:
        if not self._closing and self.connected:
            self._out.write(encode(answer))

    # -- tail -f -------------------------------------------------------------------

    def _follow(self, message: Mapping[str, Any]) -> None:
        """``tail -f``: the kept lines, then every new line until hang-up."""

        def started(answer: Answer) -> None:
            if self._closing:
                return
            if not answer["ok"]:
                self._answered(answer)
                return
            self._send(answer)
            supervisor = self._controller.monitor.supervisor
            name = answer["result"]["name"]  # a pattern resolved to one service
            try:
                self._unfollow = supervisor.follow(name, self._line_of(message))
            except NoSuchService as e:  # removed meanwhile
                self.close(error(str(e)))
                return
            self._following = name
            if self._paused:
                self._idle()
            self._beat()

        self._controller.handle(message, self._peer).addCallback(started)

    def _line_of(self, message: Mapping[str, Any]) -> Callable[[str, str], None]:
        stream = message.get("stream", "stdout")

        def line(line_stream: str, text: str) -> None:
            if line_stream != stream:
                return
            if self._paused:
                # Not queued: counted, and said when the client reads again.
                size = len(text.encode("utf-8", "replace")) + 1
                lines, skipped = self._skipped
                self._skipped = (lines + 1, skipped + size)
                self._stats.skipped_lines += 1
                self._stats.skipped_bytes += size
                return
            self._send({"procwork": PROTOCOL, "ok": True, "line": text})

        return line

    def _beat(self) -> None:
        if not self._paused:
            self._send({"procwork": PROTOCOL, "ok": True, "heartbeat": True})
        self._heartbeat = self._reactor.callLater(HEARTBEAT, self._beat)

    def _stop_following(self) -> None:
        if self._unfollow is not None:
            self._unfollow()
            self._unfollow = None
        if self._heartbeat is not None and self._heartbeat.active():
            self._heartbeat.cancel()
        self._heartbeat = None
