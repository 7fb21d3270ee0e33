"""The monitor's own log, for its tests: a reactor for its writers, and a
log daemon of the test's own.

- :class:`WriterReactor`: a ``Clock`` that keeps the writers it is given
  (``addWriter``); the test says when they are writable (:meth:`writable`).
- :class:`LogDaemon`: a datagram socket the test binds where syslog's
  ``/dev/log`` or journald's socket would be, read only when the test says,
  every wait bounded; it takes the descriptors journald's clients pass.
- :func:`journal_fields`: a datagram of journald's native protocol, parsed
  as journald parses it (``FIELD=value`` lines, and the binary form of a
  value with a newline); :data:`RFC3164` and :data:`RFC5424` read syslog's.
"""

from __future__ import annotations

import array
import os
import re
import select
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock

#: ``<PRI>Mmm dd hh:mm:ss procwork[PID]: MSG``, as glibc's syslog(3) sends.
RFC3164 = re.compile(
    rb"<(?P<pri>\d+)>(?P<when>[A-Z][a-z]{2} [ 1-3]\d \d\d:\d\d:\d\d) "
    rb"(?P<ident>[^\[]+)\[(?P<pid>\d+)\]: (?P<msg>.*)",
    re.S,
)
#: ``<PRI>1 TIMESTAMP HOST APP PROCID MSGID - MSG`` (RFC 5424, no SD).
RFC5424 = re.compile(
    rb"<(?P<pri>\d+)>1 (?P<when>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) "
    rb"(?P<host>\S+) (?P<app>\S+) (?P<pid>\d+) (?P<msgid>\S+) - (?P<msg>.*)",
    re.S,
)


class WriterReactor(Clock):
    """A Clock that keeps the writers it is given; the test says when one
    is writable by calling its ``doWrite``."""

    def __init__(self) -> None:
        super().__init__()
        self.writers: set[Any] = set()

    def addWriter(self, writer: Any) -> None:
        self.writers.add(writer)

    def removeWriter(self, writer: Any) -> None:
        self.writers.discard(writer)

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        self.callLater(0, f, *args, **kw)

    def writable(self) -> None:
        for writer in list(self.writers):
            writer.doWrite()


class LogDaemon:
    """A datagram socket bound at ``path``, read when the test says.

    Attributes:
        fds_received: How many datagrams came with a descriptor (a memfd).
    """

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.fds_received = 0

    def close(self) -> None:
        self.sock.close()
        if os.path.exists(self.path):
            os.unlink(self.path)

    def receive(self, timeout: float = 10) -> bytes | None:
        """The next message (a memfd's content for one passed as a
        descriptor), waiting at most ``timeout`` s; None if none came."""
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return None
        data, ancillary, _flags, _ = self.sock.recvmsg(
            1 << 22, socket.CMSG_SPACE(struct.calcsize("i"))
        )
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                for fd in fds:
                    self.fds_received += 1
                    try:
                        data = _read_sealed(fd)
                    finally:
                        os.close(fd)
        return data

    def drain(self) -> list[bytes]:
        """Every message waiting now."""
        got = []
        while (message := self.receive(0)) is not None:
            got.append(message)
        return got

    def until(self, found: Callable[[bytes], bool], timeout: float = 30) -> bytes:
        """The first message ``found`` is true of, reading at most ``timeout``
        s; an AssertionError naming what came instead."""
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.receive(max(0.0, deadline - time.monotonic()))
            if message is None:
                break
            if found(message):
                return message
            seen.append(message)
        raise AssertionError(f"not received in {timeout} s; got {seen[-20:]!r}")


def _read_sealed(fd: int) -> bytes:
    """A memfd's content; it must be sealed as journald requires."""
    import fcntl

    seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    wanted = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
    assert seals & wanted == wanted, f"memfd not sealed: {seals:#x}"
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def journal_fields(datagram: bytes) -> dict[str, list[bytes]]:
    """The fields of one native-protocol datagram, as journald reads them:
    ``NAME=value\\n``, or ``NAME\\n`` + 64-bit little-endian length +
    value + ``\\n``. Each name maps to its values, in order."""
    fields: dict[str, list[bytes]] = {}
    at = 0
    while at < len(datagram):
        end = datagram.index(b"\n", at)
        line = datagram[at:end]
        if b"=" in line:
            name, _, value = line.partition(b"=")
            at = end + 1
        else:
            name = line
            (size,) = struct.unpack("<Q", datagram[end + 1 : end + 9])
            value = datagram[end + 9 : end + 9 + size]
            assert datagram[end + 9 + size : end + 10 + size] == b"\n"
            at = end + 10 + size
        assert re.fullmatch(rb"[A-Z0-9][A-Z0-9_]*", name), name
        fields.setdefault(name.decode(), []).append(value)
    return fields
