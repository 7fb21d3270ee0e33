"""procwork's exceptions: one base, each also the matching builtin (but
ProcessFailed, which lives with the Result it carries in ``_result.py``)."""

from __future__ import annotations

# No imports at all: procwork ctl's protocol and config reading import this
# module, and every module imported costs each ctl call (see cli/_main.py).

__all__ = [
    "CommandNotFound",
    "ConfigError",
    "NotExecutable",
    "ProcworkError",
    "RemoteAuthError",
    "RemoteConnectionLost",
    "RemoteError",
    "RemoteHostKeyError",
    "RemoteUnreachable",
    "SpawnError",
    "clip_command",
]

# Longest rendering of a command in a message: a generated argument list can
# be megabytes long, and the message must still fit on a screen.
COMMAND_SHOWN = 200


class ProcworkError(Exception):
    """Base class of every error procwork raises on its own account."""


class SpawnError(ProcworkError, OSError):
    """A process could not be started.

    The message names the command and the reason; ``errno`` and ``filename``
    are set as on the underlying :class:`OSError` when there was one.
    """

    def __str__(self) -> str:
        # OSError would add "[Errno 2]" and the file name; the message
        # already says both in words.
        return str(self.strerror)


class CommandNotFound(SpawnError, FileNotFoundError):
    """The program to run does not exist: not on ``PATH``, no such file, or
    a script whose interpreter (its ``#!`` line) does not exist.

    Also a :class:`FileNotFoundError`, which is what :mod:`subprocess`
    raises there, so ``except FileNotFoundError`` catches it unchanged.
    """


class NotExecutable(SpawnError, PermissionError):
    """The program exists but may not be executed: it lacks the execute
    permission, or it is a directory.

    Also a :class:`PermissionError`, which is what :mod:`subprocess` raises
    there, so ``except PermissionError`` catches it unchanged.
    """


class ConfigError(ProcworkError, ValueError):
    """A configuration file or value is invalid; the message names where."""


class RemoteError(ProcworkError, ConnectionError):
    """A remote run failed because of its SSH connection; the message names the host."""


class RemoteUnreachable(RemoteError):
    """The host could not be reached (name, route, refused, no answer)."""


class RemoteHostKeyError(RemoteError):
    """The host's key is not in known_hosts, or differs from the one there."""


class RemoteAuthError(ProcworkError, PermissionError):
    """The host refused every key we offered."""


class RemoteConnectionLost(RemoteError):
    """The connection dropped while the run was going on; its outcome is unknown."""


# Show the public import path in tracebacks: procwork.SpawnError, not
# procwork._errors.SpawnError.
for _cls in (
    ProcworkError,
    SpawnError,
    CommandNotFound,
    NotExecutable,
    ConfigError,
    RemoteError,
    RemoteUnreachable,
    RemoteHostKeyError,
    RemoteAuthError,
    RemoteConnectionLost,
):
    _cls.__module__ = "procwork"


def clip_command(text: str, arguments: int) -> str:
    """``text``, a command line, quoted for a message and cut if it is long.

    Args:
        text: The command as one line, e.g. ``shlex.join(argv)``.
        arguments: How many arguments it has, said when it is cut.
    """
    if len(text) <= COMMAND_SHOWN:
        return repr(text)
    return (
        f"{text[:COMMAND_SHOWN]!r}... ({arguments} arguments, "
        f"{len(text)} characters in all)"
    )
