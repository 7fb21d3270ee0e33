"""Remote runs over SSH: ``procwork.run(argv, host="user@host:port")``.

One multiplexed ``twisted.conch`` connection per host carries every run on
that host, each in its own session channel. The command is started through
a small ``sh`` wrapper that makes it lead a process group, so a timeout, a
cancel or a dead connection still kills the whole tree on the host, and the
caller still gets its answer on time. The modules, one job each, from the
bottom: ``_target``, ``_wrapper``, ``_conch``, ``_auth``, ``_connection``,
``_channel``, ``_pool``.

Importing this package loads the first two only (standard library), so
that :mod:`procwork._validate` checks a config's ``host =`` without
``twisted.conch``; the other names below load on first use.

Design: ARCHITECTURE.md, "Remote runs".
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
