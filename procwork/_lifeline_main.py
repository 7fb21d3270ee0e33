"""The lifeline helper program: when its parent dies, kill the parent's children.

:mod:`procwork._lifeline` starts it as ``python -I -S _lifeline_main.py FD
PARENT_PID``. It applies the parent's records (:data:`RECORD`) until the
pipe ``FD`` reaches end-of-file (the parent is gone, however it died), then
SIGTERMs every group still registered and that of every process holding a
pipe announced and never confirmed, SIGKILLs what is left after
:data:`GRACE` seconds, and exits. It imports only the standard library
(it starts in a few milliseconds and never imports Twisted) and must stay
that way.

Design: ARCHITECTURE.md, "The lifeline" (why the pipes, and why signalling
the groups after the parent died is safe enough).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import struct
import sys
import time

#: One record on the pipe: an operation, then a number. b"+"/b"-": register
#: or unregister a process group; b"?"/b"!": a pipe (its inode number) made
#: for a child about to be forked / for a child now registered (or that did
#: not start). 64 bits: a pipe's inode number is not bounded by pid_max.
RECORD = struct.Struct("=cQ")

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


def read_until_parent_dies(fd: int) -> tuple[set[int], set[int]]:
    """Apply the records read from ``fd`` until EOF.

    Returns the groups still registered and the pipes still announced (a
    child forked, or about to be, and not yet registered).

    The helper does not wake up for every record: it waits for the hang-up
    alone (``poll`` with no event asked for still reports ``POLLHUP``), and
    reads what has piled up every :data:`READ_EVERY` seconds. A wake-up per
    record would cost each spawn a context switch on a busy machine; the
    pipe (enlarged by the parent) holds many seconds' worth of records.
    """
    os.set_blocking(fd, False)
    poller = select.poll()
    poller.register(fd, 0)
    groups: set[int] = set()
    pipes: set[int] = set()
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
                return groups, pipes
            pending += data
            whole = len(pending) - len(pending) % RECORD.size
            for op, number in RECORD.iter_unpack(pending[:whole]):
                if op == b"+":
                    groups.add(number)
                elif op == b"-":
                    groups.discard(number)
                elif op == b"?":
                    pipes.add(number)
                else:
                    pipes.discard(number)
            pending = pending[whole:]


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


def kill_groups(groups: set[int], grace: float = GRACE) -> None:
    """SIGTERM every group, SIGKILL the members left after ``grace`` seconds."""
    alive = {g for g in groups if signal_group(g, signal.SIGTERM)}
    for pgid in alive:
        # A stopped member would hold its SIGTERM until continued.
        signal_group(pgid, signal.SIGCONT)
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        time.sleep(POLL)
        alive = {g for g in alive if signal_group(g, 0)}
    for pgid in alive:
        signal_group(pgid, signal.SIGKILL)


def main(argv: list[str]) -> int:
    """``_lifeline_main.py FD [PARENT_PID]``: serve until the parent dies."""
    for signum in IGNORED:
        signal.signal(signum, signal.SIG_IGN)
    groups, pipes = read_until_parent_dies(int(argv[1]))
    kill_groups(groups | groups_holding(pipes))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
