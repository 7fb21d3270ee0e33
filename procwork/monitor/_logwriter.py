"""The monitor's own log output, written without ever blocking the reactor.

A :class:`LogWriter` writes what the descriptor takes at once, keeps the
rest in a bounded buffer of whole lines, and when that is full drops lines,
counts them and says how many where they are missing. It writes through a
non-blocking path private to the monitor (a new open file description, or
``send(MSG_DONTWAIT)``), leaving the description shared with the shell
alone where it can.

Design: ARCHITECTURE.md, "The monitor's own log".
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import socket
import stat
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from twisted.python.failure import Failure

__all__ = ["DEFAULT_MAX_BUFFERED", "LogWriter"]

#: Bytes of log lines kept for a reader that does not keep up (1 MiB).
DEFAULT_MAX_BUFFERED = 1024 * 1024

# Seconds between tries when a write failed for a reason that may pass (a
# full disk), the descriptor cannot be watched by the reactor, or a log
# daemon's socket went away (ReactorWriter's retry timer).
_RETRY = 0.5

# Write errors that say the reader is gone for good: nothing more is tried.
_GONE = frozenset(
    {errno.EPIPE, errno.EBADF, errno.ECONNRESET, errno.ENOTCONN, errno.EIO, errno.ENXIO}
)


class WriterReactor(Protocol):
    """What a :class:`LogWriter` needs of its reactor: writers
    (``IReactorFDSet``), a timer and a call from another thread."""

    # Any: Twisted's IWriteDescriptor is a zope interface mypy cannot check.
    def addWriter(self, writer: Any, /) -> None: ...
    def removeWriter(self, writer: Any, /) -> None: ...
    def callLater(
        self, delay: float, callable: Callable[..., Any], /, *args: Any, **kw: Any
    ) -> Any: ...
    def callFromThread(
        self, callable: Callable[..., Any], /, *args: Any, **kw: Any
    ) -> None: ...


def _default_notice(count: int, name: str) -> bytes:
    return f"{count} log lines dropped: {name} was not read\n".encode()


class ReactorWriter:
    """What :class:`LogWriter` and the log daemons' ``DatagramWriter`` share:
    their part on the reactor. A writer is watched for writability (or, when
    it cannot be, retried on a timer) from the reactor's thread, whatever
    thread asked. A subclass sets the attributes below and provides
    ``_watch_now`` (start watching, in the reactor's thread) and ``_retried``
    (the retry timer fired)."""

    _reactor: WriterReactor
    _thread: int  # the reactor's thread
    _lock: Any  # a threading.RLock: a signal handler may write too
    _closed: bool
    _watching: bool
    _retry: Any  # an IDelayedCall while a retry is due
    dropped: int  # lines (messages) dropped since the writer was made
    _unreported: int  # dropped, not yet said in a notice

    def _watch_now(self) -> None:
        raise NotImplementedError

    def _retried(self) -> None:
        raise NotImplementedError

    def _in_reactor(self, call: Callable[[], None]) -> None:
        if threading.get_ident() == self._thread:
            call()
        else:
            self._reactor.callFromThread(call)

    def _watch(self) -> None:
        if not self._watching:
            self._in_reactor(self._watch_now)

    def _retry_later(self) -> None:
        self._in_reactor(self._retry_now)

    def _retry_now(self) -> None:
        with self._lock:
            if self._retry is None and not self._closed:
                self._unwatch()
                self._retry = self._reactor.callLater(_RETRY, self._retried)

    def _unwatch(self) -> None:
        if self._watching:
            self._watching = False
            self._reactor.removeWriter(self)
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    @property
    def _waiting(self) -> bool:
        """Waiting for the reactor or the retry timer to write again."""
        return self._watching or self._retry is not None

    def _drop(self, count: int) -> None:
        self.dropped += count
        self._unreported += count


class LogWriter(ReactorWriter):
    """Writes whole lines to ``fd`` without ever blocking; see the module.

    An ``IWriteDescriptor`` for the reactor (``fileno``, ``doWrite``,
    ``connectionLost``, ``logPrefix``).

    Args:
        fd: Where the lines go (1: stdout). Not closed by the writer.
        reactor: Tells when a stalled descriptor is writable again.
        name: What ``fd`` is, in the notice (``"stdout"``).
        max_buffered: At most this many bytes wait for the reader; a line
            longer than that is cut to it.
        notice: Formats the notice of ``count`` lines dropped as one line
            (bytes ending in a newline); default plain text.
    """

    def __init__(
        self,
        fd: int,
        reactor: WriterReactor,
        *,
        name: str = "stdout",
        max_buffered: int = DEFAULT_MAX_BUFFERED,
        notice: Callable[[int, str], bytes] = _default_notice,
    ) -> None:
        if max_buffered < 1:
            raise ValueError(f"max_buffered must be >= 1, not {max_buffered!r}")
        self.name = name
        self.max_buffered = max_buffered
        #: Lines dropped since the writer was made (never reset).
        self.dropped = 0
        self._reactor = reactor
        self._notice = notice
        self._thread = threading.get_ident()
        # Another thread may log; re-entrant for a line logged by a signal
        # handler while this thread holds it.
        self._lock = threading.RLock()
        self._buffer = bytearray()  # whole lines; the first maybe partly written
        self._unreported = 0  # dropped, not yet said in the output
        self._dropping = False  # full: drop until the buffer is half empty
        self._watching = False
        self._retry: Any = None  # the timer of a descriptor epoll refuses
        self._closed = False
        self._broken: str | None = None  # why nothing can be written any more
        # A line logged while the buffer is being written (a signal handler
        # runs between two bytecodes) joins the buffer; the writing goes on.
        self._pumping = False
        self._fd, self._send, self._restore, self.how = _private_writer(fd)

    def __repr__(self) -> str:
        return (
            f"<LogWriter {self.name} ({self.how}): {len(self._buffer)} bytes "
            f"buffered, {self.dropped} lines dropped>"
        )

    @property
    def buffered(self) -> int:
        """Bytes waiting for the reader."""
        return len(self._buffer)

    # -- taking lines --------------------------------------------------------

    def write_line(self, line: bytes) -> None:
        """Write ``line`` (ending in a newline) now, or buffer it, or drop it
        when the buffer is full. Never blocks."""
        if len(line) > self.max_buffered:
            line = line[: self.max_buffered - 1] + b"\n"
        with self._lock:
            if self._closed or self._broken is not None:
                self._drop(1)
                return
            if self._dropping and not self._resume():
                self._drop(1)
                return
            if len(self._buffer) + len(line) > self.max_buffered:
                self._dropping = True
                self._drop(1)
                return
            self._buffer += line
            if not self._waiting and not self._pumping:
                self._pump()

    def _resume(self) -> bool:
        """Take lines again once the reader has emptied half the buffer; the
        notice goes first, where the dropped lines are missing."""
        if len(self._buffer) > self.max_buffered // 2:
            return False
        self._dropping = False
        if self._unreported:
            count, self._unreported = self._unreported, 0
            self._buffer += self._notice(count, self.name)
        return True

    def _pump(self) -> None:
        """Write what the descriptor takes of the buffer now; have the rest
        written when it can be."""
        self._pumping = True
        try:
            self._pump_now()
        finally:
            self._pumping = False

    def _pump_now(self) -> None:
        while self._buffer:
            try:
                with memoryview(self._buffer) as view:
                    written = self._send(view)
            except (BlockingIOError, InterruptedError):
                self._watch()  # the reader is behind: the reactor tells when
                return
            except OSError as e:
                reason = e.strerror or str(e)
                if e.errno in _GONE:
                    self._break(reason)
                else:
                    # A full disk under a redirected stdout: not for ever.
                    self._retry_later()
                return
            del self._buffer[:written]
            if self._dropping:
                self._resume()
        self._unwatch()

    def _break(self, reason: str) -> None:
        # The reader is gone: nothing buffered or to come can be written.
        self._broken = reason
        self._drop(self._buffer.count(b"\n"))
        self._buffer.clear()
        self._unwatch()

    # -- the reactor's part ----------------------------------------------------

    def _watch_now(self) -> None:
        with self._lock:
            if self._waiting or self._closed or not self._buffer:
                return
            try:
                self._reactor.addWriter(self)
            except OSError:
                # epoll refuses some descriptors (a regular file never
                # says EAGAIN, but a character device might): a timer then.
                self._retry_later()
            else:
                self._watching = True

    def _retried(self) -> None:
        with self._lock:
            self._retry = None
            if not self._closed and self._broken is None:
                self._pump()

    def fileno(self) -> int:
        """The descriptor written (the reactor watches it)."""
        return self._fd

    def logPrefix(self) -> str:
        """How Twisted names this writer in its log."""
        return f"LogWriter({self.name})"

    def doWrite(self) -> None:
        """The descriptor is writable: write what it takes of the buffer."""
        with self._lock:
            if not self._closed and self._broken is None:
                self._pump()

    def connectionLost(self, reason: Failure) -> None:
        """The reactor dropped the descriptor: the reader closed the pipe, or
        the reactor is shutting down (then :meth:`close` still writes)."""
        with self._lock:
            self._watching = False
            if self._broken is not None or self._closed:
                return
            if _hung_up(self._fd):
                self._break(reason.getErrorMessage())
            elif self._buffer:
                self._retry_later()

    # -- the end ---------------------------------------------------------------

    def close(self, timeout: float = 0.5) -> None:
        """Write what is buffered (and the notice of lines dropped), waiting
        at most ``timeout`` seconds for the reader; then give the
        descriptor back as it was. Call once, at exit, from the reactor's
        thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._unwatch()
            if self._broken is None:
                if self._unreported:
                    count, self._unreported = self._unreported, 0
                    self._buffer += self._notice(count, self.name)
                self._flush(time.monotonic() + timeout)
            if self._buffer:
                self._drop(self._buffer.count(b"\n"))
                self._buffer.clear()
            self._restore()

    def _flush(self, deadline: float) -> None:
        while self._buffer:
            try:
                with memoryview(self._buffer) as view:
                    written = self._send(view)
            except (BlockingIOError, InterruptedError):
                full = True
            except OSError as e:
                if e.errno in _GONE:
                    return
                full = False  # a full disk: wait a little, try again
            else:
                del self._buffer[:written]
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            pause = min(remaining, _RETRY)
            if full:
                with contextlib.suppress(OSError, ValueError):
                    select.select([], [self._fd], [], pause)
                    continue
            time.sleep(pause)


def _hung_up(fd: int) -> bool:
    """Whether ``fd`` has failed for good (the reader closed its end)."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    try:
        events = poller.poll(0)
    except OSError:
        return True
    return any(
        event & (select.POLLERR | select.POLLHUP | select.POLLNVAL)
        for _, event in events
    )


# -- the descriptor, made non-blocking for us alone ------------------------------

Send = Callable[[bytes | memoryview], int]


def _private_writer(fd: int) -> tuple[int, Send, Callable[[], None], str]:
    """How to write ``fd`` without blocking: (the descriptor to write and
    watch, the write, what puts things back at the end, what was chosen)."""

    def nothing() -> None:
        pass

    try:
        mode = os.fstat(fd).st_mode
    except OSError as e:
        # stdout closed (``procwork monitor >&-``): every line is dropped.
        reason = e.strerror or str(e)

        def closed(data: bytes | memoryview) -> int:
            raise OSError(errno.EBADF, reason)

        return fd, closed, nothing, f"unusable: {reason}"
    if stat.S_ISSOCK(mode):
        # A socket object on a copy: the copy is closed with it, and
        # MSG_DONTWAIT leaves the shared description's flags alone.
        sock = socket.socket(fileno=os.dup(fd))

        def send(data: bytes | memoryview) -> int:
            return sock.send(data, socket.MSG_DONTWAIT)

        return sock.fileno(), send, sock.close, "socket, MSG_DONTWAIT"
    if stat.S_ISFIFO(mode) or (stat.S_ISCHR(mode) and os.isatty(fd)):
        kind = "pipe" if stat.S_ISFIFO(mode) else "terminal"
        try:
            own = os.open(
                f"/proc/self/fd/{fd}",
                os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC,
            )
        except OSError:
            return _shared_nonblocking(fd, kind)

        def write_own(data: bytes | memoryview) -> int:
            return os.write(own, data)

        def close_own() -> None:
            with contextlib.suppress(OSError):
                os.close(own)

        return own, write_own, close_own, f"{kind}, reopened non-blocking"

    def write(data: bytes | memoryview) -> int:
        return os.write(fd, data)

    return fd, write, nothing, "file, written as is"


def _shared_nonblocking(
    fd: int, kind: str
) -> tuple[int, Send, Callable[[], None], str]:
    """O_NONBLOCK on the shared description, put back by the returned call."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)

    def write(data: bytes | memoryview) -> int:
        return os.write(fd, data)

    def restore() -> None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)

    return fd, write, restore, f"{kind}, O_NONBLOCK until exit"
