"""One remote run: :class:`RemoteProcess` and the SSH session channel it runs in.

The channel is the run's transport, as a :class:`~procwork._spawn.GroupProcess`
is a local run's: it sends the wrapper's exec request
(:mod:`procwork._remote._wrapper`), takes the wrapper's marker line out of
stderr and the group id from it, turns signals into kill requests over its
connection, and gives a run up when its SIGKILL goes unanswered. It drives
its Process through the Process's methods "for a transport" only.
"""

from __future__ import annotations

import errno
import shlex
import signal
import struct
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from procwork._errors import (
    CommandNotFound,
    RemoteConnectionLost,
    RemoteError,
    SpawnError,
    clip_command,
)
from procwork._process import LOW_PRIORITY_NICE, Process, RunOptions, RunState
from procwork._remote._conch import ConchError, SSHChannel, common
from procwork._remote._connection import KILL_WAIT
from procwork._remote._target import SSHTarget
from procwork._remote._wrapper import MARKER_LINE, command
from procwork._scheduler import Priority

if TYPE_CHECKING:
    from procwork._remote._connection import _Connection
    from procwork._remote._pool import SSHPool

__all__ = ["LEFTOVER_WAIT", "RemoteProcess"]

_log = Logger(namespace="procwork")

LEFTOVER_WAIT = 0.5

#: Once what the command left is killed (or there is nothing to kill), how
#: long the output may still take to arrive before the run ends without it.
#: sshd sends the exit status when it reaps the command, not after the last
#: of its output: on a loaded machine that output came seconds later (82 of
#: 200 concurrent runs lost theirs, exiting 0). The channel's EOF says it is
#: all in; a connection that goes silent is caught by the keepalive.
OUTPUT_WAIT = 5.0
"""After the command exits, seconds its output may still take to arrive
before what it left running is killed (``kill_leftovers``) or let go."""

_MARKER_BUFFER = 1 << 16  # bytes of stderr searched for the marker line


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

    def start_child(self) -> None:
        """Open the run's session channel: on the connection to its target,
        in turn with the other runs there."""
        options = self.options
        stdin = options.stdin and not options.inherit_stdio
        nice = LOW_PRIORITY_NICE if self.priority is Priority.LOW else 0
        wrapped = command(
            self.args, options.env, options.cwd, nice, grace=self.grace, stdin=stdin
        )
        # Without input the wrapper gives the command /dev/null (as locally:
        # reading it ends at once) and its watcher keeps the session's stdin,
        # which must then stay open: no EOF is ever sent (closeStdin).
        channel = _RunChannel(self, wrapped, stdin=stdin)
        self._channel = channel
        self.transport_started(channel)
        self._pool._connection(self.target).start(channel)


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
        self.kill_group_on_exit = owner.options.kill_leftovers
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
        self._eof_received = False  # the server sent all the output
        self._output_call: Any = None
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
        if self.connection is not None:
            self.connection.opened()
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
        self.owner.transport_failed(
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
        self.owner.output_received(1, data)

    def extReceived(self, dataType: int, data: bytes) -> None:
        if self._marker_done:
            self.owner.output_received(2, data)
            return
        self._stderr_head += data
        match = MARKER_LINE.search(self._stderr_head)
        if match is None or not self._stderr_head[match.start() :].startswith(
            self.marker
        ):
            if len(self._stderr_head) > _MARKER_BUFFER:
                self._marker_done = True
                self.owner.output_received(2, self._stderr_head)
                self._stderr_head = b""
            return
        self._marker_done = True
        before, after = (
            self._stderr_head[: match.start()],
            self._stderr_head[match.end() :],
        )
        self._stderr_head = b""
        if before:
            self.owner.output_received(2, before)
        self._marker(match.group(1))
        if after:
            self.owner.output_received(2, after)

    def _marker(self, word: bytes) -> None:
        args, target, cwd = self.owner.args, self.owner.target, self.owner.options.cwd
        cannot = f"cannot run {clip_command(' '.join(args), len(args))} on {target}"
        if word == b"notfound":
            self._start_error = CommandNotFound(
                errno.ENOENT,
                f"{cannot}: command {args[0]!r} not found there (on its PATH)",
            )
        elif word == b"nocwd":
            self._start_error = SpawnError(
                errno.ENOENT,
                f"{cannot}: cannot enter working directory {cwd!r} there",
            )
        else:
            self.pgid = int(word)
            self.owner.pid_known(self.pgid)
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
        reactor = self.owner.reactor
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
            done.addBoth(lambda _: self._output_in())
        else:
            self._output_in()

    def _output_in(self) -> None:
        """End once the output is all in: at once if the channel's EOF came,
        else at its EOF or close, OUTPUT_WAIT s at most."""
        if self._ended:
            return
        if self._eof_received:
            self._end()
        elif self._output_call is None:
            self._output_call = self.owner.reactor.callLater(OUTPUT_WAIT, self._end)

    def eofReceived(self) -> None:
        self._eof_received = True
        if self._output_call is not None:
            self._end()

    def closed(self) -> None:
        connection = self.connection
        if connection is not None and connection.lost is not None and not self.exited:
            self.owner.transport_failed(
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
            self._give_up_call = self.owner.reactor.callLater(KILL_WAIT, self._give_up)

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
        for call in (self._leftover_call, self._give_up_call, self._output_call):
            if call is not None and call.active():
                call.cancel()
        if not self._marker_done and self._stderr_head:
            self.owner.output_received(2, self._stderr_head)
        if self.connection is not None:
            self.connection.release(self)
        if self.conn is not None and self in self.conn.channelsToRemoteChannel:
            self.conn.sendClose(self)
        if self.status is None and status_known:
            self.status = 255 << 8  # closed without telling how it ended
        if self.owner.state is RunState.RUNNING:  # not failed meanwhile
            if self._start_error is not None:
                self.owner.transport_failed(self._start_error)
            else:
                self.owner.transport_ended()
