"""procwork.run and procwork.spawn: argument checking and the defaults."""

from __future__ import annotations

import os
import shlex
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, cast, overload

from twisted.internet.defer import Deferred

import untwisted
from procwork import _parity
from procwork import _validate as validate
from procwork._defaults import DEFAULT_GRACE, DEFAULT_MAX_OUTPUT, PRIORITIES, Priority
from procwork._errors import clip_command
from procwork._process import LineCallback, Process, RunOptions
from procwork._reactor import default_reactor
from procwork._result import ProcessFailed, Result
from procwork._scheduler import Scheduler, parse_priority
from procwork._threads import check_thread
from procwork._validate import clip

if TYPE_CHECKING:
    from untwisted.lowlevel import LoopReactor

__all__ = ["DEFAULT_GRACE", "DEFAULT_MAX_OUTPUT", "run", "scheduler", "spawn"]

Command = str | bytes | os.PathLike[str] | Sequence[str | bytes | os.PathLike[str]]

_default_scheduler: Scheduler | None = None

# The scheduler of each asyncio loop's reactor, until that reactor shuts down.
_loop_schedulers: weakref.WeakKeyDictionary[object, Scheduler] = (
    weakref.WeakKeyDictionary()
)


def scheduler() -> Scheduler:
    """The scheduler that ``run``/``spawn`` use unless given another.

    Change its limits in place, e.g. ``procwork.scheduler().set_max_running(4)``
    or ``procwork.scheduler().load = SystemLoad(max_load=1.5)``.

    Inside a running asyncio loop it is that loop's own (its runs are on the
    loop's reactor), made on first use with the limits the program's
    scheduler has then (the defaults if it has none yet); it lasts as long
    as the loop's reactor, until the end of ``asyncio.run``.
    """
    reactor = untwisted.lowlevel.loop_reactor()
    if reactor is not None:
        return _loop_scheduler(reactor)
    global _default_scheduler
    if _default_scheduler is None:
        _default_scheduler = Scheduler(default_reactor())
    return _default_scheduler


def _loop_scheduler(reactor: LoopReactor) -> Scheduler:
    found = _loop_schedulers.get(reactor)
    if found is not None:
        return found
    model = _default_scheduler
    if model is None:
        made = Scheduler(reactor)
    else:
        made = Scheduler(
            reactor,
            max_running=model.max_running,
            load=model.load,
            load_interval=model.load_interval,
            min_running=model.min_running,
        )
    _loop_schedulers[reactor] = made
    # Forgotten with its reactor: the next asyncio.run gets a new pair.
    reactor.addSystemEventTrigger("after", "shutdown", _loop_schedulers.pop, reactor)
    return made


# The overloads say what the output is: bytes, or str in text mode (any of
# text=True, encoding=, errors=), as typeshed says for subprocess.run.
@overload
def run(
    args: Command,
    *,
    input: bytes | None = None,
    timeout: float | None = None,
    grace: float = DEFAULT_GRACE,
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
    umask: int = -1,
    pass_fds: Sequence[int] = (),
    start_new_session: bool = True,
    user: str | int | None = None,
    group: str | int | None = None,
    extra_groups: Sequence[str | int] | None = None,
    text: Literal[False] = False,
    encoding: None = None,
    errors: None = None,
) -> Deferred[Result[bytes]]: ...
@overload
def run(
    args: Command,
    *,
    input: str | None = None,
    timeout: float | None = None,
    grace: float = DEFAULT_GRACE,
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
    umask: int = -1,
    pass_fds: Sequence[int] = (),
    start_new_session: bool = True,
    user: str | int | None = None,
    group: str | int | None = None,
    extra_groups: Sequence[str | int] | None = None,
    text: Literal[True],
    encoding: str | None = None,
    errors: str | None = None,
) -> Deferred[Result[str]]: ...
@overload
def run(
    args: Command,
    *,
    input: str | None = None,
    timeout: float | None = None,
    grace: float = DEFAULT_GRACE,
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
    umask: int = -1,
    pass_fds: Sequence[int] = (),
    start_new_session: bool = True,
    user: str | int | None = None,
    group: str | int | None = None,
    extra_groups: Sequence[str | int] | None = None,
    text: bool = False,
    encoding: str,
    errors: str | None = None,
) -> Deferred[Result[str]]: ...
@overload
def run(
    args: Command,
    *,
    input: bytes | str | None = None,
    timeout: float | None = None,
    grace: float = DEFAULT_GRACE,
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
    umask: int = -1,
    pass_fds: Sequence[int] = (),
    start_new_session: bool = True,
    user: str | int | None = None,
    group: str | int | None = None,
    extra_groups: Sequence[str | int] | None = None,
    text: bool = False,
    encoding: str | None = None,
    errors: str | None = None,
) -> Deferred[Result[Any]]: ...
def run(
    args: Command,
    *,
    input: bytes | str | None = None,
    timeout: float | None = None,
    grace: float = DEFAULT_GRACE,
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
    umask: int = -1,
    pass_fds: Sequence[int] = (),
    start_new_session: bool = True,
    user: str | int | None = None,
    group: str | int | None = None,
    extra_groups: Sequence[str | int] | None = None,
    text: bool = False,
    encoding: str | None = None,
    errors: str | None = None,
) -> Deferred[Result[Any]]:
    """Run a command to completion; a Deferred for its :class:`Result`.

    ``yield`` it in a clockwork generator, ``await`` it in ``async def``, or
    block on it with ``untwisted.run(...)``. Call from the thread that runs
    the reactor; another thread hands the call over with
    ``reactor.callFromThread`` (or ``threads.blockingCallFromThread``).

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
            ``procwork/_remote/``. Fails with :class:`RemoteError` (a
            ``ConnectionError``) or :class:`RemoteAuthError` (a
            ``PermissionError``) when the host cannot be used.
        known_hosts: The known_hosts file for ``host`` (default
            ``~/.ssh/known_hosts``); an unknown or changed key is refused.
        identity: A private key file for ``host`` (default: ssh-agent's
            keys, else ``~/.ssh/id_*``).
        umask: The child's umask, 0 to 0o777 (default -1: ours).
        pass_fds: Our open descriptors (above 2) the child keeps, at the
            same numbers (every other one is closed in the child).
        start_new_session: Only True: procwork always starts the child in a
            session and process group of its own (how it kills the tree).
        user, group, extra_groups: Who the child runs as, names or ids, as
            for :func:`subprocess.run` (default: as we do; another needs
            root). An unknown name is a ValueError now.
        text, encoding, errors: As for :func:`subprocess.run`: any of them
            gives ``str`` output (a ``Result[str]``), decoded with
            ``encoding`` (default: the locale's) and ``errors`` (default
            ``"strict"``), ``\r\n`` and ``\r`` read as ``\n``; ``input`` is then
            a str. A decoding error fails the run with ``UnicodeDecodeError``.

    Returns:
        A Deferred firing with the Result. Cancelling it kills the process
        (same escalation as the timeout). It fails with
        :class:`SpawnError` if the command cannot be started.

    Raises:
        TypeError, ValueError: an argument is unusable; the message names the
            command and the argument. Nothing was started.
        untwisted.ForeignThreadError: called from a thread other than the
            one that runs the reactor. Nothing was started.
    """
    process, text_mode = _process(
        "run",
        args,
        timeout=timeout,
        grace=grace,
        env=env,
        cwd=cwd,
        priority=priority,
        max_output=max_output,
        shell=shell,
        scheduler_=scheduler,
        stdin=input is not None,
        kill_leftovers=kill_leftovers,
        input=input,
        check=check,
        remote=(host, known_hosts, identity),
        umask=umask,
        pass_fds=pass_fds,
        start_new_session=start_new_session,
        who=(user, group, extra_groups),
        text=(text, encoding, errors),
    )
    process._submit()
    d: Deferred[Result[Any]] = process._wait()  # _process() checked the thread
    if text_mode is not None:
        d.addCallback(text_mode.decode_result)
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
    umask: int = -1,
    pass_fds: Sequence[int] = (),
    start_new_session: bool = True,
    user: str | int | None = None,
    group: str | int | None = None,
    extra_groups: Sequence[str | int] | None = None,
) -> Process:
    """Start a command and return its live :class:`Process` handle.

    For long or interactive work: ``write()``/``close_stdin()``, output line
    by line (``on_stdout``/``on_stderr`` callbacks, ``readline()``, or
    ``async for line in proc.lines()``), ``signal()``, ``terminate()``,
    ``kill()`` and ``wait()``. Arguments as for :func:`run`; ``stdin=False``
    gives the child ``/dev/null``; ``capture=False`` lets it share our
    stdin, stdout and stderr, as a shell would (nothing is captured). The
    process is queued like any run (a ``critical`` one starts before this
    returns). ``host``, ``known_hosts``, ``identity``, ``umask``,
    ``pass_fds``, ``start_new_session``, ``user``, ``group``,
    ``extra_groups``: as for :func:`run`. Its output is
    bytes (no ``text=``: decode its lines, ``line.decode()``).

    Raises:
        TypeError, ValueError: an argument is unusable, as for :func:`run`.
        untwisted.ForeignThreadError: called from a thread other than the
            one that runs the reactor.
    """
    process, _ = _process(
        "spawn",
        args,
        timeout=timeout,
        grace=grace,
        env=env,
        cwd=cwd,
        priority=priority,
        max_output=max_output,
        shell=shell,
        scheduler_=scheduler,
        stdin=stdin,
        capture=capture,
        kill_leftovers=kill_leftovers,
        on_stdout=on_stdout,
        on_stderr=on_stderr,
        remote=(host, known_hosts, identity),
        umask=umask,
        pass_fds=pass_fds,
        start_new_session=start_new_session,
        who=(user, group, extra_groups),
    )
    process._submit()
    return process


def _check(result: Result[Any]) -> Result[Any]:
    if not result.ok:
        raise ProcessFailed(result)
    return result


def _process(
    func: str,
    args: object,
    *,
    timeout: object,
    grace: object,
    env: object,
    cwd: object,
    priority: object,
    max_output: object,
    shell: object,
    scheduler_: object,
    stdin: object,
    kill_leftovers: object,
    capture: object = True,
    input: object = None,
    check: object = False,
    on_stdout: object = None,
    on_stderr: object = None,
    remote: tuple[str | None, object, object] = (None, None, None),
    umask: object = -1,
    pass_fds: object = (),
    start_new_session: object = True,
    text: tuple[object, object, object] = (False, None, None),
    who: tuple[object, object, object] = (None, None, None),
) -> tuple[Process, _parity.TextMode | None]:
    """Check every argument, then build the (not yet submitted) Process.

    Everything that can be wrong with an argument is found here, before
    anything is created: a bad call leaves nothing behind. The arguments are
    typed ``object`` because this is where a wrong type is caught.
    """
    where = _Where(func, args)
    for name, flag in (
        ("shell", shell),
        ("stdin", stdin),
        ("capture", capture),
        ("kill_leftovers", kill_leftovers),
        ("check", check),
    ):
        if not isinstance(flag, bool):
            raise TypeError(f"{where}: {name} must be True or False, not {flag!r}")
    argv = _argv(args, shell, where)
    where = _Where(func, argv)
    _parity.session(start_new_session, where)
    text_mode = _parity.text_mode(*text, where)
    if input is not None and text_mode is not None:
        input = text_mode.encode(input, where)
    elif input is not None and not isinstance(input, bytes | bytearray | memoryview):
        raise TypeError(
            f"{where}: input must be bytes, not {type(input).__name__} "
            "(encode text first, or pass text=True)"
        )
    child_umask = _parity.umask(umask, where)
    child_fds = _parity.pass_fds(pass_fds, where)
    child_id = _parity.identity(*who, where)
    callbacks = _callbacks(on_stdout, on_stderr, where)
    sched = _scheduler(scheduler_, where)
    options = RunOptions(
        argv,
        env=_env(env, where),
        cwd=_cwd(cwd, where),
        priority=_priority(priority, where),
        timeout=_optional_seconds(timeout, "timeout", where, allow_none=True),
        grace=validate.seconds(grace, _Named(where, "grace")),
        max_output=_max_output(max_output, where),
        stdin=bool(stdin),
        inherit_stdio=not capture,
        kill_leftovers=bool(kill_leftovers),
        on_stdout=callbacks[0],
        on_stderr=callbacks[1],
        umask=child_umask,
        pass_fds=child_fds,
        user=child_id.user,
        group=child_id.group,
        extra_groups=child_id.extra_groups,
    )
    make: Callable[..., Process] = Process
    if remote != (None, None, None):  # host=...: procwork/_remote/
        from procwork._remote import remote_process

        _parity.refuse_over_ssh(child_umask, child_fds, child_id, where)
        make = remote_process(where, remote, not capture)
    reactor = sched.reactor
    process = make(options, reactor=reactor, scheduler=sched)
    # Last, once the arguments are known to be good, and before anything is
    # started: a Process not yet submitted holds nothing.
    check_thread(f"procwork.{func}", reactor)
    if untwisted.lowlevel.is_loop_reactor(reactor) and cast(Any, reactor).closed:
        raise RuntimeError(
            f"{where}: its scheduler runs on the reactor of an asyncio event "
            "loop that has finished (each asyncio.run has its own); make the "
            "Scheduler inside the running loop, or use procwork.scheduler()"
        )
    if isinstance(input, bytes | bytearray | memoryview):
        process.write(bytes(input))
        process.close_stdin()
    return process, text_mode


def _argv(args: object, shell: object, where: object) -> tuple[str, ...]:
    if shell:
        if not isinstance(args, str):
            raise TypeError(
                f"{where}: shell=True takes the command as one string, "
                f"not {type(args).__name__}"
            )
        argv: tuple[str, ...] = ("/bin/sh", "-c", args)
    elif isinstance(args, str):
        try:
            argv = tuple(shlex.split(args))
        except ValueError as e:
            raise ValueError(f"cannot split command {_show(args)}: {e}") from None
    elif isinstance(args, bytes | os.PathLike):
        argv = (os.fsdecode(args),)
    elif isinstance(args, list | tuple) and all(type(a) is str for a in args):
        argv = tuple(args)  # the common case, without a call per argument
    elif isinstance(args, Sequence) and not isinstance(args, bytearray):
        # Only a sequence has an order: a dict would run its keys, a set
        # its items in whatever order hashing gives. (A bytearray is a
        # sequence of ints, not a command.)
        argv = tuple(_argument(a, i, where) for i, a in enumerate(args))
    else:
        raise TypeError(
            f"{where}: the command must be a string or a list of arguments "
            f"(str, bytes or paths), not {type(args).__name__}"
        )
    # [''] is left to fail as subprocess fails, with a PermissionError
    # (NotExecutable) naming it; an empty argv has no program at all.
    if not argv:
        raise ValueError(f"empty command {clip(repr(args))}: nothing to run")
    if "\0" in "".join(argv):
        i = next(i for i, arg in enumerate(argv) if "\0" in arg)
        raise ValueError(
            f"{where}: argument {i} contains a NUL byte, which no process can receive"
        )
    return argv


def _argument(arg: object, index: int, where: object) -> str:
    if isinstance(arg, str | bytes | os.PathLike):
        return os.fsdecode(arg)
    raise TypeError(
        f"{where}: argument {index} is {clip(repr(arg))}, but every argument "
        "must be str, bytes or a path"
    )


def _env(env: object, where: object) -> dict[str, str] | None:
    if env is None:
        return None
    if not isinstance(env, Mapping):
        raise TypeError(
            f"{where}: env must be a mapping of names to values (a dict such as "
            f"{{'PATH': '/usr/bin'}}), not {type(env).__name__}"
        )
    clean: dict[str, str] = {}
    for key, value in env.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(
                f"{where}: env entries must be str, got "
                f"{clip(repr(key))}: {clip(repr(value))}"
            )
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise ValueError(
                f"{where}: invalid environment variable {clip(repr(key))} "
                "(a name must be non-empty and hold no '=' or NUL, a value no NUL)"
            )
        clean[key] = value
    return clean


def _cwd(cwd: object, where: object) -> str | None:
    if cwd is None:
        return None
    if not isinstance(cwd, str | bytes | os.PathLike):
        raise TypeError(
            f"{where}: cwd must be a path (str, bytes or os.PathLike), "
            f"not {clip(repr(cwd))}"
        )
    path = os.fsdecode(cwd)
    if not path or "\0" in path:
        raise ValueError(
            f"{where}: cwd {clip(repr(path))} is not a usable directory name"
        )
    return path


def _priority(priority: object, where: object) -> Priority:
    if not isinstance(priority, str | Priority):
        raise TypeError(
            f"{where}: priority must be one of {', '.join(map(repr, PRIORITIES))}, "
            f"not {clip(repr(priority))}"
        )
    return parse_priority(priority, where)


def _scheduler(scheduler_: object, where: object) -> Scheduler:
    if scheduler_ is None:
        return scheduler()
    if not isinstance(scheduler_, Scheduler):
        raise TypeError(
            f"{where}: scheduler must be a procwork.Scheduler, "
            f"not {clip(repr(scheduler_))}"
        )
    return scheduler_


def _callbacks(
    on_stdout: object, on_stderr: object, where: object
) -> tuple[LineCallback | None, LineCallback | None]:
    if on_stdout is None and on_stderr is None:
        return None, None
    for name, callback in (("on_stdout", on_stdout), ("on_stderr", on_stderr)):
        if callback is not None and not callable(callback):
            raise TypeError(
                f"{where}: {name} must be a function taking each line (bytes), "
                f"not {clip(repr(callback))}"
            )
    return cast(LineCallback | None, on_stdout), cast(LineCallback | None, on_stderr)


def _optional_seconds(
    value: object, name: str, where: object, *, allow_none: bool
) -> float | None:
    if value is None and allow_none:
        return None
    return validate.seconds(value, _Named(where, name))


def _max_output(value: object, where: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{where}: max_output must be an int or None, not {clip(repr(value))}"
        )
    if value < 1:
        raise ValueError(f"{where}: max_output must be >= 1 byte, not {value!r}")
    return value


class _Where:
    """``procwork.run('cmd arg')`` for error messages, formatted only if needed."""

    __slots__ = ("_args", "_func")

    def __init__(self, func: str, args: object) -> None:
        self._func = func
        self._args = args

    def __str__(self) -> str:
        return f"procwork.{self._func}({_show(self._args)})"


class _Named:
    """``procwork.run('cmd arg'): grace`` for error messages, formatted only
    if needed (every run checks its grace; formatting costs more)."""

    __slots__ = ("_name", "_where")

    def __init__(self, where: object, name: str) -> None:
        self._where = where
        self._name = name

    def __str__(self) -> str:
        return f"{self._where}: {self._name}"


def _show(args: object) -> str:
    """The command for a message: quoted, and cut if it is long.

    A command can be megabytes long (a generated argument list); its message
    must stay readable, so it says how long the command was instead.
    """
    if isinstance(args, tuple | list) and all(
        isinstance(a, str | bytes | os.PathLike) for a in args
    ):
        return clip_command(shlex.join(os.fsdecode(a) for a in args), len(args))
    return clip(repr(args))
