"""procwork's own cgroups: a containment per program or monitor, a cgroup per
service instance or run.

A :class:`Containment` is one subtree, named by its owner (a monitor after
its lock, ``procwork.monitor-web-1a2b....``; a program's runs
``procwork.runs.<pid>``), made under the base :mod:`._host` found, with a
twin in each v1 hierarchy a limit needs. Each :class:`Cgroup` in it is
made when its first child starts, holds its limits, and is removed once
its last user released it and it is empty. A subtree left by an earlier
owner of the same name (a monitor SIGKILLed with its lifeline) is killed
and removed before anything starts in it: never a second copy of a service.

procwork writes only into what it made: its subtrees and cgroups, and the
``cgroup.subtree_control`` of a base that was given to it (a delegated
cgroup), after moving the processes of that base into a leaf of their own,
which cgroup v2 requires before it enables a controller for the children.

Call from the reactor thread; :class:`Containment` waits on the reactor
(:mod:`._watch`), never by polling.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from procwork._cgroup import _fs
from procwork._cgroup._host import Host, discover
from procwork._cgroup._limits import (
    CONTROLLER,
    Enforcement,
    Limits,
    files,
    plan,
    unlimited,
)
from procwork._cgroup._watch import when_empty
from procwork._reactor import Reactor, default_reactor

__all__ = [
    "EMPTY_WAIT",
    "Cgroup",
    "CgroupObserver",
    "Containment",
    "Usage",
    "observe_cgroups",
]

_log = Logger(namespace="procwork")

#: Seconds a killed cgroup is given to empty before procwork goes on and
#: says what is left (a process in uninterruptible sleep outlives SIGKILL).
EMPTY_WAIT = 10.0

#: Seconds the processes an earlier owner left are given to die at start.
STALE_WAIT = 5.0

#: The leaf the processes of a given base move to, when a controller must
#: be enabled for that base's children.
LEAF = "procwork.leaf"


class CgroupObserver:
    """Told of each cgroup procwork makes and removes: the lifeline, which
    kills them when the program dies. The methods here do nothing; none may
    raise."""

    def created(self, cgroup: Cgroup) -> None:
        """``cgroup`` exists and children will start in it."""

    def removed(self, cgroup: Cgroup) -> None:
        """``cgroup`` is no longer procwork's (removed, or let go)."""

    def subtree(self, paths: tuple[str, ...]) -> None:
        """A containment's directories, to remove once empty at the end."""


_observers: list[CgroupObserver] = []


def observe_cgroups(observer: CgroupObserver) -> None:
    """Tell ``observer`` of every cgroup made from now on."""
    _observers.append(observer)


def _tell(call: Callable[[CgroupObserver], object]) -> None:
    for observer in _observers:
        try:
            call(observer)
        except Exception:
            _log.failure("a cgroup observer failed")


@dataclass(frozen=True)
class Usage:
    """What a cgroup uses now.

    Attributes:
        memory_bytes: Memory charged to it (``memory.current``, v1
            ``memory.usage_in_bytes``), or, without a memory controller, the
            resident memory of its processes added up (``memory_from``
            says which); None if it cannot be read.
        memory_from: ``"cgroup"`` or ``"rss"``.
        cpu_seconds: CPU time used by its processes since it was made.
        tasks: Processes and threads in it.
        oom_kills: Processes the OOM killer killed in it since it was made.
    """

    memory_bytes: int | None
    memory_from: str
    cpu_seconds: float | None
    tasks: int | None
    oom_kills: int

    def to_dict(self) -> dict[str, object]:
        """As JSON types."""
        return {
            "memory_bytes": self.memory_bytes,
            "memory_from": self.memory_from,
            "cpu_seconds": self.cpu_seconds,
            "tasks": self.tasks,
            "oom_kills": self.oom_kills,
        }


class Cgroup:
    """One cgroup of procwork's: a directory in cgroup v2, and one in each v1
    hierarchy its limits use.

    Attributes:
        name: Its name in its containment.
        path: Its cgroup v2 directory.
        v1: Its v1 directories, by controller.
        limits: The limits written to it.
        enforcement: Each limit, enforced or why not.
    """

    def __init__(
        self, containment: Containment, name: str, path: str, v1: dict[str, str]
    ) -> None:
        self.containment = containment
        self.name = name
        self.path = path
        self.v1 = v1
        self.limits = Limits()
        self.enforcement: list[Enforcement] = []
        self.users = 0
        self._removing: Deferred[bool] | None = None

    def __repr__(self) -> str:
        return f"<Cgroup {self.path}>"

    @property
    def procs_files(self) -> tuple[str, ...]:
        """The ``cgroup.procs`` files a child writes itself into."""
        return tuple(os.path.join(d, _fs.PROCS) for d in (self.path, *self.v1.values()))

    @property
    def directories(self) -> tuple[str, ...]:
        """Its directories, cgroup v2's first."""
        return (self.path, *self.v1.values())

    def members(self) -> list[int]:
        """The pids of the processes in it."""
        return _fs.all_members(self.path)

    def populated(self) -> bool:
        """Whether a process lives in it."""
        return _fs.populated(self.path)

    def kill(self) -> None:
        """SIGKILL every process in it (``cgroup.kill``, else freeze and kill
        each)."""
        _fs.kill(self.path, kill_file=self.containment.kill_file)

    def signal(self, signum: int) -> int:
        """Send ``signum`` to every process in it; how many got it."""
        return _fs.signal_members(self.path, signum)

    def oom_kills(self) -> int:
        """Processes the OOM killer killed in it since it was made."""
        places = [(self.path, "memory.events")]
        if "memory" in self.v1:  # limited there, so counted there
            places.insert(0, (self.v1["memory"], "memory.oom_control"))
        for directory, name in places:
            try:
                return _fs.keyed(_fs.read_text(directory, name)).get("oom_kill", 0)
            except OSError:
                continue
        return 0

    def usage(self) -> Usage:
        """What it uses now (see :class:`Usage`)."""
        memory: int | None = None
        memory_from = "cgroup"
        for directory, name in (
            (self.path, "memory.current"),
            (self.v1.get("memory"), "memory.usage_in_bytes"),
        ):
            if directory is not None:
                with contextlib.suppress(OSError, ValueError):
                    memory = int(_fs.read_text(directory, name))
                    break
        pids = self.members()
        if memory is None:
            memory_from = "rss"
            memory = _rss(pids)
        cpu: float | None = None
        with contextlib.suppress(OSError):
            usec = _fs.keyed(_fs.read_text(self.path, "cpu.stat")).get("usage_usec")
            cpu = None if usec is None else usec / 1e6
        tasks: int | None = None
        for directory, name in (
            (self.path, "pids.current"),
            (self.v1.get("pids"), "pids.current"),
        ):
            if directory is not None:
                with contextlib.suppress(OSError, ValueError):
                    tasks = int(_fs.read_text(directory, name))
                    break
        if tasks is None:
            with contextlib.suppress(OSError):
                tasks = len(_fs.read_text(self.path, "cgroup.threads").split())
        return Usage(memory, memory_from, cpu, tasks, self.oom_kills())


def _rss(pids: list[int]) -> int | None:
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for pid in pids:
        with (
            contextlib.suppress(OSError, ValueError, IndexError),
            open(f"/proc/{pid}/statm") as f,
        ):
            total += int(f.read().split()[1]) * page
    return total


class Containment:
    """procwork's cgroups of one owner (see the module's docstring).

    Args:
        name: The subtree's name (``procwork.`` is put before it).
        host: Where cgroups may be made (:func:`._host.discover`).
        reactor: Where waits happen (None: a containment that is only
            described, never started).
        kill_file: Kill with ``cgroup.kill``; None: if the kernel has it
            (False: freeze and kill each member, as kernels before 5.14).
    """

    def __init__(
        self,
        name: str,
        host: Host,
        *,
        reactor: Reactor | None,
        kill_file: bool | None = None,
    ) -> None:
        self.name = f"procwork.{name}"
        self.host = host
        self._reactor = reactor
        self.why = host.v2_why
        self.root: str | None = (
            None if host.v2_base is None else os.path.join(host.v2_base, self.name)
        )
        self._kill_file = kill_file
        self._cgroups: dict[str, Cgroup] = {}
        self._v1_roots: dict[str, str] = {}
        self._v1_why: dict[str, str] = dict(host.v1_why)
        self._enabled: set[str] = set()
        self._v2_why: dict[str, str] = {}  # a v2 controller that could not be had
        self.stale_killed = 0
        self._made = False

    def __repr__(self) -> str:
        where = self.root if self.available else f"unavailable: {self.why}"
        return f"<Containment {where}>"

    @classmethod
    def here(
        cls,
        name: str,
        *,
        reactor: Reactor | None = None,
        limits: Sequence[Limits] = (),
    ) -> Containment:
        """A containment on this machine, started (see :meth:`start`): the
        one a program gives its :class:`~procwork.supervisor.Supervisor`.

        Args:
            name: Its subtree's name, unique on the machine (``procwork.`` is
                put before it); an earlier one's leftovers are killed.
            reactor: Where waits happen (default: the global reactor).
            limits: The limits its cgroups will have, so that the controllers
                they need are made available now.
        """
        if reactor is None:
            reactor = default_reactor()
        containment = cls(name, discover(), reactor=reactor)
        containment.start(list(limits))
        return containment

    @property
    def available(self) -> bool:
        """Whether processes are contained in cgroups (else process groups)."""
        return self.root is not None and not self.why

    @property
    def kill_file(self) -> bool:
        """Whether ``cgroup.kill`` is used (Linux >= 5.14; known once started)."""
        return bool(self._kill_file)

    # -- making it ---------------------------------------------------------

    def start(self, limits: list[Limits] | None = None) -> None:
        """Make the subtree, killing and removing what an earlier owner of
        the same name left; prepare the controllers ``limits`` need.

        Blocks at most :data:`STALE_WAIT` seconds (the earlier owner's
        processes dying). On failure, :attr:`available` is False and
        :attr:`why` says why: the owner then uses process groups.
        """
        if self.root is None or self._made:
            return
        if self._reactor is None:
            raise ValueError("a Containment made without a reactor cannot start")
        try:
            if os.path.isdir(self.root):
                self._clean_stale()
            try:
                os.mkdir(self.root)
            except FileExistsError:
                if not os.path.isdir(self.root):
                    raise
                # Left by the earlier owner with a process that outlived
                # SIGKILL (said by _clean_stale): used as it is.
        except OSError as e:
            self.why = f"cannot make {self.root}: {e.strerror or e}"
            return
        self._made = True
        _tell(lambda o: o.subtree((self.root or "",)))
        if self._kill_file is None:
            self._kill_file = os.path.exists(os.path.join(self.root, _fs.KILL))
        for each in limits or ():
            for key, _ in each.items():
                self._controller(key)

    def _clean_stale(self) -> None:
        assert self.root is not None
        members = _fs.all_members(self.root)
        if members:
            _log.warn(
                "{count} processes are left in {root} by an earlier procwork of the "
                "same name (killed with its lifeline?): killing them before "
                "starting anything",
                count=len(members),
                root=self.root,
            )
            _fs.kill(
                self.root, kill_file=os.path.exists(os.path.join(self.root, _fs.KILL))
            )
            if not _fs.wait_empty(self.root, STALE_WAIT):
                _log.error(
                    "{root} still holds processes {seconds} s after SIGKILL",
                    root=self.root,
                    seconds=STALE_WAIT,
                )
        self.stale_killed = len(members)
        _fs.remove(self.root)
        for controller in ("memory", "pids", "cpu"):
            base = self.host.v1_bases.get(controller)
            if base is not None:
                _fs.remove(os.path.join(base, self.name))

    def _controller(self, key: str) -> None:
        """Make the controller of limit ``key`` available to the cgroups, if
        it can be: enabled in cgroup v2, else a v1 subtree made."""
        controller = CONTROLLER[key]
        if controller in self._enabled or controller in self._v1_roots:
            return
        if self.root is None or not self._made:
            return
        if controller in self.host.controllers():
            why = self._enable_v2(controller)
            if why is None:
                self._enabled.add(controller)
                return
            self._v2_why[controller] = why
        base = self.host.v1_bases.get(controller)
        if base is None:
            return
        root = os.path.join(base, self.name)
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(root)
        except OSError as e:
            self._v1_why[controller] = f"cannot make {root}: {e.strerror or e}"
            return
        self._v1_roots[controller] = root
        _tell(lambda o: o.subtree((root,)))

    def _enable_v2(self, controller: str) -> str | None:
        assert self.root is not None and self.host.v2_base is not None
        base = self.host.v2_base
        try:
            enabled = _fs.read_text(base, "cgroup.subtree_control").split()
            if controller not in enabled:
                if not self.host.v2_owned:
                    return (
                        f"{controller} is not enabled in {base}/cgroup.subtree_control"
                    )
                self._leave_base(base)
                _fs.write_text(base, "cgroup.subtree_control", f"+{controller}")
            _fs.write_text(self.root, "cgroup.subtree_control", f"+{controller}")
        except OSError as e:
            return f"cannot enable {controller} for {self.root}: {e.strerror or e}"
        return None

    def _leave_base(self, base: str) -> None:
        """Move the processes of ``base`` (a cgroup given to us) into a leaf:
        cgroup v2 enables a controller for a cgroup's children only while
        the cgroup itself holds no process."""
        pids = _fs.members(base)
        if not pids:
            return
        leaf = os.path.join(base, LEAF)
        with contextlib.suppress(FileExistsError):
            os.mkdir(leaf)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                try:
                    _fs.write_text(leaf, _fs.PROCS, str(pid))
                except OSError as e:
                    if e.errno != errno.ESRCH:
                        raise
        _log.info(
            "moved {count} processes from {base} into {leaf}, so that controllers "
            "can be enabled for procwork's cgroups",
            count=len(pids),
            base=base,
            leaf=leaf,
        )

    # -- what it can enforce ---------------------------------------------------

    def plan(self, limits: Limits) -> list[Enforcement]:
        """Where each of ``limits`` is (or would be) enforced, or why not."""
        v2 = set(self.host.controllers()) - set(self._v2_why)
        v1 = set(self.host.v1_bases) - (set(self._v1_why) - set(self._v1_roots))
        v1_why = dict(self._v1_why)
        for controller, why in self._v2_why.items():
            v1_why.setdefault(controller, why)
        return plan(
            limits,
            v2_controllers=v2,
            v1_controllers=v1,
            v2_why="" if self.available else self.why,
            v1_why=v1_why,
        )

    # -- cgroups -------------------------------------------------------------------

    def cgroup(self, name: str, limits: Limits | None = None) -> Cgroup | None:
        """The cgroup ``name`` (made if it does not exist), its limits set, and
        one more user of it; None when containment is unavailable (said once
        where the owner decided to contain).

        Raises:
            OSError: it cannot be made (the message names it).
        """
        if not self.available or self.root is None:
            return None
        limits = Limits() if limits is None else limits
        cgroup = self._cgroups.get(name)
        if cgroup is None:
            cgroup = self._make(name)
        for key, _ in limits.items():
            self._controller(key)
        self._limit(cgroup, limits)
        cgroup.users += 1
        if cgroup._removing is not None:
            removing, cgroup._removing = cgroup._removing, None
            removing.cancel()
        return cgroup

    def _make(self, name: str) -> Cgroup:
        assert self.root is not None
        path = os.path.join(self.root, name)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path)
        cgroup = Cgroup(self, name, path, {})
        self._cgroups[name] = cgroup
        _tell(lambda o: o.created(cgroup))
        return cgroup

    def _limit(self, cgroup: Cgroup, limits: Limits) -> None:
        """Write ``limits`` to ``cgroup``, lifting those it no longer has."""
        if not limits and not cgroup.limits:
            return  # a run's: nothing to read or write
        enforcement = self.plan(limits)
        for key, value in limits.items():
            controller = CONTROLLER[key]
            if controller in self._enabled:
                self._write(cgroup.path, files(key, value, 2))
            elif controller in self._v1_roots and any(
                e.key == key and e.enforced for e in enforcement
            ):
                directory = cgroup.v1.get(controller)
                if directory is None:
                    directory = os.path.join(self._v1_roots[controller], cgroup.name)
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(directory)
                    cgroup.v1[controller] = directory
                    _tell(lambda o: o.created(cgroup))
                self._write(directory, files(key, value, 1))
        for key in CONTROLLER:
            if getattr(limits, key) is None and getattr(cgroup.limits, key) is not None:
                controller = CONTROLLER[key]
                if controller in self._enabled:
                    self._write(cgroup.path, unlimited(key, 2))
                elif controller in cgroup.v1:
                    self._write(cgroup.v1[controller], unlimited(key, 1))
        cgroup.limits = limits
        cgroup.enforcement = enforcement

    @staticmethod
    def _write(directory: str, values: dict[str, str]) -> None:
        for name, value in values.items():
            _fs.write_text(directory, name, value)

    def release(self, cgroup: Cgroup) -> None:
        """One user less; a cgroup nobody uses is removed as soon as it is
        empty (at once if it is)."""
        cgroup.users -= 1
        if cgroup.users > 0 or cgroup._removing is not None:
            return
        if not cgroup.populated():
            self._remove(cgroup)
            return
        # Leftovers let live: remove it when they are gone, unless it is
        # used again meanwhile (cgroup() cancels this).
        assert self._reactor is not None  # started, so it has a reactor
        waiting = when_empty(self._reactor, cgroup.path, 365 * 86400.0)
        cgroup._removing = waiting

        def emptied(empty: bool) -> None:
            if cgroup._removing is waiting:
                cgroup._removing = None
                if cgroup.users == 0 and empty:
                    self._remove(cgroup)

        waiting.addCallback(emptied)
        waiting.addErrback(lambda _: None)  # cancelled: used again

    def _remove(self, cgroup: Cgroup) -> None:
        if self._cgroups.get(cgroup.name) is cgroup:
            del self._cgroups[cgroup.name]
        try:
            for directory in cgroup.directories:
                _fs.remove(directory, leaf=True)
        except OSError as e:
            _log.warn("cannot remove {path}: {error}", path=cgroup.path, error=e)
        _tell(lambda o: o.removed(cgroup))

    def ended(
        self, cgroup: Cgroup, kill: bool, *, left: int | None = None
    ) -> Deferred[int]:
        """The child that led ``cgroup`` was reaped: with ``kill``, SIGKILL
        what it left there. Fires with how many processes were left (``left``
        if the caller counted them already, before a kill of its own), once
        the cgroup is empty (or, still holding some, :data:`EMPTY_WAIT`
        seconds later, said in the log); without ``kill``, at once."""
        if left is None:
            # Empty (the common case) is one read; counting lists the members.
            left = len(cgroup.members()) if cgroup.populated() else 0
        if not kill or not left:
            return _now(left)
        cgroup.kill()
        assert self._reactor is not None  # started, so it has a reactor
        done = when_empty(self._reactor, cgroup.path, EMPTY_WAIT)

        def said(empty: bool) -> int:
            if not empty:
                _log.error(
                    "{path} still holds {count} processes {seconds:g} s after "
                    "SIGKILL (in uninterruptible sleep?)",
                    path=cgroup.path,
                    count=len(cgroup.members()),
                    seconds=EMPTY_WAIT,
                )
            return left

        return done.addCallback(said)

    def cgroups(self) -> dict[str, Cgroup]:
        """The cgroups in use or not yet removed, by name."""
        return dict(self._cgroups)

    def close(self) -> None:
        """Remove what is empty of the subtree (at the owner's end)."""
        for cgroup in list(self._cgroups.values()):
            if cgroup.users == 0 and not cgroup.populated():
                self._remove(cgroup)
        for root in (self.root, *self._v1_roots.values()):
            if root is not None and self._made:
                with contextlib.suppress(OSError):
                    _fs.remove(root)

    def to_dict(self) -> dict[str, Any]:
        """How processes are contained, as JSON types."""
        return {
            "mode": "cgroup" if self.available else "process-group",
            "cgroup": self.root if self.available else None,
            "why": None if self.available else self.why,
            "kill": (
                None
                if not self.available
                else "cgroup.kill"
                if self.kill_file
                else "freeze and kill each"
            ),
            "controllers_v2": sorted(self._enabled),
            "controllers_v1": {c: r for c, r in sorted(self._v1_roots.items())},
        }

    def describe(self) -> str:
        """One line for the log."""
        if not self.available:
            return f"process groups only: {self.why}"
        limits = [f"{c} (cgroup v2)" for c in sorted(self._enabled)] + [
            f"{c} (cgroup v1)" for c in sorted(self._v1_roots)
        ]
        return f"cgroups under {self.root}" + (
            f"; limits by {', '.join(limits)}" if limits else ""
        )


def _now(value: int) -> Deferred[int]:
    d: Deferred[int] = Deferred()
    d.callback(value)
    return d
