"""What every soak program shares: its arguments, its counts and its report.

A soak program (``tests/programs/soak_*.py``, run by
:func:`tests.support.soak.soak_in_child`) takes three arguments: how many
seconds to soak, the random seed, and the seconds after which the parent
kills it as hung. It counts what it did and what went wrong in a
:class:`Soak`, and ends with :meth:`Soak.report`: one JSON line, the leak
check included (the format is in ``tests/support/soak.py``).
"""

from __future__ import annotations

import faulthandler
import json
import random
import time
from collections.abc import Sequence

import procwork
from tests.support import my_children, opened_since

COUNTS = (
    "runs",
    "cancels",
    "timeouts",
    "signals",
    "wrong",
    "leaked_fds",
    "zombies",
    "orphans",
    "slots",
)


class Soak:
    """The arguments, the counts and the examples of what went wrong."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.seconds = float(argv[1])
        self.seed = int(argv[2])
        self.limit = float(argv[3])
        # Hung? Every thread's stack on stderr, just before the parent kills us.
        faulthandler.dump_traceback_later(max(1.0, self.limit - 3), exit=False)
        self.rng = random.Random(self.seed)
        self.counts: dict[str, int] = dict.fromkeys(COUNTS, 0)
        self.examples: list[str] = []

    def wrong(self, what: object) -> None:
        """Count a broken contract; the first 8 are kept as examples."""
        self.counts["wrong"] += 1
        if len(self.examples) < 8:
            self.examples.append(str(what)[:300])

    def soaking(self, started: float, minimum_rounds: int, rounds: int) -> bool:
        """Whether to go on: until both the seconds and the rounds are done."""
        return time.monotonic() - started < self.seconds or rounds < minimum_rounds

    def report(
        self,
        schedulers: Sequence[procwork.Scheduler],
        fds: dict[str, str],
        children: set[int],
    ) -> None:
        """Print the report: the counts, and what is left over since the
        baseline ``fds`` (a :func:`~tests.support.fd_table`) and ``children``."""
        counts, examples = self.counts, self.examples
        # By identity (a number reused for another pipe counts); the reactor's
        # SIGCHLD waker, opened once whenever the reactor first starts (perhaps
        # after the baseline: a warm-up run can end inside its spawn), does not.
        leaked = opened_since(fds)
        counts["leaked_fds"] = len(leaked)
        if leaked:
            examples.append(
                "leaked fds: "
                + " ".join(f"{fd}->{what}" for fd, what in sorted(leaked.items()))[:300]
            )
        left = {pid: s for pid, s in my_children().items() if pid not in children}
        counts["zombies"] = sum(s == "Z" for s in left.values())
        counts["orphans"] = sum(s != "Z" for s in left.values())
        if left:
            examples.append(f"children left (Z = zombie): {left}")
        for sched in schedulers:
            counts["slots"] += sched.running + sched.queued
            if sched.running + sched.queued:
                examples.append(f"scheduler not empty: {sched!r}")
        print(json.dumps(dict(counts, examples=examples)), flush=True)
