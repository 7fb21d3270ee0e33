"""Containment by cgroups: what procwork runs cannot escape a stop.

A process group holds a tree only while no member leaves it; a daemon that
calls ``setsid()`` or double-forks does. A cgroup holds every descendant,
whatever it does, and the kernel can kill it whole (``cgroup.kill``) and
say when it is empty (``cgroup.events``). Where cgroup v2 is writable by
procwork (root, or a delegated subtree), each service instance and each
``contain=True`` run gets one; elsewhere procwork stays with process
groups, and says why.

The rooms: :mod:`._fs` (the cgroup file protocol, standard library only,
which the lifeline helper loads too), :mod:`._host` (where cgroups may be
made here), :mod:`._limits` (which file holds each limit, and whether it
is enforced), :mod:`._watch` (inotify on the reactor), :mod:`._enter`
(starting a child already inside its cgroup) and :mod:`._tree` (the
containments and their cgroups).
"""

from __future__ import annotations

import atexit
import itertools
import os
import weakref
from collections.abc import Sequence

from twisted.logger import Logger

from procwork._cgroup._enter import Entry, entering, missing_interpreter
from procwork._cgroup._host import PARENT_VARIABLE, Host, discover
from procwork._cgroup._limits import Enforcement, Limits, format_limit
from procwork._cgroup._tree import (
    EMPTY_WAIT,
    Cgroup,
    CgroupObserver,
    Containment,
    Usage,
    observe_cgroups,
)
from procwork._reactor import Reactor

__all__ = [
    "EMPTY_WAIT",
    "PARENT_VARIABLE",
    "Cgroup",
    "CgroupObserver",
    "Containment",
    "Enforcement",
    "Entry",
    "Host",
    "Limits",
    "Usage",
    "discover",
    "entering",
    "format_limit",
    "missing_interpreter",
    "observe_cgroups",
    "run_cgroup",
    "runs_containment",
]

_log = Logger(namespace="procwork")

# Per reactor, this process's containment of its contain=True runs.
_runs: weakref.WeakKeyDictionary[object, tuple[int, Containment]] = (
    weakref.WeakKeyDictionary()
)


def runs_containment(reactor: Reactor) -> Containment:
    """This program's containment of its ``contain=True`` runs, made at the
    first such run (``procwork.runs.<pid>``). Where it cannot be had, the
    runs are contained by their process group, said once in the log."""
    pid = os.getpid()
    known = _runs.get(reactor)
    if known is not None and known[0] == pid:
        return known[1]
    containment = Containment(f"runs.{pid}", discover(), reactor=reactor)
    containment.start()
    if containment.available:
        # Removed when the program ends (its cgroups are empty by then: the
        # runs were killed at the reactor's shutdown); the lifeline removes
        # it if the program is killed instead.
        if hasattr(reactor, "addSystemEventTrigger"):
            reactor.addSystemEventTrigger("after", "shutdown", containment.close)
        atexit.register(containment.close)
    else:
        _log.warn(
            "contain=True: cgroups are not available ({why}); runs are contained "
            "by their process group only",
            why=containment.why,
        )
    _runs[reactor] = (pid, containment)
    return containment


_run_numbers = itertools.count(1)


def run_cgroup(reactor: Reactor, command: Sequence[str]) -> Cgroup | None:
    """A cgroup of its own for a ``contain=True`` run of ``command`` (None
    where cgroups cannot be had: its process group then contains it, as any
    run's)."""
    containment = runs_containment(reactor)
    try:
        return containment.cgroup(f"run-{next(_run_numbers)}")
    except OSError as e:
        _log.warn(
            "{command}: contained by its process group only: {error}",
            command=" ".join(command),
            error=e,
        )
        return None
