"""Watchdog rules: find runaway processes on the machine and stop them.

This is what the user's watchdog began as (killing long-running CGIs). A
:class:`Rule` selects processes by name, command line and user, and acts on
those that ran too long, used too much CPU or too much memory: log them, or
SIGTERM them and SIGKILL them after a grace period, or SIGKILL them at once.
:class:`RuleEngine` applies rules to a :class:`~procwork.monitor.ProcessTable`.

Safety first: by default a rule never signals procwork itself, its parent,
pid 1, kernel threads, or another user's processes; a rule must name them
(``allow_pids``, ``allow_other_users`` or ``user``) to reach them. A signal is
only ever sent to the very process that matched: pids are reused, so a process
is named by its pid *and* start time, and pidfds close the remaining race.
"""

from __future__ import annotations

import errno
import functools
import math
import os
import re
import signal
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import Any, Literal, NoReturn, Protocol, cast

from twisted.logger import Logger, LogLevel

from procwork._errors import ConfigError
from procwork.monitor._proctable import LinuxProcessTable, ProcessTable, ProcInfo

__all__ = [
    "Action",
    "Finding",
    "Rule",
    "RuleCounters",
    "RuleEngine",
    "SignalSender",
    "signal_process",
]

Action = Literal["log", "term", "kill"]
_ACTIONS: tuple[Action, ...] = ("log", "term", "kill")

SignalSender = Callable[[ProcInfo, int], bool]
"""Sends a signal to exactly that process: ``(process, signum) -> sent``.

Returns False if the process is gone (or its pid now names another process);
raises :class:`OSError` if it could not be signalled (e.g. permission denied).
"""

_log = Logger(namespace="procwork.rules")


# Structural stand-ins for IReactorTime / IDelayedCall: mypy cannot check
# zope interfaces (their methods are declared without self).
class _ReactorTime(Protocol):
    def seconds(self) -> float: ...
    def callLater(
        self, delay: float, callable: Callable[..., Any], *args: Any
    ) -> Any: ...


class _DelayedCall(Protocol):
    def active(self) -> bool: ...
    def cancel(self) -> None: ...


@dataclass(frozen=True)
class Rule:
    """Which processes are runaways, and what to do about them.

    A process matches when it matches every selector that is set and exceeds
    *any* threshold that is set. At least one selector and one threshold are
    required.

    Args:
        name: Names the rule in findings, logs and errors; unique per engine.
        process_name: Glob (or exact name) matched against the process's short
            name (``comm``) or the last path component of its ``argv[0]``.
        cmdline: Regular expression searched for in the arguments joined by
            spaces.
        user: User name the process must run as. Naming a user also allows
            the rule to act on that user's processes.
        max_age: Seconds the process may run.
        max_cpu: CPU seconds (user + system) the process may use.
        max_rss: Resident memory in bytes the process may use.
        action: ``"log"`` only reports; ``"term"`` sends SIGTERM, then SIGKILL
            after ``grace`` seconds if the same process is still alive;
            ``"kill"`` sends SIGKILL at once.
        grace: Seconds between SIGTERM and SIGKILL. Default 5.
        dry_run: Report what would be done; signal nothing.
        allow_other_users: Allow acting on processes of users other than
            procwork's own. Default False.
        allow_pids: Pids the rule may act on although they are protected
            (procwork itself, its parent, pid 1, kernel threads).

    Raises:
        ConfigError: A field is invalid; the message names the rule and field.
    """

    name: str
    process_name: str | None = None
    cmdline: str | None = None
    user: str | None = None
    max_age: float | None = None
    max_cpu: float | None = None
    max_rss: int | None = None
    action: Action = "log"
    grace: float = 5.0
    dry_run: bool = False
    allow_other_users: bool = False
    allow_pids: frozenset[int] = frozenset()
    _cmdline_re: re.Pattern[str] | None = field(
        init=False, repr=False, compare=False, default=None
    )

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(
                f"rule name must be a non-empty string, got {self.name!r}"
            )
        for key in ("process_name", "cmdline", "user"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value):
                self._invalid(f"{key} must be a non-empty string, got {value!r}")
        if self.process_name is None and self.cmdline is None and self.user is None:
            self._invalid(
                "no selector: set at least one of process_name, cmdline, user"
            )
        if self.cmdline is not None:
            try:
                object.__setattr__(self, "_cmdline_re", re.compile(self.cmdline))
            except re.error as e:
                self._invalid(f"cmdline is not a valid regular expression ({e})")
        for key in ("max_age", "max_cpu", "max_rss"):
            value = getattr(self, key)
            if value is not None:
                self._check_non_negative(key, value, integer=key == "max_rss")
        if self.max_age is None and self.max_cpu is None and self.max_rss is None:
            self._invalid("no threshold: set at least one of max_age, max_cpu, max_rss")
        if self.action not in _ACTIONS:
            self._invalid(
                f"action must be one of 'log', 'term', 'kill', got {self.action!r}"
            )
        self._check_non_negative("grace", self.grace)
        for key in ("dry_run", "allow_other_users"):
            if not isinstance(getattr(self, key), bool):
                self._invalid(
                    f"{key} must be true or false, got {getattr(self, key)!r}"
                )
        try:
            # Accept any iterable of pids (a list from a config file), keep a frozenset.
            pids = frozenset(self.allow_pids)
        except TypeError:
            self._invalid(f"allow_pids must be a list of pids, got {self.allow_pids!r}")
        for pid in pids:
            if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
                self._invalid(f"allow_pids must hold positive pids, got {pid!r}")
        object.__setattr__(self, "allow_pids", pids)

    def _invalid(self, problem: str) -> NoReturn:
        raise ConfigError(f"rule {self.name!r}: {problem}")

    def _check_non_negative(
        self, key: str, value: object, integer: bool = False
    ) -> None:
        kinds = (int,) if integer else (int, float)
        if not isinstance(value, kinds) or isinstance(value, bool):
            unit = "a whole number" if integer else "a number"
            self._invalid(f"{key} must be {unit}, got {value!r}")
        elif not math.isfinite(value) or value < 0:
            self._invalid(f"{key} must be a finite number >= 0, got {value!r}")

    def selects(self, process: ProcInfo) -> bool:
        """Whether the process matches every selector of this rule."""
        if self.process_name is not None:
            # comm is cut to 15 characters, so a long script name is also
            # looked for in argv[0].
            argv0 = os.path.basename(process.cmdline[0]) if process.cmdline else ""
            if not (
                fnmatchcase(process.name, self.process_name)
                or fnmatchcase(argv0, self.process_name)
            ):
                return False
        if self._cmdline_re is not None and not self._cmdline_re.search(
            " ".join(process.cmdline)
        ):
            return False
        return self.user is None or process.user == self.user

    def match(self, process: ProcInfo, now: float) -> str | None:
        """Why the process breaks this rule, or None if it does not.

        Args:
            process: The process to judge.
            now: The current time in seconds since the epoch.

        Returns:
            The thresholds exceeded, e.g. ``"ran 312 s > max_age 300 s"``.
        """
        if not self.selects(process):
            return None
        reasons = []
        age = now - process.start_time
        if self.max_age is not None and age > self.max_age:
            reasons.append(f"ran {_seconds(age)} s > max_age {self.max_age:g} s")
        if self.max_cpu is not None and process.cpu_seconds > self.max_cpu:
            cpu = _seconds(process.cpu_seconds)
            reasons.append(f"used {cpu} CPU s > max_cpu {self.max_cpu:g} s")
        if self.max_rss is not None and process.rss_bytes > self.max_rss:
            reasons.append(
                f"RSS {_bytes(process.rss_bytes)} > max_rss {_bytes(self.max_rss)}"
            )
        return "; ".join(reasons) or None


@dataclass(frozen=True)
class Finding:
    """What one rule found about one process, and what was done.

    Attributes:
        rule: The rule that matched.
        process: The process as it was seen.
        reason: The thresholds it exceeded, e.g. ``"ran 312 s > max_age 300 s"``.
        action: What was done, e.g. ``"sent SIGTERM"``,
            ``"would send SIGTERM (dry run)"``, ``"sent SIGKILL after grace 5 s"``,
            ``"spared: pid 1 (init) ..."``.
    """

    rule: Rule
    process: ProcInfo
    reason: str
    action: str

    def __str__(self) -> str:
        return (
            f"rule {self.rule.name!r}: pid {self.process.pid} ({self.process.name})"
            f" {self.reason}: {self.action}"
        )


@dataclass
class RuleCounters:
    """Running totals of one rule, since the engine was made.

    Attributes:
        matches: Times a process matched (once per process per check).
        signals_sent: Signals actually delivered (SIGTERM and SIGKILL both count).
    """

    matches: int = 0
    signals_sent: int = 0


@dataclass
class _Signalled:
    """A process procwork has signalled, until it is seen gone."""

    finding: Finding
    signum: int
    kill_call: _DelayedCall | None = None


class RuleEngine:
    """Applies watchdog rules to the machine's processes.

    Call :meth:`check` periodically (e.g. from ``clockwork.every``). Call it
    and :meth:`stop` from the reactor thread: escalations are reactor timers.

    Args:
        rules: The rules, applied in order; names must be unique.
        table: Where processes are read; default :class:`LinuxProcessTable`.
        reactor: An ``IReactorTime``: ``callLater`` schedules SIGKILL
            escalation and ``seconds()`` is the wall clock for process ages
            (the real reactor's is ``time.time()``; a test ``Clock`` is
            advanced to the epoch wanted).
            Default the global reactor, imported on first use.
        send_signal: Delivers a signal to one process; default
            :func:`signal_process` on ``table``.
        log: Receives one structured event per finding (key ``finding``).
        dry_run: Treat every rule as dry-run.

    Raises:
        ConfigError: Two rules share a name.
    """

    def __init__(
        self,
        rules: Iterable[Rule],
        table: ProcessTable | None = None,
        *,
        reactor: _ReactorTime | None = None,
        send_signal: SignalSender | None = None,
        log: Logger | None = None,
        dry_run: bool = False,
    ) -> None:
        self._rules = tuple(rules)
        self._counters: dict[str, RuleCounters] = {}
        for rule in self._rules:
            if rule.name in self._counters:
                raise ConfigError(
                    f"rule {rule.name!r}: name used twice; rule names must be unique"
                )
            self._counters[rule.name] = RuleCounters()
        self._table = table if table is not None else LinuxProcessTable()
        if reactor is None:
            # Imported here, not at module import, so importing procwork
            # never installs a reactor.
            from twisted.internet import reactor as global_reactor

            reactor = cast(_ReactorTime, global_reactor)
        self._reactor = reactor
        self._send_signal = send_signal or functools.partial(
            signal_process, self._table
        )
        self._log = log if log is not None else _log
        self._dry_run = dry_run
        # Keyed by (pid, start_time): a reused pid is a different process.
        self._signalled: dict[tuple[int, float], _Signalled] = {}

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The rules, in the order they are applied."""
        return self._rules

    @property
    def counters(self) -> Mapping[str, RuleCounters]:
        """Totals per rule name (read-only)."""
        return MappingProxyType(self._counters)

    def check(self) -> list[Finding]:
        """Scan the process table once, act on every match, and report.

        A process that breaks several rules is signalled by the first that
        acts on it; a process already signalled is not signalled again.

        Returns:
            One finding per rule and matching process, in rule order per
            process. SIGKILL escalations happen later and are only logged.

        Raises:
            OSError: The process table itself cannot be read.
        """
        processes = [p for p in self._table.snapshot() if not p.is_dead]
        self._forget_exited({p.identity for p in processes})
        now = self._reactor.seconds()
        findings = []
        for process in processes:
            for rule in self._rules:
                reason = rule.match(process, now)
                if reason is not None:
                    self._counters[rule.name].matches += 1
                    findings.append(self._act(rule, process, reason))
        return findings

    def stop(self) -> None:
        """Cancel pending SIGKILL escalations; processes already SIGTERMed are left."""
        for signalled in self._signalled.values():
            if signalled.kill_call is not None and signalled.kill_call.active():
                signalled.kill_call.cancel()
        self._signalled.clear()

    def _act(self, rule: Rule, process: ProcInfo, reason: str) -> Finding:
        def report(action: str, level: LogLevel = LogLevel.warn) -> Finding:
            finding = Finding(rule, process, reason, action)
            self._emit(finding, level)
            return finding

        if rule.action == "log":
            return report("logged")
        signalled = self._signalled.get(process.identity)
        if signalled is not None:
            return report(
                f"{_signal_name(signalled.signum)} already sent; not signalled twice",
                LogLevel.debug,
            )
        protection = self._protection(rule, process)
        if protection is not None:
            return report(f"spared: {protection}", LogLevel.info)
        signum = signal.SIGTERM if rule.action == "term" else signal.SIGKILL
        name = _signal_name(signum)
        if rule.dry_run or self._dry_run:
            return report(f"would send {name} (dry run)")
        try:
            sent = self._send_signal(process, signum)
        except OSError as e:
            return report(f"could not send {name}: {e.strerror or e}", LogLevel.error)
        if not sent:
            return report(f"exited before {name} could be sent", LogLevel.info)
        self._counters[rule.name].signals_sent += 1
        finding = report(f"sent {name}")
        signalled = _Signalled(finding, signum)
        if signum == signal.SIGTERM:
            signalled.kill_call = self._reactor.callLater(
                rule.grace, self._escalate, signalled
            )
        self._signalled[process.identity] = signalled
        return finding

    def _protection(self, rule: Rule, process: ProcInfo) -> str | None:
        """Why the rule may not signal this process, or None if it may."""
        if process.pid in rule.allow_pids:
            return None
        hint = "name its pid in allow_pids to allow"
        if process.pid == os.getpid():
            return f"procwork's own process ({hint})"
        if process.pid == os.getppid():
            return f"procwork's parent ({hint})"
        if process.pid == 1:
            return f"pid 1 (init) ({hint})"
        if process.is_kernel_thread:
            return f"a kernel thread ({hint})"
        if process.uid != os.geteuid() and not (rule.allow_other_users or rule.user):
            return (
                f"process of another user, {process.user}"
                " (set allow_other_users or user to allow)"
            )
        return None

    def _escalate(self, signalled: _Signalled) -> None:
        signalled.kill_call = None
        earlier = signalled.finding
        grace = f"{earlier.rule.grace:g} s"
        # The pid may have been reused during the grace period: only the
        # process that was SIGTERMed (same pid, same start time) gets SIGKILL.
        current = self._table.get(earlier.process.pid)
        if (
            current is None
            or current.identity != earlier.process.identity
            or current.is_dead
        ):
            del self._signalled[earlier.process.identity]
            self._emit(
                Finding(
                    earlier.rule,
                    earlier.process,
                    earlier.reason,
                    f"exited within grace {grace} after SIGTERM",
                ),
                LogLevel.info,
            )
            return
        try:
            sent = self._send_signal(current, signal.SIGKILL)
        except OSError as e:
            action, level = f"could not send SIGKILL: {e.strerror or e}", LogLevel.error
        else:
            if sent:
                self._counters[earlier.rule.name].signals_sent += 1
                signalled.signum = signal.SIGKILL
                action, level = f"sent SIGKILL after grace {grace}", LogLevel.warn
            else:
                del self._signalled[earlier.process.identity]
                action, level = (
                    f"exited within grace {grace} after SIGTERM",
                    LogLevel.info,
                )
        self._emit(Finding(earlier.rule, current, earlier.reason, action), level)

    def _forget_exited(self, alive: set[tuple[int, float]]) -> None:
        for identity in [i for i in self._signalled if i not in alive]:
            signalled = self._signalled.pop(identity)
            if signalled.kill_call is not None and signalled.kill_call.active():
                signalled.kill_call.cancel()

    def _emit(self, finding: Finding, level: LogLevel) -> None:
        self._log.emit(
            level,
            "rule {rule}: pid {pid} ({process_name}) {reason}: {action}",
            rule=finding.rule.name,
            pid=finding.process.pid,
            process_name=finding.process.name,
            reason=finding.reason,
            action=finding.action,
            finding=finding,
        )


def signal_process(table: ProcessTable, process: ProcInfo, signum: int) -> bool:
    """Send a signal to exactly this process, never to a reuser of its pid.

    The process is looked up again and must still have the same start time.
    With a pidfd (Linux 5.3+) that check is made after the pidfd is opened, so
    the signal cannot reach another process; without one, a tiny window
    remains between the check and :func:`os.kill`.

    Args:
        table: Where to look the process up again.
        process: The process to signal, as it was seen.
        signum: The signal.

    Returns:
        True if sent; False if the process has exited or its pid was reused.

    Raises:
        OSError: The signal could not be sent (e.g. :class:`PermissionError`).
    """
    if hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal"):
        try:
            pidfd = os.pidfd_open(process.pid)
        except ProcessLookupError:
            return False
        except OSError as e:
            # No pidfd here (old kernel, seccomp filter): fall back to kill().
            if e.errno not in (errno.ENOSYS, errno.EPERM, errno.EINVAL):
                raise
        else:
            try:
                if not _still_alive(table, process):
                    return False
                signal.pidfd_send_signal(pidfd, signum)
            except ProcessLookupError:
                return False
            finally:
                os.close(pidfd)
            return True
    if not _still_alive(table, process):
        return False
    try:
        os.kill(process.pid, signum)
    except ProcessLookupError:
        return False
    return True


def _still_alive(table: ProcessTable, process: ProcInfo) -> bool:
    current = table.get(process.pid)
    return (
        current is not None
        and current.identity == process.identity
        and not current.is_dead
    )


def _signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def _seconds(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _bytes(value: float) -> str:
    if value < 1024:
        return f"{value:.0f} B"
    value /= 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
