"""The keywords procwork.run and procwork.spawn share with subprocess.run.

``text``/``encoding``/``errors`` (output decoded as subprocess decodes it),
``umask``, ``pass_fds`` and ``start_new_session``: checked here, with
messages naming the command and the keyword, so that ``_api`` stays about
procwork's own arguments. The differences that remain are the table in
``specs/procwork.md``.
"""

from __future__ import annotations

import codecs
import dataclasses
import grp
import locale
import os
import pwd
from collections.abc import Sequence

from procwork._result import Result
from procwork._validate import clip

__all__ = [
    "Identity",
    "TextMode",
    "identity",
    "pass_fds",
    "refuse_over_ssh",
    "session",
    "text_mode",
    "umask",
]


@dataclasses.dataclass(frozen=True)
class TextMode:
    """How a text-mode run's output is decoded and its input encoded."""

    encoding: str
    errors: str

    def encode(self, data: object, where: object) -> bytes:
        """``input`` of a text-mode run: a str, encoded."""
        if not isinstance(data, str):
            raise TypeError(
                f"{where}: input must be str in text mode (text=, encoding= "
                f"or errors= given), not {type(data).__name__}"
            )
        return data.encode(self.encoding, self.errors)

    def decode_result(self, result: Result) -> Result[str]:
        """The Result with stdout and stderr decoded, newlines translated.

        As :mod:`subprocess` in text mode: ``\\r\\n`` and ``\\r`` become
        ``\\n``. When ``max_output`` cut the front of a stream, the cut may
        fall inside a multi-byte character: its leftover bytes are dropped
        (at most 3) rather than failing the run.
        """
        return Result[str](
            **{
                **{f.name: getattr(result, f.name) for f in dataclasses.fields(result)},
                "stdout": self._decode(result.stdout, result.truncated),
                "stderr": self._decode(result.stderr, result.truncated),
            }
        )

    def _decode(self, data: bytes, truncated: bool) -> str:
        for _ in range(3 if truncated else 0):
            try:
                return self._translate(data)
            except UnicodeDecodeError as e:
                if e.start != 0:
                    raise
                data = data[1:]
        return self._translate(data)

    def _translate(self, data: bytes) -> str:
        text = data.decode(self.encoding, self.errors)
        return text.replace("\r\n", "\n").replace("\r", "\n")


def text_mode(
    text: object, encoding: object, errors: object, where: object
) -> TextMode | None:
    """The text mode ``text``/``encoding``/``errors`` ask for; None: bytes.

    As for :func:`subprocess.run`, any of the three turns it on; the
    encoding defaults to the locale's, the errors to ``"strict"``. An
    unknown codec or error handler is a :class:`LookupError` naming it, now
    rather than when the output comes.
    """
    if not isinstance(text, bool):
        raise TypeError(f"{where}: text must be True or False, not {clip(repr(text))}")
    for name, value in (("encoding", encoding), ("errors", errors)):
        if value is not None and not isinstance(value, str):
            raise TypeError(
                f"{where}: {name} must be a str or None, not {clip(repr(value))}"
            )
    if not text and encoding is None and errors is None:
        return None
    assert encoding is None or isinstance(encoding, str)  # checked above
    assert errors is None or isinstance(errors, str)
    chosen = encoding or locale.getpreferredencoding(False)
    try:
        codecs.lookup(chosen)
    except LookupError:
        raise LookupError(f"{where}: unknown encoding {chosen!r}") from None
    try:
        codecs.lookup_error(errors or "strict")
    except LookupError:
        raise LookupError(f"{where}: unknown error handler {errors!r}") from None
    return TextMode(chosen, errors or "strict")


def umask(value: object, where: object) -> int:
    """``umask``: -1 (ours, the default) or a mask from 0 to 0o777."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{where}: umask must be an int (like 0o022), not {clip(repr(value))}"
        )
    if value != -1 and not 0 <= value <= 0o777:
        raise ValueError(
            f"{where}: umask must be from 0 to 0o777 (or -1 for ours), not {value!r}"
        )
    return value


def pass_fds(value: object, where: object) -> tuple[int, ...]:
    """``pass_fds``: open descriptors the child keeps, at the same numbers.

    0, 1 and 2 are the child's stdin, stdout and stderr, which procwork
    sets; a descriptor that is not open is refused now (subprocess would
    fail in the child, with a less clear message).
    """
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | set):
        raise TypeError(
            f"{where}: pass_fds must be a sequence of descriptors, "
            f"not {clip(repr(value))}"
        )
    fds: list[int] = []
    for fd in value:
        if isinstance(fd, bool) or not isinstance(fd, int):
            raise TypeError(f"{where}: pass_fds holds {clip(repr(fd))}, not an int")
        if fd <= 2:
            raise ValueError(
                f"{where}: pass_fds cannot hold {fd}: descriptors 0, 1 and 2 are "
                "the child's stdin, stdout and stderr, which procwork sets "
                "(capture=False passes ours)"
            )
        try:
            os.fstat(fd)
        except OSError as e:
            raise ValueError(
                f"{where}: pass_fds holds {fd}, which is not an open descriptor "
                f"({e.strerror})"
            ) from None
        fds.append(fd)
    return tuple(sorted(set(fds)))


def session(value: object, where: object) -> None:
    """``start_new_session``: True, the one thing procwork does."""
    if value is True:
        return
    raise ValueError(
        f"{where}: start_new_session must be True, not {clip(repr(value))}: "
        "procwork always starts the child in a new session, as the leader of "
        "its own process group, which is how a timeout or cancel kills its "
        "whole tree; to let what the child leaves behind live on, pass "
        "kill_leftovers=False, or use subprocess to keep it in ours"
    )


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who the child runs as: ids, None for ours (as Popen takes them)."""

    user: int | None = None
    group: int | None = None
    extra_groups: tuple[int, ...] | None = None


def identity(
    user: object, group: object, extra_groups: object, where: object
) -> Identity:
    """``user``, ``group``, ``extra_groups``: names or ids, looked up now.

    A name that does not exist is a ValueError naming it here, before
    anything starts (subprocess raises a bare KeyError). Only root may give
    another user or group: otherwise the run fails to start, with a
    :class:`~procwork.SpawnError` (``EPERM``), as subprocess fails.
    """
    if extra_groups is None:
        extras = None
    elif isinstance(extra_groups, str | bytes) or not isinstance(
        extra_groups, Sequence | set
    ):
        raise TypeError(
            f"{where}: extra_groups must be a sequence of group names or ids, "
            f"not {clip(repr(extra_groups))}"
        )
    else:
        extras = tuple(_id("extra_groups", g, where) for g in extra_groups)
    return Identity(
        None if user is None else _id("user", user, where),
        None if group is None else _id("group", group, where),
        extras,
    )


def _id(kind: str, value: object, where: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value and "\0" not in value:
        try:
            if kind == "user":
                return pwd.getpwnam(value).pw_uid
            return grp.getgrnam(value).gr_gid
        except KeyError:
            what = "user" if kind == "user" else "group"
            raise ValueError(f"{where}: {kind}: no {what} named {value!r}") from None
    raise TypeError(
        f"{where}: {kind} must be a name or an id >= 0, not {clip(repr(value))}"
    )


def refuse_over_ssh(
    umask: int, pass_fds: tuple[int, ...], who: Identity, where: object
) -> None:
    """``umask``, ``pass_fds``, ``user``... are about a process of this
    machine: they have no meaning on another host."""
    for name, unset in (
        ("umask", umask == -1),
        ("pass_fds", not pass_fds),
        ("user", who.user is None),
        ("group", who.group is None),
        ("extra_groups", who.extra_groups is None),
    ):
        if not unset:
            raise ValueError(
                f"{where}: {name} cannot be used with host=: it sets up a "
                "process of this machine (do it on the host instead: log in "
                "as that user, or 'umask 022; ...' with shell=True)"
            )
