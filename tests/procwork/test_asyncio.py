"""procwork inside ``asyncio.run``: the same runs, awaited by asyncio's tasks.

Each test name is a sentence of the specification. Real processes on the
reactor of the running loop (``untwisted.lowlevel.loop_reactor()``); every
coroutine is bounded by ``asyncio.wait_for`` (:func:`arun`), every poll by
its own bound.
"""

from __future__ import annotations

import asyncio
import random
import signal
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from twisted.internet.defer import Deferred

import clockwork
import procwork
import untwisted
from procwork._spawn import live_processes
from tests.support import (
    PY,
    alive,
    cpu_load,
    fd_table,
    gone_within,
    group_members,
    my_children,
    opened_since,
    program_child,
    readable,
    wait,
)

# These tests are not about load: a busy test machine must not queue them
# (the scheduler of each loop starts with the global one's limits).
pytestmark = pytest.mark.usefixtures("no_load_gate")

T = TypeVar("T")

# A tree: a shell that prints the pid of its background sleep, then waits.
TREE = ["sh", "-c", "sleep 60 & echo $!; wait"]
# A child that ignores SIGTERM: only the escalation's SIGKILL ends it.
STUBBORN = ["sh", "-c", "trap '' TERM; echo ready; sleep 60"]


def arun(coro: Coroutine[Any, Any, T], seconds: float = 30.0) -> T:
    """``asyncio.run(coro)``; the test fails if it takes over ``seconds``."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, seconds)

    return asyncio.run(bounded())


async def gone(pids: list[int], seconds: float = 10.0) -> bool:
    """Poll (on the loop) until none of ``pids`` is alive; False after ``seconds``."""
    for _ in range(int(seconds / 0.01)):
        if not any(alive(pid) for pid in pids):
            return True
        await asyncio.sleep(0.01)
    return False


async def group_gone(pgid: int, seconds: float = 10.0) -> bool:
    """Poll until process group ``pgid`` has no live member; False after ``seconds``."""
    for _ in range(int(seconds / 0.01)):
        if not group_members(pgid):
            return True
        await asyncio.sleep(0.01)
    return False


async def spawned_tree() -> tuple[procwork.Process, int]:
    """A :data:`TREE` and the pid of its grandchild, once it printed it."""
    proc = procwork.spawn(TREE)
    grandchild = int(await proc.readline())
    return proc, grandchild


# -- awaiting runs -------------------------------------------------------------------


def test_await_procwork_run_inside_asyncio_run_returns_its_result() -> None:
    async def main() -> procwork.Result:
        return await procwork.run(["echo", "hello"], timeout=20)

    result = arun(main())
    assert result.ok and result.stdout == b"hello\n"


def test_runs_gathered_by_asyncio_gather_each_finish_with_their_own_output() -> None:
    async def main() -> list[procwork.Result]:
        runs = [procwork.run(["echo", str(i)]) for i in range(20)]
        return await asyncio.gather(*runs)

    results = arun(main())
    assert [r.stdout for r in results] == [f"{i}\n".encode() for i in range(20)]


def test_a_run_that_fails_to_start_raises_its_SpawnError_in_the_coroutine() -> None:
    async def main() -> None:
        await procwork.run(["procwork-no-such-command"])

    with pytest.raises(procwork.CommandNotFound, match="procwork-no-such-command"):
        arun(main())


def test_check_true_raises_ProcessFailed_in_the_coroutine() -> None:
    async def main() -> None:
        await procwork.run(["false"], check=True)

    with pytest.raises(procwork.ProcessFailed, match="exited 1"):
        arun(main())


def test_a_procwork_timeout_inside_asyncio_kills_the_tree_and_says_timed_out() -> None:
    async def main() -> procwork.Result:
        return await procwork.run(["sleep", "60"], timeout=0.2, grace=1)

    result = arun(main())
    assert result.timed_out and result.returncode == -signal.SIGTERM


def test_asyncio_wait_for_expiring_kills_the_whole_tree_before_it_raises() -> None:
    """The cancelled await returns once the leader is reaped and the rest
    of its group was SIGKILLed: nothing is left running."""

    async def main() -> tuple[procwork.Process, int]:
        proc, grandchild = await spawned_tree()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(proc.wait(), 0.1)
        assert proc.state == procwork.RunState.EXITED
        assert await gone([grandchild])
        return proc, grandchild

    proc, _ = arun(main())
    assert proc.result is not None and proc.result.returncode == -signal.SIGTERM


def test_asyncio_timeout_escalates_to_SIGKILL_for_a_child_that_ignores_SIGTERM() -> (
    None
):
    async def main() -> procwork.Process:
        proc = procwork.spawn(STUBBORN, grace=0.3)
        assert await proc.readline() == b"ready\n"
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await proc.wait()
        return proc

    proc = arun(main())
    assert proc.result is not None and proc.result.returncode == -signal.SIGKILL


def test_cancelling_the_task_awaiting_a_run_kills_its_tree() -> None:
    async def main() -> int:
        proc, grandchild = await spawned_tree()
        task = asyncio.ensure_future(proc.wait())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert proc.state == procwork.RunState.EXITED
        assert await gone([grandchild])
        return grandchild

    arun(main())


def test_cancelling_asyncio_gather_kills_every_run_it_gathered() -> None:
    """gather's own future is cancelled as soon as one of its tasks is; each
    task goes on until its tree is dead."""

    async def main() -> None:
        trees = [await spawned_tree() for _ in range(3)]
        gathered = asyncio.gather(*(proc.wait() for proc, _ in trees))
        await asyncio.sleep(0.05)
        gathered.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gathered
        assert await gone([proc.pid or 0 for proc, _ in trees])
        assert await gone([grandchild for _, grandchild in trees])
        for _ in range(1000):
            if all(proc.state == procwork.RunState.EXITED for proc, _ in trees):
                break
            await asyncio.sleep(0.01)
        assert all(proc.state == procwork.RunState.EXITED for proc, _ in trees)

    arun(main())


def test_a_run_cancelled_before_the_task_awaiting_it_took_a_step_is_killed() -> None:
    """asyncio never starts the await of a Task cancelled before its first
    step: the Deferred itself is that Task's coroutine, and hears of it."""

    async def main() -> list[procwork.Process]:
        first, _ = await spawned_tree()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(first.wait(), 0)
        assert first.state == procwork.RunState.EXITED  # its cancel waited for it
        second, _ = await spawned_tree()
        task = asyncio.ensure_future(second.wait())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert second.state == procwork.RunState.EXITED
        third, _ = await spawned_tree()
        gathered = asyncio.gather(third.wait())
        gathered.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gathered
        # gather's own future is cancelled at once; its task goes on until
        # the tree is dead.
        for _ in range(1000):
            if third.state == procwork.RunState.EXITED:
                break
            await asyncio.sleep(0.01)
        assert third.state == procwork.RunState.EXITED
        return [first, second, third]

    procs = arun(main())
    assert [p.result.returncode if p.result else None for p in procs] == [
        -signal.SIGTERM
    ] * 3


def test_a_run_cancelled_while_queued_is_withdrawn_and_frees_no_slot_it_had() -> None:
    async def main() -> procwork.Scheduler:
        sched = procwork.Scheduler(max_running=1, load=procwork.NoLoadLimit())
        first = procwork.spawn(["sleep", "60"], scheduler=sched)
        queued = procwork.spawn(["echo", "never"], scheduler=sched)
        before = queued.state
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(queued.wait(), 0.05)
        assert before == procwork.RunState.QUEUED
        assert queued.state == procwork.RunState.CANCELLED and queued.pid is None
        await first.kill()
        return sched

    sched = arun(main())
    assert (sched.running, sched.queued) == (0, 0)


# -- a spawned process ---------------------------------------------------------


def test_a_spawned_process_is_written_to_and_read_line_by_line_in_a_coroutine() -> None:
    upper = [PY, "-u", "-c", "import sys\nfor l in sys.stdin: print(l.strip().upper())"]

    async def main() -> tuple[list[bytes], procwork.Result]:
        proc = procwork.spawn(upper)
        proc.write(b"one\n")
        first = await proc.readline()
        proc.write(b"two\nthree\n")
        proc.close_stdin()
        rest = [line async for line in proc.lines()]
        return [first, *rest], await proc.wait()

    lines, result = arun(main())
    assert lines == [b"ONE\n", b"TWO\n", b"THREE\n"]
    assert result.ok


def test_output_callbacks_are_called_by_the_loop_as_lines_come() -> None:
    seen: list[tuple[bytes, bool]] = []

    async def main() -> procwork.Result:
        loop = asyncio.get_running_loop()

        def line(data: bytes) -> None:
            seen.append((data, untwisted.lowlevel.running_loop() is loop))

        return await procwork.spawn(["printf", "a\\nb\\n"], on_stdout=line).wait()

    result = arun(main())
    assert result.ok and seen == [(b"a\n", True), (b"b\n", True)]


def test_terminate_and_kill_are_awaited_for_the_result() -> None:
    async def main() -> tuple[procwork.Result, procwork.Result]:
        first = procwork.spawn(["sleep", "60"])
        second = procwork.spawn(STUBBORN)
        assert await second.readline() == b"ready\n"
        return await first.terminate(), await second.kill()

    terminated, killed = arun(main())
    assert terminated.returncode == -signal.SIGTERM
    assert killed.returncode == -signal.SIGKILL


def test_a_deferred_awaited_twice_gives_its_result_twice() -> None:
    async def main() -> tuple[procwork.Result, procwork.Result]:
        d = procwork.run(["echo", "once"])
        return await d, await d

    first, second = arun(main())
    assert first is second and first.stdout == b"once\n"


def test_as_future_of_a_run_works_under_plain_asyncio_run() -> None:
    """``Deferred.asFuture`` used to hang there: nothing drove Twisted."""

    async def main() -> procwork.Result:
        d = procwork.run(["echo", "future"])
        result: procwork.Result = await d.asFuture(asyncio.get_running_loop())
        return result

    assert arun(main()).stdout == b"future\n"


# -- asyncio's own I/O beside procwork -------------------------------------------


def test_asyncios_own_io_and_sleep_work_beside_procwork_in_one_coroutine() -> None:
    """A local server, a client of it, a sleep and a run, all at once."""

    async def handle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        line = await reader.readline()
        result = await procwork.run(["tr", "a-z", "A-Z"], input=line)
        writer.write(result.stdout)
        await writer.drain()
        writer.close()

    async def main() -> tuple[bytes, procwork.Result]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"over the wire\n")
            await writer.drain()
            reply, _, result = await asyncio.gather(
                reader.readline(),
                asyncio.sleep(0.05),
                procwork.run(["echo", "beside"]),
            )
            writer.close()
            await writer.wait_closed()
        return reply, result

    reply, result = arun(main())
    assert reply == b"OVER THE WIRE\n" and result.stdout == b"beside\n"


# -- the end of asyncio.run ------------------------------------------------------------


def test_children_still_running_when_asyncio_run_ends_are_stopped_and_reaped() -> None:
    """SIGTERM, and SIGKILL for the one that ignores it, before it returns."""
    procs: list[procwork.Process] = []

    async def main() -> int:
        proc, grandchild = await spawned_tree()
        stubborn = procwork.spawn(STUBBORN)
        assert await stubborn.readline() == b"ready\n"
        procs.extend([proc, stubborn])
        return grandchild

    grandchild = arun(main())
    tree, stubborn = procs
    assert tree.state == stubborn.state == procwork.RunState.EXITED
    assert tree.result is not None and tree.result.returncode == -signal.SIGTERM
    assert stubborn.result is not None
    assert stubborn.result.returncode == -signal.SIGKILL
    assert not live_processes()
    assert gone_within(grandchild)


def test_each_asyncio_run_has_a_fresh_reactor_and_scheduler() -> None:
    seen: list[tuple[Any, procwork.Scheduler]] = []

    async def main() -> None:
        await procwork.run(["true"])
        seen.append((untwisted.lowlevel.loop_reactor(), procwork.scheduler()))

    arun(main())
    arun(main())
    (first, first_sched), (second, second_sched) = seen
    assert first is not second and first_sched is not second_sched
    assert first.closed and second.closed
    assert first_sched.reactor is first
    assert untwisted.lowlevel.loop_reactor() is None  # no loop runs here now


def test_the_loops_scheduler_starts_with_the_limits_of_the_programs() -> None:
    programs = procwork.scheduler()
    saved = programs.max_running
    programs.max_running = 3
    try:

        async def main() -> procwork.Scheduler:
            return procwork.scheduler()

        loops = arun(main())
    finally:
        programs.max_running = saved
    assert loops is not programs
    assert loops.max_running == 3 and loops.load is programs.load


@pytest.mark.slow
def test_fifty_asyncio_runs_in_a_row_leak_no_descriptor_and_leave_no_child() -> None:
    """Counted by identity (tests.support.opened_since), after a warm-up run."""

    async def main() -> None:
        tree, _ = await spawned_tree()
        await asyncio.gather(
            procwork.run(["echo", "x"]),
            procwork.run(["sh", "-c", "echo y >&2"]),
        )
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(procwork.run(["sleep", "60"]), 0.01)
        del tree  # left running: the end of asyncio.run stops it

    arun(main())
    before = fd_table()
    children = my_children()
    for _ in range(50):
        arun(main())
    assert opened_since(before) == {}
    assert not live_processes()
    new_children = {
        pid: state for pid, state in my_children().items() if pid not in children
    }
    assert not {pid for pid, state in new_children.items() if state != "Z"}


# -- what is refused -------------------------------------------------------------


def test_untwisted_run_inside_a_loop_raises_ReentrancyError_telling_to_await() -> None:
    async def main() -> None:
        d = procwork.run(["true"])
        with pytest.raises(
            untwisted.ReentrancyError,
            match=r"^untwisted.run\(\) called inside a running asyncio event loop "
            r"would block it.*'await'",
        ):
            untwisted.run(d)
        await d

    arun(main())


def test_clockwork_wrap_inside_a_running_loop_raises_ReentrancyError_first() -> None:
    """Before its generator becomes a task: nothing of it ever runs."""
    ran: list[bool] = []

    def job() -> Any:
        ran.append(True)
        yield

    async def main() -> None:
        with pytest.raises(untwisted.ReentrancyError, match=r"^clockwork.wrap\(\) "):
            clockwork.wrap(job())

    arun(main())
    assert ran == []


def test_a_process_of_another_loops_thread_raises_ForeignThreadError() -> None:
    """Each loop's reactor belongs to the thread that runs that loop."""

    async def main() -> None:
        proc = procwork.spawn(["cat"])
        with pytest.raises(
            untwisted.ForeignThreadError,
            match=r"Process.write\(\) called from thread .*, but its reactor runs "
            r"on the asyncio event loop of thread 'MainThread'",
        ):
            await asyncio.to_thread(proc.write, b"x")
        proc.close_stdin()
        assert (await proc.wait()).ok

    arun(main())


def test_loops_in_two_threads_each_run_their_own_processes_at_once() -> None:
    results: dict[str, procwork.Result] = {}
    ready = threading.Event()

    async def in_thread() -> None:
        proc = procwork.spawn(["cat"])
        ready.set()
        proc.write(b"thread\n")
        proc.close_stdin()
        results["thread"] = await proc.wait()

    thread = threading.Thread(target=lambda: arun(in_thread()))

    async def main() -> None:
        thread.start()
        assert await asyncio.to_thread(ready.wait, 20)
        results["main"] = await procwork.run(["echo", "main"])
        await asyncio.to_thread(thread.join, 20)

    arun(main())
    assert not thread.is_alive()
    assert (
        results["main"].stdout == b"main\n" and results["thread"].stdout == b"thread\n"
    )


def test_a_scheduler_made_in_a_finished_loop_is_refused_with_the_reason() -> None:
    async def make() -> procwork.Scheduler:
        return procwork.Scheduler()

    async def use(sched: procwork.Scheduler) -> None:
        procwork.run(["true"], scheduler=sched)

    sched = arun(make())

    async def first_use() -> None:
        await procwork.run(["true"], scheduler=sched)

    arun(first_use())  # its reactor: this loop's, which then ends
    with pytest.raises(RuntimeError, match="asyncio event loop that has finished"):
        arun(use(sched))


def test_a_run_on_the_global_reactor_inside_a_loop_raises_ReentrancyError() -> None:
    """Nothing runs Twisted's global reactor while the loop runs."""
    from tests.support import global_reactor

    programs = procwork.Scheduler(global_reactor())

    async def main() -> None:
        with pytest.raises(
            untwisted.ReentrancyError,
            match=r"procwork.run\(\) called inside a running asyncio event loop, "
            r"on Twisted's global reactor",
        ):
            procwork.run(["true"], scheduler=programs)

    arun(main())
    assert programs.running == programs.queued == 0


def test_a_coroutine_twisted_runs_inside_an_asyncio_task_awaits_the_twisted_way() -> (
    None
):
    """``Deferred.fromCoroutine`` steps its coroutine inside the task's step:
    that coroutine's await is Twisted's, whose runner gets the Deferred."""

    async def inner() -> bytes:
        return (await procwork.run(["echo", "inner"])).stdout

    async def main() -> bytes:
        d: Deferred[bytes] = Deferred.fromCoroutine(inner())
        out: bytes = await d.asFuture(asyncio.get_running_loop())
        return out

    assert arun(main()) == b"inner\n"


def test_blocking_code_after_asyncio_run_still_uses_the_global_reactor() -> None:
    async def main() -> procwork.Result:
        return await procwork.run(["echo", "loop"])

    assert arun(main()).stdout == b"loop\n"
    assert wait(procwork.run(["echo", "blocking"])).stdout == b"blocking\n"
    assert procwork.scheduler().reactor is untwisted.lowlevel.default_driver().reactor


# -- signals ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "status"),
    [(signal.SIGINT, -signal.SIGINT), (signal.SIGTERM, 128 + signal.SIGTERM)],
    ids=["SIGINT", "SIGTERM"],
)
def test_ctrl_c_or_sigterm_in_an_asyncio_program_terminates_its_children(
    signum: int, status: int
) -> None:
    """asyncio.run's SIGINT handler cancels the main task; SIGTERM becomes
    SystemExit(143): either way its children are stopped before it exits."""
    with program_child("asyncio_interrupted") as child:
        assert child.stdout is not None
        assert readable(child.stdout, 30), "the program did not start its children"
        pids = [int(word) for word in child.stdout.readline().split()]
        assert len(pids) == 3 and all(alive(pid) for pid in pids)
        child.send_signal(signum)
        child.wait(timeout=30)
        assert child.returncode == status, child.stderr.read() if child.stderr else ""
        for pid in pids:
            assert gone_within(pid), f"{pid} outlived its program"


# -- never hangs, under stress ---------------------------------------------------


@pytest.mark.slow
def test_600_cancels_from_mid_spawn_on_under_load_leave_no_child_nor_descriptor() -> (
    None
):
    """Cancelled at once (the child not yet exec'd, or still queued) or at a
    random moment, by ``wait_for``, ``asyncio.timeout`` or a task's cancel:
    each tree is dead when its await returns, each slot free, and after
    ``asyncio.run`` no descriptor is left open and no child unreaped."""
    rng = random.Random(19)
    groups: list[int] = []

    async def one(sched: procwork.Scheduler) -> None:
        # A third of them at once: the cancel lands on the turn of the spawn
        # (the child not yet exec'd, or still queued), before the await began.
        delay = 0.0 if rng.randrange(3) == 0 else rng.uniform(0, 0.03)
        how = rng.randrange(3)
        proc = procwork.spawn(
            ["sh", "-c", "sleep 30 & sleep 30"], grace=0.5, scheduler=sched
        )
        if how == 0:  # asyncio.wait_for
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(proc.wait(), delay)
        elif how == 1:  # asyncio.timeout
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(delay):
                    await proc.wait()
        else:  # the waiting task cancelled
            task = asyncio.ensure_future(proc.wait())
            if delay:
                await asyncio.sleep(delay)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert proc.state in (procwork.RunState.EXITED, procwork.RunState.CANCELLED)
        if proc.pid is not None:
            groups.append(proc.pid)

    async def main() -> procwork.Scheduler:
        sched = procwork.Scheduler(max_running=8, load=procwork.NoLoadLimit())
        for _ in range(60):
            await asyncio.gather(*(one(sched) for _ in range(10)))
        for pgid in groups:
            assert await group_gone(pgid), f"group {pgid} outlived its cancel"
        return sched

    async def warm_up() -> None:
        await procwork.run(["true"])

    arun(warm_up())  # what is opened once per program (Twisted's modules)
    before, children = fd_table(), my_children()
    with cpu_load():
        sched = arun(main(), seconds=100)
        assert (sched.running, sched.queued) == (0, 0)
        assert not live_processes()
        assert opened_since(before) == {}
    assert groups, "no run ever started"
    assert not {
        pid
        for pid, state in my_children().items()
        if pid not in children and state != "Z"
    }
