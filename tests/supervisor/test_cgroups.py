"""Services in cgroups, on this machine's kernel: nothing a service starts
escapes its stop, and ``pids_max`` caps it.

A :class:`~procwork.supervisor.Supervisor` given a
:class:`~procwork._cgroup.Containment` runs each service in a cgroup of its
own. The daemons here (``tests/programs/escapee.py``) call ``setsid()`` and
double-fork, leaving the service's process group; the fork loop
(``tests/programs/fork_loop.py``) forks until the kernel refuses. They need
a writable cgroup v2 (root, as on this machine and in CI; skipped elsewhere
with the reason); the limit is enforced here by the v1 ``pids`` hierarchy
(this machine's v2 tree has no controller), by v2's where it has one. The
file protocol of the other limits is in ``tests/procwork/test_cgroup_files.py``.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.defer import Deferred

import untwisted
from procwork._cgroup import Containment, Host, Limits
from procwork.supervisor import ServiceSpec, Supervisor
from tests.support import ROOT, alive, gone_within, observing, program
from tests.support.cgroups import cgroup_of, need_cgroups, need_controller


@pytest.fixture
def containment() -> Iterator[Containment]:
    """A containment of the test's own, started; at the end its subtree is gone."""
    need_cgroups()
    made = Containment.here(f"sup-{uuid.uuid4().hex[:8]}", limits=[Limits(pids_max=20)])
    assert made.available, made.why
    assert made.root is not None
    yield made
    made.close()
    assert not os.path.exists(made.root), f"{made.root} was left behind"


@pytest.fixture
def supervisor(containment: Containment) -> Iterator[Supervisor]:
    sup = Supervisor(containment=containment)
    try:
        yield sup
    finally:
        untwisted.run(sup.stop(), timeout=30)


def line_of(sup: Supervisor, name: str, pattern: str) -> re.Match[str]:
    """The first line of ``name``'s stdout matching ``pattern`` (20 s at most)."""
    found: Deferred[re.Match[str]] = Deferred()

    def listener(stream: str, line: str) -> None:
        match = re.match(pattern, line)
        if match and not found.called:
            found.callback(match)

    unfollow = sup.follow(name, listener)
    try:
        match: re.Match[str] = untwisted.run(found, timeout=20)
        return match
    finally:
        unfollow()


def escapee_service(mode: str = "stay", **keys: Any) -> ServiceSpec:
    return ServiceSpec(
        "daemonizer",
        program("escapee", mode),
        cwd=str(ROOT),
        **({"start_seconds": 0.1, "stop_timeout": 2} | keys),
    )


def test_stopping_a_service_kills_the_daemon_that_left_its_process_group(
    supervisor: Supervisor, containment: Containment, started: list[int]
) -> None:
    """The issue's case: the service's child setsid()s and double-forks; the
    stop reaches it through the cgroup, and the cgroup goes with them."""
    supervisor.add(escapee_service())
    supervisor.start()
    escapee = int(line_of(supervisor, "daemonizer", r"escapee (\d+)").group(1))
    started.append(escapee)
    main = untwisted.run(supervisor.wait_for("daemonizer", "RUNNING"), timeout=20)
    assert main.pid is not None
    assert os.getpgid(escapee) != os.getpgid(main.pid)  # it did leave the group
    where = cgroup_of(escapee)
    assert where == cgroup_of(main.pid) and where.endswith("/daemonizer.service")
    untwisted.run(supervisor.stop_service("daemonizer"), timeout=30)
    assert gone_within(escapee, 2.0), "the daemon outlived its service's stop"
    assert containment.cgroups() == {}


def test_a_stubborn_daemon_ignoring_sigterm_is_killed_at_stop_timeout(
    supervisor: Supervisor, started: list[int]
) -> None:
    supervisor.add(escapee_service("ignore", stop_timeout=0.5))
    supervisor.start()
    escapee = int(line_of(supervisor, "daemonizer", r"escapee (\d+)").group(1))
    started.append(escapee)
    untwisted.run(supervisor.wait_for("daemonizer", "RUNNING"), timeout=20)
    untwisted.run(supervisor.stop_service("daemonizer"), timeout=30)
    assert gone_within(escapee, 2.0)


def test_what_a_service_left_when_it_exited_is_killed_and_reported(
    supervisor: Supervisor, started: list[int]
) -> None:
    """kill_leftovers (the default): the service daemonized and exited; the
    daemon dies, and listeners are told how many processes it left."""
    told: list[tuple[str, str, dict[str, Any]]] = []
    supervisor.cgroups.listen(lambda kind, name, _, f: told.append((kind, name, f)))
    supervisor.add(escapee_service("exit", restart="never"))
    supervisor.start()
    escapee = int(line_of(supervisor, "daemonizer", r"escapee (\d+)").group(1))
    started.append(escapee)
    untwisted.run(supervisor.wait_for("daemonizer", "EXITED"), timeout=20)
    assert gone_within(escapee, 2.0)
    assert told == [("leftovers", "daemonizer", {"count": 1, "killed": True})]


def test_pids_max_caps_a_fork_loop(
    supervisor: Supervisor, containment: Containment, started: list[int]
) -> None:
    """pids_max 20: the loop's 20th fork (itself the first task) fails with
    EAGAIN, and the cgroup never holds more than 20 tasks."""
    need_controller("pids")
    supervisor.add(
        ServiceSpec(
            "forker",
            program("fork_loop", "200"),
            cwd=str(ROOT),
            start_seconds=0.1,
            pids_max=20,
        )
    )
    supervisor.start()
    said = line_of(supervisor, "forker", r"forked (\d+) refused (\d+)")
    forked, refused = int(said.group(1)), int(said.group(2))
    assert refused == 11  # EAGAIN
    assert forked == 19
    status = supervisor.cgroups.statuses()["forker"]
    assert status["usage"]["tasks"] == 20
    [limit] = status["limits"]
    assert limit["limit"] == "pids_max" and limit["enforced"] is True
    assert limit["how"] in ("cgroup v2 pids.max", "cgroup v1 pids.max")


def test_without_cgroups_services_run_in_process_groups_and_limits_say_why(
    started: list[int],
) -> None:
    """The fallback: a containment that cannot be had (no cgroup2 here) is
    said once, services run as before in their process groups, and each
    limit is reported not enforced, with the reason. The daemon that left
    its group then survives the stop: what containment is for."""
    host = Host(None, "no cgroup2 hierarchy is mounted (/proc/self/mountinfo)")
    containment = Containment(f"sup-{uuid.uuid4().hex[:8]}", host, reactor=None)
    logged: list[dict[str, Any]] = []
    with observing(logged.append):
        containment.start()
        sup = Supervisor(containment=containment)
        sup.add(escapee_service(pids_max=5))
        sup.start()
        try:
            escapee = int(line_of(sup, "daemonizer", r"escapee (\d+)").group(1))
            started.append(escapee)
            main = untwisted.run(sup.wait_for("daemonizer", "RUNNING"), timeout=20)
            assert main.pid is not None and alive(main.pid)
            [limit] = sup.cgroups.statuses()["daemonizer"]["limits"]
            assert limit["enforced"] is False
            assert "no cgroup2 hierarchy is mounted" in limit["why"]
        finally:
            untwisted.run(sup.stop(), timeout=30)
    assert gone_within(main.pid, 2.0)
    assert alive(escapee)
    assert not containment.available
    assert containment.to_dict()["mode"] == "process-group"


def test_cpu_max_is_written_where_the_kernel_takes_it_and_reported_enforced(
    supervisor: Supervisor, started: list[int]
) -> None:
    """cpu_max 50%: on this machine the v1 cpu hierarchy takes it (quota
    50 ms per 100 ms period); with a v2 cpu controller, cpu.max. What the
    kernel accepted is read back from it (the throttling itself is the
    kernel's, and not timed here)."""
    host = need_controller("cpu")
    supervisor.add(escapee_service(cpu_max="50%"))
    supervisor.start()
    started.append(int(line_of(supervisor, "daemonizer", r"escapee (\d+)").group(1)))
    untwisted.run(supervisor.wait_for("daemonizer", "RUNNING"), timeout=20)
    status = supervisor.cgroups.statuses()["daemonizer"]
    [limit] = status["limits"]
    assert limit["enforced"] is True
    if "cpu" in host.controllers():
        assert limit["how"] == "cgroup v2 cpu.max"
        with open(os.path.join(status["path"], "cpu.max")) as f:
            assert f.read().split() == ["50000", "100000"]
    else:
        assert limit["how"] == "cgroup v1 cpu.cfs_quota_us"
        v1 = os.path.join(
            host.v1_bases["cpu"], os.path.relpath(status["path"], host.v2_base)
        )
        with open(os.path.join(v1, "cpu.cfs_quota_us")) as f:
            assert f.read().strip() == "50000"
