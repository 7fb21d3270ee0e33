"""The control protocol of ``procwork monitor``: JSON lines on a Unix socket.

One request is one JSON object on one line; the monitor answers with one
JSON object on one line (``tail`` with ``follow`` keeps answering, one line
per output line, until the client hangs up). Every answer carries
``"procwork": PROTOCOL`` so a client knows it is talking to a monitor, and
``"ok"``: true with a ``"result"``, or false with an ``"error"`` that says
what went wrong. The full list of commands is in ``specs/supervision.md``.

This module imports nothing from Twisted: the ``procwork ctl`` client, which
blocks, uses it as the monitor's server does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from procwork._errors import ProcworkError
from procwork._format import clip

# Not typing.TYPE_CHECKING: importing typing is a good part of what a
# `procwork ctl` call costs, and this module is on its way (see cli/_main.py).
TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any, TypeGuard

__all__ = [
    "COMMANDS",
    "MAX_DEPTH",
    "MAX_LINE",
    "MAX_WAIT",
    "PROTOCOL",
    "SOCKET_VARIABLE",
    "ControlError",
    "decode",
    "default_socket_path",
    "describe_reload",
    "encode",
    "error",
    "ok",
    "parse_request",
]

#: The protocol's version, in every answer.
PROTOCOL = 1

#: The longest request line the monitor reads (bytes); longer ones are refused.
MAX_LINE = 64 * 1024

#: How deeply a request's JSON may nest (the object itself is 1; a list of
#: names in it, 2). Requests are flat; a deeper one is refused before
#: anything walks it, so no recursion can blow the monitor's stack.
MAX_DEPTH = 8

#: Every command, and the request keys each one takes besides ``command``.
COMMANDS: Mapping[str, frozenset[str]] = {
    "status": frozenset({"names"}),
    "start": frozenset({"names", "wait"}),
    "stop": frozenset({"names"}),
    "restart": frozenset({"names", "wait"}),
    "signal": frozenset({"names", "signal"}),
    "tail": frozenset({"name", "stream", "lines", "follow"}),
    "reopen": frozenset({"names"}),
    "reload": frozenset(),
    "shutdown": frozenset(),
}

_NEED_NAMES = {"start", "stop", "restart", "signal"}

#: The longest ``wait`` a start or restart may ask for (seconds): a day.
MAX_WAIT = 86400.0

#: The environment variable that tells ``procwork ctl`` where the socket
#: is, when neither ``--socket`` nor ``--config`` does.
SOCKET_VARIABLE = "PROCWORK_SOCKET"


class ControlError(ProcworkError, OSError):
    """The monitor cannot be reached, or its answer is not the protocol's."""


def default_socket_path(
    environ: Mapping[str, str] | None = None, uid: int | None = None
) -> str:
    """Where the monitor's control socket is unless told otherwise.

    ``$XDG_RUNTIME_DIR/procwork/monitor.sock`` (the user's private runtime
    directory) when it is set; else ``/run/procwork/monitor.sock`` for
    root; else ``procwork-UID/monitor.sock`` in the temporary directory
    (the monitor makes that directory 0700 and refuses one it does not own).
    """
    environ = os.environ if environ is None else environ
    uid = os.getuid() if uid is None else uid
    runtime = environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "procwork", "monitor.sock")
    if uid == 0:
        return "/run/procwork/monitor.sock"
    import tempfile  # only here: it costs procwork ctl more than the rest

    return os.path.join(tempfile.gettempdir(), f"procwork-{uid}", "monitor.sock")


def encode(message: Mapping[str, Any]) -> bytes:
    """One message as one line of JSON."""
    return json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n"


def decode(line: bytes | str) -> dict[str, Any]:
    """One line of JSON to a message (an object).

    Whatever the line holds, the outcome is a dict or a ValueError that says
    what is wrong: bytes must be UTF-8 (``json.loads`` would also guess
    UTF-16 and UTF-32), nesting deeper than :data:`MAX_DEPTH` is refused
    (``json.loads`` raises RecursionError a thousand levels down), and so
    is a number too long to convert.

    Raises:
        ValueError: not one JSON object.
    """
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(
                f"not a line of JSON: not UTF-8 (byte {line[e.start]:#04x} at "
                f"{e.start})"
            ) from None
    try:
        message = json.loads(line)
    except RecursionError:
        raise ValueError(
            f"not a line of JSON: nested more than {MAX_DEPTH} levels deep"
        ) from None
    except ValueError as e:  # JSONDecodeError, or an int over Python's limit
        raise ValueError(f"not a line of JSON: {clip(str(e))}") from None
    if not isinstance(message, dict):
        raise ValueError(f"expected a JSON object, not {type(message).__name__}")
    if _depth(message) > MAX_DEPTH:
        raise ValueError(f"a request nests at most {MAX_DEPTH} levels deep")
    return message


def _depth(value: object) -> int:
    """How deeply ``value`` nests, found without recursion; stops counting
    past :data:`MAX_DEPTH`."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: Any
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def ok(result: Any = None, **extra: Any) -> dict[str, Any]:
    """A successful answer."""
    return {"procwork": PROTOCOL, "ok": True, "result": result, **extra}


def error(message: str, result: Any = None) -> dict[str, Any]:
    """A failed answer; ``message`` says what went wrong."""
    answer: dict[str, Any] = {"procwork": PROTOCOL, "ok": False, "error": message}
    if result is not None:
        answer["result"] = result
    return answer


def parse_request(message: Mapping[str, Any]) -> dict[str, Any]:
    """Check a request's shape; returns it with defaults filled in.

    Raises:
        ValueError: unknown command or key, or a value of the wrong type;
            the message says which.
    """
    # Values from the client are echoed clipped (a request may be 64 KiB).
    command = message.get("command")
    if not isinstance(command, str) or command not in COMMANDS:
        raise ValueError(
            f"unknown command {clip(repr(command))}; commands: {', '.join(COMMANDS)}"
        )
    extra = set(message) - COMMANDS[command] - {"command"}
    if extra:
        raise ValueError(f"{command}: unknown key {clip(repr(sorted(extra)[0]))}")
    request = dict(message)
    if "names" in COMMANDS[command]:
        names = request.setdefault("names", [])
        # A service name is printable (see ServiceSpec): anything else names
        # no service, and must not reach the log as it is.
        if not isinstance(names, list) or not all(_printable(n) for n in names):
            raise ValueError(f"{command}: names must be a list of service names")
        if command in _NEED_NAMES and not names:
            raise ValueError(f"{command}: name the services (or 'all')")
    if "wait" in request:
        wait = request["wait"]
        if (
            isinstance(wait, bool)
            or not isinstance(wait, int | float)
            or not 0 < wait <= MAX_WAIT
        ):
            raise ValueError(
                f"{command}: wait must be a number of seconds > 0 and <= "
                f"{MAX_WAIT:g}, not {clip(repr(wait))}"
            )
    if command == "signal":
        signal = request.get("signal")
        if not (
            (isinstance(signal, int) and not isinstance(signal, bool))
            or (_printable(signal) and len(signal) <= 16)
        ):
            raise ValueError("signal: give the signal by name or number")
    if command == "tail":
        if not _printable(request.get("name")):
            raise ValueError("tail: name the service")
        stream = request.setdefault("stream", "stdout")
        if stream not in ("stdout", "stderr"):
            raise ValueError(
                f"tail: stream must be stdout or stderr, not {clip(repr(stream))}"
            )
        lines = request.setdefault("lines", 10)
        if isinstance(lines, bool) or not isinstance(lines, int) or lines < 0:
            raise ValueError(
                f"tail: lines must be a whole number >= 0, not {clip(repr(lines))}"
            )
        if not isinstance(request.setdefault("follow", False), bool):
            raise ValueError("tail: follow must be true or false")
    return request


def _printable(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and value.isprintable() and value != ""


#: What a reload reports, by kind: the key prefix of its lists in the answer.
_RELOADED = (
    ("services", ""),
    ("checks", "checks_"),
    ("rules", "rules_"),
    ("alerts", "alerts_"),
)


def describe_reload(result: Mapping[str, Any]) -> str:
    """The answer to ``reload`` (:meth:`ConfigDiff.to_dict`) on one line.

    Each kind says what was added, removed and changed, by name, and how
    many were kept; checks, rules and alerts only when either config has
    some.

    >>> print(describe_reload({"added": ["cron"], "unchanged": ["web"],
    ...                         "checks_changed": ["disk"]}).replace(" | ", "\\n"))
    services: added cron; removed none; changed none; 1 unchanged
    checks: added none; removed none; changed disk; 0 unchanged
    """
    parts = []
    for kind, prefix in _RELOADED:
        names = {
            what: list(result.get(prefix + what, ()))
            for what in ("added", "removed", "changed", "unchanged")
        }
        if kind != "services" and not any(names.values()):
            continue
        listed = "; ".join(
            f"{what} {', '.join(names[what]) or 'none'}"
            for what in ("added", "removed", "changed")
        )
        parts.append(f"{kind}: {listed}; {len(names['unchanged'])} unchanged")
    return " | ".join(parts)
