"""untwisted's driver in programs of their own.

Run by ``tests/untwisted/test_untwisted.py``: signals, interpreter exit and
the program's own ``reactor.run()`` need a fresh program each. The scenarios
that expect a signal print ``ready`` just before they block, inside the
``try`` that expects it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator
from typing import Any

import clockwork
import untwisted


def ctrl_c_in_run() -> None:
    log = []

    def job() -> Generator[Any, Any, None]:
        try:
            # Ready once the job runs: a signal before that (while run()
            # starts the reactor, on a loaded machine) finds no job to close.
            print("ready", flush=True)
            yield clockwork.sleep(30)
        finally:
            log.append("job closed")

    def quick() -> Generator[Any, Any, str]:
        yield clockwork.sleep(0.001)
        return "quick"

    try:
        untwisted.run(job())
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
    print(log)
    print(untwisted.run(clockwork.sleep(0.01)))
    print(clockwork.wrap(quick()))


def sigterm_in_run() -> None:
    import atexit

    atexit.register(print, "atexit", flush=True)

    def job() -> Generator[Any, Any, None]:
        # Ready once the job runs, with run()'s SIGTERM handler in place: a
        # SIGTERM while Python imports or run() starts (on a loaded machine)
        # kills by default, before the try.
        print("ready", flush=True)
        yield clockwork.sleep(30)

    try:
        untwisted.run(job())
    except SystemExit as e:
        print("SystemExit", e.code, flush=True)
        raise
    finally:
        print("finally", flush=True)


def ctrl_c_in_work() -> None:
    def job() -> Generator[Any, Any, None]:
        try:
            print("ready", flush=True)  # once the worker runs it
            yield clockwork.sleep(30)
        finally:
            print("job closed", flush=True)

    w = clockwork.Worker()
    task = w.assign(job())
    try:
        w.work()
    except KeyboardInterrupt:
        print("KeyboardInterrupt", task.done, flush=True)


def busy_loop() -> None:
    def busy() -> Generator[Any, Any, None]:
        yield
        try:
            print("ready", flush=True)
            while True:
                pass
        finally:
            print("busy closed", flush=True)

    try:
        clockwork.wrap(busy())
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
    print(untwisted.run(clockwork.sleep(0.01)))


def own_reactor_run() -> None:
    """The program calls reactor.run() itself; its clockwork tasks run, and
    untwisted.run() from one of them is refused."""
    from twisted.internet import defer

    from tests.programs._twisted import reactor

    def job(n: int) -> Generator[Any, Any, int]:
        yield clockwork.sleep(0.01)
        value = yield defer.succeed(n)
        yield
        return int(value) * 2

    def main() -> Generator[Any, Any, None]:
        a, b = clockwork.spawn(job(1)), clockwork.spawn(job(2))
        print((yield clockwork.gather(a.deferred, b.deferred)))
        try:
            untwisted.run(clockwork.sleep(1))
        except untwisted.ReentrancyError as e:
            print("ReentrancyError:", e)
        reactor.stop()

    clockwork.spawn(main())
    reactor.run()
    print("after reactor.run()")


def thread_first() -> None:
    """A thread drives the reactor first; the main thread is refused."""
    import threading

    def worker() -> None:
        print(untwisted.run(clockwork.sleep(0.01)), flush=True)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(30)
    try:
        untwisted.run(clockwork.sleep(0.01))
    except untwisted.ForeignThreadError:
        print("ForeignThreadError")


SCENARIOS: dict[str, Callable[..., None]] = {
    "ctrl-c-in-run": ctrl_c_in_run,
    "sigterm-in-run": sigterm_in_run,
    "ctrl-c-in-work": ctrl_c_in_work,
    "busy-loop": busy_loop,
    "own-reactor-run": own_reactor_run,
    "thread-first": thread_first,
}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]](*sys.argv[2:])
