"""Value checks shared by the API, the scheduler and the config specs.

One function per kind of value, so that a number of seconds is checked, and
its error worded, the same way wherever it is given.

- :func:`seconds` checks an argument of the API (``procwork.run(...,
  timeout=)``): the caller says what the value is (``what``, which starts
  the message) and which error to raise.
- The rest are the converters and validators of the config specs
  (``ServiceSpec``, ``CheckSpec``, ``Rule``, ``AlertSpec``, the monitor's
  config), declared with attrs (see :mod:`procwork._fields`). A converter
  takes what a TOML file or a caller gives (``"5s"``, a list) and returns
  the value kept (``5.0``, a tuple); a validator judges the kept value. Both
  raise :class:`Invalid` with the problem alone (``"must be a whole number
  >= 1, not 0"``): the spec class adds the key and the entry, and the
  config loader the file.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import signal
from collections.abc import Callable, Collection, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from procwork._errors import ConfigError
from procwork._format import clip
from procwork._remote._target import parse_host

__all__ = [
    "MIN_INTERVAL",
    "Invalid",
    "at_least",
    "boolean",
    "clip",
    "command",
    "duration",
    "environment",
    "exit_codes",
    "host",
    "http_address",
    "interval",
    "interval_or_zero",
    "mail_address",
    "mail_addresses",
    "names",
    "non_negative",
    "number",
    "one_of",
    "optional",
    "optional_duration",
    "optional_size",
    "path",
    "pattern",
    "pids",
    "positive",
    "seconds",
    "service_name",
    "signal_number",
    "size",
    "smtp_address",
    "stop_signal",
    "text",
    "umask",
    "url",
    "user_or_group",
    "whole",
]

#: The shortest interval a check or a rule scan may have: anything shorter
#: is a busy loop, not a schedule.
MIN_INTERVAL = 0.01


def seconds(
    value: object,
    what: object,
    *,
    error: type[Exception] | None = None,
    positive: bool = False,
    minimum: float = 0.0,
) -> float:
    """A duration argument of the API: a finite number of seconds, >= 0
    (> 0 if ``positive``).

    Args:
        value: What was given (a bool is not a number here).
        what: What it is, for the message (``"procwork.run('make'): timeout"``);
            any object whose ``str()`` says it, formatted only for an error.
        error: The error to raise; default ``TypeError`` for a value that is
            no number and ``ValueError`` for one out of range.
        positive: Zero is refused too.
        minimum: A value other than zero must be at least this (an interval
            shorter than that is a busy loop).

    Returns:
        The value as a float.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise (error or TypeError)(
            f"{what} must be a number of seconds, not {clip(repr(value))}"
        )
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise (error or ValueError)(
            f"{what} must be a finite number {bound}, not {value!r}"
        )
    if 0 < value < minimum:
        raise (error or ValueError)(
            f"{what} must be at least {minimum:g} s (a shorter interval is a "
            f"busy loop), not {value!r}"
        )
    return float(value)


def signal_number(signum: int | str) -> int:
    """A signal given by number or name (``"SIGTERM"``, ``"term"``).

    Raises:
        ValueError: no signal has that name.
    """
    if isinstance(signum, str):
        name = signum.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        try:
            return int(signal.Signals[name])
        except KeyError:
            raise ValueError(f"unknown signal {signum!r}") from None
    return int(signum)


# -- config values -------------------------------------------------------------


class Invalid(ConfigError):
    """A config value is wrong; ``problem`` says how (``"must be ..., not 'x'"``).

    Raised by the converters and validators here; the spec class whose field
    it was adds the key and the entry (:mod:`procwork._fields`). It is a
    :class:`~procwork.ConfigError` in case it is ever raised alone.

    Attributes:
        problem: What is wrong, without the key.
        key: The key, once known (set by the field that raised it).
    """

    def __init__(self, problem: str, key: str | None = None) -> None:
        super().__init__(problem if key is None else f"{key} {problem}")
        self.problem = problem
        self.key = key


def _shown(value: object) -> str:
    """``value`` for a message: ``0``, not ``0.0``, for what was maybe ``0``."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return repr(int(value))
    return clip(repr(value))


Validator = Callable[[Any, Any, Any], None]
"""An attrs validator: ``(instance, attribute, value)``, raising :class:`Invalid`."""


def optional(*validators: Validator) -> Validator:
    """``validators`` for a value that may also be None (for none)."""

    def check(instance: Any, attribute: Any, value: Any) -> None:
        if value is not None:
            for validator in validators:
                validator(instance, attribute, value)

    return check


# -- numbers ---------------------------------------------------------------------

_DURATION = re.compile(r"(?:\s*(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?:ms|s|m|h|d))+\s*")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_FORMS = (
    "a number of seconds or a duration like '500ms', '5s', '1.5s', '2m', '1h', "
    "'1d' or '1m30s'"
)


def duration(value: object) -> float:
    """Seconds: a number, or a string with units (``"500ms"``, ``"5s"``,
    ``"2m"``, ``"1h"``, ``"1d"``; fractions, ``"1.5s"``; combined,
    ``"1h30m"``). A string of digits alone is refused: it says no unit."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and _DURATION.fullmatch(value):
        return sum(
            float(number) * _UNIT_SECONDS[unit]
            for number, unit in _DURATION_PART.findall(value)
        )
    raise Invalid(f"must be {DURATION_FORMS}, not {_shown(value)}")


def optional_duration(value: object) -> float | None:
    """:func:`duration`, or None."""
    return None if value is None else duration(value)


_SIZE = re.compile(
    r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?:([KMGT])I?)?B?\s*", re.IGNORECASE
)
_UNIT_BYTES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
SIZE_FORMS = "a number of bytes or a size like '64K', '10M' or '1G' (K = 1024 bytes)"


def size(value: object) -> int:
    """Bytes: a whole number, or a string with a binary unit: ``"64K"`` is
    65536 bytes, ``"10M"``, ``"1G"``, ``"1T"`` (``"10MB"`` and ``"10MiB"``
    are the same; fractions, ``"1.5K"``, are rounded down to a byte)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if match is not None:
        number, unit = match.groups()
        try:
            return int(float(number) * _UNIT_BYTES[(unit or "").upper()])
        except OverflowError:  # a number of digits no float holds
            pass
    raise Invalid(f"must be {SIZE_FORMS}, not {_shown(value)}")


def optional_size(value: object) -> int | None:
    """:func:`size`, or None."""
    return None if value is None else size(value)


def number(value: object) -> float:
    """A number (a bool is none), as a float."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise Invalid(f"must be a number, not {_shown(value)}")


def _finite(value: float, *, zero: bool) -> None:
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        bound = ">= 0" if zero else "> 0"
        raise Invalid(f"must be a finite number {bound}, not {_shown(value)}")


def non_negative(instance: Any, attribute: Any, value: Any) -> None:
    """A finite number >= 0."""
    _finite(value, zero=True)


def positive(instance: Any, attribute: Any, value: Any) -> None:
    """A finite number > 0."""
    _finite(value, zero=False)


def interval(instance: Any, attribute: Any, value: Any) -> None:
    """Seconds between runs: > 0, and not so short it is a busy loop."""
    _finite(value, zero=False)
    _not_busy(value)


def interval_or_zero(instance: Any, attribute: Any, value: Any) -> None:
    """:func:`interval`, or 0 for never."""
    _finite(value, zero=True)
    _not_busy(value)


def _not_busy(value: float) -> None:
    if 0 < value < MIN_INTERVAL:
        raise Invalid(
            f"must be at least {MIN_INTERVAL:g} s (a shorter interval is a busy "
            f"loop), not {_shown(value)}"
        )


def at_least(minimum: float, why: str) -> Validator:
    """A number of seconds > 0 and at least ``minimum``, for the reason ``why``."""

    def check(instance: Any, attribute: Any, value: Any) -> None:
        _finite(value, zero=False)
        if value < minimum:
            raise Invalid(
                f"must be at least {minimum:g} s ({why}), not {_shown(value)}"
            )

    return check


def whole(minimum: int, maximum: int | None = None) -> Validator:
    """A whole number (not a bool) from ``minimum`` (to ``maximum``)."""
    bound = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"

    def check(instance: Any, attribute: Any, value: Any) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < minimum
            or (maximum is not None and value > maximum)
        ):
            raise Invalid(f"must be a whole number {bound}, not {_shown(value)}")

    return check


# -- words -------------------------------------------------------------------------


def boolean(instance: Any, attribute: Any, value: Any) -> None:
    """True or false, nothing else (not 1, not ``"yes"``)."""
    if not isinstance(value, bool):
        raise Invalid(f"must be true or false, not {_shown(value)}")


def one_of(choices: Collection[str]) -> Validator:
    """One of ``choices``, exactly."""
    allowed = ", ".join(repr(choice) for choice in choices)

    def check(instance: Any, attribute: Any, value: Any) -> None:
        if not isinstance(value, str) or value not in choices:
            raise Invalid(f"must be one of {allowed}, not {_shown(value)}")

    return check


def text(instance: Any, attribute: Any, value: Any) -> None:
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        raise Invalid(f"must be a non-empty string, not {_shown(value)}")


def service_name(instance: Any, attribute: Any, value: Any) -> None:
    """A name to show in a table and to type in a shell: printable, no spaces."""
    if not isinstance(value, str) or not value or not value.isprintable():
        raise Invalid(f"must be a non-empty printable string, not {_shown(value)}")
    if any(c.isspace() for c in value):
        raise Invalid(f"must have no spaces, not {_shown(value)}")


def names(value: object) -> tuple[str, ...]:
    """One name, or a list of names (each once, in order); None for none."""
    if value is None:
        return ()
    listed = (value,) if isinstance(value, str) else value
    if (
        not isinstance(listed, Sequence)
        or isinstance(listed, bytes | bytearray)
        or not all(isinstance(name, str) and name for name in listed)
    ):
        raise Invalid(f"must be a name or a list of names, not {_shown(value)}")
    return tuple(dict.fromkeys(listed))


def pattern(value: object) -> str:
    """A regular expression, checked now (not at its first use)."""
    if not isinstance(value, str) or not value:
        raise Invalid(f"must be a non-empty string, not {_shown(value)}")
    try:
        re.compile(value)
    except re.error as e:
        raise Invalid(f"is not a valid regular expression ({e})") from None
    return value


def url(instance: Any, attribute: Any, value: Any) -> None:
    """An ``http://`` or ``https://`` URL."""
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise Invalid(f"must be an http:// or https:// URL, not {_shown(value)}")


# -- commands, paths, environments -------------------------------------------------


def command(value: object) -> tuple[str, ...]:
    """A command from a config: a string split into words as a shell would
    (with :func:`shlex.split`; no shell runs it), or a list of strings.

    ``procwork.run`` takes more (bytes, paths, ``shell=True``) and checks
    its command in ``_api._argv``, with messages that show the call.

    Returns:
        The argv, at least one word, the first not empty.
    """
    if isinstance(value, str):
        try:
            argv = tuple(shlex.split(value))
        except ValueError as e:
            raise Invalid(
                f"{clip(repr(value))} cannot be split into words ({e})"
            ) from None
    elif (
        isinstance(value, Sequence)
        and not isinstance(value, bytes | bytearray)
        and all(isinstance(word, str) for word in value)
    ):
        argv = tuple(value)
    else:
        raise Invalid(f"must be a string or a list of strings, not {_shown(value)}")
    if not argv or not argv[0]:
        raise Invalid("is empty")
    if any("\0" in word for word in argv):
        raise Invalid(f"contains a NUL character, not {_shown(value)}")
    return argv


def path(value: object) -> str:
    """A file or directory name (a str, bytes or os.PathLike), as a str."""
    try:
        name = os.fsdecode(os.fspath(value))  # type: ignore[call-overload]
    except TypeError:
        raise Invalid(f"must be a path, not {_shown(value)}") from None
    if not name:
        raise Invalid("must not be empty (leave it out for the default)")
    if "\0" in name:
        raise Invalid(f"contains a NUL character, not {_shown(value)}")
    return name


def environment(value: object) -> Mapping[str, str]:
    """Environment variables: a table of names to strings, kept read-only."""
    if not isinstance(value, Mapping):
        raise Invalid(f"must be a table of names to strings, not {_shown(value)}")
    for key, item in value.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise Invalid(f"has {_shown(key)}, which is not a valid variable name")
        if not isinstance(item, str) or "\0" in item:
            raise Invalid(f"has {key} = {_shown(item)}, which is not a string")
    return MappingProxyType(dict(value))


# -- processes ---------------------------------------------------------------------


def stop_signal(value: object) -> signal.Signals:
    """A signal, by number or by name (``"SIGINT"``, ``"INT"``)."""
    try:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise TypeError
        return signal.Signals(signal_number(value))
    except (ValueError, TypeError):
        raise Invalid(
            f"must be a signal number or name like 'SIGTERM', not {_shown(value)}"
        ) from None


def exit_codes(value: object) -> frozenset[int]:
    """A list of exit codes, 0 to 255."""
    if isinstance(value, str | bytes) or not isinstance(value, Collection):
        raise Invalid(f"must be a list of codes, not {_shown(value)}")
    for code in value:
        if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 255:
            raise Invalid(f"must hold exit codes 0-255, not {_shown(code)}")
    return frozenset(value)


def pids(value: object) -> frozenset[int]:
    """A list (any collection) of process ids."""
    if isinstance(value, str | bytes) or not isinstance(value, Collection):
        raise Invalid(f"must be a list of pids, not {_shown(value)}")
    for pid in value:
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            raise Invalid(f"must hold positive pids, not {_shown(pid)}")
    return frozenset(value)


def umask(value: object) -> int:
    """A file mode creation mask: a number (``0o022``) or an octal string
    (``"022"``), 0 to 0o777."""
    mask: object = value
    if isinstance(value, str):
        try:
            mask = int(value, 8)
        except ValueError:
            mask = None
    if isinstance(mask, bool) or not isinstance(mask, int) or not 0 <= mask <= 0o777:
        raise Invalid(
            f"must be a mode from 0 to 0o777 (like 0o022 or '022'), not {_shown(value)}"
        )
    return mask


def user_or_group(instance: Any, attribute: Any, value: Any) -> None:
    """A user or group: a name, or an id (a number >= 0)."""
    if isinstance(value, bool) or not (
        (isinstance(value, str) and value and "\0" not in value)
        or (isinstance(value, int) and value >= 0)
    ):
        raise Invalid(f"must be a name or an id >= 0, not {_shown(value)}")


# -- the network ---------------------------------------------------------------------


def host(instance: Any, attribute: Any, value: Any) -> None:
    """An SSH target, ``"user@host:port"`` (user and port optional)."""
    if not isinstance(value, str) or not value:
        raise Invalid(f"must be a non-empty string, not {_shown(value)}")
    try:
        parse_host(value)
    except ValueError as e:
        # Its message starts with the key ("host 'a b': ..."), given again
        # by the field.
        raise Invalid(str(e).removeprefix("host ")) from None


def http_address(value: object) -> tuple[str, int] | None:
    """``"HOST:PORT"`` (``"[::1]:80"``; port 0: any free port), or a
    ``(host, port)`` pair, to ``(host, port)``; None for none."""
    if value is None:
        return None
    address: tuple[str, int] | None = None
    if isinstance(value, str):
        name, sep, port = value.rpartition(":")
        if sep and name and port.isascii() and port.isdigit():
            address = name.strip("[]"), int(port)
    elif isinstance(value, tuple) and len(value) == 2:
        name, port = value
        if isinstance(name, str) and name and type(port) is int:
            address = name, port
    if address is None or not 0 <= address[1] <= 65535:
        raise Invalid(
            f"must be HOST:PORT like 127.0.0.1:8642 (port 0: any free port), "
            f"not {_shown(value)}"
        )
    return address


# -- mail ------------------------------------------------------------------------------

# An address as SMTP carries it, ASCII (Twisted's client speaks no SMTPUTF8):
# a dot-atom local part (RFC 5321's, without the quoted form) and a domain
# of letters, digits and hyphens. No display name, no angle brackets: the
# header and the envelope are written from it.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_MAIL_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*")
_MAIL_FORM = "a mail address like 'ops@example.com'"


def mail_address(instance: Any, attribute: Any, value: Any) -> None:
    """One mail address, ``local@domain`` (ASCII, at most 254 characters)."""
    if (
        not isinstance(value, str)
        or len(value) > 254
        or not _MAIL_ADDRESS.fullmatch(value)
    ):
        raise Invalid(f"must be {_MAIL_FORM}, not {_shown(value)}")


def mail_addresses(value: object) -> tuple[str, ...]:
    """One mail address or a list of them (each once, in order), at least one."""
    listed = (value,) if isinstance(value, str) else value
    if (
        not isinstance(listed, Sequence)
        or isinstance(listed, bytes | bytearray)
        or not listed
    ):
        raise Invalid(f"must be a list of mail addresses, not {_shown(value)}")
    for address in listed:
        try:
            mail_address(None, None, address)
        except Invalid as e:
            raise Invalid(f"has {_shown(address)}, which is not {_MAIL_FORM}") from e
    return tuple(dict.fromkeys(listed))


def smtp_address(value: object) -> tuple[str, int] | None:
    """``"HOST:PORT"`` of an SMTP server (``"[::1]:25"``), or ``"HOST"`` for
    port 25, or a ``(host, port)`` pair, to ``(host, port)``; None for none."""
    if value is None:
        return None
    address: tuple[str, int] | None = None
    if isinstance(value, tuple) and len(value) == 2:
        name, port = value
        if isinstance(name, str) and type(port) is int:
            address = name, port
    if isinstance(value, str) and value and not any(c.isspace() for c in value):
        name, sep, port = value.rpartition(":")
        if not sep or value.endswith("]") or (":" in name and name[0] != "["):
            name, port = value, "25"  # no port ("[::1]", or a bare IPv6 address)
        if name and port.isascii() and port.isdigit():
            address = name.strip("[]"), int(port)
    if address is None or not address[0] or not 1 <= address[1] <= 65535:
        raise Invalid(
            "must be HOST:PORT of an SMTP server like '127.0.0.1:25' or "
            f"'mail.example.com:587' (port 1 to 65535), not {_shown(value)}"
        )
    return address
