"""Process: one child from queued to reaped, the single state object for it.

Both :func:`procwork.run` and :func:`procwork.spawn` build one of these; it
waits in the scheduler's queue, starts the child, captures its output,
enforces the timeout with SIGTERM-then-SIGKILL to the whole process group,
and produces the :class:`~procwork.Result`.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol

from twisted.internet import error as twisted_error
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

import untwisted
from procwork._errors import SpawnError
from procwork._output import LineQueue, LineSplitter, TailBuffer
from procwork._result import Result
from procwork._scheduler import Priority, Scheduler
from procwork._shutdown import watch_reactor
from procwork._spawn import GroupProcess, signals_held_while_starting

__all__ = ["Process"]

_log = Logger(namespace="procwork")

# Niceness added to "low" children.
LOW_PRIORITY_NICE = 10

LineCallback = Callable[[bytes], object]


class ChildTransport(Protocol):
    """What a Process drives: a local :class:`GroupProcess`, or a remote run's
    SSH channel (``procwork/_remote.py``)."""

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
        self._owner._started_as(self.transport)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self._owner._output(childFD, data)

    def processEnded(self, reason: Failure) -> None:
        self._owner._ended()


class Process:
    """A child process, queued, running or finished: the handle of :func:`spawn`.

    All methods are called from the reactor thread (from clockwork tasks,
    ``async def`` code on the reactor, or Twisted callbacks).

    Attributes:
        args: The argv.
        priority: Its :class:`Priority`.
        pid: Its pid once started, else None.
    """

    def __init__(
        self,
        args: tuple[str, ...],
        *,
        reactor: Any,
        scheduler: Scheduler,
        env: Mapping[str, str] | None,
        cwd: str | None,
        priority: Priority,
        timeout: float | None,
        grace: float,
        max_output: int | None,
        stdin: bool,
        inherit_stdio: bool = False,
        kill_leftovers: bool = True,
        on_stdout: LineCallback | None = None,
        on_stderr: LineCallback | None = None,
    ) -> None:
        self.args = args
        self.priority = priority
        self.pid: int | None = None
        self.timeout = timeout
        self.grace = grace
        self._reactor = reactor
        self._scheduler = scheduler
        self._env = env
        self._cwd = cwd
        self._stdin = stdin and not inherit_stdio
        self._inherit_stdio = inherit_stdio
        self._kill_leftovers = kill_leftovers
        self._max_output = max_output
        self._transport: ChildTransport | None = None
        self._buffers = {1: TailBuffer(max_output), 2: TailBuffer(max_output)}
        self._splitters: dict[int, LineSplitter] = {}
        self._line_queues: dict[int, LineQueue] = {}
        self._line_waiters: dict[int, deque[Deferred[bytes]]] = {}
        self._line_callbacks: dict[int, LineCallback] = {}
        for fd, callback in ((1, on_stdout), (2, on_stderr)):
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
        self._kill_call: Any = None
        self._submitted = time.monotonic()
        self._started: float | None = None
        self.state = "queued"

    def __repr__(self) -> str:
        what = self.state
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
        """Called by the scheduler: start the child now.

        Atomic with respect to Ctrl-C and the other fatal signals: one that
        arrives meanwhile is raised when the child is on record as live and
        this Process as running (or failed), so the exit path kills it.
        """
        self._started = time.monotonic()
        nice = LOW_PRIORITY_NICE if self.priority is Priority.LOW else 0
        with signals_held_while_starting(self._reactor):
            try:
                watch_reactor(self._reactor)
                GroupProcess(
                    self._reactor,
                    _Protocol(self),
                    self.args,
                    env=self._env,
                    cwd=self._cwd,
                    nice=nice,
                    stdin=self._stdin,
                    inherit_stdio=self._inherit_stdio,
                )
            except Exception as e:  # OSError mostly; ValueError: a NUL in env
                # Whatever it is, fail this run and free its slot: a job stuck
                # in the scheduler would hang its caller and shrink the cap for
                # good.
                self._spawn_failed(e)

    def _started_as(self, transport: ChildTransport) -> None:
        self._transport = transport
        self.pid = transport.pgid
        self.state = "running"
        transport.kill_group_on_exit = self._kill_leftovers
        for data in self._pending_input:
            transport.write(data)
        self._pending_input.clear()
        if self._stdin_closed:
            transport.closeStdin()

    def _spawn_failed(self, error: Exception) -> None:
        self.state = "failed"
        self._cancel_timers()
        self._scheduler.finished(self)
        self._fail(Failure(_spawn_error(self.args, self._cwd, self._env, error)))

    def _expire(self) -> None:
        self._timeout_call = None
        self._timed_out = True
        if self.state == "queued":
            self._scheduler.withdraw(self)
            self.state = "timed out"
            self._finish(self._make_result(None))
        elif self.state == "running":
            _log.info(
                "{command} timed out after {timeout} s; terminating its process group",
                command=" ".join(self.args),
                timeout=self.timeout,
            )
            self._terminate()

    def _ended(self) -> None:
        transport = self._transport
        assert transport is not None
        self._cancel_timers()
        for fd in list(self._splitters):
            self._splitters[fd].close()
        self.state = "exited"
        status = transport.status
        returncode = (
            os.waitstatus_to_exitcode(status) if isinstance(status, int) else 255
        )
        self._scheduler.finished(self)
        self._finish(self._make_result(returncode))

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
        for name in ("_timeout_call", "_kill_call"):
            call = getattr(self, name)
            if call is not None and call.active():
                call.cancel()
            setattr(self, name, None)

    # -- output ------------------------------------------------------------------

    def _output(self, fd: int, data: bytes) -> None:
        buffer = self._buffers.get(fd)
        if buffer is None:
            return
        buffer.write(data)
        splitter = self._splitters.get(fd)
        if splitter is not None:
            splitter.feed(data)

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
        fd = _stream_fd(stream)
        self._splitter(fd)
        queue = self._line_queues.setdefault(fd, LineQueue(self._max_output))
        if queue:
            return succeed(queue.pop())
        if self.state not in ("queued", "running"):
            return succeed(b"")
        d: Deferred[bytes] = Deferred(lambda d: self._drop_line_waiter(fd, d))
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
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"write() takes bytes, not {type(data).__name__}")
        if self._stdin_closed or not self._stdin:
            raise ValueError(f"stdin of {self.args[0]!r} is closed")
        if self._transport is None:
            self._pending_input.append(bytes(data))
        elif self.state == "running":
            self._transport.write(bytes(data))

    def close_stdin(self) -> None:
        """Close the child's stdin (after what was written is delivered)."""
        if self._stdin_closed:
            return
        self._stdin_closed = True
        if self._transport is not None and self.state == "running":
            self._transport.closeStdin()

    # -- signals -------------------------------------------------------------------

    def signal(self, signum: int | str) -> None:
        """Send a signal to the child itself (not its group).

        Raises:
            ProcessLookupError: it is not running.
        """
        sig = _signal_number(signum)
        if self.state != "running" or self._transport is None:
            raise ProcessLookupError(f"{self.args[0]!r} is {self.state}, not running")
        try:
            self._transport.signalProcess(sig)
        except twisted_error.ProcessExitedAlready:
            raise ProcessLookupError(f"{self.args[0]!r} has exited") from None

    def signal_group(self, signum: int | str) -> None:
        """Send a signal to the child's whole process group."""
        sig = _signal_number(signum)
        if self.state != "running" or self._transport is None:
            raise ProcessLookupError(f"{self.args[0]!r} is {self.state}, not running")
        if not self._transport.signal_group(sig):
            raise ProcessLookupError(f"{self.args[0]!r} has exited")

    def terminate(self, grace: float | None = None) -> Deferred[Result]:
        """SIGTERM the process group; SIGKILL it ``grace`` seconds later.

        A queued process is withdrawn instead; its Result says it never
        started. Returns :meth:`wait`.
        """
        self._terminate(grace)
        return self.wait()

    def _terminate(self, grace: float | None = None) -> None:
        grace = self.grace if grace is None else grace
        if self.state == "queued":
            self._never_started()
        elif self.state == "running" and self._transport is not None:
            transport = self._transport
            # Whatever is left of the group when the leader dies is killed
            # before the leader is reaped (pgid not yet reusable).
            transport.kill_group_on_exit = True
            transport.signal_group(signal.SIGTERM)
            if self._kill_call is None:
                self._kill_call = self._reactor.callLater(grace, self._kill_now)

    def kill(self) -> Deferred[Result]:
        """SIGKILL the whole process group now (a queued process is withdrawn).

        Returns :meth:`wait`.
        """
        if self.state == "queued":
            self._never_started()
        else:
            self._kill_now()
        return self.wait()

    def _kill_now(self) -> None:
        self._kill_call = None
        if self.state == "running" and self._transport is not None:
            self._transport.kill_group_on_exit = True
            if not self._transport.exited:
                self._transport.signal_group(signal.SIGKILL)

    def _never_started(self) -> None:
        # terminate()/kill() of a queued process is an answer, not an error:
        # it ends with a Result that says it never started.
        self._scheduler.withdraw(self)
        self.state = "cancelled"
        self._cancel_timers()
        self._finish(self._make_result(None))

    def _withdraw(self, error: BaseException) -> None:
        self._scheduler.withdraw(self)
        self.state = "cancelled"
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
        if self._result is not None:
            return succeed(self._result)
        if self._failure is not None:
            return fail(self._failure)
        d: Deferred[Result] = Deferred(self._cancel_wait)
        self._waiters.append(d)
        return d

    def _cancel_wait(self, d: Deferred[Result]) -> None:
        if d in self._waiters:
            self._waiters.remove(d)
        if self.state == "queued":
            error = CancelledError(f"{self.args[0]!r} was cancelled while queued")
            self._withdraw(error)
        elif self.state == "running":
            self._terminate()
            # A blocking caller that cancelled (untwisted.run's timeout,
            # Ctrl-C) gets control back only once the kill is done.
            untwisted.default_driver().linger(self.wait())
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


def _signal_number(signum: int | str) -> int:
    if isinstance(signum, str):
        name = signum.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        try:
            return int(signal.Signals[name])
        except KeyError:
            raise ValueError(f"unknown signal {signum!r}") from None
    return int(signum)


def _spawn_error(
    args: tuple[str, ...],
    cwd: str | None,
    env: Mapping[str, str] | None,
    error: Exception,
) -> SpawnError:
    """Turn what Popen raised into a SpawnError that says what to do."""
    command = " ".join(args)
    code = getattr(error, "errno", None)
    filename = getattr(error, "filename", None)
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
        if os.sep in args[0]:
            reason = f"{args[0]!r} does not exist"
        else:
            path = (env or os.environ).get("PATH", os.defpath)
            reason = f"command {args[0]!r} not found on PATH ({path})"
    elif code == errno.EACCES and os.sep in args[0] and _is_dir(args[0], cwd):
        reason = f"{args[0]!r} is a directory, not a program"
    elif code == errno.EACCES:
        reason = f"{args[0]!r} is not executable (permission denied)"
    elif code == errno.ENOEXEC:
        reason = f"{args[0]!r} is not a program this system can run (exec format error)"
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
    spawn_error = SpawnError(code or 0, f"cannot run {command!r}: {reason}")
    spawn_error.filename = filename
    spawn_error.__cause__ = error
    return spawn_error


def _is_dir(program: str, cwd: str | None) -> bool:
    # exec() resolves a relative path in the child, after the chdir to cwd.
    return os.path.isdir(os.path.join(cwd or "", program))
