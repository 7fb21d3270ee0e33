"""The rules' tree-kill: stop a process and all its descendants, whole.

:func:`tree_of` finds a matched process's descendants from ``/proc``
parent links; :func:`freeze` stops the tree (SIGSTOP) until it is whole,
:func:`signal_frozen` signals and thaws it, and :func:`kill_tree` does the
same with SIGKILL ``grace`` seconds later (timed by the
:class:`~procwork._escalation.Escalation` on a :class:`TreeTarget`).
:func:`signal_process` signals only the very process that was found.

Design: ARCHITECTURE.md, "The rules' tree-kill".
"""

from __future__ import annotations

import errno
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from procwork._escalation import Escalation
from procwork.monitor._proctable import ProcessTable, ProcInfo

if TYPE_CHECKING:
    from procwork.monitor._rules import Finding

__all__ = [
    "MAX_FREEZE_ROUNDS",
    "STOP_SIGNALS",
    "Identity",
    "SignalSender",
    "Spared",
    "TreeStop",
    "TreeTarget",
    "count",
    "freeze",
    "kill_tree",
    "signal_frozen",
    "signal_process",
    "still_alive",
    "tree_of",
    "tree_words",
]

Identity = tuple[int, float]
"""A process as (pid, start time): a reused pid is another process."""

SignalSender = Callable[[ProcInfo, int], bool]
"""Sends a signal to exactly that process: ``(process, signum) -> sent``.

Returns False if the process is gone (or its pid now names another process);
raises :class:`OSError` if it could not be signalled (e.g. permission denied).
"""

Spared = Callable[[ProcInfo], bool]
"""Whether a process (and with it its own descendants) is left alone."""

STOP_SIGNALS: Mapping[str, int] = {"term": signal.SIGTERM, "kill": signal.SIGKILL}
"""The first signal of each way to stop a tree: ``term`` (SIGKILL follows
after the grace) and ``kill``."""

# How many times a tree is re-scanned while it is being frozen. Each round
# stops every process found in the previous one; only processes forked before
# their parent was stopped can appear in the next, so a tree stops growing in
# as many rounds as it is deep. The bound is for a tree deeper than any real
# one (a fork chain racing the scans), which is then signalled as far as found.
MAX_FREEZE_ROUNDS = 64


@dataclass(eq=False)  # hashed by identity: kept in a set while pending
class TreeStop:
    """A matched process and its tree, signalled, until SIGKILL is due."""

    finding: Finding
    signum: int
    members: dict[Identity, ProcInfo]
    escalation: Escalation | None = None


class TreeTarget:
    """A tree being stopped, as the kill escalation sees it.

    Its SIGKILL is ``kill(tree)``: the tree is found afresh, frozen and
    killed whole (a process tree is no process group).
    """

    def __init__(self, tree: TreeStop, kill: Callable[[TreeStop], object]) -> None:
        self._tree = tree
        self._kill = kill
        # Not a group the kernel knows: nothing to SIGKILL at the leader's exit.
        self.kill_group_on_exit = False

    def signal_group(self, signum: int) -> bool:
        # Only the escalation's SIGKILL arrives here (the SIGTERM was sent
        # with the tree frozen, before the escalation was armed).
        self._kill(self._tree)
        return True


def freeze(
    table: ProcessTable,
    send: SignalSender,
    roots: list[ProcInfo],
    spared: Spared,
    known: Iterable[ProcInfo] = (),
) -> list[ProcInfo]:
    """SIGSTOP ``roots`` and all their descendants; return them, top first.

    The caller thaws them (:func:`signal_frozen` does). ``known`` are
    earlier members of the tree that may have exited: a process group or
    session one of them led still counts as the tree's, which finds a
    process forked during the grace period whose parent then exited.

    Raises:
        OSError: A root could not be stopped (e.g. permission denied).
    """
    members: dict[Identity, ProcInfo] = {}
    everyone = [*known]
    try:
        for root in roots:
            if send(root, signal.SIGSTOP):
                members[root.identity] = root
        if not members and not everyone:
            return []
        for _ in range(MAX_FREEZE_ROUNDS):
            snapshot = table.snapshot()
            found = [
                p
                for p in tree_of(snapshot, [*everyone, *members.values()], spared)
                if p.identity not in members and not p.is_dead
            ]
            if not found:
                break
            for process in found:
                if _signal_quietly(send, process, signal.SIGSTOP):
                    members[process.identity] = process
    except BaseException:
        # Whatever went wrong (a root we may not signal, /proc unreadable),
        # nothing may be left stopped: a stopped process hangs for ever.
        _thaw(send, list(members.values()))
        raise
    return list(members.values())


def signal_frozen(
    send: SignalSender, members: list[ProcInfo], signum: int
) -> list[ProcInfo]:
    """Send ``signum`` to each of ``members`` (frozen by :func:`freeze`),
    then thaw them all; return those it was delivered to."""
    try:
        return [p for p in members if _signal_quietly(send, p, signum)]
    finally:
        _thaw(send, members)


def kill_tree(
    table: ProcessTable, send: SignalSender, tree: TreeStop, spared: Spared
) -> tuple[list[ProcInfo], list[ProcInfo]]:
    """The SIGKILL of a tree that got SIGTERM ``grace`` seconds ago.

    Pids may have been reused during the grace period: only processes that
    are still the ones signalled (same pid, same start time) are roots now,
    and their descendants are found afresh, so children forked during the
    grace period are killed too. The tree's record takes in what was found.

    Returns:
        The tree as frozen now (empty: all of it exited within the grace),
        and those of it SIGKILL was delivered to.

    Raises:
        OSError: A root could not be stopped.
    """
    alive = [p for p in tree.members.values() if still_alive(table, p)]
    members = freeze(table, send, alive, spared, known=tree.members.values())
    if not members:
        return [], []
    delivered = signal_frozen(send, members, signal.SIGKILL)
    tree.signum = signal.SIGKILL
    for process in members:
        tree.members[process.identity] = process
    return members, delivered


def _thaw(send: SignalSender, members: list[ProcInfo]) -> None:
    # Leaves first: when the parent resumes its children are already
    # running, so a parent that forwards SIGTERM finds them able to act.
    # Never skipped (see the callers' ``finally``): a process left
    # stopped would hang its users for ever.
    for process in reversed(members):
        _signal_quietly(send, process, signal.SIGCONT)


def _signal_quietly(send: SignalSender, process: ProcInfo, signum: int) -> bool:
    # A descendant that cannot be signalled (it changed user, or exited)
    # must not stop the rest of the tree from being signalled.
    try:
        return send(process, signum)
    except OSError:
        return False


def tree_of(
    snapshot: list[ProcInfo],
    members: Iterable[ProcInfo],
    spared: Callable[[ProcInfo], bool] = lambda process: False,
) -> list[ProcInfo]:
    """The descendants of ``members`` in ``snapshot``, parents before children.

    A ``spared`` process is left out with its own descendants: the tree of a
    process the rule may not touch (procwork itself, another user's setuid
    helper) is not the rule's either.

    A member counts only while it is still the same process (pid and start
    time). A process group or session a member led counts as the tree's own
    even after that member exited (its orphans were handed to init, their
    parent link is lost): its id cannot be given to another group or session
    while one member of it lives, and a leader whose pid now names another
    process is not followed.
    """
    by_pid = {p.pid: p for p in snapshot}
    roots: list[int] = []
    groups: set[int] = set()
    sessions: set[int] = set()
    for member in members:
        now = by_pid.get(member.pid)
        same = now is not None and now.identity == member.identity
        if same:
            roots.append(member.pid)
        if same or now is None:
            if member.pgid == member.pid:
                groups.add(member.pid)
            if member.session == member.pid:
                sessions.add(member.pid)
    children: dict[int, list[ProcInfo]] = {}
    for process in snapshot:
        children.setdefault(process.ppid, []).append(process)

    def under_spared(process: ProcInfo) -> bool:
        # A group or session member found by its id, not its parent link,
        # may descend from a spared process (procwork itself, run from the
        # matched login shell's session): then it is spared with it.
        seen: set[int] = set()
        pid = process.ppid
        while pid in by_pid and pid not in roots and pid not in seen:
            seen.add(pid)
            if spared(by_pid[pid]):
                return True
            pid = by_pid[pid].ppid
        return False

    found: dict[int, ProcInfo] = {}
    queue = deque(roots)
    queue.extend(
        p.pid
        for p in snapshot
        if (p.pgid in groups or p.session in sessions)
        and p.pid not in roots
        and not spared(p)
        and not under_spared(p)
    )
    for pid in list(queue):
        if pid not in roots:
            found[pid] = by_pid[pid]
    while queue:
        for child in children.get(queue.popleft(), ()):
            if child.pid not in found and child.pid not in roots and not spared(child):
                found[child.pid] = child
                queue.append(child.pid)
    return list(found.values())


def tree_words(members: list[ProcInfo]) -> str:
    """`` to it and its 2 descendants (pids 41, 42)``, or nothing for one process."""
    if len(members) <= 1:
        return ""
    pids = ", ".join(str(p.pid) for p in members[1:])
    return f" to it and its {count(len(members) - 1, 'descendant')} (pids {pids})"


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def signal_process(table: ProcessTable, process: ProcInfo, signum: int) -> bool:
    """Send a signal to exactly this process, never to a reuser of its pid.

    The process is looked up again and must still have the same start time.
    With a pidfd (Linux 5.3+) that check is made after the pidfd is opened, so
    the signal cannot reach another process; without one, a tiny window
    remains between the check and :func:`os.kill`.

    Args:
        table: Where to look the process up again.
        process: The process to signal, as it was seen.
        signum: The signal.

    Returns:
        True if sent; False if the process has exited or its pid was reused.

    Raises:
        OSError: The signal could not be sent (e.g. :class:`PermissionError`).
    """
    if hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal"):
        try:
            pidfd = os.pidfd_open(process.pid)
        except ProcessLookupError:
            return False
        except OSError as e:
            # No pidfd here (old kernel, seccomp filter): fall back to kill().
            if e.errno not in (errno.ENOSYS, errno.EPERM, errno.EINVAL):
                raise
        else:
            try:
                if not still_alive(table, process):
                    return False
                signal.pidfd_send_signal(pidfd, signum)
            except ProcessLookupError:
                return False
            finally:
                os.close(pidfd)
            return True
    if not still_alive(table, process):
        return False
    try:
        os.kill(process.pid, signum)
    except ProcessLookupError:
        return False
    return True


def still_alive(table: ProcessTable, process: ProcInfo) -> bool:
    """``process`` is still there: same pid, same start time, not a zombie."""
    current = table.get(process.pid)
    return (
        current is not None
        and current.identity == process.identity
        and not current.is_dead
    )
