"""Starting the lifeline helper, one way for the library and ``procwork timeout``.

:func:`start_helper` runs ``procwork/_lifeline_main.py`` as ``python -I -S
HELPER FD PARENT_PID`` (see that module). :mod:`procwork._lifeline` and
``procwork timeout`` (:mod:`procwork.cli._timeout`) both call it; each
handles the failure its own way (a logged error and a retry at the next
spawn; a warning on stderr). Standard library only: ``procwork timeout``
starts without Twisted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

__all__ = ["HELPER", "start_helper"]

#: The helper program's path.
HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_lifeline_main.py")


def start_helper(
    read_end: int, held_fds: Sequence[int] = ()
) -> subprocess.Popen[bytes]:
    """Start the helper of this process, reading its records from
    ``read_end`` (left open: the caller closes its copy) and holding
    ``held_fds`` too (a lock it must keep for us).

    Raises:
        OSError: It could not be started.
    """
    return subprocess.Popen(
        [sys.executable, "-I", "-S", HELPER, str(read_end), str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Only the pipe (and what it must hold for us): never our stdout or
        # stderr, or a reader of our output would wait for the helper too.
        close_fds=True,
        pass_fds=(read_end, *held_fds),
        cwd="/",
        # Its own session: Ctrl-C, Ctrl-\ and the hang-up of our terminal go
        # to our process group, not to the helper.
        start_new_session=True,
    )
