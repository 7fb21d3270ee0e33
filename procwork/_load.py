"""How loaded is the machine? Read from /proc, behind a one-method interface."""

from __future__ import annotations

import os
from typing import Protocol

__all__ = ["LoadSource", "NoLoadLimit", "SystemLoad"]


class LoadSource(Protocol):
    """Tells the scheduler whether the machine is too busy for new work."""

    def overloaded(self) -> str | None:
        """A reason such as ``"load 9.1 per core > 2.0"``, or None if not."""
        ...


class SystemLoad:
    """Linux load: the 1-minute load average per core, and CPU pressure.

    Args:
        max_load: Overloaded above this 1-minute load average per core
            (``None``: ignore the load average).
        max_cpu_pressure: Overloaded above this share (percent) of the last
            10 s in which runnable tasks waited for a CPU, from
            ``/proc/pressure/cpu`` (``None``: ignore; also ignored where the
            kernel has no PSI). Reacts faster than the load average.
        proc_root: Where /proc is (tests point it elsewhere).
    """

    def __init__(
        self,
        max_load: float | None = 2.0,
        max_cpu_pressure: float | None = None,
        *,
        proc_root: str = "/proc",
    ) -> None:
        for name, value in (
            ("max_load", max_load),
            ("max_cpu_pressure", max_cpu_pressure),
        ):
            if value is not None and not value > 0:
                raise ValueError(f"SystemLoad({name}={value!r}): must be > 0 or None")
        self.max_load = max_load
        self.max_cpu_pressure = max_cpu_pressure
        self._root = proc_root
        self._cores = os.cpu_count() or 1

    def __repr__(self) -> str:
        return (
            f"SystemLoad(max_load={self.max_load!r}, "
            f"max_cpu_pressure={self.max_cpu_pressure!r})"
        )

    def load_per_core(self) -> float | None:
        """The 1-minute load average divided by the number of cores."""
        try:
            with open(f"{self._root}/loadavg") as f:
                return float(f.read().split()[0]) / self._cores
        except (OSError, ValueError, IndexError):
            return None

    def cpu_pressure(self) -> float | None:
        """``some avg10`` of /proc/pressure/cpu, in percent."""
        try:
            with open(f"{self._root}/pressure/cpu") as f:
                for line in f:
                    if line.startswith("some "):
                        for field in line.split()[1:]:
                            key, _, value = field.partition("=")
                            if key == "avg10":
                                return float(value)
        except (OSError, ValueError):
            return None
        return None

    def overloaded(self) -> str | None:
        if self.max_load is not None:
            load = self.load_per_core()
            if load is not None and load > self.max_load:
                return f"load {load:.2f} per core > {self.max_load:g}"
        if self.max_cpu_pressure is not None:
            pressure = self.cpu_pressure()
            if pressure is not None and pressure > self.max_cpu_pressure:
                return f"CPU pressure {pressure:.0f}% > {self.max_cpu_pressure:g}%"
        return None


class NoLoadLimit:
    """A load source that never reports overload."""

    def overloaded(self) -> str | None:
        return None

    def __repr__(self) -> str:
        return "NoLoadLimit()"
