"""Starting a child already inside its cgroup.

The kernel can start a child in a cgroup (``clone3`` with
``CLONE_INTO_CGROUP``), but Python cannot ask it to: ``os`` has no
``clone3``, :class:`subprocess.Popen` has no such option, and glibc's
``posix_spawnattr_setcgroup_np`` is 2.41's. Three ways remain, measured by
``benchmarks/bench_cgroups.py`` against the process-group spawn (Python
3.11, a 40 MB parent, this project's 2-core machine, medians):

- **The child moves itself, in a small exec wrapper** (chosen): the child
  is ``/bin/sh -c 'echo 0 > .../cgroup.procs ... && exec "$@"'``, which
  writes itself (``0`` is "the writer") into its cgroup(s) and then execs
  the command, keeping its pid, its session and its descriptors. CPython
  still forks it with ``vfork``: the parent pays 0-30 µs more per spawn
  (within noise), the child one exec of ``sh`` (~0.6 ms of wall time).
- **A pre-exec function** that writes the same: CPython must then ``fork``
  the whole parent instead of ``vfork``, and run Python in the child:
  ~2 ms of the parent's CPU per spawn, 19 times the process-group spawn's.
- **Moving the parent** into the child's cgroup around the fork: cheap
  (two writes), but the parent would run, allocate and be counted inside a
  service's cgroup, under its memory and CPU limits (the OOM killer of a
  full service could pick the monitor), and would have to write itself back
  into a cgroup procwork did not make.

Either way no descendant can be outside the cgroup: until the write, the
only process is the wrapper itself, which has started nothing.

The wrapper changes what a failed exec looks like: ``sh`` reports it and
exits 127 (126: not executable) instead of ``Popen`` raising. So the parent
first looks for the program as ``Popen`` would (:func:`preflight`) and
raises the same ``OSError`` for a command not found, not executable, or
whose ``#!`` interpreter is missing; only a program that disappears in the
microseconds between, or an exec refused for a rarer reason, ends as exit
127/126 with ``sh``'s message on stderr. A file without a ``#!`` line that
is no binary runs under ``sh`` (as ``execvp(3)`` does), where ``Popen``
would refuse it with ``ENOEXEC``.

A child that changes user or group (a service's ``user=``) cannot write
into a cgroup of root's once it is that user, and ``sh`` cannot change
user; CPython forks such a child anyway (no ``vfork`` with credentials), so
it takes the pre-exec function, which enters the cgroups and then sets the
groups and ids as ``Popen`` would. So does every child on a system without
``/bin/sh``.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["SH", "Entry", "entering", "missing_interpreter", "preflight"]

SH = "/bin/sh"

#: The wrapper: write "0" into each cgroup.procs given before "--", then
#: exec the command after it. Exit 125 if a cgroup cannot be entered.
SCRIPT = 'while [ "$1" != -- ]; do echo 0 >"$1" || exit 125; shift; done; shift; '

#: The wrapper's $0, which shows in its own error messages.
WRAPPER_NAME = "procwork-cgroup"

#: What the wrapper's exit status 125 means.
ENTER_FAILED = 125


@dataclass(frozen=True)
class Entry:
    """How to start one child inside its cgroup(s).

    Attributes:
        argv: What to give ``Popen`` instead of the command.
        preexec_fn: ``Popen``'s, or None. When there is one, it sets the
            user and groups itself: ``Popen`` must not be given them.
    """

    argv: list[str | bytes]
    preexec_fn: Callable[[], None] | None = None


def entering(
    procs: Sequence[str],
    args: Sequence[str | bytes],
    *,
    env: Mapping[str, str] | None,
    cwd: str | None,
    user: int | None = None,
    group: int | None = None,
    extra_groups: Sequence[int] | None = None,
) -> Entry:
    """How to start ``args`` inside the cgroups whose ``cgroup.procs`` files
    are ``procs`` (see the module's docstring).

    Raises:
        OSError: the command cannot be executed, as ``Popen`` would say
            (see :func:`preflight`).
    """
    ids = (user, group, extra_groups)
    if any(value is not None for value in ids) or not _have_sh():
        return Entry(
            list(args),
            preexec_fn=_Enter(tuple(procs), user, group, extra_groups),
        )
    program = os.fsdecode(args[0])
    preflight(program, env, cwd)
    script = SCRIPT
    environment = os.environ if env is None else env
    if "PATH" not in environment:
        # Where Popen would look (os.defpath); sh's own default differs.
        # Not exported: the command's environment stays as it was given.
        script = f"PATH={os.defpath}; {script}"
    return Entry(
        [
            SH,
            "-c",
            script + 'exec "$@"',
            WRAPPER_NAME,
            *procs,
            "--",
            *[os.fsdecode(a) for a in args],
        ]
    )


_sh: bool | None = None


def _have_sh() -> bool:
    global _sh
    if _sh is None:
        _sh = os.access(SH, os.X_OK)
    return _sh


class _Enter:
    """The pre-exec function: into the cgroups, then the credentials.

    It runs in the forked child, after ``Popen`` set the session and the
    umask and before the exec; ``Popen`` itself sets no ids here (they are
    set last, as root could not enter the cgroups after giving them up).
    """

    def __init__(
        self,
        procs: tuple[str, ...],
        user: int | None,
        group: int | None,
        extra_groups: Sequence[int] | None,
    ) -> None:
        self._procs = procs
        self._user, self._group = user, group
        self._extra_groups = None if extra_groups is None else list(extra_groups)

    def __call__(self) -> None:
        for path in self._procs:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        # In Popen's order: groups, then the gid, then the uid.
        if self._extra_groups is not None:
            os.setgroups(self._extra_groups)
        if self._group is not None:
            os.setregid(self._group, self._group)
        if self._user is not None:
            os.setreuid(self._user, self._user)


# The last programs found, by (program, search path, cwd): a spawn of the
# same command checks that one file again instead of searching PATH.
_found: dict[tuple[str, str | None, str | None], str] = {}
_FOUND_MAX = 256


def preflight(program: str, env: Mapping[str, str] | None, cwd: str | None) -> None:
    """Raise what ``Popen`` would for a ``program`` that cannot be executed.

    Looked for as ``Popen`` does: a name with a ``/`` as it is (relative to
    ``cwd``), any other on the ``PATH`` of ``env`` (else ours, else
    ``os.defpath``), the first error other than "not there" kept. A script
    whose ``#!`` interpreter does not exist cannot be executed either
    (``ENOENT``, as exec says). A ``cwd`` that does not exist is left to
    ``Popen``, which says so itself.

    Raises:
        FileNotFoundError: not found (``filename`` is ``program``).
        PermissionError: found, but not executable (or a directory).
    """
    if cwd is not None and not os.path.isdir(cwd):
        return
    search = (os.environ if env is None else env).get("PATH")
    key = (program, search, cwd)
    known = _found.get(key)
    if known is not None and os.access(known, os.X_OK):
        return  # found there before, still there: sh's own search finds it
    if os.path.dirname(program):
        candidates = [program]
    else:
        candidates = [os.path.join(d, program) for d in os.get_exec_path(env)]
    first_error = 0
    for candidate in candidates:
        path = os.path.join(cwd, candidate) if cwd is not None else candidate
        try:
            info = os.stat(path)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
                first_error = first_error or (e.errno or errno.EACCES)
            continue
        if not stat.S_ISREG(info.st_mode) or not os.access(path, os.X_OK):
            first_error = first_error or errno.EACCES
            continue
        if missing_interpreter(path):
            first_error = first_error or errno.ENOENT
            continue
        if len(_found) >= _FOUND_MAX:
            _found.clear()
        _found[key] = path
        return
    code = first_error or errno.ENOENT
    raise OSError(code, os.strerror(code), program)


def missing_interpreter(path: str) -> str | None:
    """The ``#!`` interpreter of the file ``path`` if it does not exist;
    None if it does, or ``path`` is no script (or cannot be read).

    exec() reports a missing interpreter as ENOENT, as it does a missing
    program: :func:`preflight` and procwork's spawn errors ask this to tell
    the two apart.
    """
    try:
        with open(path, "rb") as f:
            first = f.readline(256)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].split()
    if not words:
        return None
    interpreter = os.fsdecode(words[0])
    return None if os.path.exists(interpreter) else interpreter
