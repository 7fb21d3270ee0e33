"""Bounded output capture: keep the tail, count what was dropped."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

__all__ = ["LineQueue", "LineSplitter", "TailBuffer"]


class TailBuffer:
    """Keeps the last ``limit`` bytes written to it (all of them if ``None``).

    Memory stays below about twice ``limit`` whatever the child prints: the
    buffer is trimmed as soon as it holds ``2 * limit`` bytes, so trimming
    costs O(1) amortised per byte.
    """

    __slots__ = ("_data", "limit", "total")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._data = bytearray()
        self.total = 0  # bytes ever written

    def write(self, data: bytes) -> None:
        self.total += len(data)
        limit = self.limit
        if limit is None:
            self._data += data
            return
        if len(data) >= limit:
            self._data[:] = data[len(data) - limit :]
            return
        self._data += data
        if len(self._data) >= 2 * limit:
            del self._data[: len(self._data) - limit]

    @property
    def truncated(self) -> bool:
        """True if bytes were dropped from the front."""
        return self.total > len(self.value())

    def value(self) -> bytes:
        """The kept tail, at most ``limit`` bytes."""
        if self.limit is not None and len(self._data) > self.limit:
            del self._data[: len(self._data) - self.limit]
        return bytes(self._data)


class LineSplitter:
    """Splits a byte stream into lines (with their ``\\n``) for a callback.

    A line longer than ``max_line`` is delivered in pieces of that size, so a
    child that never prints a newline can't make it buffer without bound.
    """

    __slots__ = ("_callback", "_max_line", "_partial")

    def __init__(self, callback: Callable[[bytes], object], max_line: int) -> None:
        self._callback = callback
        self._max_line = max_line
        self._partial = bytearray()

    def feed(self, data: bytes) -> None:
        partial = self._partial
        partial += data
        start = 0
        while True:
            end = partial.find(b"\n", start)
            if end < 0:
                break
            self._emit(bytes(partial[start : end + 1]))
            start = end + 1
        del partial[:start]
        while len(partial) >= self._max_line:
            self._emit(bytes(partial[: self._max_line]))
            del partial[: self._max_line]

    def _emit(self, line: bytes) -> None:
        while len(line) > self._max_line:
            self._callback(line[: self._max_line])
            line = line[self._max_line :]
        self._callback(line)

    def close(self) -> None:
        """Deliver a last line that had no newline."""
        if self._partial:
            line, self._partial = bytes(self._partial), bytearray()
            self._emit(line)


class LineQueue:
    """Lines waiting for ``readline()``: at most ``limit`` bytes are kept.

    The oldest lines are dropped first (``dropped`` counts them), so a reader
    that falls behind loses old lines rather than memory.
    """

    __slots__ = ("_lines", "_size", "dropped", "limit")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._lines: deque[bytes] = deque()
        self._size = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._lines)

    def push(self, line: bytes) -> None:
        self._lines.append(line)
        self._size += len(line)
        if self.limit is not None:
            while self._size > self.limit and len(self._lines) > 1:
                self._size -= len(self._lines.popleft())
                self.dropped += 1

    def pop(self) -> bytes:
        line = self._lines.popleft()
        self._size -= len(line)
        return line
