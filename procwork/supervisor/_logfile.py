"""A service's log file: rotated by size, found again when it is moved or
deleted, and never failing in silence.

A :class:`LogFile` writes unbuffered with ``O_APPEND``; a failed write is
counted and reported once per burst (:class:`LogTrouble`); the path is
compared with the open file at most every ``check_every`` seconds and
opened again when they differ; no file grows past ``max_bytes`` (cut at a
newline, ``backups`` kept). Called from the reactor's thread.

Lines stay whole across a rotation even when a child writes block-buffered
output: what follows a chunk's last newline is held, per stream, until its
newline comes (at most :data:`MAX_PARTIAL` bytes; a longer line is written
as it comes), and written as it is when the process ends or the file is
closed. Design: ARCHITECTURE.md, "Service log files".
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CHECK_EVERY", "MAX_PARTIAL", "LogFile", "LogTrouble"]

#: Seconds between checks that the path is still the open file (and
#: between tries to open a file that could not be opened).
CHECK_EVERY = 1.0

#: The longest end of a line, after a chunk's last newline, held for its
#: newline (per stream), so that rotation keeps the line whole.
MAX_PARTIAL = 64 * 1024

_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


@dataclass(frozen=True)
class LogTrouble:
    """A log file's writes started failing, or work again.

    Attributes:
        path: The log file.
        error: Why writes fail (``"No space left on device"``); None when
            they work again.
        lines_lost: Lines lost in the burst of failures that just ended (0
            when it starts: nothing is lost yet).
        opening: The failure is to open the file (its directory is gone),
            not to write it.
    """

    path: str
    error: str | None
    lines_lost: int = 0
    opening: bool = False

    @property
    def recovered(self) -> bool:
        """The writes work again."""
        return self.error is None


class LogFile:
    """A log file a service writes; see the module.

    Args:
        path: Where.
        max_bytes: No file grows past this; a write that would is cut at
            a newline and the file rotated.
        backups: Rotated files kept (``path.1`` ...); 0: none.
        clock: Seconds (the reactor's ``seconds``), for ``check_every``.
        report: Told when writes start failing and when they work again.
        check_every: Seconds between checks of the path.
        max_partial: At most this many bytes of a line wait for its newline
            (per stream); default :data:`MAX_PARTIAL`, never more than
            ``max_bytes``.
    """

    def __init__(
        self,
        path: str,
        max_bytes: int,
        backups: int,
        *,
        clock: Callable[[], float],
        report: Callable[[LogTrouble], object],
        check_every: float = CHECK_EVERY,
        max_partial: int = MAX_PARTIAL,
    ) -> None:
        self.path = os.path.abspath(path)
        self.max_bytes = max_bytes
        self.backups = backups
        #: Writes that failed, whole or in part, since the file was made.
        self.errors = 0
        #: Lines (newlines) those writes lost.
        self.lines_lost = 0
        #: Bytes in the open file.
        self.size = 0
        self._clock = clock
        self._report = report
        self._check_every = check_every
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino)
        self._next_check = clock() + check_every
        self._failing: LogTrouble | None = None  # the burst going on
        self._burst_lost = 0
        self._closed = False
        self._max_partial = min(max_partial, max_bytes)
        # Per stream (1, 2): the end of a line waiting for its newline.
        self._partials: dict[int, bytes] = {}
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
        except FileExistsError:
            pass  # a file where the directory should be: open() says so
        except OSError as e:
            self._failed(e, opening=True)
        self._open()

    def __repr__(self) -> str:
        state = "closed" if self._fd is None else f"{self.size} bytes"
        return f"<LogFile {self.path}: {state}, {self.errors} failed writes>"

    @property
    def failing(self) -> str | None:
        """Why writes fail now (None: they work)."""
        return None if self._failing is None else self._failing.error

    # -- writing -------------------------------------------------------------

    @property
    def held(self) -> int:
        """Bytes of unfinished lines waiting for their newline."""
        return sum(len(partial) for partial in self._partials.values())

    def write(self, data: bytes, stream: int = 1) -> None:
        """Write ``data``'s whole lines, rotating as needed; hold what
        follows its last newline until that line is whole (see the module).
        Never raises: what cannot be written is counted and reported.

        Args:
            data: What the process wrote.
            stream: Which of its streams (1, 2): each has its own line
                waiting, so a file both share gets whole lines of each.
        """
        if self._closed or not data:
            return
        partial = self._partials.pop(stream, b"")
        end = data.rfind(b"\n") + 1
        if end:
            whole, rest = partial + data[:end], data[end:]
        else:
            whole, rest = b"", partial + data
        if len(rest) > self._max_partial:
            # A line longer than anything held: written as it comes.
            whole, rest = whole + rest, b""
        if rest:
            self._partials[stream] = rest
        self._append(whole)

    def flush(self) -> None:
        """Write the unfinished lines as they are (the process ended)."""
        partials, self._partials = self._partials, {}
        for partial in partials.values():
            self._append(partial)

    def _append(self, data: bytes) -> None:
        if self._closed or not data:
            return
        now = self._clock()
        if now >= self._next_check:
            self._next_check = now + self._check_every
            if self._fd is None:
                self._open()
            else:
                self._check_path()
        if self._fd is None:
            self._lost(data)
            return
        view = memoryview(data)
        while view:
            room = self.max_bytes - self.size
            if room <= 0 and self._rotate():
                continue
            if self._fd is None:  # rotated, and the new file cannot be opened
                self._lost(view)
                return
            if room <= 0 or len(view) <= room:
                cut = len(view)  # all of it (past the size if rotation failed)
            else:
                cut = bytes(view[:room]).rfind(b"\n") + 1
                if not cut:
                    # Not one whole line fits: it goes whole into a new
                    # file, unless it is longer than a file.
                    if self.size > 0 and self._rotate():
                        continue
                    cut = room
            written = self._write_all(view[:cut])
            if written < cut:
                self._lost(view[written:])
                return
            view = view[cut:]
        self._worked()

    def _write_all(self, data: memoryview) -> int:
        """Bytes of ``data`` written before a failure (all: no failure)."""
        assert self._fd is not None
        done = 0
        while done < len(data):
            try:
                written = os.write(self._fd, data[done:])
            except OSError as e:
                self._failed(e)
                return done
            if written == 0:  # pragma: no cover - a regular file never does
                self._failed(OSError(0, "the write wrote nothing"))
                return done
            done += written
            self.size += written
        return done

    # -- opening, checking, rotating -----------------------------------------

    def _open(self) -> bool:
        """Open ``path`` (created if missing, never its directory: a log
        volume not mounted must not be shadowed by a new directory on the
        root file system; writing resumes when it returns)."""
        try:
            fd = os.open(self.path, _FLAGS, 0o666)
        except OSError as e:
            self._failed(e, opening=True)
            return False
        try:
            info = os.fstat(fd)
        except OSError as e:  # pragma: no cover - fstat of an open file
            os.close(fd)
            self._failed(e, opening=True)
            return False
        self._fd = fd
        self._identity = (info.st_dev, info.st_ino)
        self.size = info.st_size
        return True

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
        self._identity = None

    def _check_path(self) -> None:
        """Open the path again if it is no longer the open file; take the
        size of a file truncated under us."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            info = None  # moved or deleted (or its directory is gone)
        except OSError:
            return  # cannot tell (permissions): keep writing where we are
        if info is None or (info.st_dev, info.st_ino) != self._identity:
            self._close_fd()
            self._open()
        else:
            self.size = info.st_size

    def _rotate(self) -> bool:
        """``path`` -> ``path.1`` -> ... -> ``path.<backups>``, then a new
        ``path``. False if it could not be done (the file is written on)."""
        try:
            if self.backups == 0:
                os.unlink(self.path)
            else:
                for number in sorted(self._rotated(), reverse=True):
                    old = f"{self.path}.{number}"
                    if number >= self.backups:
                        os.remove(old)
                    else:
                        os.rename(old, f"{self.path}.{number + 1}")
                os.rename(self.path, f"{self.path}.1")
        except FileNotFoundError:
            pass  # moved or deleted meanwhile: a new one is opened below
        except OSError:
            return False
        self._close_fd()
        return self._open()

    def _rotated(self) -> list[int]:
        numbers = []
        for name in glob.glob(glob.escape(self.path) + ".*"):
            suffix = name.rpartition(".")[2]
            if suffix.isdigit() and int(suffix) > 0:
                numbers.append(int(suffix))
        return numbers

    def reopen(self) -> bool:
        """Close the file and open ``path`` again, now: after another tool
        moved it away (``procwork ctl reopen``). Creates the file, not its
        directory.

        Returns:
            True if the file is open; if not, why is reported as a failure
            (and tried again at most every ``check_every`` seconds).
        """
        if self._closed:
            return False
        self._close_fd()
        self._next_check = self._clock() + self._check_every
        if self._open():
            self._worked()
            return True
        return False

    def close(self) -> None:
        """Write the unfinished lines as they are, and close the file; later
        writes are ignored."""
        self.flush()
        self._closed = True
        self._close_fd()

    # -- failures, said once per burst ---------------------------------------

    def _failed(self, error: OSError, *, opening: bool = False) -> None:
        if self._failing is None:
            self._failing = LogTrouble(
                self.path, error.strerror or str(error), opening=opening
            )
            self._burst_lost = 0
            self._report(self._failing)

    def _lost(self, data: bytes | memoryview) -> None:
        """``data`` could not be written: counted."""
        lost = bytes(data).count(b"\n")
        self.errors += 1
        self.lines_lost += lost
        self._burst_lost += lost
        if self._failing is None:  # pragma: no cover - _failed came first
            self._failed(OSError(0, "unknown"))

    def _worked(self) -> None:
        if self._failing is not None:
            self._failing = None
            self._report(LogTrouble(self.path, None, self._burst_lost))
            self._burst_lost = 0
