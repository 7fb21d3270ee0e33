"""``[[service_rule]]``: a bound on what a service uses, read from its cgroup.

The usage is given as the supervisor's cgroup statuses would give it, and
the scans are driven by hand on a clock of the test's: no process, no
cgroup (what the kernel shows is in ``tests/supervisor/test_cgroups.py``).
"""

from __future__ import annotations

from typing import Any

import pytest

from procwork._errors import ConfigError
from procwork.monitor._events import Event
from procwork.monitor._servicerules import ServiceRule, ServiceRuleEngine


class World:
    """Services' usage, a clock, and what the engine did."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.usage: dict[str, dict[str, Any]] = {}
        self.restarted: list[str] = []
        self.events: list[Event] = []

    def engine(self, *rules: ServiceRule) -> ServiceRuleEngine:
        return ServiceRuleEngine(
            rules,
            usage=lambda: self.usage,
            restart=self.restarted.append,
            emit=self.events.append,
            clock=lambda: self.now,
        )

    def uses(self, service: str, **usage: Any) -> None:
        self.usage[service] = {"usage": usage}


def test_a_bound_held_for_its_scans_restarts_the_service_once_then_counts_again() -> (
    None
):
    world = World()
    rule = ServiceRule(
        "leak", service="web", max_memory="100M", for_scans=3, action="restart"
    )
    engine = world.engine(rule)
    world.uses("web", memory_bytes=200 << 20)
    assert [engine.check() for _ in range(2)] == [[], []]
    [found] = engine.check()
    assert found == (
        "service rule 'leak': service 'web': memory 200M > 100M for 3 scans; "
        "restarting it"
    )
    assert world.restarted == ["web"]
    assert [(e.event, e.name, e.state) for e in world.events] == [
        ("rule.acted", "leak", "restart")
    ]
    assert world.events[0].fields == {
        "service": "web",
        "over": "memory 200M > 100M",
        "scans": 3,
    }
    # Counting starts again: not a restart at every scan.
    assert [engine.check() for _ in range(2)] == [[], []]
    assert world.restarted == ["web"]
    assert engine.acted == {"leak": 1}


def test_a_scan_under_the_bound_starts_the_count_again() -> None:
    world = World()
    engine = world.engine(ServiceRule("leak", max_memory="100M", for_scans=2))
    world.uses("web", memory_bytes=200 << 20)
    engine.check()
    world.uses("web", memory_bytes=50 << 20)
    engine.check()
    world.uses("web", memory_bytes=200 << 20)
    assert engine.check() == []
    assert len(engine.check()) == 1


def test_a_log_rule_matches_by_glob_and_restarts_nothing() -> None:
    world = World()
    engine = world.engine(ServiceRule("forks", service="worker-*", max_tasks=10))
    world.uses("worker-1", tasks=11)
    world.uses("worker-2", tasks=10)
    world.uses("web", tasks=500)
    assert engine.check() == [
        "service rule 'forks': service 'worker-1': 11 tasks > 10; logged"
    ]
    assert world.restarted == []
    assert [e.event for e in world.events] == ["rule.matched"]


def test_cpu_is_the_share_of_one_cpu_used_since_the_last_scan() -> None:
    world = World()
    engine = world.engine(ServiceRule("spin", max_cpu="80%"))
    world.uses("web", cpu_seconds=10.0)
    assert engine.check() == []  # the first scan has nothing to compare with
    world.now += 10
    world.uses("web", cpu_seconds=19.0)  # 90% of a CPU
    assert engine.check() == [
        "service rule 'spin': service 'web': CPU 90% > 80%; logged"
    ]
    world.now += 10
    world.uses("web", cpu_seconds=20.0)  # 10%
    assert engine.check() == []


def test_a_service_not_contained_has_no_usage_and_never_matches() -> None:
    world = World()
    engine = world.engine(ServiceRule("leak", max_memory="1M"))
    world.usage["web"] = {"usage": None}
    assert engine.check() == []


def test_a_rule_kept_by_a_reload_keeps_its_count_and_a_changed_one_starts_again() -> (
    None
):
    world = World()
    kept = ServiceRule("leak", max_memory="100M", for_scans=2)
    changed = ServiceRule("forks", max_tasks=5, for_scans=2)
    engine = world.engine(kept, changed)
    world.uses("web", memory_bytes=200 << 20, tasks=9)
    engine.check()
    engine.update([kept, ServiceRule("forks", max_tasks=6, for_scans=2)])
    assert engine.check() == [
        "service rule 'leak': service 'web': memory 200M > 100M for 2 scans; logged"
    ]


def test_a_service_rule_needs_a_bound_and_a_unique_name() -> None:
    with pytest.raises(ConfigError, match="needs a bound: max_memory, max_tasks or"):
        ServiceRule("nothing")
    with pytest.raises(ConfigError, match="service rule 'x' is defined twice"):
        World().engine(ServiceRule("x", max_tasks=1), ServiceRule("x", max_tasks=2))
