"""A signal that would kill the program stops procwork's children first.

Every child leads its own session, so the hang-up of a closed terminal never
reaches it: if SIGHUP simply killed the program, its children would run on.
Once procwork is in use, the signals whose default action ends the program
(HUP, QUIT, USR1, USR2, ALRM, like INT and TERM) become exceptions raised at
a safe point, so the program's cleanup terminates its children, and it still
exits with the status of death by that signal (128 + N). A handler the
program installed itself is left alone.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time

import pytest

from tests.support import (
    PY,
    ROOT,
    alive,
    child_env,
    gone_within,
    marked_processes,
    program_child,
    python_child,
    readable,
    unique_token,
)

# Every test signals a child Python (a fresh interpreter each).
pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "signum",
    [
        signal.SIGHUP,
        signal.SIGQUIT,
        signal.SIGUSR1,
        signal.SIGUSR2,
        signal.SIGALRM,
        signal.SIGTERM,
    ],
    ids=lambda s: signal.Signals(s).name,
)
def test_a_fatal_signal_terminates_the_children_and_exits_128_plus_n(
    signum: int,
) -> None:
    """The script exits 128+N and its child is gone, not orphaned."""
    with program_child("fatal_signals", "blocking", unique_token()) as script:
        assert script.stdout is not None
        assert readable(script.stdout, 30), "the script did not start its child"
        child_pid = int(script.stdout.readline())
        assert alive(child_pid)
        script.send_signal(signum)
        assert script.wait(timeout=30) == 128 + signum
        assert gone_within(child_pid, 10), "the child outlived the program"


def test_a_handler_the_program_installed_itself_is_kept() -> None:
    """procwork never replaces a program's own SIGHUP handler."""
    with program_child("fatal_signals", "own-handler", unique_token()) as script:
        assert script.stdout is not None
        assert readable(script.stdout, 30)
        child_pid = int(script.stdout.readline())
        script.send_signal(signal.SIGHUP)
        assert readable(script.stdout, 30)
        assert script.stdout.readline() == "handled\n"
        assert script.wait(timeout=30) == 0
        assert gone_within(child_pid, 10)


def test_under_the_programs_own_reactor_run_a_fatal_signal_stops_the_reactor() -> None:
    """With reactor.run(), SIGHUP stops the reactor like Twisted's SIGTERM does.

    Twisted's main loop would swallow an exception raised from the handler, so
    the signal would be ignored; instead the reactor stops, its shutdown
    terminates the children, and ``reactor.run()`` returns.
    """
    code = """
    import sys, procwork
    from twisted.internet import reactor
    proc = procwork.spawn(["sh", "-c", "sleep 300", sys.argv[1]])
    reactor.callWhenRunning(lambda: print(proc.pid, flush=True))
    reactor.run()
    print("reactor.run returned", proc.result.describe(), flush=True)
    """
    with python_child(code, unique_token()) as script:
        assert script.stdout is not None
        assert readable(script.stdout, 30)
        child_pid = int(script.stdout.readline())
        script.send_signal(signal.SIGHUP)
        assert readable(script.stdout, 30)
        assert script.stdout.readline().startswith("reactor.run returned")
        assert script.wait(timeout=30) == 0
        assert gone_within(child_pid, 10)


def test_a_signal_the_program_was_started_ignoring_stays_ignored() -> None:
    """Under ``nohup`` SIGHUP is ignored on purpose: procwork leaves it so.

    The script lives on after the hang-up, its child too, and the next
    fatal signal (SIGTERM) still ends both, with status 128 + 15.
    """
    with program_child(
        "fatal_signals", "blocking", unique_token(), "--ignore-hup"
    ) as script:
        assert script.stdout is not None
        assert readable(script.stdout, 30), "the script did not start its child"
        child_pid = int(script.stdout.readline())
        script.send_signal(signal.SIGHUP)
        with pytest.raises(subprocess.TimeoutExpired):
            script.wait(timeout=1)  # a bounded wait that must run out
        assert alive(child_pid)
        script.send_signal(signal.SIGTERM)
        assert script.wait(timeout=30) == 128 + signal.SIGTERM
        assert gone_within(child_pid, 10), "the child outlived the program"


# -- a signal landing while the reactor starts --------------------------------


@pytest.mark.parametrize("phase", ["before", "during", "after"])
def test_a_sigterm_while_the_reactor_starts_is_raised_and_the_reactor_runs_on(
    phase: str,
) -> None:
    """SIGTERM in any phase of the reactor's startup (Twisted installs its own
    SIGTERM handler, which stops the reactor, in the *during* phase) becomes
    the program's SystemExit(143), raised from the run that started the
    reactor; it is neither swallowed nor a stop of the reactor, and the next
    run works (it is not refused as reentrant)."""
    with program_child("fatal_signals", "sigterm-at-startup", phase) as script:
        out, err = script.communicate(timeout=60)
    assert out.splitlines() == ["interrupted 143", "exited 0 still here"], err


_STARTS_A_TREE = """
import sys, procwork, untwisted
untwisted.run(procwork.run(["sh", "-c", "sleep 300", sys.argv[1]]), timeout=60)
"""


def test_sigterm_at_any_moment_of_startup_ends_the_program_and_its_child() -> None:
    """Forty programs, each sent SIGTERM a random moment into its start (before
    procwork's handlers, while the reactor starts, while it spawns, while it
    waits): each ends by that signal (exit 143, or killed by SIGTERM when it
    came before any handler), within a bound, and leaves no child behind."""
    rng = random.Random()
    marker = unique_token()
    programs = []
    try:
        for _ in range(40):
            program = subprocess.Popen(
                [PY, "-c", _STARTS_A_TREE, marker],
                cwd=ROOT,
                env=child_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            programs.append(program)
            time.sleep(rng.uniform(0.05, 0.6))
            program.send_signal(signal.SIGTERM)
        statuses = [program.wait(timeout=30) for program in programs]
    finally:
        for program in programs:
            if program.poll() is None:
                program.kill()
                program.wait(10)
    assert set(statuses) <= {128 + signal.SIGTERM, -signal.SIGTERM}, statuses
    deadline = time.monotonic() + 10
    while marked_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marked_processes(marker) == []
