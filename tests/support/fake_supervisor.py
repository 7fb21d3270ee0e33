"""A supervisor's processes that exist only in the test, on a ``Clock``.

Restart, backoff and kill timing run on ``twisted.internet.task.Clock`` with
these fake processes (as procmon's own tests do), so they are exact and
instant. :class:`FakeWorld` is the ``process_factory`` a
:class:`~procwork.supervisor.Supervisor` is given.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import Clock
from twisted.logger import formatEvent
from twisted.python.failure import Failure

from procwork.supervisor import ServiceSpec, ServiceState, Supervisor


class FakeProcess:
    """A service's child that only exists in the test.

    Like procmon's ``DummyProcess``: a signal it does not ignore ends it, a
    second later for a catchable one, at once (on the next clock turn) for
    SIGKILL. The test can also make it exit or print.
    """

    TERM_DELAY = 1.0

    def __init__(
        self,
        clock: Clock,
        protocol: ProcessProtocol,
        args: Sequence[str],
        pid: int,
        env: Mapping[str, str] | None,
        cwd: str | None,
        nice: int,
        stdin: bool,
        ignores: frozenset[int],
    ) -> None:
        self.clock = clock
        self.protocol = protocol
        self.args = tuple(args)
        self.pid: int | None = pid
        self.pgid = pid
        self.env, self.cwd, self.nice, self.stdin = env, cwd, nice, stdin
        self.ignores = ignores
        self.kill_group_on_exit = False
        self.group_signals: list[int] = []
        protocol.makeConnection(self)

    def signal_group(self, signum: int) -> bool:
        if self.pid is None:
            return False
        self.group_signals.append(signum)
        if signum not in self.ignores:
            delay = 0.0 if signum == signal.SIGKILL else self.TERM_DELAY
            self.clock.callLater(delay, self._killed, signum)
        return True

    def _killed(self, signum: int) -> None:
        if self.pid is not None:
            self.exit(signal=signum)

    def say(self, data: bytes, fd: int = 1) -> None:
        self.protocol.childDataReceived(fd, data)

    def exit(self, code: int = 0, signal: int | None = None) -> None:
        """The child ends: exits with ``code``, or is killed by ``signal``."""
        assert self.pid is not None, "this fake process has ended already"
        self.pid = None
        reason: Exception
        if signal is None and code == 0:
            reason = ProcessDone(0)
        else:
            reason = ProcessTerminated(None if signal else code, signal)
        self.protocol.processEnded(Failure(reason))


class FakeWorld:
    """The supervisor's ``process_factory``: makes and remembers FakeProcesses.

    Every service in these tests runs ``["svc", <name>]``.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.processes: list[FakeProcess] = []
        self.next_pid = 1000
        self.spawn_error: OSError | None = None
        self.ignoring: dict[str, frozenset[int]] = {}
        self.credentials: list[dict[str, Any]] = []  # keywords of each start

    def __call__(
        self,
        reactor: Any,
        protocol: ProcessProtocol,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None,
        cwd: str | None,
        nice: int,
        stdin: bool,
        **credentials: Any,
    ) -> FakeProcess:
        assert reactor is self.clock
        self.credentials.append(credentials)
        if self.spawn_error is not None:
            raise self.spawn_error
        self.next_pid += 1
        ignores = self.ignoring.get(args[-1], frozenset())
        proc = FakeProcess(
            self.clock, protocol, args, self.next_pid, env, cwd, nice, stdin, ignores
        )
        self.processes.append(proc)
        return proc

    def of(self, name: str) -> list[FakeProcess]:
        """The processes started for service ``name``, oldest first."""
        return [p for p in self.processes if p.args[-1] == name]

    def current(self, name: str) -> FakeProcess:
        proc = self.of(name)[-1]
        assert proc.pid is not None, f"{name} is not running"
        return proc


def spec(name: str, **changes: Any) -> ServiceSpec:
    return ServiceSpec(name, ["svc", name], **changes)


def lines(events: list[dict[str, Any]]) -> list[str]:
    """The log ``events`` as text lines."""
    return [formatEvent(e) for e in events]


def state(sup: Supervisor, name: str) -> ServiceState:
    """The state of ``sup``'s service ``name``."""
    return sup.status()[name].state
