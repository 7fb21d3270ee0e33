"""Remote runs over SSH: ``procwork.run(argv, host="user@host:port")``.

One multiplexed SSH connection per host (Twisted's own ``twisted.conch``)
carries every run on that host, each in its own session channel. The
connection is opened on first use and closed after ``idle_close`` seconds
without a run.

How a remote run keeps the local contract (timeout, cancel, grace kill of
the whole tree): the command is started through a small POSIX ``sh`` wrapper
(``procwork/_remote_wrapper.py``). OpenSSH's ``sshd`` (and dropbear) call
``setsid()`` for every session, so the login shell that runs our command
string is already a process group leader; the wrapper checks that with
``kill -s 0 -- -$$`` (a group whose id is our own pid exists only if we lead
it), prints ``<marker> <pid>`` as the first line of stderr, and ``exec``s the
command: the command keeps that pid, so it leads the group and its exit
status or signal reaches us unchanged (``exit-status`` / ``exit-signal``). On
a server that does not start sessions that way, the wrapper execs the
command through ``setsid`` (util-linux; BSDs lack it), which, run by a
process that is not a group leader, makes the new session in place, pid
unchanged. Without either, the kill request falls back to signalling the
process alone (``kill -- -PGID || kill PID``), and the tree-kill needs the
server's help. (``set -m`` would be the POSIX way, but ``dash`` refuses job
control without a terminal, and a session without a pty has none.)

The marker line is stripped from stderr. To signal the group, a second exec
request on the same connection runs ``kill -s TERM -- -PGID`` (then ``KILL``
after ``grace``); pending signals of many runs share one such request.

sshd allows ``MaxSessions`` (default 10) channels per connection: runs use
at most ``max_sessions - 1`` of them and wait for a free one in order, so one
is always left for the kill requests.

When the connection dies or goes silent, the tree still dies and the caller
still gets its answer on time:

- A kill request not answered within :data:`KILL_WAIT` seconds marks its
  connection *stalled*: that request, and every later one for its runs, goes
  over a new connection, as do new runs and those still waiting for a
  channel (the stalled one keeps the runs it has, until they end or its
  keepalive drops it).
- A run whose exit status has not come :data:`KILL_WAIT` seconds after its
  group was sent SIGKILL (a timeout's or cancel's escalation, ``kill()``)
  is given up: its Result comes at once, with the output received so far
  and no returncode (``None``: how it ended is unknown). So a silent
  connection cannot delay a timed-out run past ``timeout + grace +
  KILL_WAIT``.
- When a connection is lost (dropped, or no answer to a keepalive), the
  groups of the runs it carried get SIGTERM over a new connection, and
  SIGKILL ``grace`` seconds later.
- On the host, the wrapper's watcher kills the group when the session's
  sshd dies (``procwork/_remote_wrapper.py``), even when no client is left
  to ask.
"""

from __future__ import annotations

import errno
import os
import shlex
import signal
import struct
import time
import warnings
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from procwork import _validate as validate
from procwork._errors import CommandNotFound, ProcworkError, SpawnError, clip_command
from procwork._escalation import Escalation
from procwork._process import Process, RunOptions, RunState
from procwork._reactor import Reactor, default_reactor
from procwork._remote_wrapper import MARKER_LINE as _MARKER_LINE
from procwork._remote_wrapper import WRAPPER
from procwork._remote_wrapper import command as _command
from procwork._scheduler import Priority
from procwork._sshtarget import SSHTarget, parse_host

with warnings.catch_warnings():
    # Twisted before 26 takes TripleDES from its old place in cryptography,
    # which prints a deprecation warning at import: Twisted's concern, not
    # something a user of procwork.run(host=...) can act on, and it would
    # land in the stderr of `procwork run --host`.
    warnings.filterwarnings("ignore", message="TripleDES has been moved")
    from twisted.conch.client.knownhosts import KnownHostsFile
    from twisted.conch.error import ConchError, HostKeyChanged
    from twisted.conch.ssh import common
    from twisted.conch.ssh.agent import SSHAgentClient
    from twisted.conch.ssh.channel import SSHChannel
    from twisted.conch.ssh.connection import SSHConnection
    from twisted.conch.ssh.keys import BadKeyError, EncryptedKeyError, Key
    from twisted.conch.ssh.transport import SSHClientTransport
    from twisted.conch.ssh.userauth import SSHUserAuthClient

__all__ = [
    "DEFAULT_IDLE_CLOSE",
    "KILL_WAIT",
    "WRAPPER",
    "RemoteAuthError",
    "RemoteConnectionLost",
    "RemoteError",
    "RemoteHostKeyError",
    "RemoteProcess",
    "RemoteUnreachable",
    "SSHPool",
    "SSHTarget",
    "parse_host",
    "remote_process",
    "ssh_pool",
]

_log = Logger(namespace="procwork")

DEFAULT_IDLE_CLOSE = 30.0
"""Seconds a connection with no run stays open for the next one."""
DEFAULT_CONNECT_TIMEOUT = 15.0
DEFAULT_MAX_SESSIONS = 10  # OpenSSH's MaxSessions default
DEFAULT_KEEPALIVE = 15.0
"""A live connection is probed this often; no answer in as long: dropped."""
LEFTOVER_WAIT = 0.5
"""After the command exits, seconds its output may still take to arrive
before what it left running is killed (``kill_leftovers``) or let go."""
LOW_PRIORITY_NICE = 10
KILL_WAIT = 1.0
"""Seconds a kill request may go unanswered before it (and the connection's
later ones) go over a new connection; and seconds a run's exit status may
take after its SIGKILL before the run is given up, with no returncode."""

_MARKER_BUFFER = 1 << 16  # bytes of stderr searched for the marker line


# -- errors ----------------------------------------------------------------------


class RemoteError(ProcworkError, ConnectionError):
    """A remote run failed because of its SSH connection; the message names the host."""


class RemoteUnreachable(RemoteError):
    """The host could not be reached (name, route, refused, no answer)."""


class RemoteHostKeyError(RemoteError):
    """The host's key is not in known_hosts, or differs from the one there."""


class RemoteAuthError(ProcworkError, PermissionError):
    """The host refused every key we offered."""


class RemoteConnectionLost(RemoteError):
    """The connection dropped while the run was going on; its outcome is unknown."""


for _cls in (
    RemoteError,
    RemoteUnreachable,
    RemoteHostKeyError,
    RemoteAuthError,
    RemoteConnectionLost,
):
    _cls.__module__ = "procwork"


# -- the process ---------------------------------------------------------------------


class RemoteProcess(Process):
    """A :class:`Process` whose child runs on another host, in an SSH channel.

    Same handle, same :class:`~procwork.Result`; ``pid`` is the remote
    process group id once the command has started.
    """

    def __init__(
        self, options: RunOptions, *, target: SSHTarget, pool: SSHPool, **kw: Any
    ) -> None:
        super().__init__(options, **kw)
        self.target = target
        self._pool = pool
        self._channel: _RunChannel | None = None

    def __repr__(self) -> str:
        return super().__repr__().replace("<Process ", f"<Process on {self.target} ", 1)

    def _admitted(self) -> None:
        self._started = time.monotonic()
        nice = LOW_PRIORITY_NICE if self.priority is Priority.LOW else 0
        command = _command(
            self.args,
            self._env,
            self._cwd,
            nice,
            grace=self.grace,
            stdin=self._stdin,
        )
        # Without input the wrapper gives the command /dev/null (as locally:
        # reading it ends at once) and its watcher keeps the session's stdin,
        # which must then stay open: no EOF is ever sent (closeStdin).
        channel = _RunChannel(self, command, stdin=self._stdin)
        self._channel = channel
        self._started_as(channel)
        self._pool._connection(self.target).start(channel)

    def _remote_failed(self, error: BaseException) -> None:
        """The run cannot go on (it holds a scheduler slot): fail it."""
        if self.state is not RunState.RUNNING:
            return
        self.state = RunState.FAILED
        self._cancel_timers()
        self._scheduler.finished(self)
        self._fail(Failure(error))


class _RunChannel(SSHChannel):
    """One remote run's session channel; the transport its Process drives."""

    name = b"session"

    def __init__(
        self, owner: RemoteProcess, command: tuple[bytes, bytes], *, stdin: bool
    ) -> None:
        super().__init__(localWindow=1 << 21)
        self.owner = owner
        self.command, self.marker = command
        self.pgid: int | None = None
        self.kill_group_on_exit = owner._kill_leftovers
        self.exited = False
        self.status: int | None = None
        self.connection: _Connection | None = None
        self._execed = False
        self._input: list[bytes] = []
        self._eof_wanted = False
        self._eof_sent = False
        self._stderr_head = b""  # stderr until the marker line is found
        self._marker_done = False
        # The wrapper could not start the command (not found, no such cwd):
        # the run fails with this, as a local one would.
        self._start_error: SpawnError | None = None
        self._pending_signals: list[int] = []
        self._ended = False
        self._leftover_call: Any = None
        self._stdin = stdin
        self._give_up_call: Any = None

    # Process's side ------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self._execed:
            self._input.append(data)
        elif not self._eof_sent and not self._ended:
            SSHChannel.write(self, data)

    def closeStdin(self) -> None:
        if not self._stdin:
            return  # the watcher's lifeline, not the command's stdin
        self._eof_wanted = True
        self._maybe_eof()

    def signal_group(self, signum: int) -> bool:
        if self.exited or self._ended:
            return False
        if signum == signal.SIGKILL:
            self._arm_give_up()
        if self.pgid is None:
            connection = self.connection
            if connection is not None and self in connection.waiting:
                # Still waiting for a channel: it never reaches the host.
                connection.forget(self)
                self.status = int(signum)
                self._end()
            else:
                # Sent as soon as the wrapper reports the group.
                self._pending_signals.append(signum)
            return True
        assert self.connection is not None
        self.connection.signal_group(self.pgid, signum)
        return True

    def signalProcess(self, signum: int) -> None:
        # In the exec form the command leads its group: its pid is the pgid.
        if self.pgid is None or self.exited:
            from twisted.internet.error import ProcessExitedAlready

            raise ProcessExitedAlready()
        assert self.connection is not None
        self.connection.signal_group(self.pgid, signum, group=False)

    # the connection's side ----------------------------------------------------

    def channelOpen(self, specificData: bytes) -> None:
        assert self.conn is not None
        d = self.conn.sendRequest(
            self, b"exec", common.NS(self.command), wantReply=True
        )
        d.addCallbacks(self._exec_ok, self._exec_refused)

    def _exec_ok(self, _: object) -> None:
        self._execed = True
        pending, self._input = self._input, []
        for data in pending:
            self.write(data)
        self._maybe_eof()

    def _exec_refused(self, failure: Failure) -> None:
        self.owner._remote_failed(
            RemoteError(
                f"cannot run {shlex.join(self.owner.args)!r} on {self.owner.target}: "
                "the server refused to execute a command"
            )
        )
        self.loseConnection()

    def openFailed(self, reason: Failure | ConchError) -> None:
        assert self.connection is not None
        self.connection.open_failed(self, reason)

    def _maybe_eof(self) -> None:
        if self._eof_wanted and self._execed and not self._eof_sent and not self.buf:
            self._eof_sent = True
            if not self._ended and self.conn is not None:
                self.conn.sendEOF(self)

    def addWindowBytes(self, data: int) -> None:
        super().addWindowBytes(data)
        self._maybe_eof()

    def dataReceived(self, data: bytes) -> None:
        self.owner._output(1, data)

    def extReceived(self, dataType: int, data: bytes) -> None:
        if self._marker_done:
            self.owner._output(2, data)
            return
        self._stderr_head += data
        match = _MARKER_LINE.search(self._stderr_head)
        if match is None or not self._stderr_head[match.start() :].startswith(
            self.marker
        ):
            if len(self._stderr_head) > _MARKER_BUFFER:
                self._marker_done = True
                self.owner._output(2, self._stderr_head)
                self._stderr_head = b""
            return
        self._marker_done = True
        before, after = (
            self._stderr_head[: match.start()],
            self._stderr_head[match.end() :],
        )
        self._stderr_head = b""
        if before:
            self.owner._output(2, before)
        self._marker(match.group(1))
        if after:
            self.owner._output(2, after)

    def _marker(self, word: bytes) -> None:
        args, target = self.owner.args, self.owner.target
        cannot = f"cannot run {clip_command(' '.join(args), len(args))} on {target}"
        if word == b"notfound":
            self._start_error = CommandNotFound(
                errno.ENOENT,
                f"{cannot}: command {args[0]!r} not found there (on its PATH)",
            )
        elif word == b"nocwd":
            self._start_error = SpawnError(
                errno.ENOENT,
                f"{cannot}: cannot enter working directory {self.owner._cwd!r} there",
            )
        else:
            self.pgid = int(word)
            self.owner.pid = self.pgid
            pending, self._pending_signals = self._pending_signals, []
            if self._ended and pending and self.connection is not None:
                # Given up before its group was known: it was to be killed.
                self.connection.signal_group(self.pgid, signal.SIGKILL)
            for signum in pending:
                self.signal_group(signum)

    def request_exit_status(self, data: bytes) -> int:
        (code,) = struct.unpack(">L", data[:4])
        self._exited((code & 0xFF) << 8)
        return 1

    def request_exit_signal(self, data: bytes) -> int:
        name, _ = common.getNS(data)
        try:
            signum = int(signal.Signals["SIG" + name.decode("ascii", "replace")])
        except KeyError:
            # A signal this system has no name for: 255, as ssh(1) exits.
            self._exited(255 << 8)
            return 1
        self._exited(signum)
        return 1

    def _exited(self, status: int) -> None:
        self.exited = True
        self.status = status
        # Output may still be on its way, and whatever the command left
        # running may hold its pipes open: give it a moment, then end anyway.
        reactor = self.owner._reactor
        self._leftover_call = reactor.callLater(LEFTOVER_WAIT, self._leftovers)

    def _leftovers(self) -> None:
        self._leftover_call = None
        if self._ended:
            return
        if self.kill_group_on_exit and self.pgid is not None and self.connection:
            # As locally, what is left is dead before the Result is out.
            # (Not given up after KILL_WAIT: output the command wrote may
            # still be on its way behind the exit status, and the kill
            # request, answered in order, lets it arrive. A silent
            # connection relays the request after KILL_WAIT anyway.)
            done = self.connection.signal_group(self.pgid, signal.SIGKILL)
            done.addBoth(lambda _: self._end())
        else:
            self._end()

    def closed(self) -> None:
        connection = self.connection
        if connection is not None and connection.lost is not None and not self.exited:
            self.owner._remote_failed(
                RemoteConnectionLost(
                    f"{shlex.join(self.owner.args)!r} on {self.owner.target}: "
                    f"the SSH connection was lost ({connection.lost}); whether the "
                    "command finished is unknown"
                )
            )
            self._ended = True
            connection.release(self)
            return
        self._end()

    def _arm_give_up(self) -> None:
        """SIGKILL is on its way: whatever the connection does, the run ends
        within KILL_WAIT s."""
        if self._give_up_call is None:
            self._give_up_call = self.owner._reactor.callLater(KILL_WAIT, self._give_up)

    def _give_up(self) -> None:
        """SIGKILL was sent KILL_WAIT s ago and the run has not ended: end it."""
        self._give_up_call = None
        if self._ended:
            return
        if not self.exited:
            _log.warn(
                "{command} on {target}: no exit status {seconds:g} s after its "
                "SIGKILL; it is given up (its Result has no returncode)",
                command=shlex.join(self.owner.args),
                target=self.owner.target,
                seconds=KILL_WAIT,
            )
        # Closing the channel also closes the watcher's stdin there, if the
        # server still listens: what is left of the group then dies too.
        self._end(status_known=self.exited)

    def _end(self, *, status_known: bool = True) -> None:
        if self._ended:
            return
        self._ended = True
        for call in (self._leftover_call, self._give_up_call):
            if call is not None and call.active():
                call.cancel()
        if not self._marker_done and self._stderr_head:
            self.owner._output(2, self._stderr_head)
        if self.connection is not None:
            self.connection.release(self)
        if self.conn is not None and self in self.conn.channelsToRemoteChannel:
            self.conn.sendClose(self)
        if self.status is None and status_known:
            self.status = 255 << 8  # closed without telling how it ended
        if self.owner.state == "running":  # not failed meanwhile
            if self._start_error is not None:
                self.owner._remote_failed(self._start_error)
            else:
                self.owner._ended()


# -- the connection ------------------------------------------------------------------


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
            channel.owner._remote_failed(error)
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
        # One session stays free for kill requests.
        while self.waiting and len(self.open) < max(1, self.max_sessions - 1):
            channel = self.waiting.popleft()
            self.open.add(channel)
            assert self.conn is not None
            self.conn.openChannel(channel)

    def open_failed(self, channel: _RunChannel, reason: Failure | ConchError) -> None:
        self.open.discard(channel)
        if self.lost is not None:  # the connection ended while it opened
            self.channels.discard(channel)
            channel._ended = True
            channel.owner._remote_failed(
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
        self.channels.discard(channel)
        channel._ended = True
        text = reason.getErrorMessage() if isinstance(reason, Failure) else str(reason)
        channel.owner._remote_failed(
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
        for call in (self._keepalive_call, self._kill_deadline):
            if call is not None and call.active():
                call.cancel()
        self._keepalive_call = self._kill_deadline = None
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
            channel.owner._remote_failed(error)
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


class _SSHConnection(SSHConnection):
    def __init__(self, owner: _Connection) -> None:
        super().__init__()
        self.owner = owner

    def serviceStarted(self) -> None:
        super().serviceStarted()
        self.owner.transport._state = "running"  # type: ignore[union-attr]
        self.owner.ready(self)


class _UserAuth(SSHUserAuthClient):
    def __init__(self, user: str, conn: _SSHConnection, keys: list[Key]) -> None:
        super().__init__(user.encode(), conn)
        self._keys = keys
        self._key: Key | None = None
        self.agent: SSHAgentClient | None = None
        self.exhausted = False
        self._agent_keys: list[tuple[bytes, bytes]] = []

    def getPublicKey(self) -> Key | None:
        if self._agent_keys:
            blob, _ = self._agent_keys.pop(0)
            self._key = None
            self._agent_blob = blob
            key: Key = Key.fromString(blob)
            return key
        if self._keys:
            self._key = self._keys.pop(0)
            public: Key = self._key.public()
            return public
        self.exhausted = True  # every key offered: a refusal, not a drop
        return None

    def signData(self, publicKey: Key, signData: bytes) -> Any:
        if self._key is None and self.agent is not None:
            return self.agent.signData(publicKey.blob(), signData)
        return super().signData(publicKey, signData)

    def getPrivateKey(self) -> Deferred[Key]:
        assert self._key is not None
        return succeed(self._key)

    def getPassword(self, prompt: object = None) -> None:
        return None  # never prompt: a watchdog has no one to ask

    def getGenericAnswers(
        self, name: object, instruction: object, prompts: object
    ) -> Any:
        return fail(ConchError("no keyboard-interactive authentication"))


class _Transport(SSHClientTransport):
    def __init__(self, owner: _Connection) -> None:
        self.owner = owner
        self._state = "securing"
        self._error: BaseException | None = None
        self._server_said: str | None = None
        self._userauth: _UserAuth | None = None

    def connectionMade(self) -> None:
        self.owner.transport = self
        super().connectionMade()

    def verifyHostKey(self, hostKey: bytes, fingerprint: bytes) -> Deferred[bool]:
        target = self.owner.target
        path = target.known_hosts
        key = Key.fromString(hostKey)
        name = target.known_hosts_name().decode()
        try:
            known = KnownHostsFile.fromPath(_FilePath(path)).hasHostKey(
                target.known_hosts_name(), key
            )
        except HostKeyChanged as e:
            self._error = RemoteHostKeyError(
                f"host key of {target} CHANGED: the {key.sshType().decode()} key it "
                f"sent ({key.fingerprint(_SHA256)}) differs from the one for {name} "
                f"in {path}, line {e.lineno}; refusing to connect (if the host was "
                "reinstalled, remove that line: ssh-keygen -R "
                f"{shlex.quote(name)} -f {shlex.quote(path)})"
            )
            return fail(self._error)
        if not known:
            self._error = RemoteHostKeyError(
                f"host key of {target} is unknown: {name} has no "
                f"{key.sshType().decode()} key in {path}; refusing to connect (add "
                f"it, e.g. ssh-keyscan -p {target.port} {target.host} >> {path}, "
                "after checking its fingerprint "
                f"{key.fingerprint(_SHA256)})"
            )
            return fail(self._error)
        return succeed(True)

    def receiveError(self, reasonCode: int, description: bytes) -> None:
        # The server's disconnect message ("Too many authentication failures").
        self._server_said = description.decode("utf-8", "replace")
        super().receiveError(reasonCode, description)

    def connectionSecure(self) -> None:
        self._state = "authenticating"
        keys, error = _identity_keys(self.owner.target)
        if error is not None:
            self._error = error
            self.loseConnection()
            return
        userauth = _UserAuth(self.owner.target.user, _SSHConnection(self.owner), keys)
        self._userauth = userauth
        sock = os.environ.get("SSH_AUTH_SOCK")
        if self.owner.target.identity is None and sock:
            d = _agent_keys(self.owner.reactor, sock, userauth)

            def ask(_: object) -> None:
                self.requestService(userauth)

            d.addBoth(ask)
        else:
            self.requestService(userauth)

    def connectionLost(self, reason: Failure | None = None) -> None:
        target = self.owner.target
        if self._userauth is not None and self._userauth.agent is not None:
            agent_transport = self._userauth.agent.transport
            if agent_transport is not None:
                agent_transport.loseConnection()  # type: ignore[misc]
        text = reason.getErrorMessage() if reason is not None else "closed"
        if self._state == "running":
            self.owner.connection_lost(text)
        elif self._error is not None:
            self.owner._broken(self._error)
        elif self._state == "authenticating" and (
            self._server_said is not None
            or (self._userauth is not None and self._userauth.exhausted)
        ):
            said = (
                f"; the server said: {self._server_said}" if self._server_said else ""
            )
            self.owner._broken(
                RemoteAuthError(
                    f"authentication as {target.user!r} on {target} failed: no key "
                    f"was accepted ({_key_source(target)}){said}"
                )
            )
        elif self._state == "authenticating":
            self.owner._broken(
                RemoteUnreachable(
                    f"cannot reach {target}: the connection was lost while "
                    f"authenticating ({text})"
                )
            )
        else:
            self.owner._broken(
                RemoteUnreachable(
                    f"cannot reach {target}: SSH handshake failed ({text})"
                )
            )
        super().connectionLost(reason)


def _key_source(target: SSHTarget) -> str:
    if target.identity is not None:
        return f"identity {target.identity}"
    if os.environ.get("SSH_AUTH_SOCK"):
        return "keys of ssh-agent and ~/.ssh/id_*"
    return "no ssh-agent; keys ~/.ssh/id_*"


def _identity_keys(target: SSHTarget) -> tuple[list[Key], BaseException | None]:
    if target.identity is not None:
        try:
            return [Key.fromFile(target.identity)], None
        except (OSError, BadKeyError, EncryptedKeyError) as e:
            return [], RemoteAuthError(
                f"cannot use identity {target.identity} for {target}: {e} "
                "(an unencrypted private key file is needed; use ssh-agent for others)"
            )
    keys = []
    for name in ("id_ed25519", "id_ecdsa", "id_rsa"):
        path = os.path.expanduser(f"~/.ssh/{name}")
        try:
            keys.append(Key.fromFile(path))
        except (OSError, BadKeyError, EncryptedKeyError, ValueError):
            continue
    return keys, None


def _agent_keys(reactor: Reactor, sock: str, auth: _UserAuth) -> Deferred[None]:
    endpoint = UNIXClientEndpoint(reactor, sock, timeout=5)
    d = endpoint.connect(Factory.forProtocol(SSHAgentClient))

    def connected(agent: SSHAgentClient) -> Deferred[None]:
        auth.agent = agent

        def keys(found: list[tuple[bytes, bytes]]) -> None:
            auth._agent_keys = list(found)

        identities: Deferred[None] = agent.requestIdentities().addCallback(keys)
        return identities

    keys_read: Deferred[None] = d.addCallback(connected)
    return keys_read


def _FilePath(path: str) -> Any:
    from twisted.python.filepath import FilePath

    return FilePath(path)


_SHA256 = None
try:
    from twisted.conch.ssh.keys import FingerprintFormats

    _SHA256 = FingerprintFormats.SHA256_BASE64
except ImportError:  # pragma: no cover - older Twisted
    pass


# -- the pool ----------------------------------------------------------------------


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
