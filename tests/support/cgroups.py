"""cgroups for the tests: the real ones this machine lets procwork make, and
directories laid out like cgroupfs for the limits whose controller it lacks.

Real: the test session makes one subtree of its own (``procwork-tests.<pid>``
in cgroup v2, and the same in each v1 hierarchy procwork may use) and names
it in ``$PROCWORK_CGROUP_PARENT``, so that everything the suite and the
monitors it starts contain goes there; at the end of the session it must be
empty (:func:`session_parent`, used by ``tests/conftest.py``). A test that
needs real cgroups calls :func:`need_cgroups`: it is skipped with the reason
where procwork may make none (not root, no cgroup2), and fails instead under
``PROCWORK_TEST_REQUIRE_TOOLS=1``, as a missing tool does (CI runs as root).

Fake: :class:`FakeHost` builds a cgroupfs-like tree (a v2 hierarchy whose
controllers the test chooses, v1 hierarchies) with the ``mountinfo`` and
``/proc/self/cgroup`` texts that describe it, for
:func:`procwork._cgroup.discover`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from procwork._cgroup import PARENT_VARIABLE, Host, _fs, discover
from tests.support import argv_of

__all__ = [
    "FakeHost",
    "cgroup_of",
    "kill_group",
    "need_cgroups",
    "need_controller",
    "session_parent",
    "wait_gone",
]


def _real_host() -> Host:
    return discover(environ={})


def need_cgroups() -> Host:
    """This machine's cgroups, as procwork finds them under the test session's
    parent; skip (or fail) the test where procwork may make none."""
    # Imported here: tests/conftest.py imports this module before pytest
    # loads tests.support.tools as a plugin (which rewrites its asserts).
    from tests.support.tools import REQUIRE_TOOLS, tools_required

    host = discover()
    if host.v2_base is None:
        reason = f"procwork may make no cgroups here: {host.v2_why}"
        if tools_required():
            pytest.fail(f"{reason}, and {REQUIRE_TOOLS}=1 forbids skipping")
        pytest.skip(reason)
    return host


def need_controller(controller: str) -> Host:
    """As :func:`need_cgroups`, and the ``controller`` (``pids``) is one
    procwork may use here, in cgroup v2 or a v1 hierarchy; skip (or fail)
    the test where it is not."""
    from tests.support.tools import REQUIRE_TOOLS, tools_required

    host = need_cgroups()
    if controller in host.controllers() or controller in host.v1_bases:
        return host
    reason = f"the {controller} controller is not procwork's to use here: " + (
        host.v1_why.get(controller) or "not in cgroup v2 nor a v1 hierarchy"
    )
    if tools_required():
        pytest.fail(f"{reason}, and {REQUIRE_TOOLS}=1 forbids skipping")
    pytest.skip(reason)


@contextlib.contextmanager
def session_parent() -> Iterator[list[str]]:
    """Make the session's own cgroup subtree (where procwork may) and name it
    in ``$PROCWORK_CGROUP_PARENT``; at the end, it must hold nothing.

    Yields:
        The problems found at the end (a cgroup or a process left), which
        the caller reports; everything is killed and removed anyway.
    """
    problems: list[str] = []
    host = _real_host()
    if host.v2_base is None or os.environ.get(PARENT_VARIABLE):
        yield problems
        return
    name = f"procwork-tests.{os.getpid()}"
    made = [os.path.join(host.v2_base, name)]
    made += [os.path.join(base, name) for base in host.v1_bases.values()]
    for directory in made:
        os.mkdir(directory)
    os.environ[PARENT_VARIABLE] = made[0]
    try:
        yield problems
    finally:
        del os.environ[PARENT_VARIABLE]
        _close_runs_containment()
        # The last test's monitors and lifelines may still be stopping.
        _fs.wait_empty(made[0], 10.0)
        # ... and their lifelines removing their cgroups.
        deadline = time.monotonic() + 10.0
        while _fs.tree(made[0])[:-1] and time.monotonic() < deadline:
            time.sleep(0.02)
        for pid in _fs.all_members(made[0]):
            problems.append(f"process {pid} left in {made[0]}: {_cmdline(pid)}")
        _fs.kill(made[0])
        _fs.wait_empty(made[0], 10.0)
        for directory in made:
            for inner in _fs.tree(directory)[:-1]:
                problems.append(f"cgroup left behind: {inner}")
            _fs.remove(directory)
            if os.path.isdir(directory):
                problems.append(f"cannot remove {directory}")


def _close_runs_containment() -> None:
    """Remove the test process's own subtree of contain=True runs now: the
    program's end (atexit, reactor shutdown) would, after this check."""
    from procwork import _cgroup

    for pid, containment in list(_cgroup._runs.values()):
        if pid == os.getpid():
            containment.close()


def _cmdline(pid: int) -> str:
    args = argv_of(pid)
    if args is None:
        return "(gone)"
    return b" ".join(args).decode(errors="replace").strip()


def cgroup_of(pid: int) -> str:
    """The cgroup v2 path of process ``pid`` (``/procwork.x/web.service``)."""
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].strip()
    raise AssertionError(f"process {pid} has no cgroup v2")


def wait_gone(path: str, seconds: float = 10.0) -> bool:
    """Poll until the directory ``path`` is gone; False after ``seconds``."""
    deadline = time.monotonic() + seconds
    while os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def kill_group(pgid: int) -> None:
    """SIGKILL what is left of process group ``pgid`` (a test's cleanup):
    an escapee that made a session of its own leads its group, and its
    children (a ``sleep 300``) are in it too."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


class FakeHost:
    """A tree laid out like cgroupfs, and the texts that describe it.

    ``root/v2`` is a cgroup v2 hierarchy whose root's children may have
    ``controllers`` (its ``cgroup.subtree_control``); ``root/<name>`` is a v1
    hierarchy for each of ``v1`` (``{"pids": "/"}``: this process sits at its
    root; ``{"memory": "/host/x"}``: in a cgroup someone else made). Each
    cgroup directory procwork makes in it is a plain directory, so the files
    it writes are plain files the test reads back; the kernel's own files
    are written by the test where it plays the kernel.
    """

    def __init__(
        self,
        root: Path,
        *,
        controllers: str = "",
        own_v2: str = "/",
        v1: dict[str, str] | None = None,
        v2: bool = True,
    ) -> None:
        self.root = root
        self.v2 = root / "v2"
        self.v1 = v1 or {}
        mounts = []
        lines = []
        if v2:
            self.v2.mkdir(parents=True)
            self.kernel_files(self.v2, root=True)
            (self.v2 / "cgroup.controllers").write_text(controllers + "\n")
            (self.v2 / "cgroup.subtree_control").write_text(controllers + "\n")
            mounts.append(f"41 31 0:38 / {self.v2} rw,relatime - cgroup2 cgroup2 rw")
            own = self.v2 / own_v2.lstrip("/")
            own.mkdir(parents=True, exist_ok=True)
            lines.append(f"0::{own_v2}")
        for number, (controller, own_path) in enumerate(sorted(self.v1.items())):
            hierarchy = root / controller
            (hierarchy / own_path.lstrip("/")).mkdir(parents=True, exist_ok=True)
            mounts.append(
                f"{50 + number} 31 0:{60 + number} / {hierarchy} rw,relatime - "
                f"cgroup cgroup rw,{controller}"
            )
            lines.append(f"{number + 1}:{controller}:{own_path}")
        self.mountinfo = "\n".join(mounts) + "\n"
        self.proc_cgroup = "\n".join(lines) + "\n"

    @staticmethod
    def kernel_files(directory: Path, *, root: bool = False) -> None:
        """The files the kernel would show in a cgroup v2 directory."""
        (directory / "cgroup.procs").write_text("")
        (directory / "cgroup.events").write_text("populated 0\nfrozen 0\n")
        if not root:
            (directory / "cgroup.type").write_text("domain\n")

    #: Each controller file of cgroup v2, with what the kernel shows at first.
    V2_FILES = {
        "memory.max": "max\n",
        "memory.high": "max\n",
        "memory.current": "0\n",
        "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
        "pids.max": "max\n",
        "pids.current": "0\n",
        "cpu.max": "max 100000\n",
        "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n",
        "cgroup.subtree_control": "",
        "cgroup.threads": "",
    }

    #: ... and of the v1 hierarchies.
    V1_FILES = {
        "memory": {
            "memory.limit_in_bytes": "9223372036854771712\n",
            "memory.usage_in_bytes": "0\n",
            "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
        },
        "pids": {"pids.max": "max\n", "pids.current": "0\n"},
        "cpu": {"cpu.cfs_period_us": "100000\n", "cpu.cfs_quota_us": "-1\n"},
    }

    def cgroup(self, path: str, controller: str | None = None) -> Path:
        """Lay out the cgroup ``path`` (relative to the v2 hierarchy, or to the
        v1 hierarchy of ``controller``) with the kernel's files, as if it
        existed: procwork's mkdir of it then finds it, and its writes land in
        files the test reads."""
        if controller is None:
            directory = self.v2 / path
            directory.mkdir(parents=True, exist_ok=True)
            self.kernel_files(directory)
            for name, text in self.V2_FILES.items():
                (directory / name).write_text(text)
        else:
            directory = self.root / controller / path
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "cgroup.procs").write_text("")
            for name, text in self.V1_FILES[controller].items():
                (directory / name).write_text(text)
        return directory

    def host(self, *, euid: int = 0) -> Host:
        """What procwork finds on this fake machine."""
        return discover(
            mountinfo=self.mountinfo,
            proc_cgroup=self.proc_cgroup,
            euid=euid,
            environ={},
        )
