"""The monitor's log sent to the local log daemon: syslog or journald.

``[monitor] log = "syslog"`` sends each line to the local syslog daemon's
datagram socket, ``/dev/log``, framed as daemons take it there: RFC 3164
the way glibc's ``syslog(3)`` writes it (``<PRI>Mmm dd hh:mm:ss
procwork[PID]: MSG``, the default) or RFC 5424 (``syslog_format =
"rfc5424"``), with the facility ``syslog_facility`` (default ``daemon``).
``log = "journald"`` speaks journald's native protocol on
``/run/systemd/journal/socket``: one datagram of ``FIELD=value`` lines per
log line (``MESSAGE``, ``PRIORITY``, ``SYSLOG_IDENTIFIER=procwork``,
``SYSLOG_FACILITY``, ``SERVICE`` and ``STREAM`` for a service's output,
``CHECK``, ``RULE``, ``ALERT``, ``PROCWORK_EVENT``), a value with a
newline in the binary length-prefixed form, and a message too big for one
datagram passed as a sealed memfd, as ``sd_journal_send`` does.
``"syslog:PATH"`` and ``"journald:PATH"`` name another socket (a relay in
a container, a test's).

Like stdout (:class:`~procwork.monitor._logwriter.LogWriter`), a daemon
that does not keep up never blocks the monitor: a :class:`DatagramWriter`
sends with ``MSG_DONTWAIT``; what the socket does not take waits, at most
``max_buffered`` bytes of whole messages, until the reactor says it is
writable again; past that messages are dropped, counted
(``procwork_log_lines_dropped_total``) and said in one message where they
are missing once the daemon has caught up. A daemon that goes away (a
restart of rsyslog or journald) is connected to again, at most every
half second, what waits meanwhile counted the same way.

Called from the reactor's thread; a line logged from another thread is
taken too (a lock guards the queue; the reactor is told with
``callFromThread``).
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import os
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from twisted.logger import LogLevel
from twisted.python.failure import Failure

from procwork.monitor._logwriter import (
    DEFAULT_MAX_BUFFERED,
    ReactorWriter,
    WriterReactor,
)

__all__ = [
    "DEFAULT_PATHS",
    "FACILITIES",
    "SYSLOG_FORMATS",
    "DatagramWriter",
    "journal_message",
    "syslog_message",
]

#: Where each daemon listens, unless ``log = "KIND:PATH"`` says otherwise.
DEFAULT_PATHS = {"syslog": "/dev/log", "journald": "/run/systemd/journal/socket"}

#: The syslog facilities by name (RFC 5424, 6.2.1), as ``syslog_facility``.
FACILITIES: Mapping[str, int] = {
    **{
        name: number
        for number, name in enumerate(
            [
                "kern",
                "user",
                "mail",
                "daemon",
                "auth",
                "syslog",
                "lpr",
                "news",
                "uucp",
                "cron",
                "authpriv",
                "ftp",
            ]
        )
    },
    **{f"local{i}": 16 + i for i in range(8)},
}

#: The framings of ``log = "syslog"``.
SYSLOG_FORMATS = ("rfc3164", "rfc5424")

# Syslog severities (RFC 5424): what journald's PRIORITY= takes too.
_SEVERITY = {
    LogLevel.critical: 2,
    LogLevel.error: 3,
    LogLevel.warn: 4,
    LogLevel.info: 6,
    LogLevel.debug: 7,
}
_MONTHS = [
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
]
_IDENT = "procwork"


# Errors that say the daemon's socket is gone (or was replaced, by a
# restart): connect again.
_GONE = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ENOENT,
        errno.ENOTCONN,
        errno.EPIPE,
        errno.ECONNRESET,
        errno.EDESTADDRREQ,
    }
)

# The journal's fields of a log event, by its key.
_JOURNAL_FIELDS = {
    "service": b"SERVICE",
    "stream": b"STREAM",
    "check": b"CHECK",
    "rule": b"RULE",
    "alert": b"ALERT",
}

# Everything the memfd is sealed against, so journald can read it as is.
_SEALS = (
    fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
)


def _severity(event: Mapping[str, Any]) -> int:
    return _SEVERITY.get(event.get("log_level", LogLevel.info), 6)


# -- the messages -------------------------------------------------------------------


def syslog_message(
    event: Mapping[str, Any],
    text: str,
    *,
    facility: str = "daemon",
    syslog_format: str = "rfc3164",
    hostname: str | None = None,
) -> bytes:
    """One log event as one syslog datagram.

    Args:
        event: The log event (its level and time are used).
        text: The message: ``[where] message``, or a JSON line.
        facility: A name of :data:`FACILITIES`.
        syslog_format: ``"rfc3164"``, as glibc's ``syslog(3)`` sends to
            ``/dev/log`` (local time, no host name: the daemon adds it), or
            ``"rfc5424"`` (UTC time with microseconds, host name, ``MSGID``
            the event's name when it has one).
        hostname: For RFC 5424; default this machine's name.
    """
    priority = FACILITIES[facility] * 8 + _severity(event)
    stamp = float(event.get("log_time", time.time()))
    pid = os.getpid()
    if syslog_format == "rfc5424":
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp))
        micros = int((stamp % 1) * 1_000_000)
        host = hostname if hostname is not None else socket.gethostname()
        name = event.get("event")
        msgid = name if isinstance(name, str) and 0 < len(name) <= 32 else "-"
        head = f"<{priority}>1 {when}.{micros:06d}Z {host or '-'} {_IDENT} {pid} "
        return f"{head}{msgid} - {text}".encode("utf-8", "replace")
    local = time.localtime(stamp)
    month = _MONTHS[local.tm_mon - 1]
    when = f"{month} {local.tm_mday:2d} {time.strftime('%H:%M:%S', local)}"
    return f"<{priority}>{when} {_IDENT}[{pid}]: {text}".encode("utf-8", "replace")


def journal_message(
    event: Mapping[str, Any], text: str, *, facility: str = "daemon"
) -> bytes:
    """One log event as one datagram of journald's native protocol.

    ``MESSAGE`` is ``text``; ``PRIORITY`` the level as a syslog severity;
    ``SERVICE``, ``STREAM``, ``CHECK``, ``RULE`` and ``ALERT`` are there
    when the event is about one (``journalctl SERVICE=web``);
    ``PROCWORK_EVENT`` is its name (``check.failed``, ...) when it has one.
    """
    fields = [
        _field(b"MESSAGE", text.encode("utf-8", "replace")),
        _field(b"PRIORITY", str(_severity(event)).encode()),
        _field(b"SYSLOG_IDENTIFIER", _IDENT.encode()),
        _field(b"SYSLOG_FACILITY", str(FACILITIES[facility]).encode()),
    ]
    for key, field in _JOURNAL_FIELDS.items():
        value = event.get(key)
        if value is not None:
            fields.append(_field(field, str(value).encode("utf-8", "replace")))
    name = event.get("event")
    if isinstance(name, str):
        fields.append(_field(b"PROCWORK_EVENT", name.encode("utf-8", "replace")))
    return b"".join(fields)


def _field(name: bytes, value: bytes) -> bytes:
    """``NAME=value\\n``; a value with a newline in it as ``NAME\\n``, its
    length (64 bits, little-endian), the value and ``\\n``."""
    if b"\n" in value:
        return name + b"\n" + struct.pack("<Q", len(value)) + value + b"\n"
    return name + b"=" + value + b"\n"


# -- the writer ---------------------------------------------------------------------


def _sealed_memfd(data: bytes) -> int:
    """A memfd holding ``data``, sealed (journald's way for big messages)."""
    fd = os.memfd_create("procwork-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


class DatagramWriter(ReactorWriter):
    """Sends messages, one datagram each, to a local daemon's socket, never
    blocking; see the module.

    An ``IWriteDescriptor`` for the reactor (``fileno``, ``doWrite``,
    ``connectionLost``, ``logPrefix``), and a ``write_line`` like
    :class:`~procwork.monitor._logwriter.LogWriter`'s.

    Args:
        path: The daemon's datagram socket.
        reactor: Tells when the socket is writable again; times the retries.
        name: What the daemon is, in the notice (``"syslog"``).
        max_buffered: At most this many bytes of messages wait for the
            daemon (a message longer than that is dropped, counted).
        notice: Formats the notice of ``count`` messages dropped as one
            message (given the count and ``name``).
        memfd: Send a message too big for a datagram as a sealed memfd
            (journald takes that); else it is dropped, counted.

    A daemon absent when the writer is made (nothing bound at ``path``
    yet) is not an error: :attr:`absent` says why, and messages wait (at
    most ``max_buffered`` bytes; past that dropped and counted) while the
    writer tries again, at most every half second, as for a daemon that
    went away.
    """

    def __init__(
        self,
        path: str,
        reactor: WriterReactor,
        *,
        name: str,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
        notice: Callable[[int, str], bytes],
        memfd: bool = False,
    ) -> None:
        if max_buffered < 1:
            raise ValueError(f"max_buffered must be >= 1, not {max_buffered!r}")
        self.path = path
        self.name = name
        self.max_buffered = max_buffered
        #: Messages dropped since the writer was made (never reset).
        self.dropped = 0
        #: Messages sent as a memfd (too big for a datagram).
        self.sent_as_memfd = 0
        self._reactor = reactor
        self._notice = notice
        self._memfd = memfd
        self._thread = threading.get_ident()
        self._lock = threading.RLock()  # a signal handler may log too
        # Messages waiting, each with whether it is a notice (not counted as
        # a line when it is dropped).
        self._queue: deque[tuple[bytes, bool]] = deque()
        self._queued = 0  # bytes in the queue
        self._unreported = 0
        self._dropping = False  # full: drop until the queue is half empty
        self._watching = False
        self._retry: Any = None
        self._closed = False
        self._pumping = False
        self._sock: socket.socket | None = None
        self._why = ""  # why the last connect failed
        self._connect()
        #: Why nothing listens on ``path`` at the start (None: connected).
        self.absent: str | None = None
        if self._sock is None:
            self.absent = f"nothing listens on {path} ({self._why})"

    def __repr__(self) -> str:
        return (
            f"<DatagramWriter {self.name} {self.path}: {len(self._queue)} "
            f"messages waiting, {self.dropped} dropped>"
        )

    @property
    def buffered(self) -> int:
        """Bytes of messages waiting for the daemon."""
        return self._queued

    # -- the socket ------------------------------------------------------------

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            # Connected, so that the kernel says writable only when the
            # daemon's queue has room (an unconnected socket always is).
            sock.setblocking(False)
            sock.connect(self.path)
        except OSError as e:
            sock.close()
            self._why = e.strerror or str(e)
            return
        self._sock = sock

    def _disconnect(self) -> None:
        self._unwatch()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # -- taking messages -----------------------------------------------------------

    def write_line(self, message: bytes) -> None:
        """Send ``message`` now, or queue it, or drop it when the queue is
        full. Never blocks."""
        with self._lock:
            if self._closed:
                self._drop(1)
                return
            if self._dropping and not self._resume():
                self._drop(1)
                return
            if self._queued + len(message) > self.max_buffered:
                self._dropping = True
                self._drop(1)
                return
            self._queue.append((message, False))
            self._queued += len(message)
            if not self._waiting and not self._pumping:
                self._pump()

    def _resume(self) -> bool:
        """Take messages again once half the queue is sent; the notice first."""
        if self._queued > self.max_buffered // 2:
            return False
        self._dropping = False
        self._queue_notice()
        return True

    def _queue_notice(self) -> None:
        """The notice of the messages dropped and not yet said, queued."""
        if self._unreported:
            count, self._unreported = self._unreported, 0
            notice = self._notice(count, self.name)
            self._queue.append((notice, True))
            self._queued += len(notice)

    def _pump(self) -> None:
        self._pumping = True
        try:
            self._pump_now()
        finally:
            self._pumping = False

    def _pump_now(self) -> None:
        while self._queue:
            if self._sock is None:
                self._retry_later()
                return
            message, _ = self._queue[0]
            try:
                self._send(self._sock, message)
            except (BlockingIOError, InterruptedError):
                self._watch()  # the daemon is behind: the reactor tells when
                return
            except OSError as e:
                if e.errno in _GONE:
                    self._disconnect()  # a restarted daemon: connect again
                    self._retry_later()
                elif e.errno == errno.EMSGSIZE:
                    self._drop(0 if self._forget_first() else 1)  # too big
                    continue
                else:
                    self._retry_later()  # ENOBUFS and the like: not for ever
                return
            self._forget_first()
            if self._dropping:
                self._resume()
        self._unwatch()

    def _forget_first(self) -> bool:
        """Take the first message off the queue; whether it was a notice."""
        message, notice = self._queue.popleft()
        self._queued -= len(message)
        return notice

    def _send(self, sock: socket.socket, message: bytes) -> None:
        try:
            sock.send(message, socket.MSG_DONTWAIT)
        except OSError as e:
            if e.errno != errno.EMSGSIZE or not self._memfd:
                raise
            # Too big for a datagram: journald reads it from a sealed memfd
            # sent alone (its own clients do the same).
            fd = _sealed_memfd(message)
            try:
                rights = array.array("i", [fd])
                sock.sendmsg(
                    [],
                    [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)],
                    socket.MSG_DONTWAIT,
                )
            finally:
                os.close(fd)
            self.sent_as_memfd += 1

    # -- the reactor's part ----------------------------------------------------

    def _watch_now(self) -> None:
        with self._lock:
            if self._waiting or self._closed or not self._queue or not self._sock:
                return
            self._reactor.addWriter(self)
            self._watching = True

    def _retried(self) -> None:
        with self._lock:
            self._retry = None
            if self._closed:
                return
            if self._sock is None:
                self._connect()
            self._pump()

    def fileno(self) -> int:
        """The socket (the reactor watches it); -1 while disconnected."""
        return -1 if self._sock is None else self._sock.fileno()

    def logPrefix(self) -> str:
        """How Twisted names this writer in its log."""
        return f"DatagramWriter({self.name})"

    def doWrite(self) -> None:
        """The daemon has room again: send what waits."""
        with self._lock:
            if not self._closed:
                self._pump()

    def connectionLost(self, reason: Failure) -> None:
        """The reactor dropped the socket: connect again later."""
        with self._lock:
            self._watching = False
            if not self._closed:
                self._disconnect()
                self._retry_later()

    # -- the end -------------------------------------------------------------------

    def close(self, timeout: float = 0.5) -> None:
        """Send what waits (and the notice of messages dropped), waiting at
        most ``timeout`` seconds for the daemon; then close the socket.
        Call once, at exit, from the reactor's thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._unwatch()
            self._queue_notice()
            deadline = time.monotonic() + timeout
            while self._queue and time.monotonic() < deadline:
                if self._sock is None:
                    self._connect()
                    if self._sock is None:
                        break
                try:
                    self._send(self._sock, self._queue[0][0])
                except (BlockingIOError, InterruptedError):
                    with contextlib.suppress(OSError, ValueError):
                        select.select([], [self._sock], [], 0.05)
                    continue
                except OSError:
                    break
                self._forget_first()
            if self._queue:
                self.dropped += sum(not notice for _, notice in self._queue)
                self._queue.clear()
                self._queued = 0
            if self._sock is not None:
                self._sock.close()
                self._sock = None
