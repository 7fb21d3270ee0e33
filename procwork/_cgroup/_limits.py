"""Resource limits of a cgroup: which file says each, in v2 and in v1.

A limit is one of ``memory_max``, ``memory_high``, ``pids_max`` and
``cpu_max``; each needs a controller (``memory``, ``pids``, ``cpu``), which
a host has in its cgroup v2 tree, in a v1 hierarchy procwork may use, or
not at all (see :mod:`._host`). :func:`plan` says, for each limit, where it
will be enforced or why it cannot be: the answer ``--check-config`` and
``procwork ctl status`` show. :func:`files` says what to write.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

__all__ = [
    "CONTROLLER",
    "CPU_PERIOD_US",
    "Enforcement",
    "Limits",
    "files",
    "format_limit",
    "plan",
]

#: The controller each limit needs.
CONTROLLER = {
    "memory_max": "memory",
    "memory_high": "memory",
    "pids_max": "pids",
    "cpu_max": "cpu",
}

#: The period ``cpu_max`` is enforced over, in microseconds (the kernel's
#: default: 100 ms).
CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class Limits:
    """The limits of one cgroup; None: no limit.

    Attributes:
        memory_max: Bytes; past them the kernel reclaims, then the OOM killer
            kills a process of the cgroup.
        memory_high: Bytes; past them the cgroup is throttled and reclaimed
            hard, but nothing is killed.
        pids_max: Processes and threads; a fork past it fails (EAGAIN).
        cpu_max: CPUs' worth of time, as a fraction (0.5 is 50 % of one CPU,
            2.0 two CPUs), enforced per 100 ms period.
    """

    memory_max: int | None = None
    memory_high: int | None = None
    pids_max: int | None = None
    cpu_max: float | None = None

    def items(self) -> list[tuple[str, int | float]]:
        """The limits that are set: ``[("pids_max", 64), ...]``."""
        return [
            (key, value)
            for key in CONTROLLER
            if (value := getattr(self, key)) is not None
        ]

    def __bool__(self) -> bool:
        return bool(self.items())


def format_limit(key: str, value: float) -> str:
    """A limit's value as the config writes it: ``"200M"``, ``"50%"``, ``64``."""
    if key == "cpu_max":
        return f"{value * 100:g}%"
    if key.startswith("memory"):
        number = int(value)
        for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
            if number >= size and number % size == 0:
                return f"{number // size}{unit}"
        return str(number)
    return str(int(value))


@dataclass(frozen=True)
class Enforcement:
    """Whether one limit is enforced, and how or why not.

    Attributes:
        key: The limit (``"pids_max"``).
        value: Its value as written (``"64"``, ``"200M"``, ``"50%"``).
        enforced: True when the kernel will hold it.
        how: Where: ``"cgroup v2 pids.max"``, ``"cgroup v1 pids.max"``.
        why: Why it is not enforced ("" when it is).
    """

    key: str
    value: str
    enforced: bool
    how: str = ""
    why: str = ""

    def __str__(self) -> str:
        if self.enforced:
            return f"{self.key} {self.value}: enforced ({self.how})"
        return f"{self.key} {self.value}: not enforced: {self.why}"

    def to_dict(self) -> dict[str, object]:
        """As JSON types."""
        return {
            "limit": self.key,
            "value": self.value,
            "enforced": self.enforced,
            "how": self.how or None,
            "why": self.why or None,
        }


#: The v2 file of each limit.
_V2_FILE = {
    "memory_max": "memory.max",
    "memory_high": "memory.high",
    "pids_max": "pids.max",
    "cpu_max": "cpu.max",
}

#: The v1 file of each limit; None: v1 has no such limit.
_V1_FILE = {
    "memory_max": "memory.limit_in_bytes",
    "memory_high": None,
    "pids_max": "pids.max",
    "cpu_max": "cpu.cfs_quota_us",
}


def plan(
    limits: Limits,
    *,
    v2_controllers: Collection[str],
    v1_controllers: Collection[str],
    v2_why: str,
    v1_why: Mapping[str, str],
) -> list[Enforcement]:
    """Where each limit that is set will be enforced, or why it cannot be.

    A controller in cgroup v2 is preferred; a v1 hierarchy serves only what
    v2 lacks (a hybrid host's).

    Args:
        limits: The limits.
        v2_controllers: The controllers procwork's v2 cgroups can have (empty
            without v2).
        v1_controllers: The v1 hierarchies procwork may make cgroups in.
        v2_why: Why there is no v2 at all ("" if there is).
        v1_why: Why each v1 controller is unusable.
    """
    found = []
    for key, value in limits.items():
        controller = CONTROLLER[key]
        text = format_limit(key, value)
        if v2_why:
            found.append(Enforcement(key, text, False, why=v2_why))
        elif controller in v2_controllers:
            found.append(Enforcement(key, text, True, f"cgroup v2 {_V2_FILE[key]}"))
        elif controller in v1_controllers and _V1_FILE[key] is not None:
            found.append(Enforcement(key, text, True, f"cgroup v1 {_V1_FILE[key]}"))
        else:
            v1 = (
                f"cgroup v1 has no {_V2_FILE[key]}"
                if controller in v1_controllers
                else v1_why.get(controller, f"no v1 {controller} hierarchy")
            )
            found.append(
                Enforcement(
                    key,
                    text,
                    False,
                    why=f"no {controller} controller: the cgroup v2 tree has none "
                    f"for procwork's cgroups, and {v1}",
                )
            )
    return found


def files(key: str, value: float, version: int) -> dict[str, str]:
    """The files of a cgroup that set one limit, and what to write to them,
    in the order to write them (cgroup v ``version``, 1 or 2)."""
    if key == "cpu_max":
        quota = max(1000, round(value * CPU_PERIOD_US))
        if version == 2:
            return {"cpu.max": f"{quota} {CPU_PERIOD_US}"}
        return {"cpu.cfs_period_us": str(CPU_PERIOD_US), "cpu.cfs_quota_us": str(quota)}
    name = _V2_FILE[key] if version == 2 else _V1_FILE[key]
    assert name is not None  # plan() enforces no limit v1 lacks
    return {name: str(int(value))}


def unlimited(key: str, version: int) -> dict[str, str]:
    """What lifts a limit again (a reused cgroup whose service lost it)."""
    if key == "cpu_max":
        return {"cpu.max": "max"} if version == 2 else {"cpu.cfs_quota_us": "-1"}
    name = _V2_FILE[key] if version == 2 else _V1_FILE[key]
    if name is None:
        return {}
    return {name: "-1" if name == "memory.limit_in_bytes" else "max"}
