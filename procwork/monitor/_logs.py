"""What ``procwork monitor`` prints: text lines, or JSON lines of our own schema.

A text line::

    2026-12-01 15:30:00.123 INFO  [web stdout] listening on :8080
    2026-12-01 15:30:02.410 WARN  [checks] check disk failed: exited 1: / is 97% full

date, time (local, milliseconds), level, where it comes from (a service's
name and stream for its output, else the part of the monitor), the message.

A JSON line (``--json-log``) is one object with these keys, and only these
(the schema is user-facing and documented here, where ``specs/supervision.md``
points):

- ``time``: ISO 8601 in UTC with milliseconds, ``"2026-12-01T15:30:00.123Z"``;
- ``level``: ``"debug"``, ``"info"``, ``"warn"``, ``"error"`` or ``"critical"``;
- ``event``: what happened: an event name (``"check.failed"``,
  ``"service.fatal"``, ...), ``"service.output"`` for a line a service
  printed, ``"service.<state>"`` for a service's other state lines, else
  ``"log"``;
- ``logger``: the part of procwork (``"procwork.checks"``, ...);
- ``service``, ``check``, ``rule``, ``alert``: the name it is about, when
  it is about one (only the keys that apply are present);
- ``message``: the text line's message;
- ``fields``: everything else the event carries, JSON-ready (``stream``,
  ``pid``, ``exit``, ``output``, ...).

Twisted's own chatter is left out: "Site starting on ...", "(TCP Port ...
Closed)", factory start/stop lines; its warnings and errors still show.

The lines go out through a :class:`~procwork.monitor._logwriter.LogWriter`,
which never blocks (a ``log.dropped`` line says what a stalled reader
missed), or, with ``[monitor] log = "syslog"`` or ``"journald"``, as
datagrams to the local log daemon by the same rules
(:mod:`procwork.monitor._logsocket`). Which lines are logged is the
:class:`LevelFilter`'s: ``[monitor] log_level`` or ``procwork monitor
--log-level``, which wins; a reload applies a changed ``log_level``.
Design: ARCHITECTURE.md, "The monitor's own log".
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO, cast

from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    Logger,
    LogLevel,
    PredicateResult,
    formatEvent,
    globalLogBeginner,
)

from procwork._defaults import LOG_LEVELS
from procwork.monitor._logsocket import (
    DEFAULT_PATHS,
    DatagramWriter,
    journal_message,
    syslog_message,
)
from procwork.monitor._logwriter import DEFAULT_MAX_BUFFERED, LogWriter, WriterReactor

__all__ = [
    "LOG_LEVELS",
    "LevelFilter",
    "json_line",
    "json_observer",
    "start_logging",
    "text_line",
    "text_observer",
]

_log = Logger(namespace="procwork.monitor")

_LEVELS = {
    LogLevel.debug: "DEBUG",
    LogLevel.info: "INFO",
    LogLevel.warn: "WARN",
    LogLevel.error: "ERROR",
    LogLevel.critical: "CRIT",
}
_LOUD = {LogLevel.warn, LogLevel.error, LogLevel.critical}
# LogLevel's constants do not compare: their order, for the level filter.
_RANK = {
    LogLevel.debug: 0,
    LogLevel.info: 1,
    LogLevel.warn: 2,
    LogLevel.error: 3,
    LogLevel.critical: 4,
}
_SUBJECTS = ("service", "check", "rule", "alert")
_OURS = ("procwork", "untwisted", "clockwork")


def _level(event: Mapping[str, Any]) -> Any:
    # The levels are constants of LogLevel, not instances of it.
    level = event.get("log_level", LogLevel.info)
    return level if level in _LEVELS else LogLevel.info


def _message(event: Mapping[str, Any]) -> str:
    text = formatEvent(dict(event))
    failure = event.get("log_failure")
    if failure is not None:
        text += "\n" + failure.getTraceback()
    return text


def _where(event: Mapping[str, Any]) -> str:
    namespace = str(event.get("log_namespace", ""))
    if "line" in event and "stream" in event and "service" in event:
        return f"{event['service']} {event['stream']}"
    short = namespace.removeprefix("procwork.")
    return short if short != "procwork" else "procwork"


def text_line(event: Mapping[str, Any]) -> str:
    """One event as a text line (with its newline): date, time, level,
    where, message."""
    stamp = event.get("log_time", time.time())
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))
    millis = int((stamp % 1) * 1000)
    level = _LEVELS.get(_level(event), "INFO")
    return f"{when}.{millis:03d} {level:<5} {daemon_text(event)}\n"


def daemon_text(event: Mapping[str, Any]) -> str:
    """The text line without its date, time and level, which a log daemon
    keeps of its own: ``[where] message``."""
    if "line" in event and "stream" in event and "service" in event:
        message = str(event["line"])  # a service's output: as printed
    else:
        message = _message(event)
    return f"[{_where(event)}] {message}"


def text_observer(stream: TextIO) -> ILogObserver:
    """Text lines: date, time, level, where, message."""

    def observe(event: dict[str, Any]) -> None:
        stream.write(text_line(event))
        stream.flush()

    return cast(ILogObserver, observe)


def _event_name(event: Mapping[str, Any]) -> str:
    name = event.get("event")
    if isinstance(name, str):
        return name
    namespace = event.get("log_namespace", "")
    if namespace == "procwork.supervisor" and "service" in event:
        if "line" in event and "stream" in event:
            return "service.output"
        state = event.get("state")
        if state is not None:
            return f"service.{str(state).lower()}"
    return "log"


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


def json_record(event: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object of one log event (see the module's docstring)."""
    stamp = float(event.get("log_time", time.time()))
    millis = int((stamp % 1) * 1000)
    record: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp))
        + f".{millis:03d}Z",
        "level": _LEVELS.get(_level(event), "INFO").lower().replace("crit", "critical"),
        "event": _event_name(event),
        "logger": str(event.get("log_namespace", "")),
    }
    for key in _SUBJECTS:
        if key in event and event[key] is not None:
            record[key] = str(event[key])
    if "line" in event and "stream" in event and "service" in event:
        record["message"] = str(event["line"])
    else:
        record["message"] = _message(event)
    record["fields"] = {
        key: _jsonable(value)
        for key, value in event.items()
        if not key.startswith("log_")
        and key not in _SUBJECTS
        and key not in ("event", "format", "message", "system", "time", "isError")
    }
    return record


def json_line(event: Mapping[str, Any]) -> str:
    """One event as a JSON line (with its newline; see the module's
    docstring)."""
    return json.dumps(json_record(event), default=str) + "\n"


def json_observer(stream: TextIO) -> ILogObserver:
    """JSON lines, one object per event (see the module's docstring)."""

    def observe(event: dict[str, Any]) -> None:
        stream.write(json_line(event))
        stream.flush()

    return cast(ILogObserver, observe)


def writer_observer(writer: LogWriter, json_log: bool) -> ILogObserver:
    """Text or JSON lines through ``writer``, which never blocks."""
    line = json_line if json_log else text_line

    def observe(event: dict[str, Any]) -> None:
        writer.write_line(line(event).encode("utf-8", "replace"))

    return cast(ILogObserver, observe)


def dropped_notice(
    json_log: bool, message: Callable[[Mapping[str, Any]], bytes] | None = None
) -> Callable[[int, str], bytes]:
    """The line that says how many log lines a stalled reader missed, as
    the other lines are written (a ``log.dropped`` warning); ``message``
    formats it, when it is not a text or JSON line."""
    line = json_line if json_log else text_line

    def notice(count: int, stream: str) -> bytes:
        event = {
            "log_namespace": "procwork.monitor",
            "log_level": LogLevel.warn,
            "log_time": time.time(),
            "log_format": "{dropped} log lines dropped: {stream} was not read",
            "event": "log.dropped",
            "dropped": count,
            "stream": stream,
        }
        if message is not None:
            return message(event)
        return line(event).encode("utf-8", "replace")

    return notice


class LevelFilter:
    """Lets through the events at ``level`` or above (a log filter
    predicate); the level can change while the monitor runs (a reload).

    Args:
        level: One of :data:`LOG_LEVELS`.
        pinned: Given on the command line (``--log-level``): a config's
            ``log_level`` does not change it.
    """

    def __init__(self, level: str = "info", *, pinned: bool = False) -> None:
        self.pinned = pinned
        self.level = level
        self._rank = _RANK[LogLevel.levelWithName(level)]

    def __call__(self, event: Mapping[str, Any]) -> PredicateResult:
        if _RANK[_level(event)] < self._rank:
            return cast(PredicateResult, PredicateResult.no)
        return cast(PredicateResult, PredicateResult.maybe)

    def configured(self, level: str) -> None:
        """The config says ``level`` now (a reload): apply it, unless the
        command line chose the level; say what changes."""
        if level == self.level:
            return
        if self.pinned:
            _log.info(
                "reload: log_level {configured} not applied: --log-level "
                "{pinned} was given",
                configured=level,
                pinned=self.level,
            )
            return
        _log.info("log level now {new} (was {old})", new=level, old=self.level)
        self.level = level
        self._rank = _RANK[LogLevel.levelWithName(level)]


def _not_noise(event: Mapping[str, Any]) -> PredicateResult:
    """Twisted's own info lines (a port starting, a factory starting) are
    noise in a monitor's log; its warnings and errors are not."""
    namespace = str(event.get("log_namespace", ""))
    if namespace.split(".")[0] in _OURS or _level(event) in _LOUD:
        return cast(PredicateResult, PredicateResult.maybe)
    return cast(PredicateResult, PredicateResult.no)


def start_logging(
    json_log: bool,
    stream: TextIO | None = None,
    *,
    reactor: WriterReactor | None = None,
    max_buffered: int = DEFAULT_MAX_BUFFERED,
    levels: LevelFilter | None = None,
    target: str = "stdout",
    facility: str = "daemon",
    syslog_format: str = "rfc3164",
) -> LogWriter | DatagramWriter | None:
    """Send the global log to stdout (or ``stream``), or to the local log
    daemon: text or JSON lines, at ``levels`` (default info) and above.

    Stdout is written through a :class:`LogWriter` on ``reactor`` (default
    the global one), which never blocks; close it at exit
    (:meth:`LogWriter.close`). A ``stream`` given (tests, benchmarks) is
    written as it is. ``target`` ``"syslog"`` or ``"journald"`` (or
    ``"KIND:PATH"``) sends each line as a datagram to that daemon's socket
    through a :class:`DatagramWriter`, which never blocks either.

    Returns:
        The writer of stdout or of the daemon's socket; None when
        ``stream`` was given.
    A daemon not listening yet is waited for (its writer's ``absent``
    says why).
    """
    writer: LogWriter | DatagramWriter | None = None
    if stream is not None:
        observer = json_observer(stream) if json_log else text_observer(stream)
    else:
        if reactor is None:
            from procwork._reactor import default_reactor

            reactor = cast(WriterReactor, default_reactor())
        sys.stdout.flush()  # what print() buffered goes first
        if target == "stdout":
            writer = LogWriter(
                sys.stdout.fileno(),
                reactor,
                name="stdout",
                max_buffered=max_buffered,
                notice=dropped_notice(json_log),
            )
            observer = writer_observer(writer, json_log)
        else:
            writer, observer = _daemon_writer(
                target, reactor, max_buffered, json_log, facility, syslog_format
            )
    # zope interfaces again: these objects provide what the casts say.
    predicates = [
        cast(ILogFilterPredicate, levels if levels is not None else LevelFilter()),
        cast(ILogFilterPredicate, _not_noise),
    ]
    filtered = cast(ILogObserver, FilteringLogObserver(observer, predicates))
    globalLogBeginner.beginLoggingTo([filtered], redirectStandardIO=False)
    return writer


def _daemon_writer(
    target: str,
    reactor: WriterReactor,
    max_buffered: int,
    json_log: bool,
    facility: str,
    syslog_format: str,
) -> tuple[DatagramWriter, ILogObserver]:
    """The writer of ``target``'s socket, and the observer that formats
    each event for it (syslog: a JSON line with ``json_log``; journald:
    always text, its fields carry the structure)."""
    kind, _, path = target.partition(":")
    path = path or DEFAULT_PATHS[kind]

    def message(event: Mapping[str, Any]) -> bytes:
        if kind == "journald":
            return journal_message(event, daemon_text(event), facility=facility)
        text = json_line(event).rstrip("\n") if json_log else daemon_text(event)
        return syslog_message(
            event, text, facility=facility, syslog_format=syslog_format
        )

    writer = DatagramWriter(
        path,
        reactor,
        name=f"{kind} {path}",
        max_buffered=max_buffered,
        notice=dropped_notice(json_log, message),
        memfd=kind == "journald",
    )

    def observe(event: dict[str, Any]) -> None:
        writer.write_line(message(event))

    return writer, cast(ILogObserver, observe)
