"""procwork.run and procwork.spawn: argument checking and the defaults."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from typing import cast

from twisted.internet.defer import Deferred

import untwisted
from procwork._errors import ProcessFailed
from procwork._process import LineCallback, Process
from procwork._result import Result
from procwork._scheduler import Scheduler, parse_priority

__all__ = ["DEFAULT_GRACE", "DEFAULT_MAX_OUTPUT", "run", "scheduler", "spawn"]

DEFAULT_GRACE = 5.0
DEFAULT_MAX_OUTPUT = 1 << 20  # bytes kept per stream

Command = str | bytes | os.PathLike[str] | Sequence[str | bytes | os.PathLike[str]]

_default_scheduler: Scheduler | None = None


def scheduler() -> Scheduler:
    """The scheduler that ``run``/``spawn`` use unless given another.

    Change its limits in place, e.g. ``procwork.scheduler().set_max_running(4)``
    or ``procwork.scheduler().load = SystemLoad(max_load=1.5)``.
    """
    global _default_scheduler
    if _default_scheduler is None:
        _default_scheduler = Scheduler(untwisted.default_driver().reactor)
    return _default_scheduler


def run(
    args: Command,
    *,
    timeout: float | None = None,
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
    host: str | None = None,
    known_hosts: str | os.PathLike[str] | None = None,
    identity: str | os.PathLike[str] | None = None,
) -> Deferred[Result]:
    """Run a command to completion; a Deferred for its :class:`Result`.

    ``yield`` it in a clockwork generator, ``await`` it in ``async def``, or
    block on it with ``untwisted.run(...)``. Call from the reactor thread.

    Args:
        args: The argv as a list, or a string split with :func:`shlex.split`
            (never given to a shell unless ``shell=True``).
        timeout: Seconds from this call, queueing included; on expiry the
            whole process group gets SIGTERM, then SIGKILL after ``grace``
            seconds, and the Result says ``timed_out``. Default: none.
        grace: Seconds between SIGTERM and SIGKILL (default 5).
        input: Bytes fed to stdin (of any size; stdin is ``/dev/null`` when
            None).
        env: The child's whole environment (default: inherit ours).
        cwd: The child's working directory (default: ours).
        priority: ``"critical"`` (starts at once, whatever the queue, cap or
            load), ``"high"``, ``"normal"`` or ``"low"`` (runs niced).
        max_output: Bytes of stdout and of stderr kept, the tail (default
            1 MiB each); ``None`` keeps everything.
        check: Fail with :class:`ProcessFailed` unless the Result is ``ok``.
        shell: Run ``args`` (a string) with ``/bin/sh -c``.
        kill_leftovers: When the command exits, SIGKILL whatever it left
            running in its process group (background jobs, a stray
            ``sleep``), so a finished run leaves nothing behind. False lets
            them live on (they are then no longer procwork's). Processes that
            start their own session (daemons) are never affected.
        scheduler: Admission control to use (default :func:`scheduler`).
        host: Run it on ``"user@host:port"`` over SSH instead (user and port
            optional), with the same Result, timeout, grace and cancel: see
            ``procwork/_remote.py``. Fails with :class:`RemoteError` (a
            ``ConnectionError``) or :class:`RemoteAuthError` (a
            ``PermissionError``) when the host cannot be used.
        known_hosts: The known_hosts file for ``host`` (default
            ``~/.ssh/known_hosts``); an unknown or changed key is refused.
        identity: A private key file for ``host`` (default: ssh-agent's
            keys, else ``~/.ssh/id_*``).

    Returns:
        A Deferred firing with the Result. Cancelling it kills the process
        (same escalation as the timeout). It fails with
        :class:`SpawnError` if the command cannot be started.

    Raises:
        TypeError, ValueError: an argument is unusable; the message names the
            command and the argument.
    """
    if input is not None and not isinstance(input, bytes | bytearray | memoryview):
        raise TypeError(
            f"procwork.run({_show(args)}): input must be bytes, not "
            f"{type(input).__name__} (encode text first)"
        )
    process = _process(
        "run",
        args,
        timeout,
        grace,
        env,
        cwd,
        priority,
        max_output,
        shell,
        scheduler,
        stdin=input is not None,
        kill_leftovers=kill_leftovers,
        remote=(host, known_hosts, identity),
    )
    if input is not None:
        process.write(bytes(input))
        process.close_stdin()
    process._submit()
    d = process.wait()
    if check:
        d.addCallback(_check)
    return d


def spawn(
    args: Command,
    *,
    timeout: float | None = None,
    grace: float = DEFAULT_GRACE,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    priority: str = "normal",
    max_output: int | None = DEFAULT_MAX_OUTPUT,
    shell: bool = False,
    stdin: bool = True,
    capture: bool = True,
    kill_leftovers: bool = True,
    on_stdout: LineCallback | None = None,
    on_stderr: LineCallback | None = None,
    scheduler: Scheduler | None = None,
    host: str | None = None,
    known_hosts: str | os.PathLike[str] | None = None,
    identity: str | os.PathLike[str] | None = None,
) -> Process:
    """Start a command and return its live :class:`Process` handle.

    For long or interactive work: ``write()``/``close_stdin()``, output line
    by line (``on_stdout``/``on_stderr`` callbacks, ``readline()``, or
    ``async for line in proc.lines()``), ``signal()``, ``terminate()``,
    ``kill()`` and ``wait()``. Arguments as for :func:`run`; ``stdin=False``
    gives the child ``/dev/null``; ``capture=False`` lets it share our
    stdin, stdout and stderr, as a shell would (nothing is captured). The
    process is queued like any run (a ``critical`` one starts before this
    returns). ``host``, ``known_hosts``, ``identity``: as for :func:`run`.
    """
    process = _process(
        "spawn",
        args,
        timeout,
        grace,
        env,
        cwd,
        priority,
        max_output,
        shell,
        scheduler,
        stdin=stdin,
        inherit_stdio=not capture,
        kill_leftovers=kill_leftovers,
        on_stdout=on_stdout,
        on_stderr=on_stderr,
        remote=(host, known_hosts, identity),
    )
    process._submit()
    return process


def _check(result: Result) -> Result:
    if not result.ok:
        raise ProcessFailed(result)
    return result


def _process(
    func: str,
    args: Command,
    timeout: float | None,
    grace: float,
    env: Mapping[str, str] | None,
    cwd: str | os.PathLike[str] | None,
    priority: str,
    max_output: int | None,
    shell: bool,
    scheduler_: Scheduler | None,
    *,
    stdin: bool,
    inherit_stdio: bool = False,
    kill_leftovers: bool = True,
    on_stdout: LineCallback | None = None,
    on_stderr: LineCallback | None = None,
    remote: tuple[str | None, object, object] = (None, None, None),
) -> Process:
    argv = _argv(args, shell)
    where = _Where(func, argv)
    sched = scheduler_ if scheduler_ is not None else scheduler()
    make = Process
    if remote != (None, None, None):  # host=...: procwork/_remote.py
        from procwork._remote import remote_process

        make = cast(type[Process], remote_process(where, remote, inherit_stdio))
    return make(
        argv,
        reactor=sched.reactor,
        scheduler=sched,
        env=_env(env, where),
        cwd=None if cwd is None else os.fspath(cwd),
        priority=parse_priority(priority, where),
        timeout=_seconds(timeout, "timeout", where, allow_none=True),
        grace=_seconds(grace, "grace", where, allow_none=False),  # type: ignore[arg-type]
        max_output=_max_output(max_output, where),
        stdin=stdin,
        inherit_stdio=inherit_stdio,
        kill_leftovers=kill_leftovers,
        on_stdout=on_stdout,
        on_stderr=on_stderr,
    )


def _argv(args: Command, shell: bool) -> tuple[str, ...]:
    if shell:
        if not isinstance(args, str):
            raise TypeError(f"shell=True takes the command as one string, not {args!r}")
        argv: tuple[str, ...] = ("/bin/sh", "-c", args)
    elif isinstance(args, str):
        try:
            argv = tuple(shlex.split(args))
        except ValueError as e:
            raise ValueError(f"cannot split command {args!r}: {e}") from None
    elif isinstance(args, bytes | os.PathLike):
        argv = (os.fsdecode(args),)
    else:
        try:
            argv = tuple(os.fsdecode(a) for a in args)
        except TypeError:
            raise TypeError(
                f"command {args!r}: every argument must be str, bytes or a path"
            ) from None
    if not argv or not argv[0]:
        raise ValueError(f"empty command {args!r}: nothing to run")
    for i, arg in enumerate(argv):
        if "\0" in arg:
            raise ValueError(
                f"command {_show(argv)}: argument {i} contains a NUL byte, "
                "which no process can receive"
            )
    return argv


def _env(env: Mapping[str, str] | None, where: object) -> dict[str, str] | None:
    if env is None:
        return None
    clean: dict[str, str] = {}
    for key, value in env.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"{where}: env entries must be str, got {key!r}: {value!r}")
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise ValueError(f"{where}: invalid environment variable {key!r}")
        clean[key] = value
    return clean


def _seconds(
    value: object, name: str, where: object, *, allow_none: bool
) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{where}: {name} must be a number of seconds, not {value!r}")
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{where}: {name} must be a finite number >= 0, not {value!r}")
    return float(value)


def _max_output(value: object, where: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where}: max_output must be an int or None, not {value!r}")
    if value < 1:
        raise ValueError(f"{where}: max_output must be >= 1 byte, not {value!r}")
    return value


class _Where:
    """``procwork.run('cmd arg')`` for error messages, formatted only if needed."""

    __slots__ = ("_argv", "_func")

    def __init__(self, func: str, argv: tuple[str, ...]) -> None:
        self._func = func
        self._argv = argv

    def __str__(self) -> str:
        return f"procwork.{self._func}({_show(self._argv)})"


def _show(args: object) -> str:
    if isinstance(args, tuple | list):
        return repr(shlex.join(str(a) for a in args))
    return repr(args)
