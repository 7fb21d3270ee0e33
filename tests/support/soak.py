"""The soaks: risky interleavings repeated by the thousand in a child Python.

Each soak runs in a fresh Python (the real global reactor, real signals),
with a bound on every wait and on the child itself: a hang is a failed
report, never a stuck run. The child counts what it did and what went wrong
and prints one JSON line::

    {"runs": ..., "cancels": ..., "timeouts": ..., "signals": ...,
     "wrong": ..., "leaked_fds": ..., "zombies": ..., "orphans": ...,
     "slots": ..., "examples": [...]}

``wrong`` is a result that breaks the contract (an empty stdout from a
command that printed, a wrong exit status, a wake-up that came seconds
late, an exception of the wrong kind), ``leaked_fds`` the descriptors open
at the end that were not at the start (compared by what they are, so a
number reused for another pipe counts; the reactor's SIGCHLD waker, opened
once when the reactor first starts, does not), ``zombies`` and ``orphans`` the
unreaped and still running children left over, ``slots`` the scheduler
slots still taken or runs still queued once every run has ended. Every bad
count (:data:`BAD_COUNTS`) must be 0.

``tests/procwork/test_soak.py`` runs them for seconds, ``benchmarks/soak.py``
for minutes (:data:`SOAKS`, :func:`soak_in_child`, :func:`signal_soak`).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from typing import Any

from tests.support import PY, marked_processes, python_child, readable, run_bounded

BAD_COUNTS = ("wrong", "leaked_fds", "zombies", "orphans", "slots")
"""The counts of a soak report that must all be 0."""


# Every program starts with this: the arguments (how many seconds to soak,
# the random seed, the seconds after which the parent kills it as hung), the
# counters, and the leak check that ends the report.
_PRELUDE = """
import faulthandler, json, os, random, sys, time
import procwork, untwisted
from twisted.internet import reactor
from tests.support import fd_table, my_children, opened_since

SECONDS, SEED, LIMIT = float(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
# Hung? Every thread's stack on stderr, just before the parent kills us.
faulthandler.dump_traceback_later(max(1.0, LIMIT - 3), exit=False)
rng = random.Random(SEED)
counts = dict.fromkeys(
    ("runs", "cancels", "timeouts", "signals", "wrong",
     "leaked_fds", "zombies", "orphans", "slots"), 0)
examples = []

def wrong(what):
    counts["wrong"] += 1
    if len(examples) < 8:
        examples.append(str(what)[:300])

def soaking(started, minimum_rounds, rounds):
    return time.monotonic() - started < SECONDS or rounds < minimum_rounds

def report(schedulers, fds, children):
    # By identity (a number reused for another pipe counts); the reactor's
    # SIGCHLD waker, opened once whenever the reactor first starts (perhaps
    # after the baseline: a warm-up run can end inside its spawn), does not.
    leaked = opened_since(fds)
    counts["leaked_fds"] = len(leaked)
    if leaked:
        examples.append("leaked fds: " + " ".join(
            f"{fd}->{what}" for fd, what in sorted(leaked.items()))[:300])
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
"""


WAKEUPS = (
    _PRELUDE
    + """
# Results delivered by a thread pool, a plain thread's callFromThread, a
# timer, a pipe becoming readable and a process ending: one at a time, many
# at once, racing run()'s deadline, or cancelled at a random moment.
import threading
from twisted.internet import task, threads
from twisted.internet.defer import CancelledError, Deferred, gatherResults

sched = procwork.Scheduler(reactor, max_running=32, load=procwork.NoLoadLimit())
untwisted.run(procwork.run(["true"], scheduler=sched), timeout=30)
untwisted.run(threads.deferToThread(int), timeout=30)  # the pool's threads exist
fds, children = fd_table(), set(my_children())
helpers = []

def in_thread(delay, f, *args):
    def go():
        time.sleep(delay)
        f(*args)
    t = threading.Thread(target=go)
    t.start()
    helpers.append(t)

def from_pool(value, delay):
    return threads.deferToThread(lambda: (time.sleep(delay), value)[1])

def from_thread(value, delay):
    d = Deferred()
    in_thread(delay, reactor.callFromThread, d.callback, value)
    return d

def from_timer(value, delay):
    return task.deferLater(reactor, delay, lambda: value)

class PipeReader:
    # A pipe whose write end a thread writes to: the result is I/O.
    def __init__(self, value, delay):
        self.value = value
        self.r, w = os.pipe()
        self.d = Deferred(lambda d: self.close())
        reactor.addReader(self)
        in_thread(delay, self.write, w)

    def write(self, w):
        try:
            os.write(w, b"x")
        except BrokenPipeError:  # cancelled: nobody reads any more
            pass
        os.close(w)

    def fileno(self):
        return self.r

    def doRead(self):
        self.close()
        self.d.callback(self.value)

    def close(self):
        if self.r >= 0:
            reactor.removeReader(self)
            os.close(self.r)
            self.r = -1

    def connectionLost(self, reason):
        self.close()

    def logPrefix(self):
        return "PipeReader"

def from_io(value, delay):
    return PipeReader(value, delay).d

def from_process(value, delay):
    counts["runs"] += 1
    argv = ["sleep", f"{delay:.4f}"] if delay else ["true"]
    def check(result):
        if result.returncode != 0:
            wrong(f"process source: {result!r}")
        return value
    return procwork.run(argv, scheduler=sched, grace=1).addCallback(check)

SOURCES = [from_pool, from_thread, from_timer, from_io, from_process]

def source(value, delay=0.0):
    return rng.choice(SOURCES)(value, delay)

def tiny():
    return rng.choice((0.0, 0.0, rng.uniform(0, 0.005)))

started, rounds = time.monotonic(), 0
while soaking(started, 200, rounds):
    rounds += 1
    mode = rng.random()
    t0 = time.monotonic()
    if mode < 0.4:  # one result; a lost wake-up waits out the 30 s deadline
        timeout = rng.choice((None, 30))
        got = untwisted.run(source(rounds, tiny()), timeout=timeout)
        if got != rounds:
            wrong(f"one: {got!r} != {rounds}")
    elif mode < 0.65:  # several at once, from different kinds of sources
        n = rng.randint(2, 8)
        got = untwisted.run(
            gatherResults([source(i, tiny()) for i in range(n)]), timeout=30)
        if got != list(range(n)):
            wrong(f"many: {got!r}")
    elif mode < 0.85:  # the result races run()'s deadline
        try:
            got = untwisted.run(source(rounds, rng.uniform(0, 0.005)),
                                timeout=rng.uniform(0, 0.005))
        except untwisted.Timeout:
            counts["timeouts"] += 1
        else:
            if got != rounds:
                wrong(f"deadline: {got!r} != {rounds}")
    else:  # cancelled at a random moment while it may be delivered
        d = source(rounds, tiny())
        reactor.callLater(rng.uniform(0, 0.003), d.cancel)
        try:
            got = untwisted.run(d, timeout=30)
        except CancelledError:
            counts["cancels"] += 1
        else:
            if got != rounds:
                wrong(f"cancel: {got!r} != {rounds}")
    if time.monotonic() - t0 > 5:
        wrong(f"round {rounds} (mode {mode:.2f}) took {time.monotonic() - t0:.1f} s")

for t in helpers:
    t.join(timeout=30)
    if t.is_alive():
        wrong("a helper thread never ended")
# Work that was cancelled may still be ending (a process killed, a thread
# firing into a cancelled Deferred): let it finish, bounded.
deadline = time.monotonic() + 10
while (sched.running or sched.queued) and time.monotonic() < deadline:
    untwisted.tick(0.05)
counts["rounds"] = rounds
report([sched], fds, children)
"""
)


IO_CALLBACK_SPAWNS = (
    _PRELUDE
    + """
# Runs started from on_stdout line callbacks while other runs end around
# them. The churn runs leave a short-lived background job holding their
# stdout, so their pipes close (when procwork reaps them) in the same epoll
# batch as other runs' output lines. Each run spawned from a callback must
# print its own token and exit 0.
from twisted.internet.defer import Deferred

sched = procwork.Scheduler(reactor, max_running=1000, load=procwork.NoLoadLimit())
untwisted.run(procwork.run(["true"], scheduler=sched), timeout=30)
fds, children = fd_table(), set(my_children())
WIDTH, CHURN = 16, 32
started = time.monotonic()
live = [0]
done = Deferred()

def more():
    # at least 4 000 runs: the stale event of issue 7 hit about 1 in 1 000
    return soaking(started, 4000, counts["runs"])

def start():
    counts["runs"] += 1
    token = f"t{counts['runs']}"
    live[0] += 1
    proc = procwork.spawn(
        ["echo", token], scheduler=sched, stdin=False, timeout=30,
        on_stdout=lambda line: start() if more() else None)
    proc.wait().addCallbacks(check, failed, callbackArgs=(token,))

def check(result, token):
    if result.returncode != 0 or result.stdout != (token + "\\n").encode():
        wrong(f"{result!r} stdout={result.stdout!r}")
    ended()

def failed(failure):
    wrong(f"spawn failed: {failure.value!r}")
    ended()

def ended():
    live[0] -= 1
    if live[0] == 0 and not done.called:
        done.callback(None)

CHURN_COMMAND = ["sh", "-c", "echo x; sleep 0.01 & exit 0"]

def churn(result=None):
    if result is not None and not (result.ok and result.stdout == b"x\\n"):
        wrong(f"churn: {result!r} stdout={result.stdout!r}")
    if done.called:
        return
    counts["runs"] += 1
    d = procwork.run(CHURN_COMMAND, scheduler=sched, timeout=30)
    d.addCallbacks(churn, lambda f: wrong(f"churn failed: {f.value!r}"))

for _ in range(CHURN):
    churn()
for _ in range(WIDTH):
    start()
untwisted.run(done, timeout=SECONDS + 60)
deadline = time.monotonic() + 10
while (sched.running or sched.queued) and time.monotonic() < deadline:
    untwisted.tick(0.05)
report([sched], fds, children)
"""
)


CANCELS_AND_TIMEOUTS = (
    _PRELUDE
    + """
# Runs (some queued behind a cap of 16) with random timeouts, cancelled at
# random moments, terminated or killed through their handle, or waited for
# with a deadline shorter than they take. Every Result must keep the
# contract of procwork.Result; a run whose wait was cancelled or timed out
# is dead by the time the caller has control back.
import signal
from twisted.internet.defer import CancelledError, DeferredList

sched = procwork.Scheduler(reactor, max_running=16, load=procwork.NoLoadLimit())
untwisted.run(procwork.run(["true"], scheduler=sched), timeout=30)
fds, children = fd_table(), set(my_children())

def command():
    # (argv, exit code, stdout) of a command that prints, sleeps and exits;
    # one in six ignores SIGTERM (so only the SIGKILL after grace ends it).
    token = f"tok{rng.randrange(10**6)}"
    code = rng.choice((0, 0, 1, 3))
    nap = rng.choice((0, 0, 0.01, 0.05, 0.2))
    trap = "trap '' TERM; " if rng.random() < 1 / 6 else ""
    script = f"{trap}echo {token}; sleep {nap}; exit {code}"
    return ["sh", "-c", script], code, (token + "\\n").encode()

def check(result, code, out, timeout, how):
    # how: "plain" (only its own timeout), "terminated", "killed"
    what = f"{how}: {result!r} stdout={result.stdout!r} expected {code} {out!r}"
    if result.timeout != timeout:
        wrong("timeout attribute: " + what)
    if (result.pid is None) != (result.returncode is None):
        wrong("pid/returncode: " + what)
    if result.returncode is None:  # never started: withdrawn or timed out queued
        if result.duration != 0 or result.stdout or not (
            result.timed_out or how != "plain"):
            wrong("never started: " + what)
        return
    if result.ok != (result.returncode == 0 and not result.timed_out):
        wrong("ok: " + what)
    if result.duration < 0 or result.queued < 0:
        wrong("negative seconds: " + what)
    killed = result.returncode < 0
    if killed and -result.returncode not in (signal.SIGTERM, signal.SIGKILL):
        wrong("killed by an unexpected signal: " + what)
    if not killed and (result.returncode != code or result.stdout != out):
        # It ended by itself: its own status and all of its output.
        wrong("natural end: " + what)
    if killed and result.stdout not in (b"", out):
        wrong("output: " + what)
    if killed and how == "plain" and not result.timed_out:
        wrong("killed without a timeout: " + what)
    if result.timed_out:
        counts["timeouts"] += 1

started, rounds = time.monotonic(), 0
while soaking(started, 30, rounds):
    rounds += 1
    batch = []
    for _ in range(rng.randint(8, 40)):
        counts["runs"] += 1
        argv, code, out = command()
        timeout = rng.choice((None, None, rng.uniform(0, 0.3)))
        grace = rng.choice((0.05, 0.2))
        kind = rng.random()
        if kind < 0.5:  # a run, maybe cancelled at a random moment
            d = procwork.run(argv, timeout=timeout, grace=grace, scheduler=sched)
            if rng.random() < 0.3:
                reactor.callLater(rng.uniform(0, 0.2), d.cancel)
            d.addCallback(check, code, out, timeout, "plain")
        else:  # a handle, maybe terminated or killed at a random moment
            proc = procwork.spawn(argv, timeout=timeout, grace=grace,
                                  scheduler=sched, stdin=False)
            how = rng.choice(("plain", "terminated", "killed"))
            if how != "plain":
                stop = proc.terminate if how == "terminated" else proc.kill
                reactor.callLater(rng.uniform(0, 0.2), stop)
            d = proc.wait().addCallback(check, code, out, timeout, how)
        batch.append(d)
    results = untwisted.run(DeferredList(batch, consumeErrors=True), timeout=60)
    for ok, value in results:
        if not ok:
            if value.check(CancelledError):
                counts["cancels"] += 1
            else:
                wrong(f"failed: {value.value!r}")
    # The blocking caller's own deadline, shorter than the run: when run()
    # raises Timeout, the run's process group is already dead.
    proc = procwork.spawn(["sleep", "5"], scheduler=sched, grace=0.2, stdin=False)
    try:
        untwisted.run(proc.wait(), timeout=rng.uniform(0, 0.1))
        wrong(f"sleep 5 finished within 0.1 s: {proc!r}")
    except untwisted.Timeout:
        counts["timeouts"] += 1
        counts["cancels"] += 1
        if proc.pid is not None and os.path.exists(f"/proc/{proc.pid}"):
            with open(f"/proc/{proc.pid}/stat") as f:
                state = f.read().rpartition(")")[2].split()[0]
            if state not in ("Z", "X"):
                wrong(f"run(timeout=) returned with {proc!r} alive")
    counts["runs"] += 1
deadline = time.monotonic() + 10
while (sched.running or sched.queued) and time.monotonic() < deadline:
    untwisted.tick(0.05)
report([sched], fds, children)
"""
)


THREADS_CALLING = (
    _PRELUDE
    + """
# Threads that do not drive the reactor call procwork.run and spawn while
# the main thread runs processes: every such call raises ForeignThreadError
# at once (nothing is started, no slot taken, nothing logged), and the
# documented way, the call handed to the reactor with callFromThread (a
# bounded blockingCallFromThread), gets correct results.
import queue, threading
from twisted.internet.defer import DeferredList, maybeDeferred
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

errors = []
globalLogPublisher.addObserver(
    lambda e: errors.append(e) if e.get("log_failure") or e.get("isError") else None)
sched = procwork.Scheduler(reactor, max_running=32, load=procwork.NoLoadLimit())
default = procwork.scheduler()
default.load = procwork.NoLoadLimit()
untwisted.run(procwork.run(["true"], scheduler=sched), timeout=30)
untwisted.run(procwork.run(["true"]), timeout=30)
fds, children = fd_table(), set(my_children())
started = time.monotonic()
stop = threading.Event()

def in_reactor(f, *args, **kwargs):
    # blockingCallFromThread, with a bound on the wait
    answers = queue.Queue()
    def call():
        maybeDeferred(f, *args, **kwargs).addBoth(answers.put)
    reactor.callFromThread(call)
    answer = answers.get(timeout=30)
    if isinstance(answer, Failure):
        answer.raiseException()
    return answer

def foreign(n):
    while not stop.is_set():
        call = rng.choice(("run", "spawn", "run-default"))
        try:
            if call == "run":
                procwork.run(["echo", "x"], scheduler=sched)
            elif call == "spawn":
                procwork.spawn(["echo", "x"], scheduler=sched)
            else:
                procwork.run(["echo", "x"])
        except untwisted.ForeignThreadError as e:
            counts["foreign_calls"] = counts.get("foreign_calls", 0) + 1
            if f"procwork.{call.split('-')[0]}" not in str(e):
                wrong(f"message does not name procwork.{call}: {e}")
        except BaseException as e:
            wrong(f"procwork.{call} from a thread raised {e!r}")
        else:
            wrong(f"procwork.{call} from a thread did not raise ForeignThreadError")
        counts["runs"] += 1
        token = f"t{n}-{counts['runs']}"
        try:
            result = in_reactor(procwork.run, ["echo", token], scheduler=sched,
                                timeout=30)
        except BaseException as e:
            wrong(f"procwork.run through callFromThread raised {e!r}")
        else:
            if not result.ok or result.stdout != (token + "\\n").encode():
                wrong(f"marshalled run: {result!r} stdout={result.stdout!r}")
        time.sleep(rng.uniform(0, 0.002))

workers = [threading.Thread(target=foreign, args=(n,)) for n in range(4)]
for w in workers:
    w.start()
try:
    rounds = 0
    while soaking(started, 20, rounds):
        rounds += 1
        counts["runs"] += 8
        batch = [procwork.run(["echo", str(i)], scheduler=sched) for i in range(8)]
        try:
            got = untwisted.run(DeferredList(batch, consumeErrors=True), timeout=15)
        except untwisted.Timeout as e:
            wrong(f"main thread's runs: {e}")
            break
        if [r.stdout for ok, r in got if ok] != [b"%d\\n" % i for i in range(8)]:
            wrong(f"main thread's runs: {got!r}")
finally:
    stop.set()
    deadline = time.monotonic() + 30
    while any(w.is_alive() for w in workers) and time.monotonic() < deadline:
        untwisted.tick(0.05)  # a worker may wait for its marshalled call
for w in workers:
    if w.is_alive():
        wrong("a calling thread never ended")
deadline = time.monotonic() + 10
while (sched.running or sched.queued or default.running or default.queued) and (
        time.monotonic() < deadline):
    untwisted.tick(0.05)
for e in errors[:3]:
    wrong(f"logged as an error: {e.get('log_format') or e.get('log_failure')!r}")
counts["wrong"] += max(0, len(errors) - 3)
report([sched, default], fds, children)
"""
)


MIXED_SPAWNS = (
    _PRELUDE
    + """
# Every kind of run at once, batch after batch, behind a cap: plain runs,
# spawns with /dev/null for stdin, runs fed input, spawns whose line
# callbacks start more runs, runs that time out, critical runs cancelled at
# a random moment. The baseline is taken right after one warm-up run, as a
# user's own leak check would take it: whether that run started the reactor
# or, its child ending inside the spawn, returned without (under load, now
# and then), only the reactor's SIGCHLD waker may appear after it.
from twisted.internet.defer import CancelledError, DeferredList
from twisted.logger import globalLogPublisher

errors = []
globalLogPublisher.addObserver(
    lambda e: errors.append(e) if e.get("log_failure") or e.get("isError") else None)
sched = procwork.Scheduler(reactor, max_running=24, load=procwork.NoLoadLimit())
untwisted.run(procwork.run(["true"], scheduler=sched), timeout=30)
counts["reactor_started_late"] = int(not reactor.running)
fds, children = fd_table(), set(my_children())
inner = []

def expect(d, token, *, timed_out=False, cancelled=False):
    def ok(result):
        if timed_out:
            counts["timeouts"] += 1
            if not result.timed_out or result.ok:
                wrong(f"should have timed out: {result!r}")
        elif cancelled:
            wrong(f"should have been cancelled: {result!r}")
        elif not result.ok or result.stdout != token:
            wrong(f"{result!r} stdout={result.stdout!r} != {token!r}")
    def failed(failure):
        if cancelled and failure.check(CancelledError):
            counts["cancels"] += 1
        else:
            wrong(f"failed: {failure.value!r}")
    counts["runs"] += 1
    return d.addCallbacks(ok, failed)

def one(i):
    token = f"t{i}".encode()
    kind = i % 6
    if kind == 0:
        return expect(procwork.run(["echo", token], scheduler=sched), token + b"\\n")
    if kind == 1:
        proc = procwork.spawn(["echo", token], scheduler=sched, stdin=False)
        return expect(proc.wait(), token + b"\\n")
    if kind == 2:
        return expect(procwork.run(["cat"], input=token, scheduler=sched), token)
    if kind == 3:
        def more(line):
            run = procwork.run(["echo", line.decode().strip()], scheduler=sched)
            inner.append(expect(run, line))
        proc = procwork.spawn(["sh", "-c", "echo a; echo b"], scheduler=sched,
                              stdin=False, on_stdout=more)
        return expect(proc.wait(), b"a\\nb\\n")
    if kind == 4:
        run = procwork.run(["sleep", "5"], scheduler=sched, grace=0.2,
                           timeout=rng.uniform(0, 0.05))
        return expect(run, None, timed_out=True)
    run = procwork.run(["sleep", "5"], scheduler=sched, priority="critical")
    reactor.callLater(rng.uniform(0, 0.02), run.cancel)
    return expect(run, None, cancelled=True)

started, rounds = time.monotonic(), 0
while soaking(started, 25, rounds):
    rounds += 1
    batch = [one(rounds * 48 + i) for i in range(48)]
    try:
        untwisted.run(DeferredList(batch), timeout=60)
        untwisted.run(DeferredList(inner), timeout=60)
    except untwisted.Timeout as e:
        wrong(f"batch {rounds}: {e}")
        break
    del inner[:]
deadline = time.monotonic() + 10
while (sched.running or sched.queued) and time.monotonic() < deadline:
    untwisted.tick(0.05)
for e in errors[:3]:
    wrong(f"logged as an error: {e.get('log_format') or e.get('log_failure')!r}")
counts["wrong"] += max(0, len(errors) - 3)
report([sched], fds, children)
"""
)


SOAKS: dict[str, str] = {
    "wakeups": WAKEUPS,
    "io-callback-spawns": IO_CALLBACK_SPAWNS,
    "cancels-and-timeouts": CANCELS_AND_TIMEOUTS,
    "threads-calling": THREADS_CALLING,
    "mixed-spawns": MIXED_SPAWNS,
}
"""The soaks that run in one child Python: name -> program."""


def soak_in_child(
    name: str, seconds: float, *, seed: int | None = None, timeout: float | None = None
) -> dict[str, Any]:
    """Run the soak ``name`` of :data:`SOAKS` for about ``seconds``; its report.

    The child is SIGKILLed (and a failed report returned, with ``hung``
    set) if it has not ended ``timeout`` seconds after it started (default
    ``seconds + 60``): its own waits are bounded, so that is a hang.
    """
    if seed is None:
        seed = random.randrange(1 << 30)
    limit = seconds + 60 if timeout is None else timeout
    status, out, err = run_bounded(
        [PY, "-c", textwrap.dedent(SOAKS[name]), str(seconds), str(seed), str(limit)],
        limit,
    )
    if status is None:
        return {
            "hung": 1,
            "wrong": 1,
            "seed": seed,
            "examples": [
                f"{name} did not end within {limit:g} s",
                "its threads then: " + err[err.find("Timeout (") :][:3000],
                "the end of its stderr: " + err[-1500:],
            ],
        }
    lines = out.strip().splitlines()
    try:
        report: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        return {
            "wrong": 1,
            "seed": seed,
            "examples": [f"{name} exited {status}", (out + err)[-3000:]],
        }
    report["seed"] = seed
    if status != 0:
        report["wrong"] = report.get("wrong", 0) + 1
        report["examples"].append(f"exited {status}: {err[-2000:]}")
    return report


# Spawns (procwork.spawn and procwork.run, from blocking code) in a loop,
# until a signal ends the program. Each child is "sleep MARKER", the marker
# (argv[1]) being a number of seconds no other process on the machine has
# on its command line.
SPAWN_LOOP = """
import sys, traceback
import procwork, untwisted
from twisted.internet.defer import DeferredList

marker = sys.argv[1]
sched = procwork.scheduler()
sched.load = procwork.NoLoadLimit()
sched.set_max_running(10_000)
untwisted.run(procwork.run(["true"]), timeout=30)  # handlers are installed now
print("ready", flush=True)
try:
    while True:
        pending = []
        for i in range(20):
            proc = procwork.spawn(["sleep", marker], stdin=False, grace=0.5)
            pending.append(proc.wait())
            d = procwork.run(["sleep", marker], grace=0.5)
            d.addErrback(lambda f: None)
            pending.append(d)
        for d in pending:
            d.cancel()
        untwisted.run(DeferredList(pending, consumeErrors=True), timeout=30)
except BaseException:
    traceback.print_exc()  # where the signal was raised, SystemExit too
    raise
"""


SOAK_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def _expected_status(signum: int) -> set[int]:
    if signum == signal.SIGINT:
        # KeyboardInterrupt: Python ends by re-raising SIGINT (-2), or exits
        # 1 when it is raised while the interpreter is shutting down.
        return {-signal.SIGINT, 1, 128 + signal.SIGINT}
    return {128 + signum}


def signal_soak(rounds: int, *, seed: int | None = None) -> dict[str, Any]:
    """Signal ``rounds`` x 4 spawning programs at random moments; the report.

    Each round starts one program per signal of :data:`SOAK_SIGNALS` (INT,
    TERM, HUP, QUIT) running :data:`SPAWN_LOOP`, sends each its signal a
    random 0-300 ms after it is ready, and waits (30 s at most) for it to
    end. A marked child still alive 3 s after the round's programs ended is
    an orphan (it is SIGKILLed by pid and counted).
    """
    if seed is None:
        seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    counts: dict[str, Any] = dict.fromkeys(
        ("runs", "signals", "wrong", "orphans", "leaked_fds", "zombies", "slots"), 0
    )
    examples: list[str] = []
    for _ in range(rounds):
        with contextlib.ExitStack() as stack:
            programs = []
            for signum in SOAK_SIGNALS:
                marker = f"600.{rng.randrange(10**15):015d}"
                child = stack.enter_context(_spawn_loop(marker))
                programs.append((signum, marker, child))
            for _signum, _marker, child in programs:
                assert child.stdout is not None
                if not (readable(child.stdout, 30) and child.stdout.readline()):
                    counts["wrong"] += 1
                    examples.append(f"the spawn loop never got ready: {child.pid}")
            time.sleep(rng.uniform(0, 0.3))
            for signum, _marker, child in programs:
                child.send_signal(signum)
                counts["signals"] += 1
                time.sleep(rng.uniform(0, 0.05))
            # where each program was when its signal became an exception
            raised_at: dict[str, str] = {}
            for signum, marker, child in programs:
                try:
                    _, err = child.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    counts["wrong"] += 1
                    examples.append(f"{signum!r}: the program hung after the signal")
                    continue
                counts["runs"] += 1
                frames = [line.strip() for line in err.splitlines() if "File " in line]
                raised_at[marker] = " < ".join(reversed(frames[-3:]))
                if child.returncode not in _expected_status(signum):
                    counts["wrong"] += 1
                    examples.append(
                        f"{signum!r}: exit status {child.returncode}: {err[-500:]}"
                    )
            deadline = time.monotonic() + 3
            for signum, marker, _child in programs:
                left = _left_after(marker, deadline - time.monotonic())
                if left:
                    counts["orphans"] += len(left)
                    examples.append(
                        f"{signum!r}: children survived: {left}; the signal was "
                        f"raised at {raised_at.get(marker, '?')}"
                    )
    counts["examples"] = examples
    counts["seed"] = seed
    return counts


@contextlib.contextmanager
def _spawn_loop(marker: str) -> Iterator[subprocess.Popen[str]]:
    try:
        with python_child(SPAWN_LOOP, marker) as child:
            yield child
    finally:
        for pid in marked_processes(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _left_after(marker: str, seconds: float) -> list[int]:
    """Marked processes still alive after ``seconds`` (SIGKILLed then)."""
    deadline = time.monotonic() + seconds
    while (left := marked_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left
