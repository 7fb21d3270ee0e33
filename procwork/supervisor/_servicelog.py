"""A service's output: its log files, and its lines in the log, rate-limited.

Everything the service prints goes, as it comes, to its ``stdout_log`` /
``stderr_log`` files (a :class:`~procwork.supervisor._logfile.LogFile`
each: rotated by size, opened again when moved or deleted, and a write
that fails is counted and reported, never silent). Lines also go to the
supervisor's log, but at most ``console_rate`` a second per service: a
service printing without pause (``yes``) would otherwise spend the reactor
on formatting lines, and a 0.5 s check would run late. Over the rate, a
chunk read from the pipe is not split into lines at all; its newlines are
counted (in C), and the count is said in one warning ("N output lines not
shown") at most every :data:`NOT_SHOWN_EVERY` seconds per service: a
service over its rate all day costs a line every 10 s, not one each time
the rate lets a line through again (200 a second), and what was not shown
is said within 10 s even if the service goes quiet.

The last :data:`OUTPUT_TAIL` bytes of each stream are kept too, across
restarts, as raw bytes (split into lines only when someone asks: ``procwork
ctl tail``), and lines go to the listeners that follow the service (``ctl
tail -f``), whatever the console rate: they are split only while someone
follows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger

from procwork._output import LineSplitter, TailBuffer
from procwork.supervisor._logfile import CHECK_EVERY, LogFile, LogTrouble
from procwork.supervisor._spec import ServiceSpec

__all__ = [
    "NOT_SHOWN_EVERY",
    "OUTPUT_TAIL",
    "LogStats",
    "LogTroubleListener",
    "OutputListener",
    "ServiceLogTrouble",
    "ServiceOutput",
]

#: Bytes of each stream's latest output a service keeps for
#: :meth:`Supervisor.output` (``procwork ctl tail``), across restarts.
OUTPUT_TAIL = 64 * 1024

#: Seconds between two "N output lines not shown" warnings of a service.
NOT_SHOWN_EVERY = 10.0

#: Receives a service's output lines as they come: ``(stream, line)``.
OutputListener = Callable[[str, str], object]

_log = Logger(namespace="procwork.supervisor")

_STREAMS = {1: "stdout", 2: "stderr"}


@dataclass(frozen=True)
class ServiceLogTrouble:
    """A service's log file could not be written (or opened), or can again.

    Attributes:
        service: The service's name.
        streams: What goes to the file: ``"stdout"``, ``"stderr"`` or
            ``"stdout and stderr"``.
        path: The file.
        error: Why it fails; None when it works again.
        lines_lost: When it works again: the lines lost meanwhile.
        opening: The file cannot be opened (its directory is gone), rather
            than written.
    """

    service: str
    streams: str
    path: str
    error: str | None
    lines_lost: int = 0
    opening: bool = False

    @property
    def recovered(self) -> bool:
        """The file is written again."""
        return self.error is None

    def __str__(self) -> str:
        where = f"service {self.service!r}: its {self.streams} log {self.path}"
        if self.error is None:
            return f"{where} is written again; {self.lines_lost} lines were lost"
        if self.opening:
            return (
                f"{where} cannot be opened: {self.error}; its lines are lost (and "
                f"counted) until it can be, tried again at most every "
                f"{CHECK_EVERY:g} s"
            )
        return (
            f"{where} cannot be written: {self.error}; its lines are lost (and "
            "counted) until it can be"
        )


#: Told when a service's log file starts failing and when it works again.
LogTroubleListener = Callable[[ServiceLogTrouble], object]


@dataclass(frozen=True)
class LogStats:
    """What a service's log files lost, since the service was added.

    Attributes:
        errors: Writes that failed, whole or in part (or found the file
            impossible to open).
        lines_lost: Lines those writes lost.
    """

    errors: int = 0
    lines_lost: int = 0


class ServiceOutput:
    """One service's output, for all its runs (files stay open across restarts).

    Args:
        spec: The service (its log keys).
        clock: Seconds, for the rate limit (the reactor's ``seconds``).
        pid: The service's current pid, for the log events.
        trouble: Told when a log file starts failing and when it works
            again (after the trouble is logged); must not raise.
        call_later: The reactor's ``callLater``, to say the lines not shown
            of a service gone quiet; without it they are said at its next
            output or its end.
    """

    def __init__(
        self,
        spec: ServiceSpec,
        clock: Callable[[], float],
        pid: Callable[[], int | None],
        trouble: LogTroubleListener | None = None,
        call_later: Callable[..., Any] | None = None,
    ) -> None:
        self._spec = spec
        self._clock = clock
        self._pid = pid
        self._trouble = trouble
        self._files: dict[str, LogFile] = {}
        self._opened: dict[str, LogFile] = {}  # by path: both streams may share
        self._lost = LogStats()  # by files closed since (none yet: kept open)
        self._rate = spec.console_rate
        self._tokens = self._rate
        self._refilled = clock()
        self._dropped = 0
        self._call_later = call_later
        self._said_at = float("-inf")  # when lines not shown were last said
        self._saying: Any = None  # the timer that will say them
        self._splitters: dict[int, LineSplitter] = {}
        self._tails = {fd: TailBuffer(OUTPUT_TAIL) for fd in _STREAMS}
        self.listeners: list[OutputListener] = []
        self._followers: dict[int, LineSplitter] = {}
        self.new_run()

    def new_run(self) -> None:
        """A new process of the service: fresh line splitters."""
        self._not_shown()
        # Where this run's output starts in each tail (see run_lines).
        self._run_starts = {fd: tail.total for fd, tail in self._tails.items()}
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
        if path is None:
            return None
        log = self._files.get(stream)
        if log is None:
            log = self._opened.get(path)
            if log is None:
                # Opened (and its directory made) at the first output; a
                # file that cannot be is reported by the LogFile itself.
                log = LogFile(
                    path,
                    self._spec.log_max_bytes,
                    self._spec.log_backups,
                    clock=self._clock,
                    report=functools.partial(self._reported, path),
                )
                self._opened[path] = log
            self._files[stream] = log
        return log

    def _streams_of(self, path: str) -> str:
        spec = self._spec
        streams = [
            stream
            for stream, log_path in (
                ("stdout", spec.stdout_log),
                ("stderr", spec.stderr_log),
            )
            if log_path == path
        ]
        return " and ".join(streams) or "output"

    def _reported(self, path: str, trouble: LogTrouble) -> None:
        said = ServiceLogTrouble(
            service=self._spec.name,
            streams=self._streams_of(path),
            path=trouble.path,
            error=trouble.error,
            lines_lost=trouble.lines_lost,
            opening=trouble.opening,
        )
        if said.recovered:
            _log.warn(
                "{trouble}",
                trouble=str(said),
                event="service.log_recovered",
                service=said.service,
                path=said.path,
                lines_lost=said.lines_lost,
            )
        else:
            _log.error(
                "{trouble}",
                trouble=str(said),
                event="service.log_error",
                service=said.service,
                path=said.path,
                error=said.error,
            )
        if self._trouble is not None:
            self._trouble(said)

    @property
    def log_stats(self) -> LogStats:
        """What the service's log files lost since it was added."""
        return LogStats(
            self._lost.errors + sum(log.errors for log in self._opened.values()),
            self._lost.lines_lost
            + sum(log.lines_lost for log in self._opened.values()),
        )

    def respec(self, spec: ServiceSpec) -> None:
        """The service has a new spec (a reload): its log files, line
        limit and console rate are the new spec's. A file it no longer
        names, or names with another size or backups, is closed (what it
        lost stays counted); the new ones open at the next output."""
        self._spec = spec
        self._rate = spec.console_rate
        self._tokens = min(self._tokens, self._rate)
        wanted = {spec.stdout_log, spec.stderr_log}
        for path, log in list(self._opened.items()):
            if path not in wanted or (log.max_bytes, log.backups) != (
                spec.log_max_bytes,
                spec.log_backups,
            ):
                self._lost = LogStats(
                    self._lost.errors + log.errors,
                    self._lost.lines_lost + log.lines_lost,
                )
                log.close()
                del self._opened[path]
        self._files.clear()

    def reopen(self) -> list[str]:
        """Close the log files and open them again at their paths, now
        (``procwork ctl reopen``, after a tool such as logrotate moved them
        away): what follows goes to new files there. Files not opened yet
        (no output so far) are opened.

        Returns:
            The paths of the service's log files (none: it keeps none).

        Raises:
            OSError: a file cannot be opened again; the message names it and
                says why. The others are open; it is reported like a failed
                write, and tried again at most every second.
        """
        paths = [
            path
            for path in dict.fromkeys((self._spec.stdout_log, self._spec.stderr_log))
            if path is not None
        ]
        problems = []
        reopened: list[LogFile] = []  # both streams may share one
        for stream in ("stdout", "stderr"):
            log = self._file(stream)
            if log is None or log in reopened:
                continue
            reopened.append(log)
            if not log.reopen():
                problems.append(f"{log.path}: {log.failing or 'closed'}")
        if problems:
            raise OSError(f"cannot reopen {'; '.join(problems)}")
        return paths

    def received(self, fd: int, data: bytes) -> None:
        """Bytes the service wrote on ``fd`` (1 or 2)."""
        stream = _STREAMS.get(fd)
        if stream is None:
            return
        log = self._file(stream)
        if log is not None:
            log.write(data, fd)  # never raises: a failure is counted and said
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
        if self._dropped:
            self._not_shown()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._refilled)
        self._refilled = now
        self._tokens = min(self._rate, self._tokens + elapsed * self._rate)

    def _not_shown(self) -> None:
        """Say the lines not shown now if the last warning is
        :data:`NOT_SHOWN_EVERY` seconds old; else have it said then."""
        if not self._dropped or self._saying is not None:
            return
        wait = self._said_at + NOT_SHOWN_EVERY - self._clock()
        if wait <= 0:
            self.flush()
        elif self._call_later is not None:
            self._saying = self._call_later(wait, self._said_later)

    def _said_later(self) -> None:
        self._saying = None
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

    def run_lines(self, stream: str, count: int, width: int) -> tuple[str, ...]:
        """The last ``count`` lines that are not blank of what the current
        (or just ended) run wrote on ``stream``, each cut to ``width``
        characters: what a crash said last, for its status and its event.
        Never an earlier run's lines; fewer if the tail no longer holds
        them."""
        fd = 1 if stream == "stdout" else 2
        tail = self._tails[fd]
        data = tail.value()
        written = tail.total - self._run_starts[fd]
        if written < len(data):
            data = data[len(data) - written :]
        lines = [
            line.rstrip("\r")
            for line in data.decode("utf-8", "replace").split("\n")
            if line.strip()
        ]
        return tuple(
            line if len(line) <= width else line[: width - 3] + "..."
            for line in lines[-count:]
        )

    def flush(self) -> None:
        """Report the lines not shown, if any, now."""
        if self._saying is not None:
            if self._saying.active():
                self._saying.cancel()
            self._saying = None
        if self._dropped:
            self._said_at = self._clock()
            dropped, self._dropped = self._dropped, 0
            _log.warn(
                "service {service!r}: {dropped} output lines not shown (over its "
                "console_rate of {rate:g} lines/s)",
                service=self._spec.name,
                dropped=dropped,
                rate=self._rate,
            )

    def ended(self) -> None:
        """The process ended: a last line without newline, and the count of
        lines not shown (now, or once :data:`NOT_SHOWN_EVERY` has passed
        since the last: a crash loop of a loud service says it as rarely).

        The files get the end of a line that had no newline: they are
        written unbuffered, but for that.
        """
        for splitter in (*self._splitters.values(), *self._followers.values()):
            splitter.close()
        for log in self._opened.values():
            log.flush()
        self._not_shown()

    def close(self) -> None:
        """Close the log files and drop the followers (the service is
        removed); the lines not shown are said now."""
        self.flush()
        self.listeners.clear()
        self._lost = self.log_stats
        for log in self._opened.values():
            log.close()
        self._opened.clear()
        self._files.clear()
