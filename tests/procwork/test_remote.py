"""Remote runs over SSH: ``procwork.run(argv, host="user@host:port")``.

Against a real OpenSSH server on 127.0.0.1 (tests/support/sshd.py): an
unprivileged port, a throw-away host key and user key. The "remote" host is
this machine, so what is left running there is seen in /proc by a unique
marker. A connection that dies is ``test_remote_dead_connection.py``, the
wrapper the command runs in ``test_remote_wrapper.py``, ``procwork run
--host`` ``tests/cli/test_run_remote.py`` and a monitor's remote check
``tests/monitor/test_remote_checks.py``.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred, DeferredList

import procwork
from procwork import _remote
from tests.support import (
    PY,
    drive_until,
    run_child,
    unique_token,
    wait,
)
from tests.support.remote import (
    after,
    kill_marked,
    nothing_left,
    on,
    real_sshd,
    sleeper_tree,
)
from tests.support.sshd import Sshd, keygen, remote_marker_pids

pytestmark = pytest.mark.usefixtures("no_load_gate")


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
    # How the runs whose output is wrong ended, and the sshd's log: this
    # failed twice on a loaded machine (every output empty), never alone.
    wrong = [
        (i, r.describe(), r.stderr[-200:])
        for i, (_, r) in enumerate(results)
        if r.stdout != f"{i}\n".encode()
    ]
    assert not wrong, (len(wrong), wrong[:3], sshd.log.read_text()[-2000:])
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
