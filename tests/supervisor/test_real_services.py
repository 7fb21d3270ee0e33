"""Supervised services as real processes on the real reactor.

``sys.executable -c`` children, every wait bounded; the timing of restarts,
backoff and kills is tested on a Clock in ``test_supervisor.py``.
"""

from __future__ import annotations

import os
import signal
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.defer import Deferred

import untwisted
from procwork.supervisor import ServiceSpec, ServiceState, Supervisor
from tests.support import (
    PY,
    alive,
    drive_until,
    gone_within,
    my_children,
    observing,
    open_fds,
)
from tests.support.fake_supervisor import lines


@pytest.fixture
def real() -> Iterator[Supervisor]:
    """A supervisor on the real reactor; every service is stopped afterwards."""
    sup = Supervisor()
    try:
        yield sup
    finally:
        untwisted.run(sup.stop(), timeout=30)


def test_a_real_service_killed_from_outside_is_restarted_with_a_new_pid(
    real: Supervisor,
) -> None:
    real.add(
        ServiceSpec(
            "sleeper", [PY, "-c", "import time; time.sleep(60)"], start_seconds=0.2
        )
    )
    real.start()
    first = untwisted.run(real.wait_for("sleeper", "RUNNING"), timeout=20)
    os.kill(first.pid, signal.SIGKILL)
    again = untwisted.run(real.wait_for("sleeper", "STARTING"), timeout=20)
    assert again.pid is not None and again.pid != first.pid
    assert (again.restarts, again.last_exit) == (1, "killed by SIGKILL")
    assert gone_within(first.pid)


@pytest.mark.slow
def test_stop_SIGKILLs_a_real_service_and_grandchild_ignoring_SIGTERM_at_stop_timeout(
    real: Supervisor, events: list[dict[str, Any]]
) -> None:
    script = textwrap.dedent(
        """
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the grandchild
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print("ready", child.pid, flush=True)
        time.sleep(60)
        """
    )
    real.add(ServiceSpec("stubborn", [PY, "-c", script], stop_timeout=0.5))
    ready: Deferred[int] = Deferred()

    def watch(event: dict[str, Any]) -> None:
        line = event.get("line", "")
        if (
            event.get("service") == "stubborn"
            and line.startswith("ready")
            and not ready.called
        ):
            ready.callback(int(line.split()[1]))

    with observing(watch):
        real.start()
        grandchild = untwisted.run(ready, timeout=20)
    leader = real.status()["stubborn"].pid
    assert leader is not None and alive(grandchild)

    started = time.monotonic()
    untwisted.run(real.stop(), timeout=20)
    assert time.monotonic() - started >= 0.5  # SIGTERM was ignored until stop_timeout
    status = real.status()["stubborn"]
    assert (status.state, status.last_exit) == (
        ServiceState.STOPPED,
        "killed by SIGKILL",
    )
    assert gone_within(leader) and gone_within(grandchild)
    assert any("did not stop within 0.5 s of SIGTERM" in line for line in lines(events))


@pytest.mark.slow
def test_a_real_crash_looping_service_reaches_FATAL(real: Supervisor) -> None:
    real.add(
        ServiceSpec(
            "crasher",
            [PY, "-c", "raise SystemExit(3)"],
            max_restarts=2,
            min_restart_delay=0.05,
            max_restart_delay=0.1,
        )
    )
    real.start()
    status = untwisted.run(real.wait_for("crasher", "FATAL"), timeout=30)
    assert (status.restarts, status.last_exit, status.returncode) == (2, "exited 3", 3)


@pytest.mark.slow
def test_a_real_service_with_restart_on_failure_is_not_restarted_after_exit_0(
    real: Supervisor,
) -> None:
    real.add(ServiceSpec("oneshot", [PY, "-c", "pass"], restart="on-failure"))
    real.start()
    status = untwisted.run(real.wait_for("oneshot", "EXITED", "BACKOFF"), timeout=20)
    assert (status.state, status.last_exit, status.restarts) == (
        ServiceState.EXITED,
        "exited 0",
        0,
    )
    with pytest.raises(untwisted.Timeout):
        untwisted.run(real.wait_for("oneshot", "STARTING"), timeout=0.3)


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another user needs root")
def test_a_real_service_runs_as_its_user_with_its_umask(
    real: Supervisor, events: list[dict[str, Any]]
) -> None:
    import pwd

    nobody = pwd.getpwnam("nobody")
    # /bin/sh, not this Python: nobody may not be allowed to read the venv.
    code = 'echo "$(id -u) $(id -g) $(umask)"'
    real.add(
        ServiceSpec("who", ["/bin/sh", "-c", code], user="nobody", umask=0o027, cwd="/")
    )
    real.start()
    untwisted.run(real.wait_for("who", "BACKOFF", "FATAL"), timeout=20)
    said = [e["line"] for e in events if e.get("service") == "who" and "line" in e]
    assert said[0] == f"{nobody.pw_uid} {nobody.pw_gid} 0027"


@pytest.mark.slow
def test_a_real_poller_restarted_hundreds_of_times_with_credentials_never_leaks(
    real: Supervisor,
) -> None:
    """Every start goes through Popen with user/group/umask; a poller that
    exits 0 at once, with start_seconds=0, is restarted for ever, never
    FATAL, and leaves no fd or child behind."""
    credentials: dict[str, Any] = {"umask": 0o077}
    if os.geteuid() == 0:
        credentials["user"] = "nobody"
    fds_before = open_fds()
    real.add(
        ServiceSpec(
            "poller",
            ["/bin/true"],
            start_seconds=0,
            min_restart_delay=0,
            max_restarts=1,
            **credentials,
        )
    )
    real.start()
    assert drive_until(lambda: real.status()["poller"].restarts >= 300, timeout=120)
    assert real.status()["poller"].state is not ServiceState.FATAL
    untwisted.run(real.stop(), timeout=30)
    assert real.status()["poller"].state is ServiceState.STOPPED
    assert my_children() == {}
    # Opened once per process (the reactor's poller and waker, the shared
    # /dev/null): a few; a leak per start would be hundreds.
    assert len(open_fds() - fds_before) <= 4


def test_a_real_service_that_cannot_start_is_FATAL_and_says_why(
    real: Supervisor,
) -> None:
    real.add(ServiceSpec("ghost", ["/nonexistent/ghostd", "--serve"], max_restarts=0))
    real.start()
    status = real.status()["ghost"]
    assert status.state is ServiceState.FATAL
    assert (
        status.last_exit == "cannot run '/nonexistent/ghostd --serve': "
        "'/nonexistent/ghostd' does not exist"
    )
