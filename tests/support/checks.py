"""Fakes for the check runner: a ``run`` that starts nothing, a thread pool
run by hand; and the race of a check's answer against its timeout, run by
the hundred under load."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

import untwisted
from procwork import Result
from procwork.monitor._checks import CheckRunner, CheckStatus
from tests.support import cpu_load, drive_until

__all__ = ["Call", "FakeRun", "HandThreads", "race_answers_against_timeouts"]


def race_answers_against_timeouts(runner: CheckRunner, name: str) -> CheckStatus:
    """Run ``runner`` under CPU load until its check ``name`` (whose answer
    comes about when its timeout fires) has run 300 times, then stop it;
    every run but maybe the stopped last one ended once, some answered and
    some timed out. Its status, for what the caller checks next (bounded:
    120 s, and 30 s to stop)."""
    status = runner.status[name]
    with cpu_load():
        runner.start()
        assert drive_until(lambda: status.runs >= 300, timeout=120)
        untwisted.run(runner.stop(), timeout=30)
    ended = status.ok + status.failed + status.timed_out
    assert status.runs - 1 <= ended <= status.runs, "at most the last was stopped"
    assert status.ok > 0 and status.timed_out > 0, "both sides of the race ran"
    return status


@dataclass
class Call:
    """One command the runner asked to run, and the Deferred it was given."""

    argv: list[str]
    timeout: float | None
    priority: str
    deferred: Deferred[Result] = field(repr=False)
    cancelled: bool = False

    def exits(
        self,
        returncode: int | None = 0,
        *,
        stdout: bytes = b"",
        stderr: bytes = b"",
        duration: float = 0.25,
        timed_out: bool = False,
    ) -> None:
        """The command ends with this Result."""
        self.deferred.callback(
            Result(
                args=tuple(self.argv),
                pid=4242,
                returncode=returncode,
                stdout=stdout,
                stderr=stderr,
                duration=duration,
                timed_out=timed_out,
                timeout=self.timeout,
            )
        )

    def fails(self, error: Exception) -> None:
        """The command could not be run at all."""
        self.deferred.errback(Failure(error))


class FakeRun:
    """A ``procwork.run`` stand-in: records each call, starts nothing."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.raises: Exception | None = None

    def __call__(
        self, argv: list[str], *, timeout: float | None, priority: str
    ) -> Deferred[Result]:
        if self.raises is not None:
            raise self.raises
        call: Call

        def cancel(d: Deferred[Result]) -> None:
            call.cancelled = True

        call = Call(argv, timeout, priority, Deferred(cancel))
        self.calls.append(call)
        return call.deferred

    def of(self, program: str) -> list[Call]:
        """The calls whose argv[0] is ``program``, oldest first."""
        return [c for c in self.calls if c.argv[0] == program]


class HandThreads:
    """An in_thread that runs nothing until the test says so."""

    def __init__(self) -> None:
        self.pending: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    def __call__(self, function: Callable[[], Any]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append((function, d))
        return d

    def finish(self) -> None:
        """The oldest call runs now; its Deferred fires with what it returned
        or raised."""
        function, d = self.pending.pop(0)
        try:
            result = function()
        except Exception:
            d.errback()
        else:
            d.callback(result)
