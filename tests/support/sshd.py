"""A real OpenSSH server on 127.0.0.1 for the remote-run tests and benchmark.

:func:`start_sshd` makes a throw-away host key and user key with
``ssh-keygen`` in a directory of its own, writes an ``sshd_config`` that lets
only that user key in (no PAM, no passwords), starts ``/usr/sbin/sshd -D -e``
on a free unprivileged port, and waits (bounded) until it answers. The
known_hosts file it writes holds the host key under ``[127.0.0.1]:port``, as
OpenSSH files a non-22 port. Stop it with :meth:`Sshd.stop` (kills it by
its pid).
"""

from __future__ import annotations

import getpass
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


@dataclass
class Sshd:
    """A running test sshd."""

    process: subprocess.Popen[bytes]
    port: int
    dir: Path
    host: str
    """``user@127.0.0.1:port``."""
    known_hosts: Path
    identity: Path
    host_key: Path
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def session_pids(self) -> list[int]:
        """The sshd children serving connections (the listener's children)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(p) for p in children.read_text().split()]
        except OSError:
            return []

    def server_pids(self) -> set[int]:
        """Every sshd process under the listener (all connections, any stage:
        pre-auth, privileged monitor, session), but not the commands run."""
        found: set[int] = set()
        todo = [self.process.pid]
        while todo:
            pid = todo.pop()
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text()
            except OSError:
                continue
            for child in map(int, children.split()):
                try:
                    comm = Path(f"/proc/{child}/comm").read_text().strip()
                except OSError:
                    continue
                if comm == "sshd":
                    found.add(child)
                    todo.append(child)
        return found

    def session_of(self, command: int) -> int:
        """The sshd process serving the session that runs process ``command``
        (a remote run's pid): its parent, which must be one of ours."""
        stat = Path(f"/proc/{command}/stat").read_text()
        parent = int(stat.rpartition(")")[2].split()[1])
        assert parent in self.server_pids(), (command, parent)
        return parent

    def established(self) -> int:
        """TCP connections established to this server's port, seen from /proc."""
        count = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                lines = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == self.port and fields[3] == "01":  # ESTABLISHED
                    count += 1
        return count


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path, kind: str = "ed25519") -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)],
        check=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def start_sshd(directory: Path, *, max_sessions: int = 300) -> Sshd:
    """Start an sshd of our own in ``directory``; it answers before this returns."""
    if not os.access(SSHD, os.X_OK):
        raise RuntimeError(
            f"{SSHD} is missing: install openssh-server (.ci/run does) to test "
            "remote runs"
        )
    directory.mkdir(parents=True, exist_ok=True)
    host_key = directory / "host_key"
    user_key = directory / "user_key"
    keygen(host_key)
    keygen(user_key)
    authorized = directory / "authorized_keys"
    authorized.write_bytes(user_key.with_suffix(".pub").read_bytes())
    authorized.chmod(0o600)
    port = free_port()
    # sshd insists on its privilege-separation directory even when it is not
    # used for a non-root login; it is root's to create.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    config = directory / "sshd_config"
    # SetEnv HOME: sshd runs each command with the user's shell, and bash
    # started by sshd reads ~/.bashrc even when not interactive. On a
    # developer's machine that file can be slow (root's here runs
    # `pyenv init` twice: 0.35 s of CPU a session, 69 s for the 200-run
    # test); the sessions get this directory, with no dotfiles, as HOME.
    config.write_text(
        f"""Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {directory / "sshd.pid"}
AuthorizedKeysFile {authorized}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin yes
StrictModes no
MaxSessions {max_sessions}
MaxStartups 100:30:200
LogLevel ERROR
SetEnv HOME={directory}
"""
    )
    log = directory / "sshd.log"
    process = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    deadline = time.monotonic() + 15
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait(10)
                raise RuntimeError(f"sshd did not start: {log.read_text()}") from None
            time.sleep(0.05)
    known_hosts = directory / "known_hosts"
    public = host_key.with_suffix(".pub").read_text().split()
    known_hosts.write_text(f"[127.0.0.1]:{port} {public[0]} {public[1]}\n")
    return Sshd(
        process=process,
        port=port,
        dir=directory,
        host=f"{getpass.getuser()}@127.0.0.1:{port}",
        known_hosts=known_hosts,
        identity=user_key,
        host_key=host_key,
        log=log,
    )


def remote_marker_pids(marker: str) -> list[int]:
    """Pids (on this machine, which is the 'remote' one) whose argv has ``marker``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            pids.append(int(entry.name))
    return pids
