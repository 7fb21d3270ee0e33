"""Fixtures shared by the test modules; plain helpers are in ``tests/support/``."""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import group_members, lifeline, no_load_limit, sigkill_leftovers
from tests.support.monitor import MonitorProcess, running_with
from tests.support.sshd import Sshd

# need_tool() and the end-of-run line naming the tools whose tests were skipped.
# (Loaded as a plugin, so that pytest rewrites its asserts: this module
# imports nothing that imports it.)
pytest_plugins = ["tests.support.tools"]

# The programs the tests start expect the fatal signals at their default
# action, as a program started from a shell or a service manager has them.
# A suite started under nohup, or in the background of a script (which
# ignores SIGINT and SIGQUIT), would hand SIG_IGN down to every child, and
# procwork rightly leaves an ignored signal ignored
# (tests/procwork/test_fatal_signals.py says so): restore the defaults.
for _signum in (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGALRM,
):
    if signal.getsignal(_signum) is signal.SIG_IGN:
        signal.signal(
            _signum,
            signal.default_int_handler if _signum == signal.SIGINT else signal.SIG_DFL,
        )


@pytest.fixture
def no_load_gate() -> Iterator[None]:
    """The global scheduler has no load gate while the test runs.

    For tests that are not about load: a busy test machine must not queue
    them. A module opts in with ``pytestmark = pytest.mark.usefixtures(...)``.
    """
    with no_load_limit():
        yield


@pytest.fixture(autouse=True, scope="session")
def own_runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """$XDG_RUNTIME_DIR is a directory of this test run's own (mode 0700).

    A ``procwork monitor`` started by a test takes its single-instance lock and
    puts its default control socket there, so it never meets a real monitor
    on the machine, nor another test run going on at the same time; and
    ``procwork ctl`` without ``--socket`` looks there, not at a
    $PROCWORK_SOCKET of the shell that runs the tests.
    """
    runtime = tmp_path_factory.mktemp("runtime")
    runtime.chmod(0o700)
    saved = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    saved_socket = os.environ.pop("PROCWORK_SOCKET", None)
    try:
        yield
    finally:
        if saved is None:
            del os.environ["XDG_RUNTIME_DIR"]
        else:
            os.environ["XDG_RUNTIME_DIR"] = saved
        if saved_socket is not None:
            os.environ["PROCWORK_SOCKET"] = saved_socket


@pytest.fixture
def started() -> Iterator[list[int]]:
    """Pids of processes the test started or saw started; SIGKILLed at the end."""
    with sigkill_leftovers() as pids:
        yield pids


@pytest.fixture
def ours() -> str:
    """An argument to give the processes a monitor starts, to find them in /proc."""
    return f"--started-by-monitor-{uuid.uuid4().hex}"


@pytest.fixture
def monitors(started: list[int], ours: str) -> Iterator[list[MonitorProcess]]:
    """Monitors the test starts; killed at the end, with what they started."""
    made: list[MonitorProcess] = []
    yield made
    for monitor in made:
        monitor.close()
    started.extend(running_with(ours))


@pytest.fixture
def marker() -> Iterator[str]:
    """A unique $0 for the shells the test starts. At its end, every process
    group of a shell carrying it is SIGKILLed, whatever the test did."""
    token = f"procwork-test-{uuid.uuid4().hex}"
    yield token
    for shell in lifeline.running_with(token):
        with contextlib.suppress(ProcessLookupError):
            for pid in group_members(os.getpgid(shell)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A real OpenSSH server shared by the tests of a module (skipped without)."""
    # Imported here: it imports tests.support.tools, a plugin pytest loads later.
    from tests.support.remote import real_sshd

    server = real_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_sshd(tmp_path: Path) -> Iterator[Sshd]:
    """A server of this test's own, for tests that break it."""
    # Imported here: it imports tests.support.tools, a plugin pytest loads later.
    from tests.support.remote import real_sshd

    server = real_sshd(tmp_path / "sshd")
    try:
        yield server
    finally:
        server.stop()
