"""Where procwork may make cgroups on this machine, and where not and why.

Read from ``/proc/self/mountinfo`` (which hierarchies are mounted where) and
``/proc/self/cgroup`` (where this process sits in each), never guessed from
``/sys/fs/cgroup``: a pure cgroup v2 host mounts the v2 hierarchy there, a
hybrid one at ``/sys/fs/cgroup/unified`` beside v1 hierarchies, a container
anywhere.

The rules, each for a reason:

- **cgroup v2** holds what procwork contains (a cgroup per service and per
  run, killed with ``cgroup.kill``, watched through ``cgroup.events``). Its
  cgroups go under a *base*: the cgroup this process was delegated
  (systemd's ``Delegate=yes`` marks it with the ``trusted.delegate`` or
  ``user.delegate`` attribute, or it is owned by this non-root user), the
  root of the hierarchy as a container sees it, the parent named by
  ``$PROCWORK_CGROUP_PARENT``, or, for root, the root of the hierarchy. A
  user who was delegated nothing gets process groups, as before.
- **cgroup v1** hierarchies (``pids``, ``memory``, ``cpu``) only carry
  limits, on hybrid hosts whose v2 tree lacks those controllers, and only
  where this process sits at the hierarchy's root (nobody placed it
  anywhere: nobody manages that hierarchy) or in a cgroup delegated to it.
  A process that some manager put in a cgroup of its own (a container
  runtime's ``/process_api/...``) creates nothing there.

Nothing here writes anything: :class:`Host` says what may be done, and
:mod:`._tree` does it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["V1_CONTROLLERS", "Host", "Mount", "discover", "parse_mountinfo"]

#: The v1 hierarchies a limit may use.
V1_CONTROLLERS = ("memory", "pids", "cpu")

#: Names ``PROCWORK_CGROUP_PARENT``: a cgroup v2 directory under which
#: procwork makes its own, instead of the base it would choose.
PARENT_VARIABLE = "PROCWORK_CGROUP_PARENT"


@dataclass(frozen=True)
class Mount:
    """One cgroup filesystem mount (a line of ``/proc/self/mountinfo``).

    Attributes:
        mountpoint: Where it is mounted.
        root: The cgroup shown at the mountpoint (``/`` unless bind-mounted).
        fstype: ``cgroup2`` or ``cgroup``.
        options: Its super options: a v1 hierarchy's controllers are there.
    """

    mountpoint: str
    root: str
    fstype: str
    options: frozenset[str]


def parse_mountinfo(text: str) -> list[Mount]:
    """The cgroup mounts in the text of ``/proc/self/mountinfo``."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 10:
            continue
        separator = fields.index("-")
        fstype = fields[separator + 1]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        options = (
            fields[separator + 3].split(",") if len(fields) > separator + 3 else []
        )
        mounts.append(
            Mount(
                _unescape(fields[4]), _unescape(fields[3]), fstype, frozenset(options)
            )
        )
    return mounts


def _unescape(path: str) -> str:
    # mountinfo writes a space as \040, a tab \011, a newline \012, \ as \134.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n")):
        path = path.replace(code, char)
    return path.replace("\\134", "\\")


def parse_proc_cgroup(text: str) -> tuple[str | None, dict[str, str]]:
    """``/proc/self/cgroup``: this process's v2 cgroup, and its v1 cgroup by
    controller."""
    v2: str | None = None
    v1: dict[str, str] = {}
    for line in text.splitlines():
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if number == "0" and controllers == "":
            v2 = path
        else:
            for controller in controllers.split(","):
                if controller:
                    v1[controller] = path
    return v2, v1


@dataclass(frozen=True)
class Host:
    """Where procwork may make cgroups here (see the module's docstring).

    Attributes:
        v2_base: The cgroup v2 directory procwork makes its cgroups in; None
            when it may not (then ``v2_why`` says why).
        v2_why: Why there is no base ("" when there is one).
        v2_owned: procwork may write the base's ``cgroup.subtree_control``
            (enable controllers for its cgroups, after moving the processes
            of the base into a leaf), because it was given the base; False at
            the root of the hierarchy, which is the machine's.
        v1_bases: A v1 hierarchy's directory to make cgroups in, by
            controller (``memory``, ``pids``, ``cpu``).
        v1_why: Why a v1 controller cannot be used, by controller.
        mountpoint: Where the v2 hierarchy is mounted (None: not mounted).
    """

    v2_base: str | None
    v2_why: str = ""
    v2_owned: bool = False
    v1_bases: Mapping[str, str] = field(default_factory=dict)
    v1_why: Mapping[str, str] = field(default_factory=dict)
    mountpoint: str | None = None

    def controllers(self) -> frozenset[str]:
        """The v2 controllers cgroups under the base may have: those enabled
        for the base's children, and, where the base is procwork's, those the
        base itself has."""
        if self.v2_base is None:
            return frozenset()
        name = "cgroup.controllers" if self.v2_owned else "cgroup.subtree_control"
        try:
            with open(os.path.join(self.v2_base, name)) as f:
                return frozenset(f.read().split())
        except OSError:
            return frozenset()


def discover(
    *,
    mountinfo: str | None = None,
    proc_cgroup: str | None = None,
    euid: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> Host:
    """Where procwork may make cgroups: this machine's, or the one the
    arguments describe (a test's directory laid out like cgroupfs).

    Args:
        mountinfo: The text of ``/proc/self/mountinfo`` (default: read it).
        proc_cgroup: The text of ``/proc/self/cgroup`` (default: read it).
        euid: The effective user (default: ours).
        environ: Where ``PROCWORK_CGROUP_PARENT`` is read (default
            ``os.environ``).
    """
    if mountinfo is None:
        mountinfo = _read("/proc/self/mountinfo")
    if proc_cgroup is None:
        proc_cgroup = _read("/proc/self/cgroup")
    euid = os.geteuid() if euid is None else euid
    environ = os.environ if environ is None else environ
    mounts = parse_mountinfo(mountinfo)
    own_v2, own_v1 = parse_proc_cgroup(proc_cgroup)
    parent = environ.get(PARENT_VARIABLE) or None
    v2 = [m for m in mounts if m.fstype == "cgroup2"]
    base, why, owned, mountpoint = _v2_base(v2, own_v2, euid, parent)
    bases: dict[str, str] = {}
    whys: dict[str, str] = {}
    for controller in V1_CONTROLLERS:
        found = _v1_base(mounts, controller, own_v1.get(controller), euid, parent, v2)
        if found[0] is not None:
            bases[controller] = found[0]
        else:
            whys[controller] = found[1]
    return Host(base, why, owned, bases, whys, mountpoint)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _inside(mount: Mount, cgroup: str) -> str | None:
    """The directory of ``cgroup`` (a path in the hierarchy) under ``mount``,
    None if the mount does not show it."""
    root = mount.root.rstrip("/")
    if cgroup != root and not cgroup.startswith(root + "/"):
        return None
    return os.path.normpath(
        os.path.join(mount.mountpoint, cgroup[len(root) :].lstrip("/"))
    )


def _v2_base(
    mounts: list[Mount], own: str | None, euid: int, parent: str | None
) -> tuple[str | None, str, bool, str | None]:
    if not mounts:
        return (
            None,
            "no cgroup2 hierarchy is mounted (/proc/self/mountinfo)",
            False,
            None,
        )
    if parent is not None:
        for mount in mounts:
            inside = parent == mount.mountpoint or parent.startswith(
                mount.mountpoint.rstrip("/") + "/"
            )
            if inside and os.path.isdir(parent):
                return parent, "", True, mount.mountpoint
        return (
            None,
            f"${PARENT_VARIABLE} ({parent}) is not a directory of a cgroup2 hierarchy",
            False,
            None,
        )
    if own is None:
        return None, "this process has no cgroup v2 (/proc/self/cgroup)", False, None
    for mount in mounts:
        directory = _inside(mount, own)
        if directory is None or not os.path.isdir(directory):
            continue
        at_root = os.path.normpath(directory) == os.path.normpath(mount.mountpoint)
        if at_root and not os.path.exists(os.path.join(directory, "cgroup.type")):
            # The real root of the hierarchy: it is the machine's; only
            # root makes cgroups there, and it enables no controller in it.
            if euid != 0:
                return (
                    None,
                    f"this process is in the root cgroup ({mount.mountpoint}), "
                    "which only root may make cgroups in",
                    False,
                    mount.mountpoint,
                )
            return directory, "", False, mount.mountpoint
        if at_root or _delegated(directory, euid):
            # A container's whole tree, or a cgroup given to us.
            return directory, "", True, mount.mountpoint
        if euid == 0:
            return mount.mountpoint, "", False, mount.mountpoint
        return (
            None,
            f"this process's cgroup {own} ({directory}) is not delegated to it; "
            "run it as root, or under systemd with Delegate=yes",
            False,
            mount.mountpoint,
        )
    return (
        None,
        f"this process's cgroup {own} is not under a mounted cgroup2 hierarchy",
        False,
        None,
    )


def _delegated(directory: str, euid: int) -> bool:
    """Whether the cgroup ``directory`` was delegated to this process."""
    for attribute in ("trusted.delegate", "user.delegate"):
        try:
            if os.getxattr(directory, attribute) == b"1":
                return True
        except OSError:
            pass
    if euid == 0:
        return False
    try:
        return os.stat(directory).st_uid == euid and os.access(
            os.path.join(directory, "cgroup.procs"), os.W_OK
        )
    except OSError:
        return False


def _v1_base(
    mounts: list[Mount],
    controller: str,
    own: str | None,
    euid: int,
    parent: str | None,
    v2: list[Mount],
) -> tuple[str | None, str]:
    mount = next(
        (m for m in mounts if m.fstype == "cgroup" and controller in m.options), None
    )
    if mount is None:
        return None, f"no v1 {controller} hierarchy is mounted"
    if parent is not None:
        # The same place in the v1 hierarchy as $PROCWORK_CGROUP_PARENT in v2.
        for v2_mount in v2:
            prefix = v2_mount.mountpoint.rstrip("/") + "/"
            if parent.startswith(prefix):
                directory = os.path.join(mount.mountpoint, parent[len(prefix) :])
                if os.path.isdir(directory):
                    return directory, ""
        return None, (
            f"the v1 {controller} hierarchy ({mount.mountpoint}) has no "
            f"counterpart of ${PARENT_VARIABLE}"
        )
    if own is None:
        return None, f"this process has no cgroup in the v1 {controller} hierarchy"
    found = _inside(mount, own)
    if found is None or not os.path.isdir(found):
        return None, (
            f"this process's v1 {controller} cgroup ({own}) is not under "
            f"{mount.mountpoint}"
        )
    if own == "/" and euid == 0:
        return found, ""
    if own != "/" and _delegated(found, euid):
        return found, ""
    if own != "/":
        return None, (
            f"the v1 {controller} hierarchy ({mount.mountpoint}) places this "
            f"process in {own}, a cgroup someone else made: procwork creates "
            "nothing there"
        )
    return None, (
        f"only root may make cgroups at the root of the v1 {controller} hierarchy "
        f"({mount.mountpoint})"
    )
