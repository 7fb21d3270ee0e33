"""The spawn path under interrupts and at shutdown, in programs of their own.

Run by ``tests/procwork/test_spawn_path.py``; the scenario is the first
argument. Each imports what it uses itself: whether (and when) the reactor
is installed or run is part of what it tests.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def spawn_until_interrupted(signame: str, tries_arg: str, mark: str) -> None:
    """Start ``sleep 300`` children as fast as possible from blocking code
    (the first round before the reactor ever ran), until a signal sent by a
    timer thread at a random moment interrupts it. Catch the exception, kill
    every child procwork knows of, and count the marked children still alive:
    orphans, started but never recorded. After ``tries`` such rounds print
    the counts and let one last interrupt end the program, so that its exit
    path must clean up too."""
    import os
    import random
    import signal
    import threading
    import time

    from twisted.internet.defer import DeferredList

    import procwork
    import untwisted
    from procwork._spawn import kill_all_now, live_processes

    signum = signal.Signals[signame]
    tries = int(tries_arg)
    env = {"PATH": os.environ["PATH"], "PROCWORK_TEST_MARK": mark}
    needle = ("PROCWORK_TEST_MARK=" + mark).encode()
    rng = random.Random(mark)

    def marked_alive() -> list[int]:
        pids = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    environ = f.read().split(b"\0")
                with open(f"/proc/{name}/stat") as f:
                    state = f.read().rpartition(")")[2].split()[0]
            except OSError:
                continue
            if needle in environ and state not in ("Z", "X"):
                pids.append(int(name))
        return pids

    def spawn() -> None:
        procwork.spawn(["sleep", "300"], env=env, stdin=False, priority="critical")

    def until_interrupted() -> None:
        # The first spawn of the program installs the handlers (nothing else
        # does before the reactor runs); the signal may come after it.
        spawn()
        delay = rng.uniform(0, 0.01)
        threading.Timer(delay, os.kill, (os.getpid(), signum)).start()
        while True:
            spawn()

    orphans = interrupted = 0
    for _ in range(tries):
        try:
            until_interrupted()
        except (KeyboardInterrupt, SystemExit):
            interrupted += 1
        kill_all_now()
        waits = [p.when_reaped() for p in live_processes()]
        untwisted.run(DeferredList(waits), timeout=10)
        deadline = time.monotonic() + 1
        while marked_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        for pid in marked_alive():
            orphans += 1
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    print(f"tries {tries} interrupted {interrupted} orphans {orphans}", flush=True)
    until_interrupted()


def child_ends_after_stop() -> None:
    """The program's own reactor.run() starts a child reading stdin, then
    stops the reactor. Stopping closes the child's stdin, so the child ends
    after the reactor stopped; the program then reaps it as Twisted's SIGCHLD
    handling does."""
    import os
    import time

    from twisted.internet import process
    from twisted.internet.protocol import ProcessProtocol
    from twisted.python.failure import Failure

    from procwork._spawn import GroupProcess
    from tests.programs._twisted import reactor

    class Protocol(ProcessProtocol):
        def processEnded(self, reason: Failure) -> None:
            print("processEnded", reason.value.exitCode, flush=True)  # type: ignore[union-attr]

    started = []

    def start() -> None:
        code = "import sys, time; sys.stdin.read(); time.sleep(0.2); sys.exit(3)"
        started.append(GroupProcess(reactor, Protocol(), [sys.executable, "-c", code]))
        reactor.stop()

    reactor.callWhenRunning(start)
    reactor.run()
    print("stopped", flush=True)
    pid = started[0].pgid
    assert pid is not None
    deadline = time.monotonic() + 10
    while not os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
        assert time.monotonic() < deadline, "the child did not end"
        time.sleep(0.01)
    process.reapAllProcesses()


def result_at_exit() -> None:
    """A blocking program whose child is still running at exit: untwisted's
    exit hook stops the reactor, whose shutdown terminates the child; the
    last end of the shutdown must still reach the Process."""
    import atexit

    import procwork
    import untwisted

    proc = procwork.spawn([sys.executable, "-c", "import time; time.sleep(30)"])
    untwisted.tick()

    def show() -> None:
        print("returncode:", proc.result and proc.result.returncode)

    atexit.register(show)


SCENARIOS: dict[str, Callable[..., None]] = {
    "spawn-until-interrupted": spawn_until_interrupted,
    "child-ends-after-stop": child_ends_after_stop,
    "result-at-exit": result_at_exit,
}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]](*sys.argv[2:])
