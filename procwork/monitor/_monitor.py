"""``procwork monitor``: services, checks and watchdog rules from one config.

The command is a thin consumer of the library: a :class:`Monitor` composes a
:class:`~procwork.supervisor.Supervisor`, a :class:`CheckRunner` and a
:class:`RuleEngine` on one reactor, reports what happens as log
events, and serves its status over HTTP.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Any, TextIO, cast

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    eventAsJSON,
    formatEvent,
    globalLogBeginner,
)

import untwisted
from procwork._api import scheduler as default_scheduler
from procwork._errors import ConfigError
from procwork._load import SystemLoad
from procwork._orphans import reap_orphans
from procwork._reactor import default_reactor
from procwork._scheduler import Scheduler
from procwork.monitor._checks import CheckRunner, RunFunction
from procwork.monitor._config import (
    MonitorConfig,
    dump_config,
    load_config,
    parse_http,
)
from procwork.monitor._http import Metric, StatusSite
from procwork.monitor._metrics import monitor_metrics, process_metrics
from procwork.monitor._proctable import ProcessTable
from procwork.monitor._rules import Finding, RuleEngine
from procwork.supervisor import ProcessFactory, Supervisor

__all__ = ["Monitor", "main"]

_log = Logger(namespace="procwork.monitor")

_RECENT_FINDINGS = 20


class Monitor:
    """Runs a :class:`MonitorConfig`. Call from the reactor thread.

    Args:
        config: What to run.
        reactor: Default the global reactor.
        scheduler: Process admission; default procwork's shared scheduler,
            configured from ``config``.
        run: Runs the checks' commands, ``procwork.run``-compatible
            (default :func:`procwork.run` on ``scheduler``); tests inject.
        process_factory: Builds the services' children (default: real
            process groups); tests inject.
        process_table: Where the rules look for processes (default
            ``/proc``); tests inject.
    """

    def __init__(
        self,
        config: MonitorConfig,
        *,
        reactor: Any = None,
        scheduler: Scheduler | None = None,
        run: RunFunction | None = None,
        process_factory: ProcessFactory | None = None,
        process_table: ProcessTable | None = None,
    ) -> None:
        if reactor is None:
            reactor = default_reactor()
        self.config = config
        self._reactor = reactor
        self.scheduler = scheduler if scheduler is not None else default_scheduler()
        if config.max_running is not None:
            self.scheduler.set_max_running(config.max_running)
        self.scheduler.load = SystemLoad(max_load=config.max_load)
        self.supervisor = Supervisor(reactor, process_factory=process_factory)
        for spec in config.services:
            self.supervisor.add(spec)
        # The reactor's clock is the wall clock on a real reactor; one clock
        # for the checks' timestamps and the services' start times.
        self.checks = CheckRunner(
            config.checks,
            reactor=reactor,
            run=run if run is not None else self._run,
            wall_clock=reactor.seconds,
        )
        self.rules = RuleEngine(config.rules, process_table, reactor=reactor)
        self.findings: list[Finding] = []
        self._loops: list[LoopingCall] = []
        self._port: Any = None
        self._started_at: float | None = None
        self._cpu_at_start = 0.0

    def _run(self, argv: list[str], **kwargs: Any) -> Deferred[Any]:
        from procwork._api import run

        return run(argv, scheduler=self.scheduler, **kwargs)

    # -- life cycle ------------------------------------------------------

    def start(self, http: tuple[str, int] | None = None) -> None:
        """Start services, checks, rules, summaries and the HTTP endpoint."""
        self._started_at = time.time()
        self._cpu_at_start = time.process_time()
        http = http if http is not None else self.config.http
        if http is not None:
            self._listen(*http)
        _log.info(
            "monitor started from {source}: {services} services, {checks} checks, "
            "{rules} rules",
            source=self.config.source,
            services=len(self.config.services),
            checks=len(self.config.checks),
            rules=len(self.config.rules),
        )
        self.supervisor.start()
        self.checks.start()
        if self.config.rules:
            self._every(self.config.rules_every, self._scan)
        if self.config.summary_every:
            self._every(self.config.summary_every, self._summary, now=False)

    def _every(self, seconds: float, fn: Any, *, now: bool = True) -> None:
        loop = LoopingCall(fn)
        loop.clock = self._reactor
        loop.start(seconds, now=now).addErrback(
            lambda f: _log.failure("periodic task failed", f)
        )
        self._loops.append(loop)

    def _listen(self, host: str, port: int) -> None:
        site = StatusSite(self.status, self.metrics)
        try:
            self._port = self._reactor.listenTCP(port, site, interface=host)
        except Exception as e:
            raise ConfigError(
                f"cannot serve HTTP on {host}:{port}: {e}; choose another with "
                "--http HOST:PORT or set http = false in [monitor]"
            ) from None
        address = self._port.getHost()
        _log.info(
            "status on http://{host}:{port}/ and metrics on /metrics",
            host=address.host,
            port=address.port,
        )

    @property
    def http_address(self) -> tuple[str, int] | None:
        """Where the HTTP endpoint listens (its real port when 0 was asked)."""
        if self._port is None:
            return None
        address = self._port.getHost()
        return address.host, address.port

    def stop(self) -> Deferred[Any]:
        """Stop everything: loops, checks (their runs killed), rules, services.

        Services are stopped with their stop policy. The Deferred fires when
        every service's process group has been reaped; the checks' runs in
        flight have then been cancelled and their process groups are being
        terminated (see :meth:`CheckRunner.stop`).
        """
        _log.info("monitor stopping")
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops.clear()
        self.rules.stop()
        steps: list[Deferred[Any]] = [self.checks.stop(), self.supervisor.stop()]
        if self._port is not None:
            steps.append(maybeDeferred(self._port.stopListening))
            self._port = None
        return DeferredList(steps, consumeErrors=True)

    # -- periodic work ------------------------------------------------------

    def _scan(self) -> None:
        try:
            found = self.rules.check()
        except OSError as e:
            # An exception would end the LoopingCall, and with it every later
            # scan; the table may well be readable next time.
            _log.error(
                "rules not applied: cannot read the process table: {error}",
                error=e,
            )
            return
        if found:
            self.findings = (self.findings + found)[-_RECENT_FINDINGS:]

    def _summary(self) -> None:
        services = self.supervisor.status()
        running = sum(1 for s in services.values() if s.state == "RUNNING")
        checks = self.checks.status
        # What needs a person: services given up on, and failing checks.
        failing = [
            f"service {n} (FATAL)" for n, s in services.items() if s.state == "FATAL"
        ] + [
            f"check {n} ({c.last_outcome})"
            for n, c in sorted(checks.items())
            if c.last_outcome not in (None, "ok")
        ]
        _log.info(
            "summary: {running}/{total} services running; {nchecks} checks; "
            "failing: {failing}; processes running: {services_running} services, "
            "{checks_running} checks, {actions_running} actions; {queued} queued",
            running=running,
            total=len(services),
            nchecks=len(checks),
            failing=", ".join(failing) or "none",
            failing_count=len(failing),
            services_running=sum(1 for s in services.values() if s.pid is not None),
            checks_running=sum(1 for c in checks.values() if c.running),
            actions_running=sum(1 for c in checks.values() if c.action_running),
            queued=self.scheduler.queued,
        )

    # -- reporting ---------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Everything the monitor knows, JSON-ready."""
        counters = self.rules.counters
        return {
            "source": self.config.source,
            "pid": os.getpid(),
            "started": self._started_at,
            "uptime": None
            if self._started_at is None
            else time.time() - self._started_at,
            "cpu_seconds": time.process_time() - self._cpu_at_start,
            "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "scheduler": self.scheduler.stats(),
            "services": {
                name: status.to_dict()
                for name, status in self.supervisor.status().items()
            },
            "checks": {
                name: status.to_dict() for name, status in self.checks.status.items()
            },
            "rules": {
                rule.name: {
                    "matches": counters[rule.name].matches,
                    "signals_sent": counters[rule.name].signals_sent,
                    "action": rule.action,
                    "dry_run": rule.dry_run,
                }
                for rule in self.rules.rules
            },
            "recent_findings": [str(f) for f in self.findings],
        }

    def metrics(self) -> list[Metric]:
        """Prometheus metrics: services, checks, rules, runs, the monitor
        process itself (see :mod:`procwork.monitor._metrics`)."""
        return [
            *monitor_metrics(
                version=_version(),
                services=self.supervisor.status(),
                checks=self.checks.status,
                rules=self.rules.counters,
                queued=self.scheduler.queued,
            ),
            *process_metrics(),
        ]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("procwork")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "unknown"


# -- the command -------------------------------------------------------------


def _text_observer(stream: TextIO) -> ILogObserver:
    def observe(event: dict[str, Any]) -> None:
        text = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text += "\n" + failure.getTraceback()
        stamp = time.strftime(
            "%H:%M:%S", time.localtime(event.get("log_time", time.time()))
        )
        namespace = event.get("log_namespace", "")
        stream.write(f"{stamp} [{namespace}] {text}\n")
        stream.flush()

    return observe  # type: ignore[return-value]


def _json_observer(stream: TextIO) -> ILogObserver:
    def observe(event: dict[str, Any]) -> None:
        record = json.loads(eventAsJSON(event))
        record["text"] = formatEvent(event)
        stream.write(json.dumps(record, default=str) + "\n")
        stream.flush()

    return observe  # type: ignore[return-value]


def _start_logging(json_log: bool) -> None:
    observer = _json_observer(sys.stdout) if json_log else _text_observer(sys.stdout)
    # zope interfaces again: these classes provide what the casts say.
    predicate = cast(
        ILogFilterPredicate, LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
    )
    filtered = cast(ILogObserver, FilteringLogObserver(observer, [predicate]))
    globalLogBeginner.beginLoggingTo([filtered], redirectStandardIO=False)


def main(
    config_path: str | None,
    *,
    http: str | None = None,
    json_log: bool = False,
    duration: float | None = None,
    check_only: bool = False,
) -> int:
    """Run the monitor until Ctrl-C, SIGTERM or ``duration``; exit status."""
    try:
        config = load_config(config_path)
        address = parse_http(http) if http is not None else None
    except ConfigError as e:
        print(f"procwork monitor: {e}", file=sys.stderr)
        return 2
    if check_only:
        # The effective config on stdout (it can be saved and run); the
        # verdict on stderr, so a redirect keeps the TOML clean.
        sys.stdout.write(dump_config(config))
        print(
            f"{config.source}: ok: {len(config.services)} services, "
            f"{len(config.checks)} checks, {len(config.rules)} rules",
            file=sys.stderr,
        )
        return 0
    _start_logging(json_log or config.json_log)
    monitor = Monitor(config)
    reap_orphans(all_children=True)  # if PID 1/subreaper: our children are procwork's
    try:
        try:
            monitor.start(http=address)
        except ConfigError as e:
            print(f"procwork monitor: {e}", file=sys.stderr)
            untwisted.run(monitor.stop(), timeout=60)
            return 2
        untwisted.run(Deferred(), timeout=duration)
    except untwisted.Timeout:
        _log.info("monitor ran for its --duration of {duration} s", duration=duration)
    except (KeyboardInterrupt, SystemExit):
        _log.info("monitor interrupted")
    untwisted.run(monitor.stop(), timeout=120)
    _log.info("monitor stopped")
    return 0
