"""Helpers shared by the test modules.

Every wait here is bounded: a helper that waits takes its bound as a
parameter (or says its default), and returns False or fails the test when
the bound passes instead of hanging the run.

- Blocking on the global reactor: :func:`wait`, :func:`drive_until`;
  the reactor itself, typed: :func:`global_reactor`.
- The global scheduler without its load gate: :func:`no_load_limit`.
- Load: :func:`cpu_load`.
- Real processes: :func:`alive`, :func:`gone_within`, :func:`sigkill_leftovers`,
  :func:`marked_processes`, :func:`start_sleeper` / :func:`stop_sleeper` /
  :func:`running_sleeper`.
- Leaks: :func:`open_fds`, :func:`fd_table`, :func:`opened_since`,
  :func:`reactor_signal_waker`, :func:`my_children`.
- Child Pythons on this checkout: :func:`child_env`, :func:`run_child`,
  :func:`python_child`, and for the programs of ``tests/programs/``
  :func:`program`, :func:`run_program`, :func:`program_child`;
  :func:`run_bounded`, :func:`readable`.
- Fakes: :class:`ClockReactor`, :class:`FakeTable`.
- Twisted's log: :func:`observing`.

Helpers of one kind of test are in modules of their own:
:mod:`tests.support.monitor` (a real ``procwork monitor`` and ``procwork
ctl``), :mod:`tests.support.fake_monitor` and
:mod:`tests.support.fake_supervisor` (the monitor and the supervisor on a
Clock), :mod:`tests.support.http` (a client that keeps sending),
:mod:`tests.support.sshd` (a real OpenSSH server) and
:mod:`tests.support.tools` (tools pip cannot install). Test modules import
from these, never from each other (``tests/project/test_test_layout.py``).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, cast

import pytest
from twisted.internet import task
from twisted.logger import ILogObserver, globalLogPublisher

import procwork
import untwisted
from procwork.monitor._proctable import ProcInfo

PY = sys.executable
"""The Python running the tests; child Pythons run it too."""

ROOT = Path(__file__).resolve().parents[2]
"""The root of this checkout (where pyproject.toml is)."""


# -- bounded waits on the global reactor ---------------------------------------


def wait(x: object, seconds: float = 30) -> Any:
    """Block on ``x`` (a Deferred, coroutine or generator) for at most ``seconds``."""
    return untwisted.run(x, timeout=seconds)


def global_reactor() -> Any:
    """Twisted's global reactor (the default one is installed if none is).

    Typed ``Any``: mypy reads ``from twisted.internet import reactor`` as
    the module ``twisted.internet.reactor``, not the reactor it becomes.
    """
    from twisted.internet import reactor

    return reactor


def drive_until(done: Callable[[], bool], timeout: float) -> bool:
    """Drive the real reactor until ``done()``; False once ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        untwisted.tick(0.01)
    return True


@contextlib.contextmanager
def no_load_limit() -> Iterator[procwork.Scheduler]:
    """The global scheduler, with no load gate while the block runs.

    For tests that are not about load: a busy test machine must not queue
    their processes. The scheduler's own load source is put back afterwards.
    """
    scheduler = procwork.scheduler()
    saved = scheduler.load
    scheduler.load = procwork.NoLoadLimit()
    try:
        yield scheduler
    finally:
        scheduler.load = saved


# -- real processes: are they there? -------------------------------------------


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is neither a zombie (Z) nor dead (X)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        # ProcessLookupError: it died between the open and the read.
        return False


def argv_of(pid: int | str) -> list[bytes] | None:
    """Process ``pid``'s arguments as ``/proc`` has them (split on NUL, so
    the last item is empty; a zombie's is ``[b""]``); None once it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return None


def gone_within(pid: int, seconds: float = 10.0) -> bool:
    """Poll (without driving the reactor) until ``pid`` is not :func:`alive`.

    True as soon as it is gone; False if it is still alive after ``seconds``.
    """
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


@contextlib.contextmanager
def sigkill_leftovers() -> Iterator[list[int]]:
    """A list for the pids a test started or saw; those alive at the end are
    SIGKILLed (by pid), whatever the test did."""
    pids: list[int] = []
    try:
        yield pids
    finally:
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def marked_processes(marker: str) -> list[int]:
    """Live processes (zombies excluded) with ``marker`` in their command line.

    Finds the children a program left behind, wherever they were
    re-parented: give each child an argument no other process has (see
    :func:`unique_token`) and look for it.
    """
    found = []
    needle = marker.encode()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if needle not in f.read():
                    continue
        except OSError:
            continue
        if alive(int(name)):
            found.append(int(name))
    return found


def unique_token() -> str:
    """An argument no other process on the machine has: finds a child in /proc."""
    return f"procwork-test-{uuid.uuid4().hex}"


def start_sleeper(token: str, *, ignore_term: bool = False) -> subprocess.Popen[str]:
    """A Python child sleeping 60 s, with ``token`` as its argument.

    Returns once the child runs Python with its own command line (it printed
    ``ready``); fails the test if that takes over 10 s. With ``ignore_term``
    it ignores SIGTERM. Stop it with :func:`stop_sleeper`.
    """
    code = (
        "import signal, sys, time\n"
        + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_term else "")
        + "print('ready', flush=True)\ntime.sleep(60)\n"
    )
    child = subprocess.Popen([PY, "-c", code, token], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    if not (readable(child.stdout, 10) and child.stdout.readline() == "ready\n"):
        stop_sleeper(child)
        pytest.fail("child did not start within 10 s")
    return child


def stop_sleeper(child: subprocess.Popen[str]) -> None:
    """SIGKILL ``child`` (if it still runs), reap it (10 s at most), close its pipe."""
    child.kill()
    child.wait(timeout=10)
    if child.stdout is not None:
        child.stdout.close()


@contextlib.contextmanager
def running_sleeper(token: str) -> Iterator[subprocess.Popen[str]]:
    """:func:`start_sleeper` for the block; stopped after it."""
    child = start_sleeper(token)
    try:
        yield child
    finally:
        stop_sleeper(child)


# -- leaks -----------------------------------------------------------------------


def open_fds() -> set[str]:
    """This process's open file descriptors (names in /proc/self/fd)."""
    return set(os.listdir("/proc/self/fd"))


def fd_table() -> dict[str, str]:
    """This process's open file descriptors and what each one is (its
    /proc/self/fd link: a path, ``pipe:[inode]``, ``socket:[inode]``...)."""
    table = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # listdir's own, closed by now
            table[fd] = os.readlink(f"/proc/self/fd/{fd}")
    return table


def reactor_signal_waker() -> set[str]:
    """The descriptors (both ends) of the reactor's SIGCHLD waker, if any.

    Twisted opens this one pipe when the reactor first starts on the main
    thread (``startRunning`` installs its signal handling) and keeps it for
    the rest of the program; its write end is the process's
    :func:`signal.set_wakeup_fd`. It is the pair of descriptors that a run
    of thousands of spawns under load sometimes ended with: the warm-up run
    before the count can end inside its own spawn (its child exits and is
    reaped before the spawn returns), so ``untwisted.run`` has its result in
    hand and never starts the reactor, which then starts during the runs
    counted. Once per program: not a leak. Call from the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        return set()  # only the main thread may ask (and Twisted set it there)
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)  # as Twisted set it: put back at once
    if wakeup < 0:
        return set()
    try:
        pipe = os.readlink(f"/proc/self/fd/{wakeup}")
    except OSError:
        return set()
    return {fd for fd, what in fd_table().items() if what == pipe}


def opened_since(before: dict[str, str]) -> dict[str, str]:
    """The descriptors open now that were not open, as the same thing, in
    ``before`` (a :func:`fd_table`): what the code in between leaked.

    One closed meanwhile is not a leak of that code (on a loaded machine an
    earlier test's child can be reaped late, closing its pidfd), and a
    number reused for something new (another pipe inode) is counted. The
    reactor's SIGCHLD waker (:func:`reactor_signal_waker`), opened once when
    the reactor first starts, is not: only the one in use now, so a second
    waker pipe would still count. Call from the main thread.
    """
    waker = reactor_signal_waker()
    return {
        fd: what
        for fd, what in fd_table().items()
        if before.get(fd) != what and fd not in waker
    }


def proc_stats() -> Iterator[tuple[int, list[str]]]:
    """Every process now, as (pid, the fields of /proc/PID/stat after its
    name: state, ppid, pgrp, ...); one gone meanwhile is skipped."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                yield int(name), f.read().rpartition(")")[2].split()
        except OSError:
            continue


def my_children() -> dict[int, str]:
    """This process's children (pid -> state letter), zombies (Z) included,
    but not the live lifeline helper: once enabled it lives as long as the
    test session (a spawn from a thread other than the main one enables it);
    dead and unreaped, it is a zombie like any other."""
    from procwork._lifeline import lifeline_pid

    me = str(os.getpid())
    helper = lifeline_pid()
    return {
        pid: fields[0]
        for pid, fields in proc_stats()
        if fields[1] == me and (pid != helper or fields[0] == "Z")
    }


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    return [
        pid
        for pid, fields in proc_stats()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X")
    ]


def raised_in_thread(
    fn: Callable[[], object], timeout: float = 30
) -> BaseException | None:
    """Call ``fn`` in a new thread, joined within ``timeout`` s (the test
    fails if it hangs); what it raised, if anything."""
    caught: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as e:
            caught.append(e)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the call from the thread hung"
    return caught[0] if caught else None


@contextlib.contextmanager
def cpu_load(processes: int = 2) -> Iterator[None]:
    """Keep ``processes`` busy-looping children running for the block.

    For stress tests: wake-ups and races that a quiet machine hides show up
    when every core is contended. The children are SIGKILLed afterwards.
    """
    hogs = [
        subprocess.Popen([PY, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
        for _ in range(processes)
    ]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait(timeout=10)


# -- child Pythons on this checkout ------------------------------------------------


def child_env() -> dict[str, str]:
    """This environment, with the checkout first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH")) if p
    )
    return env


#: ``procwork timeout`` as its console script runs it (``procwork.cli.main``).
PROCWORK_TIMEOUT = [
    PY,
    "-c",
    "import sys; from procwork.cli import main; sys.exit(main())",
    "timeout",
]


def start_command(
    argv: list[str],
    *,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    quiet: bool = False,
) -> subprocess.Popen[str]:
    """``argv`` started with this checkout's environment and no stdin; its
    output piped, or with ``quiet`` to /dev/null (for a command whose
    leftovers, left running, would hold the pipes open)."""
    output = subprocess.DEVNULL if quiet else subprocess.PIPE
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env=env or child_env(),
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=output,
        text=True,
    )


def modules_imported_by(argv: list[str], cwd: Path) -> set[str]:
    """The modules a Python command imports (``PYTHONPROFILEIMPORTTIME``'s
    report on its stderr), once it has exited 0 (bounded: 60 s)."""
    done = subprocess.run(
        argv,
        cwd=cwd,
        env=child_env() | {"PYTHONPROFILEIMPORTTIME": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def run_child(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (dedented) in a fresh Python and wait (at most ``timeout`` s)
    for it to end; its output is captured as text."""
    return _run([PY, "-c", textwrap.dedent(code)], timeout)


def program(name: str, *args: str) -> list[str]:
    """The command line running the program ``tests/programs/NAME.py`` with
    ``args`` in a fresh Python (``python -m tests.programs.NAME ARGS``).

    A program longer than a few lines is a module there, where ruff and mypy
    read it, rather than a string given to ``python -c``.
    """
    return [PY, "-m", f"tests.programs.{name}", *args]


def run_program(
    name: str, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """:func:`run_child` for the program ``tests/programs/NAME.py`` and ``args``."""
    return _run(program(name, *args), timeout)


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def python_child(
    code: str, *args: str
) -> contextlib.AbstractContextManager[subprocess.Popen[str]]:
    """A fresh Python running ``code`` (dedented) with ``args``, for the block.

    Its stdout and stderr are text pipes. If it still runs after the block,
    it is SIGKILLed and reaped.
    """
    return _child([PY, "-c", textwrap.dedent(code), *args])


def program_child(
    name: str, *args: str
) -> contextlib.AbstractContextManager[subprocess.Popen[str]]:
    """:func:`python_child` for the program ``tests/programs/NAME.py`` and ``args``."""
    return _child(program(name, *args))


@contextlib.contextmanager
def _child(argv: list[str]) -> Iterator[subprocess.Popen[str]]:
    child = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()


def run_bounded(
    argv: list[str], timeout: float, *, grace: float = 0
) -> tuple[int | None, str, str]:
    """Run ``argv`` on this checkout, in a session of its own, until it ends
    or ``timeout`` seconds pass; ``(exit status, stdout, stderr)``.

    The status is None when it had to be stopped: its process group gets
    SIGTERM and ``grace`` seconds to unwind (0: none), then SIGKILL.
    """
    child = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    else:
        return child.returncode, out, err
    out = err = ""
    if grace:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)
        try:
            out, err = child.communicate(timeout=grace)
            return None, out, err
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    # Bounded even so: a process of another session may hold its pipes.
    with contextlib.suppress(subprocess.TimeoutExpired):
        out, err = child.communicate(timeout=30)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout=10)
    return None, out, err


def readable(stream: IO[str], timeout: float) -> bool:
    """Wait (at most ``timeout`` s) until ``stream`` has something to read."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        return bool(selector.select(timeout=timeout))


# -- fakes -------------------------------------------------------------------------


class ClockReactor(task.Clock):
    """A fake reactor: ``iterate(delay)`` is a wait of exactly ``delay`` seconds.

    Time moves only when the driver iterates, so a test of timing is exact and
    instant. Waiting for ever (nothing scheduled) fails the test instead of
    hanging it. It records how it was started and stopped, the system event
    triggers added to it and every iteration's delay.
    """

    def __init__(self) -> None:
        super().__init__()
        self.running = False
        self.install_signal_handlers: bool | None = None
        self.triggers: list[tuple[str, str]] = []
        self.iterations: list[float] = []
        self.stopped = False

    def startRunning(self, installSignalHandlers: bool = True) -> None:
        self.running = True
        self.install_signal_handlers = installSignalHandlers

    def stop(self) -> None:
        self.running = False
        self.stopped = True

    def addSystemEventTrigger(
        self, phase: str, eventType: str, callable: Callable[..., Any], *args: Any
    ) -> int:
        self.triggers.append((phase, eventType))
        return len(self.triggers)

    def timeout(self) -> float | None:
        calls = self.calls
        if not calls:
            return None
        return max(0.0, min(call.getTime() for call in calls) - self.seconds())

    def runUntilCurrent(self) -> None:
        self.advance(0)

    def doIteration(self, delay: float | None) -> None:
        if delay is None:
            raise AssertionError("the driver would wait for ever: nothing scheduled")
        self.iterations.append(delay)
        self.advance(delay)


class FakeTable:
    """A process table holding the processes the test puts in it, by pid."""

    def __init__(self, *processes: ProcInfo) -> None:
        self.processes = {p.pid: p for p in processes}

    def add(self, *processes: ProcInfo) -> None:
        """Put ``processes`` in the table (replacing any of the same pid)."""
        self.processes.update((p.pid, p) for p in processes)

    def snapshot(self) -> list[ProcInfo]:
        return list(self.processes.values())

    def get(self, pid: int) -> ProcInfo | None:
        return self.processes.get(pid)


# -- Twisted's log -----------------------------------------------------------------


@contextlib.contextmanager
def observing(observer: Callable[[dict[str, Any]], object]) -> Iterator[None]:
    """``observer`` sees every event of Twisted's global log while the block runs."""
    log_observer = cast(ILogObserver, observer)
    globalLogPublisher.addObserver(log_observer)
    try:
        yield
    finally:
        globalLogPublisher.removeObserver(log_observer)
