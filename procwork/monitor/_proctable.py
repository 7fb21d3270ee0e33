"""The machine's process table, read from Linux ``/proc`` behind a small interface.

The watchdog rules (:mod:`procwork.monitor`) only need "which processes exist and
what are they doing"; :class:`ProcessTable` is that question, and
:class:`LinuxProcessTable` answers it from ``/proc``. Tests point the table at a
fake tree, or hand the rule engine a table of their own.

Reading ``/proc`` races with processes starting and exiting: that is normal, and
a process that vanishes while it is being read is simply left out, never an
exception.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from typing import Protocol

__all__ = ["PF_KTHREAD", "LinuxProcessTable", "ProcInfo", "ProcessTable"]

# States of a process that has exited but not yet been reaped by its parent.
_DEAD_STATES = frozenset({"Z", "X", "x"})

# The kernel's flag for its own threads (include/linux/sched.h), in the
# ``flags`` field of /proc/PID/stat. The flag, not the pid, is what says "kernel
# thread": inside a pid namespace pid 2 is an ordinary process, and the
# children of an ordinary process are ordinary processes.
PF_KTHREAD = 0x00200000


@dataclass(frozen=True)
class ProcInfo:
    """One process, as seen at one moment.

    A pid alone does not name a process: pids are reused. ``(pid, start_time)``
    does, and :attr:`identity` is that pair.

    Attributes:
        pid: Process id.
        ppid: Parent's process id.
        pgid: Process group id.
        uid: Effective user id (the one ``ps`` shows).
        user: User name of ``uid``, or the uid as a string if it has none.
        name: The kernel's short name (``comm``), at most 15 characters.
        cmdline: Arguments, ``argv[0]`` first; empty for kernel threads and
            zombies.
        state: One-letter state (``R``, ``S``, ``D``, ``Z``, ...).
        start_time: When the process started, in seconds since the epoch.
        cpu_seconds: User plus system CPU time used so far.
        rss_bytes: Resident memory.
        session: Session id (the pid of the session's leader); 0 if unknown.
        flags: The kernel's ``PF_*`` flags of the process (see
            :data:`PF_KTHREAD`); 0 if unknown.
    """

    pid: int
    ppid: int
    pgid: int
    uid: int
    user: str
    name: str
    cmdline: tuple[str, ...]
    state: str
    start_time: float
    cpu_seconds: float
    rss_bytes: int
    session: int = 0
    flags: int = 0

    @property
    def identity(self) -> tuple[int, float]:
        """``(pid, start_time)``: names this process even after its pid is reused."""
        return (self.pid, self.start_time)

    @property
    def is_kernel_thread(self) -> bool:
        """True for the kernel's own threads (``PF_KTHREAD``): signals can't stop them.

        Judged by the flag the kernel sets, never by pid: inside a pid
        namespace (a container) pid 2 is an ordinary process, maybe the web
        server whose runaway CGIs a rule is there to stop.
        """
        return bool(self.flags & PF_KTHREAD)

    @property
    def is_dead(self) -> bool:
        """True if the process has exited and only waits to be reaped (a zombie)."""
        return self.state in _DEAD_STATES

    def command_line(self) -> str:
        """The arguments joined by spaces, or ``[name]`` like ``ps`` when empty."""
        return " ".join(self.cmdline) if self.cmdline else f"[{self.name}]"


class ProcessTable(Protocol):
    """Where the rule engine looks processes up."""

    def snapshot(self) -> list[ProcInfo]:
        """Every process that could be read, in no particular order."""
        ...

    def get(self, pid: int) -> ProcInfo | None:
        """The process with this pid now, or None if there is none."""
        ...


class LinuxProcessTable:
    """A :class:`ProcessTable` read from Linux ``/proc``.

    Each call reads ``/proc`` afresh; nothing is cached but the boot time and
    user names. Reading is synchronous: a few milliseconds per thousand
    processes. Any thread may call it.

    Args:
        proc_root: Where ``/proc`` is mounted; tests pass a fake tree holding
            ``stat`` (with a ``btime`` line) and ``PID/{stat,status,cmdline}``.
    """

    def __init__(self, proc_root: str | os.PathLike[str] = "/proc") -> None:
        self._root = os.fspath(proc_root)
        self._clock_ticks = os.sysconf("SC_CLK_TCK")
        self._page_size = os.sysconf("SC_PAGE_SIZE")
        self._boot_time: float | None = None
        self._user_names: dict[int, str] = {}

    def __repr__(self) -> str:
        return f"LinuxProcessTable({self._root!r})"

    def snapshot(self) -> list[ProcInfo]:
        """Every process in ``/proc``; those that exit while being read are left out.

        Raises:
            OSError: ``proc_root`` itself cannot be read (not Linux, not mounted).
        """
        boot_time = self._get_boot_time()
        processes = []
        for entry in os.listdir(self._root):
            if entry.isdigit():
                info = self._read_process(int(entry), boot_time)
                if info is not None:
                    processes.append(info)
        return processes

    def get(self, pid: int) -> ProcInfo | None:
        """The process with this pid now, or None if it does not exist."""
        return self._read_process(pid, self._get_boot_time())

    def _get_boot_time(self) -> float:
        if self._boot_time is None:
            with open(os.path.join(self._root, "stat"), "rb") as f:
                for line in f:
                    if line.startswith(b"btime "):
                        self._boot_time = float(line.split()[1])
                        break
                else:
                    raise OSError(f"no btime line in {self._root}/stat")
        return self._boot_time

    def _read_process(self, pid: int, boot_time: float) -> ProcInfo | None:
        # All three files are read through one descriptor of the /proc/PID
        # directory: once that process exits, reads through it fail instead of
        # silently describing a new process that was given the same pid.
        try:
            dir_fd = os.open(
                os.path.join(self._root, str(pid)), os.O_RDONLY | os.O_DIRECTORY
            )
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
            return None
        try:
            stat = _read_file("stat", dir_fd)
            status = _read_file("status", dir_fd)
            cmdline = _read_file("cmdline", dir_fd)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return None  # it exited, or is hidden from us: not an error
        finally:
            os.close(dir_fd)
        try:
            return self._parse(pid, stat, status, cmdline, boot_time)
        except (ValueError, IndexError):
            # A torn or foreign entry; one odd process must not stop a scan.
            return None

    def _parse(
        self, pid: int, stat: bytes, status: bytes, cmdline: bytes, boot_time: float
    ) -> ProcInfo:
        # comm is in parentheses and may itself contain spaces and ")":
        # it ends at the LAST ")" of the line.
        open_paren = stat.index(b"(")
        close_paren = stat.rindex(b")")
        name = os.fsdecode(stat[open_paren + 1 : close_paren])
        # Fields after comm, numbered as in proc(5) minus 3.
        fields = stat[close_paren + 2 :].split()
        uid = _effective_uid(status)
        return ProcInfo(
            pid=pid,
            ppid=int(fields[1]),
            pgid=int(fields[2]),
            session=int(fields[3]),
            flags=int(fields[6]),
            uid=uid,
            user=self._user_name(uid),
            name=name,
            cmdline=_parse_cmdline(cmdline),
            state=fields[0].decode("ascii"),
            start_time=boot_time + int(fields[19]) / self._clock_ticks,
            cpu_seconds=(int(fields[11]) + int(fields[12])) / self._clock_ticks,
            rss_bytes=int(fields[21]) * self._page_size,
        )

    def _user_name(self, uid: int) -> str:
        name = self._user_names.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
            self._user_names[uid] = name
        return name


def _read_file(name: str, dir_fd: int) -> bytes:
    fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _effective_uid(status: bytes) -> int:
    for line in status.splitlines():
        if line.startswith(b"Uid:"):
            # Uid: real effective saved filesystem
            return int(line.split()[2])
    raise ValueError("no Uid line in status")


def _parse_cmdline(cmdline: bytes) -> tuple[str, ...]:
    # Each argument ends with a NUL. Programs that rewrite their title
    # (setproctitle) may leave one string without it, so the final NUL is
    # dropped if present rather than assumed.
    if not cmdline:
        return ()
    if cmdline.endswith(b"\0"):
        cmdline = cmdline[:-1]
    return tuple(os.fsdecode(arg) for arg in cmdline.split(b"\0"))
