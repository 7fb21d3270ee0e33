"""Children die with the program, however it dies: the lifeline.

:func:`enable_lifeline` starts one small helper process per program
(:mod:`procwork._lifeline_main`) holding the read end of a pipe whose write
end only this process holds. A spawn writes the inodes of the child's pipes
before the fork and its process group after it; a reap unregisters the
group. When the program dies, by SIGKILL or the OOM killer too, the helper
SIGTERMs the groups left, then SIGKILLs them. Also here: the monitor's
instance lock, which it hands to the helper to hold until the children are
gone.

Design: ARCHITECTURE.md, "The lifeline" (why a helper and not
``PR_SET_PDEATHSIG``, and what remains uncovered).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from twisted.logger import Logger

from procwork import _orphans, _spawn
from procwork._cgroup import Cgroup, CgroupObserver, observe_cgroups
from procwork._errors import ProcworkError
from procwork._lifeline_main import RECORD
from procwork._lifeline_start import start_helper

__all__ = [
    "LOCK_WAIT",
    "AlreadyRunning",
    "default_lock_path",
    "disable_lifeline",
    "enable_lifeline",
    "hold_instance_lock",
    "lifeline_pid",
    "start_lifeline",
]

_log = Logger(namespace="procwork.lifeline")

_PIPE_SIZE = 1 << 20

_pack = RECORD.pack

#: Seconds a new monitor waits for the lock of one still stopping.
LOCK_WAIT = 5.0


def _pack_paths(op: bytes, paths: tuple[str, ...]) -> bytes:
    """A record with paths (see :data:`procwork._lifeline_main.RECORD`)."""
    payload = b"\0".join(os.fsencode(p) for p in paths)
    return _pack(op, len(payload)) + payload


class _Lifeline(_spawn.LiveObserver, CgroupObserver):
    """This program's end of the pipe to its lifeline helper. One per process.

    A :class:`procwork._spawn.LiveObserver`: told of every child around its
    fork and at its reaping; and a :class:`procwork._cgroup.CgroupObserver`:
    told of every cgroup made and removed, which the helper kills whole and
    removes when the program dies.
    """

    def __init__(self) -> None:
        self.enabled = False
        self.held_fds: tuple[int, ...] = ()
        self.fd: int | None = None  # the pipe's write end, non-blocking
        self.helper: subprocess.Popen[bytes] | None = None
        self.pending = bytearray()  # records the full pipe did not take yet
        self.inherited: frozenset[_spawn.GroupProcess] = frozenset()
        # The pipes (inode numbers) of children being started, not yet
        # registered: a new helper is told of them too.
        self.forking_pipes: set[int] = set()
        # The cgroups (v2 directory -> all of them) and subtrees made, told
        # to every new helper too.
        self.cgroups: dict[str, tuple[str, ...]] = {}
        self.subtrees: list[str] = []
        self.lock = threading.RLock()

    # -- the hooks _spawn calls (never raising: they run inside a spawn) -------

    def forking(self, pipes: tuple[int, ...]) -> tuple[int, ...]:
        """Announce the pipes of a child about to be forked; their inodes."""
        try:
            if not self.enabled:
                if threading.current_thread() is threading.main_thread():
                    return ()
                # A reactor driven from another thread can't install signal
                # handlers, so a SIGTERM would kill the program without any
                # cleanup: such programs get the lifeline automatically,
                # started here, before the fork, so the child is covered.
                self.enabled = True
            inodes = tuple([os.fstat(fd).st_ino for fd in pipes])
            with self.lock:
                self.forking_pipes.update(inodes)
                self.write(b"".join([_pack(b"?", inode) for inode in inodes]))
            return inodes
        except Exception:
            _log.failure("the lifeline could not follow a child being started")
            return ()

    def started(self, proc: _spawn.GroupProcess, pipes: tuple[int, ...]) -> None:
        """Register the child's group; its pipes are no longer needed."""
        try:
            if not self.enabled or proc.pgid is None:
                return
            with self.lock:
                self.forking_pipes.difference_update(pipes)
                # One write: the group, and the end of its pipes' watch.
                self.write(
                    b"".join([_pack(b"+", proc.pgid), *[_pack(b"!", i) for i in pipes]])
                )
        except Exception:
            _log.failure("the lifeline could not follow process {pid}", pid=proc.pid)

    def not_started(self, pipes: tuple[int, ...]) -> None:
        """The child was not started: forget its pipes."""
        if not pipes:
            return
        try:
            with self.lock:
                self.forking_pipes.difference_update(pipes)
                if self.fd is not None:
                    self.write(b"".join([_pack(b"!", inode) for inode in pipes]))
        except Exception:
            _log.failure("the lifeline could not forget a child that did not start")

    def reaped(self, proc: _spawn.GroupProcess) -> None:
        """Unregister the reaped child's group."""
        try:
            if self.fd is not None and proc.pgid is not None:
                self.write(_pack(b"-", proc.pgid))
        except Exception:
            _log.failure("the lifeline could not follow process {pid}", pid=proc.pid)

    # -- the hooks procwork._cgroup calls ----------------------------------

    def created(self, cgroup: Cgroup) -> None:
        """Register a cgroup (again, when it gained a v1 directory)."""
        self._cgroup_record(b"C", cgroup.directories)

    def removed(self, cgroup: Cgroup) -> None:
        """Unregister a cgroup: removed, or its leftovers let go."""
        self._cgroup_record(b"c", (cgroup.path,))

    def subtree(self, paths: tuple[str, ...]) -> None:
        """Directories to remove, once empty, when the program is gone."""
        self._cgroup_record(b"R", paths)

    def _cgroup_record(self, op: bytes, paths: tuple[str, ...]) -> None:
        try:
            with self.lock:
                if op == b"C":
                    self.cgroups[paths[0]] = paths
                elif op == b"c":
                    self.cgroups.pop(paths[0], None)
                else:
                    self.subtrees.extend(p for p in paths if p not in self.subtrees)
                if self.fd is not None:
                    self.write(_pack_paths(op, paths))
        except Exception:
            _log.failure("the lifeline could not follow a cgroup")

    # -- the pipe ------------------------------------------------------------

    def send(self, op: bytes, number: int) -> None:
        """Write one record (see :data:`procwork._lifeline_main.RECORD`)."""
        self.write(_pack(op, number))

    def write(self, records: bytes) -> None:
        """Write ``records`` in one ``write``, after those still pending.

        Starts the helper first if it is not running: it is then told of
        every live child and every child being started instead.
        """
        with self.lock:
            if self.fd is None:
                self.start()  # registers every live child, this one included
                return
            if not self.pending:
                # The usual case, without a copy into the backlog: the
                # pipe takes records of this size whole, or not at all.
                try:
                    os.write(self.fd, records)
                    return
                except BlockingIOError:
                    pass
                except OSError:
                    self.restart()
                    return
            self.pending += records
            self.flush()

    def flush(self) -> None:
        assert self.fd is not None
        try:
            written = os.write(self.fd, self.pending)
        except BlockingIOError:
            return  # the helper is behind: keep the records for the next write
        except OSError:
            self.restart()
            return
        del self.pending[:written]

    def restart(self) -> None:
        # EPIPE: the helper died (someone SIGKILLed it). Start another with
        # every live group and every child being started; the records in
        # between are moot.
        self.stop()
        self.start()

    def start(self) -> None:
        """Start the helper now and register every live child with it."""
        with self.lock:
            if self.fd is not None:
                return
            read_end, write_end = os.pipe()  # both close-on-exec
            try:
                self.helper = start_helper(read_end, self.held_fds)
            except OSError as e:
                os.close(write_end)
                _log.error(
                    "cannot start the lifeline helper ({error}): children of "
                    "this program will not be killed if it is SIGKILLed; "
                    "trying again at the next spawn",
                    error=e,
                )
                return
            finally:
                os.close(read_end)
            # Its Popen reaps it: the orphan reaper of a PID 1 or subreaper
            # (all_children, as in procwork monitor) must leave it alone.
            _orphans.claim(self.helper)
            os.set_blocking(write_end, False)
            # Room for the records of many spawns: the helper reads them only
            # four times a second (it sleeps until we hang up); 1 MiB is the
            # usual most an unprivileged process may ask for.
            with contextlib.suppress(OSError):
                fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
            self.fd = write_end
            self.pending = bytearray()
            for inode in self.forking_pipes:
                self.pending += _pack(b"?", inode)
            for proc in _spawn.live_processes() - self.inherited:
                if proc.pgid is not None:
                    self.pending += _pack(b"+", proc.pgid)
            for directories in self.cgroups.values():
                self.pending += _pack_paths(b"C", directories)
            if self.subtrees:
                self.pending += _pack_paths(b"R", tuple(self.subtrees))
            if self.pending:
                self.flush()

    def stop(self) -> None:
        """Close our end (the helper then kills what is registered) and reap it."""
        with self.lock:
            fd, self.fd = self.fd, None
            helper, self.helper = self.helper, None
            self.pending = bytearray()
            if fd is not None:
                with contextlib.suppress(OSError):  # EBADF: closed behind our back
                    os.close(fd)
            if helper is not None:
                try:
                    helper.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    helper.kill()
                    helper.wait()

    def forget_after_fork(self) -> None:
        # A forked child (multiprocessing, say) must not hold the write end:
        # the helper would wait for the child's death too. It gets a helper
        # of its own if it spawns, never told of the parent's children.
        self.lock = threading.RLock()
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
        self.fd = None
        self.helper = None  # the parent's child, not ours to reap
        self.pending = bytearray()
        self.held_fds = ()
        self.inherited = _spawn.live_processes()
        self.forking_pipes = set()
        self.cgroups = {}  # the parent's
        self.subtrees = []


_lifeline = _Lifeline()
_spawn.observe(_lifeline)
observe_cgroups(_lifeline)
os.register_at_fork(after_in_child=_lifeline.forget_after_fork)


def enable_lifeline() -> None:
    """Kill this program's children even if it dies by SIGKILL. Opt-in.

    procwork already terminates its children when the program exits, on
    Ctrl-C and on SIGTERM. This covers every other death, SIGKILL and the
    OOM killer included: a small helper process (started by this call, in
    about a millisecond; one per program, about 10 MB of memory; a program
    forked from this one starts its own with its first child) holds a pipe to this
    program and, when the program is gone, SIGTERMs every live child's
    process group and SIGKILLs what is left half a second later; a child
    being started at that moment is found through its pipes. Each spawn
    then also costs two small writes to that pipe (one before the fork, one
    after) and each reap one (``benchmarks/bench_lifeline.py`` measures
    them).

    Children already running are covered from this call on. Calling it again
    does nothing. ``procwork run`` and ``procwork monitor`` always enable it,
    and so does the first spawn made from a thread other than the main one
    (a reactor driven there can't install signal handlers, so nothing else
    would clean up after a SIGTERM). Call from any thread.
    """
    with _lifeline.lock:
        _lifeline.enabled = True
        # Started now, not with the first child: that child's registration
        # would otherwise wait for the helper's fork and exec, widening the
        # window in which a SIGKILL leaves it unregistered.
        _lifeline.start()


def lifeline_pid() -> int | None:
    """The pid of this program's lifeline helper; None until it is started."""
    helper = _lifeline.helper
    return None if helper is None else helper.pid


def disable_lifeline() -> None:
    """Undo :func:`enable_lifeline` (for benchmarks and tests): the helper is
    told we are gone, kills whatever is still registered, and is reaped."""
    with _lifeline.lock:
        _lifeline.enabled = False
        _lifeline.stop()


def start_lifeline(hold_fds: Iterable[int] = ()) -> None:
    """Enable the lifeline and start its helper now, holding ``hold_fds`` open.

    The helper keeps them open until it has killed our children after our
    death: ``procwork monitor`` hands it its instance lock this way.

    Raises:
        RuntimeError: the helper is already running (it can't take more fds).
    """
    with _lifeline.lock:
        if _lifeline.fd is not None:
            raise RuntimeError("the lifeline helper is already running")
        _lifeline.held_fds = tuple(hold_fds)
        _lifeline.enabled = True
        _lifeline.start()


# -- one monitor per configuration ----------------------------------------------


class AlreadyRunning(ProcworkError, BlockingIOError):
    """Another ``procwork monitor`` holds the lock of this configuration."""


def default_lock_path(config_path: str | None) -> Path:
    """The instance lock file of the monitor of ``config_path`` (None: built-in).

    Named after the configuration's real path, so every monitor of one file
    shares it. In ``$XDG_RUNTIME_DIR/procwork/``, else ``/run/procwork/`` for
    root, else a per-user directory under the temporary directory.
    """
    source = "<built-in>" if config_path is None else os.path.realpath(config_path)
    digest = hashlib.sha256(os.fsencode(source)).hexdigest()[:16]
    stem = Path(source).stem if config_path is not None else "built-in"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        base = Path(runtime) / "procwork"
    elif os.geteuid() == 0:
        base = Path("/run/procwork")
    else:
        base = Path(tempfile.gettempdir()) / f"procwork-{os.geteuid()}"
    return base / f"monitor-{stem}-{digest}.lock"


def hold_instance_lock(path: Path, wait: float = LOCK_WAIT) -> int:
    """Take the exclusive lock on ``path``; its descriptor (close-on-exec).

    Waits at most ``wait`` seconds for a holder to let go (a monitor still
    stopping its services), then raises :class:`AlreadyRunning` naming the
    file and the holder's pid. The file then holds our pid.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = _holder(fd)
                os.close(fd)
                raise AlreadyRunning(
                    f"another procwork monitor runs this configuration: {holder} "
                    f"holds the lock {path} (waited {wait:g} s); stop it first, "
                    "or give this one another --lock-file"
                ) from None
            time.sleep(0.05)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _holder(fd: int) -> str:
    try:
        pid = int(os.pread(fd, 32, 0).decode() or "x")
    except ValueError:
        return "a process of unknown pid"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"pid {pid} (exited; its lifeline is still stopping its services)"
    except PermissionError:
        pass
    return f"pid {pid}"
