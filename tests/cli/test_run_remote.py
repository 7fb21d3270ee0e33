"""``procwork run --host``: the command on another host, as if it ran here.

Against a real OpenSSH server on 127.0.0.1 (``tests/support/sshd.py``): the
output and exit status come through, a timeout kills the remote tree and
exits 124, and 127 and 255 say what failed.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support import PY, ROOT, unique_token
from tests.support.remote import nothing_left, sleeper_tree
from tests.support.sshd import Sshd

pytestmark = pytest.mark.usefixtures("no_load_gate")


# -- procwork run --host ------------------------------------------------------------


def procwork_run(server: Sshd, *argv: str) -> subprocess.CompletedProcess[str]:
    """``python -m procwork run --host ... ARGV`` to completion (at most 60 s)."""
    return subprocess.run(
        [
            *(PY, "-m", "procwork", "run", "--host", server.host),
            *("--known-hosts", str(server.known_hosts)),
            *("--identity", str(server.identity), *argv),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.e2e
@pytest.mark.slow
def test_procwork_run_host_passes_output_and_exit_status_through(sshd: Sshd) -> None:
    done = procwork_run(sshd, "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (done.stdout, done.stderr, done.returncode) == ("out\n", "err\n", 3)


@pytest.mark.e2e
@pytest.mark.slow
def test_procwork_run_host_exits_124_with_the_remote_tree_killed(sshd: Sshd) -> None:
    marker = unique_token()
    done = procwork_run(sshd, "--timeout", "1", "--", *sleeper_tree(marker))
    assert done.returncode == 124
    assert nothing_left(marker)


@pytest.mark.e2e
@pytest.mark.slow
def test_procwork_run_host_exits_127_for_a_command_not_found_there(sshd: Sshd) -> None:
    """As for a local command not found, and as a shell does."""
    done = procwork_run(sshd, "--", "no-such-command-xyz")
    assert done.returncode == 127
    assert done.stderr == (
        f"procwork run: cannot run 'no-such-command-xyz' on {sshd.host}: "
        "command 'no-such-command-xyz' not found there (on its PATH)\n"
    )


@pytest.mark.e2e
@pytest.mark.slow
def test_procwork_run_host_exits_255_when_the_host_cannot_be_used(
    sshd: Sshd, tmp_path: Path
) -> None:
    """As ssh does; the message says why."""
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    done = subprocess.run(
        [
            *(PY, "-m", "procwork", "run", "--host", sshd.host),
            *("--known-hosts", str(empty), "--", "true"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 255
    assert re.match(rf"procwork run: host key of {sshd.host} is unknown", done.stderr)
