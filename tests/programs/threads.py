"""Which thread may call procwork: ``python -m tests.programs.threads SCENARIO``.

Run by ``tests/procwork/test_threads.py``, each scenario in a fresh program
(the owner of the reactor is decided once per program). Each imports what
it uses itself, in the order the scenario needs, and prints what the test
compares.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def own_reactor_thread() -> None:
    """The program runs the reactor itself, in a thread of its own: calls
    from the main thread are refused, and handing them over works."""
    import threading

    from twisted.internet import threads

    import procwork
    import untwisted
    from tests.programs._twisted import reactor

    up = threading.Event()
    reactor.callWhenRunning(up.set)
    thread = threading.Thread(
        target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True
    )
    thread.start()
    assert up.wait(30)
    calls: list[Callable[[], object]] = [
        lambda: procwork.run(["echo", "no"]),
        lambda: procwork.spawn(["echo", "no"]),
        lambda: procwork.scheduler().set_max_running(4),
    ]
    for call in calls:
        try:
            call()
        except untwisted.ForeignThreadError as e:
            print("refused:", e)
    # The way to do it: hand the call to the reactor's thread.
    # mypy cannot solve blockingCallFromThread's Callable[..., T | Deferred[T]].
    run: Any = procwork.run
    result = threads.blockingCallFromThread(reactor, run, ["echo", "yes"])
    print("handed over:", result.stdout.decode().strip())
    print("started:", procwork.scheduler().started)
    reactor.callFromThread(reactor.stop)
    thread.join(30)
    print("stopped:", not thread.is_alive())


def first_caller_ended() -> None:
    """A thread starts a run and ends; the main thread finishes it, and a
    later thread is refused."""
    import threading

    import procwork
    import untwisted

    box: list[Any] = []

    def start() -> None:
        box.append(procwork.run(["echo", "hi"]))

    thread = threading.Thread(target=start)
    thread.start()
    thread.join(30)
    print(untwisted.run(box[0], timeout=30).stdout.decode().strip())
    errors = []

    def late() -> None:
        try:
            procwork.run(["true"])
        except untwisted.ForeignThreadError:
            errors.append("refused")

    thread = threading.Thread(target=late)
    thread.start()
    thread.join(30)
    print(errors)


def first_caller_lives() -> None:
    """While the first caller lives, even the main thread is refused; once it
    has ended (before anything started the reactor), the main thread takes
    over."""
    import threading

    from twisted.internet import defer

    import procwork
    import untwisted

    first, finish = threading.Event(), threading.Event()

    def owner() -> None:
        procwork.scheduler().set_max_running(8)
        first.set()
        finish.wait(30)

    thread = threading.Thread(target=owner, name="owner")
    thread.start()
    assert first.wait(30)
    calls: list[Callable[[], object]] = [
        lambda: procwork.run(["true"]),
        lambda: untwisted.run(defer.succeed(1)),
        lambda: untwisted.tick(),
    ]
    for call in calls:
        try:
            call()
        except untwisted.ForeignThreadError as e:
            print("refused:", e)
    finish.set()
    thread.join(30)
    # Ended before anything started the reactor: the main thread takes over.
    print(untwisted.run(procwork.run(["echo", "mine"]), timeout=30).stdout)


def started_by_an_ended_thread() -> None:
    """A thread starts the reactor and ends: the next caller is told so."""
    import threading

    import untwisted

    thread = threading.Thread(target=untwisted.tick)
    thread.start()
    thread.join(30)
    try:
        untwisted.tick()
    except untwisted.ForeignThreadError as e:
        print(e)


def own_thread_after_a_first_call() -> None:
    """The main thread calls first, then runs the reactor in a thread of its
    own: that thread is allowed, the main thread refused."""
    import threading

    from twisted.internet import threads

    import procwork
    import untwisted
    from tests.programs._twisted import reactor

    procwork.scheduler().set_max_running(8)  # the main thread calls first
    up = threading.Event()
    reactor.callWhenRunning(up.set)
    thread = threading.Thread(
        target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True
    )
    thread.start()
    assert up.wait(30)
    try:
        procwork.run(["echo", "no"])
    except untwisted.ForeignThreadError as e:
        print("refused:", str(e).split(",")[0])
    # mypy cannot solve blockingCallFromThread's Callable[..., T | Deferred[T]].
    run: Any = procwork.run
    result = threads.blockingCallFromThread(reactor, run, ["echo", "yes"])
    print("handed over:", result.stdout.decode().strip())
    reactor.callFromThread(reactor.stop)
    thread.join(30)
    print("stopped:", not thread.is_alive())


def hammered(kind: str) -> None:
    """The main thread's first call (``kind``) needs no reactor turn; a thread
    then hammers the API at once while the main thread runs processes.
    Prints the counts as JSON."""
    import json
    import threading
    import time
    from collections import Counter
    from collections.abc import Generator

    from twisted.internet import defer

    import clockwork
    import procwork
    import untwisted

    def returns_at_once() -> Generator[object, object, int]:
        return 1
        yield

    # The main thread's first call needs no reactor turn: nothing is started.
    first: Callable[[], object] = {
        "untwisted.run": lambda: untwisted.run(defer.succeed(1)),
        "untwisted.add": lambda: untwisted.add(defer.succeed(1)),
        "clockwork.wrap": lambda: clockwork.wrap(returns_at_once()),
        "Scheduler.set_max_running": lambda: procwork.scheduler().set_max_running(8),
    }[kind]
    first()
    scheduler = procwork.scheduler()
    scheduler.load = procwork.NoLoadLimit()
    outcomes: Counter[str] = Counter()
    surprises: list[str] = []
    running, done = threading.Event(), threading.Event()
    calls: list[Callable[[], object]] = [
        lambda: procwork.run(["true"]),
        lambda: procwork.spawn(["true"], priority="critical"),
        lambda: procwork.run(["true"], input=b"x"),
        lambda: scheduler.set_max_running(8),
        lambda: untwisted.add(defer.Deferred()),
        lambda: untwisted.run(defer.succeed(1)),
        lambda: untwisted.tick(),
    ]

    def hammer() -> None:
        running.set()
        i = 0
        while not done.is_set():
            try:
                calls[i % len(calls)]()
            except untwisted.ForeignThreadError:
                outcomes["refused"] += 1
            except BaseException as e:
                surprises.append(repr(e))
            else:
                outcomes["let in"] += 1
            i += 1

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()  # at once: the window was right after the first call
    assert running.wait(30)
    runs, wrong = 0, 0
    deadline = time.monotonic() + 20
    while (runs < 50 or outcomes["refused"] < 1000) and time.monotonic() < deadline:
        result = untwisted.run(procwork.run(["echo", str(runs)]), timeout=10)
        wrong += result.stdout != f"{runs}\n".encode()
        runs += 1
    done.set()
    thread.join(10)
    untwisted.run(procwork.run(["true"]), timeout=10)  # late errors get logged
    counts = {
        "refused": outcomes["refused"],
        "let in": outcomes["let in"],
        "surprises": surprises[:3],
        "runs": runs,
        "wrong": wrong,
        "started": scheduler.started,
        "running": scheduler.running,
        "queued": scheduler.queued,
        "joined": not thread.is_alive(),
    }
    print(json.dumps(counts))


SCENARIOS: dict[str, Callable[..., None]] = {
    "own-reactor-thread": own_reactor_thread,
    "first-caller-ended": first_caller_ended,
    "first-caller-lives": first_caller_lives,
    "started-by-an-ended-thread": started_by_an_ended_thread,
    "own-thread-after-a-first-call": own_thread_after_a_first_call,
    "hammered": hammered,
}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]](*sys.argv[2:])
