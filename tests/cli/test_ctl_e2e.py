"""``procwork ctl`` end to end: a real monitor operated through its socket.

Each test runs ``procwork monitor`` as a process with a socket of its own in
``tmp_path`` and drives it with the installed ``procwork ctl`` console
script, as an operator would: status, stop, start, restart, signal, tail,
reload (by ctl and by SIGHUP), shutdown; and what ctl says when there is no
monitor to talk to. Every wait is bounded; every process started is killed
by pid at the end.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import tempfile
import textwrap
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support import PY, alive
from tests.support.monitor import (
    CTL,
    HEADER,
    MonitorProcess,
    ctl,
    get,
    python_service,
    running_with,
    start_monitor,
    statuses,
    wait_for,
)

# The real procwork ctl, against a real procwork monitor process.
pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SLEEPER = "import time; time.sleep(600)"
TALKER = textwrap.dedent(
    """
    import signal, sys, time
    signal.signal(signal.SIGUSR1, lambda *a: print("got USR1", flush=True))
    n = 0
    while True:
        n += 1
        print(f"line {n}", flush=True)
        print(f"err {n}", file=sys.stderr, flush=True)
        time.sleep(0.1)
    """
)


def test_ctl_shows_stops_starts_restarts_signals_and_tails_services(
    tmp_path: Path, monitors: list[MonitorProcess], ours: str
) -> None:
    sock = tmp_path / "ctl.sock"
    config = tmp_path / "monitor.toml"
    config.write_text(
        HEADER
        + python_service("talker", TALKER, ours)
        + python_service("idle", SLEEPER, ours, "autostart = false\n")
    )
    monitor = start_monitor(monitors, tmp_path, config, "--socket", str(sock))
    wait_for("talker to run", lambda: statuses(sock)["talker"]["state"] == "RUNNING")

    # The socket is the monitor user's alone.
    assert oct(sock.stat().st_mode & 0o777) == "0o600"
    assert sock.stat().st_uid == os.getuid()

    # status: a table, or JSON.
    table = ctl(sock, "status").stdout.splitlines()
    header = ["NAME", "STATE", "PID", "UPTIME", "RESTARTS", "LAST", "EXIT"]
    assert table[0].split() == header
    talker_pid = statuses(sock)["talker"]["pid"]
    assert table[1].split()[:3] == ["talker", "RUNNING", str(talker_pid)]
    assert table[2].split() == ["idle", "STOPPED", "-", "-", "0", "-"]
    only = statuses(sock)
    assert set(only) == {"talker", "idle"}
    done = ctl(sock, "status", "--json", "idle")
    assert list(json.loads(done.stdout)) == ["idle"]

    # tail: the kept output of either stream.
    done = ctl(sock, "tail", "-n", "2", "talker")
    assert done.returncode == 0
    assert [line.split()[0] for line in done.stdout.splitlines()] == ["line", "line"]
    assert ctl(sock, "tail", "--stderr", "talker").stdout.startswith("err ")

    # signal: to the group; the service handles it.
    done = ctl(sock, "signal", "USR1", "talker")
    assert (done.returncode, done.stdout) == (0, "talker: USR1 sent\n")
    # (All the kept lines: on a busy machine, ten are a second of output.)
    everything = ("tail", "-n", "100000", "talker")
    wait_for("USR1 handled", lambda: "got USR1" in ctl(sock, *everything).stdout)

    # tail -f: new lines as they come, until the client is stopped.
    # The highest line number kept so far ("got USR1" may be the last line).
    kept = ctl(sock, *everything).stdout.splitlines()
    last = max(int(line.split()[1]) for line in kept if line.startswith("line "))
    follower = subprocess.Popen(
        [CTL, "ctl", "--socket", str(sock), "tail", "-f", "-n", "0", "talker"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines: queue.Queue[str] = queue.Queue()

        def read() -> None:
            assert follower.stdout is not None
            for line in follower.stdout:
                lines.put(line)

        threading.Thread(target=read, daemon=True).start()
        seen = [lines.get(timeout=20) for _ in range(3)]
        numbers = [int(line.split()[1]) for line in seen]
        assert numbers[0] > last and numbers == sorted(numbers)
    finally:
        follower.kill()
        follower.wait(timeout=10)

    # stop, start, restart.
    done = ctl(sock, "stop", "talker")
    assert (done.returncode, done.stdout) == (0, "talker: STOPPED\n")
    assert wait_for("talker to be gone", lambda: not alive(talker_pid))
    done = ctl(sock, "start", "talker", "idle")
    assert done.returncode == 0 and "talker: STARTING pid " in done.stdout
    assert "idle: STARTING pid " in done.stdout
    before = statuses(sock)
    done = ctl(sock, "restart", "all")
    assert done.returncode == 0
    after = statuses(sock)
    for name in ("talker", "idle"):
        assert after[name]["pid"] not in (None, before[name]["pid"])

    # An unknown name: refused, nothing done.
    done = ctl(sock, "stop", "talker", "nope")
    assert done.returncode == 1
    assert done.stderr == (
        "procwork ctl: no service named 'nope' (services: talker, idle)\n"
    )
    assert statuses(sock)["talker"]["pid"] == after["talker"]["pid"]

    # Each action is logged by the monitor.
    monitor.expect(r"control: signal USR1 talker \(from pid \d+ uid \d+\)")
    monitor.expect(r"control: restart all \(from pid")

    # shutdown: the monitor stops its services and exits 0.
    done = ctl(sock, "shutdown")
    assert (done.returncode, done.stdout) == (0, "monitor stopping\n")
    assert monitor.proc.wait(timeout=30) == 0
    assert wait_for("every service to be gone", lambda: not running_with(ours))
    assert not sock.exists()
    done = ctl(sock, "status")
    assert done.returncode == 3
    assert "no monitor is running" in done.stderr


def test_ctl_start_brings_a_FATAL_service_back_on_the_default_socket(
    tmp_path: Path, monitors: list[MonitorProcess], ours: str
) -> None:
    flag = tmp_path / "fixed"
    code = f"import os, sys, time\nif not os.path.exists({str(flag)!r}): sys.exit(3)\n"
    code += "time.sleep(600)"
    config = tmp_path / "monitor.toml"
    config.write_text(
        HEADER + python_service("flaky", code, ours, "max_restarts = 1\n")
    )
    # No --socket: the default one, in the XDG_RUNTIME_DIR the tests set.
    start_monitor(monitors, tmp_path, config)
    wait_for("FATAL", lambda: statuses(None)["flaky"]["state"] == "FATAL")
    flag.touch()
    done = ctl(None, "start", "flaky")
    assert done.returncode == 0, done.stderr
    wait_for("RUNNING", lambda: statuses(None)["flaky"]["state"] == "RUNNING")


def test_reload_by_ctl_and_by_SIGHUP_applies_only_the_difference(
    tmp_path: Path, monitors: list[MonitorProcess], ours: str
) -> None:
    sock = tmp_path / "ctl.sock"
    config = tmp_path / "monitor.toml"

    def write(*services: tuple[str, str]) -> None:
        # As an editor saves: the new file replaces the old at once.
        new = tmp_path / "monitor.toml.new"
        new.write_text(
            HEADER
            + "".join(
                python_service(name, SLEEPER, ours, f'env = {{ V = "{v}" }}\n')
                for name, v in services
            )
        )
        new.replace(config)

    write(("keep", "1"), ("drop", "1"), ("change", "1"))
    monitor = start_monitor(monitors, tmp_path, config, "--socket", str(sock))
    wait_for(
        "every service to run",
        lambda: all(s["state"] == "RUNNING" for s in statuses(sock).values()),
    )
    before = statuses(sock)

    write(("keep", "1"), ("change", "2"), ("new", "1"))
    done = ctl(sock, "reload")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == (
        "reloaded: services: added new; removed drop; changed change; 1 unchanged\n"
    )
    after = statuses(sock)
    assert list(after) == ["keep", "change", "new"]
    assert after["keep"]["pid"] == before["keep"]["pid"]  # not touched
    assert after["change"]["pid"] not in (None, before["change"]["pid"])
    assert after["new"]["pid"] is not None
    assert wait_for("drop's process to go", lambda: not alive(before["drop"]["pid"]))
    assert not alive(before["change"]["pid"])

    # A broken file: rejected with the usual message; the old config runs on.
    config.write_text(config.read_text() + "\n[[service]\n")
    done = ctl(sock, "reload")
    assert done.returncode == 1
    assert done.stderr.startswith(f"procwork ctl: {config}: not valid TOML: ")
    assert done.stderr.count("\n") == 1
    assert {n: s["pid"] for n, s in statuses(sock).items()} == {
        n: s["pid"] for n, s in after.items()
    }

    # SIGHUP with the broken file: logged, and the monitor goes on.
    monitor.lines.clear()  # (the ctl reload above logged the same)
    monitor.proc.send_signal(signal.SIGHUP)
    monitor.expect(r"reload rejected, the running config is kept: .*not valid TOML")
    assert monitor.proc.poll() is None

    # SIGHUP with a good one: applied.
    write(("keep", "1"), ("change", "2"))
    monitor.proc.send_signal(signal.SIGHUP)
    monitor.expect(
        r"reloading .*: services: added none; removed new; changed none; 2 unchanged"
    )
    monitor.expect(r"reload of .* applied")
    final = statuses(sock)
    assert list(final) == ["keep", "change"]
    assert final["keep"]["pid"] == before["keep"]["pid"]
    assert final["change"]["pid"] == after["change"]["pid"]
    assert wait_for("new's process to go", lambda: not alive(after["new"]["pid"]))
    assert monitor.proc.poll() is None
    monitor.proc.send_signal(signal.SIGTERM)
    assert monitor.proc.wait(timeout=30) == 0


def test_http_control_needs_the_config_to_allow_it_and_the_token(
    tmp_path: Path, monitors: list[MonitorProcess], ours: str
) -> None:
    token = uuid.uuid4().hex
    config = tmp_path / "monitor.toml"
    config.write_text(
        HEADER.replace("http = false", 'http = "127.0.0.1:0"')
        + f'http_control = true\nhttp_token = "{token}"\n'
        + python_service("web", SLEEPER, ours)
    )
    sock = tmp_path / "ctl.sock"
    monitor = start_monitor(monitors, tmp_path, config, "--socket", str(sock))
    port = int(monitor.expect(r"status on http://127\.0\.0\.1:(\d+)/").group(1))
    url = f"http://127.0.0.1:{port}/control"
    wait_for("web to run", lambda: statuses(sock)["web"]["state"] == "RUNNING")
    stop = json.dumps({"command": "stop", "names": ["web"]}).encode()

    def post(headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(url, data=stop, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    code, answer = post({})
    assert (code, answer["ok"]) == (401, False)
    assert answer["error"] == "a control request needs 'Authorization: Bearer TOKEN'"
    code, _ = post({"Authorization": f"Bearer {token}x"})
    assert code == 401
    assert statuses(sock)["web"]["state"] == "RUNNING"
    code, answer = post({"Authorization": f"Bearer {token}"})
    assert code == 200 and answer["ok"] is True
    assert answer["result"]["services"]["web"]["state"] == "STOPPED"
    with pytest.raises(urllib.error.HTTPError, match="405"):
        get(url)


def test_http_stays_read_only_by_default(
    tmp_path: Path, monitors: list[MonitorProcess], ours: str
) -> None:
    config = tmp_path / "monitor.toml"
    config.write_text(
        HEADER.replace("http = false", 'http = "127.0.0.1:0"')
        + python_service("web", SLEEPER, ours)
    )
    monitor = start_monitor(monitors, tmp_path, config, "--socket", str(tmp_path / "s"))
    port = int(monitor.expect(r"status on http://127\.0\.0\.1:(\d+)/").group(1))
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/control",
        data=b'{"command": "shutdown"}',
        headers={"Authorization": "Bearer anything-at-all-really"},
    )
    with pytest.raises(urllib.error.HTTPError, match="403") as refused:
        urllib.request.urlopen(request, timeout=30)
    assert "control over HTTP is off" in json.loads(refused.value.read())["error"]
    assert monitor.proc.poll() is None


# -- when there is no monitor of ours to talk to ------------------------------------


def test_ctl_says_so_when_no_monitor_is_running(tmp_path: Path) -> None:
    missing = tmp_path / "none.sock"
    done = ctl(missing, "status")
    assert done.returncode == 3
    assert done.stderr == (
        f"procwork ctl: no monitor is running: {missing} does not exist (start one "
        "with procwork monitor, or give its socket with --socket)\n"
    )
    # A socket left by a monitor that was killed: nobody listens.
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as left:
        left.bind(str(stale))
    done = ctl(stale, "status")
    assert done.returncode == 3
    assert done.stderr == (
        f"procwork ctl: no monitor is running on {stale} (the socket is left from "
        "one that is gone)\n"
    )


def test_ctl_refuses_a_path_that_is_not_a_socket(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("")
    done = ctl(plain, "stop", "all")
    assert done.returncode == 3
    assert done.stderr == (
        f"procwork ctl: {plain} is not a socket, so not a procwork monitor's\n"
    )


@pytest.mark.skipif(os.getuid() != 0, reason="making another user's socket needs root")
def test_ctl_refuses_a_socket_that_belongs_to_another_user(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(theirs))
        server.listen()
        os.chown(theirs, 65534, 65534)
        done = ctl(theirs, "stop", "all")
    assert done.returncode == 3
    assert done.stderr == (
        f"procwork ctl: {theirs} belongs to uid 65534, not to you (uid 0): not "
        "your monitor's socket\n"
    )


def test_ctl_refuses_a_socket_that_does_not_speak_the_protocol(
    tmp_path: Path,
) -> None:
    other = tmp_path / "other.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(other))
        server.listen()
        server.settimeout(30)

        def answer() -> None:
            connection, _ = server.accept()
            with connection:
                connection.settimeout(30)
                connection.recv(4096)
                connection.sendall(b"220 welcome to something else\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        done = ctl(other, "status")
        thread.join(timeout=30)
    assert done.returncode == 3
    assert done.stderr == (
        f"procwork ctl: {other} answered, but not in procwork's control protocol: "
        "not a procwork monitor\n"
    )


@pytest.mark.skipif(os.getuid() != 0, reason="connecting as another user needs root")
def test_the_monitor_refuses_another_user_even_through_a_loosened_socket(
    tmp_path: Path, monitors: list[MonitorProcess], ours: str
) -> None:
    """File modes are the first lock; SO_PEERCRED is the second: a socket
    made world-writable by hand still refuses a stranger."""
    shared = Path(tempfile.mkdtemp(prefix="procwork-ctl-test-"))
    try:
        shared.chmod(0o755)
        sock = shared / "ctl.sock"
        config = tmp_path / "monitor.toml"
        config.write_text(HEADER + python_service("web", SLEEPER, ours))
        monitor = start_monitor(monitors, tmp_path, config, "--socket", str(sock))
        sock.chmod(0o666)
        code = (
            "import os, socket, sys\n"
            "os.setgid(65534); os.setuid(65534)\n"
            "s = socket.socket(socket.AF_UNIX); s.settimeout(20)\n"
            "s.connect(sys.argv[1])\n"
            # The monitor answers a stranger at once and hangs up: sending
            # may then fail, but its refusal is there to read.
            "try:\n"
            '    s.sendall(b\'{"command": "stop", "names": ["all"]}\\n\')\n'
            "except (BrokenPipeError, ConnectionResetError):\n"
            "    pass\n"
            "print(s.makefile().readline(), end='')\n"
        )
        done = subprocess.run(
            [PY, "-c", code, str(sock)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert answer["ok"] is False
        assert answer["error"] == (
            "uid 65534 may not control this monitor (only uid 0 and root may)"
        )
        monitor.expect(r"control: connection refused: uid 65534 may not control")
        assert statuses(sock)["web"]["state"] in ("STARTING", "RUNNING")
    finally:
        for path in shared.iterdir():
            path.unlink()
        shared.rmdir()


def test_a_second_monitor_on_the_same_socket_is_refused_and_a_stale_one_replaced(
    tmp_path: Path, monitors: list[MonitorProcess], ours: str
) -> None:
    sock = tmp_path / "ctl.sock"
    config = tmp_path / "monitor.toml"
    config.write_text(HEADER + python_service("web", SLEEPER, ours))
    first = start_monitor(monitors, tmp_path, config, "--socket", str(sock))
    # A lock file of its own, so the socket (not the single-instance lock of
    # the same config, tested in test_lifeline.py) is what refuses it.
    other_lock = tmp_path / "second.lock"
    second = subprocess.run(
        [
            CTL,
            "monitor",
            str(config),
            "--socket",
            str(sock),
            "--lock-file",
            str(other_lock),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 2
    assert second.stderr == (
        f"procwork monitor: control socket {sock}: another procwork monitor is "
        "listening there; stop it (procwork ctl shutdown) or give this one its own "
        "with --socket PATH\n"
    )
    # Killed, the first leaves its socket behind; the next monitor takes it.
    first.proc.kill()
    first.proc.wait(timeout=10)
    assert sock.exists()
    start_monitor(monitors, tmp_path, config, "--socket", str(sock))
    wait_for("the new monitor to answer", lambda: "web" in statuses(sock))


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "inf"])
def test_ctl_bounds_every_wait_so_its_timeout_must_be_finite(timeout: str) -> None:
    done = subprocess.run(
        [CTL, "ctl", "--timeout", timeout, "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith(
        "procwork ctl: --timeout must be a finite number of seconds > 0, not "
    )
