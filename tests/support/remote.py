"""Helpers of the remote-run tests: a real sshd to run on, and trees to find.

The server is :mod:`tests.support.sshd`'s; :func:`real_sshd` skips (or, under
``PROCWORK_TEST_REQUIRE_TOOLS=1``, fails) the test when OpenSSH is missing.
The ``sshd`` and ``own_sshd`` fixtures (``tests/conftest.py``) start one per
module and one per test. The "remote" host is this machine, so what is left
running there is found in /proc by a unique marker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support import PY, drive_until
from tests.support.sshd import SSHD, Sshd, remote_marker_pids, start_sshd
from tests.support.tools import need_tool


def real_sshd(directory: Path, **kw: Any) -> Sshd:
    """A real OpenSSH server of the test's own (skipped without OpenSSH)."""
    need_tool(SSHD, package="openssh-server")
    need_tool("ssh-keygen", package="openssh-client")
    return start_sshd(directory, **kw)


def on(server: Sshd, **kw: Any) -> dict[str, Any]:
    """The keyword arguments that reach ``server``."""
    return {
        "host": server.host,
        "known_hosts": server.known_hosts,
        "identity": server.identity,
        **kw,
    }


def nothing_left(marker: str, seconds: float = 10.0) -> bool:
    """True once no process with ``marker`` in its argv is left (bounded)."""
    return drive_until(lambda: not remote_marker_pids(marker), seconds)


def kill_marked(marker: str) -> None:
    """SIGKILL what is left running with ``marker`` in its argv (by pid)."""
    for pid in remote_marker_pids(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def after(seconds: float) -> Callable[[], bool]:
    """A condition that holds once ``seconds`` have passed from now."""
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() > deadline


def sleeper_tree(
    marker: str, *, ignore_term: bool = False, first: str = ""
) -> list[str]:
    """An argv: a shell with a sleeping child and grandchild, all marked
    (``first``: a shell command it runs before them)."""
    trap = "trap '' TERM; " if ignore_term else ""
    ignore = "signal.signal(signal.SIGTERM, signal.SIG_IGN); " if ignore_term else ""
    body = f"import signal, time; {ignore}time.sleep(1000)  # {marker}"
    first = f"{first}; " if first else ""
    return [
        "sh",
        "-c",
        f'{trap}{first}"{PY}" -c "{body}" & "{PY}" -c "{body}"; wait  # {marker}',
    ]


def watchers_of(pid: int) -> list[int]:
    """The pids of the watchers (procwork/_remote/_wrapper.py) of command ``pid``."""
    return remote_marker_pids(f"procwork-watch\0{pid}\0")
