"""Watchdog rules: find runaway processes on the machine and stop them.

This is what the user's watchdog began as (killing long-running CGIs). A
:class:`Rule` selects processes by name, command line and user, and acts on
those that ran too long, used too much CPU (in all, or as a share of a core
between two scans) or too much memory, for one scan or ``for_scans`` in a
row: log them, or SIGTERM them and SIGKILL them after a grace period, or
SIGKILL them at once. :class:`RuleEngine` applies rules to a
:class:`~procwork.monitor._proctable.ProcessTable`; what it finds names the
process by its command line (cut to :data:`COMMAND_SHOWN` characters), since
``sleep`` or ``python3`` alone says little.

A rule that signals acts on the matched process and its whole tree of
descendants, found from ``/proc`` parent links when it acts: a CGI's children
die with it instead of being orphaned. How a tree is frozen, signalled and
killed after its grace is :mod:`procwork.monitor._treekill`'s.

Safety first: by default a rule never signals procwork itself, its parent,
pid 1, kernel threads, or another user's processes; a rule must name them
(``allow_pids``, ``allow_other_users`` or ``user``) to reach them. A signal is
only ever sent to the very process that was found: pids are reused, so a
process is named by its pid *and* start time, and pidfds close the remaining
race.
"""

from __future__ import annotations

import functools
import os
import re
import signal
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import Literal

import attrs
from attrs import converters
from twisted.logger import Logger, LogLevel

from procwork import _validate as validate
from procwork._errors import ConfigError
from procwork._escalation import Escalation
from procwork._fields import keyed, spec_class
from procwork._format import format_seconds
from procwork._reactor import Reactor, default_reactor
from procwork.monitor._proctable import LinuxProcessTable, ProcessTable, ProcInfo
from procwork.monitor._treekill import (
    STOP_SIGNALS,
    Identity,
    SignalSender,
    Spared,
    TreeStop,
    TreeTarget,
    count,
    freeze,
    kill_tree,
    signal_frozen,
    signal_process,
    tree_of,
    tree_words,
)

__all__ = [
    "COMMAND_SHOWN",
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

_log = Logger(namespace="procwork.rules")

#: Characters of a process's command line in a finding (longer: cut, "...").
COMMAND_SHOWN = 120


@spec_class("rule")
@attrs.frozen(field_transformer=keyed)
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
        max_cpu: CPU seconds (user + system) the process may use, in all.
        cpu_percent: The share of one core (user + system) the process may
            use between two scans, in percent: 100 is a whole core (a
            process with several busy threads can pass it). Read from
            ``/proc`` at each scan, so a process is judged from its second
            scan on.
        max_rss: Resident memory in bytes the process may use (or a size:
            ``"512M"``, ``"2G"``; K is 1024 bytes).
        for_scans: A process must break a threshold at this many scans in a
            row (``rules_every`` apart) before the rule acts: ``cpu_percent
            = 80`` with ``for_scans = 5`` is "above 80 % of a core for five
            scans". Any threshold; default 1.
        action: ``"log"`` only reports; ``"term"`` sends SIGTERM, then SIGKILL
            after ``grace`` seconds to what is still alive; ``"kill"`` sends
            SIGKILL at once. Both act on the process and all its descendants.
        grace: Seconds between SIGTERM and SIGKILL. Default 5.
        dry_run: Report what would be done; signal nothing.
        allow_other_users: Allow acting on processes of users other than
            procwork's own. Default False.
        allow_pids: Pids the rule may act on although they are protected
            (procwork itself, its parent, pid 1, kernel threads); a list is
            kept as a frozenset.

    Every duration also takes a string with units (``"90s"``, ``"10m"``).

    Raises:
        ConfigError: A field is invalid; the message names the rule and field.
    """

    name: str = attrs.field(validator=validate.text)
    process_name: str | None = attrs.field(
        default=None, validator=validate.optional(validate.text)
    )
    cmdline: str | None = attrs.field(
        default=None, converter=converters.optional(validate.pattern)
    )
    user: str | None = attrs.field(
        default=None, validator=validate.optional(validate.text)
    )
    max_age: float | None = attrs.field(
        default=None,
        converter=validate.optional_duration,
        validator=validate.optional(validate.non_negative),
    )
    max_cpu: float | None = attrs.field(
        default=None,
        converter=validate.optional_duration,
        validator=validate.optional(validate.non_negative),
    )
    max_rss: int | None = attrs.field(
        default=None,
        converter=validate.optional_size,
        validator=validate.optional(validate.whole(0)),
    )
    cpu_percent: float | None = attrs.field(
        default=None,
        converter=converters.optional(validate.number),
        validator=validate.optional(validate.non_negative),
    )
    for_scans: int = attrs.field(default=1, validator=validate.whole(1))
    action: Action = attrs.field(default="log", validator=validate.one_of(_ACTIONS))
    grace: float = attrs.field(
        default=5.0, converter=validate.duration, validator=validate.non_negative
    )
    dry_run: bool = attrs.field(default=False, validator=validate.boolean)
    allow_other_users: bool = attrs.field(default=False, validator=validate.boolean)
    allow_pids: frozenset[int] = attrs.field(
        default=frozenset(), converter=validate.pids
    )
    # The cmdline, compiled once (it was checked by its converter).
    _cmdline_re: re.Pattern[str] | None = attrs.field(
        init=False,
        repr=False,
        eq=False,
        default=attrs.Factory(
            lambda rule: None if rule.cmdline is None else re.compile(rule.cmdline),
            takes_self=True,
        ),
    )

    def __attrs_post_init__(self) -> None:
        if self.process_name is None and self.cmdline is None and self.user is None:
            raise validate.Invalid(
                "no selector: set at least one of process_name, cmdline, user"
            )
        if (
            self.max_age is None
            and self.max_cpu is None
            and self.max_rss is None
            and self.cpu_percent is None
        ):
            raise validate.Invalid(
                "no threshold: set at least one of max_age, max_cpu, max_rss, "
                "cpu_percent"
            )

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

    def match(
        self, process: ProcInfo, now: float, cpu_share: float | None = None
    ) -> str | None:
        """Why the process breaks this rule, or None if it does not.

        Args:
            process: The process to judge.
            now: The current time in seconds since the epoch.
            cpu_share: The share of a core it used since the last scan, in
                percent; None if not known (its first scan), which breaks
                no ``cpu_percent``.

        Returns:
            The thresholds exceeded, e.g. ``"ran 312 s > max_age 300 s"``.
        """
        if not self.selects(process):
            return None
        reasons = []
        age = now - process.start_time
        if self.max_age is not None and age > self.max_age:
            ran = format_seconds(age)
            reasons.append(f"ran {ran} s > max_age {self.max_age:g} s")
        if self.max_cpu is not None and process.cpu_seconds > self.max_cpu:
            cpu = format_seconds(process.cpu_seconds)
            reasons.append(f"used {cpu} CPU s > max_cpu {self.max_cpu:g} s")
        if self.max_rss is not None and process.rss_bytes > self.max_rss:
            reasons.append(
                f"RSS {_bytes(process.rss_bytes)} > max_rss {_bytes(self.max_rss)}"
            )
        if (
            self.cpu_percent is not None
            and cpu_share is not None
            and cpu_share > self.cpu_percent
        ):
            reasons.append(
                f"CPU {cpu_share:.0f}% of a core > cpu_percent {self.cpu_percent:g}%"
            )
        return "; ".join(reasons) or None


@dataclass(frozen=True)
class Finding:
    """What one rule found about one process, and what was done.

    Attributes:
        rule: The rule that matched.
        process: The process as it was seen.
        reason: The thresholds it exceeded, e.g. ``"ran 312 s > max_age 300 s"``.
        action: What was done, e.g. ``"sent SIGTERM"``, ``"sent SIGTERM to it
            and its 2 descendants (pids 41, 42)"``, ``"would send SIGTERM
            (dry run)"``, ``"sent SIGKILL after grace 5 s"``, ``"spared: pid 1
            (init) ..."``.
    """

    rule: Rule
    process: ProcInfo
    reason: str
    action: str

    @property
    def command(self) -> str:
        """The process's command line, cut to :data:`COMMAND_SHOWN` characters
        (``[name]`` for a process without one, as ``ps`` shows it)."""
        text = self.process.command_line()
        if len(text) <= COMMAND_SHOWN:
            return text
        return text[: COMMAND_SHOWN - 3] + "..."

    def __str__(self) -> str:
        return (
            f"rule {self.rule.name!r}: pid {self.process.pid} ({self.command})"
            f" {self.reason}: {self.action}"
        )


@dataclass
class RuleCounters:
    """Running totals of one rule, since the engine was made.

    Attributes:
        matches: Processes that matched, each counted once for as long as it
            keeps matching (not once per scan).
        signals_sent: SIGTERMs and SIGKILLs delivered, to the matched
            processes and to their descendants (the SIGSTOP and SIGCONT that
            freeze a tree while it is signalled are not counted).
    """

    matches: int = 0
    signals_sent: int = 0


class RuleEngine:
    """Applies watchdog rules to the machine's processes.

    Call :meth:`check` periodically (e.g. from ``clockwork.every``). Call it
    and :meth:`stop` from the reactor thread: escalations are reactor timers.

    A rule that signals acts on the matched process *and all its
    descendants*, found from the parent links in the process table at the
    moment of action (a descendant that started its own session or process
    group is still a descendant); see :mod:`procwork.monitor._treekill` for
    how a tree that forks is caught whole.

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
        reactor: Reactor | None = None,
        send_signal: SignalSender | None = None,
        log: Logger | None = None,
        dry_run: bool = False,
    ) -> None:
        self._rules = _unique(rules)
        self._counters = {rule.name: RuleCounters() for rule in self._rules}
        self._table = table if table is not None else LinuxProcessTable()
        if reactor is None:
            reactor = default_reactor()
        self._reactor = reactor
        self._send_signal = send_signal or functools.partial(
            signal_process, self._table
        )
        self._log = log if log is not None else _log
        self._dry_run = dry_run
        # (rule name, process identity) of every match already reported: a
        # process is reported once per rule for as long as it keeps matching.
        # Identities are (pid, start_time): a reused pid is another process.
        self._reported: set[tuple[str, Identity]] = set()
        # Every process signalled as part of a tree, to the tree's record.
        self._stopping: dict[Identity, TreeStop] = {}
        self._pending: set[TreeStop] = set()
        # Scans in a row each (rule, process) has broken the rule, for
        # for_scans: only the processes breaking a rule at the last scan.
        self._streaks: dict[tuple[str, Identity], int] = {}
        # CPU seconds of each process at the last scan and its time, for
        # cpu_percent: only the processes alive at that scan.
        self._cpu: dict[Identity, float] = {}
        self._cpu_at: float | None = None
        self._escalated: list[Callable[[Finding], object]] = []

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The rules, in the order they are applied."""
        return self._rules

    @property
    def counters(self) -> Mapping[str, RuleCounters]:
        """Totals per rule name (read-only)."""
        return MappingProxyType(self._counters)

    def listen(self, escalated: Callable[[Finding], object]) -> None:
        """Call ``escalated(finding)`` when a ``term`` rule's grace ends and
        what is left of the tree gets SIGKILL (the finding says whom); it is
        logged too. Called in the reactor thread; must not raise."""
        self._escalated.append(escalated)

    def check(self) -> list[Finding]:
        """Scan the process table once, act on every new match, and report.

        A process matches a rule once it has broken it at ``for_scans``
        scans in a row. It is reported (and counted) once per rule while it
        keeps matching; later scans say nothing more about it. A process
        that breaks several rules is signalled by the first that acts on
        it; a process already signalled, alone or with the tree of an
        ancestor, is not signalled again.

        Returns:
            One finding per rule and newly matching process. SIGKILL
            escalations happen later: they are logged, and told to
            :meth:`listen`'s listeners.

        Raises:
            OSError: The process table itself cannot be read.
        """
        processes = [p for p in self._table.snapshot() if not p.is_dead]
        self._forget_exited({p.identity for p in processes})
        now = self._reactor.seconds()
        shares = self._cpu_shares(processes, now)
        streaks, self._streaks = self._streaks, {}
        findings = []
        # Oldest first: a parent started no later than its children, so a
        # matching tree is acted on from its top, and matching descendants
        # are then found already signalled with it.
        for process in sorted(processes, key=lambda p: (p.start_time, p.pid)):
            for rule in self._rules:
                key = (rule.name, process.identity)
                reason = rule.match(process, now, shares.get(process.identity))
                if reason is None:
                    self._reported.discard(key)
                    continue
                streak = self._streaks[key] = streaks.get(key, 0) + 1
                if streak >= rule.for_scans and key not in self._reported:
                    if rule.for_scans > 1:
                        reason += f" for {rule.for_scans} scans"
                    self._reported.add(key)
                    self._counters[rule.name].matches += 1
                    findings.append(self._act(rule, process, reason))
        return findings

    def _cpu_shares(
        self, processes: list[ProcInfo], now: float
    ) -> dict[Identity, float]:
        """Each process's share of a core since the last scan, in percent
        (its CPU seconds then and now, from ``/proc``'s ticks); none for a
        process first seen now, or when no rule has ``cpu_percent``."""
        if not any(rule.cpu_percent is not None for rule in self._rules):
            self._cpu, self._cpu_at = {}, None
            return {}
        before, then = self._cpu, self._cpu_at
        self._cpu = {p.identity: p.cpu_seconds for p in processes}
        self._cpu_at = now
        if then is None or now <= then:
            return {}  # the first scan, or the clock went back
        elapsed = now - then
        return {
            identity: max(0.0, 100 * (cpu - before[identity]) / elapsed)
            for identity, cpu in self._cpu.items()
            if identity in before
        }

    def stop(self) -> None:
        """Cancel pending SIGKILL escalations; processes already SIGTERMed are left."""
        for tree in self._pending:
            if tree.escalation is not None:
                tree.escalation.cancel()
        self._pending.clear()
        self._stopping.clear()

    def update(self, rules: Iterable[Rule]) -> None:
        """Take new rules, keeping what the unchanged ones know.

        A rule is known by its name. One equal to the running rule of that
        name keeps its counters, the processes it has reported (they are not
        reported again) and its pending SIGKILL escalations. One that
        differs starts afresh, as a new one does: its escalations are
        cancelled, as :meth:`stop` cancels them, and a process that still
        breaks it is reported (and acted on) again at the next scan. A rule
        no longer given is dropped the same way. The rules are applied in
        the new order from the next :meth:`check`.

        Raises:
            ConfigError: Two rules share a name; nothing is changed.
        """
        new = _unique(rules)
        running = {rule.name: rule for rule in self._rules}
        kept = {rule.name for rule in new if running.get(rule.name) == rule}
        self._rules = new
        self._counters = {
            rule.name: self._counters[rule.name]
            if rule.name in kept
            else RuleCounters()
            for rule in new
        }
        self._reported = {key for key in self._reported if key[0] in kept}
        self._streaks = {k: n for k, n in self._streaks.items() if k[0] in kept}
        for tree in [t for t in self._pending if t.finding.rule.name not in kept]:
            if tree.escalation is not None:
                tree.escalation.cancel()
            self._pending.discard(tree)
        self._stopping = {
            identity: tree
            for identity, tree in self._stopping.items()
            if tree.finding.rule.name in kept
        }

    def _act(self, rule: Rule, process: ProcInfo, reason: str) -> Finding:
        def report(action: str, level: LogLevel = LogLevel.warn) -> Finding:
            finding = Finding(rule, process, reason, action)
            self._emit(finding, level)
            return finding

        if rule.action == "log":
            return report("logged")
        tree = self._stopping.get(process.identity)
        if tree is not None:
            sent = _signal_name(tree.signum)
            root = tree.finding.process
            if root.identity == process.identity:
                return report(f"{sent} already sent; not signalled twice")
            return report(
                f"{sent} already sent with the tree of pid {root.pid}", LogLevel.info
            )
        protection = self._protection(rule, process)
        if protection is not None:
            return report(f"spared: {protection}", LogLevel.info)
        signum = STOP_SIGNALS[rule.action]
        name = _signal_name(signum)
        spared = self._spared_by(rule)
        if rule.dry_run or self._dry_run:
            snapshot = self._table.snapshot()
            members = [process] + [
                p
                for p in tree_of(snapshot, [process], spared)
                if p.identity != process.identity and not p.is_dead
            ]
            return report(f"would send {name}{tree_words(members)} (dry run)")
        try:
            members = freeze(self._table, self._send_signal, [process], spared)
        except OSError as e:
            return report(f"could not send {name}: {e.strerror or e}", LogLevel.error)
        if not members:
            return report(f"exited before {name} could be sent", LogLevel.info)
        delivered = signal_frozen(self._send_signal, members, signum)
        self._counters[rule.name].signals_sent += len(delivered)
        if not delivered:
            return report(f"exited before {name} could be sent", LogLevel.info)
        finding = report(f"sent {name}{tree_words(delivered)}")
        tree = TreeStop(finding, signum, {p.identity: p for p in members})
        for identity in tree.members:
            self._stopping[identity] = tree
        if signum == signal.SIGTERM:
            # The SIGTERM went out above, tree-wide; procwork's one kill
            # escalation times the SIGKILL, which is _escalate's.
            target = TreeTarget(tree, self._escalate)
            tree.escalation = Escalation(target, self._reactor)
            tree.escalation.arm(rule.grace)
            self._pending.add(tree)
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

    def _spared_by(self, rule: Rule) -> Spared:
        def spared(process: ProcInfo) -> bool:
            return self._protection(rule, process) is not None

        return spared

    def _escalate(self, tree: TreeStop) -> None:
        """A ``term`` rule's grace is over: SIGKILL what is left of the tree."""
        tree.escalation = None
        self._pending.discard(tree)
        earlier = tree.finding
        rule = earlier.rule
        grace = f"{rule.grace:g} s"
        try:
            members, delivered = kill_tree(
                self._table, self._send_signal, tree, self._spared_by(rule)
            )
        except OSError as e:
            self._emit(
                Finding(rule, earlier.process, earlier.reason, f"could not stop: {e}"),
                LogLevel.error,
            )
            return
        if not members:
            self._emit(
                Finding(
                    rule,
                    earlier.process,
                    earlier.reason,
                    f"exited within grace {grace} after SIGTERM",
                ),
                LogLevel.info,
            )
            return
        self._counters[rule.name].signals_sent += len(delivered)
        for process in members:
            self._stopping[process.identity] = tree
        if earlier.process.identity in {p.identity for p in delivered}:
            action = f"sent SIGKILL after grace {grace}{tree_words(delivered)}"
        elif delivered:
            pids = ", ".join(str(p.pid) for p in delivered)
            action = (
                f"exited within grace {grace} after SIGTERM;"
                f" sent SIGKILL to {count(len(delivered), 'descendant')}"
                f" left (pids {pids})"
            )
        else:
            action = f"exited within grace {grace} after SIGTERM"
        escalation = Finding(rule, earlier.process, earlier.reason, action)
        self._emit(escalation, LogLevel.warn)
        if delivered:
            for listener in list(self._escalated):
                try:
                    listener(escalation)
                except Exception:
                    _log.failure("a rule escalation listener failed")

    def _forget_exited(self, alive: set[Identity]) -> None:
        self._reported = {key for key in self._reported if key[1] in alive}
        for identity in [i for i in self._stopping if i not in alive]:
            del self._stopping[identity]

    def _emit(self, finding: Finding, level: LogLevel) -> None:
        self._log.emit(
            level,
            "rule {rule}: pid {pid} ({command}) {reason}: {action}",
            rule=finding.rule.name,
            pid=finding.process.pid,
            process_name=finding.process.name,
            command=finding.command,
            reason=finding.reason,
            action=finding.action,
            finding=finding,
        )


def _unique(rules: Iterable[Rule]) -> tuple[Rule, ...]:
    """``rules`` as a tuple, refused if two share a name."""
    rules = tuple(rules)
    names: set[str] = set()
    for rule in rules:
        if rule.name in names:
            raise ConfigError(
                f"rule {rule.name!r}: name used twice; rule names must be unique"
            )
        names.add(rule.name)
    return rules


def _signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def _bytes(value: float) -> str:
    if value < 1024:
        return f"{value:.0f} B"
    value /= 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
