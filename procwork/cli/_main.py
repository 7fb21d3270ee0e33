"""The ``procwork`` command: ``procwork run``, ``procwork monitor``,
``procwork ctl`` (``procwork timeout``, :mod:`._timeout`, is dispatched by
:func:`procwork.cli.main` before this module is imported).

This module parses the command line and hands it to the subcommand, whose
module it imports only then: ``procwork run`` (:mod:`._run`) and
``procwork monitor`` load Twisted, ``procwork ctl`` (:mod:`._ctl`), a
blocking client of the monitor's socket, does not, so that a ``ctl status``
polled by a script costs a few milliseconds of CPU, not the 0.2 s of
loading the reactor. The parser itself needs nothing heavy either: the
defaults it shows come from :mod:`procwork._defaults`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from procwork._defaults import DEFAULT_GRACE, LOG_LEVELS, PRIORITIES
from procwork.cli._ctl import add_ctl_parser

# Not typing.TYPE_CHECKING: importing typing is a good part of what a
# `procwork ctl` call costs, and this module is on its way.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

__all__ = ["main"]


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter, sized to the terminal without importing
    :mod:`shutil` (argparse makes one for every argument it is given, and
    shutil brings bz2, lzma and zlib: a few ms of each ``ctl`` call)."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        # As argparse: the terminal's width, less 2.
        width = _columns() - 2 if width is None else width
        super().__init__(prog, indent_increment, max_help_position, width)


def _columns() -> int:
    """``shutil.get_terminal_size().columns``: $COLUMNS, else the
    terminal's, else 80. Looked up once: a formatter is made per argument."""
    if not _COLUMNS:
        _COLUMNS.append(_terminal_columns())
    return _COLUMNS[0]


_COLUMNS: list[int] = []


def _terminal_columns() -> int:
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        stdout = sys.__stdout__
        try:
            columns = (
                0 if stdout is None else os.get_terminal_size(stdout.fileno()).columns
            )
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser with :class:`_Formatter`; subcommands' parsers are
    made of this class too (argparse makes them of the parent's)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="procwork",
        description="Run and supervise processes, with tree-killing timeouts.",
    )
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    # prog given: else argparse imports shutil to work it out (see _ctl.py).
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", prog=parser.prog
    )

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
        "--contain",
        action="store_true",
        help="run CMD in a cgroup of its own (where procwork may make cgroups: "
        "root, or a delegated cgroup v2 subtree), so that the timeout and "
        "our death kill what left its process group too (daemons)",
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
        "--log-level",
        choices=LOG_LEVELS,
        default=None,
        help="the least level logged (overrides the config's log_level; default info)",
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
    from procwork.cli._timeout import parse_duration

    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class _Version(argparse.Action):
    """``--version``: the version is looked up only when asked (it is
    untwisted's, and importing untwisted imports Twisted)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        import untwisted  # only now: it imports Twisted

        print(f"procwork {untwisted.__version__}")
        parser.exit()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``procwork`` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["timeout"]:  # procwork.cli.main does it before importing us
        from procwork.cli._timeout import main as timeout_main

        return timeout_main(argv[1:])
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "run":
            from procwork.cli._run import run_command

            return run_command(parser, args)
    except SystemExit as e:
        if e.code == 2 and argv[:1] == ["run"]:
            raise SystemExit(125) from None  # a usage error of run, as timeout(1)
        raise
    if args.command == "ctl":
        from procwork.cli._ctl import ctl

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
        log_level=args.log_level,
    )
