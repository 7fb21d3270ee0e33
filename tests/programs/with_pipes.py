"""Run a command with two of our descriptors as its descriptors 3 and 4.

``python -m tests.programs.with_pipes READ WRITE COMMAND ARGS...``: what
chromium's ``--remote-debugging-pipe`` reads its DevTools commands from (3)
and writes its answers to (4). subprocess can pass descriptors but not
renumber them, and a ``preexec_fn`` is unsafe in a test process with
threads; so this program does it, then execs the command.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    read, write = int(sys.argv[1]), int(sys.argv[2])
    # Through fresh numbers first: READ may be 4, or WRITE 3.
    read_copy, write_copy = os.dup(read), os.dup(write)
    os.dup2(read_copy, 3)
    os.dup2(write_copy, 4)
    for fd in {read, write, read_copy, write_copy} - {3, 4}:
        os.close(fd)
    # A copy may have been made at 3 or 4 already (the lowest free numbers),
    # when dup2 does nothing: as made by dup, it would close at exec.
    os.set_inheritable(3, True)
    os.set_inheritable(4, True)
    os.execvp(sys.argv[3], sys.argv[3:])


if __name__ == "__main__":
    main()
