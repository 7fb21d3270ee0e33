"""Remote runs over SSH: ``procwork.run(argv, host="user@host:port")``.

One multiplexed SSH connection per host (Twisted's own ``twisted.conch``)
carries every run on that host, each in its own session channel. The
connection is opened on first use and closed after ``idle_close`` seconds
without a run.

How a remote run keeps the local contract (timeout, cancel, grace kill of
the whole tree): the command is started through a small POSIX ``sh`` wrapper
(:mod:`procwork._remote._wrapper`). OpenSSH's ``sshd`` (and dropbear) call
``setsid()`` for every session, so the login shell that runs our command
string is already a process group leader; the wrapper checks that with
``kill -s 0 -- -$$`` (a group whose id is our own pid exists only if we lead
it), prints ``<marker> <pid>`` as the first line of stderr, and ``exec``s the
command: the command keeps that pid, so it leads the group and its exit
status or signal reaches us unchanged (``exit-status`` / ``exit-signal``). On
a server that does not start sessions that way, the wrapper execs the
command through ``setsid`` (util-linux; BSDs lack it), which, run by a
process that is not a group leader, makes the new session in place, pid
unchanged. Without either, the kill request falls back to signalling the
process alone (``kill -- -PGID || kill PID``), and the tree-kill needs the
server's help. (``set -m`` would be the POSIX way, but ``dash`` refuses job
control without a terminal, and a session without a pty has none.)

The marker line is stripped from stderr. To signal the group, a second exec
request on the same connection runs ``kill -s TERM -- -PGID`` (then ``KILL``
after ``grace``); pending signals of many runs share one such request.

sshd allows ``MaxSessions`` (default 10) channels per connection: runs use
at most ``max_sessions - 1`` of them and wait for a free one in order, so one
is always left for the kill requests.

When the connection dies or goes silent, the tree still dies and the caller
still gets its answer on time:

- A kill request not answered within :data:`KILL_WAIT` seconds marks its
  connection *stalled*: that request, and every later one for its runs, goes
  over a new connection, as do new runs and those still waiting for a
  channel (the stalled one keeps the runs it has, until they end or its
  keepalive drops it).
- A run whose exit status has not come :data:`KILL_WAIT` seconds after its
  group was sent SIGKILL (a timeout's or cancel's escalation, ``kill()``)
  is given up: its Result comes at once, with the output received so far
  and no returncode (``None``: how it ended is unknown). So a silent
  connection cannot delay a timed-out run past ``timeout + grace +
  KILL_WAIT``.
- When a connection is lost (dropped, or no answer to a keepalive), the
  groups of the runs it carried get SIGTERM over a new connection, and
  SIGKILL ``grace`` seconds later.
- On the host, the wrapper's watcher kills the group when the session's
  sshd dies (:mod:`procwork._remote._wrapper`), even when no client is left
  to ask.

The modules, one job each, from the bottom: ``_target`` (where a run goes:
``SSHTarget``, ``parse_host``; standard library only), ``_wrapper`` (the
``sh`` wrapper and its watcher; standard library only), ``_conch`` (the
``twisted.conch`` names, imported quietly), ``_auth`` (setting a connection
up: transport, host key, keys and agent), ``_connection`` (one connection:
its runs' channels, kill requests, keepalive, stall), ``_channel``
(``RemoteProcess`` and its session channel) and ``_pool`` (``SSHPool``, one
connection per host; ``remote_process``).

Importing this package loads the first two only, so that
:mod:`procwork._validate` checks a config's ``host =`` without
``twisted.conch``; the other names below load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from procwork._errors import (
    RemoteAuthError,
    RemoteConnectionLost,
    RemoteError,
    RemoteHostKeyError,
    RemoteUnreachable,
)
from procwork._remote._target import SSHTarget, parse_host
from procwork._remote._wrapper import WRAPPER

if TYPE_CHECKING:
    # For type checkers only: at run time these come from __getattr__ below.
    from procwork._remote._channel import RemoteProcess as RemoteProcess
    from procwork._remote._connection import KILL_WAIT as KILL_WAIT
    from procwork._remote._pool import DEFAULT_IDLE_CLOSE as DEFAULT_IDLE_CLOSE
    from procwork._remote._pool import SSHPool as SSHPool
    from procwork._remote._pool import remote_process as remote_process
    from procwork._remote._pool import ssh_pool as ssh_pool

__all__ = [
    "DEFAULT_IDLE_CLOSE",
    "KILL_WAIT",
    "WRAPPER",
    "RemoteAuthError",
    "RemoteConnectionLost",
    "RemoteError",
    "RemoteHostKeyError",
    "RemoteProcess",
    "RemoteUnreachable",
    "SSHPool",
    "SSHTarget",
    "parse_host",
    "remote_process",
    "ssh_pool",
]

# The names that need twisted.conch, by the module that defines them.
_POOL_NAMES = frozenset({"DEFAULT_IDLE_CLOSE", "SSHPool", "remote_process", "ssh_pool"})
_CHANNEL_NAMES = frozenset({"RemoteProcess"})
_CONNECTION_NAMES = frozenset({"KILL_WAIT"})


def __getattr__(name: str) -> object:
    """``SSHPool`` and the others built on ``twisted.conch``, imported on use."""
    if name in _POOL_NAMES:
        from procwork._remote import _pool as home
    elif name in _CHANNEL_NAMES:
        from procwork._remote import _channel as home  # type: ignore[no-redef]
    elif name in _CONNECTION_NAMES:
        from procwork._remote import _connection as home  # type: ignore[no-redef]
    else:
        raise AttributeError(f"module 'procwork._remote' has no attribute {name!r}")
    value: object = getattr(home, name)
    globals()[name] = value  # once is enough
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_POOL_NAMES, *_CHANNEL_NAMES, *_CONNECTION_NAMES})
