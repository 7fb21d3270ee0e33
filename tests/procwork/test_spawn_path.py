"""The spawn path: no output lost to stale events, atomic under interrupts.

Each test name is a sentence of the specification. Real processes; every
wait bounded. Behaviour that needs real signals or a program's own
``reactor.run()`` runs in a child Python.

**Stale events.** epoll reports events by descriptor number, a whole batch at
a time, in no promised order. When handling one event of a batch closes a
pipe (a process's end drains and closes its pipes) and a later one starts a
process (a line callback), the new pipes reuse the freed numbers, and the
batch's remaining events for the *old* pipes are dispatched to the new ones.
The kernel produces such orders rarely and at its own whim (a child exiting
while the parent collects the batch puts its pidfd before its pipes); the
churn test below shuffles every batch, an order epoll is free to produce, so
that the rare interleaving happens hundreds of times a run.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

import procwork
import untwisted
from procwork._spawn import GroupProcess
from tests.support import (
    PY,
    alive,
    drive_until,
    observing,
    program_child,
    run_program,
    sigkill_leftovers,
    unique_token,
    wait,
)

# These tests are not about load: a busy test machine must not queue them.
pytestmark = pytest.mark.usefixtures("no_load_gate")


# -- helpers ---------------------------------------------------------------------


class _ShufflingPoller:
    """Wraps the epoll reactor's poller: each batch of events comes shuffled.

    It also counts, per batch, the events that reached a selectable other
    than the one registered for their number when the batch was collected:
    stale events, the thing under test.
    """

    def __init__(self, reactor: Any, seed: int) -> None:
        self._reactor = reactor
        self._poller = reactor._poller
        self._random = random.Random(seed)
        self._owners: dict[int, object] = {}
        self.counts: Counter[str] = Counter()

    def poll(self, *args: Any) -> list[tuple[int, int]]:
        events: list[tuple[int, int]] = self._poller.poll(*args)
        self._random.shuffle(events)
        selectables = self._reactor._selectables
        self._owners = {fd: selectables.get(fd) for fd, _ in events}
        self.counts["events"] += len(events)
        return events

    def saw(self, selectable: object, fd: int) -> None:
        if fd in self._owners and self._owners[fd] is not selectable:
            self.counts[f"stale events to {type(selectable).__name__}"] += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._poller, name)


@contextlib.contextmanager
def shuffled_epoll_batches(seed: int) -> Iterator[Counter[str]]:
    """The global (epoll) reactor hands out each batch of events shuffled.

    Yields the counts of events and of stale events delivered.
    """
    reactor: Any = untwisted.lowlevel.default_driver().reactor
    assert hasattr(reactor, "_poller"), f"needs the epoll reactor, not {reactor!r}"
    shuffler = _ShufflingPoller(reactor, seed)
    dispatch = reactor._doReadOrWrite

    def dispatch_and_count(selectable: Any, fd: int, event: int) -> None:
        shuffler.saw(selectable, fd)
        dispatch(selectable, fd, event)

    reactor._poller = shuffler
    reactor._doReadOrWrite = dispatch_and_count
    try:
        yield shuffler.counts
    finally:
        reactor._poller = shuffler._poller
        del reactor._doReadOrWrite


# -- lost output -------------------------------------------------------------------


@pytest.mark.slow
def test_runs_started_from_line_callbacks_while_others_end_lose_no_data() -> None:
    """Thousands of runs under churn, every epoll batch shuffled.

    64 chains run at once. Each link is ``echo go``; its ``on_stdout``
    callback starts a ``cat`` fed ``payload`` on stdin, inside the batch of
    events that also ends other runs and closes their pipes. Every ``cat``
    must give back exactly what it was fed: a stale hang-up on its stdin
    loses the input, one on its stdout loses the output.
    """
    chains, links = 64, 1500
    scheduler = procwork.Scheduler(max_running=10_000, load=procwork.NoLoadLimit())
    started = Counter[str]()
    outputs: Counter[bytes] = Counter()
    all_done: Deferred[None] = Deferred()

    def start_link() -> None:
        if started["links"] >= links:
            return
        started["links"] += 1
        link = procwork.spawn(
            ["/bin/echo", "go"], on_stdout=start_cat, scheduler=scheduler
        )
        link.wait().addCallback(lambda _: start_link())

    def start_cat(line: bytes) -> None:
        cat = procwork.spawn(["cat"], scheduler=scheduler)
        cat.write(b"payload\n")
        cat.close_stdin()
        cat.wait().addCallback(cat_ended)

    def cat_ended(result: procwork.Result) -> None:
        outputs[result.stdout] += 1
        if sum(outputs.values()) == links and not all_done.called:
            all_done.callback(None)

    with shuffled_epoll_batches(seed=7) as counts:
        for _ in range(chains):
            start_link()
        wait(all_done, 120)

    assert outputs == {b"payload\n": links}, f"{dict(outputs)}; {dict(counts)}"
    # The interleaving under test happened, many times.
    stale = sum(n for what, n in counts.items() if what.startswith("stale"))
    assert stale >= 50, dict(counts)


# -- interrupts during a spawn -------------------------------------------------------


def marked_processes(mark: str) -> list[int]:
    """The live (not zombie) processes whose environment holds ``mark``."""
    needle = f"PROCWORK_TEST_MARK={mark}".encode()
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            environ = Path(f"/proc/{name}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in environ and alive(int(name)):
            pids.append(int(name))
    return pids


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signame", "exit_status"),
    [("SIGINT", -signal.SIGINT), ("SIGTERM", 143), ("SIGHUP", 129), ("SIGQUIT", 131)],
)
def test_a_signal_landing_while_blocking_code_spawns_leaves_no_child_behind(
    signame: str, exit_status: int
) -> None:
    """Starting a child is atomic with respect to interrupts.

    Whenever the signal lands (before, during or after a fork), the child is
    either not started or on record, so it dies with the program: 75 rounds
    per signal caught in the program, then one that ends it.
    """
    mark = unique_token()
    with sigkill_leftovers() as leftovers:
        with program_child(
            "spawn_path", "spawn-until-interrupted", signame, "75", mark
        ) as parent:
            try:
                out, err = parent.communicate(timeout=60)
            finally:
                leftovers.extend(marked_processes(mark))
        assert "orphans 0" in out, f"{out}{err[-3000:]}"
        assert "interrupted 75" in out, f"{out}{err[-3000:]}"
        assert parent.returncode == exit_status, err[-3000:]
        # The program's own exit killed what it had started (SIGTERM to each
        # group: at once for `sleep`).
        deadline = time.monotonic() + 10
        while marked_processes(mark) and time.monotonic() < deadline:
            time.sleep(0.05)
        leftovers.extend(marked_processes(mark))
        assert marked_processes(mark) == []


# -- stale events, one at a time ---------------------------------------------------

# Reads one line of stdin, then prints it back.
ECHO_ONE_LINE = [PY, "-u", "-c", "import sys; print(sys.stdin.readline().strip())"]


def running_transport(proc: procwork.Process) -> GroupProcess:
    """``proc``'s transport, once it has one (at most 30 s)."""
    assert drive_until(lambda: proc._transport is not None, 30), f"{proc!r}"
    transport = proc._transport
    assert transport is not None
    return cast(GroupProcess, transport)


def stale_event(selectable: Any, event: int) -> None:
    """Dispatch ``event`` to ``selectable`` as the reactor does for a batch
    whose event was meant for a closed descriptor of the same number."""
    untwisted.tick()  # a reactor dispatches events only once it runs
    reactor: Any = untwisted.lowlevel.default_driver().reactor
    reactor._doReadOrWrite(selectable, selectable.fileno(), event)


@pytest.mark.parametrize("event", [select.EPOLLHUP, select.EPOLLERR])
def test_a_stale_hang_up_on_a_childs_stdout_loses_none_of_its_output(
    event: int,
) -> None:
    proc = procwork.spawn(ECHO_ONE_LINE)
    stale_event(running_transport(proc).pipes[1], event)
    proc.write(b"still here\n")
    proc.close_stdin()
    assert wait(proc.wait()).stdout == b"still here\n"


@pytest.mark.parametrize("event", [select.EPOLLHUP, select.EPOLLERR, select.EPOLLIN])
def test_a_stale_event_on_a_childs_stdin_loses_none_of_its_input(event: int) -> None:
    proc = procwork.spawn(ECHO_ONE_LINE)
    transport = running_transport(proc)
    stale_event(transport.pipes[0], event)
    assert 0 in transport.pipes, "stdin was closed"
    proc.write(b"still here\n")
    assert wait(proc.wait()).stdout == b"still here\n"


def test_a_stale_event_on_input_waiting_to_be_written_keeps_it_waiting() -> None:
    """Input the pipe could not take yet (1 MiB) is all delivered."""
    data = b"x" * (1 << 20)
    proc = procwork.spawn(
        [PY, "-c", "import sys, time; time.sleep(0.2); print(len(sys.stdin.read()))"]
    )
    transport = running_transport(proc)
    proc.write(data)
    proc.close_stdin()
    stale_event(transport.pipes[0], select.EPOLLERR)
    assert wait(proc.wait()).stdout == b"1048576\n"


def test_a_stale_hang_up_on_a_pidfd_keeps_it_watched() -> None:
    """The child's end is still noticed through its pidfd, not Twisted's table."""
    proc = procwork.spawn(ECHO_ONE_LINE)
    transport = running_transport(proc)
    watch = transport._watch
    assert watch is not None
    stale_event(watch, select.EPOLLHUP)
    assert transport._watch is watch
    proc.close_stdin()
    assert wait(proc.wait()).ok


# -- GroupProcess edges ----------------------------------------------------------------


class _LosesConnectionAsItExits(ProcessProtocol):
    """Calls ``transport.loseConnection()`` in ``processExited``."""

    def __init__(self) -> None:
        self.lost: list[int] = []
        self.ended: Deferred[None] = Deferred()

    def processExited(self, reason: Failure) -> None:
        assert self.transport is not None
        cast(Any, self.transport).loseConnection()  # a zope interface to mypy

    def childConnectionLost(self, childFD: int) -> None:
        self.lost.append(childFD)

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)


def test_loseConnection_called_as_the_child_exits_closes_each_pipe_once() -> None:
    """No second close (of a number that may belong to another pipe by then),
    no error logged.

    A grandchild holds the pipes open, so they are still open when the
    child's exit is seen and the protocol closes them.
    """
    errors: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None or event.get("isError"):
            errors.append(event)

    protocol = _LosesConnectionAsItExits()
    reactor = untwisted.lowlevel.default_driver().reactor
    with observing(observe):
        code = "import subprocess; subprocess.Popen(['sleep', '30'])"
        transport = GroupProcess(reactor, protocol, [PY, "-c", code])
        transport.kill_group_on_exit = True  # the grandchild goes too
        wait(protocol.ended)
        for _ in range(5):  # the protocol's closes were scheduled for later
            untwisted.tick(0.01)
    assert sorted(protocol.lost) == [0, 1, 2]
    assert errors == []


@pytest.mark.slow
def test_a_child_that_ends_after_the_reactor_stopped_still_gets_processEnded() -> None:
    result = run_program("spawn_path", "child-ends-after-stop", timeout=60)
    assert result.stdout == "stopped\nprocessEnded 3\n", result.stderr[-3000:]


@pytest.mark.slow
def test_a_child_ended_by_the_shutdown_of_the_reactor_still_gets_its_Result() -> None:
    result = run_program("spawn_path", "result-at-exit", timeout=60)
    assert result.stdout == "returncode: -15\n", result.stderr[-3000:]


class _TurnReactor:
    """Just what _DueEnds uses of a reactor: calls queued for its next turn."""

    running = True

    def __init__(self) -> None:
        self.queued: list[Any] = []
        self.triggers: list[Any] = []

    def callFromThread(self, f: Any) -> None:
        self.queued.append(f)

    def addSystemEventTrigger(self, phase: str, event: str, f: Any) -> None:
        self.triggers.append(f)

    def turn(self) -> None:
        """Run what is queued, logging an exception as Twisted does."""
        calls, self.queued = self.queued, []
        for f in calls:
            with contextlib.suppress(RuntimeError):
                f()


class _Ended:
    def __init__(self, name: str, told: list[str], fails: bool = False) -> None:
        self.name, self.told, self.fails = name, told, fails

    def _tell_end(self) -> None:
        self.told.append(self.name)
        if self.fails:
            raise RuntimeError(f"the protocol of {self.name} raised")


def test_the_ends_of_one_turn_are_told_next_turn_in_order_with_one_queued_call() -> (
    None
):
    """And a protocol that raises costs the others nothing: they are told
    on the turn after (Twisted logs the exception)."""
    from procwork._spawn import _DueEnds

    reactor, told = _TurnReactor(), list[str]()
    due = _DueEnds(reactor)
    for name, fails in (("a", False), ("b", True), ("c", False), ("d", False)):
        due.add(cast(GroupProcess, _Ended(name, told, fails)))
    assert len(reactor.queued) == 1 and told == []
    reactor.turn()
    assert told == ["a", "b"]
    assert len(reactor.queued) == 1
    reactor.turn()
    assert told == ["a", "b", "c", "d"] and reactor.queued == []


def test_ends_left_when_the_reactor_stops_are_told_at_its_shutdown() -> None:
    from procwork._spawn import _DueEnds

    reactor, told = _TurnReactor(), list[str]()
    due = _DueEnds(reactor)
    due.add(cast(GroupProcess, _Ended("a", told)))
    reactor.running = False
    [at_shutdown] = reactor.triggers
    at_shutdown()
    assert told == ["a"]
    reactor.turn()  # the call queued before, should it run: nothing twice
    assert told == ["a"]
