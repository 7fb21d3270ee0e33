"""The cgroup file protocol: a cgroup's files read and written, a tree killed
and removed.

A cgroup is a directory of a cgroup filesystem; everything here takes its
path. Nothing here knows where procwork puts its cgroups or why: that is
:mod:`procwork._cgroup._tree`'s. What is here is what both the program and
its lifeline helper need: the helper (``procwork/_lifeline_main.py``) runs
on the standard library alone after its program died, and loads this file
by its path, so it imports nothing but the standard library.

A process is named by its pid only for as long as it takes to open a pidfd
on it: a pid read from ``cgroup.procs`` is checked against a second reading
once the pidfd holds the process, so a pid reused by a stranger in between
is never signalled (see :func:`signal_members`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time

__all__ = [
    "EVENTS",
    "PROCS",
    "all_members",
    "freeze",
    "keyed",
    "kill",
    "members",
    "populated",
    "read_text",
    "remove",
    "signal_members",
    "tree",
    "wait_empty",
    "write_text",
]

PROCS = "cgroup.procs"
EVENTS = "cgroup.events"
KILL = "cgroup.kill"
FREEZE = "cgroup.freeze"

#: Seconds a freeze is given to take hold before the members are listed.
FREEZE_WAIT = 0.5


def read_text(cgroup: str, name: str) -> str:
    """The contents of the file ``name`` of ``cgroup``.

    Raises:
        OSError: it cannot be read (the cgroup is gone: ``ENOENT``).
    """
    with open(os.path.join(cgroup, name), encoding="ascii", errors="replace") as f:
        return f.read()


def write_text(cgroup: str, name: str, value: str) -> None:
    """Write ``value`` to the file ``name`` of ``cgroup``, in one ``write``.

    cgroup files take one value per ``write`` call, so the value is not
    buffered into pieces.

    Raises:
        OSError: the kernel refused it; ``errno`` says why.
    """
    # O_TRUNC as a shell's ">" does: cgroupfs ignores it.
    fd = os.open(os.path.join(cgroup, name), os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def keyed(text: str) -> dict[str, int]:
    """A flat keyed file (``cgroup.events``, ``memory.events``, ``cpu.stat``,
    v1's ``memory.oom_control``) as a dict: ``"populated 1"`` is
    ``{"populated": 1}``; lines that are not a key and a whole number are
    left out."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[1].lstrip("-").isdigit():
            values[words[0]] = int(words[1])
    return values


def populated(cgroup: str) -> bool:
    """Whether a process lives in ``cgroup`` or below it (``cgroup.events``);
    False once the cgroup is gone."""
    try:
        return keyed(read_text(cgroup, EVENTS)).get("populated", 0) != 0
    except FileNotFoundError:
        return False


def members(cgroup: str) -> list[int]:
    """The pids in ``cgroup`` itself (``cgroup.procs``); none once it is gone."""
    try:
        text = read_text(cgroup, PROCS)
    except FileNotFoundError:
        return []
    return [int(word) for word in text.split()]


def tree(cgroup: str) -> list[str]:
    """``cgroup`` and every cgroup below it, the deepest first (the order
    they can be removed in); empty if it does not exist."""
    if not os.path.isdir(cgroup):
        return []
    found = [
        directory
        for directory, _, _ in os.walk(cgroup, topdown=False, followlinks=False)
    ]
    return found


def all_members(cgroup: str) -> list[int]:
    """The pids in ``cgroup`` and below it."""
    pids: list[int] = []
    for directory in tree(cgroup):
        pids.extend(members(directory))
    return pids


def freeze(cgroup: str, frozen: bool) -> bool:
    """Freeze (or thaw) ``cgroup`` and what is below it; with ``frozen``,
    wait at most :data:`FREEZE_WAIT` seconds for the freeze to take hold.

    Returns:
        Whether the cgroup can be frozen at all (``cgroup.freeze``, Linux
        >= 5.2); False also when it is gone.
    """
    try:
        write_text(cgroup, FREEZE, "1" if frozen else "0")
    except OSError:
        return False
    deadline = time.monotonic() + FREEZE_WAIT
    while frozen and time.monotonic() < deadline:
        try:
            if keyed(read_text(cgroup, EVENTS)).get("frozen") == 1:
                break
        except OSError:
            break
        time.sleep(0.001)
    return True


def signal_members(cgroup: str, signum: int) -> int:
    """Send ``signum`` to every process in ``cgroup`` and below it.

    The tree is frozen first when it can be, so that no member forks a
    process that the listing would miss, and thawed after (a stopped or
    frozen process keeps a SIGTERM until it runs again). Each pid is held
    by a pidfd before it is signalled, and signalled only if a second
    listing still shows it: a pid freed and reused meanwhile belongs to a
    process born outside the cgroup, which that listing does not show.

    Returns:
        How many processes were signalled.
    """
    frozen = freeze(cgroup, True)
    try:
        held: dict[int, int] = {}
        try:
            for pid in all_members(cgroup):
                with contextlib.suppress(OSError):  # gone since it was listed
                    held[pid] = os.pidfd_open(pid)
            still = set(all_members(cgroup))
            sent = 0
            for pid, fd in held.items():
                if pid in still:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        signal.pidfd_send_signal(fd, signum)
                        sent += 1
            return sent
        finally:
            for fd in held.values():
                os.close(fd)
    finally:
        if frozen:
            freeze(cgroup, False)


def kill(cgroup: str, *, kill_file: bool = True) -> None:
    """SIGKILL every process in ``cgroup`` and below it.

    With ``cgroup.kill`` (Linux >= 5.14) the kernel does it at once, for
    processes forked meanwhile too; without it (or ``kill_file=False``)
    the tree is frozen and each member killed (:func:`signal_members`).
    Nothing happens to a cgroup that is gone.
    """
    if kill_file:
        try:
            write_text(cgroup, KILL, "1")
            return
        except FileNotFoundError:
            if not os.path.isdir(cgroup):
                return
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EPERM, errno.EACCES):
                raise
    signal_members(cgroup, signal.SIGKILL)


def remove(cgroup: str, *, leaf: bool = False) -> bool:
    """Remove ``cgroup`` and the cgroups below it that are empty, the deepest
    first (``rmdir``; a cgroup with a process in it stays). With ``leaf``,
    ``cgroup`` is expected to have none below it: one ``rmdir`` then, and the
    tree is walked only if that fails.

    Returns:
        True when ``cgroup`` is gone (or was never there).
    """
    if leaf:
        try:
            os.rmdir(cgroup)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            pass
    for directory in tree(cgroup):
        with contextlib.suppress(FileNotFoundError):
            try:
                os.rmdir(directory)
            except OSError as e:
                if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    raise
    return not os.path.isdir(cgroup)


def wait_empty(cgroup: str, timeout: float, every: float = 0.01) -> bool:
    """Block until ``cgroup`` holds no process, at most ``timeout`` seconds,
    looking every ``every`` seconds.

    For the lifeline helper, which has no reactor and is about to exit, and
    for tests. A running program waits without polling
    (:func:`procwork._cgroup._watch.when_empty`).

    Returns:
        Whether it is empty.
    """
    deadline = time.monotonic() + timeout
    while populated(cgroup):
        if time.monotonic() >= deadline:
            return False
        time.sleep(every)
    return True
