"""``procwork monitor``: services, checks and watchdog rules from one config.

The command is a thin consumer of the library: a :class:`Monitor` composes a
:class:`~procwork.supervisor.Supervisor`, a :class:`CheckRunner` and a
:class:`RuleEngine` on one reactor, reports what happens as log
events, and serves its status over HTTP.
"""

from __future__ import annotations

import atexit
import os
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any, cast

from twisted.internet.defer import (
    Deferred,
    DeferredList,
    fail,
    maybeDeferred,
    succeed,
)
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

import untwisted
from procwork._api import scheduler as default_scheduler
from procwork._cgroup import Containment
from procwork._errors import ConfigError
from procwork._lifeline import (
    AlreadyRunning,
    default_lock_path,
    hold_instance_lock,
    start_lifeline,
)
from procwork._load import SystemLoad
from procwork._orphans import reap_orphans
from procwork._reactor import default_reactor
from procwork._scheduler import Scheduler
from procwork.monitor import _contain, _cpupriority
from procwork.monitor._alerts import AlertDispatcher
from procwork.monitor._checks import CheckRunner, CheckSpec, CheckStatus, RunFunction
from procwork.monitor._config import BUILTIN, MonitorConfig, load_config, parse_http
from procwork.monitor._control import Controller, listen_control
from procwork.monitor._events import (
    Event,
    ServiceEvents,
    check_event,
    escalation_event,
    rule_events,
)
from procwork.monitor._http import CappedFactory, Guard, Metric, StatusSite
from procwork.monitor._logs import LevelFilter, start_logging
from procwork.monitor._logsocket import DatagramWriter
from procwork.monitor._logwriter import LogWriter
from procwork.monitor._looplag import LoopLag
from procwork.monitor._metrics import (
    control_metrics,
    http_metrics,
    monitor_metrics,
    process_metrics,
    watchdog_metrics,
)
from procwork.monitor._proctable import ProcessTable
from procwork.monitor._reload import ConfigDiff, diff_config
from procwork.monitor._rules import Finding, RuleEngine
from procwork.monitor._sdnotify import SystemdNotifier
from procwork.monitor._toml import dump_config
from procwork.supervisor import ProcessFactory, ServiceLogTrouble, Supervisor

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
        containment: Where the services' cgroups go (default none: process groups).
    """

    def __init__(
        self,
        config: MonitorConfig,
        *,
        reactor: Any = None,  # all of it: listenTCP, LoopingCall.clock (zope types)
        scheduler: Scheduler | None = None,
        run: RunFunction | None = None,
        process_factory: ProcessFactory | None = None,
        process_table: ProcessTable | None = None,
        containment: Containment | None = None,
    ) -> None:
        if reactor is None:
            reactor = default_reactor()
        self.config = config
        self.containment = containment
        self._reactor = reactor
        self.scheduler = scheduler if scheduler is not None else default_scheduler()
        if config.max_running is not None:
            self.scheduler.set_max_running(config.max_running)
        self.scheduler.load = SystemLoad(max_load=config.max_load)
        self.supervisor = Supervisor(
            reactor, process_factory=process_factory, containment=containment
        )
        for spec in config.services:
            self.supervisor.add(spec)
        self._run_checks = run if run is not None else self._run
        self.checks = self._check_runner(config)
        self.rules = RuleEngine(config.rules, process_table, reactor=reactor)
        # Events and alerts (see _alerts.py).
        self.alerts = AlertDispatcher(
            config.alerts,
            reactor=reactor,
            run=run if run is not None else self._run,
        )
        self.supervisor.listen(
            ServiceEvents(self._event, self._repeat_every, reactor.seconds)
        )
        self.checks.listen(self._check_changed)
        self.service_rules = _contain.watch(self.supervisor, config, self._event)
        self.rules.listen(
            lambda found: self._event(escalation_event(found, reactor.seconds()))
        )
        # The monitor watched too: its reactor's lag, its own log's
        # writer (set by main(), which owns stdout), its services' logs.
        self.loop_lag = LoopLag(reactor)
        self.log_writer: LogWriter | DatagramWriter | None = None
        self.log_levels: LevelFilter | None = None  # main()'s: a reload sets it
        self.supervisor.listen_log_trouble(self._log_trouble)
        self.findings: list[Finding] = []
        self.controller = Controller(self)
        self._loops: list[LoopingCall] = []
        self._port: Any = None
        self._control_port: Any = None
        self._reloading: Deferred[None] = succeed(None)
        self._shutdown: Deferred[None] = Deferred()
        self._stopping = False
        self._http_factory: CappedFactory | None = None
        self._http_guard: Guard | None = None  # what HTTP refused, by status
        self._started_at: float | None = None
        self._cpu_at_start = 0.0

    def _check_runner(self, config: MonitorConfig) -> CheckRunner:
        # The reactor's clock is the wall clock on a real reactor; one clock
        # for the checks' timestamps and the services' start times.
        return CheckRunner(
            config.checks,
            reactor=self._reactor,
            run=self._run_checks,
            wall_clock=self._reactor.seconds,
            # restart = [...] and signal = "HUP" act on the services, no fork.
            services=self.supervisor,
        )

    def _run(self, argv: list[str], **kwargs: Any) -> Deferred[Any]:
        from procwork._api import run

        return run(argv, scheduler=self.scheduler, **kwargs)

    # -- life cycle ------------------------------------------------------

    def start(
        self,
        http: tuple[str, int] | None = None,
        *,
        socket: str | None = None,
        control: bool = False,
    ) -> None:
        """Start services, checks, rules, summaries, the HTTP endpoint and
        the control socket.

        Args:
            http: Where to serve HTTP (default the config's).
            socket: The control socket's path (default the config's, else
                :func:`~procwork.monitor.default_socket_path`).
            control: Serve the control socket. Off by default for a
                Monitor a program embeds; ``procwork monitor`` turns it on
                unless the config says ``socket = false``.

        Raises:
            ConfigError: the HTTP port or the control socket cannot be had.
        """
        self._started_at = time.time()
        self._cpu_at_start = time.process_time()
        http = http if http is not None else self.config.http
        if control:
            self._control_port = listen_control(
                socket if socket is not None else self.config.socket,
                self.controller,
                self._reactor,
            )
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
        _log.info("containment: {how}", how=_contain.describe(self.containment))
        self._event(
            Event(
                "monitor.started",
                str(self.config.source),
                "started",
                f"monitor started from {self.config.source}",
                time=self._reactor.seconds(),
                fields={"pid": os.getpid()},
            )
        )
        self.supervisor.start()
        self.checks.start()
        self._start_loops()
        self.loop_lag.start()

    def _start_loops(self) -> None:
        if self.config.rules:
            self._every(self.config.rules_every, self._scan)
        if self.config.service_rules:
            self._every(self.config.rules_every, self.service_rules.check)
        if self.config.summary_every:
            self._every(self.config.summary_every, self._summary, now=False)

    def _stop_loops(self) -> None:
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops.clear()

    def _every(self, seconds: float, fn: Any, *, now: bool = True) -> None:
        loop = LoopingCall(fn)
        loop.clock = self._reactor
        loop.start(seconds, now=now).addErrback(
            lambda f: _log.failure("periodic task failed", f)
        )
        self._loops.append(loop)

    def _listen(self, host: str, port: int) -> None:
        site = StatusSite(
            self.status,
            self.metrics,
            control=self._http_control if self.config.http_control else None,
            token=self.config.http_token,
            # The page's live tail (with http_control only: output may be secret).
            tail=self.supervisor.output if self.config.http_control else None,
        )
        self._http_guard = site.guard
        self._http_factory = CappedFactory(
            site, self.config.http_max_connections, self._reactor.seconds
        )
        try:
            self._port = self._reactor.listenTCP(
                port, self._http_factory, interface=host
            )
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

    def _http_control(self, message: dict[str, Any]) -> Deferred[dict[str, Any]]:
        if message.get("command") == "tail" and message.get("follow"):
            return succeed(
                {"procwork": 1, "ok": False, "error": "tail: follow only on the socket"}
            )
        return self.controller.handle(message, "HTTP")

    @property
    def control_path(self) -> str | None:
        """The control socket's path, if it is served."""
        if self._control_port is None:
            return None
        return cast(str, self._control_port.port)

    @property
    def reactor(self) -> Any:  # as given to __init__: the whole reactor
        """The reactor the monitor runs on."""
        return self._reactor

    @property
    def shutdown_requested(self) -> Deferred[None]:
        """Fires when ``procwork ctl shutdown`` asks the monitor to stop."""
        return self._shutdown

    def request_shutdown(self) -> None:
        """Ask whoever runs the monitor to stop it (the answer to ``ctl
        shutdown`` is sent first)."""
        if not self._shutdown.called:
            _log.info("monitor shutdown requested")
            self._reactor.callLater(0, self._shutdown.callback, None)

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
        _log.info("monitor stopping", event="monitor.stopping")
        self._stopping = True
        self._event(
            Event(
                "monitor.stopping",
                str(self.config.source),
                "stopping",
                "monitor stopping",
                time=self._reactor.seconds(),
            )
        )
        self._stop_loops()
        self.loop_lag.stop()
        self.rules.stop()
        steps: list[Deferred[Any]] = [
            self.checks.stop(),
            self.supervisor.stop(),
            self.alerts.stop(),
        ]
        for port in (self._port, self._control_port):
            if port is not None:
                steps.append(maybeDeferred(port.stopListening))
        self._port = self._control_port = None
        return DeferredList(steps, consumeErrors=True)

    # -- reload ------------------------------------------------------------

    def reload(self) -> Deferred[ConfigDiff]:
        """Read the config file again and apply the difference.

        Added services start, removed ones are stopped with their stop
        policy, changed ones restart with the new spec (see
        :meth:`Supervisor.replace`), unchanged ones are not touched. Checks
        and rules are compared by name the same way: an unchanged one keeps
        its schedule and its state (failure count, failing and alert state,
        last results; a rule's counters and the processes it reported), a
        changed one is replaced and starts afresh, an added one starts, a
        removed one stops (see :meth:`CheckRunner.update` and
        :meth:`RuleEngine.update`); alerts too, keeping their counters and
        queues (:meth:`AlertDispatcher.update`). ``[monitor]`` settings that need a
        restart (HTTP, the socket) are logged as not applied. An invalid
        file changes nothing: the Deferred fails with its
        :class:`ConfigError`, and the old config keeps running.

        Reloads run one after the other: one asked while another is being
        applied waits for it.

        Returns:
            A Deferred firing with the :class:`ConfigDiff` applied, once the
            removed and changed services' old processes are reaped and the
            new ones started, and the runs of the removed and changed checks
            cancelled.
        """
        result: Deferred[ConfigDiff] = Deferred()
        turn: Deferred[None] = Deferred()  # fires when this reload is done
        previous, self._reloading = self._reloading, turn

        def go(_: object) -> None:
            def finished(outcome: Any) -> Any:
                turn.callback(None)
                return outcome

            applied = maybeDeferred(self._reload_now).addBoth(finished)
            applied.chainDeferred(result)

        previous.addCallback(go)
        return result

    def on_sighup(self) -> None:
        """What SIGHUP does: reload. A rejected config is logged, and the
        monitor goes on with the old one; SIGHUP never stops it.

        Call from the reactor thread (a signal handler hands it over with
        ``reactor.callFromThread``).
        """
        _log.info("SIGHUP: reloading {source}", source=self.config.source)
        self.reload().addErrback(_reload_failed)

    def _reload_now(self) -> Deferred[ConfigDiff]:
        source = self.config.source
        if self._stopping:
            # A SIGHUP while stopping: nothing new may start now.
            _log.info("reload ignored: the monitor is stopping")
            return succeed(ConfigDiff())
        try:
            new = load_config(None if source == BUILTIN else source)
        except ConfigError as e:
            _log.error("reload rejected, the running config is kept: {error}", error=e)
            return fail(e)
        diff = diff_config(self.config, new)
        _log.info("reloading {source}: {diff}", source=source, diff=str(diff))
        for key in diff.not_applied:
            _log.warn(
                "reload: [monitor] {key} changed; it takes a restart of the "
                "monitor to apply",
                key=key,
            )
        old, self.config = self.config, new
        specs = {spec.name: spec for spec in new.services}
        steps: list[Deferred[Any]] = []
        # Added first, in the new order (their after lists may name each
        # other and the kept ones); then the changed ones take their new
        # specs; then the removed ones go, those started after others first.
        for name in diff.added:
            self.supervisor.add(specs[name])
        for name in diff.changed:
            steps.append(self.supervisor.replace(specs[name]))
        for name in diff.removed:
            steps.append(self.supervisor.remove(name))
        if new.max_running != old.max_running and new.max_running is not None:
            self.scheduler.set_max_running(new.max_running)
        if new.max_load != old.max_load:
            self.scheduler.load = SystemLoad(max_load=new.max_load)
        # Checks and rules by name too: the unchanged ones keep their state.
        steps.append(self.checks.update(new.checks))
        self.rules.update(new.rules)
        self.service_rules.update(new.service_rules)
        self.alerts.update(new.alerts)
        if self.log_levels is not None:
            self.log_levels.configured(new.log_level)
        if _loop_settings(new) != _loop_settings(old):
            # Else the scans and summaries go on on their schedules: a
            # reload is no reason for an extra one.
            self._stop_loops()
            self._start_loops()
        done: Deferred[Any] = DeferredList(steps, consumeErrors=True)

        def applied(_: object) -> ConfigDiff:
            _log.info("reload of {source} applied", source=source)
            return diff

        return done.addCallback(applied)

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
            now = self._reactor.seconds()
            for finding in found:
                for event in rule_events(finding, now):
                    self._event(event)

    # -- events --------------------------------------------------------------

    def _event(self, event: Event) -> None:
        self.alerts.emit(event)

    def _log_trouble(self, trouble: ServiceLogTrouble) -> None:
        # A service's log file failing (or working again), for alerts.
        self._event(
            Event(
                "service.log_recovered" if trouble.recovered else "service.log_error",
                trouble.service,
                "ok" if trouble.recovered else "failing",
                str(trouble),
                time=self._reactor.seconds(),
                fields={
                    "path": trouble.path,
                    "streams": trouble.streams,
                    "error": trouble.error,
                    "lines_lost": trouble.lines_lost,
                },
            )
        )

    def _repeat_every(self, name: str) -> float:
        for spec in self.supervisor.specs():
            if spec.name == name:
                return spec.repeat_every
        return 0.0

    def _check_changed(
        self, event: str, spec: CheckSpec, status: CheckStatus, reminder: bool
    ) -> None:
        self._event(check_event(event, spec, status, reminder, self._reactor.seconds()))

    def _summary(self) -> None:
        services = self.supervisor.status()
        running = _running(services)
        checks = self.checks.status
        # What needs a person: unhealthy services, and failing checks.
        failing = [
            f"service {n} {s.summary()}" for n, s in services.items() if not s.healthy
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

    def status_line(self) -> str:
        """One line for systemd's STATUS: services running, failing checks."""
        services = self.supervisor.status()
        running = _running(services)
        unhealthy = [f"{n} {s.state}" for n, s in services.items() if not s.healthy]
        checks = self.checks.status
        failing = [
            n for n, c in sorted(checks.items()) if c.last_outcome not in (None, "ok")
        ]
        line = f"{running}/{len(services)} services running"
        if unhealthy:
            line += f" ({len(unhealthy)} unhealthy: {', '.join(unhealthy)})"
        line += f"; {len(failing)}/{len(checks)} checks failing"
        return line + (f": {', '.join(failing)}" if failing else "")

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
            "services": _contain.service_statuses(self.supervisor),
            **_contain.status_keys(self.containment, self.service_rules),
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
            "alerts": {
                name: status.to_dict() for name, status in self.alerts.status.items()
            },
            "events": [event.to_dict() for event in self.alerts.recent],
            "http": {
                "max_connections": self.config.http_max_connections,
                "open_connections": 0
                if self._http_factory is None
                else len(self._http_factory.protocols),
                "refused_connections": 0
                if self._http_factory is None
                else self._http_factory.refused,
                "refused_requests": {}
                if self._http_guard is None
                else {str(c): n for c, n in sorted(self._http_guard.refused.items())},
            },
            # The control socket's connections (see _controlserver.py).
            "control": {
                "max_connections": self.config.control_max_connections,
                "idle_timeout": self.config.control_idle_timeout,
                **self.controller.stats.to_dict(),
            },
        }

    def metrics(self) -> list[Metric]:
        """Prometheus metrics: services, checks, rules, alerts, runs, the
        monitor process itself (see :mod:`procwork.monitor._metrics`)."""
        return [
            *monitor_metrics(
                version=untwisted.__version__,
                services=self.supervisor.status(),
                checks=self.checks.status,
                rules=self.rules.counters,
                queued=self.scheduler.queued,
                alerts=self.alerts.status,
            ),
            *http_metrics(
                None if self._http_guard is None else self._http_guard.refused
            ),
            *control_metrics(self.controller.stats),
            *_contain.cgroup_metrics(self.supervisor.cgroups.statuses()),
            *watchdog_metrics(
                log_lines_dropped=(
                    0 if self.log_writer is None else self.log_writer.dropped
                ),
                service_logs=self.supervisor.log_stats(),
                loop_lag=self.loop_lag.recent_max,
                loop_stalls=self.loop_lag.stalls,
            ),
            *process_metrics(),
        ]


def _running(services: Any) -> int:
    """Services RUNNING and healthy: one in a crash loop is not counted."""
    return sum(1 for s in services.values() if s.state == "RUNNING" and s.healthy)


def _loop_settings(config: MonitorConfig) -> tuple[object, ...]:
    """What the periodic scans and summaries are started from."""
    rules = bool(config.rules), bool(config.service_rules)
    return *rules, config.rules_every, config.summary_every


def _reload_failed(failure: Any) -> None:
    if not failure.check(ConfigError):  # a ConfigError is logged already
        _log.failure("reload failed", failure)


# -- the command -------------------------------------------------------------


def main(
    config_path: str | None,
    *,
    http: str | None = None,
    json_log: bool = False,
    duration: float | None = None,
    check_only: bool = False,
    lock_file: str | None = None,
    socket: str | None = None,
    log_level: str | None = None,
) -> int:
    """Run the monitor until Ctrl-C, SIGTERM, ``procwork ctl shutdown`` or
    ``duration``; exit status. SIGHUP reloads the config. ``log_level``
    (``--log-level``) wins over the config's.

    Only one monitor runs a configuration at a time: it holds an exclusive
    lock on ``lock_file`` (default :func:`default_lock_path`), and so does its
    lifeline helper, which kills the services if the monitor dies by SIGKILL:
    a new monitor can't start them again while the old ones still run.

    Its log goes to stdout through a writer that never blocks (lines a
    stalled reader misses are dropped, counted and said); under systemd's
    ``Type=notify`` it says READY, pings the watchdog from the reactor, keeps
    a STATUS line and says STOPPING (see :mod:`procwork.monitor._sdnotify`).
    """
    try:
        config = load_config(config_path)
        address = parse_http(http) if http is not None else None
    except ConfigError as e:
        print(f"procwork monitor: {e}", file=sys.stderr)
        return 2
    lock_path = Path(lock_file) if lock_file else default_lock_path(config_path)
    if check_only:
        # The effective config on stdout (it can be saved and run); the
        # verdict on stderr, so a redirect keeps the TOML clean.
        sys.stdout.write(dump_config(config))
        print(
            f"{config.source}: ok: {len(config.services)} services, "
            f"{len(config.checks)} checks, {len(config.rules)} rules",
            file=sys.stderr,
        )
        _contain.print_check_config(config, lock_path)
        return 0
    try:
        lock = hold_instance_lock(lock_path)
    except AlreadyRunning as e:
        print(f"procwork monitor: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(
            f"procwork monitor: cannot take the single-instance lock {lock_path}: "
            f"{e.strerror or e}; choose another with --lock-file PATH",
            file=sys.stderr,
        )
        return 1
    start_lifeline([lock])
    # Stdout (or the log daemon's socket) never blocks the monitor (see
    # _logwriter.py, _logsocket.py); at exit what waits for the reader gets
    # a bounded time to be written.
    levels = LevelFilter(log_level or config.log_level, pinned=bool(log_level))
    writer = start_logging(
        json_log or config.json_log,
        levels=levels,
        target=config.log,
        facility=config.syslog_facility,
        syslog_format=config.syslog_format,
    )
    if isinstance(writer, DatagramWriter) and writer.absent is not None:
        # Not fatal: a log daemon starting after us (or restarting) must not
        # keep the services down. What cannot wait is dropped and counted.
        print(
            f"procwork monitor: log = {config.log!r}: {writer.absent}; the "
            "lines wait for it (then are dropped and counted) until it listens",
            file=sys.stderr,
        )
    if writer is not None:
        atexit.register(writer.close)
    _cpupriority.apply_cpu_priority(config.nice, config.realtime)  # this thread's
    containment = _contain.monitor_containment(config, lock_path, default_reactor())
    monitor = Monitor(config, containment=containment)
    monitor.log_writer = writer
    monitor.log_levels = levels
    reload_on_sighup(monitor)
    reap_orphans(all_children=True)  # if PID 1/subreaper: our children are procwork's
    notifier = _systemd_notifier(monitor.reactor)
    try:
        try:
            monitor.start(http=address, socket=socket, control=config.control)
        except ConfigError as e:
            print(f"procwork monitor: {e}", file=sys.stderr)
            untwisted.run(monitor.stop(), timeout=60)
            return 2
        if notifier is not None:
            # READY from the reactor's first turn: the loop serves, and its
            # final signal handlers are in place (a SIGTERM that systemd
            # sends right after READY must find them).
            monitor.reactor.callLater(0, notifier.ready, monitor.status_line)
        untwisted.run(monitor.shutdown_requested, timeout=duration)
    except untwisted.Timeout:
        _log.info("monitor ran for its --duration of {duration} s", duration=duration)
    except (KeyboardInterrupt, SystemExit):
        _log.info("monitor interrupted")
    if notifier is not None:
        notifier.stopping()  # the pings go on while the services stop
    untwisted.run(monitor.stop(), timeout=120)
    containment.close()
    _log.info("monitor stopped")
    return 0


def _systemd_notifier(reactor: Any) -> SystemdNotifier | None:
    """The notifier when run under systemd's ``Type=notify`` (closed at
    exit), else None."""
    try:
        notifier = SystemdNotifier.from_environment(reactor)
    except (ValueError, OSError) as e:
        _log.error("not notifying systemd: {error}", error=e)
        return None
    if notifier is not None:
        atexit.register(notifier.close)
    return notifier


def reload_on_sighup(monitor: Monitor) -> None:
    """Make SIGHUP reload ``monitor``'s config. Call from the main thread.

    The handler runs between two bytecodes of the main thread, maybe inside
    a reactor callback, so it only hands the reload to the reactor, as
    Twisted's own SIGINT handler hands over ``reactor.stop``.
    """
    reactor = monitor.reactor

    def handler(signum: int, frame: Any) -> None:
        reactor.callFromThread(monitor.on_sighup)

    signal.signal(signal.SIGHUP, handler)
