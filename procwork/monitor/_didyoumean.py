"""An unknown key in a config: what was probably meant.

A typo gets the close matches (:mod:`difflib`); a key of supervisord's
``[program:x]`` or systemd's ``[Service]`` gets the key it is here, and how
its meaning differs where it does, or why none is needed. Only when nothing
comes close are all the known keys listed.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from typing import NamedTuple

__all__ = ["FOREIGN_KEYS", "Foreign", "unknown_key"]


class Foreign(NamedTuple):
    """A key of another supervisor, as procwork says it."""

    whose: str  # "supervisord" or "systemd"
    key: str | None  # the key here; None when none is needed
    note: str | None = None  # how the meaning differs, or why none is needed


_SUPERVISORD = "supervisord"
_SYSTEMD = "systemd"
_TABLE = 'a table: env = { NAME = "value" }'

#: A [[service]]'s keys under other names: supervisord's [program:x] and
#: systemd's [Service]/[Unit] (the keys that are the same here, like
#: supervisord's user or numprocs, are not listed).
FOREIGN_KEYS: Mapping[str, Foreign] = {
    "process_name": Foreign(_SUPERVISORD, "name", "{instance} is %(process_num)s"),
    "numprocs_start": Foreign(_SUPERVISORD, None, "instances are numbered from 0"),
    "priority": Foreign(
        _SUPERVISORD, "after", "the names of the services to start after"
    ),
    "startsecs": Foreign(_SUPERVISORD, "start_seconds"),
    "startretries": Foreign(
        _SUPERVISORD,
        "max_restarts",
        "it counts unexpected exits within restart_window (however long the "
        "run), not failed starts in a row",
    ),
    "autorestart": Foreign(
        _SUPERVISORD,
        "restart",
        '"always", "on-failure" (unexpected) or "never", not true/false',
    ),
    "exitcodes": Foreign(_SUPERVISORD, "success_exit_codes"),
    "stopsignal": Foreign(_SUPERVISORD, "stop_signal"),
    "stopwaitsecs": Foreign(_SUPERVISORD, "stop_timeout"),
    "stopasgroup": Foreign(
        _SUPERVISORD, None, "the stop signal always goes to the whole process group"
    ),
    "killasgroup": Foreign(
        _SUPERVISORD, None, "SIGKILL always goes to the whole process group"
    ),
    "redirect_stderr": Foreign(
        _SUPERVISORD, "stderr_log", "name the stdout_log file to share it"
    ),
    "stdout_logfile": Foreign(_SUPERVISORD, "stdout_log"),
    "stderr_logfile": Foreign(_SUPERVISORD, "stderr_log"),
    "stdout_logfile_maxbytes": Foreign(
        _SUPERVISORD, "log_max_bytes", "for both log files"
    ),
    "stderr_logfile_maxbytes": Foreign(
        _SUPERVISORD, "log_max_bytes", "for both log files"
    ),
    "stdout_logfile_backups": Foreign(
        _SUPERVISORD, "log_backups", "for both log files"
    ),
    "stderr_logfile_backups": Foreign(
        _SUPERVISORD, "log_backups", "for both log files"
    ),
    "environment": Foreign(_SUPERVISORD, "env", _TABLE),
    "directory": Foreign(_SUPERVISORD, "cwd"),
    "ExecStart": Foreign(_SYSTEMD, "command"),
    "WorkingDirectory": Foreign(_SYSTEMD, "cwd"),
    "Environment": Foreign(_SYSTEMD, "env", _TABLE),
    "EnvironmentFile": Foreign(
        _SYSTEMD, None, "list the variables in env; values may use ${VAR}"
    ),
    "User": Foreign(_SYSTEMD, "user"),
    "Group": Foreign(_SYSTEMD, "group"),
    "UMask": Foreign(_SYSTEMD, "umask"),
    "Nice": Foreign(_SYSTEMD, "nice"),
    "Restart": Foreign(
        _SYSTEMD, "restart", '"always", "on-failure" or "never" (systemd\'s "no")'
    ),
    "RestartSec": Foreign(
        _SYSTEMD,
        "min_restart_delay",
        "the first delay, doubled at each crash up to max_restart_delay until "
        "a run lasts stable_seconds",
    ),
    "RestartMaxDelaySec": Foreign(_SYSTEMD, "max_restart_delay"),
    "TimeoutStopSec": Foreign(_SYSTEMD, "stop_timeout"),
    "KillSignal": Foreign(_SYSTEMD, "stop_signal"),
    "SuccessExitStatus": Foreign(
        _SYSTEMD, "success_exit_codes", "exit codes only, no signal names"
    ),
    "StartLimitBurst": Foreign(
        _SYSTEMD,
        "max_restarts",
        "it counts unexpected exits within restart_window, not starts",
    ),
    "StartLimitIntervalSec": Foreign(_SYSTEMD, "restart_window"),
    "StartLimitInterval": Foreign(_SYSTEMD, "restart_window"),
    "After": Foreign(
        _SYSTEMD, "after", "it waits until they are RUNNING, as Requires= would"
    ),
    "Requires": Foreign(_SYSTEMD, "after"),
    "TimeoutStartSec": Foreign(
        _SYSTEMD,
        "start_seconds",
        "how long it must stay up to count as started, not how long it may "
        "take to start",
    ),
    "StandardOutput": Foreign(_SYSTEMD, "stdout_log", "a file name, not file:PATH"),
    "StandardError": Foreign(_SYSTEMD, "stderr_log", "a file name, not file:PATH"),
}


def unknown_key(
    key: str,
    known: Collection[str],
    foreign: Mapping[str, Foreign] | None = None,
) -> str:
    """Why ``key`` is refused, and what was probably meant.

    Args:
        key: The key given.
        known: The keys of its table.
        foreign: Other supervisors' names for those keys (:data:`FOREIGN_KEYS`
            for a [[service]]).

    Returns:
        ``"unknown key 'startsecs'; did you mean 'start_seconds'?
        (supervisord's startsecs)"``, or with the known keys listed when
        nothing comes close.
    """
    said = f"unknown key {key!r}"
    other = None
    if foreign is not None:
        # Found whatever the case too: "execstart", "STARTSECS".
        lower = {name.lower(): one for name, one in foreign.items()}
        other = foreign.get(key) or lower.get(key.lower())
    if other is not None and (other.key is None or other.key in known):
        whose = f"{other.whose}'s {key}"
        if other.key is None:
            return f"{said} ({whose}): none is needed here: {other.note}"
        note = f"; here {other.note}" if other.note else ""
        return f"{said}; did you mean {other.key!r}? ({whose}{note})"
    close = [k for k in known if k.lower() == key.lower()] or difflib.get_close_matches(
        key, known, n=3, cutoff=0.75
    )
    if close:
        return f"{said}; did you mean {' or '.join(repr(k) for k in close)}?"
    return f"{said}; known keys: {', '.join(sorted(known))}"
