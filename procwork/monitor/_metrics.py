"""What ``/metrics`` says: the monitor's metrics, by Prometheus conventions.

Units are in the names (``_seconds``, ``_bytes``), counters end in
``_total``, and a labelled series never vanishes while its subject exists:
``procwork_service_state`` has a sample for every state of every service,
1 for the current one and 0 for the others, so a query over a state keeps
working when the service leaves it. The monitor's own ``process_*``
metrics are the standard ones every Prometheus client library exports,
read from ``/proc/self``.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Mapping
from typing import Any

from procwork.monitor._alerts import AlertStatus
from procwork.monitor._checks import CheckStatus
from procwork.monitor._controlserver import ControlStats
from procwork.monitor._http import Metric
from procwork.supervisor import LogStats, ServiceState, ServiceStatus

__all__ = [
    "control_metrics",
    "http_metrics",
    "monitor_metrics",
    "process_metrics",
    "watchdog_metrics",
]

Samples = list[tuple[dict[str, str], float]]


def monitor_metrics(
    *,
    version: str,
    services: Mapping[str, ServiceStatus],
    checks: Mapping[str, CheckStatus],
    rules: Mapping[str, Any],
    queued: int,
    alerts: Mapping[str, AlertStatus] | None = None,
) -> list[Metric]:
    """The metrics of services, checks, rules, alerts and runs (not
    ``process_*``).

    Args:
        version: procwork's version, for ``procwork_build_info``.
        services: The supervisor's status, by service.
        checks: Each check's status.
        rules: Each rule's counters (``matches``, ``signals_sent``).
        queued: Runs waiting for admission.
        alerts: Each alert's status (its deliveries and its queue).
    """
    alerts = {} if alerts is None else alerts

    def per_service(value: Any) -> Samples:
        return [({"service": n}, float(value(s))) for n, s in services.items()]

    def per_check(value: Any, skip_none: bool = False) -> Samples:
        samples = [({"check": n}, value(c)) for n, c in checks.items()]
        return [(k, float(v)) for k, v in samples if not (skip_none and v is None)]

    running = {
        "service": sum(1 for s in services.values() if s.pid is not None),
        "check": sum(1 for c in checks.values() if c.running),
        "action": sum(1 for c in checks.values() if c.action_running),
    }
    return [
        ("procwork_up", "gauge", "1 while the monitor runs", [({}, 1.0)]),
        (
            "procwork_build_info",
            "gauge",
            "Always 1; the version of procwork running, as a label",
            [({"version": version}, 1.0)],
        ),
        (
            "procwork_service_up",
            "gauge",
            "1 if the service is RUNNING, else 0",
            per_service(lambda s: s.state is ServiceState.RUNNING),
        ),
        (
            "procwork_service_state",
            "gauge",
            "1 for the state the service is in, 0 for every other state",
            [
                ({"service": n, "state": str(state)}, float(s.state is state))
                for n, s in services.items()
                for state in ServiceState
            ],
        ),
        (
            "procwork_service_restarts_total",
            "counter",
            "Automatic restarts of the service since it was added",
            per_service(lambda s: s.restarts),
        ),
        # Crash loops (see ServiceStatus.crash_loop): a service in one is
        # never only "up".
        (
            "procwork_service_crash_loop",
            "gauge",
            "1 while the service is in a crash loop (2 or more unexpected exits "
            "with no run of stable_seconds between them), else 0",
            per_service(lambda s: s.crash_loop),
        ),
        (
            "procwork_service_crashes",
            "gauge",
            "Unexpected exits of the service since it last ran stable_seconds",
            per_service(lambda s: s.crashes),
        ),
        (
            "procwork_service_unexpected_exits_total",
            "counter",
            "Unexpected exits of the service since it was added (an exit code "
            "not in success_exit_codes, a signal, a failed start; not a stop)",
            per_service(lambda s: s.failures),
        ),
        (
            "procwork_service_healthy",
            "gauge",
            "1 if the service is healthy: not FATAL, not in a crash loop, not "
            "down after an unexpected exit",
            per_service(lambda s: s.healthy),
        ),
        (
            "procwork_service_start_time_seconds",
            "gauge",
            "When the service's last process started, in seconds since the epoch",
            [
                ({"service": n}, float(s.started))
                for n, s in services.items()
                if s.started is not None
            ],
        ),
        (
            "procwork_service_last_exit_code",
            "gauge",
            "Exit code of the service's last process; -N if killed by signal N",
            [
                ({"service": n}, float(s.returncode))
                for n, s in services.items()
                if s.returncode is not None
            ],
        ),
        (
            "procwork_check_runs_total",
            "counter",
            "Check runs started",
            per_check(lambda c: c.runs),
        ),
        (
            "procwork_check_failures_total",
            "counter",
            "Check runs that failed (non-zero exit or could not start)",
            per_check(lambda c: c.failed),
        ),
        (
            "procwork_check_timeouts_total",
            "counter",
            "Check runs killed by their timeout",
            per_check(lambda c: c.timed_out),
        ),
        (
            "procwork_check_skipped_total",
            "counter",
            "Intervals skipped because the previous run was still going",
            per_check(lambda c: c.skipped),
        ),
        (
            "procwork_check_actions_total",
            "counter",
            "Failure actions started",
            per_check(lambda c: c.actions),
        ),
        (
            "procwork_check_ok",
            "gauge",
            "1 if the last run of the check succeeded, else 0",
            per_check(lambda c: c.last_outcome == "ok"),
        ),
        (
            "procwork_check_consecutive_failures",
            "gauge",
            "Runs of the check in a row that did not succeed (0 after a success)",
            per_check(lambda c: c.consecutive_failures),
        ),
        (
            "procwork_check_last_duration_seconds",
            "gauge",
            "How long the check's last finished run took",
            per_check(lambda c: c.last_duration, skip_none=True),
        ),
        (
            "procwork_check_last_run_timestamp_seconds",
            "gauge",
            "When the check's last run started, in seconds since the epoch",
            per_check(lambda c: c.last_started, skip_none=True),
        ),
        (
            "procwork_check_last_success_timestamp_seconds",
            "gauge",
            "When the check last succeeded, in seconds since the epoch",
            per_check(lambda c: c.last_success, skip_none=True),
        ),
        (
            "procwork_rule_matches_total",
            "counter",
            "Processes a rule found over its limits",
            [({"rule": n}, float(c.matches)) for n, c in rules.items()],
        ),
        (
            "procwork_rule_signals_total",
            "counter",
            "Signals a rule sent",
            [({"rule": n}, float(c.signals_sent)) for n, c in rules.items()],
        ),
        (
            "procwork_alert_deliveries_total",
            "counter",
            "Events an alert took, by outcome: ok, failed (the command or "
            "webhook failed, or gave up), dropped (never delivered: its queue "
            "was full, or the monitor stopped)",
            [
                ({"alert": n, "outcome": outcome}, float(getattr(a, outcome)))
                for n, a in alerts.items()
                for outcome in ("ok", "failed", "dropped")
            ],
        ),
        (
            "procwork_alert_deliveries_running",
            "gauge",
            "An alert's deliveries running now (at most its max_in_flight)",
            [({"alert": n}, float(a.running)) for n, a in alerts.items()],
        ),
        (
            "procwork_alert_events_queued",
            "gauge",
            "Events waiting for one of an alert's delivery slots",
            [({"alert": n}, float(a.queued)) for n, a in alerts.items()],
        ),
        (
            "procwork_processes_running",
            "gauge",
            "Processes procwork runs now: services, checks and failure actions",
            [({"kind": kind}, float(count)) for kind, count in running.items()],
        ),
        (
            "procwork_processes_queued",
            "gauge",
            "Check and action runs waiting for admission (the cap or the load)",
            [({}, float(queued))],
        ),
    ]


# -- the HTTP endpoint -----------------------------------------------------------

#: The statuses the endpoint refuses requests with (each always has a sample).
HTTP_REFUSALS = (400, 401, 403, 413)


def http_metrics(refused: Mapping[int, int] | None) -> list[Metric]:
    """What the HTTP endpoint refused, by status: none when it is off."""
    if refused is None:
        return []
    return [
        (
            "procwork_http_requests_refused_total",
            "counter",
            "HTTP requests refused, by status: 400 malformed, 401 without the "
            "token, 403 control is off, 413 a body too long or on a path that "
            "takes none (the body is not read)",
            [({"code": str(c)}, float(refused.get(c, 0))) for c in HTTP_REFUSALS],
        )
    ]


# -- the watchdog watched: its own log, its services' logs, its loop ----------


def watchdog_metrics(
    *,
    log_lines_dropped: int,
    service_logs: Mapping[str, LogStats],
    loop_lag: float,
    loop_stalls: int,
) -> list[Metric]:
    """What the monitor could not write, and how late its reactor runs.

    Args:
        log_lines_dropped: Lines of its own log a stalled stdout missed.
        service_logs: What each service's log files lost.
        loop_lag: The reactor's largest lag of the last minute (seconds).
        loop_stalls: Lags over 1 s since the start.
    """
    return [
        (
            "procwork_log_lines_dropped_total",
            "counter",
            "Lines of the monitor's own log dropped because stdout was not "
            "read (its buffer full) or could not be written",
            [({}, float(log_lines_dropped))],
        ),
        (
            "procwork_service_log_errors_total",
            "counter",
            "Writes to a service's log files that failed (a full disk, the "
            "directory gone)",
            [({"service": n}, float(s.errors)) for n, s in service_logs.items()],
        ),
        (
            "procwork_service_log_lines_lost_total",
            "counter",
            "Lines of a service's output its failed log writes lost",
            [({"service": n}, float(s.lines_lost)) for n, s in service_logs.items()],
        ),
        (
            "procwork_monitor_loop_lag_seconds",
            "gauge",
            "The largest delay of the monitor's reactor over the last minute: "
            "how late a timer due every 0.25 s ran",
            [({}, loop_lag)],
        ),
        (
            "procwork_monitor_loop_stalls_total",
            "counter",
            "Times the monitor's reactor ran a timer over 1 s late (a blocked turn)",
            [({}, float(loop_stalls))],
        ),
    ]


# -- the control socket (see _controlserver.py) ------------------------------------


def control_metrics(stats: ControlStats) -> list[Metric]:
    """The control socket's connections and what its bounds did."""
    closed = {
        "evicted": stats.evicted,
        "idle": stats.idle_closed,
        "stalled_follower": stats.followers_cut,
    }
    return [
        (
            "procwork_control_connections",
            "gauge",
            "Control socket connections open now (at most control_max_connections)",
            [({}, float(stats.open))],
        ),
        (
            "procwork_control_connections_refused_total",
            "counter",
            "Control connections refused: control_max_connections open, none idle",
            [({}, float(stats.refused))],
        ),
        (
            "procwork_control_connections_closed_total",
            "counter",
            "Control connections the monitor closed, by reason: evicted (idle "
            "longest when the cap was reached), idle (control_idle_timeout), "
            "stalled_follower (a tail -f client that read nothing that long)",
            [({"reason": r}, float(n)) for r, n in closed.items()],
        ),
        (
            "procwork_control_follow_lines_skipped_total",
            "counter",
            "Output lines not sent to tail -f clients that fell behind (each "
            "was told how many)",
            [({}, float(stats.skipped_lines))],
        ),
    ]


def process_metrics(proc: str = "/proc/self") -> list[Metric]:
    """The standard ``process_*`` metrics of this process, from ``/proc``.

    A metric whose source cannot be read is left out rather than made up.

    Args:
        proc: The ``/proc`` directory of the process (tests pass another).
    """
    ticks = os.sysconf("SC_CLK_TCK")
    metrics: list[Metric] = []
    try:
        with open(f"{proc}/stat", encoding="ascii") as f:
            # The command name is in parentheses and may hold spaces.
            fields = f.read().rpartition(")")[2].split()
        # Fields after the name, from 0: state is 0, utime 11, stime 12,
        # starttime 19 (in clock ticks since boot), vsize 20, rss 21 (pages).
        cpu = (int(fields[11]) + int(fields[12])) / ticks
        started_after_boot = int(fields[19]) / ticks
        virtual, rss_pages = int(fields[20]), int(fields[21])
    except (OSError, ValueError, IndexError):
        pass
    else:
        metrics += [
            (
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                [({}, cpu)],
            ),
            (
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                [({}, float(virtual))],
            ),
            (
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                [({}, float(rss_pages * resource.getpagesize()))],
            ),
        ]
        boot = _boot_time()
        if boot is not None:
            metrics.append(
                (
                    "process_start_time_seconds",
                    "gauge",
                    "Start time of the process since unix epoch in seconds.",
                    [({}, boot + started_after_boot)],
                )
            )
    try:
        open_fds = len(os.listdir(f"{proc}/fd"))
    except OSError:
        pass
    else:
        metrics.append(
            (
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
                [({}, float(open_fds))],
            )
        )
    max_fds = _max_open_files(proc)
    if max_fds is not None:
        metrics.append(
            (
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                [({}, float(max_fds))],
            )
        )
    return metrics


def _boot_time() -> float | None:
    """When the machine booted, in seconds since the epoch (``btime``)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _max_open_files(proc: str) -> int | None:
    """The soft limit on open files (``Max open files`` in ``limits``)."""
    try:
        with open(f"{proc}/limits", encoding="ascii") as f:
            for line in f:
                if line.startswith("Max open files"):
                    soft = line[len("Max open files") :].split()[0]
                    return None if soft == "unlimited" else int(soft)
    except (OSError, ValueError, IndexError):
        pass
    return None
