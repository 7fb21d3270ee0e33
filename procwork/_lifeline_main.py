"""The lifeline helper program: when its parent dies, kill the parent's children.

:mod:`procwork._lifeline` starts it as ``python -I -S _lifeline_main.py FD
PARENT_PID``. It applies the parent's records (:data:`RECORD`) until the
pipe ``FD`` reaches end-of-file (the parent is gone, however it died), then
SIGTERMs every group still registered, that of every process holding a
pipe announced and never confirmed, and every process of every registered
cgroup (``C`` records, from a parent that contains its children with
:mod:`procwork._cgroup`); SIGKILLs what is left after :data:`GRACE` seconds
(a cgroup whole, with ``cgroup.kill``: daemons that left their group die
too); removes the cgroups once empty, and exits. It imports only the
standard library (it starts in a few milliseconds and never imports
Twisted) and must stay that way; the cgroup file protocol,
``procwork/_cgroup/_fs.py``, is standard library only too, and loaded by
its path only when a cgroup was registered.

Design: ARCHITECTURE.md, "The lifeline" (why the pipes, and why signalling
the groups after the parent died is safe enough).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import select
import signal
import struct
import sys
import time
from dataclasses import dataclass, field
from types import ModuleType

#: One record on the pipe: an operation, then a number. b"+"/b"-": register
#: or unregister a process group; b"?"/b"!": a pipe (its inode number) made
#: for a child about to be forked / for a child now registered (or that did
#: not start). 64 bits: a pipe's inode number is not bounded by pid_max.
#: b"C", b"c" and b"R" carry paths: the number is the length of the bytes
#: that follow, directories separated by NUL: a cgroup made (its cgroup v2
#: directory first, then its v1 ones) / removed (its v2 directory) /
#: directories of a subtree to remove at the end.
RECORD = struct.Struct("=cQ")

#: The operations whose number is the length of a payload of paths.
WITH_PATHS = (b"C", b"c", b"R")

#: Seconds between two reads of the records piled up in the pipe.
READ_EVERY = 0.25

#: Seconds between the SIGTERM and the SIGKILL of whatever is left.
GRACE = 0.5

#: Seconds between two looks at which groups still have members.
POLL = 0.02

# Signals aimed at the parent must not end the lifeline: it lives in its own
# session (no terminal's Ctrl-C, Ctrl-\ or hang-up reaches it) and ignores
# these too, so `kill -TERM` of a process list or `pkill procwork` can't take
# it down with the parent and defeat it. Its life is bounded by the parent's
# anyway: it exits as soon as the parent is gone.
IGNORED = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGALRM,
    signal.SIGPIPE,
)


@dataclass
class Registered:
    """What the parent registered and did not take back."""

    groups: set[int] = field(default_factory=set)
    pipes: set[int] = field(default_factory=set)
    #: A cgroup's v2 directory -> all its directories.
    cgroups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    subtrees: list[str] = field(default_factory=list)

    def apply(self, op: bytes, number: int, paths: tuple[str, ...]) -> None:
        """Apply one record."""
        if op == b"+":
            self.groups.add(number)
        elif op == b"-":
            self.groups.discard(number)
        elif op == b"?":
            self.pipes.add(number)
        elif op == b"!":
            self.pipes.discard(number)
        elif op == b"C" and paths:
            self.cgroups[paths[0]] = paths
        elif op == b"c" and paths:
            self.cgroups.pop(paths[0], None)
        elif op == b"R":
            self.subtrees.extend(p for p in paths if p not in self.subtrees)

    def feed(self, pending: bytes) -> bytes:
        """Apply the whole records at the start of ``pending``; the rest."""
        while len(pending) >= RECORD.size:
            op, number = RECORD.unpack_from(pending)
            paths: tuple[str, ...] = ()
            end = RECORD.size
            if op in WITH_PATHS:
                end += number
                if len(pending) < end:
                    break
                raw = pending[RECORD.size : end]
                paths = tuple(os.fsdecode(p) for p in raw.split(b"\0") if p)
            self.apply(op, number, paths)
            pending = pending[end:]
        return pending


def read_until_parent_dies(fd: int) -> Registered:
    """Apply the records read from ``fd`` until EOF.

    Returns what is still registered: the groups, the pipes still announced
    (a child forked, or about to be, and not yet registered), the cgroups.

    The helper does not wake up for every record: it waits for the hang-up
    alone (``poll`` with no event asked for still reports ``POLLHUP``), and
    reads what has piled up every :data:`READ_EVERY` seconds. A wake-up per
    record would cost each spawn a context switch on a busy machine; the
    pipe (enlarged by the parent) holds many seconds' worth of records.
    """
    os.set_blocking(fd, False)
    poller = select.poll()
    poller.register(fd, 0)
    registered = Registered()
    pending = b""
    while True:
        poller.poll(READ_EVERY * 1000)
        while True:
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                break
            except OSError:
                data = b""  # the pipe is unusable: as good as the parent's death
            if not data:
                return registered
            pending = registered.feed(pending + data)


def groups_holding(pipes: set[int]) -> set[int]:
    """The process groups of the processes with one of ``pipes`` (inode
    numbers) as their descriptor 0, 1 or 2.

    One pass over ``/proc``: three ``readlink`` calls per process, done
    once, at the parent's death, and only if a child was being started then.
    A process we may not look at (another user's, unless we are root) is
    skipped: it cannot be one of our parent's children unless it changed
    its uid.
    """
    if not pipes:
        return set()
    wanted = {f"pipe:[{inode}]" for inode in pipes}
    found: set[int] = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        for fd in (0, 1, 2):
            try:
                held = os.readlink(f"/proc/{name}/fd/{fd}")
            except OSError:
                continue
            if held in wanted:
                with contextlib.suppress(ProcessLookupError):  # gone since
                    found.add(os.getpgid(int(name)))
                break
    found.discard(os.getpgid(0))  # never our own (we lead it: cannot happen)
    return found


def signal_group(pgid: int, signum: int) -> bool:
    """``killpg``; False once the group has no member left."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        # A member changed its uid (a setuid helper): nothing more we can do
        # for it, but the group is not empty.
        return True
    return True


def cgroup_files() -> ModuleType:
    """procwork's cgroup file protocol (``_cgroup/_fs.py``), loaded by path:
    this program runs without procwork on its path."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_cgroup", "_fs.py")
    spec = importlib.util.spec_from_file_location("procwork_cgroup_fs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def kill_groups(
    groups: set[int], grace: float = GRACE, cgroups: tuple[str, ...] = ()
) -> None:
    """SIGTERM every group and every process of ``cgroups``; SIGKILL the
    members left after ``grace`` seconds (the cgroups whole)."""
    fs = cgroup_files() if cgroups else None
    alive = {g for g in groups if signal_group(g, signal.SIGTERM)}
    for pgid in alive:
        # A stopped member would hold its SIGTERM until continued.
        signal_group(pgid, signal.SIGCONT)
    busy = [
        c for c in cgroups if fs is not None and fs.signal_members(c, signal.SIGTERM)
    ]
    deadline = time.monotonic() + grace
    while (alive or busy) and time.monotonic() < deadline:
        time.sleep(POLL)
        alive = {g for g in alive if signal_group(g, 0)}
        busy = [c for c in busy if fs is not None and fs.populated(c)]
    for pgid in alive:
        signal_group(pgid, signal.SIGKILL)
    for cgroup in busy:
        with contextlib.suppress(OSError):
            fs.kill(cgroup)  # type: ignore[union-attr]


def remove_cgroups(registered: Registered, wait: float = 1.0) -> None:
    """Remove the registered cgroups once empty (waiting ``wait`` seconds at
    most for each, after the kill), then the subtrees, if empty."""
    if not registered.cgroups and not registered.subtrees:
        return
    fs = cgroup_files()
    for directories in registered.cgroups.values():
        fs.wait_empty(directories[0], wait)
        for directory in directories:
            with contextlib.suppress(OSError):
                fs.remove(directory)
    for directory in registered.subtrees:
        with contextlib.suppress(OSError):
            fs.remove(directory)


def main(argv: list[str]) -> int:
    """``_lifeline_main.py FD [PARENT_PID]``: serve until the parent dies."""
    for signum in IGNORED:
        signal.signal(signum, signal.SIG_IGN)
    registered = read_until_parent_dies(int(argv[1]))
    kill_groups(
        registered.groups | groups_holding(registered.pipes),
        cgroups=tuple(registered.cgroups),
    )
    remove_cgroups(registered)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
