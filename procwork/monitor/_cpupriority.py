"""The monitor's own CPU priority: ``[monitor] nice`` and ``realtime``.

A watchdog must get the CPU when its timers fire, overload or not. Its
checks' start lateness beside CPU hogs is the time the monitor waits,
runnable, for a CPU (``run_delay`` in ``/proc/<pid>/schedstat``), not work
of its own: 100 http checks a second beside 16 busy processes on 2 cores
started p99 52-456 ms late at nice 0, 8 ms at nice -10, 1.4 ms with
``realtime`` (``benchmarks/bench_native_checks.py --hogs 16 --http``, see
``specs/supervision.md``). A lower nice weighs the
monitor more in the kernel's fair scheduler; ``realtime`` puts it above
every normal process (``SCHED_RR`` at :data:`REALTIME_PRIORITY`, the
lowest, below any other real-time thread).

By default (``nice`` left out) the monitor takes :data:`DEFAULT_NICE`
where it may, and runs on as started, quietly, where it may not: a
watchdog exists to see through the overload it is there to fix, and a
negative nice starves nothing (it only weighs the monitor more; its own
CPU is a few per cent of a core). ``realtime`` is never the default: a
monitor stuck in a loop at real-time priority would hold a core.

Either is the monitor's alone: it is set with ``SCHED_RESET_ON_FORK``, so
whatever the monitor starts (services, command checks, actions, and the
threads it starts later: Twisted's thread pool) begins at ``SCHED_OTHER``
and nice 0, as under a monitor left at nice 0 (a service's own ``nice`` is
added to that). Without the right (root, ``CAP_SYS_NICE``, or
``RLIMIT_NICE`` / ``RLIMIT_RTPRIO``; systemd's ``RestrictRealtime=yes``
refuses ``realtime`` to root too) the monitor says so in one warning line
and runs on as it was started.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from twisted.logger import Logger

__all__ = ["DEFAULT_NICE", "REALTIME_PRIORITY", "apply_cpu_priority"]

_log = Logger(namespace="procwork.monitor")

#: The ``SCHED_RR`` priority of ``realtime = true``: the lowest real-time
#: one, above every normal process and below the kernel's threaded
#: interrupts (50) and any real-time daemon that asked for more.
REALTIME_PRIORITY = 1

#: The monitor's nice value when the config leaves ``nice`` out, where it
#: may take it: p99 start lateness 8 ms beside 16 hogs on 2 cores, against
#: 52-456 ms at nice 0 (see the module's docstring).
DEFAULT_NICE = -10

_NEEDS = "needs root or CAP_SYS_NICE"
_NORMAL = os.sched_param(0)
_REALTIME = os.sched_param(REALTIME_PRIORITY)


def apply_cpu_priority(
    nice: int | None,
    realtime: bool,
    *,
    set_scheduler: Callable[[int, int, os.sched_param], None] = os.sched_setscheduler,
    set_nice: Callable[[int, int, int], None] = os.setpriority,
) -> str | None:
    """Give the calling thread the config's ``nice`` and ``realtime``,
    not inherited by what it starts (``SCHED_RESET_ON_FORK``).

    Call from the thread that runs the reactor, before the monitor starts
    anything: Linux keeps a policy and a nice value per thread, so it is
    that thread's. Nothing is done for ``nice = 0`` without ``realtime``.

    Args:
        nice: -20..0 (validated by the config); None: :data:`DEFAULT_NICE`
            where permitted, and no warning where not.
        realtime: ``SCHED_RR`` at :data:`REALTIME_PRIORITY`.
        set_scheduler: ``os.sched_setscheduler`` (tests inject).
        set_nice: ``os.setpriority`` (tests inject).

    Returns:
        What was not done and why (it is also logged, once, as a warning),
        or None when all of it was.
    """
    asked = nice is not None
    if nice is None:
        nice = DEFAULT_NICE
    if nice == 0 and not realtime:
        return None
    problems = []
    # The flag first, with the policy wanted: setting SCHED_RESET_ON_FORK
    # needs no right, so even a monitor refused the rest never hands a
    # raised priority on (it might have been started with one).
    if realtime:
        try:
            set_scheduler(0, os.SCHED_RR | os.SCHED_RESET_ON_FORK, _REALTIME)
        except OSError as e:
            problems.append(f"realtime = true (SCHED_RR): {_why(e)}")
            realtime = False
    if not realtime:
        with contextlib.suppress(OSError):  # lowering a priority needs no right
            set_scheduler(0, os.SCHED_OTHER | os.SCHED_RESET_ON_FORK, _NORMAL)
    if nice:
        try:
            set_nice(os.PRIO_PROCESS, 0, nice)
        except OSError as e:
            if asked:
                problems.append(f"nice = {nice}: {_why(e)}")
            else:  # the default, where the monitor may not: as started
                _log.debug(
                    "the monitor keeps the nice value it was started with "
                    "(the default, nice = {nice}: {why})",
                    nice=nice,
                    why=_why(e),
                )
            nice = 0
    if problems:
        words = "; ".join(problems)
        _log.warn(
            "the monitor's CPU priority is not raised: {problems}; it runs at "
            "the priority it was started with",
            problems=words,
        )
        return words
    if nice or realtime:
        _log.info(
            "the monitor runs at {how}; what it starts does not inherit it",
            how=_describe(nice, realtime),
        )
    return None


def _describe(nice: int, realtime: bool) -> str:
    words = [f"real-time priority {REALTIME_PRIORITY} (SCHED_RR)"] if realtime else []
    return ", ".join(words + ([f"nice {nice}"] if nice else []))


def _why(error: OSError) -> str:
    text = error.strerror or str(error)
    return f"{text} ({_NEEDS})" if isinstance(error, PermissionError) else text
