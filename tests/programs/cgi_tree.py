"""A CGI with descendants, for the watchdog rules to kill.

Run by ``tests/monitor/test_rules.py``. The CGI has a child in a session of
its own, which has a grandchild. Each descendant prints its pid before it
execs ``sleep``. MODE "ignore": the CGI ignores SIGTERM; "fork-on-term": its
SIGTERM handler starts another child (and prints its pid) instead of
exiting; anything else: SIGTERM ends it. TOKEN only marks the command line.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType


def say(role: str, pid: int) -> None:
    """One write: the members of the tree share the pipe."""
    os.write(1, f"{role} {pid}\n".encode())


def main(mode: str) -> None:
    child = os.fork()
    if child == 0:
        os.setsid()
        grandchild = os.fork()
        if grandchild == 0:
            say("grandchild", os.getpid())
            os.execv("/bin/sleep", ["sleep", "60"])
        say("child", os.getpid())
        os.execv("/bin/sleep", ["sleep", "60"])
    if mode == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    elif mode == "fork-on-term":

        def fork_instead(signum: int, frame: FrameType | None) -> None:
            late = os.fork()
            if late == 0:
                os.execv("/bin/sleep", ["sleep", "60"])
            say("late", late)

        signal.signal(signal.SIGTERM, fork_instead)
    time.sleep(60)


if __name__ == "__main__":
    main(sys.argv[2])
