"""Remote runs on a connection that dies or goes silent: the timeout and the
tree-kill hold.

Against a real OpenSSH server killed or stopped under the runs, and, for the
kill deadlines, on a fake clock with connections that answer nothing: a kill
unanswered for ``KILL_WAIT`` goes over a new connection, and a run is given
up a second after its SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Any, cast

import pytest
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

import procwork
from procwork import _remote
from procwork._process import RunOptions
from procwork._remote._connection import _Connection, _KillChannel
from tests.support import (
    ClockReactor,
    drive_until,
    python_child,
    readable,
    unique_token,
    wait,
)
from tests.support.remote import (
    kill_marked,
    nothing_left,
    on,
    sleeper_tree,
    watchers_of,
)
from tests.support.sshd import Sshd, remote_marker_pids

pytestmark = pytest.mark.usefixtures("no_load_gate")


# -- a connection that dies or goes silent: the timeout and the tree-kill hold --------


@pytest.mark.e2e
@pytest.mark.slow
def test_a_timed_out_run_on_a_silent_connection_returns_on_time_and_its_tree_dies(
    own_sshd: Sshd,
) -> None:
    """timeout=3, grace=1, and the sshd serving the connection is stopped (a dead
    link): the Result comes KILL_WAIT s after the SIGKILL was due (5 s in all
    here, well before a keepalive (15 s, twice) would drop the connection),
    timed out, with the output received so far and no returncode; the tree is
    killed over a new connection while the old one is still silent."""
    marker = unique_token()
    lines: list[bytes] = []
    stopped: list[int] = []
    proc = procwork.spawn(
        sleeper_tree(marker, first="echo started"),
        timeout=3,
        grace=1,
        stdin=False,  # as run() without input
        on_stdout=lines.append,
        **on(own_sshd),
    )
    try:
        assert drive_until(
            lambda: len(remote_marker_pids(marker)) >= 3 and bool(lines), 60
        )
        stopped = sorted(own_sshd.server_pids())  # every sshd of the connection
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        # The bound: a run held up by the silent connection would end only
        # when the keepalive drops it, after 15 to 30 s.
        result = wait(proc.wait(), 14)
        assert result.timed_out and result.returncode is None
        assert result.stdout == b"started\n"
        assert (
            result.describe() == "sent SIGKILL, exit status unknown after timeout 3 s"
        )
        assert nothing_left(marker, 30)  # while the old sshd is still stopped
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        kill_marked(marker)


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("stdin", [False, True], ids=["no-stdin", "stdin"])
def test_no_remote_process_survives_its_sessions_sshd_being_killed(
    own_sshd: Sshd, stdin: bool
) -> None:
    """Five times: the run fails with RemoteConnectionLost at once, and its tree
    dies (killed by the wrapper's watcher there, and over a new connection)."""
    for _ in range(5):
        marker = unique_token()
        proc = procwork.spawn(sleeper_tree(marker), stdin=stdin, **on(own_sshd))
        try:

            def tree_runs(p: procwork.Process = proc, m: str = marker) -> bool:
                return p.pid is not None and len(remote_marker_pids(m)) >= 3

            assert drive_until(tree_runs, 60)
            assert proc.pid is not None
            os.kill(own_sshd.session_of(proc.pid), signal.SIGKILL)
            with pytest.raises(procwork.RemoteConnectionLost):
                wait(proc.wait(), 30)
            assert nothing_left(marker, 30)
        finally:
            kill_marked(marker)


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("stdin", [False, True], ids=["no-stdin", "stdin"])
def test_the_wrapper_kills_the_tree_when_its_sshd_dies_with_no_client_to_help(
    own_sshd: Sshd, stdin: bool
) -> None:
    """The client program is stopped (it can send nothing), then the session's
    sshd is SIGKILLed: the wrapper's watcher alone kills the tree (at once
    without stdin, at its next poll with it)."""
    marker = unique_token()
    code = f"""
        import procwork
        from tests.support import drive_until
        proc = procwork.spawn({sleeper_tree(marker)!r}, stdin={stdin!r},
                              host={own_sshd.host!r},
                              known_hosts={str(own_sshd.known_hosts)!r},
                              identity={str(own_sshd.identity)!r})
        assert drive_until(lambda: proc.pid is not None, 60)
        print(proc.pid, flush=True)
        drive_until(lambda: False, 120)
        """
    try:
        with python_child(code) as client:
            assert client.stdout is not None
            assert readable(client.stdout, 60), client.stderr
            leader = int(client.stdout.readline())

            # The client's own command line holds the marker too.
            def tree() -> set[int]:
                return set(remote_marker_pids(marker)) - {client.pid}

            assert drive_until(lambda: len(tree()) >= 3, 60)
            os.kill(client.pid, signal.SIGSTOP)
            os.kill(own_sshd.session_of(leader), signal.SIGKILL)
            assert drive_until(lambda: not tree(), 30)
    finally:
        kill_marked(marker)


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("stdin", [False, True], ids=["no-stdin", "stdin"])
def test_a_finished_remote_run_leaves_no_watcher_behind(
    sshd: Sshd, stdin: bool
) -> None:
    """The watcher ends with its run: at once when it keeps stdin, at its next
    poll (2 s) when it polls."""
    proc = procwork.spawn(["true"], stdin=stdin, **on(sshd))
    result = wait(proc.wait(), 60)
    assert result.ok and result.pid is not None
    assert drive_until(lambda: not watchers_of(result.pid), 10)


# -- the kill deadlines, on a fake clock and connections that answer nothing ----------


class SilentConch:
    """The conch side of one connection: it records what is opened and asked,
    and answers nothing unless the test does."""

    def __init__(self) -> None:
        self.opened: list[Any] = []
        self.requests: list[Deferred[object]] = []
        self.channelsToRemoteChannel: dict[object, int] = {}

    def openChannel(self, channel: Any) -> None:
        channel.conn = self
        self.opened.append(channel)

    def sendRequest(self, *args: object, **kw: object) -> Deferred[object]:
        d: Deferred[object] = Deferred()
        self.requests.append(d)
        return d

    def sendEOF(self, channel: object) -> None:
        pass

    def sendClose(self, channel: object) -> None:
        pass

    def kills(self) -> list[bytes]:
        """The kill requests opened here, as their commands."""
        return [c._command for c in self.opened if isinstance(c, _KillChannel)]

    def answer_kills(self) -> None:
        """Every kill request opened here has run."""
        for channel in self.opened:
            if isinstance(channel, _KillChannel):
                channel.closed()


class FakeHost:
    """An SSHPool on a fake clock whose connections connect when the test says."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, max_sessions: int = 10) -> None:
        self.clock = ClockReactor()
        self.connections: list[_Connection] = []
        self.pool = _remote.SSHPool(
            self.clock, keepalive=1000, max_sessions=max_sessions
        )
        self.target = _remote.parse_host("watch@db1:22")
        self.scheduler = procwork.Scheduler(self.clock, load=procwork.NoLoadLimit())

        def connect(connection: _Connection) -> None:
            connection.pool.connections_opened += 1
            self.connections.append(connection)

        monkeypatch.setattr(_Connection, "_connect", connect)

    def ready(self, index: int) -> SilentConch:
        """Connection ``index`` (in the order made) is up; its conch."""
        conch = SilentConch()
        self.connections[index].ready(conch)  # type: ignore[arg-type]
        return conch

    def spawn(self, **options: Any) -> tuple[_remote.RemoteProcess, Deferred[Any]]:
        """A run of ``sleep 1000`` there (not yet on a channel): it and its wait()."""
        proc = _remote.RemoteProcess(
            RunOptions(("sleep", "1000"), stdin=False, **options),
            target=self.target,
            pool=self.pool,
            reactor=self.clock,
            scheduler=self.scheduler,
        )
        proc._submit()
        return proc, proc._wait()

    @staticmethod
    def started(conch: SilentConch, channel: Any, pgid: int) -> None:
        """``channel`` opened on ``conch``, its command started as group ``pgid``."""
        channel.channelOpen(b"")
        conch.requests[-1].callback(None)  # the exec request accepted
        channel.extReceived(1, channel.marker + b" %d\n" % pgid)


def test_a_silent_connection_delays_a_timed_out_run_by_kill_wait_at_most(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """timeout 3, grace 2: SIGTERM at 3 s over the connection, which never
    answers; at 4 s (KILL_WAIT later) it is stalled and the SIGTERM goes over
    a new connection, as the SIGKILL at 5 s does; at 6 s the run is given up:
    timed out, the output received, no returncode."""
    assert _remote.KILL_WAIT == 1.0
    host = FakeHost(monkeypatch)
    _, done = host.spawn(timeout=3, grace=2)
    first = host.ready(0)
    (channel,) = first.opened
    host.started(first, channel, 4242)
    channel.dataReceived(b"started\n")

    host.clock.advance(3)
    assert first.kills() == [
        b"{ kill -s TERM -- -4242 || kill -s TERM 4242; } 2>/dev/null"
    ]
    host.clock.advance(0.999)
    assert len(host.connections) == 1
    host.clock.advance(0.001)
    assert host.connections[0].stalled and len(host.connections) == 2
    second = host.ready(1)
    assert second.kills() == first.kills()
    second.answer_kills()

    host.clock.advance(1)
    assert second.kills()[1:] == [
        b"{ kill -s KILL -- -4242 || kill -s KILL 4242; } 2>/dev/null"
    ]
    assert first.kills()[1:] == []  # nothing more asked of the silent one
    second.answer_kills()
    host.clock.advance(0.999)
    assert not done.called
    host.clock.advance(0.001)
    result = cast(procwork.Result, done.result)
    assert result.timed_out and result.returncode is None and result.pid == 4242
    assert result.stdout == b"started\n"
    assert host.scheduler.running == 0


def test_once_a_kill_request_stalls_new_runs_and_waiting_ones_use_a_new_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stalled connection keeps the run it carries; the run waiting for a
    channel there (MaxSessions) and a run started later go to the new one."""
    host = FakeHost(monkeypatch, max_sessions=2)  # 1 run at a time, 1 for kills
    running, _ = host.spawn(grace=10)
    waiting, _ = host.spawn()
    first = host.ready(0)
    (channel,) = first.opened
    host.started(first, channel, 4242)
    running.terminate()
    host.clock.advance(_remote.KILL_WAIT)
    later, _ = host.spawn()
    stalled, current = host.connections
    assert stalled.stalled and not stalled.waiting and stalled.channels == {channel}
    assert [c.owner for c in current.waiting] == [waiting, later]
    assert host.pool._connection(host.target) is current


def test_a_kill_request_is_relayed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the new connection does not answer it either, the request is let
    go (its waiter told) rather than tried on connection after connection."""
    host = FakeHost(monkeypatch)
    connection = host.pool._connection(host.target)
    host.ready(0)
    sent = connection.signal_group(4242, signal.SIGKILL)
    host.clock.advance(_remote.KILL_WAIT)
    second = host.ready(1)
    assert len(second.kills()) == 1 and not sent.called
    host.clock.advance(_remote.KILL_WAIT)  # the second does not answer either
    assert sent.called and host.connections[1].stalled
    assert len(host.connections) == 2  # no third: nothing to send there


def test_a_run_given_up_before_its_group_id_came_has_it_killed_when_it_comes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kill() before the wrapper reported the group (the connection slow or
    silent): the run ends KILL_WAIT later, and the group gets its SIGKILL if
    its id still comes."""
    host = FakeHost(monkeypatch)
    proc, done = host.spawn()
    first = host.ready(0)
    (channel,) = first.opened
    channel.channelOpen(b"")
    first.requests[-1].callback(None)  # exec accepted; no group id yet
    proc.kill()
    assert first.kills() == []
    host.clock.advance(_remote.KILL_WAIT)
    result = cast(procwork.Result, done.result)
    assert result.returncode is None and result.pid is None and not result.timed_out
    assert result.describe() == "sent SIGKILL, exit status unknown"
    channel.extReceived(1, channel.marker + b" 4242\n")
    assert first.kills() == [
        b"{ kill -s KILL -- -4242 || kill -s KILL 4242; } 2>/dev/null"
    ]


def test_the_groups_of_a_lost_connections_runs_get_sigterm_then_sigkill_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The connection drops: the run fails, and over a new connection its group
    gets SIGTERM now and SIGKILL ``grace`` later (its sshd may live on behind
    the dead link)."""
    host = FakeHost(monkeypatch)
    _, done = host.spawn(grace=7)
    first = host.ready(0)
    (channel,) = first.opened
    host.started(first, channel, 4242)
    host.connections[0].connection_lost("Connection lost.")
    channel.closed()  # what conch does next
    assert isinstance(cast(Failure, done.result).value, procwork.RemoteConnectionLost)
    done.addErrback(lambda _: None)
    second = host.ready(1)
    assert second.kills() == [
        b"{ kill -s TERM -- -4242 || kill -s TERM 4242; } 2>/dev/null"
    ]
    second.answer_kills()
    host.clock.advance(6.999)
    assert second.kills()[1:] == []
    host.clock.advance(0.001)
    assert second.kills()[1:] == [
        b"{ kill -s KILL -- -4242 || kill -s KILL 4242; } 2>/dev/null"
    ]


def test_kill_requests_queued_on_a_connection_that_cannot_be_made_are_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A relay to a host that cannot be reached: its waiters hear at once."""
    host = FakeHost(monkeypatch)
    connection = host.pool._connection(host.target)
    sent = connection.signal_group(4242, signal.SIGTERM)
    assert not sent.called  # connecting
    connection._broken(procwork.RemoteUnreachable("cannot reach watch@db1"))
    assert sent.called
