"""``procwork timeout``: coreutils ``timeout(1)``, taking the command's whole tree.

Same argv, same exit statuses (124 timed out, 125 its own failure, 126/127
cannot execute / not found, else the command's, 128+N killed by N), same
signals passed on, and like coreutils it dies of the signal that killed the
command so that the calling shell sees that death. Where it differs:

- it is a child subreaper, and signals the command's process group and every
  process descended from the command, those that moved to a group of their
  own too (coreutils: its own group only);
- procwork's lifeline helper kills the command's group if ``procwork
  timeout`` itself is SIGKILLed (coreutils: the command runs on); with
  ``--contain``, where procwork may make cgroups, the command's cgroup,
  whole, so that processes that left the group die too
  (:mod:`procwork.cli._timeout_cgroup`);
- after a timeout or a signal passed on, whatever the command left running
  is SIGKILLed (after the ``-k`` duration if given) before it returns;
  leftovers of a command that ended on its own are left alone, as coreutils
  does, unless ``--kill-leftovers``.

It imports only the standard library, and :func:`procwork.cli.main`
dispatches to it before importing anything else, so that it starts in a few
tens of milliseconds (the lifeline helper too is a standard-library
script). ``procwork run`` uses its duration parser and
:func:`die_by_signal`. The loop needs no reactor: the signals it handles are
blocked and taken one at a time with ``sigtimedwait``.
"""

from __future__ import annotations

import errno
import getopt
import os
import signal
import struct
import sys
import time
from collections.abc import Sequence

TYPE_CHECKING = False  # typing's import costs milliseconds here
if TYPE_CHECKING:
    from procwork.cli._timeout_cgroup import TimeoutCgroup

__all__ = [
    "EXIT_CANNOT_EXECUTE",
    "EXIT_FAILURE",
    "EXIT_NOT_FOUND",
    "EXIT_TIMED_OUT",
    "die_by_signal",
    "main",
    "parse_duration",
    "parse_signal",
]

EXIT_TIMED_OUT = 124
EXIT_FAILURE = 125
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127

PROG = "procwork timeout"

USAGE = f"""\
Usage: {PROG} [OPTION] DURATION COMMAND [ARG]...
Start COMMAND, and kill its whole tree if still running after DURATION.

  -s, --signal=SIGNAL       the signal sent on time out (default TERM): a name
                            (with or without SIG) or a number
  -k, --kill-after=DURATION also send KILL this long after the first signal
      --preserve-status     exit with COMMAND's status even when it times out
      --foreground          leave COMMAND in this process group, so that it can
                            use the terminal; only COMMAND is signalled then
      --kill-leftovers      also kill what COMMAND left running when it exits
      --contain             start COMMAND in a cgroup of its own, where
                            procwork may make one (not with --foreground):
                            the lifeline then kills processes that left
                            COMMAND's group too
  -v, --verbose             say on stderr when a signal is sent
      --help                show this help and exit
      --version             show the version and exit

DURATION is a number of seconds (fractions allowed) with an optional suffix
s, m, h or d; 0 means no timeout. Exit status: 124 if COMMAND timed out (and
not --preserve-status), 125 if procwork timeout failed, 126 if COMMAND could
not be executed, 127 if not found, else COMMAND's. When the signal sent on
time out is KILL (-s KILL, or -k), procwork timeout then dies of KILL too, as
coreutils does (the shell sees 137); with --foreground it exits 137.
Unlike coreutils, the signals go to COMMAND's process group and to every
process descended from it, and if procwork timeout is SIGKILLed, its
lifeline kills COMMAND's group (with --contain, its cgroup, whole).
"""

#: One record to the lifeline helper: ``procwork._lifeline_main.RECORD``
#: (restated here so as not to import the package; a test pins the two).
RECORD = struct.Struct("=cQ")

_PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h

# strtod's syntax, which coreutils parses DURATION with: hexadecimal first,
# so that "0x1p-3" is not read as "0" followed by garbage.
_NUMBER = r"""[+-]?(?:
        0x(?:[0-9a-f]+\.?[0-9a-f]*|\.[0-9a-f]+)(?:p[+-]?[0-9]+)?
      | (?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[+-]?[0-9]+)?
      | inf(?:inity)? | nan(?:\([0-9a-z_]*\))?
    )"""
# "1", "2.5m", ".5": read without the regular expression, whose module and
# compilation would cost procwork timeout's start a good 10 ms.
_PLAIN = frozenset("0123456789.")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

# The signals handled (blocked, then taken by sigtimedwait), as coreutils
# handles them: SIGCHLD says the command may have ended, SIGALRM means "time
# out now", the others are passed on to the command.
_PASSED_ON = (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTERM)

# The longest single wait: sigtimedwait cannot take "1e300 seconds".
_LONGEST_WAIT = 86400.0

# The longest wait for SIGKILLed leftovers to be gone (a process in
# uninterruptible sleep can take a while; we give up rather than hang).
_KILLED_WITHIN = 10.0


def parse_duration(text: str) -> float:
    """Seconds from a coreutils DURATION: ``"1.5"``, ``"2m"``, ``"0x1p-3s"``.

    A number as ``strtod`` reads it (decimal, hexadecimal, ``inf``), then at
    most one suffix, ``s``, ``m``, ``h`` or ``d``. 0 and ``inf`` both mean
    "no timeout" to the callers.

    Raises:
        ValueError: not such a duration, or negative, or NaN.
    """
    stripped = text.lstrip(" \t\n\v\f\r")
    unit = stripped[-1:] if stripped[-1:] in ("s", "m", "h", "d") else ""
    number = stripped[: len(stripped) - len(unit)]
    if not (_PLAIN.issuperset(number) and number.count(".") <= 1 and number != "."):
        import re

        match = re.match(_NUMBER, stripped, re.VERBOSE | re.IGNORECASE | re.ASCII)
        unit = stripped[match.end() :] if match else ""
        number = match.group() if match and unit in _UNITS else ""
    if not number:
        raise ValueError(
            f"invalid time interval {text!r}: give a number of seconds with an "
            "optional suffix s, m, h or d (0: no timeout)"
        )
    value = float.fromhex(number) if "x" in number.lower() else _float(number)
    if not value >= 0:  # negative or NaN
        raise ValueError(
            f"invalid time interval {text!r}: it must be 0 (no timeout) or more"
        )
    return value * _UNITS[unit]


def _float(number: str) -> float:
    # float() does not know strtod's "nan(chars)".
    return float("nan") if number.lower().startswith("nan") else float(number)


def parse_signal(text: str) -> int:
    """The signal number named by ``text``, as coreutils reads ``-s``.

    A name, any case, with or without ``SIG`` (``TERM``, ``sigkill``,
    ``RTMIN+2``, ``EXIT`` for 0), or a number: 0 to 64, or a shell status
    128+N or 256+N meaning N.

    Raises:
        ValueError: no such signal.
    """
    number: int | None = None
    if text.isascii() and text.isdigit():
        number = int(text)
        if number > 255:
            number -= 256  # ksh reports a death by signal N as 256+N
        elif number > 127:
            number -= 128
    else:
        name = text.upper()
        name = name[3:] if name.startswith("SIG") else name
        realtime = None
        if name.startswith("RT"):
            import re

            realtime = re.fullmatch(r"RTMIN(?:\+([0-9]+))?|RTMAX(?:-([0-9]+))?", name)
        if name == "EXIT":
            number = 0
        elif realtime:
            above_min, below_max = realtime.groups()
            if name.startswith("RTMIN"):
                number = int(signal.SIGRTMIN) + int(above_min or 0)
            else:
                number = int(signal.SIGRTMAX) - int(below_max or 0)
        elif name:
            found = signal.Signals.__members__.get("SIG" + name)
            number = None if found is None else int(found)
    if number is None or not (number == 0 or number in signal.valid_signals()):
        raise ValueError(
            f"invalid signal {text!r}: give a name (TERM, SIGKILL, RTMIN+1) or a number"
        )
    return number


def signal_name(signum: int) -> str:
    """``TERM``, ``RTMIN+1``, or the number."""
    try:
        return signal.Signals(signum).name[3:]
    except ValueError:
        low, high = int(signal.SIGRTMIN), int(signal.SIGRTMAX)
        if low <= signum <= high:
            return f"RTMIN+{signum - low}"
        return str(signum)


def die_by_signal(signum: int) -> int:
    """Die of ``signum`` (core dumps disabled), as a shell's command would.

    So that the calling shell sees the death by signal a command wrapped in
    ``procwork timeout`` or ``procwork run`` died of (and a ``while`` loop
    stops at Ctrl-C). Returns 128+N if that signal does not kill (SIGCHLD,
    SIGWINCH), for the caller to exit with.
    """
    import resource

    for stream in (sys.stdout, sys.stderr):
        with _ignoring(OSError, ValueError):
            stream.flush()
    with _ignoring(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with _ignoring(OSError, ValueError):  # SIGKILL has no handler
        signal.signal(signum, signal.SIG_DFL)
    with _ignoring(OSError, ValueError):
        os.kill(os.getpid(), signum)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signum])
    return 128 + signum


class _ignoring:  # contextlib.suppress, whose import costs milliseconds here
    def __init__(self, *errors: type[BaseException]) -> None:
        self.errors = errors

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        return kind is not None and issubclass(kind, self.errors)


class _Usage(Exception):
    """A usage error: exit 125 after the message."""


class _Options:
    def __init__(self, args: Sequence[str]) -> None:
        self.signum = int(signal.SIGTERM)
        self.kill_after = 0.0
        self.preserve_status = False
        self.foreground = False
        self.kill_leftovers = False
        self.contain = False
        self.verbose = False
        self.help = self.version = False
        try:
            options, rest = getopt.getopt(
                _spell_out_kill_leftovers(args),
                "k:s:v",
                [
                    "kill-after=",
                    "signal=",
                    "verbose",
                    "preserve-status",
                    "foreground",
                    _KILL_LEFTOVERS,
                    "contain",
                    "help",
                    "version",
                ],
            )
        except getopt.GetoptError as e:
            raise _Usage(str(e)) from None
        try:
            for option, value in options:
                if option in ("-k", "--kill-after"):
                    self.kill_after = parse_duration(value)
                elif option in ("-s", "--signal"):
                    self.signum = parse_signal(value)
                elif option in ("-v", "--verbose"):
                    self.verbose = True
                elif option == "--" + _KILL_LEFTOVERS:
                    self.kill_leftovers = True
                elif option == "--contain":
                    self.contain = True
                else:
                    setattr(self, option[2:].replace("-", "_"), True)
            if self.help or self.version:
                return
            if len(rest) < 2:
                raise _Usage("missing operand" if not rest else "missing command")
            self.duration = parse_duration(rest[0])
        except ValueError as e:
            raise _Usage(str(e)) from None
        self.command = rest[1:]


# getopt accepts unique prefixes of long options, and coreutils users may
# write --kill=5 for --kill-after=5: the one option coreutils lacks goes by
# a name that no prefix of "kill-after" shares, once found among the options.
_KILL_LEFTOVERS = "procwork-kill-leftovers"


def _spell_out_kill_leftovers(args: Sequence[str]) -> list[str]:
    spelled = list(args)
    index = 0
    while index < len(spelled):
        arg = spelled[index]
        if arg == "--" or arg == "-" or not arg.startswith("-"):
            break  # the end of the options
        if arg == "--kill-leftovers":
            spelled[index] = "--" + _KILL_LEFTOVERS
        elif arg.startswith("--"):
            name = arg[2:]
            if "=" not in name and any(
                option.startswith(name) for option in ("kill-after", "signal")
            ):
                index += 1  # its value is the next argument
        else:
            for position, letter in enumerate(arg[1:], 1):
                if letter in "ks":
                    index += position == len(arg) - 1  # -k 5, not -k5
                    break
        index += 1
    return spelled


def main(args: Sequence[str]) -> int:
    """``procwork timeout [OPTION] DURATION COMMAND [ARG]...``; the exit status.

    ``args`` are the arguments after ``timeout``. May not return: when the
    command dies of a signal (not sent on time out), this process dies of it.
    """
    try:
        options = _Options(args)
    except _Usage as e:
        print(
            f"{PROG}: {e}\nTry '{PROG} --help' for more information.", file=sys.stderr
        )
        return EXIT_FAILURE
    if options.help:
        sys.stdout.write(USAGE)
        return 0
    if options.version:
        # The one version source (importing it brings Twisted: only here).
        from untwisted._version import __version__

        print(f"{PROG} (procwork {__version__})")
        return 0
    return _Timeout(options).run()


class _Timeout:
    """One run: the command, its tree, the lifeline, and coreutils' state."""

    def __init__(self, options: _Options) -> None:
        self.options = options
        self.term_signal = options.signum
        self.kill_after = options.kill_after
        self.pid = 0
        self.reaped = False  # the command's pid is no longer its
        self.helper_pid = 0
        self.lifeline: int | None = None  # our end of the pipe to the helper
        self.timed_out = False
        self.signalled = False  # a signal went to the tree
        self.last_signal = 0
        self.alarm_at: float | None = None
        self.kill_at: float | None = None  # when -k's KILL is due
        # coreutils sends a timeout's KILL to its own group, itself included.
        self.killed_itself = False
        self.cgroup: TimeoutCgroup | None = None
        self.handled: set[int] = {signal.SIGCHLD, signal.SIGALRM, *_PASSED_ON}
        if self.term_signal not in (0, signal.SIGKILL, signal.SIGSTOP):
            self.handled.add(self.term_signal)

    def run(self) -> int:
        options = self.options
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, self.handled)
        # Inherited as ignored, SIGCHLD would have the kernel reap the
        # command behind our back.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        # A command in a process group of its own is in the background of a
        # terminal: writing to it must not stop us (coreutils does the same).
        for sig in (signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(sig, signal.SIG_IGN)
        if not options.foreground:
            self.start_lifeline()
            _become_subreaper()
            if options.contain:
                self.make_cgroup()
        status = self.start(old_mask)
        if status is not None:
            return status
        duration = options.duration
        if 0 < duration < float("inf"):
            self.alarm_at = time.monotonic() + duration
        status = self.wait()
        if not options.foreground:
            self.end_leftovers()
        if self.killed_itself:
            # The shell sees what coreutils' own KILL shows it (the tree is
            # gone by now: end_leftovers waited for it).
            return die_by_signal(signal.SIGKILL)
        return self.exit_status(status)

    # -- starting ------------------------------------------------------------

    def start_lifeline(self) -> None:
        from procwork._lifeline_start import start_helper

        read_end, write_end = os.pipe()
        try:
            helper = start_helper(read_end)
        except OSError as e:
            os.close(write_end)
            print(
                f"{PROG}: warning: no lifeline ({e}): if killed, the command "
                "will outlive procwork timeout",
                file=sys.stderr,
            )
            return
        finally:
            os.close(read_end)
        self.helper_pid = helper.pid
        self.lifeline = write_end

    def tell_lifeline(self, op: bytes, pgid: int, path: str = "") -> None:
        """One record; with ``path``, one of a cgroup (``C`` made, ``c``
        let go), whose number is the length of the path that follows."""
        payload = os.fsencode(path)
        if self.lifeline is not None:
            with _ignoring(OSError):  # the helper is gone: no one to tell
                os.write(self.lifeline, RECORD.pack(op, pgid or len(payload)) + payload)

    def make_cgroup(self) -> None:
        """A cgroup for the command, registered with the lifeline before
        the command exists; where none can be had, the group and the tree
        only (said with ``-v``)."""
        from procwork.cli._timeout_cgroup import contain

        announced: list[str] = []

        def announce(path: str) -> None:
            announced.append(path)
            self.tell_lifeline(b"C", 0, path)

        made = contain(os.getpid(), announce)
        if isinstance(made, str):
            for path in announced:
                self.tell_lifeline(b"c", 0, path)
            self.say(f"not contained by a cgroup ({made}): process groups only")
            return
        self.cgroup = made

    def say(self, message: str) -> None:
        if self.options.verbose:
            print(f"{PROG}: {message}", file=sys.stderr)

    def start(self, old_mask: set[int | signal.Signals]) -> int | None:
        """Fork and exec the command; None, or the exit status if it failed."""
        command = self.options.command
        gate_read, gate_write = os.pipe()
        error_read, error_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child, until exec
            try:
                os.close(gate_write)
                os.close(error_read)
                if not self.options.foreground:
                    os.setpgid(0, 0)
                # Python ignores SIGPIPE and SIGXFSZ; coreutils' handlers
                # leave the signals it passes on at their default in the
                # command, even those we inherited as ignored.
                for sig in (
                    signal.SIGTTIN,
                    signal.SIGTTOU,
                    signal.SIGPIPE,
                    signal.SIGXFSZ,
                    *self.handled,
                ):
                    signal.signal(sig, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
                # Wait until the lifeline knows our group: if procwork timeout
                # is killed before, the gate reads end-of-file and we never
                # start the command.
                if os.read(gate_read, 1) != b"g":
                    os._exit(EXIT_FAILURE)
                os.execvp(command[0], command)
            except OSError as e:
                os.write(error_write, str(e.errno).encode())
            except BaseException:
                pass
            os._exit(EXIT_NOT_FOUND)
        self.pid = pid
        os.close(error_write)
        os.close(gate_read)
        if not self.options.foreground:
            with _ignoring(OSError):  # both sides: whichever is first
                os.setpgid(pid, pid)
            self.enter_cgroup(pid)
            self.tell_lifeline(b"+", pid)
        os.write(gate_write, b"g")
        os.close(gate_write)
        failure = b""
        while chunk := os.read(error_read, 32):
            failure += chunk
        os.close(error_read)
        if not failure:
            return None
        os.waitpid(pid, 0)
        self.tell_lifeline(b"-", pid)
        code = int(failure)
        print(
            f"{PROG}: failed to run command {command[0]!r}: {os.strerror(code)}",
            file=sys.stderr,
        )
        return EXIT_NOT_FOUND if code == errno.ENOENT else EXIT_CANNOT_EXECUTE

    def enter_cgroup(self, pid: int) -> None:
        # The child waits at the gate: nothing of the command runs yet, so
        # nothing can be born outside the cgroup.
        if self.cgroup is None:
            return
        try:
            self.cgroup.enter(pid)
        except OSError as e:
            self.say(f"not contained by a cgroup ({e}): process groups only")
            self.close_cgroup()

    def close_cgroup(self) -> None:
        if self.cgroup is None:
            return
        why = self.cgroup.close()
        if why:
            self.say(f"{self.cgroup.path} is left: {why}")
        self.tell_lifeline(b"c", 0, self.cgroup.path)
        self.cgroup = None

    # -- waiting -------------------------------------------------------------

    def wait(self) -> int:
        """Pass signals on and time out until the command ends; its wait status."""
        while True:
            wait = _LONGEST_WAIT
            if self.alarm_at is not None:
                wait = min(wait, max(0.0, self.alarm_at - time.monotonic()))
            info = signal.sigtimedwait(self.handled, wait)
            if info is None:
                if self.alarm_at is not None and time.monotonic() >= self.alarm_at:
                    self.alarm_at = None
                    self.time_out()
                continue
            if info.si_signo == signal.SIGCHLD:
                status = self.reap()
                if status is not None:
                    return status
            elif info.si_signo == signal.SIGALRM:
                self.time_out()
            else:
                self.cleanup(info.si_signo)

    def time_out(self) -> None:
        self.timed_out = True
        if self.term_signal == signal.SIGKILL and not self.options.foreground:
            self.killed_itself = True
        self.cleanup(self.term_signal)

    def cleanup(self, signum: int) -> None:
        """coreutils' ``cleanup``: arm ``-k`` (once), then signal the tree."""
        if self.kill_after:
            self.term_signal = signal.SIGKILL
            self.alarm_at = self.kill_at = time.monotonic() + self.kill_after
            self.kill_after = 0
        self.send(signum)

    def send(self, signum: int) -> None:
        if self.options.verbose:
            print(
                f"{PROG}: sending signal {signal_name(signum)} to command "
                f"{self.options.command[0]!r}",
                file=sys.stderr,
            )
        self.signalled = True
        self.last_signal = signum
        self.signal_tree(signum)

    def signal_tree(self, signum: int) -> None:
        """Signal the command (unless reaped: its pid may be another's),
        and but with --foreground its group, cgroup and our descendants."""
        command = [] if self.reaped else [self.pid]
        if self.options.foreground:
            for pid in command:
                _kill(pid, signum)
            return
        # Listed before the command is signalled: the children of a command
        # that just died are on their way to us, and a listing then can
        # miss them.
        targets = self.tree()
        for pid in command:
            _kill(pid, signum)
        if signum == signal.SIGKILL and self.cgroup is not None:
            self.cgroup.kill()  # at once, racing no fork
        for pid in targets:
            _kill(pid, signum)
        if signum not in (0, signal.SIGKILL, signal.SIGCONT):
            # A stopped process would keep its signal until continued.
            for pid in [*command, *targets]:
                _kill(pid, signal.SIGCONT)

    def reap(self) -> int | None:
        """Reap every child that ended (orphans come to us too).

        Returns the wait status of the command if it was one of them.
        """
        found = None
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return found
            if pid == 0:
                return found
            if pid == self.pid:
                found = status
                self.reaped = True

    def tree(self) -> list[int]:
        """Every live process of the command's group or descended from us
        (but the lifeline helper); the group first, as a negative pid."""
        found: list[int] = []
        try:
            os.killpg(self.pid, 0)
            found.append(-self.pid)
        except OSError:
            pass
        pending = [os.getpid()]
        while pending:
            for child in _children(pending.pop()):
                if child != self.helper_pid:
                    found.append(child)
                    pending.append(child)
        return found

    # -- ending --------------------------------------------------------------

    def end_leftovers(self) -> None:
        """Kill what the command left (after a signal, or if asked); then
        tell the lifeline that the group is no concern of it any more."""
        if (self.signalled or self.options.kill_leftovers) and self.leftovers():
            if not self.signalled:
                self.cleanup(self.term_signal)
            self.kill_leftovers_at(self.kill_at or time.monotonic())
        self.tell_lifeline(b"-", self.pid)
        self.close_cgroup()

    def leftovers(self) -> bool:
        self.reap()
        if self.cgroup is not None and self.cgroup.populated():
            return True
        return any(pid < 0 or not _zombie(pid) for pid in self.tree())

    def kill_leftovers_at(self, kill_at: float) -> None:
        deadline = kill_at + _KILLED_WITHIN
        killed = self.last_signal == signal.SIGKILL  # and they are dying
        while self.leftovers() and time.monotonic() < deadline:
            if killed:
                # What a listing missed (an orphan on its way to us as its
                # parent died, a child forked meanwhile) gets it now.
                self.signal_tree(signal.SIGKILL)
            elif time.monotonic() >= kill_at:
                self.send(signal.SIGKILL)
                killed = True
            wait = 0.05 if killed else max(0.0, min(0.05, kill_at - time.monotonic()))
            signal.sigtimedwait({signal.SIGCHLD}, wait)

    def exit_status(self, status: int) -> int:
        """coreutils' exit status; dies of the command's signal if it did."""
        preserve = self.options.preserve_status
        if os.WIFEXITED(status):
            code = os.WEXITSTATUS(status)
        else:
            signum = os.WTERMSIG(status)
            if os.WCOREDUMP(status):
                print(f"{PROG}: the monitored command dumped core", file=sys.stderr)
            if not self.timed_out:
                return die_by_signal(signum)
            # So that a KILL after -k can be told from the command's 124.
            preserve = preserve or signum == signal.SIGKILL
            code = 128 + signum
        return EXIT_TIMED_OUT if self.timed_out and not preserve else code


def _kill(pid: int, signum: int) -> None:
    with _ignoring(OSError):  # gone since, or not ours any more
        os.kill(pid, signum)  # a negative pid: the group


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for thread in threads:
        try:
            with open(f"/proc/{pid}/task/{thread}/children") as f:
                found.extend(int(child) for child in f.read().split())
        except (OSError, ValueError):
            pass
    return found


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return True  # gone


def _become_subreaper() -> None:
    # Orphans of the command's tree (a daemonizing grandchild, say) come to
    # us instead of init: they stay in our tree, so we find them and signal
    # them, however they changed their process group.
    import ctypes

    with _ignoring(OSError, AttributeError):  # not Linux: the group only
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
