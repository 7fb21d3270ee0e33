"""Admission: who may start now. The watchdog's problem lives here.

When the machine is overloaded, the small processes a watchdog launches slow
down; if it waited on them in order it would never get to the one process
that could fix the load. So:

* ``critical`` runs start at once, whatever the queue, the cap or the load;
* the others wait in one queue, ordered by priority then arrival (FIFO
  within a priority), and start while fewer than ``max_running`` of them
  run;
* ``normal`` and ``low`` runs also wait while the machine is overloaded
  (``high`` ones only obey the cap). Under overload at least
  ``min_running`` of them still run, so the queue keeps moving.

Every operation is O(log n) in the queue length; the load is read at most
once per ``load_interval`` and only while something waits for it.
"""

from __future__ import annotations

import heapq
import itertools
import os
from typing import Any, Protocol

from procwork import _validate as validate
from procwork._defaults import PRIORITIES, Priority
from procwork._load import LoadSource, SystemLoad
from procwork._reactor import Reactor, default_reactor
from procwork._threads import check_thread

__all__ = ["PRIORITIES", "Priority", "Scheduler", "parse_priority"]


def parse_priority(value: object, command: object = "") -> Priority:
    """``"critical"``/``"high"``/``"normal"``/``"low"`` (or a Priority) to Priority."""
    if isinstance(value, Priority):
        return value
    if isinstance(value, str) and value.lower() in PRIORITIES:
        return Priority[value.upper()]
    where = f" for {command}" if str(command) else ""
    raise ValueError(
        f"unknown priority {value!r}{where}; use one of {', '.join(PRIORITIES)}"
    )


class Job(Protocol):
    """What the scheduler admits: a queued process."""

    priority: Priority

    def _admitted(self) -> None:
        """Start now; the job calls :meth:`Scheduler.finished` when it ends."""


class Scheduler:
    """A concurrency cap, a priority queue and a load gate.

    Call from the reactor thread (``set_max_running`` from another thread
    raises :class:`untwisted.ForeignThreadError`).

    Args:
        reactor: For the timer that re-reads the load while runs wait for it;
            default the global reactor.
        max_running: At most this many non-critical runs at once; default
            ``max(8, 4 * cores)``.
        load: Tells whether the machine is overloaded; default
            :class:`SystemLoad` (1-minute load average per core > 2).
        load_interval: Seconds between load readings while runs wait.
        min_running: Non-critical runs allowed even under overload.
    """

    def __init__(
        self,
        reactor: Reactor | None = None,
        *,
        max_running: int | None = None,
        load: LoadSource | None = None,
        load_interval: float = 1.0,
        min_running: int = 1,
    ) -> None:
        if max_running is None:
            max_running = max(8, 4 * (os.cpu_count() or 1))
        if not isinstance(max_running, int) or max_running < 1:
            raise ValueError(
                f"Scheduler(max_running={max_running!r}): must be an int >= 1"
            )
        if not isinstance(min_running, int) or min_running < 0:
            raise ValueError(
                f"Scheduler(min_running={min_running!r}): must be an int >= 0"
            )
        validate.seconds(
            load_interval, f"Scheduler(load_interval={load_interval!r}):", positive=True
        )
        self._reactor = reactor
        self.max_running = max_running
        self.min_running = min_running
        self.load: LoadSource = load if load is not None else SystemLoad()
        self.load_interval = load_interval
        self._heap: list[tuple[int, int, Job]] = []
        self._queued: set[Job] = set()
        self._running: set[Job] = set()  # non-critical ones, counted by the cap
        self._critical: set[Job] = set()
        self._seq = itertools.count()
        self._recheck: Any = None
        self._load_reason: str | None = None
        self._load_read_at: float | None = None
        self.started = 0  # runs admitted, ever
        self._admitting = False

    def __repr__(self) -> str:
        return (
            f"<Scheduler running={self.running} queued={self.queued} "
            f"max_running={self.max_running} load={self.load!r}>"
        )

    @property
    def reactor(self) -> Reactor:
        """The reactor of its runs and its load timer (default: the global one)."""
        if self._reactor is None:
            self._reactor = default_reactor()
        return self._reactor

    @property
    def running(self) -> int:
        """Runs started and not finished, critical ones included."""
        return len(self._running) + len(self._critical)

    @property
    def queued(self) -> int:
        """Runs waiting to start."""
        return len(self._queued)

    @property
    def waiting_for_load(self) -> str | None:
        """Why queued runs wait for the load, or None."""
        return self._load_reason if self._recheck is not None else None

    def stats(self) -> dict[str, Any]:
        """Counts for status pages: running, queued, critical, started, load."""
        return {
            "running": self.running,
            "queued": self.queued,
            "critical_running": len(self._critical),
            "max_running": self.max_running,
            "started": self.started,
            "waiting_for_load": self.waiting_for_load,
        }

    # -- the job's side ------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Queue ``job``; it is admitted now if it may start now."""
        if job.priority is Priority.CRITICAL:
            self._critical.add(job)
            self.started += 1
            job._admitted()
            return
        self._queued.add(job)
        heapq.heappush(self._heap, (job.priority, next(self._seq), job))
        self._admit()

    def withdraw(self, job: Job) -> bool:
        """Take a queued job out of the queue (timeout or cancel while queued)."""
        if job not in self._queued:
            return False
        self._queued.discard(job)  # its heap entry is skipped when it surfaces
        if not self._queued:
            self._heap.clear()
            self._stop_recheck()
        return True

    def finished(self, job: Job) -> None:
        """A started job has ended (or failed to start): admit the next ones."""
        self._critical.discard(job)
        if job in self._running:
            self._running.discard(job)
            self._admit()

    def set_max_running(self, max_running: int) -> None:
        """Change the cap; a higher cap admits waiting runs at once."""
        if not isinstance(max_running, int) or max_running < 1:
            raise ValueError(f"max_running must be an int >= 1, not {max_running!r}")
        # A higher cap starts waiting runs now, on the reactor.
        check_thread("Scheduler.set_max_running", self._reactor)
        self.max_running = max_running
        self._admit()

    # -- admission ------------------------------------------------------------

    def _admit(self) -> None:
        # A job can end inside its own start (a child that exits at once is
        # reaped by Twisted's constructor), which calls finished() and so
        # _admit() again, nested. The outer loop re-checks the cap on every
        # turn, so the nested call only has to leave it to the outer one:
        # admission stays a loop, never a recursion thousands of runs deep.
        if self._admitting:
            return
        self._admitting = True
        try:
            self._admit_loop()
        finally:
            self._admitting = False

    def _admit_loop(self) -> None:
        heap = self._heap
        while heap:
            priority, _, job = heap[0]
            if job not in self._queued:
                heapq.heappop(heap)
                continue
            if len(self._running) >= self.max_running:
                return
            if (
                priority >= Priority.NORMAL
                and len(self._running) >= self.min_running
                and self._overloaded()
            ):
                self._schedule_recheck()
                return
            heapq.heappop(heap)
            self._queued.discard(job)
            self._running.add(job)
            self.started += 1
            job._admitted()
        self._stop_recheck()

    def _overloaded(self) -> bool:
        now = self.reactor.seconds()
        if self._load_read_at is None or now - self._load_read_at >= self.load_interval:
            self._load_reason = self.load.overloaded()
            self._load_read_at = now
        return self._load_reason is not None

    def _schedule_recheck(self) -> None:
        if self._recheck is None:
            self._recheck = self.reactor.callLater(
                self.load_interval, self._recheck_load
            )

    def _recheck_load(self) -> None:
        self._recheck = None
        self._admit()

    def _stop_recheck(self) -> None:
        if self._recheck is not None:
            if self._recheck.active():
                self._recheck.cancel()
            self._recheck = None
