"""A daemon that leaves its process group, for containment by cgroup.

Run by the cgroup tests (``python -m tests.programs.escapee MODE``): it
forks a child that calls ``setsid()`` (a session and a process group of its
own) and forks again, the classic daemon's double fork; the grandchild
prints ``escapee PID`` on stdout and sleeps. Then, MODE ``stay``: the
program prints ``main PID`` and sleeps too (a service whose daemon runs
beside it); ``exit``: it exits 0 at once (a service that daemonized);
``ignore``: it ignores SIGTERM and sleeps.
"""

from __future__ import annotations

import os
import signal
import sys
import time


def say(role: str, pid: int) -> None:
    """One write, flushed: the processes share stdout."""
    os.write(1, f"{role} {pid}\n".encode())


def main(mode: str) -> None:
    # The daemon says its pid before the program goes on (in mode exit, to
    # exit): a kill of what it left then never comes before the pid is out.
    said, saying = os.pipe()
    child = os.fork()
    if child == 0:
        os.setsid()
        if os.fork() == 0:
            say("escapee", os.getpid())
            os.write(saying, b".")
            # Its own stdout closed, as a daemon's: the output pipe then ends
            # with the main program, and only the cgroup holds it.
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            time.sleep(120)
        os.read(said, 1)
        os._exit(0)
    os.waitpid(child, 0)
    if mode == "exit":
        return
    if mode == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    say("main", os.getpid())
    time.sleep(120)


if __name__ == "__main__":
    main(sys.argv[1])
