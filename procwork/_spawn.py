"""Start a child in its own session and reap it in O(1), on Twisted's transport.

:class:`GroupProcess` is Twisted's process transport with the two pieces
that cost O(live children) per process replaced: the child is started with
:class:`subprocess.Popen` (``start_new_session=True``) instead of Twisted's
``_fork``, and reaped through a pidfd instead of Twisted's reap table. Its
pipes are read dry and closed when the child exits, and check a hang-up
before acting on it; starting a child is atomic with respect to Ctrl-C and
the other fatal signals (:func:`signals_held_while_starting`). The lifeline
and the orphan reaper hear of each child through :func:`observe`.

Design: ARCHITECTURE.md, "The spawn path".
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import threading
import weakref
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, cast

from twisted.internet import error as twisted_error
from twisted.internet import process as twisted_process
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFDSet
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

import untwisted
from procwork._reactor import DescriptorReactor, Reactor, ThreadCalls

__all__ = ["GroupProcess", "LiveObserver", "live_processes", "observe"]

# A pipe that is still readable once the child is gone is fed by some
# grandchild; read at most this much of it before closing our end.
_DRAIN_LIMIT = 4 * 1024 * 1024

_HAVE_PIDFD = hasattr(os, "pidfd_open")

# Every child started here and not yet reaped; the shutdown hook walks it.
_live: set[GroupProcess] = set()

# Per reactor, the children reaped whose protocol its next turn tells (see
# GroupProcess.maybeCallProcessEnded and _DueEnds).
_due_ends: weakref.WeakKeyDictionary[object, _DueEnds] = weakref.WeakKeyDictionary()


def signals_held_while_starting(reactor: object) -> AbstractContextManager[None]:
    """A block in which starting a child is atomic with respect to signals.

    From the first pipe to the child on record as live, an exception raised
    by a signal handler (Ctrl-C, SIGTERM, ...) would leave a running child
    nobody knows of, never killed at exit. Inside this block such an
    exception is postponed until the outermost held block ends
    (``untwisted.lowlevel.hold_signals()``), when the child is on record.

    Holding works only for signals handled by untwisted (a default SIGINT
    handler raises wherever it is), so this first makes the fatal signals
    untwisted's (``untwisted.lowlevel.catch_fatal_signals()``), but only while
    ``reactor`` is not running: that is blocking code starting a child before
    anything drove the reactor (untwisted installs the handlers itself when
    it starts it). A program's own ``reactor.run()`` owns its signals, and an
    exception raised by a handler inside Twisted's dispatch would be
    swallowed (logged) there.

    Which thread may call: any. Python runs signal handlers on the main
    thread only, so another thread's spawn cannot be torn by one, and
    holding there would postpone the main thread's exception into this one:
    elsewhere the block holds nothing.
    """
    if threading.get_ident() != _MAIN_THREAD:
        return _NOT_HELD
    if not getattr(reactor, "running", False):
        untwisted.lowlevel.catch_fatal_signals()
    return untwisted.lowlevel.hold_signals()


_MAIN_THREAD = threading.main_thread().ident
_NOT_HELD = contextlib.nullcontext()


class LiveObserver:
    """Told of each child around its fork and as it leaves ``_live``.

    Register one with :func:`observe`. Two modules above this one do: the
    lifeline (:mod:`procwork._lifeline`) registers each child with its
    helper, and the orphan reaper (:mod:`procwork._orphans`) starts at the
    first spawn of a PID 1 or subreaper. So the spawn transport knows neither
    (they import it, never the other way round). The methods here do
    nothing: override those you need. None may raise: they run inside the
    spawn, and an exception there would lose track of a child.
    """

    def forking(self, pipes: tuple[int, ...]) -> tuple[int, ...]:
        """A child is about to be forked; ``pipes`` are our descriptors of
        the pipes made for it alone. Returns a token for the calls below."""
        return ()

    def started(self, proc: GroupProcess, token: tuple[int, ...]) -> None:
        """The child runs, and is on record in ``_live``."""

    def not_started(self, token: tuple[int, ...]) -> None:
        """The fork or the exec failed: no child."""

    def reaped(self, proc: GroupProcess) -> None:
        """The child has been reaped (it left ``_live``)."""


_observers: tuple[LiveObserver, ...] = ()


def observe(observer: LiveObserver) -> None:
    """Tell ``observer`` of every child started from now on, in order of
    registration (see :class:`LiveObserver`)."""
    global _observers
    _observers = (*_observers, observer)


def live_processes() -> frozenset[GroupProcess]:
    """Children started by procwork that have not been reaped yet."""
    return frozenset(_live)


# -- pipes that check a hang-up before acting on it ------------------------------
#
# epoll reports events by descriptor number, a batch at a time, and Twisted
# dispatches a batch's events one after the other to whatever selectable owns
# each number *now*. When handling one event closes a pipe (a process's end
# drains and closes its pipes) and a later one starts a process (a line
# callback, a task woken by a result, any user code), the new pipes get the
# freed numbers, and the batch's remaining events for the old pipes reach the
# new ones: a hang-up makes Twisted close the new child's stdout (its output
# is lost, the run ends "exited 0" with nothing) or its stdin (its input is
# lost). The kernel builds such batches rarely (a child exiting while the
# parent collects a batch puts its pidfd ahead of its pipes), but it does.
#
# Two ways out were possible: never create pipes inside a batch (defer every
# spawn to the next reactor turn), or make the pipes themselves immune. The
# first needs to know reliably that we are inside a batch whoever drives the
# reactor (a program's own reactor.run() included), costs a reactor turn per
# spawn, and cannot apply to a critical run that must start at once. The
# second is local and free: a pipe asks the kernel, with one zero-timeout
# poll() of its own descriptor, whether the hang-up is real before acting on
# it, and only when the reactor reported one (about once per pipe per run).
# A stale report is dropped and the pipe registers itself again (the reactor
# unregistered it before telling it). Stale *readable* events are harmless:
# a read finds nothing (EAGAIN), except on a writer, whose "readable" means
# "the child closed its stdin", which is checked the same way.

_HANG_UP = select.POLLHUP | select.POLLERR | select.POLLNVAL


def _poll_now(fd: int, events: int) -> int:
    """The poll() events of ``fd`` right now (hang-ups are always reported)."""
    poller = select.poll()
    poller.register(fd, events)
    ready = poller.poll(0)
    return ready[0][1] if ready else 0


def _maybe_stale(reactor: object, reason: Failure) -> bool:
    """Whether a ``connectionLost(reason)`` may come from a stale event.

    Only the reactor's report of a hang-up can be: exactly ``ConnectionDone``
    or ``ConnectionLost`` while it runs. When it is not running, this is its
    ``disconnectAll()`` at shutdown, which must be obeyed; any other reason
    is an error raised while handling the pipe.
    """
    return type(reason.value) in (
        twisted_error.ConnectionDone,
        twisted_error.ConnectionLost,
    ) and bool(getattr(reactor, "running", False))


class _ClosesNow:
    """``close_now`` for both pipe ends: the end is known to be real."""

    _sure = False  # the end is known to be real

    def close_now(self) -> None:
        """Close our end at once (the child is gone; what it wrote was read)."""
        self._sure = True
        pipe = cast(Any, self)
        pipe.stopReading()
        pipe.stopWriting()
        pipe.connectionLost(Failure(twisted_error.ConnectionDone()))


class _Reader(_ClosesNow, twisted_process.ProcessReader):
    """The reader of a child's stdout or stderr; closes only on a real end.

    A real end is one that our own code decided (``loseConnection``, the
    drain at the child's exit), that a read saw (EOF), or that the kernel
    confirms: hung up with nothing left to read. Closing twice is a no-op
    (a protocol may call ``loseConnection`` as the child ends).
    """

    _registered = False  # we asked the reactor to watch us for reading

    def startReading(self) -> None:
        self._registered = True
        super().startReading()

    def stopReading(self) -> None:
        self._registered = False
        super().stopReading()

    def doRead(self) -> Any:
        why = super().doRead()
        if why:
            self._sure = True  # EOF or a read error, seen by us
        return why

    def loseConnection(self) -> None:
        self._sure = True
        super().loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        if self.disconnected:
            return
        if not self._sure and _maybe_stale(self.reactor, reason):
            events = _poll_now(self.fd, select.POLLIN)
            # Readable (data, perhaps with a hang-up): a stale report, or a
            # real one that must not lose the data; the next turn reads it.
            if not events & _HANG_UP or events & select.POLLIN:
                if self._registered:
                    super().startReading()  # the reactor dropped us
                return
        self._sure = True
        super().connectionLost(reason)


class _Writer(_ClosesNow, twisted_process.ProcessWriter):
    """The writer of a child's stdin; closes only on a real end.

    As :class:`_Reader`; the kernel confirms an end by reporting an error or
    hang-up on the write end (the child closed its stdin). Until then,
    buffered input stays buffered.
    """

    _reading = False  # the reactor watches us for "readable" (see doRead)
    _writing = False  # ... for writable: input is waiting

    def startReading(self) -> None:
        self._reading = True
        super().startReading()

    def stopReading(self) -> None:
        self._reading = False
        super().stopReading()

    def startWriting(self) -> None:
        self._writing = True
        super().startWriting()

    def stopWriting(self) -> None:
        self._writing = False
        super().stopWriting()

    def doRead(self) -> Any:
        # Twisted reads "readable" on a write end as "the child closed it";
        # a stale readable event would drop the input.
        if self.enableReadHack and not self._closed_by_child():
            return None
        why = super().doRead()
        if why:
            self._sure = True
        return why

    def doWrite(self) -> Any:
        why = super().doWrite()
        if why:
            self._sure = True  # a write failed (EPIPE) or a close completed
        return why

    def connectionLost(self, reason: Failure) -> None:
        if self.disconnected:
            return
        if (
            not self._sure
            and _maybe_stale(self.reactor, reason)
            and not self._closed_by_child()
        ):
            # The reactor dropped us: watch again what we watched.
            if self._reading:
                super().startReading()
            if self._writing:
                super().startWriting()
            return
        self._sure = True
        super().connectionLost(reason)

    def _closed_by_child(self) -> bool:
        return bool(_poll_now(self.fd, select.POLLOUT) & _HANG_UP)


class _PidfdWatch:
    """An ``IReadDescriptor`` for a pidfd: readable once the child has exited."""

    def __init__(self, proc: GroupProcess, fd: int) -> None:
        self._proc = proc
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def doRead(self) -> None:
        self._proc._child_exited()

    def connectionLost(self, reason: Failure) -> None:
        proc = self._proc
        if self._fd >= 0 and _maybe_stale(proc._reactor, reason):
            # A pidfd does not hang up while its child is unreaped: this is a
            # stale event (see _Reader), or somebody else reaped the child.
            # _reap_own tells them apart.
            proc._reap_own()
            if proc._watch is self:
                proc._reactor.addReader(self)
            return
        # The reactor dropped us (disconnectAll at shutdown): fall back to
        # Twisted's own reaping so the exit is still noticed.
        proc._pidfd_lost(self)

    def logPrefix(self) -> str:
        return "procwork-pidfd"

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class GroupProcess(twisted_process.Process):
    """Twisted's process transport for a child that leads its own session.

    The child's pid is also its process group id (``pgid``), so
    :meth:`signal_group` reaches its whole tree. Call from the reactor thread.
    The constructor returns with the child recorded as live even if a fatal
    signal arrives meanwhile; the signal's exception is raised after that.

    Args:
        reactor: The reactor; must provide ``IReactorFDSet`` for pidfd reaping.
        protocol: The ``IProcessProtocol`` to connect.
        args: The argv; ``args[0]`` is looked up on ``PATH`` (of ``env``).
        env: The child's whole environment; ``None`` inherits ours.
        cwd: The child's working directory; ``None`` inherits ours.
        nice: Added to the child's niceness right after it starts.
        stdin: ``True`` for a pipe we write to, ``False`` for ``/dev/null``.
        inherit_stdio: The child shares our stdin, stdout and stderr (no
            pipes at all; ``stdin`` is then ignored).
        user, group, extra_groups, umask: Popen's: who the child runs as
            (ids) and its umask (-1: ours). For services with ``user=``.
        pass_fds: Popen's: our descriptors the child keeps open.

    Raises:
        OSError: the child could not be started (the caller turns this into
            a :class:`procwork.SpawnError`).
    """

    # Twisted's pipes, checking a hang-up before acting on it (see _Reader).
    processReaderFactory = _Reader
    processWriterFactory = _Writer

    def __init__(
        self,
        reactor: Reactor,
        protocol: ProcessProtocol,
        args: Sequence[str | bytes],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        nice: int = 0,
        stdin: bool = True,
        inherit_stdio: bool = False,
        user: int | None = None,
        group: int | None = None,
        extra_groups: Sequence[int] | None = None,
        umask: int = -1,
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.pgid: int | None = None
        self.kill_group_on_exit = False
        self._popen: subprocess.Popen[bytes] | None = None
        self._watch: _PidfdWatch | None = None
        self._reaped: list[Deferred[None]] = []
        self._reaped_by_us = False
        self._end_scheduled = False
        self._nice = nice
        self._user, self._group, self._umask = user, group, umask
        self._extra_groups = extra_groups
        self._pass_fds = tuple(pass_fds)
        child_fds: dict[int, str | int] = {0: "w", 1: "r", 2: "r"}
        if inherit_stdio:
            child_fds = {0: 0, 1: 1, 2: 2}  # ints: Twisted passes them through
        elif not stdin:
            child_fds[0] = _devnull()
        # The child's descriptors that Twisted makes a new pipe for.
        self._own_pipes = tuple(
            fd for fd, how in child_fds.items() if how in ("r", "w")
        )
        # From the first pipe to the child on record: _live, its pidfd, the
        # protocol's connectionMade (Process.transport_started).
        with signals_held_while_starting(reactor):
            super().__init__(
                reactor, args[0], list(args), env, cwd, protocol, childFDs=child_fds
            )
            self._watch_exit(reactor)

    # -- starting --------------------------------------------------------

    def _fork(
        self,
        path: str | None,
        uid: int | None,
        gid: int | None,
        executable: str | bytes,
        args: list[str | bytes],
        environment: Mapping[str, str] | None,
        **kwargs: Any,
    ) -> None:
        fdmap: dict[int, int] = kwargs["fdmap"]  # child fd -> our fd for it
        observers = _observers
        # Before the fork: the lifeline learns of the pipes made for this
        # child alone, so a SIGKILL between the fork and the child's
        # registration still finds it (see procwork._lifeline_main).
        pipes = tuple(fdmap[fd] for fd in self._own_pipes)
        tokens = [observer.forking(pipes) for observer in observers]
        try:
            popen = subprocess.Popen(
                args,
                stdin=fdmap[0],
                stdout=fdmap[1],
                stderr=fdmap[2],
                env=environment,
                cwd=path,
                close_fds=True,
                start_new_session=True,
                user=self._user,
                group=self._group,
                extra_groups=self._extra_groups,
                umask=self._umask,
                pass_fds=self._pass_fds,
            )
        except BaseException:
            for observer, token in zip(observers, tokens, strict=True):
                observer.not_started(token)
            raise
        self._popen = popen
        self.pid = self.pgid = popen.pid
        self.status = -1
        _live.add(self)
        for observer, token in zip(observers, tokens, strict=True):
            observer.started(self, token)
        if self._nice:
            # Set from the parent: a preexec_fn would force fork() over
            # vfork() and is unsafe with threads. The child runs a few
            # microseconds at our niceness first, which does not matter.
            # If it already exited, or we may not, it runs un-niced.
            with contextlib.suppress(OSError):
                os.setpriority(
                    os.PRIO_PROCESS,
                    popen.pid,
                    os.getpriority(os.PRIO_PROCESS, popen.pid) + self._nice,
                )

    def _watch_exit(self, reactor: Reactor) -> None:
        pid = self.pid
        if pid is None:  # Twisted's registration reaped it already
            return
        if not (_HAVE_PIDFD and IReactorFDSet.providedBy(reactor)):
            return  # stay in Twisted's reaping table
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return
        # Out of Twisted's table, which every SIGCHLD walks: O(1) per exit.
        if twisted_process.reapProcessHandlers.get(pid) is self:
            twisted_process.unregisterReapProcessHandler(pid, self)
        self._watch = _PidfdWatch(self, fd)
        cast(DescriptorReactor, reactor).addReader(self._watch)  # providedBy, above

    # -- reaping ---------------------------------------------------------

    def reapProcess(self) -> None:
        """Reap the child if it has exited (never blocks)."""
        if self._watch is None:
            super().reapProcess()
            return
        self._reap_own()

    def _child_exited(self) -> None:
        # The pidfd is readable. Don't trust the event alone: epoll reports
        # by descriptor number, and when a pipe closed earlier in the same
        # batch of events had the number this new pidfd now has, its stale
        # event lands here. _reap_own asks the kernel.
        self._reap_own()

    def _reap_own(self) -> None:
        pid = self.pid
        if pid is None or not _has_exited(pid):
            return
        # It is a zombie now, so its pid (our process group id) cannot have
        # been reused: killing what is left of the group before reaping is
        # race-free.
        if self.kill_group_on_exit:
            self.signal_group(signal.SIGKILL)
        try:
            reaped, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            # Somebody else's waitpid(-1) took it; the status is lost.
            reaped, status = pid, 255 << 8
        if reaped:
            self._stop_watching()
            self._reaped_by_us = True
            self.processEnded(status)

    def _stop_watching(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            self._reactor.removeReader(watch)
            watch.close()

    def _pidfd_lost(self, watch: _PidfdWatch) -> None:
        if self._watch is watch:
            self._watch = None
            watch.close()
            if self.pid is not None:
                twisted_process.registerReapProcessHandler(self.pid, self)

    def maybeCallProcessEnded(self) -> None:
        # Tell the protocol only on the next reactor turn, never from inside
        # a batch of epoll events. Whatever reacts to the end (the next
        # queued run, a waiting task, user code) may open descriptors, which
        # can reuse numbers closed earlier in this batch; the batch's
        # remaining events for those numbers would then be dispatched to
        # them. procwork's own pipes and pidfds check such events (_Reader),
        # but a socket or a plain Twisted pipe opened by user code cannot.
        # On the next turn the batch is over and its stale events with it.
        if self._end_scheduled:
            return
        if self.pipes or not self.lostProcess:
            super().maybeCallProcessEnded()
            return
        reactor = self._reactor
        if not (
            getattr(reactor, "running", False) and hasattr(reactor, "callFromThread")
        ):
            # No next turn will come (the reactor stopped, or never ran):
            # tell the protocol now.
            super().maybeCallProcessEnded()
            return
        self._end_scheduled = True
        due = _due_ends.get(reactor)
        if due is None:
            due = _due_ends[reactor] = _DueEnds(reactor)
        due.add(self)

    def _tell_end(self) -> None:
        super().maybeCallProcessEnded()

    def when_reaped(self) -> Deferred[None]:
        """A Deferred that fires once the child has been reaped."""
        d: Deferred[None] = Deferred()
        if self.exited:
            d.callback(None)
        else:
            self._reaped.append(d)
        return d

    def processEnded(self, status: int) -> None:
        _live.discard(self)
        for observer in _observers:
            observer.reaped(self)
        if self.kill_group_on_exit and not self._reaped_by_us and self.pgid:
            # Reaped before we could look (Twisted's constructor reaps a child
            # that exits at once). Kill the rest of the group now: while any
            # member lives, the group id stays reserved; if none does, its
            # number would have to be recycled by the kernel within these
            # microseconds to hit another group, which pid allocation (cyclic
            # up to pid_max) does not do.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, signal.SIGKILL)
        if self._popen is not None:
            # Tell Popen it is over, or its __del__ would queue the pid for a
            # later waitpid that could hit an unrelated process.
            self._popen.returncode = os.waitstatus_to_exitcode(status)
            self._popen = None
        super().processEnded(status)
        self._drain_and_close_pipes()
        waiters, self._reaped = self._reaped, []
        for d in waiters:
            d.callback(None)

    def _drain_and_close_pipes(self) -> None:
        # Output the child wrote before it exited is in the pipe now; read
        # it, then close, so a grandchild holding the write end open (a
        # daemon started by a script, a sleep left behind) can't delay the
        # end. Twisted would wait for EOF, possibly for ever.
        for child_fd, pipe in list(self.pipes.items()):
            if isinstance(pipe, twisted_process.ProcessReader):
                self._drain(child_fd, pipe.fileno())
            if child_fd in self.pipes:
                if isinstance(pipe, _Reader | _Writer):
                    pipe.close_now()
                else:  # pragma: no cover (our factories make every pipe)
                    pipe.stopReading()
                    pipe.stopWriting()
                    pipe.connectionLost(Failure(twisted_error.ConnectionDone()))

    def _drain(self, child_fd: int, fd: int) -> None:
        taken = 0
        while taken < _DRAIN_LIMIT:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                return
            if not data:
                return
            taken += len(data)
            self.childDataReceived(child_fd, data)

    # -- signalling --------------------------------------------------------

    @property
    def reactor(self) -> Reactor:
        """The reactor the child was started on (its pipes and exit are watched
        there)."""
        return cast(Reactor, self._reactor)

    @property
    def exited(self) -> bool:
        """True once the child has been reaped."""
        return self.pid is None

    def signal_group(self, signum: int) -> bool:
        """Send ``signum`` to the child's whole process group.

        Only while the child (the group leader) is not yet reaped: until then
        its pid, which is the group id, cannot be reused, so the signal can't
        reach an unrelated group. Returns False, sending nothing, after that.
        """
        if self.pid is None or self.pgid is None:
            return False
        try:
            os.killpg(self.pgid, signum)
        except ProcessLookupError:
            return False
        except PermissionError:
            # A member changed its uid (a setuid helper): reach the leader.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signum)
        return True


_devnull_fd: int | None = None


def _devnull() -> int:
    """One read-only /dev/null descriptor (close-on-exec), shared by all spawns."""
    global _devnull_fd
    if _devnull_fd is None:
        _devnull_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return _devnull_fd


def _has_exited(pid: int) -> bool:
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True  # already reaped by someone else; _reap_own copes
    return info is not None


class _DueEnds:
    """The ended children of one reactor whose protocols its next turn tells.

    One queued call per reactor turn tells all the ends of that turn, in the
    order they came, rather than one ``callFromThread`` per child: each of
    those wrote to the reactor's waker pipe and woke it once more, a
    measurable share of a short run's cost. A reactor that stops runs no
    further turn, so its shutdown tells them at once instead.
    """

    def __init__(self, reactor: ThreadCalls) -> None:
        # Weak: _due_ends holds this strongly, under the reactor as a weak key.
        self._reactor = weakref.ref(reactor)
        self._procs: dict[GroupProcess, None] = {}
        self._queued = False
        if hasattr(reactor, "addSystemEventTrigger"):
            reactor.addSystemEventTrigger("after", "shutdown", self._at_shutdown)

    def add(self, proc: GroupProcess) -> None:
        self._procs[proc] = None
        self._queue()

    def _queue(self) -> None:
        reactor = self._reactor()
        if not self._queued and reactor is not None:
            self._queued = True
            reactor.callFromThread(self._tell)

    def _tell(self) -> None:
        self._queued = False
        due, self._procs = self._procs, {}
        try:
            while due:
                proc = next(iter(due))
                del due[proc]
                proc._tell_end()
        finally:
            if due:  # one protocol raised (Twisted logs it): the rest next turn
                for proc in self._procs:
                    due[proc] = None
                self._procs = due
                self._queue()

    def _at_shutdown(self) -> None:
        if not getattr(self._reactor(), "running", False):
            due, self._procs = self._procs, {}
            self._queued = False  # a queued _tell, should it ever run, finds none
            for proc in due:
                proc._tell_end()


def kill_all_now() -> None:
    """SIGKILL every live child's group; the last resort at interpreter exit."""
    for proc in list(_live):
        proc.signal_group(signal.SIGKILL)
