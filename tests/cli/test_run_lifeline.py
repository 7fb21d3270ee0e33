"""``procwork run`` takes the command's whole tree along, however it ends.

Its lifeline is always on: SIGKILLed, interrupted, hung up or quit, the
command's tree dies, and an interrupted run dies of the signal (the shell
sees 128+N). Real processes,
every wait bounded, whatever a test started SIGKILLed by pid at its end.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.support import PY, ROOT, child_env
from tests.support.lifeline import TREE, groups_gone, whole_tree


def procwork_run(*args: str, cwd: Path = ROOT) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PY, "-m", "procwork", "run", *args],
        cwd=cwd,
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_procwork_run_sigkilled_takes_the_commands_whole_tree_along(
    marker: str,
) -> None:
    """``procwork run -- sh -c 'sleep 300 & sleep 300'`` SIGKILLed: the shell
    and both sleeps are gone within 2 s."""
    run = procwork_run("--", "sh", "-c", TREE, marker)
    try:
        pgid = whole_tree(marker)
        run.kill()
        run.wait(timeout=10)
        assert groups_gone([pgid])
    finally:
        if run.poll() is None:
            run.kill()
        run.communicate(timeout=10)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_procwork_run_interrupted_kills_the_tree_and_dies_of_the_signal(
    sig: signal.Signals, marker: str
) -> None:
    """Ctrl-C (SIGINT) and SIGTERM: the command's tree is terminated and
    ``procwork run`` dies of that signal once the tree is gone, quietly (no
    traceback), as timeout(1): a shell loop stops at Ctrl-C."""
    run = procwork_run("--", "sh", "-c", TREE, marker)
    try:
        pgid = whole_tree(marker)
        run.send_signal(sig)
        _, err = run.communicate(timeout=30)
        assert run.returncode == -sig
        assert "Traceback" not in err
        assert groups_gone([pgid])
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate(timeout=10)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGQUIT])
def test_procwork_run_hung_up_or_quit_kills_the_tree_and_dies_of_the_signal(
    sig: signal.Signals, tmp_path: Path, marker: str
) -> None:
    """SIGHUP (the terminal closed) and SIGQUIT: the command's tree is gone
    within 2 s and ``procwork run`` dies of the signal (untwisted turns these
    signals into SystemExit(128+N) so that the tree is terminated first), so
    that a shell reports 128+N."""
    run = procwork_run("--", "sh", "-c", TREE, marker, cwd=tmp_path)  # any core
    try:
        pgid = whole_tree(marker)
        run.send_signal(sig)
        run.communicate(timeout=30)
        assert run.returncode == -sig
        assert groups_gone([pgid])
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate(timeout=10)
