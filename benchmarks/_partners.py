"""A real ``procwork monitor`` and the partners that attack it, for benchmarks.

Shared by ``bench_webhook_endless.py``, ``bench_ctl_attacks.py``,
``stalled_stdout.py`` and ``monitor_soak.py`` (which runs them all at once),
so that each attack is written once:

- :class:`Monitor`: ``procwork monitor CONFIG`` of a checkout as a child
  process, its log in a file or its stdout a pipe nobody reads (until
  :class:`PipeReader` reads it again), under a lower ``RLIMIT_NOFILE`` if
  asked; its status, its metrics (:func:`metric`), ``procwork ctl``, and a
  SIGTERM that is timed;
- what ``/proc`` says of a process: :func:`rss_mib`, :func:`descriptors`,
  :func:`cpu_seconds`, :func:`written`, and :class:`Sampler`, which keeps
  the most of the first two;
- :class:`EndlessWebhook`: a webhook server answering ``500`` with a body
  that never ends;
- :func:`loud_service`: a service printing ``rate`` MB/s;
- :func:`stalled_follower`: ``procwork ctl tail -f SERVICE | sleep``, a
  pager that stopped reading (:func:`kill_group` ends it);
- :func:`hold_connections` and :func:`told`: connections to the control
  socket held open, and what the monitor told them.

Importing it puts this checkout first on ``sys.path`` (for ``procwork`` and
``tests``). Every wait here has a bound.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
# The scripts beside this one import the checkout's procwork and tests too.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: The monitor's notice of log lines it dropped (text log), in its stdout.
DROPPED_NOTICE = re.compile(rb"(\d+) log lines dropped: stdout was not read")


# -- a process, from /proc -------------------------------------------------------


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` (MiB); NaN when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def descriptors(pid: int) -> int:
    """Open descriptors of ``pid`` (0 when it is gone)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def descriptor_links(pid: int) -> list[str]:
    """What the open descriptors of ``pid`` point to."""
    links = []
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):  # closed since it was listed
                links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return links


def cpu_seconds(pid: int) -> float:
    """CPU time ``pid`` used so far (user + system)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def written(pid: int) -> int:
    """Bytes the children of ``pid`` wrote so far (``wchar``)."""
    total = 0
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = f.read().split()
        for child in children:
            with open(f"/proc/{child}/io") as f:
                for line in f:
                    if line.startswith("wchar:"):
                        total += int(line.split()[1])
    except OSError:
        pass
    return total


class Sampler:
    """Samples a process's descriptors every ``every`` seconds and its RSS
    every ``rss_every``, in a thread, keeping the most of each.

    Attributes:
        fds_max: The most descriptors seen.
        rss_max: The most resident memory seen (MiB).
        rss_samples: Every RSS sample (MiB).
        links_max: The most descriptors at once whose link starts with
            ``watch_links`` (e.g. a temporary directory: files spooled there).
    """

    def __init__(
        self,
        pid: int,
        *,
        every: float = 0.005,
        rss_every: float = 0.25,
        watch_links: str | None = None,
    ) -> None:
        self.pid = pid
        self.fds_max = descriptors(pid)
        self.rss_max = rss_mib(pid)
        self.rss_samples: list[float] = [self.rss_max]
        self.links_max = 0
        self._every = every
        self._rss_every = rss_every
        self._watch = watch_links
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        next_rss = time.monotonic() + self._rss_every
        while not self._stop.wait(self._every):
            self.fds_max = max(self.fds_max, descriptors(self.pid))
            if time.monotonic() >= next_rss:
                next_rss += self._rss_every
                rss = rss_mib(self.pid)
                if rss == rss:  # not NaN: still running
                    self.rss_samples.append(rss)
                    self.rss_max = max(self.rss_max, rss)
                if self._watch is not None:
                    watched = self._watch
                    spooled = [
                        link
                        for link in descriptor_links(self.pid)
                        if link.startswith(watched)
                    ]
                    self.links_max = max(self.links_max, len(spooled))


# -- the monitor -----------------------------------------------------------------


def checkout_env(code: str | Path = ROOT) -> dict[str, str]:
    """This environment, with the checkout ``code`` first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(code), env.get("PYTHONPATH")) if p
    )
    return env


def free_port() -> int:
    """A TCP port of 127.0.0.1 free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` with (at least) ``labels`` in the
    Prometheus text ``text``; None if there is none."""
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", re.M)
    for match in pattern.finditer(text):
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(2))
    return None


class Monitor:
    """``procwork monitor CONFIG`` of the checkout ``code``, started and ready.

    Its stderr goes to ``temp/monitor.log``, and so does its stdout unless
    ``stdout_pipe``: then stdout is a pipe nobody reads (``self.proc.stdout``;
    see :class:`PipeReader`). With ``http``, it serves on a free port of
    127.0.0.1 (:attr:`base`). ``nofile`` starts it under that
    ``RLIMIT_NOFILE``; ``env`` is added to its environment only (not to
    :attr:`env`, which ``ctl`` and followers use).

    Raises:
        SystemExit: It exited or was not ready (its control socket there,
            its HTTP status answering) within 30 s; the log says why.
    """

    def __init__(
        self,
        temp: Path,
        config: str,
        *,
        code: str | Path = ROOT,
        http: bool = False,
        stdout_pipe: bool = False,
        nofile: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.temp = temp
        self.sock = temp / "ctl.sock"
        self.log = temp / "monitor.log"
        (temp / "monitor.toml").write_text(config)
        self.env = checkout_env(code)
        self.port = free_port() if http else None
        self.base = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "procwork", "monitor"]
        command += [str(temp / "monitor.toml"), "--socket", str(self.sock)]
        command += ["--lock-file", str(temp / "lock")]
        if self.port is not None:
            command += ["--http", f"127.0.0.1:{self.port}"]
        if nofile is not None:
            command = ["prlimit", f"--nofile={nofile}:{nofile}", "--", *command]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                command,
                stdout=subprocess.PIPE if stdout_pipe else log,
                stderr=log,
                env={**self.env, **(env or {})},
                cwd=temp,
            )
        try:
            self._wait_ready(30)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            if self.proc.poll() is not None:
                raise SystemExit("the monitor exited at start:\n" + self.text())
            if self.sock.exists():
                if self.port is None:
                    return
                with contextlib.suppress(OSError):
                    self.status()
                    return
            if time.monotonic() > deadline:
                raise SystemExit(f"the monitor was not ready in {seconds:g} s")
            time.sleep(0.05)

    def text(self) -> str:
        """Its log file."""
        return self.log.read_text(errors="replace")

    def status(self, timeout: float = 10) -> Any:
        """``/status.json``."""
        return json.loads(get(self.base + "/status.json", timeout))

    def metrics(self, timeout: float = 10) -> str:
        """``/metrics``."""
        return get(self.base + "/metrics", timeout).decode()

    def ctl(self, *args: str, timeout: float = 30) -> tuple[int, float, str]:
        """``procwork ctl ARGS`` (``--timeout`` ``timeout``): its exit status,
        how long it took and its stderr."""
        started = time.monotonic()
        command = [sys.executable, "-m", "procwork", "ctl", "--socket", str(self.sock)]
        done = subprocess.run(
            [*command, "--timeout", f"{timeout:g}", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout + 30,
        )
        return done.returncode, time.monotonic() - started, done.stderr.strip()

    def terminate(self, timeout: float = 30) -> float | None:
        """SIGTERM it; the seconds it took to exit, or None if it was still
        running after ``timeout`` (then it is SIGKILLed)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            return None
        return time.monotonic() - started

    def stop(self) -> None:
        """End it if it still runs: SIGTERM, SIGKILL after 30 s."""
        if self.proc.poll() is None:
            self.terminate(30)


class PipeReader:
    """Reads a pipe to its end in a thread, from :meth:`start` on."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._chunks: list[bytes] = []
        self._thread = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        for line in iter(self._stream.readline, b""):
            self._chunks.append(line)

    def start(self) -> None:
        if self._thread.ident is None:
            self._thread.start()

    def join(self, timeout: float) -> bytes:
        """What was read once the pipe ended or ``timeout`` passed (reading
        starts now if it had not)."""
        self.start()
        self._thread.join(timeout)
        return b"".join(list(self._chunks))


# -- partners --------------------------------------------------------------------

_WEBHOOK_SERVER = r"""
import socket, sys, threading
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
lock = threading.Lock()
stats = {"connections": 0, "closed": 0, "sent": 0}
chunk = b"x" * 65536

def serve(sock):
    try:
        sock.recv(65536)
        sock.sendall(b"HTTP/1.1 500 Endless\r\ncontent-type: text/plain\r\n\r\n")
        while True:
            n = sock.send(chunk)
            with lock:
                stats["sent"] += n
    except OSError:
        with lock:
            stats["closed"] += 1
    finally:
        sock.close()

def report():
    for _ in sys.stdin:  # one line in: one line of stats out
        with lock:
            print(stats["connections"], stats["closed"], stats["sent"], flush=True)

threading.Thread(target=report, daemon=True).start()
while True:
    sock, _ = server.accept()
    with lock:
        stats["connections"] += 1
    threading.Thread(target=serve, args=(sock,), daemon=True).start()
"""


def _readline(stream: IO[str], timeout: float) -> str:
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise RuntimeError(f"no line within {timeout:g} s")
    return stream.readline()


class EndlessWebhook:
    """A webhook server (a child Python, plain sockets, one thread per
    connection) that answers every request with ``500`` and a body that
    never ends, sent as fast as the client takes it. A context manager."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WEBHOOK_SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        try:
            self.port = int(_readline(self.proc.stdout, 30))
        except BaseException:
            self.close()
            raise
        self.url = f"http://127.0.0.1:{self.port}/hook"

    def stats(self) -> tuple[int, int, int]:
        """Connections it took, how many of them the client closed (a send
        failed), and the bytes it sent in all."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        connections, closed, sent = map(int, _readline(self.proc.stdout, 30).split())
        return connections, closed, sent

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)

    def __enter__(self) -> EndlessWebhook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_LOUD = textwrap.dedent(
    """
    import sys, time
    chunk = (b"x" * 999 + b"\\n") * 64
    per = len(chunk) / ({rate} * 1e6)
    out = sys.stdout.buffer
    due = time.monotonic()
    while True:
        out.write(chunk)
        out.flush()
        due += per
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    """
)


def loud_service(name: str, rate: float) -> str:
    """A ``[[service]]`` table: ``name`` prints ``rate`` MB/s of 1000-byte
    lines, none of them to the console (``console_rate = 0``)."""
    command = json.dumps(_LOUD.format(rate=rate))
    return (
        f'[[service]]\nname = "{name}"\n'
        f'command = ["{{python}}", "-c", {command}]\nconsole_rate = 0\n'
    )


def stalled_follower(monitor: Monitor, service: str) -> subprocess.Popen[bytes]:
    """``procwork ctl tail -f -n 0 SERVICE | sleep 100000``: a follower whose
    stdout nobody reads, in a session of its own (see :func:`kill_group`);
    what ctl says on stderr (cut off, evicted) goes nowhere."""
    ctl = f"{sys.executable} -m procwork ctl --socket {monitor.sock}"
    return subprocess.Popen(
        f"{ctl} tail -f -n 0 {service} | sleep 100000",
        shell=True,
        start_new_session=True,
        stderr=subprocess.DEVNULL,
        env=monitor.env,
    )


def kill_group(leader: subprocess.Popen[Any]) -> None:
    """SIGKILL the process group ``leader`` leads (by its pid), and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader.pid, signal.SIGKILL)
    leader.wait(timeout=10)


def hold_connections(
    path: Path,
    count: int,
    *,
    stop: threading.Event | None = None,
    timeout: float = 30,
) -> list[socket.socket]:
    """``count`` connections to the Unix socket ``path``, each retried while
    the listen backlog is full, for ``timeout`` seconds at most (then
    RuntimeError: the server stopped accepting); fewer if ``stop`` is set."""
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            until = time.monotonic() + timeout
            while stop is None or not stop.is_set():
                client = socket.socket(socket.AF_UNIX)
                client.settimeout(timeout)
                try:
                    client.connect(str(path))
                    held.append(client)
                    break
                except BlockingIOError:  # the listen backlog is full
                    client.close()
                    if time.monotonic() > until:
                        raise RuntimeError(
                            f"{path} accepted no connection in {timeout:g} s"
                        ) from None
                    time.sleep(0.001)
            if stop is not None and stop.is_set():
                break
    except BaseException:
        for client in held:
            client.close()
        raise
    return held


def told(held: list[socket.socket]) -> Counter[str]:
    """What the monitor told each held connection (its first line, cut), or
    that it is still open or was closed without a word; the sockets are
    left open."""
    seen: Counter[str] = Counter()
    for client in held:
        client.setblocking(False)
        try:
            data = client.recv(4096)
        except BlockingIOError:
            seen["still open, told nothing"] += 1
            continue
        except OSError as e:
            seen[f"failed: {e.strerror or e}"] += 1
            continue
        if not data:
            seen["closed without a word"] += 1
        else:
            seen[json.loads(data.splitlines()[0])["error"][:70] + "..."] += 1
    return seen
