"""Result: how a finished run went; ProcessFailed: a run that went wrong.

(ProcessFailed lives with the Result it carries, not in ``_errors.py``:
being a ``subprocess.CalledProcessError`` it imports :mod:`subprocess`,
which the modules that import ``_errors.py`` and run nothing, such as
``procwork ctl``'s, do without.)
"""

from __future__ import annotations

import shlex
import signal
import subprocess
from dataclasses import dataclass
from typing import Any, Generic, cast

from typing_extensions import TypeVar

from procwork._errors import ProcworkError

__all__ = ["ProcessFailed", "Result", "describe_returncode"]

# The type of the output: bytes, or str for a run in text mode (text=True,
# encoding= or errors=). ``Result`` alone is ``Result[bytes]``.
Output = TypeVar("Output", bytes, str, default=bytes)


def describe_returncode(returncode: int | None) -> str:
    """``"exited 0"``, ``"killed by SIGKILL"``, ... for a Popen-style returncode."""
    if returncode is None:
        return "never started"
    if returncode >= 0:
        return f"exited {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"killed by {name}"


@dataclass(frozen=True)
class Result(Generic[Output]):
    """The outcome of :func:`procwork.run` or :meth:`procwork.Process.wait`.

    Attributes:
        args: The argv that was run.
        pid: Its process id (``None`` if it never started).
        returncode: Exit status; ``-N`` when killed by signal ``N``; ``None``
            if it timed out while still queued and never started, or (a
            remote run) if it was given up after its SIGKILL because its
            exit status did not come (a silent connection): how it ended is
            then unknown.
        stdout: The captured standard output: its last ``max_output`` bytes
            (``str`` for a run in text mode: ``Result[str]``).
        stderr: The same for standard error.
        truncated: True if the front of stdout or stderr was dropped.
        duration: Seconds from start to exit (0 if it never started).
        queued: Seconds it waited for admission before starting.
        timed_out: True if its timeout expired (it was then killed).
        timeout: The timeout it ran with, if any.
    """

    args: tuple[str, ...]
    pid: int | None
    returncode: int | None
    stdout: Output = b""  # type: ignore[assignment]
    stderr: Output = b""  # type: ignore[assignment]
    truncated: bool = False
    duration: float = 0.0
    queued: float = 0.0
    timed_out: bool = False
    timeout: float | None = None

    @property
    def ok(self) -> bool:
        """True if it exited 0 and did not time out."""
        return self.returncode == 0 and not self.timed_out

    @property
    def signal(self) -> int | None:
        """The signal that killed it, if one did."""
        if self.returncode is not None and self.returncode < 0:
            return -self.returncode
        return None

    def command_line(self) -> str:
        """The argv as a shell-quoted string, for messages."""
        return shlex.join(self.args)

    def describe(self) -> str:
        """How it ended: ``"exited 0"``, ``"killed by SIGKILL after timeout 5 s"``."""
        text = describe_returncode(self.returncode)
        # A run that started has a duration; a queued one ends with 0.0.
        unknown = self.returncode is None and self.duration > 0
        if unknown:
            text = "sent SIGKILL, exit status unknown"
        if self.timed_out:
            if self.returncode is None and not unknown:
                return f"timed out after {self.timeout:g} s while queued, never started"
            text += f" after timeout {self.timeout:g} s"
        return text

    def __repr__(self) -> str:
        pid = "" if self.pid is None else f" pid {self.pid}"
        extra = ", output truncated" if self.truncated else ""
        return (
            f"<Result {self.command_line()!r}{pid} {self.describe()}, "
            f"{self.duration:.3f} s{extra}>"
        )


class ProcessFailed(ProcworkError, subprocess.CalledProcessError):
    """A run with ``check=True`` exited non-zero or timed out.

    Also a :class:`subprocess.CalledProcessError`, so code written for
    ``subprocess.run(check=True)`` catches it unchanged. ``result`` is the full
    :class:`procwork.Result`: its output is bytes, or str for a run in text
    mode (so typed ``Result[Any]``, as ``CalledProcessError.stdout`` is).
    """

    def __init__(self, result: Result[Any]) -> None:
        # returncode is None for a run that timed out before it started.
        returncode = cast(int, result.returncode)
        subprocess.CalledProcessError.__init__(
            self, returncode, result.args, result.stdout, result.stderr
        )
        self.result: Result[Any] = result

    def __str__(self) -> str:
        return f"{self.result.command_line()!r} {self.result.describe()}"


# Shown by its public import path in tracebacks, as the others in _errors.py.
ProcessFailed.__module__ = "procwork"
