"""Process: one child from queued to reaped, the single state object for it.

Both :func:`procwork.run` and :func:`procwork.spawn` build one of these; it
waits in the scheduler's queue, starts the child, captures its output,
enforces the timeout with SIGTERM-then-SIGKILL to the whole process group,
and produces the :class:`~procwork.Result`.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from twisted.internet import error as twisted_error
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

import untwisted
from procwork._cgroup import Cgroup, missing_interpreter, run_cgroup
from procwork._defaults import DEFAULT_GRACE, DEFAULT_MAX_OUTPUT, Priority
from procwork._errors import (
    CommandNotFound,
    NotExecutable,
    SpawnError,
    clip_command,
)
from procwork._escalation import Escalation
from procwork._output import LineQueue, LineSplitter, TailBuffer
from procwork._reactor import Reactor
from procwork._result import Result
from procwork._scheduler import Scheduler
from procwork._shutdown import watch_reactor
from procwork._spawn import GroupProcess, signals_held_while_starting
from procwork._threads import check_thread
from procwork._validate import signal_number
from untwisted.lowlevel import AwaitableDeferred

__all__ = ["Process", "RunOptions", "RunState"]

_log = Logger(namespace="procwork")

# Niceness added to "low" children.
LOW_PRIORITY_NICE = 10

LineCallback = Callable[[bytes], object]


class RunState(StrEnum):
    """Where a :class:`Process` is in its life: :attr:`Process.state`.

    A ``StrEnum``, so ``proc.state == "running"`` keeps working and the
    state prints as the words it always did (``<Process 'sleep 9' queued>``).
    """

    QUEUED = "queued"
    """Waiting in the scheduler's queue for a slot."""
    RUNNING = "running"
    """Started; not yet reaped."""
    EXITED = "exited"
    """Ended and reaped (whatever the cause, a timeout's SIGKILL too)."""
    TIMED_OUT = "timed out"
    """Its timeout expired while it was still queued; it never started."""
    FAILED = "failed"
    """It could not be started (the Deferred failed with a SpawnError)."""
    CANCELLED = "cancelled"
    """Withdrawn from the queue (terminate, kill or cancel); it never started."""


@dataclass(frozen=True)
class RunOptions:
    """How to run one command: the checked arguments of run/spawn.

    Built once, by :func:`procwork.run` or :func:`procwork.spawn` after
    every argument has been checked (``_api._process``); a :class:`Process`
    reads its settings from it and never changes it.

    Attributes:
        args: The argv (at least one word).
        env: The environment (None: ours).
        cwd: The working directory (None: ours).
        priority: Its place in the scheduler's queue.
        timeout: Seconds from submission until the group is terminated
            (None: no limit).
        grace: Seconds between SIGTERM and SIGKILL.
        max_output: Bytes of each stream kept (None: all).
        stdin: A pipe for ``write()`` (False: ``/dev/null``).
        inherit_stdio: The child shares our stdin, stdout and stderr.
        kill_leftovers: SIGKILL what is left of the group when it exits.
        on_stdout, on_stderr: Called with each line of output.
        contain: Run it in a cgroup of its own where cgroups can be had
            (:mod:`procwork._cgroup`), so that what leaves its process group
            dies with it too.
        umask: The child's umask (-1: ours).
        pass_fds: Our descriptors the child keeps, at the same numbers.
        user, group, extra_groups: Ids the child runs as (None: ours).
    """

    args: tuple[str, ...]
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    priority: Priority = Priority.NORMAL
    timeout: float | None = None
    grace: float = DEFAULT_GRACE
    max_output: int | None = DEFAULT_MAX_OUTPUT
    stdin: bool = True
    inherit_stdio: bool = False
    kill_leftovers: bool = True
    on_stdout: LineCallback | None = None
    on_stderr: LineCallback | None = None
    contain: bool = False
    umask: int = -1
    pass_fds: tuple[int, ...] = ()
    user: int | None = None
    group: int | None = None
    extra_groups: tuple[int, ...] | None = None


class ChildTransport(Protocol):
    """What a Process drives: a local :class:`GroupProcess`, or a remote run's
    SSH channel (``procwork/_remote/``), which drives its Process through the
    Process's methods "for a transport"."""

    pgid: int | None
    kill_group_on_exit: bool
    exited: bool
    status: Any

    def write(self, data: bytes) -> None: ...
    def closeStdin(self) -> None: ...
    def signalProcess(self, signalID: Any) -> None: ...
    def signal_group(self, signum: int) -> bool: ...


class _Protocol(ProcessProtocol):
    """Forwards Twisted's protocol events to the owning :class:`Process`."""

    def __init__(self, owner: Process) -> None:
        self._owner = owner

    def connectionMade(self) -> None:
        # Called inside GroupProcess's constructor, before it returns: the
        # child may even end before then, so the owner learns of its
        # transport here rather than from the constructor's return value.
        assert isinstance(self.transport, GroupProcess)
        self._owner.transport_started(self.transport)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self._owner.output_received(childFD, data)

    def processEnded(self, reason: Failure) -> None:
        self._owner.transport_ended()


class Process:
    """A child process, queued, running or finished: the handle of :func:`spawn`.

    All methods are called from the reactor thread (from clockwork tasks,
    Twisted callbacks, blocking code that drives the reactor with untwisted,
    or, for a process started inside a running asyncio loop, that loop's
    coroutines and callbacks); from another thread they raise
    :class:`untwisted.ForeignThreadError`. The Deferreds its methods return
    are awaitable by asyncio tasks as well as by Twisted's coroutines.

    Attributes:
        args: The argv.
        priority: Its :class:`Priority`.
        pid: Its pid once started, else None.
    """

    def __init__(
        self, options: RunOptions, *, reactor: Reactor, scheduler: Scheduler
    ) -> None:
        self.options = options
        self.args = options.args
        self.priority = options.priority
        self.pid: int | None = None
        self.timeout = options.timeout
        self.grace = options.grace
        self._reactor = reactor
        self._scheduler = scheduler
        self._env = options.env
        self._cwd = options.cwd
        self._stdin = options.stdin and not options.inherit_stdio
        self._inherit_stdio = options.inherit_stdio
        self._kill_leftovers = options.kill_leftovers
        self._max_output = options.max_output
        self._transport: ChildTransport | None = None
        self._buffers = {
            1: TailBuffer(self._max_output),
            2: TailBuffer(self._max_output),
        }
        self._splitters: dict[int, LineSplitter] = {}
        self._line_queues: dict[int, LineQueue] = {}
        self._line_waiters: dict[int, deque[Deferred[bytes]]] = {}
        self._line_callbacks: dict[int, LineCallback] = {}
        for fd, callback in ((1, options.on_stdout), (2, options.on_stderr)):
            if callback is not None:
                self._line_callbacks[fd] = callback
                self._splitter(fd)
        self._pending_input: list[bytes] = []
        self._stdin_closed = False
        self._waiters: list[Deferred[Result]] = []
        self._result: Result | None = None
        self._failure: Failure | None = None
        self._timed_out = False
        self._timeout_call: Any = None
        self._escalation: Escalation | None = None
        self._cgroup: Cgroup | None = None
        self._submitted = time.monotonic()
        self._started: float | None = None
        self.state: RunState = RunState.QUEUED

    def __repr__(self) -> str:
        what: str = self.state
        if self._result is not None:
            what = self._result.describe()
        pid = f" pid {self.pid}" if self.pid is not None else ""
        return f"<Process {' '.join(self.args)!r}{pid} {what}>"

    # -- life cycle ------------------------------------------------------------

    def _submit(self) -> None:
        if self.timeout is not None:
            self._timeout_call = self._reactor.callLater(self.timeout, self._expire)
        self._scheduler.submit(self)

    def _admitted(self) -> None:
        """Called by the scheduler: start the child now."""
        self._started = time.monotonic()
        self.start_child()

    def _spawn_failed(self, error: Exception) -> None:
        self.state = RunState.FAILED
        self._cancel_timers()
        self._scheduler.finished(self)
        self._fail(Failure(_spawn_error(self.args, self._cwd, self._env, error)))

    def _expire(self) -> None:
        self._timeout_call = None
        self._timed_out = True
        if self.state is RunState.QUEUED:
            self._scheduler.withdraw(self)
            self.state = RunState.TIMED_OUT
            self._finish(self._make_result(None))
        elif self.state is RunState.RUNNING:
            _log.info(
                "{command} timed out after {timeout} s; terminating its process group",
                command=" ".join(self.args),
                timeout=self.timeout,
            )
            self._terminate()

    def _make_result(self, returncode: int | None) -> Result:
        now = time.monotonic()
        started = self._started
        out, err = self._buffers[1], self._buffers[2]
        return Result(
            args=self.args,
            pid=self.pid,
            returncode=returncode,
            stdout=out.value(),
            stderr=err.value(),
            truncated=out.truncated or err.truncated,
            duration=0.0 if started is None else now - started,
            queued=(now if started is None else started) - self._submitted,
            timed_out=self._timed_out,
            timeout=self.timeout,
        )

    def _finish(self, result: Result) -> None:
        self._result = result
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(result)
        self._end_lines()

    def _fail(self, failure: Failure) -> None:
        self._failure = failure
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(failure)
        self._end_lines()

    def _end_lines(self) -> None:
        # Every way of ending (exit, timeout while queued, failure to start,
        # withdrawal) lands here, so a pending readline() never hangs.
        for line_waiters in self._line_waiters.values():
            while line_waiters:
                line_waiters.popleft().callback(b"")

    def _cancel_timers(self) -> None:
        call, self._timeout_call = self._timeout_call, None
        if call is not None and call.active():
            call.cancel()
        if self._escalation is not None:
            self._escalation.cancel()

    # -- for a transport ---------------------------------------------------------
    #
    # How the child's transport drives its Process; not for the process's
    # users. The local transport (a GroupProcess, through _Protocol) and a
    # remote run's SSH channel (procwork/_remote/, whose RemoteProcess
    # overrides start_child) use these and nothing else of a Process:
    # start_child() ends in transport_started() or transport_failed(); output
    # then comes to output_received(), and the end to transport_ended() (the
    # transport's status says how) or transport_failed().

    @property
    def reactor(self) -> Reactor:
        """The reactor the process runs on: its timers, and its transport's."""
        return self._reactor

    def start_child(self) -> None:
        """For a transport: start the child, now that the scheduler admitted it.

        Here a local :class:`~procwork._spawn.GroupProcess`; a subclass that
        runs its child elsewhere overrides this. Atomic with respect to
        Ctrl-C and the other fatal signals: one that arrives meanwhile is
        raised when the child is on record as live and this Process as
        running (or failed), so the exit path kills it.
        """
        nice = LOW_PRIORITY_NICE if self.priority is Priority.LOW else 0
        with signals_held_while_starting(self._reactor):
            try:
                watch_reactor(self._reactor)
                self._cgroup = (
                    run_cgroup(self.reactor, self.args)
                    if self.options.contain
                    else None
                )
                GroupProcess(
                    self._reactor,
                    _Protocol(self),
                    self.args,
                    env=self._env,
                    cwd=self._cwd,
                    nice=nice,
                    stdin=self._stdin,
                    inherit_stdio=self._inherit_stdio,
                    cgroup=self._cgroup,
                    umask=self.options.umask,
                    pass_fds=self.options.pass_fds,
                    user=self.options.user,
                    group=self.options.group,
                    extra_groups=self.options.extra_groups,
                )
            except Exception as e:  # OSError mostly; ValueError: a NUL in env
                # Whatever it is, fail this run and free its slot: a job stuck
                # in the scheduler would hang its caller and shrink the cap for
                # good.
                self._release_cgroup()
                self._spawn_failed(e)

    def _release_cgroup(self) -> None:
        cgroup, self._cgroup = self._cgroup, None
        if cgroup is not None:
            cgroup.containment.release(cgroup)

    def transport_started(self, transport: ChildTransport) -> None:
        """For a transport: the child has started on ``transport``; it runs.

        Input written so far goes to it now. ``pid`` becomes the transport's
        ``pgid``, which may still be None (then see :meth:`pid_known`).
        """
        self._transport = transport
        self.pid = transport.pgid
        self.state = RunState.RUNNING
        transport.kill_group_on_exit = self._kill_leftovers
        for data in self._pending_input:
            transport.write(data)
        self._pending_input.clear()
        if self._stdin_closed:
            transport.closeStdin()

    def pid_known(self, pid: int) -> None:
        """For a transport: the child's pid (the id of the process group it
        leads), learned after :meth:`transport_started` (a remote run learns
        it from the first line its wrapper prints)."""
        self.pid = pid

    def output_received(self, fd: int, data: bytes) -> None:
        """For a transport: the child wrote ``data`` on ``fd`` (1 stdout, 2 stderr)."""
        buffer = self._buffers.get(fd)
        if buffer is None:
            return
        buffer.write(data)
        splitter = self._splitters.get(fd)
        if splitter is not None:
            splitter.feed(data)

    def transport_ended(self) -> None:
        """For a transport: the child has ended (a local one is reaped).

        The transport's ``status`` says how: a wait status, or None when that
        is unknown (a remote run given up after its SIGKILL). The run
        finishes: its Result is made and its scheduler slot freed.
        """
        transport = self._transport
        assert transport is not None
        self._cancel_timers()
        for fd in list(self._splitters):
            self._splitters[fd].close()
        self.state = RunState.EXITED
        status = transport.status
        # None: a remote run given up after its SIGKILL, how it ended unknown.
        returncode = (
            os.waitstatus_to_exitcode(status) if isinstance(status, int) else None
        )
        self._release_cgroup()
        self._scheduler.finished(self)
        self._finish(self._make_result(returncode))

    def transport_failed(self, error: BaseException) -> None:
        """For a transport: the run cannot go on (its connection was lost, the
        child could not be started there), so it fails with ``error`` and
        its scheduler slot is freed. Nothing happens unless it is running."""
        if self.state is not RunState.RUNNING:
            return
        self.state = RunState.FAILED
        self._cancel_timers()
        self._scheduler.finished(self)
        self._fail(Failure(error))

    # -- output ------------------------------------------------------------------

    def _splitter(self, fd: int) -> LineSplitter:
        splitter = self._splitters.get(fd)
        if splitter is None:
            limit = self._max_output if self._max_output is not None else 1 << 20
            splitter = LineSplitter(lambda line: self._line(fd, line), limit)
            self._splitters[fd] = splitter
        return splitter

    def _line(self, fd: int, line: bytes) -> None:
        callback = self._line_callbacks.get(fd)
        if callback is not None:
            try:
                callback(line)
            except Exception:
                _log.failure("line callback of {command} raised", command=self.args[0])
        waiters = self._line_waiters.get(fd)
        if waiters:
            waiters.popleft().callback(line)
            return
        queue = self._line_queues.get(fd)
        if queue is not None:
            queue.push(line)

    def readline(self, stream: str = "stdout") -> Deferred[bytes]:
        """The next line of output (with its newline); ``b""`` at the end.

        Lines read this way are kept (at most ``max_output`` bytes of them,
        oldest dropped first) from the first call on; earlier output is only
        in the captured tail.
        """
        check_thread("Process.readline", self._reactor)
        fd = _stream_fd(stream)
        self._splitter(fd)
        queue = self._line_queues.setdefault(fd, LineQueue(self._max_output))
        if queue:
            return succeed(queue.pop())
        if self.state not in (RunState.QUEUED, RunState.RUNNING):
            return succeed(b"")
        d: Deferred[bytes] = AwaitableDeferred(lambda d: self._drop_line_waiter(fd, d))
        self._line_waiters.setdefault(fd, deque()).append(d)
        return d

    def _drop_line_waiter(self, fd: int, d: Deferred[bytes]) -> None:
        waiters = self._line_waiters.get(fd)
        if waiters is not None and d in waiters:
            waiters.remove(d)

    async def lines(self, stream: str = "stdout") -> AsyncIterator[bytes]:
        """``async for line in proc.lines():`` each line until the end."""
        while True:
            line = await self.readline(stream)
            if not line:
                return
            yield line

    # -- input -----------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Write ``data`` to the child's stdin (buffered while it is queued)."""
        check_thread("Process.write", self._reactor)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"write() takes bytes, not {type(data).__name__}")
        if self._stdin_closed or not self._stdin:
            raise ValueError(f"stdin of {self.args[0]!r} is closed")
        if self._transport is None:
            self._pending_input.append(bytes(data))
        elif self.state is RunState.RUNNING:
            self._transport.write(bytes(data))

    def close_stdin(self) -> None:
        """Close the child's stdin (after what was written is delivered)."""
        check_thread("Process.close_stdin", self._reactor)
        if self._stdin_closed:
            return
        self._stdin_closed = True
        if self._transport is not None and self.state is RunState.RUNNING:
            self._transport.closeStdin()

    # -- signals -------------------------------------------------------------------

    def signal(self, signum: int | str) -> None:
        """Send a signal to the child itself (not its group).

        Raises:
            ProcessLookupError: it is not running.
        """
        check_thread("Process.signal", self._reactor)
        sig = signal_number(signum)
        if self.state is not RunState.RUNNING or self._transport is None:
            raise ProcessLookupError(f"{self.args[0]!r} is {self.state}, not running")
        try:
            self._transport.signalProcess(sig)
        except twisted_error.ProcessExitedAlready:
            raise ProcessLookupError(f"{self.args[0]!r} has exited") from None

    def signal_group(self, signum: int | str) -> None:
        """Send a signal to the child's whole process group."""
        check_thread("Process.signal_group", self._reactor)
        sig = signal_number(signum)
        if self.state is not RunState.RUNNING or self._transport is None:
            raise ProcessLookupError(f"{self.args[0]!r} is {self.state}, not running")
        if not self._transport.signal_group(sig):
            raise ProcessLookupError(f"{self.args[0]!r} has exited")

    def terminate(self, grace: float | None = None) -> Deferred[Result]:
        """SIGTERM the process group; SIGKILL it ``grace`` seconds later.

        A queued process is withdrawn instead; its Result says it never
        started. Returns :meth:`wait`.
        """
        check_thread("Process.terminate", self._reactor)
        self._terminate(grace)
        return self.wait()

    def _terminate(self, grace: float | None = None) -> None:
        grace = self.grace if grace is None else grace
        if self.state is RunState.QUEUED:
            self._never_started()
        elif self.state is RunState.RUNNING:
            self._escalation_now().terminate(grace)

    def kill(self) -> Deferred[Result]:
        """SIGKILL the whole process group now (a queued process is withdrawn).

        Returns :meth:`wait`.
        """
        check_thread("Process.kill", self._reactor)
        if self.state is RunState.QUEUED:
            self._never_started()
        elif self.state is RunState.RUNNING:
            self._escalation_now().kill()
        return self.wait()

    def _escalation_now(self) -> Escalation:
        # Made on the first terminate or kill: most runs end by themselves.
        if self._escalation is None:
            assert self._transport is not None  # RUNNING: transport_started ran
            self._escalation = Escalation(self._transport, self._reactor)
        return self._escalation

    def _never_started(self) -> None:
        # terminate()/kill() of a queued process is an answer, not an error:
        # it ends with a Result that says it never started.
        self._scheduler.withdraw(self)
        self.state = RunState.CANCELLED
        self._cancel_timers()
        self._finish(self._make_result(None))

    def _withdraw(self, error: BaseException) -> None:
        self._scheduler.withdraw(self)
        self.state = RunState.CANCELLED
        self._cancel_timers()
        self._fail(Failure(error))

    # -- waiting -------------------------------------------------------------------

    @property
    def result(self) -> Result | None:
        """The Result once the process has ended, else None."""
        return self._result

    def wait(self) -> Deferred[Result]:
        """A Deferred for the :class:`Result`.

        Cancelling it terminates the process (SIGTERM to the group, SIGKILL
        after ``grace``) and fails it with ``CancelledError`` at once.
        """
        check_thread("Process.wait", self._reactor)
        return self._wait()

    def _wait(self) -> Deferred[Result]:
        # wait() once the thread is known to be the reactor's (run() checked).
        if self._result is not None:
            return succeed(self._result)
        if self._failure is not None:
            return fail(self._failure)
        d: Deferred[Result] = AwaitableDeferred(self._cancel_wait)
        self._waiters.append(d)
        return d

    def _cancel_wait(self, d: Deferred[Result]) -> None:
        if d in self._waiters:
            self._waiters.remove(d)
        if self.state is RunState.QUEUED:
            error = CancelledError(f"{self.args[0]!r} was cancelled while queued")
            self._withdraw(error)
        elif self.state is RunState.RUNNING:
            self._terminate()
            # The caller that cancelled gets control back only once the kill
            # is done: an asyncio task that cancelled waits for it (see
            # AwaitableDeferred), and so does a blocking caller (untwisted.run's
            # timeout, Ctrl-C) on the global reactor.
            end = self._wait()
            end.addErrback(lambda _: None)  # a failure there is this one's
            if isinstance(d, AwaitableDeferred):
                d.cleanup = end
            if not untwisted.lowlevel.is_loop_reactor(self._reactor):
                untwisted.lowlevel.default_driver().linger(end)
            error = CancelledError(
                f"{self.args[0]!r} was cancelled; its process group got SIGTERM "
                f"(SIGKILL after {self.grace:g} s)"
            )
        else:
            return
        d.errback(Failure(error))


def _stream_fd(stream: str) -> int:
    if stream == "stdout":
        return 1
    if stream == "stderr":
        return 2
    raise ValueError(f"stream must be 'stdout' or 'stderr', not {stream!r}")


def _spawn_error(
    args: tuple[str, ...],
    cwd: str | None,
    env: Mapping[str, str] | None,
    error: Exception,
) -> SpawnError:
    """Turn what Popen raised into a SpawnError that says what to do.

    The class says what went wrong as the builtins do: a program that does
    not exist is a :class:`CommandNotFound` (a ``FileNotFoundError``), one
    that may not be executed a :class:`NotExecutable` (a
    ``PermissionError``), as :mod:`subprocess` would raise them.
    """
    command = clip_command(" ".join(args), len(args))
    code = getattr(error, "errno", None)
    filename = getattr(error, "filename", None)
    kind: type[SpawnError] = SpawnError
    if not isinstance(error, OSError):
        reason = str(error)
    elif cwd is not None and filename is not None and os.fsdecode(filename) == cwd:
        if code == errno.ENOENT:
            reason = f"working directory {cwd!r} does not exist"
        elif code == errno.ENOTDIR:
            reason = f"working directory {cwd!r} is not a directory"
        else:
            reason = f"cannot enter working directory {cwd!r}: {error.strerror}"
    elif code == errno.ENOENT:
        kind = CommandNotFound
        interpreter = _missing_interpreter(args[0], cwd, env)
        if interpreter is not None:
            reason = (
                f"{args[0]!r} exists, but its interpreter {interpreter!r} "
                "(its #! line) does not"
            )
        elif os.sep in args[0]:
            reason = f"{args[0]!r} does not exist"
        else:
            path = (env or os.environ).get("PATH", os.defpath)
            reason = f"command {args[0]!r} not found on PATH ({path})"
    elif code == errno.EACCES and not args[0]:
        kind = NotExecutable  # as subprocess.run(['']) fails: EACCES
        reason = "the program's name is empty ('')"
    elif code == errno.EACCES and os.sep in args[0] and _is_dir(args[0], cwd):
        kind = NotExecutable
        reason = f"{args[0]!r} is a directory, not a program"
    elif code == errno.EACCES:
        kind = NotExecutable
        reason = f"{args[0]!r} is not executable (permission denied)"
    elif code == errno.ENOEXEC:
        reason = f"{args[0]!r} is not a program this system can run (exec format error)"
    elif code == errno.E2BIG:
        reason = _too_long(args, env)
    elif code in (errno.EMFILE, errno.ENFILE):
        reason = (
            "out of file descriptors (each run needs 3 pipes); raise the limit "
            "(ulimit -n) or run fewer at once (lower max_running)"
        )
    elif code == errno.EAGAIN:
        reason = (
            "out of process slots (fork failed with EAGAIN); raise the limit "
            "(ulimit -u) or run fewer at once (lower max_running)"
        )
    else:
        reason = str(error)
    spawn_error = kind(code or 0, f"cannot run {command}: {reason}")
    spawn_error.filename = filename
    spawn_error.__cause__ = error
    return spawn_error


def _is_dir(program: str, cwd: str | None) -> bool:
    # exec() resolves a relative path in the child, after the chdir to cwd.
    return os.path.isdir(os.path.join(cwd or "", program))


def _missing_interpreter(
    program: str, cwd: str | None, env: Mapping[str, str] | None
) -> str | None:
    """The ``#!`` interpreter of ``program`` if the script exists but it doesn't.

    exec() reports a missing interpreter as ENOENT, the same as a missing
    program; saying "does not exist" (or "not found on PATH") of a file the
    user can see misleads.
    """
    if os.sep in program:
        found: str | None = os.path.join(cwd or "", program)
    else:
        path = (env or os.environ).get("PATH", os.defpath)
        found = shutil.which(program, path=path)
    return None if found is None else missing_interpreter(found)


# Linux refuses one argument (or environment entry) longer than 32 pages.
_MAX_ARG_STRLEN = 32 * 4096


def _too_long(args: tuple[str, ...], env: Mapping[str, str] | None) -> str:
    """Why exec() said E2BIG: the sizes involved, and what to do instead."""
    environment = os.environ if env is None else env
    arg_bytes = sum(len(os.fsencode(a)) + 1 for a in args)
    env_bytes = sum(
        len(os.fsencode(k)) + len(os.fsencode(v)) + 2 for k, v in environment.items()
    )
    longest = max(range(len(args)), key=lambda i: len(args[i]))
    longest_bytes = len(os.fsencode(args[longest]))
    if longest_bytes > _MAX_ARG_STRLEN:
        detail = (
            f"argument {longest} alone is {longest_bytes} bytes, and Linux takes "
            f"at most {_MAX_ARG_STRLEN} in one argument"
        )
    else:
        try:
            limit = f"the system takes about {os.sysconf('SC_ARG_MAX')}"
        except (OSError, ValueError):  # pragma: no cover - Linux has it
            limit = "that is more than the system takes"
        detail = (
            f"{len(args)} arguments of {arg_bytes} bytes and an environment of "
            f"{env_bytes} bytes; {limit} in all"
        )
    return (
        f"the argument list is too long (E2BIG: {detail}); pass large data on "
        "stdin (input=) or in a file instead"
    )
