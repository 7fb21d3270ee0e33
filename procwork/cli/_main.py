"""The ``procwork`` command: ``procwork run``, ``procwork monitor``,
``procwork ctl`` and ``procwork timeout``."""

from __future__ import annotations

import argparse
import atexit
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

import untwisted
from procwork._api import DEFAULT_GRACE, spawn
from procwork._errors import ProcworkError, SpawnError
from procwork._lifeline import enable_lifeline
from procwork._orphans import reap_orphans
from procwork._result import Result
from procwork._scheduler import PRIORITIES
from procwork.cli import _timeout
from procwork.cli._ctl import add_ctl_parser, ctl

__all__ = ["main"]

# Exit statuses of `procwork run`, the conventions of timeout(1) and shells.
EXIT_TIMED_OUT = 124
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127
EXIT_USAGE = 125  # as timeout(1): 2 is too common a status of commands


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="procwork",
        description="Run and supervise processes, with tree-killing timeouts.",
    )
    parser.add_argument(
        "--version", action="version", version=f"procwork {untwisted.__version__}"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run one command, like timeout(1) but killing its whole tree",
        description=(
            "Run CMD with a timeout that kills its whole process group (SIGTERM, "
            "then SIGKILL after the grace period). Exits with CMD's status: 124 "
            "if it timed out, 128+N if killed by signal N, 126/127 if it could "
            "not be executed / found. If procwork run itself is killed, even by "
            "SIGKILL, CMD's process group is killed too."
        ),
    )
    run.add_argument(
        "--timeout",
        type=_duration,
        default=None,
        metavar="S",
        help="seconds before the process group is terminated (suffixes s, m, "
        "h, d as timeout(1); 0: no timeout)",
    )
    run.add_argument(
        "--grace",
        type=_duration,
        default=DEFAULT_GRACE,
        metavar="S",
        help=f"seconds between SIGTERM and SIGKILL (default {DEFAULT_GRACE:g})",
    )
    run.add_argument(
        "--priority",
        choices=PRIORITIES,
        default="normal",
        help="admission priority; low runs niced (default normal)",
    )
    run.add_argument(
        "--max-output",
        type=int,
        default=None,
        metavar="N",
        help="capture the output and print only its last N bytes "
        "per stream (default: pass output straight through)",
    )
    run.add_argument(
        "--host",
        default=None,
        metavar="USER@HOST[:PORT]",
        help="run CMD there over SSH (exit 255 if the host cannot be used, as ssh)",
    )
    run.add_argument(
        "--known-hosts",
        default=None,
        metavar="FILE",
        help="known_hosts file for --host (default ~/.ssh/known_hosts)",
    )
    run.add_argument(
        "--identity",
        default=None,
        metavar="FILE",
        help="private key for --host (default: ssh-agent, else ~/.ssh/id_*)",
    )
    run.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print a one-line summary on stderr",
    )
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ARGS...")

    monitor = commands.add_parser(
        "monitor",
        help="supervise services, run checks and watchdog rules from a TOML config",
    )
    monitor.add_argument(
        "config",
        nargs="?",
        default=None,
        help="TOML config file (default: the built-in config)",
    )
    monitor.add_argument(
        "--http",
        default=None,
        metavar="HOST:PORT",
        help="serve status JSON and /metrics here (overrides config)",
    )
    monitor.add_argument(
        "--json-log",
        action="store_true",
        help="log events as JSON lines instead of text",
    )
    monitor.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="S",
        help="stop after S seconds (for demos and tests)",
    )
    monitor.add_argument(
        "--lock-file",
        default=None,
        metavar="PATH",
        help="the lock that keeps a second monitor of the same config from "
        "starting (default: derived from the config's path, under "
        "$XDG_RUNTIME_DIR/procwork/ or /run/procwork/)",
    )
    monitor.add_argument(
        "--check-config",
        action="store_true",
        help="validate the config, print the effective config (after includes, "
        "instances and ${VAR} expansion) as TOML and exit",
    )
    monitor.add_argument(
        "--print-default-config",
        action="store_true",
        help="print the built-in config, to copy and edit, and exit",
    )
    monitor.add_argument(
        "--socket",
        default=None,
        metavar="PATH",
        help="serve the control socket (procwork ctl) here (overrides config)",
    )
    add_ctl_parser(commands)
    commands.add_parser(  # parsed by _timeout: listed here for --help
        "timeout", help="coreutils timeout(1), same argv, killing the whole tree"
    )
    return parser


def _duration(text: str) -> float:
    try:
        return _timeout.parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``procwork`` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["timeout"]:
        return _timeout.main(argv[1:])
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "run":
            return _run(parser, args)
    except SystemExit as e:
        if e.code == 2 and argv[:1] == ["run"]:
            raise SystemExit(EXIT_USAGE) from None  # a usage error of run
        raise
    if args.command == "ctl":
        return ctl(args)
    if args.print_default_config:
        from procwork.monitor._config import default_config_text

        sys.stdout.write(default_config_text())
        return 0
    from procwork.monitor._monitor import main as monitor_main

    return monitor_main(
        args.config,
        http=args.http,
        json_log=args.json_log,
        duration=args.duration,
        check_only=args.check_config,
        lock_file=args.lock_file,
        socket=args.socket,
    )


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    command = list(args.argv)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        parser.error(
            "run: no command given (usage: procwork run [OPTIONS] -- CMD ARGS...)"
        )
    capture = args.max_output is not None
    reap_orphans(all_children=True)  # if PID 1/subreaper: our children are procwork's
    remote: dict[str, Any] = {}
    if args.host is not None or args.known_hosts or args.identity:
        # A remote command cannot share our terminal: its output is passed
        # through line by line instead (only a 1-byte tail is kept).
        remote = {"host": args.host, "known_hosts": args.known_hosts}
        remote["identity"] = args.identity
        if not capture:
            remote["on_stdout"] = _passthrough(sys.stdout.buffer)
            remote["on_stderr"] = _passthrough(sys.stderr.buffer)
    try:
        # Whatever kills us, SIGKILL included, the command's tree dies with us.
        enable_lifeline()
        # Start the reactor, and with it untwisted's handling of SIGINT and
        # SIGTERM, before the command exists: a signal in between would kill
        # us the default way, leaving the tree to the lifeline and the shell
        # a status other than 128+N.
        untwisted.tick(0)
        process = spawn(
            command,
            timeout=args.timeout or None,  # 0: none, as timeout(1)
            grace=args.grace,
            priority=args.priority,
            max_output=args.max_output if capture else (1 if remote else None),
            capture=capture or bool(remote),
            stdin=False,
            **remote,
        )
        result: Result = untwisted.run(process.wait())
    except SpawnError as e:
        print(f"procwork run: {e}", file=sys.stderr)
        return EXIT_NOT_FOUND if e.errno == 2 else EXIT_CANNOT_EXECUTE
    except (ValueError, TypeError) as e:
        print(f"procwork run: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ProcworkError as e:
        print(f"procwork run: {e}", file=sys.stderr)
        # --host: the host cannot be used (unreachable, key, auth, dropped).
        return 255 if isinstance(e, ConnectionError | PermissionError) else 1
    except KeyboardInterrupt:
        # Like SIGTERM (and SIGHUP/SIGQUIT, which untwisted turns into
        # SystemExit(128+N)): no traceback; the command's group is terminated
        # on the way out, and then we die of the signal, so that the shell
        # sees it (and its loop stops at Ctrl-C).
        return _die_at_exit(signal.SIGINT)
    except SystemExit as e:
        if isinstance(e.code, int) and e.code - 128 in _DYING_SIGNALS:
            return _die_at_exit(e.code - 128)
        raise
    if capture:
        sys.stdout.buffer.write(result.stdout)
        sys.stdout.buffer.flush()
        sys.stderr.buffer.write(result.stderr)
        sys.stderr.buffer.flush()
    if args.verbose:
        print(
            f"procwork run: {result.command_line()} {result.describe()} "
            f"in {result.duration:.3f} s (queued {result.queued:.3f} s)"
            + (", output truncated" if result.truncated else ""),
            file=sys.stderr,
        )
    status = exit_status(result)
    if not result.timed_out and (result.returncode or 0) < 0:
        return _die_at_exit(-(result.returncode or 0))  # the command's signal
    return status


_DYING_SIGNALS = {signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT}


def _die_at_exit(signum: int) -> int:
    # An atexit hook runs after untwisted's shutdown (a threading exit hook),
    # which terminates the command's group first.
    atexit.register(_timeout.die_by_signal, signum)
    return 128 + signum


def _passthrough(stream: BinaryIO) -> Callable[[bytes], None]:
    def write(line: bytes) -> None:
        stream.write(line)
        stream.flush()

    return write


def exit_status(result: Result) -> int:
    """The shell-style exit status for a Result (124 on timeout)."""
    if result.timed_out:
        return EXIT_TIMED_OUT
    code = result.returncode
    if code is None:
        return EXIT_TIMED_OUT
    if code < 0:
        return 128 + (-code)
    return code
