"""Remote runs over SSH: ``procwork.run(argv, host="user@host:port")``.

Against a real OpenSSH server on 127.0.0.1 (tests/support/sshd.py): an unprivileged
port, a throw-away host key and user key. The "remote" host is this machine,
so what is left running there is seen in /proc by a unique marker.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from twisted.internet.defer import Deferred, DeferredList
from twisted.python.failure import Failure

import procwork
from procwork import _remote
from procwork._process import RunOptions
from procwork._remote._connection import _Connection, _KillChannel
from tests.support import (
    PY,
    ROOT,
    ClockReactor,
    cpu_load,
    drive_until,
    group_members,
    python_child,
    readable,
    run_child,
    unique_token,
    wait,
)
from tests.support.sshd import SSHD, Sshd, keygen, remote_marker_pids, start_sshd
from tests.support.tools import need_tool

pytestmark = pytest.mark.usefixtures("no_load_gate")


def real_sshd(directory: Path, **kw: Any) -> Sshd:
    """A real OpenSSH server of the test's own (skipped without OpenSSH)."""
    need_tool(SSHD, package="openssh-server")
    need_tool("ssh-keygen", package="openssh-client")
    return start_sshd(directory, **kw)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    server = real_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_sshd(tmp_path: Path) -> Iterator[Sshd]:
    """A server of this test's own, for tests that break it."""
    server = real_sshd(tmp_path / "sshd")
    try:
        yield server
    finally:
        server.stop()


def on(server: Sshd, **kw: Any) -> dict[str, Any]:
    """The keyword arguments that reach ``server``."""
    return {
        "host": server.host,
        "known_hosts": server.known_hosts,
        "identity": server.identity,
        **kw,
    }


def nothing_left(marker: str, seconds: float = 10.0) -> bool:
    """True once no process with ``marker`` in its argv is left (bounded)."""
    return drive_until(lambda: not remote_marker_pids(marker), seconds)


def kill_marked(marker: str) -> None:
    """SIGKILL what is left running with ``marker`` in its argv (by pid)."""
    for pid in remote_marker_pids(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def after(seconds: float) -> Callable[[], bool]:
    """A condition that holds once ``seconds`` have passed from now."""
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() > deadline


def sleeper_tree(
    marker: str, *, ignore_term: bool = False, first: str = ""
) -> list[str]:
    """An argv: a shell with a sleeping child and grandchild, all marked
    (``first``: a shell command it runs before them)."""
    trap = "trap '' TERM; " if ignore_term else ""
    ignore = "signal.signal(signal.SIGTERM, signal.SIG_IGN); " if ignore_term else ""
    body = f"import signal, time; {ignore}time.sleep(1000)  # {marker}"
    first = f"{first}; " if first else ""
    return [
        "sh",
        "-c",
        f'{trap}{first}"{PY}" -c "{body}" & "{PY}" -c "{body}"; wait  # {marker}',
    ]


# -- the same Result as a local run -------------------------------------------


@pytest.mark.e2e
def test_a_remote_run_returns_its_output_and_exit_status(sshd: Sshd) -> None:
    """stdout and stderr come back as bytes, the wrapper's marker line stripped."""
    result = wait(
        procwork.run(["sh", "-c", "echo out; echo err >&2; exit 3"], **on(sshd))
    )
    assert (result.stdout, result.stderr, result.returncode) == (b"out\n", b"err\n", 3)
    assert not result.ok and result.pid is not None


@pytest.mark.e2e
def test_a_remote_run_killed_by_a_signal_has_a_negative_returncode(sshd: Sshd) -> None:
    """The server's exit-signal request becomes -N, as for a local child."""
    result = wait(procwork.run(["sh", "-c", "kill -KILL $$"], **on(sshd)))
    assert result.returncode == -signal.SIGKILL
    assert result.describe() == "killed by SIGKILL"


@pytest.mark.e2e
def test_input_reaches_the_remote_command_whole(sshd: Sshd) -> None:
    """input= of any size is fed to stdin (through the channel's window), then EOF."""
    data = bytes(range(256)) * 4096  # 1 MiB
    result = wait(procwork.run(["cat"], input=data, **on(sshd)))
    assert result.ok and result.stdout == data


@pytest.mark.e2e
def test_without_input_the_remote_stdin_is_empty(sshd: Sshd) -> None:
    """As /dev/null locally: a command reading stdin sees its end at once."""
    result = wait(procwork.run(["cat"], **on(sshd)), 60)
    assert result.ok and result.stdout == b""


@pytest.mark.e2e
def test_max_output_keeps_the_tail_of_remote_output(sshd: Sshd) -> None:
    """max_output applies as locally: the tail is kept and truncated says so."""
    result = wait(procwork.run(["seq", "1", "100000"], max_output=16, **on(sshd)))
    assert result.stdout == b"98\n99999\n100000\n" and result.truncated


@pytest.mark.e2e
def test_a_command_not_found_remotely_fails_as_it_would_here(sshd: Sshd) -> None:
    """With CommandNotFound (a SpawnError and a FileNotFoundError), naming the
    command and the host, as a local run fails with it; a command that
    itself exits 127 there is a Result like any other."""
    with pytest.raises(procwork.CommandNotFound) as caught:
        wait(procwork.run(["no-such-command-xyz", "a"], **on(sshd)))
    assert isinstance(caught.value, FileNotFoundError)
    assert str(caught.value) == (
        f"cannot run 'no-such-command-xyz a' on {sshd.host}: "
        "command 'no-such-command-xyz' not found there (on its PATH)"
    )
    result = wait(procwork.run(["sh", "-c", "exit 127"], **on(sshd)))
    assert result.returncode == 127


@pytest.mark.e2e
def test_check_true_raises_process_failed_for_a_remote_failure(sshd: Sshd) -> None:
    with pytest.raises(procwork.ProcessFailed, match="'false' exited 1"):
        wait(procwork.run(["false"], check=True, **on(sshd)))


@pytest.mark.e2e
def test_cwd_and_env_apply_on_the_remote_side(sshd: Sshd, tmp_path: Path) -> None:
    """cwd= is entered there; env= is the remote command's whole environment."""
    result = wait(
        procwork.run(
            ["sh", "-c", 'pwd; echo "$A" "${HOME-unset}"'],
            cwd=tmp_path,
            env={"A": "b c", "PATH": "/usr/bin:/bin"},
            **on(sshd),
        )
    )
    assert result.stdout == f"{tmp_path}\nb c unset\n".encode()


@pytest.mark.e2e
def test_a_missing_remote_cwd_fails_the_run_with_a_spawn_error(sshd: Sshd) -> None:
    with pytest.raises(
        procwork.SpawnError,
        match=r"cannot enter working directory '/no/such/dir' there",
    ):
        wait(procwork.run(["true"], cwd="/no/such/dir", **on(sshd)))


@pytest.mark.e2e
def test_a_low_priority_remote_run_is_niced_there(sshd: Sshd) -> None:
    result = wait(procwork.run(["nice"], priority="low", **on(sshd)))
    assert result.stdout == b"10\n"


@pytest.mark.e2e
def test_spawn_on_a_host_gives_a_live_handle(sshd: Sshd) -> None:
    """Lines as they come, write()/close_stdin(), pid = the remote process group."""
    proc = procwork.spawn(["sh", "-c", "read x; echo got $x; echo $$"], **on(sshd))
    proc.write(b"hello\n")
    proc.close_stdin()
    assert wait(proc.readline(), 60) == b"got hello\n"
    result = wait(proc.wait(), 60)
    assert result.ok and result.stdout == f"got hello\n{proc.pid}\n".encode()


# -- the whole remote tree dies -------------------------------------------------


@pytest.mark.e2e
@pytest.mark.slow
def test_a_remote_timeout_kills_the_whole_remote_tree(sshd: Sshd) -> None:
    """SIGTERM to the remote process group by a second exec request; nothing is left."""
    marker = unique_token()
    result = wait(procwork.run(sleeper_tree(marker), timeout=1, **on(sshd)))
    assert result.timed_out and result.returncode == -signal.SIGTERM
    assert nothing_left(marker)


@pytest.mark.e2e
@pytest.mark.slow
def test_a_remote_tree_ignoring_sigterm_gets_sigkill_after_grace(sshd: Sshd) -> None:
    marker = unique_token()
    result = wait(
        procwork.run(
            sleeper_tree(marker, ignore_term=True), timeout=0.5, grace=0.5, **on(sshd)
        )
    )
    assert result.timed_out and result.returncode == -signal.SIGKILL
    assert nothing_left(marker)


@pytest.mark.e2e
def test_cancelling_a_remote_run_kills_its_tree(sshd: Sshd) -> None:
    marker = unique_token()
    proc = procwork.spawn(sleeper_tree(marker), **on(sshd))
    assert drive_until(lambda: proc.pid is not None, 60)
    assert drive_until(lambda: len(remote_marker_pids(marker)) >= 3, 60)
    with pytest.raises(procwork.Timeout):
        wait(proc.wait(), 0.2)
    assert drive_until(lambda: proc.result is not None, 60)
    assert proc.result is not None and proc.result.returncode == -signal.SIGTERM
    assert nothing_left(marker)


@pytest.mark.e2e
@pytest.mark.slow
def test_what_a_remote_command_leaves_running_is_killed_when_it_exits(
    sshd: Sshd,
) -> None:
    """kill_leftovers, as locally: a background job holding the pipes open dies."""
    marker = unique_token()
    result = wait(
        procwork.run(
            ["sh", "-c", f'"{PY}" -c "import time; time.sleep(1000)  # {marker}" &'],
            **on(sshd),
        )
    )
    assert result.returncode == 0
    assert nothing_left(marker)


@pytest.mark.e2e
@pytest.mark.slow
def test_cancelling_at_any_moment_never_hangs_nor_leaves_anything(sshd: Sshd) -> None:
    """Queued for a channel, exec sent, group id not yet known, running: 100 times."""
    marker = unique_token()
    procs = []
    for i in range(100):
        proc = procwork.spawn(sleeper_tree(marker), grace=1, **on(sshd))
        procs.append(proc)
        drive_until(after((i % 10) * 0.01), 1)
        proc.terminate()
    done = DeferredList([p.wait() for p in procs], consumeErrors=True)
    outcomes = wait(done, 60)
    assert all(ok for ok, _ in outcomes)
    assert all(p.result is not None for p in procs)
    assert nothing_left(marker, 60)


# -- one connection -------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_200_concurrent_runs_share_one_connection(sshd: Sshd) -> None:
    """Every run is a channel of the one connection to the host (sshd's MaxSessions
    is 300 here; the pool is told so)."""
    pool = procwork.ssh_pool()
    saved = pool.max_sessions
    pool.max_sessions = 300
    before = pool.connections_opened
    scheduler = procwork.Scheduler(max_running=250, load=procwork.NoLoadLimit())
    seen: list[int] = []
    try:
        # A connection opened by an earlier test is closed first, so the
        # new limit applies to the one these runs share.
        wait(pool.close_all(), 10)
        runs = [
            procwork.run(["echo", str(i)], scheduler=scheduler, **on(sshd))
            for i in range(200)
        ]

        def count_connections() -> bool:
            seen.append(sshd.established())
            return False

        drive_until(count_connections, 1)
        results = wait(DeferredList(runs, fireOnOneErrback=True), 240)
    finally:
        pool.max_sessions = saved
    assert [r.stdout for _, r in results] == [f"{i}\n".encode() for i in range(200)]
    assert pool.connections_opened - before == 1
    assert max(seen) == 1


@pytest.mark.e2e
@pytest.mark.slow
def test_a_server_allowing_fewer_sessions_makes_runs_wait(tmp_path: Path) -> None:
    """MaxSessions 4 there, 300 assumed here: the refusal teaches the limit."""
    server = real_sshd(tmp_path / "sshd", max_sessions=4)
    pool = procwork.ssh_pool()
    saved = pool.max_sessions
    pool.max_sessions = 300
    scheduler = procwork.Scheduler(max_running=50, load=procwork.NoLoadLimit())
    try:
        runs = [
            procwork.run(
                ["sh", "-c", f"sleep 0.1; echo {i}"], scheduler=scheduler, **on(server)
            )
            for i in range(20)
        ]
        results = wait(DeferredList(runs, fireOnOneErrback=True), 60)
        assert [r.stdout for _, r in results] == [f"{i}\n".encode() for i in range(20)]
    finally:
        pool.max_sessions = saved
        server.stop()


@pytest.mark.e2e
@pytest.mark.slow
def test_an_idle_connection_is_closed_and_reopened_on_demand(sshd: Sshd) -> None:
    pool = procwork.ssh_pool()
    saved = pool.idle_close
    pool.idle_close = 0.2
    try:
        wait(pool.close_all(), 10)
        assert wait(procwork.run(["true"], **on(sshd))).ok
        assert drive_until(lambda: sshd.established() == 0, 10)
        assert pool.connected() == []
        opened = pool.connections_opened
        assert wait(procwork.run(["true"], **on(sshd))).ok
        assert pool.connections_opened == opened + 1
    finally:
        pool.idle_close = saved


# -- clear errors ----------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.slow
def test_an_unreachable_host_fails_with_a_connection_error(sshd: Sshd) -> None:
    from tests.support.sshd import free_port

    host = f"root@127.0.0.1:{free_port()}"
    with pytest.raises(
        procwork.RemoteUnreachable, match=r"cannot reach root@127\.0\.0\.1:\d+"
    ) as e:
        wait(procwork.run(["true"], host=host, known_hosts=sshd.known_hosts))
    assert isinstance(e.value, ConnectionError)
    assert isinstance(e.value, procwork.ProcworkError)


@pytest.mark.e2e
def test_a_key_the_server_does_not_accept_fails_with_a_permission_error(
    sshd: Sshd, tmp_path: Path
) -> None:
    stranger = tmp_path / "stranger"
    keygen(stranger)
    with pytest.raises(
        procwork.RemoteAuthError,
        match=rf"authentication as '\w+' on {sshd.host} failed: no key was accepted "
        rf"\(identity {stranger}\)",
    ) as e:
        wait(procwork.run(["true"], **on(sshd, identity=stranger)))
    assert isinstance(e.value, PermissionError)


@pytest.mark.e2e
def test_an_unknown_host_key_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(
        procwork.RemoteHostKeyError,
        match=rf"host key of {sshd.host} is unknown: \[127\.0\.0\.1\]:{sshd.port} has "
        rf"no ssh-ed25519 key in {empty}; refusing to connect",
    ) as e:
        wait(procwork.run(["true"], **on(sshd, known_hosts=empty)))
    assert isinstance(e.value, ConnectionError)


@pytest.mark.e2e
def test_a_changed_host_key_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    other = tmp_path / "other_host_key"
    keygen(other)
    public = other.with_suffix(".pub").read_text().split()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {public[0]} {public[1]}\n")
    with pytest.raises(
        procwork.RemoteHostKeyError,
        match=rf"host key of {sshd.host} CHANGED: .* differs from the one for "
        rf"\[127\.0\.0\.1\]:{sshd.port} in {known}, line 1; refusing to connect",
    ):
        wait(procwork.run(["true"], **on(sshd, known_hosts=known)))


@pytest.mark.e2e
@pytest.mark.slow
def test_a_dropped_connection_fails_the_run_instead_of_hanging(own_sshd: Sshd) -> None:
    """The sshd process serving the connection is killed mid-run."""
    marker = unique_token()
    proc = procwork.spawn(sleeper_tree(marker), **on(own_sshd))
    assert drive_until(lambda: len(remote_marker_pids(marker)) >= 3, 60)
    for pid in own_sshd.session_pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with pytest.raises(
        procwork.RemoteConnectionLost,
        match=rf"on {own_sshd.host}: the SSH connection was lost .*whether the "
        "command finished is unknown",
    ):
        wait(proc.wait(), 60)
    # The next run opens a new connection.
    assert wait(procwork.run(["true"], **on(own_sshd)), 60).ok
    kill_marked(marker)  # orphaned there: ours to clean up


@pytest.mark.e2e
@pytest.mark.slow
def test_a_connection_dropped_at_any_moment_fails_every_run_on_it(
    own_sshd: Sshd,
) -> None:
    """Handshake, channels opening, exec sent, running: 12 drops, 30 runs each;
    every run ends (a Result or a RemoteError), none hangs."""
    pool = procwork.ssh_pool()
    saved = pool.max_sessions
    pool.max_sessions = 300
    scheduler = procwork.Scheduler(max_running=100, load=procwork.NoLoadLimit())
    marker = unique_token()
    sleeper = [PY, "-c", f"import time; time.sleep(1000)  # {marker}"]
    try:
        for i in range(12):
            # The last round's server process may not be gone yet: not that one.
            old = own_sshd.server_pids()
            runs = [
                procwork.run(sleeper, scheduler=scheduler, timeout=60, **on(own_sshd))
                for _ in range(30)
            ]
            deadline = time.monotonic() + i * 0.1

            def serving(deadline: float = deadline, old: set[int] = old) -> set[int]:
                new = own_sshd.server_pids() - old
                return new if time.monotonic() > deadline else set()

            def drop(serving: Callable[[], set[int]] = serving) -> bool:
                # Again until every run has ended: sshd may fork the process
                # serving the connection after the one just killed.
                for pid in serving():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                return False

            assert drive_until(lambda: bool(serving()), 60)

            def ended(runs: list[Deferred[procwork.Result]] = runs) -> bool:
                return drop() or all(d.called for d in runs)

            drive_until(ended, 30)
            outcomes = wait(DeferredList(runs, consumeErrors=True), 10)
            for ok, outcome in outcomes:
                assert ok or outcome.check(procwork.RemoteError), outcome
    finally:
        pool.max_sessions = saved
        kill_marked(marker)  # orphaned there: ours to clean up


@pytest.mark.e2e
@pytest.mark.slow
def test_a_silent_connection_is_dropped_after_an_unanswered_keepalive(
    own_sshd: Sshd,
) -> None:
    """The server process stops answering (as behind a dead link): the run fails
    within two keepalive intervals instead of hanging. A keepalive set on the
    pool applies at once, not after the probe already planned (15 s)."""
    pool = procwork.ssh_pool()
    saved = pool.keepalive
    marker = unique_token()
    stopped: list[int] = []
    try:
        proc = procwork.spawn(sleeper_tree(marker), **on(own_sshd))
        assert drive_until(lambda: len(remote_marker_pids(marker)) >= 3, 60), proc
        # Short keepalives only once the session runs: sshd may take longer
        # than 0.5 s to answer while it starts a session (a slow login
        # shell), which is not a silent connection. The next probe uses it.
        pool.keepalive = 0.5
        stopped = sorted(own_sshd.server_pids())  # every sshd of the connection
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        with pytest.raises(
            procwork.RemoteConnectionLost,
            match=r"connection was lost \(no answer to a keepalive in 0\.5 s\)",
        ):
            wait(proc.wait(), 5)
    finally:
        pool.keepalive = saved
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        kill_marked(marker)  # orphaned there: ours to clean up


@pytest.mark.e2e
@pytest.mark.slow
def test_at_exit_the_remote_trees_of_live_runs_are_killed(sshd: Sshd) -> None:
    """A program that ends with a remote run still going leaves nothing there."""
    marker = unique_token()
    done = run_child(
        f"""
        import procwork, untwisted
        from tests.support import drive_until
        proc = procwork.spawn({sleeper_tree(marker)!r}, host={sshd.host!r},
                              known_hosts={str(sshd.known_hosts)!r},
                              identity={str(sshd.identity)!r})
        assert drive_until(lambda: proc.pid is not None, 60)
        print("started", flush=True)
        """,
        timeout=150,
    )
    assert done.returncode == 0 and done.stdout == "started\n", done.stderr
    assert nothing_left(marker)


@pytest.mark.e2e
@pytest.mark.slow
def test_a_server_that_goes_away_fails_the_runs_queued_for_its_channels(
    own_sshd: Sshd,
) -> None:
    pool = procwork.ssh_pool()
    saved = pool.max_sessions
    pool.max_sessions = 3
    scheduler = procwork.Scheduler(max_running=50, load=procwork.NoLoadLimit())
    marker = unique_token()
    sleeper = [PY, "-c", f"import time; time.sleep(1000)  # {marker}"]
    try:
        runs = [
            procwork.run(sleeper, scheduler=scheduler, **on(own_sshd)) for _ in range(6)
        ]
        # Two run (one session is kept for kill requests), four wait.
        assert drive_until(lambda: len(remote_marker_pids(marker)) == 2, 60)
        for pid in own_sshd.session_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        own_sshd.stop()
        outcomes = wait(DeferredList(runs, consumeErrors=True), 30)
        assert all(not ok for ok, _ in outcomes)
        errors = [failure.value for _, failure in outcomes]
        assert all(isinstance(e, procwork.RemoteConnectionLost) for e in errors), errors
    finally:
        pool.max_sessions = saved
        kill_marked(marker)  # orphaned there: ours to clean up


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


def watchers_of(pid: int) -> list[int]:
    """The pids of the watchers (procwork/_remote/_wrapper.py) of command ``pid``."""
    return remote_marker_pids(f"procwork-watch\0{pid}\0")


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


# -- arguments -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        ("alice@example.org:2222", "alice@example.org:2222"),
        ("example.org", f"{getpass.getuser()}@example.org"),
        ("bob@[::1]:22", "bob@[::1]"),
        ("bob@::1", "bob@[::1]"),
    ],
)
def test_a_host_is_user_at_host_colon_port(host: str, shown: str) -> None:
    assert str(_remote.parse_host(host)) == shown


@pytest.mark.parametrize("host", ["", "@x", "a@", "x:99999", "a b", "[::1"])
def test_a_malformed_host_is_refused_naming_the_command(host: str) -> None:
    with pytest.raises(ValueError, match=r"procwork.run\('true'\): host "):
        procwork.run(["true"], host=host)


def test_known_hosts_without_host_is_refused() -> None:
    with pytest.raises(ValueError, match="known_hosts= and identity= need host="):
        procwork.run(["true"], known_hosts="/dev/null")


# -- the wrapper ------------------------------------------------------------------


def wrapper(argv: list[str], *, new_session: bool) -> tuple[str, str]:
    """Run WRAPPER here as sshd would (or not) start it: (marker word, stdout)."""
    marker = "procwork-0123456789abcdef"
    done = subprocess.run(
        ["sh", "-c", _remote.WRAPPER, marker, "0", "", "1", "2", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        start_new_session=new_session,
    )
    first, _, _ = done.stderr.partition("\n")
    assert first.startswith(marker + " "), done.stderr
    return first.split()[1], done.stdout


SHOW_GROUP = ["sh", "-c", "echo $$ $(ps -o pgid= -p $$)"]


def test_the_wrapper_execs_the_command_as_the_group_leader_sshd_made_it() -> None:
    """In a session of its own (what sshd gives every session), the command
    keeps the wrapper's pid, which is the group id it reports."""
    pgid, out = wrapper(SHOW_GROUP, new_session=True)
    assert out.split() == [pgid, pgid]


def test_the_wrapper_makes_a_group_with_setsid_when_not_a_leader() -> None:
    """Started inside someone else's group, the command gets a session and
    group of its own through setsid, in place: the id reported."""
    pgid, out = wrapper(SHOW_GROUP, new_session=False)
    assert out.split() == [pgid, pgid]
    assert int(pgid) != os.getpgid(0)


# -- the wrapper's watcher, here (the test is its sshd) --------------------------------


WRAPPER_MARKER = "procwork-0123456789abcdef"


def wrapper_argv(watch: str) -> list[str]:
    """``sh -c WRAPPER`` up to the command's argv: grace 1 s, watching ``watch``
    (0: the session's stdin, else polling every that many seconds)."""
    return ["sh", "-c", _remote.WRAPPER, WRAPPER_MARKER, "0", "", "1", watch]


def start_wrapper(
    argv: list[str], *, watch: str, **popen: Any
) -> subprocess.Popen[bytes]:
    """WRAPPER started as sshd starts it (a session of its own)."""
    return subprocess.Popen(
        [*wrapper_argv(watch), *argv],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **popen,
    )


@pytest.mark.slow
def test_the_watcher_kills_the_group_when_the_session_stdin_closes_under_it() -> None:
    """Without input, the command has /dev/null and the watcher the session's
    stdin: it closes while the command runs only when sshd dies (or the
    channel closes). Then SIGTERM, and SIGKILL 1 s (grace) later."""
    marker = unique_token()
    wrapper = start_wrapper(
        sleeper_tree(marker, ignore_term=True), watch="0", stdin=subprocess.PIPE
    )
    try:
        assert drive_until(lambda: len(remote_marker_pids(marker)) >= 3, 30)
        assert wrapper.stdin is not None
        wrapper.stdin.close()
        assert nothing_left(marker, 15)
        assert wrapper.wait(10) == -signal.SIGKILL
    finally:
        kill_marked(marker)
        with contextlib.suppress(subprocess.TimeoutExpired):
            wrapper.wait(10)


@pytest.mark.slow
@pytest.mark.parametrize("watch", ["0", "1"], ids=["stdin", "polling"])
def test_the_watcher_sees_its_session_end_however_soon_it_ends(watch: str) -> None:
    """100 wrappers, one after the other, under CPU load; each session ends
    (its stdin closed, or, for a polling watcher (every 1 s here), the parent
    that started it SIGKILLed) the moment its group id is read, maybe before
    its watcher has run a line: every group dies whole."""
    marker = unique_token()
    argv = [*wrapper_argv(watch), "sh", "-c", "sleep 1000; : $0", marker]
    if watch == "1":
        # The wrapper's parent, as sshd is: a shell that makes it a session
        # (setsid in place) and waits.
        argv = ["sh", "-c", 'setsid "$@" & wait', "sshd", *argv]
    groups: list[int] = []
    try:
        with cpu_load():
            for _ in range(100):
                session = subprocess.Popen(
                    argv,
                    stdin=subprocess.PIPE if watch == "0" else subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                    start_new_session=watch == "0",
                )
                assert session.stderr is not None
                try:
                    assert readable(session.stderr, 30)
                    word, pgid = session.stderr.readline().split()
                    assert word == WRAPPER_MARKER
                    groups.append(int(pgid))
                    if session.stdin is not None:
                        session.stdin.close()  # the command dies of it
                    else:
                        session.kill()
                    session.wait(30)  # reaped, as sshd's parent would: no zombie
                finally:
                    if session.poll() is None:
                        session.kill()
                        session.wait(30)
                    session.stderr.close()
            assert drive_until(lambda: not any(group_members(g) for g in groups), 60), [
                g for g in groups if group_members(g)
            ]
    finally:
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)


def test_the_watcher_leaves_alone_what_a_finished_command_left_running() -> None:
    """A normal end: sshd reaps the command, then closes the session's stdin;
    the watcher sees the command gone and exits, killing nothing (what the
    command left running is kill_leftovers' business, on the client's side)."""
    marker = unique_token()
    job = f'"{PY}" -c "import time; time.sleep(1000)  # {marker}" &'
    wrapper = start_wrapper(["sh", "-c", job], watch="0", stdin=subprocess.PIPE)
    try:
        assert wrapper.wait(10) == 0
        assert drive_until(lambda: len(remote_marker_pids(marker)) == 1, 30)
        assert watchers_of(wrapper.pid)
        assert wrapper.stdin is not None
        wrapper.stdin.close()
        assert drive_until(lambda: not watchers_of(wrapper.pid), 10)
        assert len(remote_marker_pids(marker)) == 1
    finally:
        kill_marked(marker)


# -- procwork run --host ------------------------------------------------------------


def procwork_run(server: Sshd, *argv: str) -> subprocess.CompletedProcess[str]:
    """``python -m procwork run --host ... ARGV`` to completion (at most 60 s)."""
    return subprocess.run(
        [
            *(PY, "-m", "procwork", "run", "--host", server.host),
            *("--known-hosts", str(server.known_hosts)),
            *("--identity", str(server.identity), *argv),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.e2e
@pytest.mark.slow
def test_procwork_run_host_passes_output_and_exit_status_through(sshd: Sshd) -> None:
    done = procwork_run(sshd, "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (done.stdout, done.stderr, done.returncode) == ("out\n", "err\n", 3)


@pytest.mark.e2e
@pytest.mark.slow
def test_procwork_run_host_exits_124_with_the_remote_tree_killed(sshd: Sshd) -> None:
    marker = unique_token()
    done = procwork_run(sshd, "--timeout", "1", "--", *sleeper_tree(marker))
    assert done.returncode == 124
    assert nothing_left(marker)


@pytest.mark.e2e
@pytest.mark.slow
def test_procwork_run_host_exits_127_for_a_command_not_found_there(sshd: Sshd) -> None:
    """As for a local command not found, and as a shell does."""
    done = procwork_run(sshd, "--", "no-such-command-xyz")
    assert done.returncode == 127
    assert done.stderr == (
        f"procwork run: cannot run 'no-such-command-xyz' on {sshd.host}: "
        "command 'no-such-command-xyz' not found there (on its PATH)\n"
    )


@pytest.mark.e2e
@pytest.mark.slow
def test_procwork_run_host_exits_255_when_the_host_cannot_be_used(
    sshd: Sshd, tmp_path: Path
) -> None:
    """As ssh does; the message says why."""
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    done = subprocess.run(
        [
            *(PY, "-m", "procwork", "run", "--host", sshd.host),
            *("--known-hosts", str(empty), "--", "true"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 255
    assert re.match(rf"procwork run: host key of {sshd.host} is unknown", done.stderr)


# -- a monitor check on another host --------------------------------------------------


@pytest.mark.e2e
def test_a_monitor_check_with_host_runs_its_command_there(sshd: Sshd) -> None:
    """``host = "..."`` in a [[check]]; the command need not exist here."""
    from procwork.monitor import parse_config
    from procwork.monitor._checks import CheckRunner

    config = parse_config(
        f"""
        [[check]]
        name = "remote"
        command = ["no-such-command-here", "x"]
        every = 60
        host = "{sshd.host}"
        known_hosts = "{sshd.known_hosts}"
        identity = "{sshd.identity}"
        """,
        "remote.toml",
    )
    assert config.checks[0].host == sshd.host
    runner = CheckRunner(config.checks)
    runner.start()
    try:
        status = runner.status["remote"]
        assert drive_until(lambda: status.last_outcome is not None, 30)
        assert status.last_outcome == "error"  # as a local command not found
        assert status.last_detail == (
            f"cannot run 'no-such-command-here x' on {sshd.host}: "
            "command 'no-such-command-here' not found there (on its PATH)"
        )
    finally:
        wait(runner.stop(), 60)


def test_a_check_with_a_malformed_host_is_a_config_error() -> None:
    from procwork.monitor import parse_config

    with pytest.raises(procwork.ConfigError, match=r"remote\.toml.*host 'a b'"):
        parse_config(
            '[[check]]\nname = "x"\ncommand = "true"\nevery = 1\nhost = "a b"\n',
            "remote.toml",
        )
