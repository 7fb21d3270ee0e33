"""Errors: clear messages, and nothing left behind.

Each test name is a sentence of the specification. A command that cannot be
started fails its Deferred with :class:`procwork.SpawnError`; an unusable
argument raises ``ValueError``/``TypeError`` at the call. Either way no file
descriptor leaks and no child is left.
"""

from __future__ import annotations

import errno
import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import procwork
import untwisted
from procwork import CommandNotFound, NotExecutable, ProcworkError, SpawnError
from tests.support import (
    fd_table,
    my_children,
    no_load_limit,
    opened_since,
    run_program,
    wait,
)


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """Every test here must leave no fd open and no child behind."""
    with no_load_limit() as scheduler:
        # The reactor and its fds must exist before we count. (A run of "true"
        # alone may not start the reactor: it can end inside its own start.)
        untwisted.tick()
        wait(procwork.run(["true"]))
        fds, children = fd_table(), set(my_children())
        yield
        assert opened_since(fds) == {}, "a file descriptor leaked"
        assert set(my_children()) <= children, "a child was left behind"
        assert scheduler.running == 0 and scheduler.queued == 0


def spawn_error(args: Any, **kwargs: Any) -> SpawnError:
    """The SpawnError that ``procwork.run(args, **kwargs)`` fails with."""
    with pytest.raises(SpawnError) as caught:
        wait(procwork.run(args, **kwargs))
    return caught.value


# -- SpawnError ------------------------------------------------------------------------


def test_SpawnError_is_an_OSError_and_a_ProcworkError() -> None:
    assert issubclass(SpawnError, OSError)
    assert issubclass(SpawnError, ProcworkError)


def test_a_command_not_on_PATH_fails_with_SpawnError_naming_it_and_the_PATH() -> None:
    error = spawn_error(["no-such-command-xyz", "arg"], env={"PATH": "/bin:/usr/bin"})
    assert error.errno == errno.ENOENT
    assert str(error) == (
        "cannot run 'no-such-command-xyz arg': command 'no-such-command-xyz' "
        "not found on PATH (/bin:/usr/bin)"
    )


def test_a_program_path_that_does_not_exist_fails_with_SpawnError() -> None:
    with pytest.raises(
        SpawnError,
        match=r"^cannot run '/no/such/prog': '/no/such/prog' does not exist$",
    ):
        wait(procwork.run(["/no/such/prog"]))


def test_a_file_that_is_not_executable_fails_with_SpawnError(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)
    error = spawn_error([str(script)])
    assert error.errno == errno.EACCES
    assert str(error) == (
        f"cannot run '{script}': '{script}' is not executable (permission denied)"
    )


def test_a_directory_as_command_fails_with_SpawnError_saying_so(tmp_path: Path) -> None:
    error = spawn_error([str(tmp_path)])
    assert (
        str(error)
        == f"cannot run '{tmp_path}': '{tmp_path}' is a directory, not a program"
    )


def test_a_file_that_is_no_program_fails_with_SpawnError(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x7fELF but not really")
    junk.chmod(0o755)
    with pytest.raises(
        SpawnError, match=r"is not a program this system can run \(exec format error\)"
    ):
        wait(procwork.run([str(junk)]))


def test_a_working_directory_that_does_not_exist_fails_with_SpawnError() -> None:
    error = spawn_error(["ls"], cwd="/no/such/dir")
    assert error.errno == errno.ENOENT
    assert (
        str(error) == "cannot run 'ls': working directory '/no/such/dir' does not exist"
    )


def test_a_working_directory_that_is_a_file_fails_with_SpawnError(
    tmp_path: Path,
) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(
        SpawnError, match=r"working directory '.*/file' is not a directory"
    ):
        wait(procwork.run(["ls"], cwd=tmp_path / "file"))


def test_check_True_does_not_hide_a_SpawnError() -> None:
    with pytest.raises(SpawnError, match="not found on PATH"):
        wait(procwork.run(["no-such-command-xyz"], check=True))


def test_spawn_of_a_command_that_cannot_start_fails_its_wait() -> None:
    proc = procwork.spawn(["no-such-command-xyz"])
    with pytest.raises(SpawnError, match="not found on PATH"):
        wait(proc.wait())
    assert proc.pid is None and proc.result is None
    assert proc.state == "failed"
    assert wait(proc.readline()) == b""


def test_a_failed_start_frees_its_place_so_the_queue_moves_on() -> None:
    scheduler = procwork.Scheduler(max_running=1, load=procwork.NoLoadLimit())
    bad = [procwork.run(["no-such-command-xyz"], scheduler=scheduler) for _ in range(3)]
    good = procwork.run(["echo", "next"], scheduler=scheduler)
    for d in bad:
        with pytest.raises(SpawnError):
            wait(d)
    assert wait(good).stdout == b"next\n"


def test_runs_after_a_failed_start_work() -> None:
    spawn_error(["no-such-command-xyz"])
    assert wait(procwork.run(["echo", "fine"])).stdout == b"fine\n"


# -- the builtin each SpawnError also is ---------------------------------------------


def test_a_command_not_on_PATH_is_a_CommandNotFound_caught_as_FileNotFoundError() -> (
    None
):
    with pytest.raises(FileNotFoundError, match="not found on PATH") as caught:
        wait(procwork.run(["no-such-command-xyz"]))
    assert isinstance(caught.value, CommandNotFound)
    assert isinstance(caught.value, SpawnError)


def test_a_program_path_that_does_not_exist_is_a_CommandNotFound() -> None:
    assert isinstance(spawn_error(["/no/such/prog"]), CommandNotFound)


def test_a_script_whose_interpreter_is_missing_is_a_CommandNotFound_naming_it(
    tmp_path: Path,
) -> None:
    script = tmp_path / "script"
    script.write_text("#!/no/such/interpreter -x\necho hi\n")
    script.chmod(0o755)
    error = spawn_error([str(script)])
    assert isinstance(error, CommandNotFound)
    assert str(error) == (
        f"cannot run '{script}': '{script}' exists, but its interpreter "
        "'/no/such/interpreter' (its #! line) does not"
    )


def test_a_script_on_PATH_whose_interpreter_is_missing_is_not_said_to_be_missing(
    tmp_path: Path,
) -> None:
    (tmp_path / "tool").write_text("#!/no/such/interpreter\n")
    (tmp_path / "tool").chmod(0o755)
    error = spawn_error(["tool"], env={"PATH": str(tmp_path)})
    assert isinstance(error, CommandNotFound)
    assert str(error) == (
        "cannot run 'tool': 'tool' exists, but its interpreter "
        "'/no/such/interpreter' (its #! line) does not"
    )


def test_a_file_without_execute_permission_is_a_NotExecutable_caught_as_PermissionError(
    tmp_path: Path,
) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)
    with pytest.raises(PermissionError, match="is not executable") as caught:
        wait(procwork.run([str(script)]))
    assert isinstance(caught.value, NotExecutable)


def test_a_directory_as_command_is_a_NotExecutable(tmp_path: Path) -> None:
    assert isinstance(spawn_error([str(tmp_path)]), NotExecutable)


@pytest.mark.parametrize(
    "case", ["not on PATH", "no such path", "no permission", "a directory"]
)
def test_each_spawn_error_is_the_builtin_subprocess_raises_for_the_same_command(
    case: str, tmp_path: Path
) -> None:
    """Code written for subprocess keeps catching what it caught."""
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\n")
    argv = {
        "not on PATH": ["no-such-command-xyz"],
        "no such path": [str(tmp_path / "missing")],
        "no permission": [str(script)],
        "a directory": [str(tmp_path)],
    }[case]
    with pytest.raises(OSError) as by_subprocess:
        subprocess.run(argv, check=False)
    assert isinstance(spawn_error(argv), type(by_subprocess.value))


def test_other_spawn_errors_are_plain_SpawnErrors(tmp_path: Path) -> None:
    """A bad working directory or an exec format error is not about the
    program being missing or forbidden: neither subclass."""
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x7fELF but not really")
    junk.chmod(0o755)
    for error in (spawn_error([str(junk)]), spawn_error(["ls"], cwd="/no/such/dir")):
        assert type(error) is SpawnError


def test_the_new_error_classes_are_exported_under_procwork() -> None:
    assert {"CommandNotFound", "NotExecutable"} <= set(procwork.__all__)
    assert repr(CommandNotFound).endswith("'procwork.CommandNotFound'>")


# -- an argument list too long for exec ------------------------------------------------

# Over any system's limit: Linux takes at most 6 MB of arguments even with an
# unlimited stack. Each argument stays under the 128 KiB Linux allows one.
HUGE_ARGV = ["true", *(["x" * 100_000] * 160)]


def test_an_argument_list_too_long_is_a_SpawnError_cut_short_saying_how_long() -> None:
    error = spawn_error(HUGE_ARGV)
    assert error.errno == errno.E2BIG
    assert len(str(error)) < 600, "the message holds the whole command"
    assert re.fullmatch(
        r"cannot run 'true x{195}'\.\.\. \(161 arguments, 16000164 characters in "
        r"all\): the argument list is too long \(E2BIG: 161 arguments of 16000165 "
        r"bytes and an environment of \d+ bytes; the system takes about \d+ in "
        r"all\); pass large data on stdin \(input=\) or in a file instead",
        str(error),
    ), str(error)


def test_one_argument_over_the_linux_limit_is_named_in_the_E2BIG_message() -> None:
    error = spawn_error(["echo", "hi", "y" * 200_000])
    assert error.errno == errno.E2BIG
    assert str(error).endswith(
        "(3 arguments, 200008 characters in all): the argument list is too long "
        "(E2BIG: argument 2 alone is 200000 bytes, and Linux takes at most 131072 "
        "in one argument); pass large data on stdin (input=) or in a file instead"
    )


# -- unusable arguments: raised at the call --------------------------------------------


@pytest.mark.parametrize("args", [[], "", "   "])
def test_an_empty_command_is_a_ValueError(args: Any) -> None:
    with pytest.raises(ValueError, match=r"^empty command .*: nothing to run$"):
        procwork.run(args)


def test_a_NUL_byte_in_an_argument_is_a_ValueError_naming_the_argument() -> None:
    with pytest.raises(
        ValueError,
        match="^"
        + re.escape(
            """procwork.run("echo 'a\\x00b'"): argument 1 contains a NUL byte, """
            "which no process can receive"
        )
        + "$",
    ):
        procwork.run(["echo", "a\0b"])


def test_a_NUL_byte_in_the_environment_is_a_ValueError() -> None:
    with pytest.raises(
        ValueError, match=r"^procwork.run\('true'\): invalid environment variable 'X'"
    ):
        procwork.run(["true"], env={"X": "a\0b"})


def test_an_environment_of_non_strings_is_a_TypeError() -> None:
    with pytest.raises(TypeError, match=r"env entries must be str, got 'X': 1"):
        procwork.run(["true"], env={"X": 1})  # type: ignore[dict-item]


def test_an_argument_that_is_not_text_is_a_TypeError() -> None:
    with pytest.raises(
        TypeError,
        match=r"^procwork.run\(\['sleep', 1\]\): argument 1 is 1, but every "
        r"argument must be str, bytes or a path$",
    ):
        procwork.run(["sleep", 1])  # type: ignore[list-item]


@pytest.mark.parametrize("name", ["timeout", "grace"])
def test_a_negative_timeout_or_grace_is_a_ValueError(name: str) -> None:
    with pytest.raises(
        ValueError,
        match=rf"^procwork.run\('sleep 1'\): {name} must be a finite number >= 0, "
        r"not -1$",
    ):
        kwargs: dict[str, Any] = {name: -1}
        procwork.run(["sleep", "1"], **kwargs)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_timeout_that_is_not_finite_is_a_ValueError(value: float) -> None:
    with pytest.raises(ValueError, match=r"timeout must be a finite number >= 0"):
        procwork.run(["true"], timeout=value)


@pytest.mark.parametrize("value", ["5", True, [5]])
def test_a_non_numeric_timeout_is_a_TypeError(value: object) -> None:
    with pytest.raises(TypeError, match=r"timeout must be a number of seconds, not "):
        procwork.run(["true"], timeout=value)  # type: ignore[call-overload]


def test_an_unknown_priority_is_a_ValueError_listing_the_priorities() -> None:
    with pytest.raises(
        ValueError,
        match=r"^unknown priority 'urgent' for procwork.run\('true'\); "
        r"use one of critical, high, normal, low$",
    ):
        procwork.run(["true"], priority="urgent")


def test_text_input_outside_text_mode_is_a_TypeError_saying_what_to_do() -> None:
    with pytest.raises(
        TypeError,
        match=r"^procwork.run\('cat'\): input must be bytes, not str "
        r"\(encode text first, or pass text=True\)$",
    ):
        procwork.run(["cat"], input="text")


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (0, ValueError, r"max_output must be >= 1 byte, not 0"),
        ("1k", TypeError, r"max_output must be an int or None, not '1k'"),
    ],
)
def test_an_unusable_max_output_is_refused(
    value: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        procwork.run(["true"], max_output=value)  # type: ignore[call-overload]


def test_spawn_checks_its_arguments_the_same_way() -> None:
    with pytest.raises(
        ValueError, match=r"^unknown priority 'urgent' for procwork.spawn"
    ):
        procwork.spawn(["true"], priority="urgent")
    with pytest.raises(ValueError, match=r"timeout must be a finite number >= 0"):
        procwork.spawn(["true"], timeout=-1)


def _bad(
    args: object, kwargs: dict[str, Any], error: type[Exception], message: str, id: str
) -> Any:
    return pytest.param(args, kwargs, error, message, id=id)


# Each: a call, the error it raises and its whole message, which names the call
# (procwork.run or procwork.spawn), the command and the argument.
BAD_CALLS = [
    _bad(
        ["true"],
        {"env": ["PATH=/bin"]},
        TypeError,
        r"env must be a mapping of names to values \(a dict such as "
        r"\{'PATH': '/usr/bin'\}\), not list",
        "env-list",
    ),
    _bad(
        ["true"],
        {"env": "PATH=/bin"},
        TypeError,
        r"env must be a mapping of names to values .*, not str",
        "env-str",
    ),
    _bad(
        ["true"],
        {"env": {"A=B": "1"}},
        ValueError,
        r"invalid environment variable 'A=B' \(a name must be non-empty and "
        r"hold no '=' or NUL, a value no NUL\)",
        "env-name",
    ),
    _bad(
        ["true"],
        {"cwd": 5},
        TypeError,
        r"cwd must be a path \(str, bytes or os.PathLike\), not 5",
        "cwd-int",
    ),
    _bad(
        ["true"],
        {"cwd": "/tmp\0x"},
        ValueError,
        r"cwd '/tmp\\x00x' is not a usable directory name",
        "cwd-NUL",
    ),
    _bad(
        ["true"],
        {"cwd": ""},
        ValueError,
        r"cwd '' is not a usable directory name",
        "cwd-empty",
    ),
    _bad(
        ["true"],
        {"scheduler": 5},
        TypeError,
        r"scheduler must be a procwork.Scheduler, not 5",
        "scheduler-int",
    ),
    _bad(
        ["true"],
        {"priority": 1},
        TypeError,
        r"priority must be one of 'critical', 'high', 'normal', 'low', not 1",
        "priority-int",
    ),
    _bad(
        ["true"],
        {"grace": float("nan")},
        ValueError,
        r"grace must be a finite number >= 0, not nan",
        "grace-NaN",
    ),
    _bad(
        ["true"],
        {"grace": True},
        TypeError,
        r"grace must be a number of seconds, not True",
        "grace-bool",
    ),
    _bad(
        ["true"],
        {"timeout": float("-inf")},
        ValueError,
        r"timeout must be a finite number >= 0, not -inf",
        "timeout-minus-inf",
    ),
    _bad(
        ["true"],
        {"max_output": True},
        TypeError,
        r"max_output must be an int or None, not True",
        "max_output-bool",
    ),
    _bad(
        ["true"],
        {"max_output": -5},
        ValueError,
        r"max_output must be >= 1 byte, not -5",
        "max_output-negative",
    ),
    _bad(
        ["true"],
        {"shell": "yes"},
        TypeError,
        r"shell must be True or False, not 'yes'",
        "shell-str",
    ),
    _bad(
        ["true"],
        {"kill_leftovers": None},
        TypeError,
        r"kill_leftovers must be True or False, not None",
        "kill_leftovers-None",
    ),
    _bad(
        ["true"],
        {"shell": True},
        TypeError,
        r"shell=True takes the command as one string, not list",
        "shell-list",
    ),
]
BAD_COMMANDS = [
    _bad(
        {"echo": 1, "hi": 2},
        {},
        TypeError,
        r"the command must be a string or a list of arguments \(str, bytes or "
        r"paths\), not dict",
        "dict",
    ),
    _bad(
        {"echo"},
        {},
        TypeError,
        r"the command must be a string or a list of arguments .*, not set",
        "set",
    ),
    _bad(
        None,
        {},
        TypeError,
        r"the command must be a string or a list of arguments .*, not NoneType",
        "None",
    ),
    _bad(
        ["echo", None],
        {},
        TypeError,
        r"argument 1 is None, but every argument must be str, bytes or a path",
        "None-argument",
    ),
]


@pytest.mark.parametrize(("args", "kwargs", "error", "message"), BAD_CALLS)
@pytest.mark.parametrize("func", ["run", "spawn"])
def test_an_unusable_argument_raises_at_the_call_naming_it_and_starts_nothing(
    func: str, args: Any, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    scheduler = procwork.scheduler()
    reactor: Any = scheduler.reactor  # the global one: it lists its delayed calls
    started, timers = scheduler.started, len(reactor.getDelayedCalls())
    with pytest.raises(error, match=rf"^procwork.{func}\('true'\): {message}$"):
        getattr(procwork, func)(args, **kwargs)
    assert scheduler.started == started
    assert len(reactor.getDelayedCalls()) == timers


@pytest.mark.parametrize(("args", "kwargs", "error", "message"), BAD_COMMANDS)
def test_a_command_that_is_no_list_of_text_is_a_TypeError(
    args: Any, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """A dict would run its keys, a set its items in any order: refused."""
    with pytest.raises(error, match=rf"^procwork.run\(.*\): {message}$"):
        procwork.run(args, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"check": "no"}, r"check must be True or False, not 'no'"),
        (
            {"input": 5},
            r"input must be bytes, not int \(encode text first, or pass text=True\)",
        ),
    ],
)
def test_run_checks_its_own_arguments_the_same_way(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(TypeError, match=rf"^procwork.run\('cat'\): {message}$"):
        procwork.run(["cat"], **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stdin": None}, r"stdin must be True or False, not None"),
        ({"capture": 1}, r"capture must be True or False, not 1"),
        (
            {"on_stdout": b"x"},
            r"on_stdout must be a function taking each line \(bytes\), not b'x'",
        ),
        (
            {"on_stderr": "print"},
            r"on_stderr must be a function taking each line \(bytes\), not 'print'",
        ),
    ],
)
def test_spawn_checks_its_own_arguments_the_same_way(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(TypeError, match=rf"^procwork.spawn\('cat'\): {message}$"):
        procwork.spawn(["cat"], **kwargs)


def test_a_huge_command_is_cut_short_in_an_argument_error() -> None:
    with pytest.raises(TypeError) as caught:
        procwork.run(["true", "x" * 4_000_000], env="A=1")  # type: ignore[call-overload]
    message = str(caught.value)
    assert len(message) < 500
    assert message.startswith("procwork.run('true xxxxxxxx")
    assert "'... (2 arguments, 4000005 characters in all)): env must be" in message


# -- out of file descriptors: in a child Python ----------------------------------------


@pytest.mark.slow
def test_out_of_file_descriptors_fails_that_run_clearly_and_later_runs_work() -> None:
    child = run_program("descriptors", "out-of-descriptors")
    assert child.returncode == 0, child.stderr
    assert child.stdout.splitlines() == [
        f"errno {errno.EMFILE}",
        "cannot run 'echo hi': out of file descriptors (each run needs 3 pipes); "
        "raise the limit (ulimit -n) or run fewer at once (lower max_running)",
        "leaked []",
        "after hi",
    ]
