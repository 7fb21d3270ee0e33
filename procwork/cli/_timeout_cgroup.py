"""``procwork timeout``'s cgroup: the command's whole tree, escapees too.

With ``--contain``, where procwork may make cgroups
(:mod:`procwork._cgroup._host`: root, or a delegated cgroup v2 subtree),
``procwork timeout`` starts the command in a cgroup of its own,
``procwork.timeout.<pid>``, registered with its lifeline
helper: if ``procwork timeout`` is SIGKILLed, the helper kills the cgroup
whole (``cgroup.kill``), so a process that left the command's group (a
``setsid`` double-fork) dies too, which the process group alone could not
promise. At a timeout its SIGKILL is the kernel's ``cgroup.kill`` (no
fork can race it), and a tree is gone only when the cgroup is empty.

Leftovers of a command that exited on its own are left alone (as coreutils
does): they are moved back into ``procwork timeout``'s own cgroup, where
they would have run uncontained, and the cgroup is removed.

Standard library only: :mod:`procwork._cgroup`'s package imports Twisted,
so its two standard-library rooms, ``_host.py`` and ``_fs.py``, are loaded
by their paths (as the lifeline helper loads ``_fs.py``), and only when the
command is to be contained. Opt-in, as ``procwork run --contain``, because
it is not free: loading them (``dataclasses`` and ``inspect`` with them),
making and removing the cgroup add about a third to procwork timeout's
start (``benchmarks/bench_timeout_start.py``).
"""

from __future__ import annotations

import contextlib  # _fs imports it too
import os
import sys
from collections.abc import Callable
from types import ModuleType

__all__ = ["TimeoutCgroup", "contain"]

_CGROUP_PACKAGE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_cgroup"
)

#: Seconds the cgroup is given to empty once its processes are gone or
#: moved, before it is removed (or left, and said so with ``-v``).
EMPTY_WAIT = 2.0


def _load(name: str) -> ModuleType:
    """``procwork/_cgroup/<name>.py``, without its package's ``__init__``."""
    key = f"procwork_timeout_cgroup{name}"
    known = sys.modules.get(key)
    if known is not None:
        return known
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        key, os.path.join(_CGROUP_PACKAGE, f"{name}.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module  # dataclasses looks its module up there
    spec.loader.exec_module(module)
    return module


class TimeoutCgroup:
    """The command's cgroup v2 directory, and what is done with it."""

    def __init__(self, path: str, fs: ModuleType, own: str | None) -> None:
        self.path = path
        self.fs = fs
        self.own = own  # procwork timeout's own cgroup directory

    def enter(self, pid: int) -> None:
        """Move ``pid`` (the forked command, before it execs) in.

        Raises:
            OSError: the kernel refused.
        """
        self.fs.write_text(self.path, "cgroup.procs", str(pid))

    def kill(self) -> None:
        """SIGKILL every process in it, at once (``cgroup.kill``)."""
        # On failure, the process group and the tree are signalled anyway.
        with contextlib.suppress(OSError):
            self.fs.kill(self.path)

    def populated(self) -> bool:
        """Whether a process of the command's tree lives on."""
        return bool(self.fs.populated(self.path))

    def close(self) -> str:
        """Move what is left (the leftovers let alone) out, and remove the
        cgroup; "" when it is gone, else why it stays."""
        deadline = _monotonic() + EMPTY_WAIT
        while self.populated() and _monotonic() < deadline:
            if self.own is None:
                return "procwork timeout's own cgroup is unknown"
            for pid in self.fs.all_members(self.path):
                try:
                    self.fs.write_text(self.own, "cgroup.procs", str(pid))
                except ProcessLookupError:
                    pass  # ended meanwhile
                except OSError as e:
                    return f"cannot move the leftovers out ({e})"
        self.fs.wait_empty(self.path, max(0.0, deadline - _monotonic()))
        try:
            if self.fs.remove(self.path, leaf=True):
                return ""
        except OSError as e:
            return f"cannot remove it ({e})"
        return "it is not empty"


def _monotonic() -> float:
    import time

    return time.monotonic()


def contain(pid: int, announce: Callable[[str], None]) -> TimeoutCgroup | str:
    """Make ``procwork timeout`` (process ``pid``)'s cgroup for its command;
    where none can be made, why (the command then has its process group
    and procwork timeout's tree only, as without ``--contain``).

    ``announce`` is given the cgroup's path before it is made (the lifeline
    is told then: killed in between, procwork timeout leaves no cgroup).
    """
    host_module = _load("_host")
    host = host_module.discover()
    if host.v2_base is None:
        return str(host.v2_why)
    fs = _load("_fs")
    path = os.path.join(host.v2_base, f"procwork.timeout.{pid}")
    announce(path)
    try:
        try:
            os.mkdir(path)
        except FileExistsError:
            # Left by an earlier procwork timeout of this pid whose lifeline
            # died too: reuse it if it is empty, never join what runs there.
            if fs.populated(path):
                return f"{path} exists and holds processes"
    except OSError as e:
        return f"cannot make {path} ({e})"
    return TimeoutCgroup(path, fs, _own_cgroup(host_module, host.mountpoint))


def _own_cgroup(host_module: ModuleType, mountpoint: str | None) -> str | None:
    """This process's cgroup v2 directory."""
    try:
        with open("/proc/self/cgroup") as f:
            own = host_module.parse_proc_cgroup(f.read())[0]
        with open("/proc/self/mountinfo") as f:
            mounts = host_module.parse_mountinfo(f.read())
    except OSError:
        return None
    if own is None:
        return None
    for mount in mounts:
        if mount.fstype == "cgroup2" and mount.mountpoint == mountpoint:
            found = host_module._inside(mount, own)
            return None if found is None else str(found)
    return None
