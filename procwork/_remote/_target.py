"""Where a remote run goes: ``user@host:port``, and the files used to reach it.

Standard library only, so that checking a config's ``host =``
(:mod:`procwork._validate`) imports neither ``twisted.conch`` nor the remote
runs built on it (the rest of :mod:`procwork._remote`).
"""

from __future__ import annotations

import getpass
import os

__all__ = ["SSHTarget", "parse_host"]


class SSHTarget:
    """``user@host:port`` with the files used to reach it; a pool key."""

    __slots__ = ("host", "identity", "known_hosts", "port", "user")

    def __init__(
        self,
        user: str,
        host: str,
        port: int,
        known_hosts: str,
        identity: str | None,
    ) -> None:
        self.user = user
        self.host = host
        self.port = port
        self.known_hosts = known_hosts
        self.identity = identity

    def _key(self) -> tuple[object, ...]:
        return (self.user, self.host, self.port, self.known_hosts, self.identity)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SSHTarget) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port == 22 else f":{self.port}"
        return f"{self.user}@{host}{port}"

    def known_hosts_name(self) -> bytes:
        """The name OpenSSH files this host under: ``host`` or ``[host]:port``."""
        if self.port == 22:
            return self.host.encode()
        return f"[{self.host}]:{self.port}".encode()


def parse_host(
    host: str,
    *,
    known_hosts: str | os.PathLike[str] | None = None,
    identity: str | os.PathLike[str] | None = None,
) -> SSHTarget:
    """``"user@host:port"`` (user and port optional; ``[v6]:port``) to a target.

    Raises:
        ValueError: the string is not of that shape.
    """
    if not isinstance(host, str):
        raise TypeError(f"host must be a string like 'user@host:22', not {host!r}")
    user, sep, rest = host.rpartition("@")
    if not sep:
        user = getpass.getuser()
    port = 22
    if rest.startswith("["):
        name, bracket, tail = rest[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise ValueError(f"host {host!r}: write an IPv6 address as [addr]:port")
        port_text = tail[1:]
    elif rest.count(":") == 1:
        name, _, port_text = rest.partition(":")
    else:
        name, port_text = rest, ""
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"host {host!r}: port must be 1-65535")
        port = int(port_text)
    if not name or not user or any(c.isspace() for c in host):
        raise ValueError(
            f"host {host!r}: expected 'user@host:port' (user, port optional)"
        )
    hosts_file = os.path.expanduser(
        os.fspath(known_hosts) if known_hosts is not None else "~/.ssh/known_hosts"
    )
    key_file = None if identity is None else os.path.expanduser(os.fspath(identity))
    return SSHTarget(user, name, port, hosts_file, key_file)
