"""A fatal signal that lands while a finalizer runs.

Run by ``tests/untwisted/test_untwisted.py`` as ``python -m
tests.programs.finalizer_signal SIGNAL``: with untwisted's handlers in
place, an object's ``__del__`` sends the program ``SIGNAL`` and goes on, so
the handler runs inside the finalizer, where Python drops exceptions
("Exception ignored in ..."). The signal must end the program after it: it
prints ``lost`` if it ran on for 10 s as if never signalled.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import clockwork
import untwisted


class SignalsInItsFinalizer:
    def __init__(self, signum: int) -> None:
        self.signum = signum

    def __del__(self) -> None:
        os.kill(os.getpid(), self.signum)
        # Bytecodes after the kill: the handler runs here, in the finalizer.
        for _ in range(1000):
            pass


def main(name: str) -> None:
    untwisted.run(clockwork.sleep(0))  # untwisted's handlers are installed now
    try:
        SignalsInItsFinalizer(signal.Signals[name])  # finalized at once
        end = time.monotonic() + 10
        while time.monotonic() < end:
            pass
        print("lost", flush=True)
    except BaseException as e:
        print("raised after the finalizer:", type(e).__name__, flush=True)
        raise


if __name__ == "__main__":
    main(sys.argv[1])
