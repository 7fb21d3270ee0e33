"""The monitor soak: one real ``procwork monitor`` against all its I/O partners
at once, under CPU load; it fails naming every bound it broke.

Run from the repository root (Linux; as root for the full-disk partner)::

    python benchmarks/monitor_soak.py            # 60 s
    python benchmarks/monitor_soak.py --quick    # 20 s, lighter partners

(``tests/monitor/test_soak.py`` runs ``--quick`` and fails with it.)

What runs, all at once, for ``--seconds`` while 2 busy-looping processes
(``--load``) take the cores, against one monitor started under
``RLIMIT_NOFILE`` 1024:

- its **stdout is a pipe nobody reads** until the window is over (then it
  is read again, so its notices of dropped lines can be counted); a
  service (``diskfill``) prints 1000 lines/s to its console to fill it;
- **a webhook alert** on every ``check.*`` and ``service.*`` event (each
  exit and restart of ``blink`` too, named: a glob leaves them out), to a
  local server that answers ``500`` with a body that never ends, while the
  check ``flapping`` fails and recovers every second;
- **4 ``procwork ctl tail -f loud`` followers that stopped reading** (their
  stdout a pipe to ``sleep``) of a service writing several MB/s; each is
  replaced by a fresh one every few seconds, as the flood evicts them;
- **a flood of the control socket**: waves of 2000 connections, each held
  until the next wave, while ``procwork ctl status`` must keep answering
  (run every few seconds), and requests nested 30 000 deep keep coming;
- **HTTP attacks**: 300 MB POSTs without the token, a 300 MB body on a
  read-only path, and control requests nested 20 000 deep;
- **a service log on a full disk**: ``diskfill``'s ``stdout_log`` is on a
  64 KiB tmpfs mounted for the run (unmounted at the end), or, when it
  cannot be mounted (not root), ``/dev/full``;
- checks every 0.5 s (``tick``, ``flapping``) and a service restarted every
  0.5 s (``blink``), counted against their schedule.

Then the stdout pipe is read again, the monitor is sent SIGTERM, and what
its services and checks left is looked for (every process carrying the
soak's mark in its environment). Printed, one line each: RSS max, check
runs vs schedule, restarts vs schedule, fds max, log lines dropped (the
metric vs the notices), the full disk's accounting, the webhook, the
followers, the flood, ``ctl status``, HTTP, hostile JSON on the socket,
status polls and loop lag, the SIGTERM exit and the processes left; each
bound with ``ok`` or ``BROKEN``. Exits 1 naming every broken bound.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from _partners import (  # beside this script
    DROPPED_NOTICE,
    EndlessWebhook,
    Monitor,
    PipeReader,
    Sampler,
    cpu_seconds,
    descriptors,
    hold_connections,
    kill_group,
    loud_service,
    metric,
    stalled_follower,
    told,
)

from procwork.monitor._controlserver import CLOSING_AT_ONCE
from tests.support import cpu_load
from tests.support.http import endless, once, post, talk


@dataclass(frozen=True)
class Profile:
    """How hard the partners push, and the bounds that depend on it."""

    seconds: float
    flood: int  # connections a wave of the flood makes and holds
    flood_every: float  # seconds between waves
    loud_rate: float  # MB/s the followed service writes
    follower_life: float  # seconds before a follower is replaced
    ctl_every: float  # seconds between ``ctl status`` runs
    max_exit: float  # seconds SIGTERM may take


FULL = Profile(60, 2000, 15, 5.0, 10, 3, 2.0)
QUICK = Profile(20, 500, 8, 2.0, 5, 2, 5.0)

EVERY = 0.5  # the checks' interval, and the restart cycle of ``blink``
DISK_RATE = 1000  # lines/s diskfill prints (to the full disk and the console)
FOLLOWERS = 4
BIG = 300_000_000  # bytes of the HTTP POSTs' Content-Length
CONTROL_MAX = 32  # control_max_connections
HTTP_MAX = 16  # http_max_connections
MAX_RUNNING = 8  # max_running: checks and their processes at once
IN_FLIGHT = 4  # the alert's max_in_flight
IDLE_TIMEOUT = 3  # control_idle_timeout: stalled followers are cut off
MARK = "PROCWORK_SOAK_MARK"  # in the monitor's environment, so its children's

_DISKFILL = textwrap.dedent(
    """
    import os, sys, time
    stop, count, rate = sys.argv[1], sys.argv[2], float(sys.argv[3])
    out = sys.stdout.buffer
    printed, batch = 0, max(1, int(rate / 20))
    due = time.monotonic()
    while not os.path.exists(stop):
        out.write(b"".join(
            b"diskfill line %d %s\\n" % (printed + k, b"x" * 50) for k in range(batch)))
        out.flush()
        printed += batch
        due += batch / rate
        time.sleep(max(0.0, due - time.monotonic()))
    with open(count + ".part", "w") as f:
        f.write(str(printed))
    os.rename(count + ".part", count)
    time.sleep(100000)
    """
)


def config(temp: Path, disk_log: str, webhook: str, token: str, rate: float) -> str:
    """The monitor's config: the caps the fd bound is derived from, the
    checks, the services and the alert."""
    diskfill = json.dumps(_DISKFILL)
    return textwrap.dedent(
        f"""
            [monitor]
            summary_every = 5
            max_load = false
            max_running = {MAX_RUNNING}
            http_control = true
            http_token = "{token}"
            http_max_connections = {HTTP_MAX}
            control_max_connections = {CONTROL_MAX}
            control_idle_timeout = {IDLE_TIMEOUT}

            [[check]]
            name = "tick"
            command = ["true"]
            every = {EVERY}

            [[check]]
            name = "flapping"
            command = ["sh", "-c", "exit $(( $(date +%s) % 2 ))"]
            every = {EVERY}

            [[service]]
            name = "blink"
            command = ["sleep", "{EVERY}"]
            start_seconds = 0.1
            min_restart_delay = 0.01
            max_restart_delay = 0.01

            [[service]]
            name = "diskfill"
            command = ["{{python}}", "-c", {diskfill},
                       "{temp}/diskfill.stop", "{temp}/diskfill.count", "{DISK_RATE}"]
            stdout_log = "{disk_log}"
            console_rate = {DISK_RATE}

            [[alert]]
            name = "endless"
            events = ["check.*", "service.*", "service.exited", "service.restarted"]
            webhook = "{webhook}"
            timeout = 5
            retries = 3
            retry_delay = 0.1
            max_in_flight = {IN_FLIGHT}
            """
    ) + loud_service("loud", rate)


# -- the partners, each a thread until ``stop`` ------------------------------------


class Partner(threading.Thread):
    """A partner's loop in a thread; what went wrong in it is kept."""

    def __init__(self, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.stop = stop
        self.error: str | None = None

    def run(self) -> None:
        try:
            self.work()
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"

    def work(self) -> None:
        raise NotImplementedError


class Flood(Partner):
    """Waves of ``count`` connections to the control socket, each wave held
    until the next; what they were told is counted."""

    def __init__(self, stop: threading.Event, sock: Path, profile: Profile) -> None:
        super().__init__(stop)
        self.sock, self.profile = sock, profile
        self.waves = 0
        self.slowest = 0.0  # seconds a wave took to connect
        self.told: Counter[str] = Counter()

    def work(self) -> None:
        held: list[socket.socket] = []
        try:
            while not self.stop.is_set():
                self.told += told(held)
                for client in held:
                    client.close()
                started = time.monotonic()
                held = hold_connections(
                    self.sock, self.profile.flood, stop=self.stop, timeout=30
                )
                self.waves += 1
                self.slowest = max(self.slowest, time.monotonic() - started)
                self.stop.wait(self.profile.flood_every)
            self.told += told(held)
        finally:
            for client in held:
                client.close()


class Followers(Partner):
    """:data:`FOLLOWERS` stalled ``ctl tail -f`` pipelines of ``service``,
    each replaced by a new one every ``follower_life`` seconds (staggered),
    so some are attached whatever the flood evicted."""

    def __init__(
        self, stop: threading.Event, monitor: Monitor, service: str, life: float
    ) -> None:
        super().__init__(stop)
        self.monitor, self.service, self.life = monitor, service, life
        self.started = 0

    def work(self) -> None:
        now = time.monotonic()
        due = [now + self.life * (i + 1) / FOLLOWERS for i in range(FOLLOWERS)]
        pipelines = [self._start() for _ in range(FOLLOWERS)]
        try:
            while not self.stop.wait(0.2):
                for i in range(FOLLOWERS):
                    if time.monotonic() >= due[i]:
                        kill_group(pipelines[i])
                        pipelines[i] = self._start()
                        due[i] += self.life
        finally:
            for pipeline in pipelines:
                kill_group(pipeline)

    def _start(self) -> subprocess.Popen[bytes]:
        self.started += 1
        return stalled_follower(self.monitor, self.service)


class HttpAttacks(Partner):
    """Every second: a 300 MB POST to ``/control`` without the token, one to
    a read-only path with it, and control requests nested 20 000 deep with
    and without it. Each must be refused with its code, before its body."""

    def __init__(self, stop: threading.Event, port: int, token: str) -> None:
        super().__init__(stop)
        self.port, self.token = port, token
        self.answers: Counter[str] = Counter()
        self.unexpected: Counter[str] = Counter()
        self.most_sent = 0  # body bytes in the socket before an answer

    def work(self) -> None:
        auth = f"authorization: Bearer {self.token}\r\n".encode()
        deep = b"[" * 20000 + b"]" * 20000
        # (what, the code it must get, the head, the body)
        attacks: list[tuple[str, int, bytes, Callable[[], Iterator[bytes]]]] = [
            ("300 MB POST /control without the token", 401,
             post("/control", BIG), endless),
            ("300 MB POST /status.json", 413,
             post("/status.json", BIG, auth), endless),
            ("deep JSON POST /control", 400,
             post("/control", len(deep), auth), lambda: once(deep)),
            ("deep JSON POST /control without the token", 401,
             post("/control", len(deep)), lambda: once(deep)),
        ]  # fmt: skip
        while not self.stop.wait(1.0):
            for what, code, head, body in attacks:
                if self.stop.is_set():
                    break
                try:
                    seen = talk(self.port, head, body(), 15)
                    got: int | str = seen.code
                    self.most_sent = max(self.most_sent, seen.body_sent)
                except (AssertionError, OSError, IndexError, ValueError) as e:
                    got = f"no answer ({type(e).__name__}: {str(e)[:60]})"
                if got == code:
                    self.answers[f"{what} -> {code}"] += 1
                else:
                    self.unexpected[f"{what} -> {got}"] += 1


class HostileControl(Partner):
    """Twice a second, a request nested 30 000 deep on the control socket;
    each must get an answer on its connection (the refusal, or, during a
    wave of the flood, the cap's "busy" or a close without a word)."""

    def __init__(self, stop: threading.Event, sock: Path) -> None:
        super().__init__(stop)
        self.sock = sock
        self.answers: Counter[str] = Counter()

    def work(self) -> None:
        line = b'{"command": "status", "names": ' + b"[" * 30000 + b"]" * 30000
        line += b"}\n"
        while not self.stop.wait(0.5):
            self.answers[self._ask(line)] += 1

    def _ask(self, line: bytes) -> str:
        try:
            (client,) = hold_connections(self.sock, 1, timeout=10)
        except RuntimeError:
            return "no answer (not accepted in 10 s)"
        client.settimeout(10)
        with client, client.makefile("rb") as reader:
            # A refusal may come (and the connection close) before the whole
            # request is sent: the answer is read whatever the send did.
            with contextlib.suppress(OSError):
                client.sendall(line)
            try:
                data = reader.readline()
            except TimeoutError:
                return "no answer (10 s)"
            except OSError as e:
                return f"closed without a word ({e.strerror})"
            if not data:
                return "closed without a word (over the cap, a wave going on)"
            answer = json.loads(data)
            error = str(answer.get("error", ""))
            if "nest" in error:
                return "refused: nested too deep"
            if answer.get("busy"):
                return "busy (over the cap)"
            if error.startswith("closed:"):
                return "closed to make room"
            return "unexpected: " + json.dumps(answer)[:80]


class CtlProbe(Partner):
    """``procwork ctl status`` every ``every`` seconds: its exit status and
    how long it took."""

    def __init__(self, stop: threading.Event, monitor: Monitor, every: float) -> None:
        super().__init__(stop)
        self.monitor, self.every = monitor, every
        self.runs: list[tuple[int, float, str]] = []

    def work(self) -> None:
        while not self.stop.wait(self.every):
            self.runs.append(self.monitor.ctl("status", timeout=30))


# -- the machinery ---------------------------------------------------------------


@contextlib.contextmanager
def full_disk(where: Path) -> Iterator[tuple[str, str]]:
    """A directory on a 64 KiB tmpfs mounted for the block (and unmounted
    after it), or ``/dev/full`` when it cannot be mounted: (the log path,
    what it is)."""
    where.mkdir()
    mounted = False
    if os.geteuid() == 0:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "procwork-soak", str(where)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        mounted = done.returncode == 0
        why = done.stderr.strip()
    else:
        why = "mounting a tmpfs needs root"
    try:
        if mounted:
            yield str(where / "diskfill.out"), "a 64 KiB tmpfs"
        else:
            yield "/dev/full", f"/dev/full ({why})"
    finally:
        if mounted:
            unmounted = subprocess.run(
                ["umount", str(where)], capture_output=True, timeout=30
            )
            if unmounted.returncode:
                subprocess.run(["umount", "-l", str(where)], timeout=30)


def marked(token: str) -> list[int]:
    """Processes (but this one) whose environment carries the soak's mark."""
    needle = f"{MARK}={token}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        with contextlib.suppress(OSError), open(f"/proc/{entry}/environ", "rb") as f:
            if needle in f.read().split(b"\0"):
                pids.append(int(entry))
    return pids


def newlines(path: str) -> int:
    """Newlines in ``path`` and its rotated files (0 for ``/dev/full``)."""
    if path == "/dev/full":
        return 0
    total = 0
    for name in [path, *(f"{path}.{n}" for n in range(1, 10))]:
        with contextlib.suppress(FileNotFoundError), open(name, "rb") as f:
            total += f.read().count(b"\n")
    return total


def until(done: Callable[[], bool], seconds: float, every: float = 0.25) -> bool:
    """Whether ``done()`` became true within ``seconds``."""
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


class Report:
    """The printed lines; the bounds broken."""

    def __init__(self) -> None:
        self.broken: list[str] = []

    def line(self, label: str, text: str, bound: str = "", ok: bool = True) -> None:
        verdict = f"  [{bound}: {'ok' if ok else 'BROKEN'}]" if bound else ""
        print(f"{label}: {text}{verdict}", flush=True)
        if not ok:
            self.broken.append(f"{label} ({bound})")


def ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def wchar(pid: int) -> int:
    """Bytes ``pid`` passed to write(2) so far (0 when it is gone)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


# -- the soak --------------------------------------------------------------------


def soak(args: argparse.Namespace, profile: Profile, temp: Path) -> Report:
    """Start everything, run the window, end it all (whatever happens, by
    the ExitStack, in reverse order); the printed report."""
    report = Report()
    token, mark = uuid.uuid4().hex, uuid.uuid4().hex
    spool = temp / "monitor-tmp"  # the monitor's TMPDIR: nothing may land there
    spool.mkdir()
    stop = threading.Event()
    load_before = os.getloadavg()[0]
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(EndlessWebhook())
        disk_log, disk_what = stack.enter_context(full_disk(temp / "full"))
        stack.enter_context(cpu_load(args.load))
        monitor = Monitor(
            temp,
            config(temp, disk_log, server.url, token, profile.loud_rate),
            http=True,
            stdout_pipe=True,
            nofile=args.nofile,
            env={MARK: mark, "TMPDIR": str(spool)},
        )
        stack.callback(_end, monitor, mark)
        pid = monitor.proc.pid
        assert monitor.port is not None and monitor.proc.stdout is not None

        time.sleep(2)  # the services have started
        baseline = descriptors(pid)
        first = monitor.status()
        started = time.monotonic()
        loud = first["services"]["loud"]["pid"]
        loud_wrote = wchar(loud)
        cpu_before = cpu_seconds(pid)
        sampler = Sampler(pid, every=0.01, watch_links=str(spool)).start()
        stack.callback(sampler.stop)
        flood = Flood(stop, monitor.sock, profile)
        followers = Followers(stop, monitor, "loud", profile.follower_life)
        http = HttpAttacks(stop, monitor.port, token)
        hostile = HostileControl(stop, monitor.sock)
        probe = CtlProbe(stop, monitor, profile.ctl_every)
        partners: list[Partner] = [flood, followers, http, hostile, probe]
        for partner in partners:
            partner.start()
        stack.callback(_stop, stop, partners)

        # The window: the partners at work, /metrics polled once a second.
        polls, failed_polls, slowest_poll, lag, stalls = 0, 0, 0.0, 0.0, 0.0
        while (left := started + profile.seconds - time.monotonic()) > 0:
            time.sleep(min(1.0, left))
            polls += 1
            asked = time.monotonic()
            try:
                text = monitor.metrics(timeout=10)
            except OSError:
                failed_polls += 1
                continue
            slowest_poll = max(slowest_poll, time.monotonic() - asked)
            lag = max(lag, metric(text, "procwork_monitor_loop_lag_seconds") or 0)
            stalls = metric(text, "procwork_monitor_loop_stalls_total") or 0
        last = monitor.status()
        window = time.monotonic() - started
        loud_rate = (wchar(loud) - loud_wrote) / 1e6 / window
        cpu = (cpu_seconds(pid) - cpu_before) / window
        _stop(stop, partners)

        # The full disk: diskfill stops printing and says how much it printed;
        # each of its lines is in the file or counted lost.
        (temp / "diskfill.stop").touch()
        count = temp / "diskfill.count"
        printed = int(count.read_text()) if until(count.exists, 15) else None
        disk = {"file": 0, "lost": 0.0, "errors": 0.0}

        def accounted() -> bool:
            text = monitor.metrics()
            disk["file"] = newlines(disk_log)
            for key, name in (("lost", "lines_lost"), ("errors", "errors")):
                found = metric(
                    text, f"procwork_service_log_{name}_total", service="diskfill"
                )
                disk[key] = found or 0.0
            return printed is not None and disk["file"] + disk["lost"] >= printed

        until(accounted, 15, 0.5)

        # The reader comes back: what was buffered, then the notices; the
        # metric is read once it has stopped moving.
        reader = PipeReader(monitor.proc.stdout)
        reader.start()
        time.sleep(3)
        seen: list[float | None] = [None]

        def settled() -> bool:
            now = metric(monitor.metrics(), "procwork_log_lines_dropped_total")
            same = now == seen[0]
            seen[0] = now
            return same

        until(settled, 15, 1.0)
        dropped = seen[0] or 0.0
        rss_end = sampler.rss_samples[-1]
        sampler.stop()
        exit_seconds = monitor.terminate(30)
        output = reader.join(10)
        notices = [int(n) for n in DROPPED_NOTICE.findall(output)]
        until(lambda: not marked(mark), 5)
        leftovers = _kill(marked(mark))
        webhook = server.stats()

    # -- the report ---------------------------------------------------------------
    checks, control = last["checks"], last["control"]
    report.line(
        "load",
        f"{args.load} CPU-bound processes; 1-minute load average {load_before:.1f} "
        f"at the start, {os.getloadavg()[0]:.1f} at the end ({os.cpu_count()} "
        f"cores); window {window:.1f} s; the monitor used {cpu:.0%} of a core",
    )
    report.line(
        "RSS max",
        f"{sampler.rss_max:.1f} MiB (start {sampler.rss_samples[0]:.1f}, end "
        f"{rss_end:.1f}; {len(sampler.rss_samples)} samples, one every 0.25 s)",
        f"< {args.max_rss:g} MiB",
        sampler.rss_max < args.max_rss,
    )
    due = window / EVERY
    runs = {}
    for name in ("tick", "flapping"):
        runs[name] = checks[name]["runs"] - first["checks"][name]["runs"]
    tick_failed = checks["tick"]["failed"] - first["checks"]["tick"]["failed"]
    report.line(
        "check runs",
        f"tick {runs['tick']} of {due:.0f} due ({ratio(runs['tick'], due):.0%}), "
        f"{tick_failed} failed; flapping {runs['flapping']} of {due:.0f} due "
        f"({ratio(runs['flapping'], due):.0%}); every {EVERY:g} s",
        ">= 90 % of schedule, tick never fails",
        min(runs.values()) >= 0.9 * due and tick_failed == 0,
    )
    restarts = last["services"]["blink"]["restarts"]
    restarts -= first["services"]["blink"]["restarts"]
    report.line(
        "restarts",
        f"blink {restarts} of {due:.0f} due ({ratio(restarts, due):.0%}): it exits "
        f"every {EVERY:g} s and is restarted after 0.01 s",
        ">= 80 % of schedule",
        restarts >= 0.8 * due,
    )
    fd_bound = baseline + CONTROL_MAX + CLOSING_AT_ONCE + HTTP_MAX + IN_FLIGHT
    fd_bound += 4 * MAX_RUNNING + 16
    report.line(
        "fds max",
        f"{sampler.fds_max} (baseline {baseline}; RLIMIT_NOFILE {args.nofile}; "
        "sampled every 10 ms)",
        f"<= {baseline} baseline + {CONTROL_MAX} control_max_connections + "
        f"{CLOSING_AT_ONCE} closing + {HTTP_MAX} http_max_connections + "
        f"{IN_FLIGHT} webhooks + 4 x {MAX_RUNNING} max_running + 16 = {fd_bound}",
        sampler.fds_max <= fd_bound,
    )
    report.line(
        "log lines dropped",
        f"stdout unread for {window:.0f} s: procwork_log_lines_dropped_total "
        f"{dropped:.0f} before SIGTERM; the notices in stdout say {sum(notices)} "
        f"({len(notices)} notice lines)",
        "every dropped line reported: notices = metric > 0",
        dropped > 0 and sum(notices) == dropped,
    )
    report.line(
        "service log on a full disk",
        f"{disk_what}: diskfill printed {printed} lines: {disk['file']} in the "
        f"file + {disk['lost']:.0f} counted lost (procwork_service_log_lines_lost_"
        f"total) = {disk['file'] + disk['lost']:.0f}; {disk['errors']:.0f} failed "
        "writes counted",
        "file + lost = printed, lost > 0",
        printed is not None
        and disk["file"] + disk["lost"] == printed
        and disk["lost"] > 0,
    )
    alert = last["alerts"]["endless"]
    connections, closed, sent = webhook
    report.line(
        "webhook",
        f"the alert sent {alert['sent']}, ok {alert['ok']}, failed {alert['failed']}, "
        f"dropped {alert['dropped']}; last result {alert['last_result']!r}; the "
        f"endless server: {connections} connections, {closed} closed by the "
        f"monitor, {sent / 2**20:.0f} MiB sent",
        "deliveries made and given up (failed > 0)",
        alert["failed"] > 0,
    )
    report.line(
        "followers",
        f"{followers.started} stalled 'ctl tail -f loud' pipelines ({FOLLOWERS} at "
        f"a time, each replaced after {profile.follower_life:g} s); loud wrote "
        f"{loud_rate:.1f} MB/s; {control['skipped_lines']} lines "
        f"({control['skipped_bytes'] / 1e6:.0f} MB) not sent to them, "
        f"{control['followers_cut']} cut off for reading nothing for "
        f"{IDLE_TIMEOUT} s",
        "they fell behind (lines skipped > 0)",
        control["skipped_lines"] > 0,
    )
    said = "; ".join(f"{n} x {what}" for what, n in flood.told.most_common(4))
    report.line(
        "control flood",
        f"{flood.waves} waves of {profile.flood} connections (the slowest connected "
        f"in {flood.slowest:.1f} s); the monitor evicted {control['evicted']}, "
        f"refused {control['refused']}; the held ones were told: {said}",
        "the socket kept accepting",
        flood.error is None and flood.waves > 0,
    )
    answered = [took for code, took, _ in probe.runs if code == 0]
    failures = [f"exit {code}: {error[:80]}" for code, _, error in probe.runs if code]
    report.line(
        "ctl status",
        f"{len(answered)} of {len(probe.runs)} answered (exit 0), slowest "
        f"{max(answered, default=0):.2f} s" + (f"; {failures[:2]}" if failures else ""),
        "every one answers",
        bool(probe.runs) and not failures,
    )
    report.line(
        "HTTP",
        "; ".join(f"{n} x {what}" for what, n in sorted(http.answers.items()))
        + "".join(f"; UNEXPECTED {n} x {what}" for what, n in http.unexpected.items())
        + f"; at most {http.most_sent / 2**20:.1f} MiB of a body sent before its "
        f"answer; {sampler.links_max} files open in the monitor's TMPDIR, "
        f"{len(list(spool.iterdir()))} left there",
        "every one refused with its code, < 32 MiB sent, nothing spooled",
        bool(http.answers)
        and not http.unexpected
        and http.most_sent < 32 * 2**20
        and sampler.links_max == 0
        and not list(spool.iterdir()),
    )
    report.line(
        "hostile JSON",
        "on the control socket: "
        + "; ".join(f"{n} x {what}" for what, n in hostile.answers.most_common()),
        "every one answered, some refused for their nesting",
        hostile.answers["refused: nested too deep"] > 0
        and not any(w.startswith(("no answer", "unexpected")) for w in hostile.answers),
    )
    report.line(
        "status polls",
        f"{polls - failed_polls} of {polls} /metrics polls answered (slowest "
        f"{slowest_poll:.2f} s); loop lag at most {lag:.2f} s, {stalls:.0f} stalls "
        "over 1 s",
        "every poll answered",
        polls > 0 and failed_polls == 0,
    )
    report.line(
        "SIGTERM exit",
        "none within 30 s (SIGKILLed)"
        if exit_seconds is None
        else f"{exit_seconds:.2f} s, status {monitor.proc.returncode}",
        f"<= {profile.max_exit:g} s, status 0",
        exit_seconds is not None
        and exit_seconds <= profile.max_exit
        and monitor.proc.returncode == 0,
    )
    report.line(
        "processes left",
        f"{len(leftovers)}"
        + (f" (SIGKILLed: {leftovers})" if leftovers else "")
        + " of the monitor's (found by its environment's mark) within 5 s of its exit",
        "none",
        not leftovers,
    )
    errors = [f"{type(p).__name__}: {p.error}" for p in partners if p.error]
    report.line(
        "partners",
        "; ".join(errors) if errors else "all ran to the end without an error",
        "none failed",
        not errors,
    )
    return report


def _stop(stop: threading.Event, partners: list[Partner]) -> None:
    stop.set()
    for partner in partners:
        partner.join(timeout=40)


def _kill(pids: list[int]) -> list[int]:
    """SIGKILL ``pids``; those that were still there."""
    killed = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def _end(monitor: Monitor, mark: str) -> None:
    """The monitor SIGKILLed if it still runs, and whatever it left."""
    if monitor.proc.poll() is None:
        monitor.proc.kill()
        monitor.proc.wait(timeout=10)
    until(lambda: not marked(mark), 5)
    _kill(marked(mark))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 s, lighter partners")
    parser.add_argument("--seconds", type=float, help="the window (60; --quick 20)")
    parser.add_argument("--load", type=int, default=2, help="busy processes (2)")
    parser.add_argument("--max-rss", type=float, default=100, help="MiB (100)")
    parser.add_argument("--max-exit", type=float, help="SIGTERM, s (2; --quick 5)")
    parser.add_argument("--nofile", type=int, default=1024, help="the monitor's")
    args = parser.parse_args()
    profile = QUICK if args.quick else FULL
    if args.seconds is not None:
        profile = Profile(**{**vars(profile), "seconds": args.seconds})
    if args.max_exit is not None:
        profile = Profile(**{**vars(profile), "max_exit": args.max_exit})
    # The flood holds its connections here: room for them.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = profile.flood + 1024
    if soft < want and (hard == resource.RLIM_INFINITY or hard >= want):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    # SIGTERM (a test's timeout) unwinds like an error: every finally runs.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    print(
        f"monitor soak: {profile.seconds:g} s{' (--quick)' if args.quick else ''}",
        flush=True,
    )
    try:
        with tempfile.TemporaryDirectory(prefix="procwork-soak-") as temp:
            report = soak(args, profile, Path(temp))
    except Exception as e:
        print(f"FAILED: the soak could not finish: {type(e).__name__}: {e}")
        return 1
    if report.broken:
        print("FAILED: broken bounds: " + "; ".join(report.broken))
        return 1
    print("OK: every bound held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
