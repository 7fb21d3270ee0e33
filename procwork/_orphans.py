"""Reap orphans when procwork is PID 1 or a child subreaper.

The zombies the kernel hands to this process are reaped, and never a child
this program started: by default only a zombie child whose session is
neither ours nor led by itself (with ``all_children=True``, any zombie child
that procwork, Twisted or a :func:`claim` does not own). Sweeps are asked
for by Twisted's SIGCHLD handling (an entry in its reap table) and by a
backstop timer, coalesced and bounded. It costs nothing unless the process
is PID 1 or a subreaper (checked once, at the first spawn).

Design: ARCHITECTURE.md, "Orphan reaping".
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import weakref
from typing import Any, cast

from twisted.internet import process as twisted_process
from twisted.logger import Logger

from procwork import _spawn
from procwork._reactor import Reactor, default_reactor

__all__ = ["OrphanReaper", "reap_orphans", "reaper_role"]

_log = Logger(namespace="procwork.orphans")

_PR_GET_CHILD_SUBREAPER = 37  # linux/prctl.h

# The key of our entry in Twisted's reap table: not an int, so it can never
# be mistaken for (or collide with) a pid.
_HOOK_KEY = "procwork-orphan-reaper"

# Reap at most this many orphans per sweep before letting the reactor run
# other work; the rest are reaped by the next sweep, on the next turn.
_REAPS_PER_SWEEP = 1000

# What reap_orphans() gives its reaper (see OrphanReaper); tests change them.
_MIN_INTERVAL = 0.05
_BACKSTOP = 1.0

_reaper: OrphanReaper | None = None
_auto: bool | None = None  # None: the first spawn has not looked yet

# Children that procwork itself starts with subprocess (a helper such as the
# lifeline): all_children leaves them to their Popen. Weak: a Popen that is
# gone no longer needs protecting.
_claimed: weakref.WeakSet[subprocess.Popen[Any]] = weakref.WeakSet()


def reaper_role() -> str | None:
    """``"pid 1"``, ``"subreaper"``, or None if orphans never come to us.

    Linux only (elsewhere None): a subreaper is detected with
    ``prctl(PR_GET_CHILD_SUBREAPER)`` through ctypes.
    """
    if not sys.platform.startswith("linux") or not hasattr(os, "waitid"):
        return None
    if os.getpid() == 1:
        return "pid 1"
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        value = ctypes.c_int(0)
        if libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(value), 0, 0, 0) != 0:
            return None
    except (ImportError, OSError, AttributeError):
        return None
    return "subreaper" if value.value else None


def reap_orphans(reactor: Reactor | None = None, *, all_children: bool = False) -> bool:
    """Reap the orphans handed to this process, if it is PID 1 or a subreaper.

    Every procwork spawn does this by itself (with the default rule) when
    the process is PID 1 or a subreaper at its first spawn; call it to
    choose ``all_children``, or after becoming a subreaper later. Calling it
    again is harmless; ``all_children=True`` is kept once asked for. Call
    from the reactor thread, or before the reactor runs.

    Args:
        reactor: Default the global reactor; the first call's reactor is kept.
        all_children: Also reap zombie children that may have been started
            by this program (in our session, or leading their own), as
            long as procwork and Twisted's reap table don't own them. Only
            for programs that start children through procwork and Twisted
            alone: a child started with :mod:`subprocess` would lose its
            exit status. Default: reap only children this program provably
            did not start.

    Returns:
        True if orphans are being reaped (this process is PID 1 or a
        subreaper), False otherwise (nothing was done).
    """
    global _reaper, _auto
    if _reaper is not None:
        _reaper.all_children = _reaper.all_children or all_children
        return True
    if reaper_role() is None:
        _auto = False  # the spawns need not look again
        return False
    if reactor is None:
        reactor = default_reactor()
    _reaper = OrphanReaper(
        reactor,
        all_children=all_children,
        min_interval=_MIN_INTERVAL,
        backstop=_BACKSTOP,
    )
    _reaper.start()
    _auto = True
    return True


def on_spawn(reactor: Reactor) -> None:
    """Called at every procwork spawn: start reaping if we are PID 1 or a subreaper.

    The role is looked up at the first call only; after that this is one
    comparison, so the spawn path of a normal process pays nothing.
    """
    global _auto
    if _auto is False or _reaper is not None:
        return
    _auto = reap_orphans(reactor)


class _SpawnWatch(_spawn.LiveObserver):
    """Told of every spawn by the spawn transport: calls :func:`on_spawn`.

    An observer rather than a call from ``_spawn``, so that the transport
    never imports this module (this one reads its live processes).
    """

    def started(self, proc: _spawn.GroupProcess, token: tuple[int, ...]) -> None:
        try:
            on_spawn(proc.reactor)
        except Exception:  # never into the spawn: it would lose the child
            _log.failure("could not start reaping orphans")


_spawn.observe(_SpawnWatch())


def claim(child: subprocess.Popen[Any]) -> None:
    """Never reap ``child``, even with ``all_children``: its Popen waits for it.

    For children procwork starts with :mod:`subprocess` outside
    ``GroupProcess`` (a helper process): ``procwork monitor`` reaps every
    other child it does not know.
    """
    _claimed.add(child)


def current() -> OrphanReaper | None:
    """The running reaper, if any (for tests and diagnostics)."""
    return _reaper


def stop_reaping() -> None:
    """Stop the running reaper and forget the role (for tests)."""
    global _reaper, _auto
    reaper, _reaper, _auto = _reaper, None, None
    if reaper is not None:
        reaper.stop()


class _SigchldHook:
    """The entry in Twisted's reap table: Twisted calls ``reapProcess`` on SIGCHLD."""

    def __init__(self, reaper: OrphanReaper) -> None:
        self._reaper = reaper

    def reapProcess(self) -> None:
        # Called from Twisted's reapAllProcesses(), in a loop over its table:
        # whatever happens, don't raise into it, or Twisted's own children
        # later in the table would not be reaped this time.
        try:
            self._reaper.request_sweep()
        except Exception:
            _log.failure("could not schedule a sweep for orphans")


class OrphanReaper:
    """Reaps zombie children that are not this program's own. Reactor thread only.

    Args:
        reactor: Provides ``callLater`` and ``seconds``.
        all_children: See :func:`reap_orphans`.
        min_interval: Seconds between two sweeps at least, however often
            SIGCHLD arrives.
        backstop: Seconds between sweeps when no SIGCHLD asks for one.
        max_busy: At most this fraction of the time is spent sweeping: after
            a sweep that took ``t`` seconds, the next waits ``t / max_busy``
            seconds at least (0: no such limit).
    """

    def __init__(
        self,
        reactor: Reactor,
        *,
        all_children: bool = False,
        min_interval: float = 0.05,
        backstop: float = 1.0,
        max_busy: float = 0.02,
    ) -> None:
        self.all_children = all_children
        self.min_interval = min_interval
        self.backstop = backstop
        self.max_busy = max_busy
        self.reaped = 0
        """Orphans reaped so far."""
        self.sweeps = 0
        """Sweeps run so far."""
        self._reactor = reactor
        self._hook = _SigchldHook(self)
        self._sweep_call: Any = None
        self._backstop_call: Any = None
        self._last_sweep: float | None = None
        self._pause = min_interval  # before the next sweep, from the last one
        self._timer = time.perf_counter  # measures sweeps; tests replace it
        self._running = False
        self._own_sessions = {os.getsid(0)}

    def start(self) -> None:
        """Hook into Twisted's SIGCHLD handling, start the backstop, sweep soon."""
        if self._running:
            return
        self._running = True
        # Twisted types its table as pid -> process; ours is a str -> hook.
        cast(dict[Any, Any], twisted_process.reapProcessHandlers)[_HOOK_KEY] = (
            self._hook
        )
        self._backstop_call = self._reactor.callLater(self.backstop, self._on_backstop)
        self.request_sweep()

    def stop(self) -> None:
        """Unhook from Twisted and cancel pending sweeps."""
        self._running = False
        table = cast(dict[Any, Any], twisted_process.reapProcessHandlers)
        if table.get(_HOOK_KEY) is self._hook:
            del table[_HOOK_KEY]
        for call in (self._sweep_call, self._backstop_call):
            if call is not None and call.active():
                call.cancel()
        self._sweep_call = self._backstop_call = None

    def request_sweep(self) -> None:
        """Sweep on a later reactor turn, at most once per ``min_interval``
        (or more rarely: see ``max_busy``).

        Any number of requests before the sweep runs make one sweep.
        """
        if not self._running:
            return
        if self._sweep_call is not None and self._sweep_call.active():
            return
        delay = 0.0
        if self._last_sweep is not None:
            delay = max(0.0, self._last_sweep + self._pause - self._reactor.seconds())
        # Never now: after this batch of events, in which procwork's own
        # children whose pidfds fired are reaped by their transports.
        self._sweep_call = self._reactor.callLater(delay, self._scheduled_sweep)

    def _on_backstop(self) -> None:
        # Twisted has no SIGCHLD handling off the main thread or with
        # installSignalHandlers=False, and /proc's list of children can miss
        # one that exits while it is read: sweep now and then regardless.
        self._backstop_call = self._reactor.callLater(self.backstop, self._on_backstop)
        self.request_sweep()

    def _scheduled_sweep(self) -> None:
        self._sweep_call = None
        started = self._timer()
        try:
            more = self.sweep()
        except Exception:
            _log.failure("sweep for orphans failed")
            more = False
        # A sweep is a few microseconds when no zombie is waiting, but when
        # the kernel keeps showing a zombie we may not take (a child the
        # program has not waited for yet), each sweep lists every child:
        # milliseconds with thousands of them. Space sweeps by their cost,
        # so a storm of SIGCHLD never costs more than max_busy of a core.
        took = self._timer() - started
        pause = took / self.max_busy if self.max_busy > 0 else 0.0
        self._pause = max(self.min_interval, pause)
        self._last_sweep = self._reactor.seconds()
        if more:
            self.request_sweep()

    def sweep(self) -> bool:
        """Reap the orphans among our zombie children now.

        Returns:
            True if the per-sweep limit was reached and more may be waiting.
        """
        self.sweeps += 1
        rule = _Rule(self.all_children, self._own_sessions)
        reaped = 0
        # Fast path: the kernel shows one zombie (or none) per call.
        while reaped < _REAPS_PER_SWEEP:
            pid = _peek_zombie()
            if pid is None:
                return False  # no zombie child at all: the usual case
            if not rule.may_reap(pid):
                break  # the kernel keeps showing this one; look at all of them
            if not self._reap(pid):
                break
            reaped += 1
        else:
            return True
        for pid in _children():
            if reaped >= _REAPS_PER_SWEEP:
                return True
            # Set lookups first: with thousands of live children, most are
            # procwork's, and a system call for each would cost more.
            if rule.owned(pid) or not _is_zombie(pid):
                continue
            if rule.may_reap(pid) and self._reap(pid):
                reaped += 1
        return False

    def _reap(self, pid: int) -> bool:
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return False  # somebody's waitpid(-1) was faster
        if got != pid:
            return False
        self.reaped += 1
        _log.debug(
            "reaped orphan {pid}: exit status {status}",
            pid=pid,
            status=os.waitstatus_to_exitcode(status),
        )
        return True


class _Rule:
    """Which zombie children a sweep may reap (ARCHITECTURE.md, "Orphan reaping").

    Built once per sweep: our session id is read once, the pids procwork
    owns only if needed.

    Args:
        all_children: See :func:`reap_orphans`.
        own_sessions: Every session this process has been in since the
            reaper started (a child forked before our own ``setsid()`` is
            in the old one); the current one is added.
    """

    def __init__(self, all_children: bool, own_sessions: set[int]) -> None:
        self._all_children = all_children
        own_sessions.add(os.getsid(0))
        self._own_sessions = own_sessions
        self._procwork_pids: set[int] | None = None

    def may_reap(self, pid: int) -> bool:
        try:
            session = os.getsid(pid)  # a zombie still has its session id
        except OSError:
            return False
        if session != pid and session not in self._own_sessions:
            # Neither forked by us (it would be in our session) nor a child of
            # ours that called setsid() (it would lead its session): inherited.
            return True
        return self._all_children and not self.owned(pid)

    def owned(self, pid: int) -> bool:
        """Whether procwork, Twisted or a :func:`claim` waits for child ``pid``."""
        if pid in twisted_process.reapProcessHandlers:
            return True  # Twisted's child; reapAllProcesses takes it
        if self._procwork_pids is None:
            self._procwork_pids = {
                p.pid for p in _spawn.live_processes() if p.pid is not None
            }
            self._procwork_pids.update(c.pid for c in _claimed)
        return pid in self._procwork_pids


def _peek_zombie() -> int | None:
    """The pid of one zombie child, left unreaped; None if there is none."""
    try:
        info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return None  # no children at all
    return None if info is None else info.si_pid


def _is_zombie(pid: int) -> bool:
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False  # not (or no longer) our child
    return info is not None


def _children() -> list[int]:
    """Our children's pids, from /proc; an empty list if /proc can't say."""
    if not _proc_is_ours():
        return []
    found: list[int] = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return []
    listed = False
    for tid in tasks:
        # Each thread has its own list: a child is listed under the thread
        # that forked it, or that the kernel picked when it was re-parented.
        try:
            with open(f"/proc/self/task/{tid}/children", "rb") as f:
                found.extend(int(pid) for pid in f.read().split())
            listed = True
        except FileNotFoundError:
            continue  # the thread has ended, or no CONFIG_PROC_CHILDREN
    return found if listed else _children_by_scan()


def _children_by_scan() -> list[int]:
    """Our children's pids from every /proc/PID/stat (kernels without the list)."""
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()
            if int(fields[1]) == me:
                found.append(int(name))
    return found


_proc_checked: bool | None = None


def _proc_is_ours() -> bool:
    """Whether /proc shows our pid namespace (``unshare --pid`` without
    ``--mount-proc`` leaves the parent's, where our pids mean other processes)."""
    global _proc_checked
    if _proc_checked is None:
        try:
            with open("/proc/self/stat", "rb") as f:
                _proc_checked = int(f.read().split()[0]) == os.getpid()
        except (OSError, ValueError, IndexError):
            _proc_checked = False
    return _proc_checked
