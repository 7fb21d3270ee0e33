"""The soaks: risky interleavings repeated by the thousand in a child Python.

Each soak runs in a fresh Python (the real global reactor, real signals),
with a bound on every wait and on the child itself: a hang is a failed
report, never a stuck run. The child counts what it did and what went wrong
and prints one JSON line::

    {"runs": ..., "cancels": ..., "timeouts": ..., "signals": ...,
     "wrong": ..., "leaked_fds": ..., "zombies": ..., "orphans": ...,
     "slots": ..., "examples": [...]}

``wrong`` is a result that breaks the contract (an empty stdout from a
command that printed, a wrong exit status, a wake-up that came seconds
late, an exception of the wrong kind), ``leaked_fds`` the descriptors open
at the end that were not at the start (compared by what they are, so a
number reused for another pipe counts; the reactor's SIGCHLD waker, opened
once when the reactor first starts, does not), ``zombies`` and ``orphans`` the
unreaped and still running children left over, ``slots`` the scheduler
slots still taken or runs still queued once every run has ended. Every bad
count (:data:`BAD_COUNTS`) must be 0.

``tests/procwork/test_soak.py`` runs them for seconds, ``benchmarks/soak.py``
for minutes (:data:`SOAKS`, :func:`soak_in_child`, :func:`signal_soak`).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

from tests.support import (
    marked_processes,
    program,
    program_child,
    readable,
    run_bounded,
)

BAD_COUNTS = ("wrong", "leaked_fds", "zombies", "orphans", "slots")
"""The counts of a soak report that must all be 0."""


SOAKS: dict[str, str] = {
    "wakeups": "soak_wakeups",
    "io-callback-spawns": "soak_io_callback_spawns",
    "cancels-and-timeouts": "soak_cancels_and_timeouts",
    "threads-calling": "soak_threads_calling",
    "mixed-spawns": "soak_mixed_spawns",
}
"""The soaks that run in one child Python: name -> its program in tests/programs."""


def soak_in_child(
    name: str, seconds: float, *, seed: int | None = None, timeout: float | None = None
) -> dict[str, Any]:
    """Run the soak ``name`` of :data:`SOAKS` for about ``seconds``; its report.

    The child is SIGKILLed (and a failed report returned, with ``hung``
    set) if it has not ended ``timeout`` seconds after it started (default
    ``seconds + 60``): its own waits are bounded, so that is a hang.
    """
    if seed is None:
        seed = random.randrange(1 << 30)
    limit = seconds + 60 if timeout is None else timeout
    status, out, err = run_bounded(
        program(SOAKS[name], str(seconds), str(seed), str(limit)), limit
    )
    if status is None:
        return {
            "hung": 1,
            "wrong": 1,
            "seed": seed,
            "examples": [
                f"{name} did not end within {limit:g} s",
                "its threads then: " + err[err.find("Timeout (") :][:3000],
                "the end of its stderr: " + err[-1500:],
            ],
        }
    lines = out.strip().splitlines()
    try:
        report: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        return {
            "wrong": 1,
            "seed": seed,
            "examples": [f"{name} exited {status}", (out + err)[-3000:]],
        }
    report["seed"] = seed
    if status != 0:
        report["wrong"] = report.get("wrong", 0) + 1
        report["examples"].append(f"exited {status}: {err[-2000:]}")
    return report


SOAK_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def _expected_status(signum: int) -> set[int]:
    if signum == signal.SIGINT:
        # KeyboardInterrupt: Python ends by re-raising SIGINT (-2), or exits
        # 1 when it is raised while the interpreter is shutting down.
        return {-signal.SIGINT, 1, 128 + signal.SIGINT}
    return {128 + signum}


def signal_soak(rounds: int, *, seed: int | None = None) -> dict[str, Any]:
    """Signal ``rounds`` x 4 spawning programs at random moments; the report.

    Each round starts one program per signal of :data:`SOAK_SIGNALS` (INT,
    TERM, HUP, QUIT) running ``tests/programs/spawn_loop.py``, sends each its signal a
    random 0-300 ms after it is ready, and waits (30 s at most) for it to
    end. A marked child still alive 3 s after the round's programs ended is
    an orphan (it is SIGKILLed by pid and counted).
    """
    if seed is None:
        seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    counts: dict[str, Any] = dict.fromkeys(
        ("runs", "signals", "wrong", "orphans", "leaked_fds", "zombies", "slots"), 0
    )
    examples: list[str] = []
    for _ in range(rounds):
        with contextlib.ExitStack() as stack:
            programs = []
            for signum in SOAK_SIGNALS:
                marker = f"600.{rng.randrange(10**15):015d}"
                child = stack.enter_context(_spawn_loop(marker))
                programs.append((signum, marker, child))
            for _signum, _marker, child in programs:
                assert child.stdout is not None
                if not (readable(child.stdout, 30) and child.stdout.readline()):
                    counts["wrong"] += 1
                    examples.append(f"the spawn loop never got ready: {child.pid}")
            time.sleep(rng.uniform(0, 0.3))
            for signum, _marker, child in programs:
                child.send_signal(signum)
                counts["signals"] += 1
                time.sleep(rng.uniform(0, 0.05))
            # where each program was when its signal became an exception
            raised_at: dict[str, str] = {}
            for signum, marker, child in programs:
                try:
                    _, err = child.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    counts["wrong"] += 1
                    examples.append(f"{signum!r}: the program hung after the signal")
                    continue
                counts["runs"] += 1
                frames = [line.strip() for line in err.splitlines() if "File " in line]
                raised_at[marker] = " < ".join(reversed(frames[-3:]))
                if child.returncode not in _expected_status(signum):
                    counts["wrong"] += 1
                    examples.append(
                        f"{signum!r}: exit status {child.returncode}: {err[-500:]}"
                    )
            deadline = time.monotonic() + 3
            for signum, marker, _child in programs:
                left = _left_after(marker, deadline - time.monotonic())
                if left:
                    counts["orphans"] += len(left)
                    examples.append(
                        f"{signum!r}: children survived: {left}; the signal was "
                        f"raised at {raised_at.get(marker, '?')}"
                    )
    counts["examples"] = examples
    counts["seed"] = seed
    return counts


@contextlib.contextmanager
def _spawn_loop(marker: str) -> Iterator[subprocess.Popen[str]]:
    try:
        with program_child("spawn_loop", marker) as child:
            yield child
    finally:
        for pid in marked_processes(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _left_after(marker: str, seconds: float) -> list[int]:
    """Marked processes still alive after ``seconds`` (SIGKILLed then)."""
    deadline = time.monotonic() + seconds
    while (left := marked_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left
