"""Programs that a fatal signal reaches.

Run by ``tests/procwork/test_fatal_signals.py``. Each scenario imports
procwork itself, after whatever it does to the signals first: what a
program does before procwork's handlers are installed is part of the test.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def blocking(marker: str, *options: str) -> None:
    """A blocking program waiting in a loop, with a child ``sh -c 'sleep
    300' MARKER``; prints the child's pid once the reactor runs. With
    ``--ignore-hup`` it was started with SIGHUP ignored, as under nohup."""
    assert set(options) <= {"--ignore-hup"}, options
    if "--ignore-hup" in options:
        import signal

        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    import clockwork
    import procwork
    import untwisted

    proc = procwork.spawn(["sh", "-c", "sleep 300", marker])
    started = False
    while True:
        untwisted.run(clockwork.sleep(0.05))
        if not started:  # the reactor runs now: untwisted's handlers are in place
            print(proc.pid, flush=True)
            started = True


def own_handler(marker: str) -> None:
    """A program with its own SIGHUP handler, waiting until it ran; then it
    terminates its child and ends."""
    import signal
    from types import FrameType

    import clockwork
    import procwork
    import untwisted

    hups = []

    def handler(signum: int, frame: FrameType | None) -> None:
        hups.append(signum)

    signal.signal(signal.SIGHUP, handler)
    proc = procwork.spawn(["sh", "-c", "sleep 300", marker])
    print(proc.pid, flush=True)
    while not hups:
        untwisted.run(clockwork.sleep(0.05))
    print("handled", flush=True)
    untwisted.run(proc.terminate(), timeout=30)


def sigterm_at_startup(phase: str) -> None:
    """SIGTERM sent to itself in the ``phase`` of the reactor's startup
    (before, during, after); prints whether the run was interrupted, then
    the result of another run."""
    import os
    import signal

    import procwork
    import untwisted
    from tests.programs._twisted import reactor

    reactor.addSystemEventTrigger(
        phase, "startup", lambda: os.kill(os.getpid(), signal.SIGTERM)
    )
    try:
        untwisted.run(procwork.run(["sleep", "0.2"]), timeout=30)
        print("not interrupted", flush=True)
    except SystemExit as e:
        print("interrupted", e.code, flush=True)
    result = untwisted.run(procwork.run(["echo", "still here"]), timeout=30)
    print(result.describe(), result.stdout.decode().strip(), flush=True)


SCENARIOS: dict[str, Callable[..., None]] = {
    "blocking": blocking,
    "own-handler": own_handler,
    "sigterm-at-startup": sigterm_at_startup,
}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]](*sys.argv[2:])
