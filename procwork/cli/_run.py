"""``procwork run``: one command under a timeout that kills its whole tree.

The exit statuses are timeout(1)'s and the shells': the command's own, 124
if it timed out, 126/127 if it could not be executed / found, 125 on a usage
error, 255 if ``--host`` could not be used (as ssh). If signal N killed the
command (not on time out), or reached ``procwork run`` (SIGINT, SIGTERM,
SIGHUP, SIGQUIT), it dies of N once the tree is terminated, as timeout(1)
does, so that the shell sees the death by signal.
"""

from __future__ import annotations

import argparse
import atexit
import signal
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

import untwisted
from procwork._api import spawn
from procwork._errors import ProcworkError, SpawnError
from procwork._lifeline import enable_lifeline
from procwork._orphans import reap_orphans
from procwork._result import Result
from procwork.cli._timeout import die_by_signal

__all__ = ["exit_status", "run_command"]

# Exit statuses of `procwork run`, the conventions of timeout(1) and shells.
EXIT_TIMED_OUT = 124
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127
EXIT_USAGE = 125  # as timeout(1): 2 is too common a status of commands


def run_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run ``procwork run`` as parsed (``args``); its exit status."""
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
            contain=args.contain,
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
    atexit.register(die_by_signal, signum)
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
