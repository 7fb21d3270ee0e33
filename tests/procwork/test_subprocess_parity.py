"""procwork.run and spawn where subprocess.run has the same keyword.

``['']`` fails as subprocess fails; ``text``/``encoding``/``errors`` give the
str output subprocess gives (compared with subprocess itself, on the same
child); ``umask`` and ``pass_fds`` work; ``start_new_session`` is True or
refused saying why. The differences that remain are the table in
``specs/procwork.md``. Real processes, every wait bounded.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
from collections.abc import Iterator

import pytest

import procwork
from procwork import NotExecutable, ProcessFailed, ProcworkError, Result
from tests.support import ROOT, program, wait

# These tests are not about load: a busy test machine must not queue them.
pytestmark = pytest.mark.usefixtures("no_load_gate")

# A child writing CRLF, a lone CR and a non-ASCII letter to both streams.
MIXED = ["sh", "-c", r"printf 'a\r\nb\rc\303\251\n'; printf 'e\r\n' >&2"]


def test_an_empty_program_name_fails_as_subprocess_fails_with_a_PermissionError() -> (
    None
):
    """``run([''])`` fails with NotExecutable, a PermissionError (as
    ``subprocess.run([''])``) and a ProcworkError, whose message says the
    program's name is empty."""
    with pytest.raises(PermissionError):
        subprocess.run([""], timeout=30)
    with pytest.raises(NotExecutable) as caught:
        wait(procwork.run([""]))
    assert isinstance(caught.value, PermissionError)
    assert isinstance(caught.value, ProcworkError)
    assert "cannot run" in str(caught.value)
    assert "the program's name is empty ('')" in str(caught.value)
    with pytest.raises(NotExecutable):
        wait(procwork.spawn(["", "arg"]).wait())


def test_text_true_gives_the_str_output_subprocess_gives() -> None:
    """With ``text=True`` stdout and stderr are str, decoded with the
    locale's encoding, ``\\r\\n`` and ``\\r`` read as ``\\n``: the same
    strings as ``subprocess.run(..., text=True)``."""
    expected = subprocess.run(MIXED, capture_output=True, text=True, timeout=30)
    result: Result[str] = wait(procwork.run(MIXED, text=True))
    assert (result.stdout, result.stderr) == (expected.stdout, expected.stderr)
    assert result.stdout == "a\nb\nc\u00e9\n"


@pytest.mark.parametrize(
    ("encoding", "errors"),
    [("latin-1", None), ("ascii", "replace"), (None, "backslashreplace")],
)
def test_encoding_and_errors_decode_as_subprocess_decodes(
    encoding: str | None, errors: str | None
) -> None:
    """``encoding=`` or ``errors=`` alone turns text mode on, as for
    subprocess, and decodes the same way."""
    expected = subprocess.run(
        MIXED, capture_output=True, encoding=encoding, errors=errors, timeout=30
    )
    result = wait(procwork.run(MIXED, encoding=encoding, errors=errors))
    assert (result.stdout, result.stderr) == (expected.stdout, expected.stderr)
    assert isinstance(result.stdout, str)


def test_without_text_mode_the_output_stays_bytes() -> None:
    result: Result[bytes] = wait(procwork.run(MIXED))
    assert result.stdout == b"a\r\nb\rc\xc3\xa9\n"


def test_in_text_mode_input_is_a_str_encoded_with_the_encoding() -> None:
    """``input`` is a str, encoded as the output is decoded: one latin-1
    byte for ``é``."""
    result = wait(procwork.run(["wc", "-c"], input="\u00e9", encoding="latin-1"))
    assert result.stdout.strip() == "1"
    with pytest.raises(TypeError, match=r"input must be str in text mode"):
        procwork.run(["cat"], input=b"bytes", text=True)


def test_a_failed_text_run_carries_its_str_output_in_ProcessFailed() -> None:
    """As ``CalledProcessError`` from ``subprocess.run(text=True,
    check=True)``, its result's output is str."""
    with pytest.raises(ProcessFailed) as caught:
        wait(procwork.run(["sh", "-c", "echo no >&2; exit 3"], text=True, check=True))
    assert caught.value.result.stderr == "no\n"
    assert caught.value.stderr == "no\n"


def test_output_that_does_not_decode_fails_the_run_with_UnicodeDecodeError() -> None:
    """As subprocess does, with ``errors="strict"`` (the default)."""
    command = ["printf", r"\377"]
    with pytest.raises(UnicodeDecodeError):
        subprocess.run(command, capture_output=True, encoding="utf-8", timeout=30)
    with pytest.raises(UnicodeDecodeError):
        wait(procwork.run(command, encoding="utf-8"))


def test_a_multibyte_character_cut_by_max_output_is_dropped_not_an_error() -> None:
    """``max_output`` keeps the tail; when its cut falls inside a UTF-8
    character, the character's leftover bytes are dropped."""
    command = ["sh", "-c", r"for i in 1 2 3 4 5; do printf '\303\251'; done"]
    result = wait(procwork.run(command, encoding="utf-8", max_output=5))
    assert result.truncated
    assert result.stdout == "\u00e9\u00e9"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"encoding": "no-such-codec"}, r"unknown encoding 'no-such-codec'"),
        ({"errors": "no-such-handler"}, r"unknown error handler 'no-such-handler'"),
    ],
)
def test_an_unknown_encoding_or_error_handler_is_a_LookupError_naming_it(
    kwargs: dict[str, str], message: str
) -> None:
    """Refused before anything starts, not when the output comes."""
    with pytest.raises(LookupError, match=rf"^procwork.run\('true'\): {message}$"):
        procwork.run(["true"], **kwargs)  # type: ignore[call-overload]


# -- umask ---------------------------------------------------------------------


def test_umask_is_the_childs_umask() -> None:
    for umask, said in ((0o027, "0027"), (0o777, "0777"), (0, "0000")):
        result = wait(procwork.run(["sh", "-c", "umask"], umask=umask))
        assert result.stdout.decode().strip() == said
    process = procwork.spawn(["sh", "-c", "umask"], umask=0o077)
    assert wait(process.wait()).stdout == b"0077\n"


@pytest.mark.parametrize(
    ("umask", "error", "message"),
    [
        (0o1000, ValueError, r"umask must be from 0 to 0o777 \(or -1 for ours\)"),
        ("022", TypeError, r"umask must be an int \(like 0o022\), not '022'"),
    ],
)
def test_a_umask_out_of_range_or_not_an_int_is_refused(
    umask: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        procwork.run(["true"], umask=umask)  # type: ignore[call-overload]


# -- pass_fds -------------------------------------------------------------------


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """A pipe: (read end, write end), both closed after the test."""
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):  # the test may have closed it
            os.close(fd)


def test_pass_fds_keeps_those_descriptors_open_in_the_child(
    pipe: tuple[int, int],
) -> None:
    """A descriptor in ``pass_fds`` is open in the child at the same number
    (the child writes to our pipe through it); one not in it is closed."""
    r, w = pipe
    command = ["sh", "-c", f"echo through >/dev/fd/{w}"]
    assert wait(procwork.run(command, pass_fds=[w])).ok
    os.close(w)
    with os.fdopen(r, "rb") as reader:
        assert reader.read() == b"through\n"
    # Without pass_fds, descriptors other than 0, 1 and 2 are closed.
    r2, w2 = os.pipe()
    try:
        result = wait(procwork.run(["sh", "-c", f"echo lost >/dev/fd/{w2}"]))
        assert not result.ok
    finally:
        os.close(r2)
        os.close(w2)


def test_spawn_takes_pass_fds_too(pipe: tuple[int, int]) -> None:
    r, w = pipe
    process = procwork.spawn(["sh", "-c", f"echo spawned >/dev/fd/{w}"], pass_fds=(w,))
    assert wait(process.wait()).ok
    os.close(w)
    assert os.read(r, 100) == b"spawned\n"


def test_pass_fds_refuses_stdio_and_closed_descriptors_naming_them(
    pipe: tuple[int, int],
) -> None:
    r, w = pipe
    with pytest.raises(ValueError, match=r"pass_fds cannot hold 1: descriptors 0, 1"):
        procwork.run(["true"], pass_fds=[1])
    os.close(w)
    with pytest.raises(ValueError, match=rf"pass_fds holds {w}, which is not an open"):
        procwork.run(["true"], pass_fds=[w])
    with pytest.raises(TypeError, match=r"pass_fds must be a sequence of descriptors"):
        procwork.run(["true"], pass_fds=r)  # type: ignore[call-overload]


@pytest.mark.parametrize(
    "kwargs", [{"umask": 0o022}, {"pass_fds": "pipe"}, {"user": 0}, {"group": 0}]
)
def test_umask_pass_fds_user_and_group_are_refused_with_host_before_connecting(
    kwargs: dict[str, object], pipe: tuple[int, int]
) -> None:
    name = next(iter(kwargs))
    if kwargs.get("pass_fds") == "pipe":
        kwargs = {"pass_fds": [pipe[1]]}
    with pytest.raises(ValueError, match=rf"{name} cannot be used with host="):
        procwork.run(["true"], host="nobody@192.0.2.1", **kwargs)  # type: ignore[call-overload]


# -- user, group, extra_groups ------------------------------------------------------

ROOT_ONLY = pytest.mark.skipif(
    os.geteuid() != 0, reason="running a child as another user needs root"
)


@ROOT_ONLY
def test_user_group_and_extra_groups_are_who_the_child_runs_as() -> None:
    """Names or ids, as for subprocess: the child's ``id`` says them."""
    nobody = pwd.getpwnam("nobody")
    command = ["sh", "-c", "id -u; id -g; id -G"]
    for user, group in (("nobody", nobody.pw_gid), (nobody.pw_uid, nobody.pw_gid)):
        result = wait(
            procwork.run(command, user=user, group=group, extra_groups=[0, "root"])
        )
        uid, gid, groups = result.stdout.decode().splitlines()
        assert (int(uid), int(gid)) == (nobody.pw_uid, nobody.pw_gid)
        assert set(groups.split()) == {str(nobody.pw_gid), "0"}
    process = procwork.spawn(["id", "-u"], user=nobody.pw_uid)
    assert wait(process.wait()).stdout.decode().strip() == str(nobody.pw_uid)


@pytest.mark.slow
def test_without_root_another_user_fails_to_start_as_subprocess_fails() -> None:
    """In a program run as nobody (dropped to from root, as the tests run in
    CI) or as the non-root user running the tests, asking for root fails
    with both."""
    done = subprocess.run(
        program("as_another_user"), cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "subprocess: PermissionError", done.stdout + done.stderr
    assert lines[1].startswith("procwork: SpawnError: "), done.stdout + done.stderr


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"user": "no-such-user-x"},
            ValueError,
            r"user: no user named 'no-such-user-x'",
        ),
        (
            {"group": "no-such-grp-x"},
            ValueError,
            r"group: no group named 'no-such-grp-x'",
        ),
        ({"extra_groups": ["no-such-grp-x"]}, ValueError, r"extra_groups: no group"),
        ({"user": -1}, TypeError, r"user must be a name or an id >= 0, not -1"),
        ({"extra_groups": "wheel"}, TypeError, r"extra_groups must be a sequence"),
    ],
)
def test_an_unknown_user_or_group_is_refused_naming_it_before_anything_starts(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        procwork.run(["true"], **kwargs)  # type: ignore[call-overload]


# -- start_new_session ------------------------------------------------------------


def test_start_new_session_true_is_what_procwork_does_and_false_is_refused() -> None:
    """True is accepted (the child leads a new session, as always); False is
    a ValueError saying why procwork cannot, and what to use instead."""
    # Field 6 of /proc/PID/stat is the session id ("sh" has no space).
    command = ["sh", "-c", "cut -d' ' -f6 /proc/$$/stat; echo $$"]
    result = wait(procwork.run(command, start_new_session=True))
    sid, pid = result.stdout.split()
    assert sid == pid
    with pytest.raises(ValueError, match=r"start_new_session must be True") as caught:
        procwork.spawn(["true"], start_new_session=False)
    assert "kill_leftovers=False" in str(caught.value)
    assert "use subprocess" in str(caught.value)
