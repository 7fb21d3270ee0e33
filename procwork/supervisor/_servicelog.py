"""A service's output: its log files, and its lines in the log, rate-limited.

Everything the service prints goes, as it comes, to its ``stdout_log`` /
``stderr_log`` files (rotated by size with :class:`twisted.python.logfile.
LogFile`). Lines also go to the supervisor's log, but at most
``console_rate`` a second per service: a service printing without pause
(``yes``) would otherwise spend the reactor on formatting lines, and a 0.5 s
check would run late. Over the rate, a chunk read from the pipe is not split
into lines at all; its newlines are counted (in C) and the count is reported
once the service is quiet enough again.

The last :data:`OUTPUT_TAIL` bytes of each stream are kept too, across
restarts, as raw bytes (split into lines only when someone asks: ``procwork
ctl tail``), and lines go to the listeners that follow the service (``ctl
tail -f``), whatever the console rate: they are split only while someone
follows.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable

from twisted.logger import Logger
from twisted.python.logfile import LogFile

from procwork._output import LineSplitter, TailBuffer
from procwork.supervisor._spec import ServiceSpec

__all__ = ["OUTPUT_TAIL", "OutputListener", "ServiceOutput"]

#: Bytes of each stream's latest output a service keeps for
#: :meth:`Supervisor.output` (``procwork ctl tail``), across restarts.
OUTPUT_TAIL = 64 * 1024

#: Receives a service's output lines as they come: ``(stream, line)``.
OutputListener = Callable[[str, str], object]

_log = Logger(namespace="procwork.supervisor")

_STREAMS = {1: "stdout", 2: "stderr"}


def open_log(path: str, max_bytes: int, backups: int) -> LogFile:
    """A size-rotated log file at ``path`` (its directory is created)."""
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    log = LogFile(name, directory, rotateLength=max_bytes, maxRotatedFiles=backups)
    return log


class ServiceOutput:
    """One service's output, for all its runs (files stay open across restarts).

    Args:
        spec: The service (its log keys).
        clock: Seconds, for the rate limit (the reactor's ``seconds``).
        pid: The service's current pid, for the log events.
    """

    def __init__(
        self,
        spec: ServiceSpec,
        clock: Callable[[], float],
        pid: Callable[[], int | None],
    ) -> None:
        self._spec = spec
        self._clock = clock
        self._pid = pid
        self._files: dict[str, LogFile] = {}
        self._opened: dict[str, LogFile] = {}  # by path: both streams may share
        self._failed: set[str] = set()  # paths that could not be opened
        self._rate = spec.console_rate
        self._tokens = self._rate
        self._refilled = clock()
        self._dropped = 0
        self._splitters: dict[int, LineSplitter] = {}
        self._tails = {fd: TailBuffer(OUTPUT_TAIL) for fd in _STREAMS}
        self.listeners: list[OutputListener] = []
        self._followers: dict[int, LineSplitter] = {}
        self.new_run()

    def new_run(self) -> None:
        """A new process of the service: fresh line splitters."""
        self.flush()
        self._failed.clear()
        limit = self._spec.max_log_line
        self._splitters = {
            fd: LineSplitter(functools.partial(self._line, stream), limit)
            for fd, stream in _STREAMS.items()
        }
        self._followers = {
            fd: LineSplitter(functools.partial(self._follow, stream), limit)
            for fd, stream in _STREAMS.items()
        }

    def _file(self, stream: str) -> LogFile | None:
        path = self._spec.stdout_log if stream == "stdout" else self._spec.stderr_log
        if path is None or path in self._failed:
            return None
        log = self._files.get(stream)
        if log is None:
            log = self._opened.get(path)
            if log is None:
                try:
                    log = open_log(
                        path, self._spec.log_max_bytes, self._spec.log_backups
                    )
                except OSError as e:
                    # Said once; tried again at the service's next run.
                    self._failed.add(path)
                    _log.error(
                        "service {service!r}: cannot open its {stream} log "
                        "{path}: {error}; its {stream} is not written there",
                        service=self._spec.name,
                        stream=stream,
                        path=path,
                        error=e.strerror,
                    )
                    return None
                self._opened[path] = log
            self._files[stream] = log
        return log

    def received(self, fd: int, data: bytes) -> None:
        """Bytes the service wrote on ``fd`` (1 or 2)."""
        stream = _STREAMS.get(fd)
        if stream is None:
            return
        log = self._file(stream)
        if log is not None:
            # A full disk must not stop the service's output handling.
            with contextlib.suppress(OSError):
                self._write(log, data)
        self._tails[fd].write(data)
        if self.listeners:
            self._followers[fd].feed(data)
        if self._rate <= 0:
            return
        self._refill()
        splitter = self._splitters[fd]
        if self._tokens >= 1:
            splitter.feed(data)
        else:
            # Over the rate: not split into lines (that is what costs).
            self._dropped += data.count(b"\n")

    def _write(self, log: LogFile, data: bytes) -> None:
        """Write ``data``, rotating so that no file grows past log_max_bytes.

        LogFile alone rotates only once a file has reached its size, after
        the write that took it past; a chunk is cut here instead, at its
        last newline that fits (at the size itself when no line fits).
        """
        limit = self._spec.log_max_bytes
        while data:
            room = limit - log.size
            if room <= 0:
                log.rotate()
                continue
            if len(data) <= room:
                log.write(data)
                return
            cut = data.rfind(b"\n", 0, room) + 1 or room
            log.write(data[:cut])
            data = data[cut:]
            log.rotate()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._refilled)
        self._refilled = now
        self._tokens = min(self._rate, self._tokens + elapsed * self._rate)
        if self._dropped and self._tokens >= 1:
            self.flush()

    def _line(self, stream: str, line: bytes) -> None:
        if self._tokens < 1:
            self._dropped += 1
            return
        self._tokens -= 1
        text = line.rstrip(b"\n").rstrip(b"\r").decode("utf-8", "replace")
        _log.info(
            "[{service}] {line}",
            service=self._spec.name,
            stream=stream,
            line=text,
            pid=self._pid(),
        )

    def _follow(self, stream: str, line: bytes) -> None:
        text = line.rstrip(b"\n").rstrip(b"\r").decode("utf-8", "replace")
        for listener in list(self.listeners):
            try:
                listener(stream, text)
            except Exception:
                # One broken follower must not cost the others their lines.
                _log.failure(
                    "an output listener of {service!r} failed",
                    service=self._spec.name,
                )

    def lines(self, stream: str, count: int | None = None) -> list[str]:
        """The last ``count`` (default all kept) lines of ``stream``, oldest
        first; a line cut by the start of the kept tail is left out.

        Raises:
            ValueError: ``stream`` is not ``"stdout"`` or ``"stderr"``.
        """
        fd = {name: fd for fd, name in _STREAMS.items()}.get(stream)
        if fd is None:
            raise ValueError(f"stream must be 'stdout' or 'stderr', not {stream!r}")
        tail = self._tails[fd]
        kept = tail.value().decode("utf-8", "replace").split("\n")
        if kept[-1] == "":
            kept.pop()  # the text ended with a newline
        if tail.truncated and kept:
            kept.pop(0)  # cut in the middle by the tail's limit
        kept = [line.rstrip("\r") for line in kept]
        return kept if count is None else kept[max(0, len(kept) - count) :]

    def flush(self) -> None:
        """Report the lines not shown, if any."""
        if self._dropped:
            dropped, self._dropped = self._dropped, 0
            _log.warn(
                "service {service!r}: {dropped} output lines not shown (over its "
                "console_rate of {rate:g} lines/s)",
                service=self._spec.name,
                dropped=dropped,
                rate=self._rate,
            )

    def ended(self) -> None:
        """The process ended: a last line without newline, the count, flushed files."""
        for splitter in (*self._splitters.values(), *self._followers.values()):
            splitter.close()
        self.flush()
        for log in self._opened.values():
            with contextlib.suppress(OSError):
                log.flush()

    def reopen(self) -> None:
        """Close the log files and open them again by path: after an external
        rotation (logrotate) moved them, the output goes to new files there.

        Raises:
            OSError: a file cannot be opened again (logged too); the
                message names it and says why. The others are open.
        """
        for log in self._opened.values():
            with contextlib.suppress(OSError):
                log.close()
        self._opened.clear()
        self._files.clear()
        self._failed.clear()
        problems = []
        paths = (self._spec.stdout_log, self._spec.stderr_log)
        for path in dict.fromkeys(p for p in paths if p is not None):
            try:
                self._opened[path] = open_log(
                    path, self._spec.log_max_bytes, self._spec.log_backups
                )
            except OSError as e:
                self._failed.add(path)  # tried again at the next run
                problems.append(f"{path}: {e.strerror}")
                _log.error(
                    "service {service!r}: cannot reopen its log {path}: {error}",
                    service=self._spec.name,
                    path=path,
                    error=e.strerror,
                )
        if problems:
            raise OSError(f"cannot reopen {'; '.join(problems)}")

    def close(self) -> None:
        """Close the log files and drop the followers (the service is removed)."""
        self.listeners.clear()
        for log in self._opened.values():
            log.close()
        self._opened.clear()
        self._files.clear()
