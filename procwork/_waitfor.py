"""procwork.waitfor: the first procwork's API, on procwork.run.

The user's original procwork (Python 2) had one function, a clockwork
routine that polled a ``Popen`` and ran ``kill -KILL`` on its pid at the
deadline. Code written for it runs here unchanged; new code calls
:func:`procwork.run`, which this is a thin layer over. See
``specs/procwork_classic.md``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from dataclasses import dataclass

from twisted.internet.defer import Deferred

from procwork._api import (
    DEFAULT_GRACE,
    DEFAULT_MAX_OUTPUT,
    Command,
    _optional_seconds,
    run,
)
from procwork._result import Result
from procwork._scheduler import Scheduler

__all__ = ["WaitforResult", "waitfor"]


@dataclass(frozen=True)
class WaitforResult:
    """What :func:`waitfor` gives: the first procwork's view of a finished run.

    Attributes:
        killed: True if it was killed because ``secondsToWait`` ran out.
        returncode: Its exit status; ``-N`` when killed by signal ``N``;
            ``None`` if it ran out of time while still queued (never started).
        pid: Its process id (``None`` if it never started).
        stdout: Its standard output, a readable binary file object.
        stderr: Its standard error, the same.
        result: The full :class:`procwork.Result`.
    """

    killed: bool
    returncode: int | None
    pid: int | None
    stdout: io.BytesIO
    stderr: io.BytesIO
    result: Result


def waitfor(
    cmd: Command,
    secondsToWait: float = 0,  # the first procwork's spelling
    *,
    grace: float = DEFAULT_GRACE,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    priority: str = "normal",
    max_output: int | None = DEFAULT_MAX_OUTPUT,
    check: bool = False,
    shell: bool = False,
    kill_leftovers: bool = True,
    scheduler: Scheduler | None = None,
) -> Deferred[WaitforResult]:
    """Run ``cmd``, wait for it, and give a :class:`WaitforResult`.

    ``procwork.run(cmd, timeout=secondsToWait or None, ...)``, its Result
    seen as the first procwork saw it. ``yield`` it in a clockwork routine,
    or block on it with ``clockwork.wrap(...)``/``untwisted.run(...)``.

    Args:
        cmd: A list of arguments, or a string split with :func:`shlex.split`
            (the first procwork split on spaces; quotes now group words).
        secondsToWait: Kill it after this many seconds (queueing included);
            0, the default, waits as long as it takes. At the deadline its
            whole process group gets SIGTERM, then SIGKILL after ``grace``
            seconds, and the result says ``killed``.
        grace: Seconds between SIGTERM and SIGKILL (default 5).
        input: Bytes fed to its stdin (default: ``/dev/null``).
        env: Its whole environment (default: inherit ours).
        cwd: Its working directory (default: ours).
        priority: ``"critical"``, ``"high"``, ``"normal"`` or ``"low"``, as
            for :func:`procwork.run`.
        max_output: Bytes of stdout and of stderr kept, the tail (default
            1 MiB each); ``None`` keeps everything.
        check: Fail with :class:`procwork.ProcessFailed` unless it exited 0
            in time.
        shell: Run ``cmd`` (a string) with ``/bin/sh -c``.
        kill_leftovers: As for :func:`procwork.run`.
        scheduler: Admission control to use (default
            :func:`procwork.scheduler`).

    Returns:
        A Deferred firing with the :class:`WaitforResult`; cancelling it
        kills the process. It fails with :class:`procwork.SpawnError` if the
        command cannot be started.

    Raises:
        TypeError, ValueError: an argument is unusable.
    """
    seconds = _optional_seconds(
        secondsToWait, "secondsToWait", f"procwork.waitfor({cmd!r})", allow_none=False
    )
    d = run(
        cmd,
        timeout=seconds or None,
        grace=grace,
        input=input,
        env=env,
        cwd=cwd,
        priority=priority,
        max_output=max_output,
        check=check,
        shell=shell,
        kill_leftovers=kill_leftovers,
        scheduler=scheduler,
    )
    return d.addCallback(_as_waited)


def _as_waited(result: Result) -> WaitforResult:
    return WaitforResult(
        killed=result.timed_out,
        returncode=result.returncode,
        pid=result.pid,
        stdout=io.BytesIO(result.stdout),
        stderr=io.BytesIO(result.stderr),
        result=result,
    )
