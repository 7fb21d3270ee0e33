"""What the supervisor says of its services' cgroups, on a Clock, with fake
processes and a directory laid out like cgroupfs (this machine has no
memory controller procwork may use: the OOM killer cannot be met for real
here; the kernel's side is in ``tests/supervisor/test_cgroups.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from procwork._cgroup import Containment, Limits
from procwork.supervisor import Supervisor
from tests.support import ClockReactor
from tests.support.cgroups import FakeHost
from tests.support.fake_supervisor import FakeWorld, spec


def contained(tmp_path: Path) -> tuple[Supervisor, FakeWorld, ClockReactor, Path]:
    """A supervisor on a Clock whose services' cgroups are in a fake cgroupfs
    with the memory controller; the web service's cgroup directory."""
    fake = FakeHost(tmp_path, controllers="memory pids cpu")
    fake.cgroup("procwork.m")
    web = fake.cgroup("procwork.m/web.service")
    clock = ClockReactor()
    containment = Containment("m", fake.host(), reactor=clock)
    containment.start([Limits(memory_max=200 << 20)])
    world = FakeWorld(clock)
    sup = Supervisor(clock, process_factory=world, containment=containment)
    return sup, world, clock, web


def test_an_oom_kill_of_the_service_becomes_its_last_exit_and_is_told(
    tmp_path: Path,
) -> None:
    sup, world, clock, web = contained(tmp_path)
    told: list[tuple[str, str, str, dict[str, Any]]] = []
    sup.cgroups.listen(lambda *news: told.append(news))
    sup.add(spec("web", memory_max="200M", restart="never"))
    sup.start()
    clock.advance(2)
    assert world.credentials[-1]["cgroup"].path == str(web)
    assert (web / "memory.max").read_text() == "209715200"
    # The kernel counts the kill and kills the service's process.
    (web / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")
    world.current("web").exit(signal=9)
    clock.advance(1)
    status = sup.status()["web"]
    assert status.last_exit == "killed by the OOM killer at memory_max 200M"
    assert told == [
        (
            "oom_kill",
            "web",
            "service 'web': the OOM killer killed 1 process in its cgroup at "
            "memory_max 200M",
            {"kills": 1, "total": 1},
        )
    ]
    assert sup.cgroups.statuses()["web"]["oom_kills"] == 1


def test_a_sigkill_with_no_oom_kill_counted_is_a_plain_sigkill(
    tmp_path: Path,
) -> None:
    sup, world, clock, _ = contained(tmp_path)
    sup.add(spec("web", memory_max="200M", restart="never"))
    sup.start()
    clock.advance(2)
    world.current("web").exit(signal=9)
    clock.advance(1)
    assert sup.status()["web"].last_exit == "killed by SIGKILL"


def test_without_a_containment_every_limit_is_reported_not_enforced_saying_why() -> (
    None
):
    clock = ClockReactor()
    sup = Supervisor(clock, process_factory=FakeWorld(clock))
    sup.add(spec("web", pids_max=10, cpu_max="50%"))
    limits = sup.cgroups.statuses()["web"]["limits"]
    assert [(x["limit"], x["enforced"]) for x in limits] == [
        ("pids_max", False),
        ("cpu_max", False),
    ]
    assert limits[0]["why"] == (
        "the supervisor contains its services by process group only (it was "
        "given no cgroup containment)"
    )
