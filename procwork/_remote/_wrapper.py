"""The remote side of a remote run: the ``sh`` wrapper that starts the command.

:func:`command` builds the exec request: ``exec /bin/sh -c WRAPPER marker
nice cwd grace watch ARGV...``. :data:`WRAPPER` (POSIX ``sh``) reports the
command's process group on the first line of stderr and ``exec``-s the
command, which keeps its pid and leads the group; :data:`WATCHER`, started
first, kills that group when the session's sshd dies (EOF on the session's
stdin, or a poll every :data:`WATCH_INTERVAL` seconds for a run that reads
its stdin). Standard library only.

Design: ARCHITECTURE.md, "The remote wrapper".
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
