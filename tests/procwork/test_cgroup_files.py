"""The cgroup file protocol, against directories laid out like cgroupfs.

Where procwork may make cgroups is read from ``/proc/self/mountinfo`` and
``/proc/self/cgroup``; each limit is a file of the cgroup (cgroup v2's, or a
v1 hierarchy's), and usage and OOM kills are read from files too. These
tests give :func:`procwork._cgroup.discover` the texts of a made-up machine
and check every file procwork reads and writes, so the limits whose
controller this machine lacks (memory here: its v2 tree has no controllers
and its v1 memory hierarchy is the host's) are tested as well as those the
real kernel enforces in ``tests/procwork/test_contain.py`` and
``tests/supervisor/test_cgroups.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

from procwork._cgroup import Containment, Limits, discover
from procwork._cgroup._host import parse_mountinfo, parse_proc_cgroup
from procwork._cgroup._limits import files, plan
from tests.support import ClockReactor
from tests.support.cgroups import FakeHost

# -- where cgroups may be made -------------------------------------------------

THIS_KIND_OF_MACHINE = {"pids": "/", "cpu": "/", "memory": "/process_api/d9dd"}


def test_the_mounts_are_read_from_mountinfo_and_the_cgroups_from_proc() -> None:
    mounts = parse_mountinfo(
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        "39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
        "42 31 0:39 /sub /mnt/a\\040b rw - cgroup2 cgroup2 rw,nsdelegate\n"
    )
    assert [(m.mountpoint, m.root, m.fstype) for m in mounts] == [
        ("/sys/fs/cgroup/pids", "/", "cgroup"),
        ("/sys/fs/cgroup/unified", "/", "cgroup2"),
        ("/mnt/a b", "/sub", "cgroup2"),
    ]
    assert "pids" in mounts[0].options
    assert parse_proc_cgroup(
        "8:pids:/\n4:memory:/host/x\n1:cpu,cpuacct:/\n0::/a\n"
    ) == (
        "/a",
        {"pids": "/", "memory": "/host/x", "cpu": "/", "cpuacct": "/"},
    )


def test_on_a_hybrid_host_root_gets_the_v2_root_and_the_v1_hierarchies_at_its_root(
    tmp_path: Path,
) -> None:
    """This machine's kind: cgroup v2 at /unified with no controller, v1 pids
    and cpu with this process at their root, v1 memory placed by the host in
    a cgroup of its own: memory is nobody's to use there."""
    fake = FakeHost(tmp_path, v1=THIS_KIND_OF_MACHINE)
    host = fake.host()
    assert host.v2_base == str(fake.v2) and not host.v2_owned
    assert host.controllers() == frozenset()
    assert host.v1_bases == {
        "pids": str(tmp_path / "pids"),
        "cpu": str(tmp_path / "cpu"),
    }
    assert host.v1_why["memory"] == (
        f"the v1 memory hierarchy ({tmp_path / 'memory'}) places this process in "
        "/process_api/d9dd, a cgroup someone else made: procwork creates nothing "
        "there"
    )


def test_a_cgroup_delegated_to_the_process_is_its_base_and_its_own(
    tmp_path: Path,
) -> None:
    """systemd's Delegate=yes marks the unit's cgroup (trusted.delegate; a
    user manager's user.delegate): the monitor makes its cgroups there and
    may enable controllers in it."""
    fake = FakeHost(
        tmp_path, controllers="memory pids", own_v2="/system.slice/m.service"
    )
    own = fake.v2 / "system.slice" / "m.service"
    os.setxattr(own, "user.delegate", b"1")
    host = fake.host()
    assert (host.v2_base, host.v2_owned) == (str(own), True)


def test_root_in_a_cgroup_not_delegated_makes_its_cgroups_at_the_root(
    tmp_path: Path,
) -> None:
    fake = FakeHost(tmp_path, controllers="memory", own_v2="/user.slice/s.scope")
    host = fake.host()
    assert (host.v2_base, host.v2_owned) == (str(fake.v2), False)
    assert host.controllers() == {"memory"}


def test_a_user_not_delegated_anything_gets_process_groups_and_is_told_why(
    tmp_path: Path,
) -> None:
    fake = FakeHost(tmp_path, own_v2="/user.slice/s.scope")
    host = fake.host(euid=1000)
    assert host.v2_base is None
    assert host.v2_why == (
        f"this process's cgroup /user.slice/s.scope ({fake.v2}/user.slice/s.scope) "
        "is not delegated to it; run it as root, or under systemd with Delegate=yes"
    )


def test_without_a_cgroup2_mount_there_is_no_containment(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, v2=False, v1={"pids": "/"}).host()
    assert host.v2_base is None
    assert host.v2_why == "no cgroup2 hierarchy is mounted (/proc/self/mountinfo)"
    containment = Containment("m", host, reactor=None)
    assert not containment.available
    assert containment.to_dict()["mode"] == "process-group"


def test_procwork_cgroup_parent_names_the_parent_in_v2_and_its_twins_in_v1(
    tmp_path: Path,
) -> None:
    fake = FakeHost(tmp_path, v1={"pids": "/"})
    (fake.v2 / "tests").mkdir()
    (tmp_path / "pids" / "tests").mkdir()
    host = discover(
        mountinfo=fake.mountinfo,
        proc_cgroup=fake.proc_cgroup,
        euid=0,
        environ={"PROCWORK_CGROUP_PARENT": str(fake.v2 / "tests")},
    )
    assert (host.v2_base, host.v2_owned) == (str(fake.v2 / "tests"), True)
    assert host.v1_bases == {"pids": str(tmp_path / "pids" / "tests")}


# -- which limit is enforced where ---------------------------------------------------

LIMITS = Limits(memory_max=200 << 20, memory_high=150 << 20, pids_max=64, cpu_max=0.5)


def test_each_limit_is_enforced_by_cgroup_v2_when_its_controller_is_there() -> None:
    found = plan(
        LIMITS,
        v2_controllers={"memory", "pids", "cpu"},
        v1_controllers={"pids"},
        v2_why="",
        v1_why={},
    )
    assert [str(e) for e in found] == [
        "memory_max 200M: enforced (cgroup v2 memory.max)",
        "memory_high 150M: enforced (cgroup v2 memory.high)",
        "pids_max 64: enforced (cgroup v2 pids.max)",
        "cpu_max 50%: enforced (cgroup v2 cpu.max)",
    ]


def test_a_v1_hierarchy_serves_what_v2_lacks_and_memory_high_has_no_v1_file() -> None:
    found = plan(
        LIMITS,
        v2_controllers=set(),
        v1_controllers={"pids", "cpu", "memory"},
        v2_why="",
        v1_why={},
    )
    assert [str(e) for e in found] == [
        "memory_max 200M: enforced (cgroup v1 memory.limit_in_bytes)",
        "memory_high 150M: not enforced: no memory controller: the cgroup v2 tree "
        "has none for procwork's cgroups, and cgroup v1 has no memory.high",
        "pids_max 64: enforced (cgroup v1 pids.max)",
        "cpu_max 50%: enforced (cgroup v1 cpu.cfs_quota_us)",
    ]


def test_the_files_that_set_each_limit_in_v2_and_in_v1() -> None:
    assert files("memory_max", 200 << 20, 2) == {"memory.max": "209715200"}
    assert files("memory_high", 150 << 20, 2) == {"memory.high": "157286400"}
    assert files("pids_max", 64, 2) == {"pids.max": "64"}
    assert files("cpu_max", 0.5, 2) == {"cpu.max": "50000 100000"}
    assert files("cpu_max", 2.0, 2) == {"cpu.max": "200000 100000"}
    assert files("memory_max", 200 << 20, 1) == {"memory.limit_in_bytes": "209715200"}
    assert files("pids_max", 64, 1) == {"pids.max": "64"}
    assert files("cpu_max", 0.25, 1) == {
        "cpu.cfs_period_us": "100000",
        "cpu.cfs_quota_us": "25000",
    }


# -- a containment on the fake machine ------------------------------------------------


def started(fake: FakeHost, *, kill_file: bool = True) -> Containment:
    containment = Containment(
        "m", fake.host(), reactor=ClockReactor(), kill_file=kill_file
    )
    containment.start([LIMITS])
    return containment


def test_limits_are_written_to_cgroup_v2_files_with_the_controllers_enabled(
    tmp_path: Path,
) -> None:
    fake = FakeHost(tmp_path, controllers="memory pids cpu")
    root = fake.cgroup("procwork.m")
    web = fake.cgroup("procwork.m/web.service")
    containment = started(fake)
    cgroup = containment.cgroup("web.service", LIMITS)
    assert cgroup is not None and cgroup.path == str(web)
    # Each controller handed down to the services' cgroups (the kernel adds
    # each write to the file; a plain file keeps the last).
    assert (root / "cgroup.subtree_control").read_text() == "+cpu"
    assert containment.to_dict()["controllers_v2"] == ["cpu", "memory", "pids"]
    assert (web / "memory.max").read_text() == "209715200"
    assert (web / "memory.high").read_text() == "157286400"
    assert (web / "pids.max").read_text() == "64"
    assert (web / "cpu.max").read_text() == "50000 100000"
    assert cgroup.procs_files == (str(web / "cgroup.procs"),)
    assert all(e.enforced for e in cgroup.enforcement)


def test_a_limit_dropped_from_a_service_is_lifted_when_it_starts_again(
    tmp_path: Path,
) -> None:
    fake = FakeHost(tmp_path, controllers="memory pids cpu")
    fake.cgroup("procwork.m")
    web = fake.cgroup("procwork.m/web.service")
    containment = started(fake)
    cgroup = containment.cgroup("web.service", LIMITS)
    assert cgroup is not None
    containment.cgroup("web.service", Limits(pids_max=10))
    assert (web / "pids.max").read_text() == "10"
    assert (web / "memory.max").read_text() == "max"
    assert (web / "memory.high").read_text() == "max"
    assert (web / "cpu.max").read_text() == "max"
    assert cgroup.users == 2


def test_on_a_hybrid_host_limits_go_to_the_v1_twins_of_the_cgroup(
    tmp_path: Path,
) -> None:
    fake = FakeHost(tmp_path, v1={"pids": "/", "cpu": "/", "memory": "/"})
    fake.cgroup("procwork.m")
    fake.cgroup("procwork.m/web.service")
    for controller in ("pids", "cpu", "memory"):
        fake.cgroup("procwork.m/web.service", controller)
    containment = started(fake)
    cgroup = containment.cgroup("web.service", LIMITS)
    assert cgroup is not None
    pids, cpu, memory = (
        tmp_path / c / "procwork.m" / "web.service" for c in ("pids", "cpu", "memory")
    )
    assert (pids / "pids.max").read_text() == "64"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "50000"
    assert (cpu / "cpu.cfs_period_us").read_text() == "100000"
    assert (memory / "memory.limit_in_bytes").read_text() == "209715200"
    # A child writes itself into each of them before its command runs.
    assert set(cgroup.procs_files) == {
        str(d / "cgroup.procs")
        for d in (tmp_path / "v2" / "procwork.m" / "web.service", pids, cpu, memory)
    }
    assert [e.key for e in cgroup.enforcement if not e.enforced] == ["memory_high"]


def test_a_delegated_base_with_processes_moves_them_into_a_leaf_to_enable_a_controller(
    tmp_path: Path,
) -> None:
    """cgroup v2 hands a controller down only from a cgroup without
    processes: the monitor moves itself (and its lifeline) into a leaf."""
    fake = FakeHost(tmp_path, controllers="memory", own_v2="/unit")
    unit = fake.v2 / "unit"
    os.setxattr(unit, "user.delegate", b"1")
    fake.kernel_files(unit)
    (unit / "cgroup.controllers").write_text("memory pids\n")
    (unit / "cgroup.subtree_control").write_text("")
    (unit / "cgroup.procs").write_text("4242\n")
    leaf = fake.cgroup("unit/procwork.leaf")
    fake.cgroup("unit/procwork.m")
    containment = started(fake)
    assert (leaf / "cgroup.procs").read_text() == "4242"
    assert (unit / "cgroup.subtree_control").read_text() == "+pids"
    assert containment.to_dict()["controllers_v2"] == ["memory", "pids"]


def test_usage_and_oom_kills_are_read_from_the_cgroup_files(tmp_path: Path) -> None:
    fake = FakeHost(tmp_path, controllers="memory pids cpu")
    fake.cgroup("procwork.m")
    web = fake.cgroup("procwork.m/web.service")
    cgroup = started(fake).cgroup("web.service", LIMITS)
    assert cgroup is not None
    (web / "memory.current").write_text("123456789\n")
    (web / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\n")
    (web / "pids.current").write_text("7\n")
    (web / "memory.events").write_text("low 0\nhigh 3\nmax 9\noom 2\noom_kill 2\n")
    assert cgroup.usage().to_dict() == {
        "memory_bytes": 123456789,
        "memory_from": "cgroup",
        "cpu_seconds": 2.5,
        "tasks": 7,
        "oom_kills": 2,
    }


def test_on_v1_oom_kills_are_read_from_memory_oom_control(tmp_path: Path) -> None:
    fake = FakeHost(tmp_path, v1={"memory": "/"})
    fake.cgroup("procwork.m")
    fake.cgroup("procwork.m/web.service")
    memory = fake.cgroup("procwork.m/web.service", "memory")
    cgroup = started(fake).cgroup("web.service", Limits(memory_max=1 << 30))
    assert cgroup is not None
    (memory / "memory.oom_control").write_text(
        "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"
    )
    assert cgroup.oom_kills() == 3


def test_an_earlier_owners_subtree_is_removed_before_anything_starts(
    tmp_path: Path,
) -> None:
    fake = FakeHost(tmp_path, v1={"pids": "/"})
    (fake.v2 / "procwork.m" / "old.service").mkdir(parents=True)
    (tmp_path / "pids" / "procwork.m" / "old.service").mkdir(parents=True)
    containment = Containment("m", fake.host(), reactor=ClockReactor())
    containment.start([Limits(pids_max=5)])
    assert containment.available
    assert os.listdir(fake.v2 / "procwork.m") == []
    assert os.listdir(tmp_path / "pids" / "procwork.m") == []


def test_a_subtree_that_cannot_be_made_means_process_groups_saying_why(
    tmp_path: Path,
) -> None:
    fake = FakeHost(tmp_path)
    (fake.v2 / "procwork.m").write_text("")  # a file where the cgroup would go
    containment = Containment("m", fake.host(), reactor=ClockReactor())
    containment.start()
    assert not containment.available
    assert containment.why == f"cannot make {fake.v2}/procwork.m: File exists"
    assert containment.cgroup("web.service") is None
