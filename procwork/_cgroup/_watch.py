"""Watching a cgroup's files without polling: inotify on the reactor.

The kernel reports a change of ``cgroup.events`` (populated, frozen) and of
``memory.events`` (an OOM kill) as a modification of the file, which
inotify delivers. One inotify descriptor per reactor, read when readable,
serves every watch; :func:`when_empty` is what the spawn transport and the
supervisor wait on, and :func:`watch_file` what the OOM watch uses.

Why not Twisted's ``twisted.internet.inotify``: it closes its descriptor,
and with it every other watch, as soon as one watched file is deleted
(``IN_DELETE_SELF``), which is what happens to a cgroup's files when the
cgroup is removed; and it keys watches by path, so two watchers of one file
share one list of callbacks. This is the few lines procwork needs: one
``inotify_init1``, ``inotify_add_watch`` and ``inotify_rm_watch`` through
ctypes, and the events parsed from the descriptor.

Where inotify is missing (no ``inotify_init1`` in the C library, or the
watch limit reached), a watch falls back to looking at the file every
:data:`POLL_EVERY` seconds, and says so once in the log.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import weakref
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from procwork._cgroup import _fs
from procwork._reactor import Reactor

__all__ = ["POLL_EVERY", "Watch", "watch_file", "when_empty"]

_log = Logger(namespace="procwork")

IN_MODIFY = 0x2
IN_IGNORED = 0x8000
IN_Q_OVERFLOW = 0x4000
_EVENT = struct.Struct("=iIII")  # wd, mask, cookie, len

#: Seconds between two looks at a file when inotify cannot be had.
POLL_EVERY = 0.25


class Watch:
    """A watch of one file; :meth:`cancel` ends it (idempotent)."""

    def __init__(self, cancel: Callable[[], None]) -> None:
        self._cancel: Callable[[], None] | None = cancel

    def cancel(self) -> None:
        """Stop watching."""
        cancel, self._cancel = self._cancel, None
        if cancel is not None:
            cancel()


class _Inotify:
    """One inotify descriptor on a reactor, with its watches by descriptor."""

    def __init__(self, reactor: Any, fd: int, libc: Any) -> None:
        self._reactor = reactor
        self._fd = fd
        self._libc = libc
        self._callbacks: dict[int, list[Callable[[], None]]] = {}
        self._buffer = b""

    # IReadDescriptor
    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "procwork-inotify"

    def doRead(self) -> None:
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        self._buffer += data
        due: list[Callable[[], None]] = []
        overflow = False
        while len(self._buffer) >= _EVENT.size:
            wd, mask, _cookie, size = _EVENT.unpack_from(self._buffer)
            if len(self._buffer) < _EVENT.size + size:
                break
            self._buffer = self._buffer[_EVENT.size + size :]
            if mask & IN_Q_OVERFLOW:
                overflow = True
            elif mask & IN_IGNORED:
                self._callbacks.pop(wd, None)  # the file is gone: so is the watch
            for callback in self._callbacks.get(wd, ()):
                if callback not in due:
                    due.append(callback)
        if overflow:  # events were lost: every watcher looks again
            due = [c for callbacks in self._callbacks.values() for c in callbacks]
        for callback in due:
            try:
                callback()
            except Exception:
                _log.failure("a cgroup watch failed")

    def connectionLost(self, reason: Failure) -> None:
        pass  # the reactor dropped us at shutdown; nothing waits then

    def add(self, path: str, callback: Callable[[], None]) -> Watch:
        wd = self._libc.inotify_add_watch(self._fd, os.fsencode(path), IN_MODIFY)
        if wd < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), path)
        self._callbacks.setdefault(wd, []).append(callback)

        def cancel() -> None:
            callbacks = self._callbacks.get(wd)
            if callbacks is not None and callback in callbacks:
                callbacks.remove(callback)
                if not callbacks:
                    del self._callbacks[wd]
                    self._libc.inotify_rm_watch(self._fd, wd)

        return Watch(cancel)


_inotifies: weakref.WeakKeyDictionary[object, _Inotify | None] = (
    weakref.WeakKeyDictionary()
)
_said_polling = False


def _inotify(reactor: Any) -> _Inotify | None:
    if reactor in _inotifies:
        return _inotifies[reactor]
    found: _Inotify | None = None
    if hasattr(reactor, "addReader"):
        try:
            # The C library is in the process already (find_library would run ldconfig).
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd >= 0:
                found = _Inotify(reactor, fd, libc)
                reactor.addReader(found)
        except (OSError, AttributeError):
            found = None
    _inotifies[reactor] = found
    return found


def watch_file(reactor: Reactor, path: str, changed: Callable[[], None]) -> Watch:
    """Call ``changed()`` (from the reactor) each time the file at ``path``
    is modified, until the returned :class:`Watch` is cancelled or the file
    goes away.

    Raises:
        FileNotFoundError: there is no such file.
    """
    inotify = _inotify(reactor)
    if inotify is not None:
        try:
            return inotify.add(path, changed)
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise FileNotFoundError(e.errno, e.strerror, path) from None
            if e.errno != errno.ENOSPC:
                raise
    _say_polling()
    return _poll(reactor, path, changed)


def _say_polling() -> None:
    global _said_polling
    if not _said_polling:
        _said_polling = True
        _log.warn(
            "inotify is not available (or its watch limit is reached): cgroups "
            "are watched by reading their files every {every} s",
            every=POLL_EVERY,
        )


def _poll(reactor: Reactor, path: str, changed: Callable[[], None]) -> Watch:
    calls: list[Any] = []

    def look() -> None:
        if not os.path.exists(path):
            return
        calls[:] = [reactor.callLater(POLL_EVERY, look)]
        changed()

    calls.append(reactor.callLater(POLL_EVERY, look))

    def cancel() -> None:
        for call in calls:
            if call.active():
                call.cancel()

    return Watch(cancel)


def when_empty(reactor: Reactor, cgroup: str, timeout: float) -> Deferred[bool]:
    """A Deferred that fires with True once ``cgroup`` holds no process (at
    once if it holds none, or is gone), or with False after ``timeout``
    seconds if it still does. Cancelling it stops the waiting."""
    if not _fs.populated(cgroup):
        return _fired(True)
    watch: list[Watch] = []
    timer: list[Any] = []

    def stop() -> None:
        for w in watch:
            w.cancel()
        for call in timer:
            if call.active():
                call.cancel()

    done: Deferred[bool] = Deferred(lambda _: stop())

    def changed() -> None:
        if not done.called and not _fs.populated(cgroup):
            stop()
            done.callback(True)

    def expired() -> None:
        if not done.called:
            stop()
            done.callback(not _fs.populated(cgroup))

    try:
        watch.append(watch_file(reactor, os.path.join(cgroup, _fs.EVENTS), changed))
    except FileNotFoundError:
        return _fired(True)  # removed meanwhile: nothing can be in it
    timer.append(reactor.callLater(timeout, expired))
    changed()  # it may have emptied before the watch was in place
    return done


def _fired(value: bool) -> Deferred[bool]:
    d: Deferred[bool] = Deferred()
    d.callback(value)
    return d
