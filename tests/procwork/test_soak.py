"""Soak: under churn, cancels, timeouts, threads and signals, nothing hangs,
no result is wrong and nothing is left behind.

Each scenario repeats a risky interleaving by the thousand in a child Python
(the real global reactor, real signals), with a bound on every wait and on
the child itself: a hang is a failed test, never a stuck CI. The soaks and
the report each prints are in ``tests/support/soak.py``; every bad count must
be 0. ``benchmarks/soak.py`` runs the same soaks for minutes instead of
seconds.

The parent-SIGKILL and PID-1 scenarios of issue 7 are tested beside their
fixes (the lifeline and the reaper) and join this module later.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import cpu_load
from tests.support.soak import BAD_COUNTS, signal_soak, soak_in_child

# Soaks: seconds of churn each, under CPU load.
pytestmark = pytest.mark.slow

# -- the tests -------------------------------------------------------------------


def assert_clean(report: dict[str, Any], **minimum: int) -> None:
    """No bad count in ``report``, and at least ``minimum`` of the others.

    The minimums are what each soak does however slow the machine (its
    programs loop until both their seconds and a minimum number of rounds
    are done): they show the soak did its work, not how fast.
    """
    bad = {key: report.get(key, 0) for key in BAD_COUNTS if report.get(key, 0)}
    assert not bad, f"{bad}, seed {report.get('seed')}: {report.get('examples')}"
    for key, least in minimum.items():
        assert report.get(key, 0) >= least, f"only {report.get(key)} {key}: {report}"


@pytest.mark.timeout(110)
def test_results_from_threads_timers_io_and_process_ends_always_wake_the_waiter() -> (
    None
):
    """Thousands of results from every kind of source, alone, gathered, racing
    run()'s deadline or cancelled at a random moment, all with every core
    busy: each run() returns its value, Timeout or CancelledError at once,
    and nothing is left behind."""
    with cpu_load():
        report = soak_in_child("wakeups", 8)
    assert_clean(report, rounds=200, timeouts=5, cancels=5, runs=20)


@pytest.mark.timeout(110)
def test_runs_spawned_from_output_callbacks_under_churn_get_all_their_output() -> None:
    """Thousands of runs started from on_stdout callbacks, while runs whose
    pipes a background job holds end around them, each exit 0 with their
    own output: no stale epoll event of a closed pipe reaches a new one."""
    report = soak_in_child("io-callback-spawns", 10)
    assert_clean(report, runs=4000)


@pytest.mark.timeout(110)
def test_random_cancels_and_timeouts_keep_every_result_true_and_leave_nothing() -> None:
    """Runs queued and running, with random timeouts, cancels, terminates
    and kills: every Result keeps its contract (timed out: never started or
    killed by SIGTERM/SIGKILL, else its own status and output), a run()
    that gives up returns only once the process is dead, and afterwards no
    fd, zombie, child or scheduler slot is left."""
    with cpu_load(1):
        report = soak_in_child("cancels-and-timeouts", 8)
    assert_clean(report, runs=300, timeouts=10, cancels=5)


@pytest.mark.timeout(110)
def test_threads_calling_the_api_get_ForeignThreadError_and_nothing_breaks() -> None:
    """Threads calling procwork.run/spawn directly get ForeignThreadError
    naming the call, while the same calls handed to the reactor thread with
    callFromThread (a bounded blockingCallFromThread) and the main thread's
    own runs all succeed: no bogus SpawnError, no logged error, no leaked
    slot."""
    report = soak_in_child("threads-calling", 5, timeout=40)
    assert_clean(report, runs=160)


@pytest.mark.timeout(110)
def test_thousands_of_mixed_spawns_under_load_leave_no_descriptor_behind() -> None:
    """Every kind of run, over a thousand, with both cores busy, counted from
    right after one warm-up run: nothing is left open but the reactor's
    SIGCHLD waker, which Twisted opens once, when the reactor first starts,
    and which that warm-up run, ending inside its own spawn, can leave for
    later (the "two more descriptors" seen about one run in four)."""
    with cpu_load(2):
        report = soak_in_child("mixed-spawns", 6)
    assert_clean(report, runs=1600, timeouts=200, cancels=200)


@pytest.mark.timeout(110)
def test_signals_at_random_moments_during_spawns_leave_no_child_running() -> None:
    """SIGINT, SIGTERM, SIGHUP and SIGQUIT at random moments while a program
    starts children from blocking code: it ends with the signal's status and
    none of its children survives it."""
    report = signal_soak(4)
    assert_clean(report, runs=16)
