"""The remote side of a remote run: the ``sh`` wrapper that starts the command.

A remote command is started as ``exec /bin/sh -c WRAPPER marker nice cwd
grace watch ARGV...`` (:func:`command`). :data:`WRAPPER` (POSIX ``sh``;
``dash`` runs it) enters the working directory, checks that the command
exists, reports the command's process group on the first line of stderr
(``<marker> <pid>``, stripped by ``procwork/_remote/_channel.py``) and ``exec``\\ s the
command, which keeps the wrapper's pid: it leads the group sshd made for the
session (or the one ``setsid`` makes), and its exit status or signal reaches
the client unchanged.

Before that it starts :data:`WATCHER`, which kills the command's group when
the session dies under it: sshd SIGKILLed, or sshd exiting because the
connection dropped (the client's program died, the network broke). Nothing
else would: an exec channel has no terminal, so no SIGHUP; the command's
pipes close, but a silent ``sleep`` never writes to notice. The watcher
learns it one of two ways, chosen per run:

- **stdin** (a run without input, the common case): the command gets
  ``/dev/null`` and the watcher keeps the session's stdin, which the client
  never closes. sshd closes it only after it has reaped the command (checked
  against OpenSSH 9.2), or when it dies or the channel closes. So EOF with
  the command still alive means the session is gone. Until then the watcher
  is one shell blocked in ``read``: no wake-up, no CPU; it exits as soon as
  a normal run ends.
- **polling** (a run whose stdin the command reads): every
  :data:`WATCH_INTERVAL` seconds a ``sleep`` and two ``kill -s 0`` (shell
  builtins): is the command alive, is the sshd that started it (the
  wrapper's ``$PPID``) alive. It exits at the first poll after the command
  ends. Its limits: a dead sshd counts as alive until its parent reaps it (a
  zombie answers ``kill``), or while its pid is reused by another process;
  and if sshd died before the wrapper even started, ``$PPID`` is already
  init and nothing is seen. (The wrapper checks, while sshd is surely
  alive, that it may signal it at all; otherwise no polling watcher.)

Then: SIGTERM to the group, ``grace`` seconds (whole, as POSIX ``sleep``
takes them), SIGKILL. The watcher is in the command's group (so every kill
of the group kills it too; with ``setsid``, in the wrapper's first group
instead) but not its child: it is started from a subshell that exits at
once, so the command never sees (or reaps) a child it did not start. It
runs as ``/bin/sh -c WATCHER procwork-watch PID ...``, so ``ps`` and
``pgrep -f`` do not take it for a copy of the command. It checks the pid it
would signal first; that pid cannot be reused while the watcher, a member
of its group, lives (Linux frees a group id with its last member).
"""

from __future__ import annotations

import math
import re
import shlex
import uuid
from collections.abc import Mapping

__all__ = ["WATCHER", "WATCH_INTERVAL", "WRAPPER", "command"]

WATCH_INTERVAL = 2
"""Seconds between a polling watcher's checks (runs whose command reads
stdin); a watcher on stdin does not poll."""

# $1 the command's pid (its group), $2 the sshd that started the wrapper,
# $3 grace in whole seconds, $4 0 to wait for EOF on stdin, else the seconds
# between polls. No single quote: it is put in WRAPPER in single quotes.
WATCHER = r"""if [ "$4" = 0 ]; then
  while read -r _; do :; done
else
  exec </dev/null
  while sleep "$4" && kill -s 0 "$1" && kill -s 0 "$2"; do :; done
fi 2>/dev/null
kill -s 0 "$1" 2>/dev/null || exit 0
trap "" TERM
kill -s TERM -- "-$1" 2>/dev/null || kill -s TERM "$1"
sleep "$3"
kill -s KILL -- "-$1" 2>/dev/null || kill -s KILL "$1"
"""

# $0 is the marker, $1 the niceness, $2 the working directory ("" for the
# login directory), $3 the watcher's grace, $4 its mode (above), the rest the
# argv. Every line is POSIX sh. The watcher gets the session's stdin through
# fd 3: an asynchronous list's own stdin is /dev/null. A polling watcher needs
# to signal our parent, sshd: checked here, while it is surely alive (by the
# time the watcher runs it may be dead already, which the watcher must see).
WRAPPER = (
    r"""m=$0 n=$1 d=$2 g=$3 i=$4; shift 4
if [ -n "$d" ] && ! cd -- "$d" 2>/dev/null; then
  printf '%s nocwd\n' "$m" >&2; exit 126
fi
command -v -- "$1" >/dev/null 2>&1 || { printf '%s notfound\n' "$m" >&2; exit 127; }
[ "$n" = 0 ] || set -- nice -n "$n" "$@"
kill -s 0 -- -$$ 2>/dev/null || ! command -v setsid >/dev/null 2>&1 ||
  set -- setsid "$@"
w='"""
    + WATCHER
    + r"""'
if [ "$i" = 0 ] || kill -s 0 $PPID 2>/dev/null; then
  (/bin/sh -c "$w" procwork-watch $$ $PPID "$g" "$i" <&3 3<&- >/dev/null 2>&1 &) 3<&0
fi
printf '%s %s\n' "$m" $$ >&2
[ "$i" != 0 ] || exec "$@" </dev/null
exec "$@"
"""
)

MARKER_LINE = re.compile(rb"procwork-[0-9a-f]{16} (\d+|notfound|nocwd)\n")
"""The wrapper's report on stderr: the group id, or why the command did not start."""


def command(
    args: tuple[str, ...],
    env: Mapping[str, str] | None,
    cwd: str | None,
    nice: int,
    *,
    grace: float,
    stdin: bool,
) -> tuple[bytes, bytes]:
    """The exec request's command string, and the marker it will print.

    Args:
        args: The argv.
        env: The command's whole environment (None: the session's).
        cwd: Where to run it (None: the login directory).
        nice: Its niceness (0: unchanged).
        grace: Seconds the watcher leaves between its SIGTERM and SIGKILL
            (rounded up to whole seconds).
        stdin: Whether the command reads the session's stdin (the watcher
            then polls instead of keeping it).
    """
    marker = f"procwork-{uuid.uuid4().hex[:16]}"
    words = ["exec"]
    if env is not None:
        # env= is the child's whole environment, as locally.
        words += ["env", "-i", *(f"{k}={v}" for k, v in env.items())]
    watch = WATCH_INTERVAL if stdin else 0
    words += ["/bin/sh", "-c", WRAPPER, marker, str(nice), cwd or ""]
    words += [str(math.ceil(grace)), str(watch), *args]
    return shlex.join(words).encode(), marker.encode()
