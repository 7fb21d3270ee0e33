"""The checks the monitor answers itself: disk, load, memory, file, process.

A command check forks a program to ask a question; these ask it in the
monitor, so that the watchdog's eyes do not need ``fork`` (which fails first
when the machine is in trouble: pid limit, memory pressure, no descriptors)
and do not cost a Python interpreter each. Each probe is a plain function
returning a :class:`Verdict` whose message says in words what was found
("/ is 93 % used, max 90 %"). The disk, file and process probes read the
file system and ``/proc``, which can block (a hung NFS mount), so the runner
calls them in a thread (:class:`OneThread`), one call at a time per check: a
call that never returns costs that check one thread, never more. The load
and memory probes read a few hundred bytes of ``/proc`` (which never hangs)
on the reactor's thread: they need no thread, which, like a fork, cannot be
had when the pid limit is reached.

The scheduling (every, timeout, failures, repeat_every, the actions) is
:mod:`procwork.monitor._checks`'s; ``python`` checks are
:mod:`procwork.monitor._pyprobe`'s.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from procwork._format import format_seconds
from procwork.monitor._proctable import LinuxProcessTable, ProcessTable, ProcInfo

if TYPE_CHECKING:
    from procwork.monitor._checks import CheckSpec

__all__ = [
    "CONTAINS_WINDOW",
    "DEFAULTS",
    "OneThread",
    "Verdict",
    "disk",
    "file",
    "load",
    "memory",
    "native_probe",
    "process",
]

T = TypeVar("T")

#: A ``file`` check's ``contains`` is looked for in this many bytes at the
#: end of the file, at most: a log of gigabytes is not read whole.
CONTAINS_WINDOW = 64 * 1024

#: How many bytes of a pidfile are read: a pid, a newline, maybe more.
_PIDFILE_READ = 64

#: The thresholds a kind of check uses when its key is left out.
DEFAULTS = {
    "max_used_percent": 90.0,
    "max_inodes_percent": 90.0,
    "max_per_core": 4.0,
    "min_available_percent": 10.0,
    "min_count": 1,
}


@dataclass(frozen=True)
class Verdict:
    """A probe's answer: ok or not, and what it found, in words
    (``timed_out``: it failed by its own timeout)."""

    ok: bool
    message: str
    timed_out: bool = False


# -- one call at a time in a thread --------------------------------------------


#: Runs a function in a thread, its Deferred fired on the reactor thread
#: (``deferToThreadPool`` on the reactor's pool; tests inject their own).
InThread = Callable[[Callable[[], Any]], "Deferred[Any]"]


class OneThread:
    """One check's calls in a thread, one at a time.

    A thread cannot be stopped: a call that outlives its timeout goes on, and
    the check's next call would start another thread, and so on until the
    pool is full of calls that never return. Instead, while a call is still
    going, the next one is not made: it fails at once saying so, and one
    thread at most is spent on each check.

    Args:
        in_thread: Runs a function in a thread.
        clock: ``seconds()`` for how long the call has been going.
    """

    def __init__(self, in_thread: InThread, clock: Any) -> None:
        self._in_thread = in_thread
        self._clock = clock
        self.busy_since: float | None = None

    def __call__(self, function: Callable[[], T]) -> Deferred[T | Verdict]:
        """Call ``function`` in a thread, unless the last call is still going.

        Returns:
            A Deferred of its result (or its exception), or of a failed
            Verdict if the previous call has not returned. Cancelling it
            fires it at once; the thread goes on until the function returns.
        """
        if self.busy_since is not None:
            going = format_seconds(self._clock.seconds() - self.busy_since)
            return succeed(
                Verdict(
                    False,
                    f"its previous call has not returned after {going} s "
                    "(not called again until it does)",
                )
            )
        self.busy_since = self._clock.seconds()
        outer: Deferred[T | Verdict] = Deferred()

        def returned(result: T | Failure) -> None:
            self.busy_since = None
            if outer.called:  # cancelled (timed out or stopped) meanwhile
                return
            if isinstance(result, Failure):
                outer.errback(result)
            else:
                outer.callback(result)

        try:
            inner = self._in_thread(function)
        except BaseException:  # no thread to be had (the pid limit): not busy
            self.busy_since = None
            raise
        inner.addBoth(returned)
        return outer


# -- the probes ----------------------------------------------------------------


def _percent(value: float) -> str:
    return f"{value:.0f}" if value >= 1 or value == 0 else f"{value:.1g}"


def _bytes(value: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def disk(
    path: str, max_used_percent: float, max_inodes_percent: float | None
) -> Verdict:
    """How full the file system holding ``path`` is, as ``df`` counts it
    (used / (used + available to users)), and its inodes."""
    try:
        st = os.statvfs(path)
    except OSError as e:
        return Verdict(False, f"cannot read {path}: {e.strerror or e}")
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    free = st.f_bavail * st.f_frsize
    percent = 100.0 * used / (used + free) if used + free else 0.0
    found = [f"{path} is {_percent(percent)} % used ({_bytes(free)} free)"]
    problems = []
    if percent > max_used_percent:
        problems.append(f"{found[0]}, max {max_used_percent:g} %")
    # Some file systems (btrfs) have no inode table: f_files is 0.
    if max_inodes_percent is not None and st.f_files:
        inodes = 100.0 * (st.f_files - st.f_ffree) / st.f_files
        found.append(f"inodes {_percent(inodes)} % used")
        if inodes > max_inodes_percent:
            problems.append(
                f"{path} inodes are {_percent(inodes)} % used, "
                f"max {max_inodes_percent:g} %"
            )
    if problems:
        return Verdict(False, "; ".join(problems))
    return Verdict(True, ", ".join(found))


def _cpu_pressure(path: str) -> float:
    """The share of the last 10 s some task waited for a CPU (PSI
    ``some avg10``), in percent.

    Raises:
        OSError: no such file (a kernel without PSI).
        ValueError: not the kernel's format.
    """
    with open(path, "rb") as f:
        text = f.read(4096).decode("ascii", "replace")
    found = re.search(r"^some .*\bavg10=([0-9.]+)", text, re.MULTILINE)
    if found is None:
        raise ValueError(f"no 'some avg10=' in {path}")
    return float(found.group(1))


def load(
    max_per_core: float,
    max_cpu_pressure: float | None,
    *,
    loadavg: Callable[[], tuple[float, float, float]] = os.getloadavg,
    cpus: Callable[[], int | None] = os.cpu_count,
    pressure_file: str = "/proc/pressure/cpu",
) -> Verdict:
    """The 1-minute load average per core, and the CPU pressure if asked."""
    cores = cpus() or 1
    one = loadavg()[0]
    per_core = one / cores
    found = f"load {per_core:.2f} per core ({one:.2f} on {cores} cores)"
    problems = []
    if per_core > max_per_core:
        problems.append(f"{found}, max {max_per_core:g}")
    if max_cpu_pressure is not None:
        try:
            pressure = _cpu_pressure(pressure_file)
        except (OSError, ValueError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else e
            problems.append(f"cannot read the CPU pressure ({pressure_file}: {why})")
        else:
            found += f", CPU pressure {pressure:g} %"
            if pressure > max_cpu_pressure:
                problems.append(
                    f"CPU pressure {pressure:g} % (tasks waiting for a CPU, "
                    f"last 10 s), max {max_cpu_pressure:g} %"
                )
    if problems:
        return Verdict(False, "; ".join(problems))
    return Verdict(True, found)


def memory(min_available_percent: float, meminfo: str = "/proc/meminfo") -> Verdict:
    """The share of memory available to start programs (``MemAvailable``)."""
    try:
        with open(meminfo, "rb") as f:
            text = f.read(16384).decode("ascii", "replace")
        fields = dict(re.findall(r"^(\w+):\s+([0-9]+) kB", text, re.MULTILINE))
        total = int(fields["MemTotal"]) * 1024
        available = int(fields["MemAvailable"]) * 1024
    except (OSError, KeyError) as e:
        return Verdict(False, f"cannot read {meminfo}: {e}")
    percent = 100.0 * available / total if total else 0.0
    found = (
        f"{_percent(percent)} % of memory available "
        f"({_bytes(available)} of {_bytes(total)})"
    )
    if percent < min_available_percent:
        return Verdict(False, f"{found}, min {min_available_percent:g} %")
    return Verdict(True, found)


def file(
    path: str,
    *,
    max_age: float | None = None,
    min_size: int | None = None,
    max_size: int | None = None,
    contains: str | None = None,
    now: Callable[[], float] = time.time,
) -> Verdict:
    """A file that must exist, be fresh, be of a size, hold a pattern.

    ``contains`` is searched for in the last :data:`CONTAINS_WINDOW` bytes.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return Verdict(False, f"{path} does not exist")
    except OSError as e:
        return Verdict(False, f"cannot read {path}: {e.strerror or e}")
    age = now() - st.st_mtime
    problems = []
    if max_age is not None and age > max_age:
        problems.append(
            f"{path} last changed {format_seconds(age)} s ago, "
            f"max_age {format_seconds(max_age)} s"
        )
    if min_size is not None and st.st_size < min_size:
        problems.append(f"{path} is {_bytes(st.st_size)}, min_size {_bytes(min_size)}")
    if max_size is not None and st.st_size > max_size:
        problems.append(f"{path} is {_bytes(st.st_size)}, max_size {_bytes(max_size)}")
    if contains is not None and not problems:
        try:
            with open(path, "rb") as f:
                if st.st_size > CONTAINS_WINDOW:
                    f.seek(-CONTAINS_WINDOW, os.SEEK_END)
                tail = f.read(CONTAINS_WINDOW).decode("utf-8", "replace")
        except OSError as e:
            return Verdict(False, f"cannot read {path}: {e.strerror or e}")
        if not re.search(contains, tail, re.MULTILINE):
            where = "" if st.st_size <= CONTAINS_WINDOW else " in its last 64 KiB"
            problems.append(f"{path} does not contain /{contains}/{where}")
    if problems:
        return Verdict(False, "; ".join(problems))
    return Verdict(
        True,
        f"{path}: {_bytes(st.st_size)}, changed {format_seconds(max(age, 0))} s ago",
    )


@dataclass(frozen=True)
class _Selector:
    """Which processes a ``process`` check counts (as a rule selects them)."""

    name: str
    cmdline: str | None
    user: str | None

    def selects(self, process: ProcInfo) -> bool:
        if process.is_dead or process.is_kernel_thread:
            return False
        # comm is cut to 15 characters: a long script name is in argv[0].
        argv0 = os.path.basename(process.cmdline[0]) if process.cmdline else ""
        if not (fnmatchcase(process.name, self.name) or fnmatchcase(argv0, self.name)):
            return False
        if self.cmdline is not None and not re.search(
            self.cmdline, " ".join(process.cmdline)
        ):
            return False
        return self.user is None or process.user == self.user

    def __str__(self) -> str:
        words = [f"name {self.name!r}"]
        if self.cmdline is not None:
            words.append(f"cmdline /{self.cmdline}/")
        if self.user is not None:
            words.append(f"user {self.user!r}")
        return ", ".join(words)


def process(
    name: str,
    *,
    cmdline: str | None = None,
    user: str | None = None,
    min_count: int = 1,
    max_count: int | None = None,
    pidfile: str | None = None,
    table: ProcessTable | None = None,
) -> Verdict:
    """How many processes match (name glob, cmdline regex, user); or, with
    ``pidfile``, whether the process it names runs and matches."""
    table = table if table is not None else LinuxProcessTable()
    selector = _Selector(name, cmdline, user)
    if pidfile is not None:
        return _pidfile(pidfile, selector, table)
    count = sum(1 for p in table.snapshot() if selector.selects(p))
    matching = f"{count} process{'' if count == 1 else 'es'} match {selector}"
    if count < min_count:
        if count == 0:
            return Verdict(False, f"no process matches {selector}")
        return Verdict(False, f"{matching}, min_count {min_count}")
    if max_count is not None and count > max_count:
        return Verdict(False, f"{matching}, max_count {max_count}")
    return Verdict(True, matching)


def _pidfile(path: str, selector: _Selector, table: ProcessTable) -> Verdict:
    try:
        with open(path, "rb") as f:
            text = f.read(_PIDFILE_READ).decode("ascii", "replace").strip()
    except FileNotFoundError:
        return Verdict(False, f"pidfile {path} does not exist")
    except OSError as e:
        return Verdict(False, f"cannot read pidfile {path}: {e.strerror or e}")
    if not text.isdigit() or int(text) <= 0:
        return Verdict(False, f"pidfile {path} holds no pid ({text[:40]!r})")
    pid = int(text)
    found = table.get(pid)
    if found is None or found.is_dead:
        return Verdict(False, f"no process {pid} (from pidfile {path})")
    if not selector.selects(found):
        return Verdict(
            False,
            f"process {pid} (from pidfile {path}) is {found.command_line()[:80]!r}, "
            f"which does not match {selector}",
        )
    return Verdict(True, f"process {pid} ({found.name}) from pidfile {path} runs")


def native_probe(
    spec: CheckSpec, table: ProcessTable | None = None
) -> Callable[[], Verdict]:
    """The function answering ``spec``'s question (not for command, python,
    http or tcp checks), to be called in a thread.

    Args:
        spec: A disk, load, memory, file or process check.
        table: Where processes are looked up (default ``/proc``).
    """

    def default(key: str) -> Any:
        value = getattr(spec, key)
        return DEFAULTS[key] if value is None else value

    kind = spec.kind
    if kind == "disk":
        assert spec.disk is not None
        path = spec.disk
        used, inodes = default("max_used_percent"), default("max_inodes_percent")
        return lambda: disk(path, used, inodes)
    if kind == "load":
        per_core, pressure = default("max_per_core"), spec.max_cpu_pressure
        return lambda: load(per_core, pressure)
    if kind == "memory":
        available = default("min_available_percent")
        return lambda: memory(available)
    if kind == "file":
        assert spec.file is not None
        path = spec.file
        options: dict[str, Any] = {
            "max_age": spec.max_age,
            "min_size": spec.min_size,
            "max_size": spec.max_size,
            "contains": spec.contains,
        }
        return lambda: file(path, **options)
    if kind == "process":
        assert spec.process is not None
        name = spec.process
        selection: dict[str, Any] = {
            "cmdline": spec.cmdline,
            "user": spec.user,
            "min_count": default("min_count"),
            "max_count": spec.max_count,
            "pidfile": spec.pidfile,
            "table": table,
        }
        return lambda: process(name, **selection)
    raise ValueError(f"check {spec.name!r}: a {kind} check has no native probe")
