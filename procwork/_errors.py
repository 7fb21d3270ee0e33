"""procwork's exceptions: one base, each also the matching builtin."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING, cast

from untwisted import Timeout

if TYPE_CHECKING:
    from procwork._result import Result

__all__ = ["ConfigError", "ProcessFailed", "ProcworkError", "SpawnError", "Timeout"]


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


class ProcessFailed(ProcworkError, subprocess.CalledProcessError):
    """A run with ``check=True`` exited non-zero or timed out.

    Also a :class:`subprocess.CalledProcessError`, so code written for
    ``subprocess.run(check=True)`` catches it unchanged. ``result`` is the full
    :class:`procwork.Result`.
    """

    def __init__(self, result: Result) -> None:
        # returncode is None for a run that timed out before it started.
        returncode = cast(int, result.returncode)
        subprocess.CalledProcessError.__init__(
            self, returncode, result.args, result.stdout, result.stderr
        )
        self.result = result

    def __str__(self) -> str:
        return f"{self.result.command_line()!r} {self.result.describe()}"


class ConfigError(ProcworkError, ValueError):
    """A configuration file or value is invalid; the message names where."""


# Show the public import path in tracebacks: procwork.SpawnError, not
# procwork._errors.SpawnError.
for _cls in (ProcworkError, SpawnError, ProcessFailed, ConfigError):
    _cls.__module__ = "procwork"
