"""Remote runs over SSH: ``procwork.run(argv, host="user@host:port")``.

Against a real OpenSSH server on 127.0.0.1 (tests/sshd.py): an unprivileged
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
from typing import Any

import pytest
from twisted.internet.defer import DeferredList

import procwork
from procwork import _remote
from tests.support import PY, ROOT, drive_until, run_child, unique_token, wait
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


def sleeper_tree(marker: str, *, ignore_term: bool = False) -> list[str]:
    """An argv: a shell with a sleeping child and grandchild, all marked."""
    trap = "trap '' TERM; " if ignore_term else ""
    ignore = "signal.signal(signal.SIGTERM, signal.SIG_IGN); " if ignore_term else ""
    body = f"import signal, time; {ignore}time.sleep(1000)  # {marker}"
    return [
        "sh",
        "-c",
        f'{trap}"{PY}" -c "{body}" & "{PY}" -c "{body}"; wait  # {marker}',
    ]


# -- the same Result as a local run -------------------------------------------


def test_a_remote_run_returns_its_output_and_exit_status(sshd: Sshd) -> None:
    """stdout and stderr come back as bytes, the wrapper's marker line stripped."""
    result = wait(
        procwork.run(["sh", "-c", "echo out; echo err >&2; exit 3"], **on(sshd))
    )
    assert (result.stdout, result.stderr, result.returncode) == (b"out\n", b"err\n", 3)
    assert not result.ok and result.pid is not None


def test_a_remote_run_killed_by_a_signal_has_a_negative_returncode(sshd: Sshd) -> None:
    """The server's exit-signal request becomes -N, as for a local child."""
    result = wait(procwork.run(["sh", "-c", "kill -KILL $$"], **on(sshd)))
    assert result.returncode == -signal.SIGKILL
    assert result.describe() == "killed by SIGKILL"


def test_input_reaches_the_remote_command_whole(sshd: Sshd) -> None:
    """input= of any size is fed to stdin (through the channel's window), then EOF."""
    data = bytes(range(256)) * 4096  # 1 MiB
    result = wait(procwork.run(["cat"], input=data, **on(sshd)))
    assert result.ok and result.stdout == data


def test_without_input_the_remote_stdin_is_empty(sshd: Sshd) -> None:
    """As /dev/null locally: a command reading stdin sees its end at once."""
    result = wait(procwork.run(["cat"], **on(sshd)), 60)
    assert result.ok and result.stdout == b""


def test_max_output_keeps_the_tail_of_remote_output(sshd: Sshd) -> None:
    """max_output applies as locally: the tail is kept and truncated says so."""
    result = wait(procwork.run(["seq", "1", "100000"], max_output=16, **on(sshd)))
    assert result.stdout == b"98\n99999\n100000\n" and result.truncated


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


def test_check_true_raises_process_failed_for_a_remote_failure(sshd: Sshd) -> None:
    with pytest.raises(procwork.ProcessFailed, match="'false' exited 1"):
        wait(procwork.run(["false"], check=True, **on(sshd)))


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


def test_a_missing_remote_cwd_fails_the_run_with_a_spawn_error(sshd: Sshd) -> None:
    with pytest.raises(
        procwork.SpawnError,
        match=r"cannot enter working directory '/no/such/dir' there",
    ):
        wait(procwork.run(["true"], cwd="/no/such/dir", **on(sshd)))


def test_a_low_priority_remote_run_is_niced_there(sshd: Sshd) -> None:
    result = wait(procwork.run(["nice"], priority="low", **on(sshd)))
    assert result.stdout == b"10\n"


def test_spawn_on_a_host_gives_a_live_handle(sshd: Sshd) -> None:
    """Lines as they come, write()/close_stdin(), pid = the remote process group."""
    proc = procwork.spawn(["sh", "-c", "read x; echo got $x; echo $$"], **on(sshd))
    proc.write(b"hello\n")
    proc.close_stdin()
    assert wait(proc.readline(), 60) == b"got hello\n"
    result = wait(proc.wait(), 60)
    assert result.ok and result.stdout == f"got hello\n{proc.pid}\n".encode()


# -- the whole remote tree dies -------------------------------------------------


def test_a_remote_timeout_kills_the_whole_remote_tree(sshd: Sshd) -> None:
    """SIGTERM to the remote process group by a second exec request; nothing is left."""
    marker = unique_token()
    result = wait(procwork.run(sleeper_tree(marker), timeout=1, **on(sshd)))
    assert result.timed_out and result.returncode == -signal.SIGTERM
    assert nothing_left(marker)


def test_a_remote_tree_ignoring_sigterm_gets_sigkill_after_grace(sshd: Sshd) -> None:
    marker = unique_token()
    result = wait(
        procwork.run(
            sleeper_tree(marker, ignore_term=True), timeout=0.5, grace=0.5, **on(sshd)
        )
    )
    assert result.timed_out and result.returncode == -signal.SIGKILL
    assert nothing_left(marker)


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


def test_cancelling_at_any_moment_never_hangs_nor_leaves_anything(sshd: Sshd) -> None:
    """Queued for a channel, exec sent, group id not yet known, running: 100 times."""
    marker = unique_token()
    procs = []
    for i in range(100):
        proc = procwork.spawn(sleeper_tree(marker), grace=1, **on(sshd))
        procs.append(proc)
        deadline = time.monotonic() + (i % 10) * 0.01
        drive_until(lambda deadline=deadline: time.monotonic() > deadline, 1)
        proc.terminate()
    done = DeferredList([p.wait() for p in procs], consumeErrors=True)
    outcomes = wait(done, 60)
    assert all(ok for ok, _ in outcomes)
    assert all(p.result is not None for p in procs)
    assert nothing_left(marker, 60)


# -- one connection -------------------------------------------------------------


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
        drive_until(lambda: seen.append(sshd.established()) or False, 1)
        results = wait(DeferredList(runs, fireOnOneErrback=True), 240)
    finally:
        pool.max_sessions = saved
    assert [r.stdout for _, r in results] == [f"{i}\n".encode() for i in range(200)]
    assert pool.connections_opened - before == 1
    assert max(seen) == 1


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


def test_an_unreachable_host_fails_with_a_connection_error(sshd: Sshd) -> None:
    from tests.support.sshd import free_port

    host = f"root@127.0.0.1:{free_port()}"
    with pytest.raises(
        procwork.RemoteUnreachable, match=r"cannot reach root@127\.0\.0\.1:\d+"
    ) as e:
        wait(procwork.run(["true"], host=host, known_hosts=sshd.known_hosts))
    assert isinstance(e.value, ConnectionError)
    assert isinstance(e.value, procwork.ProcworkError)


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
            drive_until(lambda r=runs: drop() or all(d.called for d in r), 30)
            outcomes = wait(DeferredList(runs, consumeErrors=True), 10)
            for ok, outcome in outcomes:
                assert ok or outcome.check(procwork.RemoteError), outcome
    finally:
        pool.max_sessions = saved
        kill_marked(marker)  # orphaned there: ours to clean up


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


# -- the wrapper ------------------------------------------------------------------


def wrapper(argv: list[str], *, new_session: bool) -> tuple[str, str]:
    """Run WRAPPER here as sshd would (or not) start it: (marker word, stdout)."""
    marker = "procwork-0123456789abcdef"
    done = subprocess.run(
        ["sh", "-c", _remote.WRAPPER, marker, "0", "", *argv],
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


def test_procwork_run_host_passes_output_and_exit_status_through(sshd: Sshd) -> None:
    done = procwork_run(sshd, "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (done.stdout, done.stderr, done.returncode) == ("out\n", "err\n", 3)


def test_procwork_run_host_exits_124_with_the_remote_tree_killed(sshd: Sshd) -> None:
    marker = unique_token()
    done = procwork_run(sshd, "--timeout", "1", "--", *sleeper_tree(marker))
    assert done.returncode == 124
    assert nothing_left(marker)


def test_procwork_run_host_exits_127_for_a_command_not_found_there(sshd: Sshd) -> None:
    """As for a local command not found, and as a shell does."""
    done = procwork_run(sshd, "--", "no-such-command-xyz")
    assert done.returncode == 127
    assert done.stderr == (
        f"procwork run: cannot run 'no-such-command-xyz' on {sshd.host}: "
        "command 'no-such-command-xyz' not found there (on its PATH)\n"
    )


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
