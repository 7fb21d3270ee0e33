"""``procwork ctl``: act on a running monitor through its control socket.

A small blocking client on plain sockets (no reactor): it finds the socket
(``--socket``, else the ``[monitor] socket`` of ``--config FILE``, else
``$PROCWORK_SOCKET``, else the default), checks that it is one of the
user's own, sends one request of the control protocol
(:mod:`procwork.monitor._protocol`), prints the answer and exits. Names,
globs and numprocs families are resolved by the monitor. Every wait is
bounded by ``--timeout``; ``tail -f`` waits for lines without end, but
gives up if the monitor's heartbeat stops.

It imports nothing of Twisted, nor anything that does: a ``ctl status``
polled by a script every few seconds costs a few milliseconds of CPU
(``benchmarks/bench_ctl_cpu.py``; ``tests/cli/test_ctl_imports.py`` keeps
Twisted out of its imports).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import stat
import struct
import sys
import time
from collections.abc import Iterator, Mapping

from procwork.monitor._protocol import (
    MAX_WAIT,
    PROTOCOL,
    SOCKET_VARIABLE,
    ControlError,
    decode,
    default_socket_path,
    describe_reload,
    encode,
)

# Not typing.TYPE_CHECKING: importing typing is a good part of what a
# `procwork ctl` call costs.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

__all__ = ["EXIT_FAILED", "EXIT_UNREACHABLE", "Client", "add_ctl_parser", "ctl"]

#: The monitor refused or failed the request (an unknown name, a bad config).
EXIT_FAILED = 1
#: No monitor answers: not running, or the socket is not the user's monitor's.
EXIT_UNREACHABLE = 3

#: Bad usage: an option's value, a config file that cannot be read.
EXIT_USAGE = 2

#: A ``tail -f`` client gives up after this many seconds without a heartbeat
#: (the monitor sends one every 5 s).
_FOLLOW_SILENCE = 20.0

#: Seconds ``start --wait`` gives the monitor to answer past the wait itself.
_WAIT_MARGIN = 10.0


class _HungUp(ControlError):
    """The monitor closed the connection before a whole answer came."""


class _Busy(ControlError):
    """The monitor's listen backlog is full (a flood of connections): the
    kernel refuses a new one at once (``EAGAIN``) instead of letting it wait."""


class Client:
    """One connection to a monitor's control socket. Blocking.

    Args:
        path: The socket.
        timeout: Seconds every connect, send and answer may take.

    Raises:
        ControlError: the path is missing, not a socket, not the user's, or
            nobody listens there; the message says which.
    """

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._buffer = b""
        self._check_path()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            self._sock.close()
            raise ControlError(
                f"no monitor is running on {path} (the socket is left from one "
                "that is gone)"
            ) from None
        except BlockingIOError:
            self._sock.close()
            raise _Busy(
                f"cannot connect to {path}: its listen backlog stayed full (a "
                "flood of connections)"
            ) from None
        except OSError as e:
            self._sock.close()
            raise ControlError(f"cannot connect to {path}: {e.strerror or e}") from None
        self._check_peer()

    def _check_path(self) -> None:
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            raise ControlError(
                f"no monitor is running: {self.path} does not exist (start one "
                "with procwork monitor, or give its socket with --socket)"
            ) from None
        if not stat.S_ISSOCK(info.st_mode):
            raise ControlError(
                f"{self.path} is not a socket, so not a procwork monitor's"
            )
        if info.st_uid != os.getuid():
            raise ControlError(
                f"{self.path} belongs to uid {info.st_uid}, not to you (uid "
                f"{os.getuid()}): not your monitor's socket"
            )

    def _check_peer(self) -> None:
        # Who serves the socket, as the kernel says: a file of ours could
        # still have been bound by someone else's process.
        size = struct.calcsize("3i")
        data = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, size)
        _pid, uid, _gid = struct.unpack("3i", data)
        if uid not in (os.getuid(), 0):
            self.close()
            raise ControlError(
                f"{self.path} is served by uid {uid}, not by you or root: not "
                "your monitor"
            )

    def close(self) -> None:
        """Hang up."""
        self._sock.close()

    def request(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """Send one request; the answer (``ok`` true or false)."""
        try:
            self._sock.sendall(encode(message))
        except OSError as e:
            # A monitor that refuses the connection (over its cap, or not
            # this user) answers first and hangs up: read why.
            try:
                return self.answer(min(self.timeout, 1.0))
            except _HungUp:
                # Closed without a word (a flood over the cap): busy.
                raise _HungUp(f"{self.path}: cannot send: {e.strerror or e}") from None
            except ControlError:
                pass
            raise ControlError(f"{self.path}: cannot send: {e.strerror or e}") from None
        return self.answer(self.timeout)

    def answer(self, timeout: float) -> dict[str, Any]:
        """The next answer line, waiting at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ControlError(
                    f"the monitor on {self.path} did not answer within "
                    f"{timeout:g} s (--timeout)"
                )
            self._sock.settimeout(remaining)
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError as e:
                # Closed with our request unread (a flood over the cap): the
                # kernel says so with a reset rather than an end of file.
                raise _HungUp(f"{self.path}: {e.strerror or e}") from None
            except OSError as e:
                raise ControlError(f"{self.path}: {e.strerror or e}") from None
            if not data:
                raise _HungUp(f"the monitor on {self.path} hung up")
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            answer = decode(line)
        except ValueError:
            answer = {}
        if answer.get("procwork") != PROTOCOL:
            raise ControlError(
                f"{self.path} answered, but not in procwork's control protocol: "
                "not a procwork monitor"
            )
        return answer

    def follow(self) -> Iterator[dict[str, Any]]:
        """Answers for as long as they come (``tail -f``)."""
        while True:
            yield self.answer(_FOLLOW_SILENCE)


# -- the command ----------------------------------------------------------------


def add_ctl_parser(commands: Any) -> None:
    """Add ``ctl`` and its subcommands to the ``procwork`` parser."""
    ctl_parser = commands.add_parser(
        "ctl",
        help="act on a running monitor: status, start, stop, restart, signal, "
        "tail, reopen, reload, shutdown",
        description=(
            "Talk to a running procwork monitor through its control socket: "
            "--socket PATH, else the [monitor] socket of --config FILE, else "
            f"${SOCKET_VARIABLE}, else the default ($XDG_RUNTIME_DIR/procwork/"
            "monitor.sock; /run/procwork/ for root). A NAME is a service's "
            "name, 'all', a glob ('web-*') or the name of a numprocs family "
            "('worker' for worker-0, worker-1, ...). Exit status: 0 done, 1 "
            "the monitor refused or failed, 2 usage, 3 no monitor answers."
        ),
    )
    where = ctl_parser.add_mutually_exclusive_group()
    where.add_argument(
        "--socket",
        default=None,
        metavar="PATH",
        help="the monitor's control socket",
    )
    where.add_argument(
        "-c",
        "--config",
        default=None,
        metavar="FILE",
        help="the monitor's config file: its [monitor] socket (or the default "
        "socket when it names none)",
    )
    ctl_parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds to wait for the monitor's answer (default 60; a stop "
        "waits for the service's stop_timeout)",
    )
    # prog given: else argparse makes a help formatter to work it out, and
    # that imports shutil (and with it bz2, lzma, zlib) on every ctl call.
    actions = ctl_parser.add_subparsers(
        dest="action", required=True, metavar="ACTION", prog=ctl_parser.prog
    )
    status = actions.add_parser("status", help="a table of the services")
    status.add_argument("names", nargs="*", metavar="NAME")
    status.add_argument("--json", action="store_true", help="JSON, not a table")
    for action, what in (
        ("start", "start services (a FATAL one too, afresh)"),
        ("stop", "stop services with their stop policy"),
        ("restart", "stop, then start services"),
    ):
        parser = actions.add_parser(action, help=what)
        parser.add_argument("names", nargs="+", metavar="NAME")
        if action == "stop":
            continue
        parser.add_argument(
            "--wait",
            action="store_true",
            help="wait until each service is RUNNING; exit 1 saying why if one "
            "goes FATAL (or exits, or is stopped) instead, or is not up in time",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=None,
            dest="wait_timeout",
            metavar="S",
            help="with --wait: seconds to wait (default the ctl --timeout)",
        )
    send = actions.add_parser("signal", help="send a signal to services' groups")
    send.add_argument("signal", metavar="SIG", help="HUP, SIGUSR1, 10, ...")
    send.add_argument("names", nargs="+", metavar="NAME")
    tail = actions.add_parser("tail", help="a service's last output lines")
    tail.add_argument("name", metavar="NAME")
    tail.add_argument(
        "-f", "--follow", action="store_true", help="then print new lines as they come"
    )
    tail.add_argument(
        "--stderr", action="store_true", help="its stderr (default stdout)"
    )
    tail.add_argument(
        "-n", "--lines", type=int, default=10, metavar="N", help="default 10"
    )
    reopen = actions.add_parser(
        "reopen",
        help="reopen services' log files (after logrotate moved them)",
        description="Close the stdout_log/stderr_log files of the services "
        "named (default all) and open them again by path, as logrotate's "
        "postrotate wants.",
    )
    reopen.add_argument("names", nargs="*", metavar="NAME")
    actions.add_parser("reload", help="read the config again and apply changes")
    actions.add_parser("shutdown", help="stop the monitor and its services")


def ctl(args: argparse.Namespace) -> int:
    """Run ``procwork ctl``; the exit status."""
    if not 0 < args.timeout < float("inf"):
        print(
            f"procwork ctl: --timeout must be a finite number of seconds > 0, not "
            f"{args.timeout:g}",
            file=sys.stderr,
        )
        return 2
    wait = _wait(args)
    if isinstance(wait, str):
        print(f"procwork ctl: {wait}", file=sys.stderr)
        return EXIT_USAGE
    request = _request(args)
    if wait is not None:
        request["wait"] = wait
    try:
        path = find_socket(args.socket, args.config, os.environ)
    except _NoSocket as e:
        print(f"procwork ctl: {e}", file=sys.stderr)
        return e.status
    # A wait is the monitor's to bound: it answers when it ends, at the latest.
    timeout = args.timeout if wait is None else wait + _WAIT_MARGIN
    try:
        client, answer = _ask(path, timeout, request)
    except ControlError as e:
        print(f"procwork ctl: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        if not answer.get("ok"):
            if wait is not None and answer.get("result"):
                _show(args, answer["result"])  # where each service got to
            print(f"procwork ctl: {answer.get('error')}", file=sys.stderr)
            return EXIT_FAILED
        _show(args, answer.get("result"))
        if args.action == "tail" and args.follow:
            return _follow(client)
        return 0
    except ControlError as e:
        print(f"procwork ctl: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except BrokenPipeError:
        # The reader went away (| head): what it wanted is printed. Python
        # flushes stdout again at exit; let that go nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        client.close()


class _NoSocket(ControlError):
    """No socket to talk to: the message says why, ``status`` the exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def find_socket(
    socket_path: str | None, config: str | None, environ: Mapping[str, str]
) -> str:
    """The socket of the monitor to talk to: ``--socket``, else the
    ``[monitor] socket`` of ``--config`` (the default socket when it names
    none, as the monitor does), else ``$PROCWORK_SOCKET``, else the default.

    Raises:
        _NoSocket: the config cannot be read (exit 2), or its monitor serves
            no control socket (``socket = false``; exit 3).
    """
    if socket_path is not None:
        return socket_path
    if config is not None:
        # Only the config's one key, read without the config loader (which
        # checks every spec with attrs and imports the monitor).
        from procwork._errors import ConfigError
        from procwork.monitor._configfiles import control_socket

        try:
            found = control_socket(config, environ)
        except ConfigError as e:
            raise _NoSocket(str(e), EXIT_USAGE) from None
        if found is False:
            raise _NoSocket(
                f"{config}: [monitor] socket = false: that monitor serves no "
                "control socket",
                EXIT_UNREACHABLE,
            )
        return default_socket_path(environ) if found is None else str(found)
    return environ.get(SOCKET_VARIABLE) or default_socket_path(environ)


def _wait(args: argparse.Namespace) -> float | str | None:
    """The seconds ``start/restart --wait`` waits; a message when they are
    not a number the monitor takes; None without ``--wait``."""
    wait_timeout = getattr(args, "wait_timeout", None)
    if not getattr(args, "wait", False):
        if wait_timeout is not None:
            return f"{args.action}: --timeout goes with --wait"
        return None
    seconds: float = args.timeout if wait_timeout is None else wait_timeout
    if not 0 < seconds <= MAX_WAIT:
        return (
            f"{args.action} --wait: --timeout must be a number of seconds > 0 "
            f"and <= {MAX_WAIT:g}, not {seconds:g}"
        )
    return seconds


def _ask(
    path: str, timeout: float, request: Mapping[str, Any]
) -> tuple[Client, dict[str, Any]]:
    """Connect and send ``request``; the connection and the answer.

    A monitor with all its connections busy (``"busy"`` in its refusal, or,
    in a flood, a hang-up without a word, or a listen backlog so full that
    the kernel refuses the connection) is asked again, a little later each
    time, until ``timeout`` passes.

    Raises:
        ControlError: no monitor answers (in time).
    """
    deadline = time.monotonic() + timeout
    pause = 0.05
    while True:
        try:
            client = Client(path, max(0.001, deadline - time.monotonic()))
        except _Busy:
            if time.monotonic() + pause >= deadline:
                raise
        else:
            try:
                answer = client.request(request)
            except _HungUp:
                client.close()
                if time.monotonic() + pause >= deadline:
                    raise
            except BaseException:
                client.close()
                raise
            else:
                if not answer.get("busy") or time.monotonic() + pause >= deadline:
                    return client, answer
                client.close()
        time.sleep(pause)
        pause = min(1.0, pause * 2)


def _request(args: argparse.Namespace) -> dict[str, Any]:
    request: dict[str, Any] = {"command": args.action}
    if args.action in ("status", "start", "stop", "restart", "signal", "reopen"):
        request["names"] = list(args.names)
    if args.action == "signal":
        request["signal"] = int(args.signal) if args.signal.isdigit() else args.signal
    if args.action == "tail":
        request.update(
            name=args.name,
            stream="stderr" if args.stderr else "stdout",
            lines=args.lines,
            follow=args.follow,
        )
    return request


def _follow(client: Client) -> int:
    try:
        for answer in client.follow():
            if "line" in answer:
                print(answer["line"], flush=True)
            elif "skipped" in answer:
                # In place in the output: the lines missed were here.
                skipped = answer["skipped"]
                print(
                    f"[procwork ctl: {skipped['lines']} lines ({skipped['bytes']} "
                    "bytes) skipped: they came faster than they were read]",
                    flush=True,
                )
            elif not answer.get("ok"):
                print(f"procwork ctl: {answer.get('error')}", file=sys.stderr)
                return EXIT_FAILED
    except KeyboardInterrupt:
        return 0
    return 0  # pragma: no cover - follow() ends only by raising


def _show(args: argparse.Namespace, result: Any) -> None:
    action = args.action
    if action == "status":
        services = result["services"]
        if args.json:
            print(json.dumps(services, indent=2))
        else:
            print(status_table(services.values()), end="")
    elif action in ("start", "stop", "restart"):
        for status in result["services"].values():
            pid = f" pid {status['pid']}" if status["pid"] is not None else ""
            print(f"{status['name']}: {status['state']}{pid}")
    elif action == "signal":
        for name in result["signalled"]:
            print(f"{name}: {args.signal} sent")
    elif action == "tail":
        for line in result["lines"]:
            print(line)
    elif action == "reopen":
        for name, paths in result["reopened"].items():
            print(
                f"{name}: reopened {', '.join(paths)}"
                if paths
                else f"{name}: no log files"
            )
    elif action == "reload":
        print(f"reloaded: {describe_reload(result)}")
        for key in result["not_applied"]:
            print(f"not applied (restart the monitor for it): [monitor] {key}")
    elif action == "shutdown":
        print("monitor stopping")
    sys.stdout.flush()


_COLUMNS = ("NAME", "STATE", "PID", "UPTIME", "RESTARTS", "LAST EXIT")


def status_table(services: Any) -> str:
    """The services' statuses as a table, as ``supervisorctl status`` shows.

    The STATE column is the monitor's summary of the state: a crash loop
    with its count, and why a service is FATAL; under an unhealthy
    service, the last lines its crashed run wrote to stderr.

    >>> print(status_table([
    ...     {"name": "web", "state": "RUNNING", "pid": 4242, "uptime": 3725.2,
    ...      "restarts": 1, "last_exit": "killed by signal 9 (SIGKILL)"},
    ...     {"name": "api", "state": "BACKOFF", "pid": None, "uptime": None,
    ...      "restarts": 3, "last_exit": "exited 3", "healthy": False,
    ...      "summary": "BACKOFF (crash loop: 3 exits in 5 s, next start in 4 s)"},
    ...     {"name": "worker", "state": "FATAL", "pid": None, "uptime": None,
    ...      "restarts": 5, "last_exit": "exited 3", "healthy": False,
    ...      "summary": "FATAL (exited 3: 6 unexpected exits within 60 s, "
    ...                 "more than max_restarts=5)",
    ...      "last_stderr": ["Traceback (most recent call last):",
    ...                      "KeyError: 'DATABASE_URL'"]},
    ... ]), end="")
    NAME    STATE                                                                       PID   UPTIME   RESTARTS  LAST EXIT
    web     RUNNING                                                                     4242  1:02:05  1         killed by signal 9 (SIGKILL)
    api     BACKOFF (crash loop: 3 exits in 5 s, next start in 4 s)                     -     -        3         exited 3
    worker  FATAL (exited 3: 6 unexpected exits within 60 s, more than max_restarts=5)  -     -        5         exited 3
            | Traceback (most recent call last):
            | KeyError: 'DATABASE_URL'
    """  # noqa: E501
    services = list(services)
    rows = [
        (
            s["name"],
            s.get("summary") or s["state"],
            "-" if s["pid"] is None else str(s["pid"]),
            "-" if s["uptime"] is None else _duration(s["uptime"]),
            str(s["restarts"]),
            s["last_exit"] or "-",
        )
        for s in services
    ]
    widths = [max(len(row[i]) for row in [_COLUMNS, *rows]) for i in range(5)]
    name_width = widths[0] + 2
    out = []
    for i, row in enumerate([_COLUMNS, *rows]):
        line = "  ".join(
            cell.ljust(width) for cell, width in zip(row[:5], widths, strict=True)
        )
        out.append((line + "  " + row[5]).rstrip() + "\n")
        status = services[i - 1] if i else {}
        if not status.get("healthy", True):
            out.extend(
                f"{'':{name_width}}| {said}\n" for said in status.get("last_stderr", [])
            )
    return "".join(out)


def _duration(seconds: float) -> str:
    """``1:02:05``; ``3 days, 1:02:05``."""
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours}:{minutes:02d}:{secs:02d}"
    if days:
        return f"{days} day{'s' if days > 1 else ''}, {clock}"
    return clock
