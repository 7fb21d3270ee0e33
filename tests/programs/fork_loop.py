"""A fork loop, for ``pids_max``: forks children that sleep until a fork fails.

Run by the cgroup tests (``python -m tests.programs.fork_loop LIMIT``): it
forks up to LIMIT children, each sleeping, and stops at the first fork the
kernel refuses (EAGAIN: the cgroup's pids.max reached); it prints
``forked N refused ERRNO`` (ERRNO 0: none refused) and sleeps, its children
with it, until it is stopped.
"""

from __future__ import annotations

import os
import sys
import time


def main(limit: int) -> None:
    forked = 0
    refused = 0
    while forked < limit:
        try:
            pid = os.fork()
        except OSError as e:
            refused = e.errno or -1
            break
        if pid == 0:
            time.sleep(120)
            os._exit(0)
        forked += 1
    os.write(1, f"forked {forked} refused {refused}\n".encode())
    time.sleep(120)


if __name__ == "__main__":
    main(int(sys.argv[1]))
