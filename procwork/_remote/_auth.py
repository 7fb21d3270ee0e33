"""Setting up one SSH connection: the transport, the host key, the keys.

The host key must be in the target's ``known_hosts`` (an unknown or changed
key is refused, with what to do); the keys offered are ssh-agent's, then
``~/.ssh/id_*`` (or the target's ``identity`` alone); no password or
keyboard-interactive prompt is ever answered. A failure here is reported to
the :class:`~procwork._remote._connection._Connection` as a
:class:`~procwork.RemoteError` that says which step failed and why.
"""

from __future__ import annotations

import os
import shlex
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from procwork._errors import RemoteAuthError, RemoteHostKeyError, RemoteUnreachable
from procwork._reactor import Reactor
from procwork._remote._conch import (
    BadKeyError,
    ConchError,
    EncryptedKeyError,
    HostKeyChanged,
    Key,
    KnownHostsFile,
    SSHAgentClient,
    SSHClientTransport,
    SSHConnection,
    SSHUserAuthClient,
)
from procwork._remote._target import SSHTarget

if TYPE_CHECKING:
    from procwork._remote._connection import _Connection

__all__: list[str] = []


class _SSHConnection(SSHConnection):
    def __init__(self, owner: _Connection) -> None:
        super().__init__()
        self.owner = owner

    def serviceStarted(self) -> None:
        super().serviceStarted()
        self.owner.transport._state = "running"  # type: ignore[union-attr]
        self.owner.ready(self)


class _UserAuth(SSHUserAuthClient):
    def __init__(self, user: str, conn: _SSHConnection, keys: list[Key]) -> None:
        super().__init__(user.encode(), conn)
        self._keys = keys
        self._key: Key | None = None
        self.agent: SSHAgentClient | None = None
        self.exhausted = False
        self._agent_keys: list[tuple[bytes, bytes]] = []

    def getPublicKey(self) -> Key | None:
        if self._agent_keys:
            blob, _ = self._agent_keys.pop(0)
            self._key = None
            self._agent_blob = blob
            key: Key = Key.fromString(blob)
            return key
        if self._keys:
            self._key = self._keys.pop(0)
            public: Key = self._key.public()
            return public
        self.exhausted = True  # every key offered: a refusal, not a drop
        return None

    def signData(self, publicKey: Key, signData: bytes) -> Any:
        if self._key is None and self.agent is not None:
            return self.agent.signData(publicKey.blob(), signData)
        return super().signData(publicKey, signData)

    def getPrivateKey(self) -> Deferred[Key]:
        assert self._key is not None
        return succeed(self._key)

    def getPassword(self, prompt: object = None) -> None:
        return None  # never prompt: a watchdog has no one to ask

    def getGenericAnswers(
        self, name: object, instruction: object, prompts: object
    ) -> Any:
        return fail(ConchError("no keyboard-interactive authentication"))


class _Transport(SSHClientTransport):
    def __init__(self, owner: _Connection) -> None:
        self.owner = owner
        self._state = "securing"
        self._error: BaseException | None = None
        self._server_said: str | None = None
        self._userauth: _UserAuth | None = None

    def connectionMade(self) -> None:
        self.owner.transport = self
        super().connectionMade()

    def verifyHostKey(self, hostKey: bytes, fingerprint: bytes) -> Deferred[bool]:
        target = self.owner.target
        path = target.known_hosts
        key = Key.fromString(hostKey)
        name = target.known_hosts_name().decode()
        try:
            known = KnownHostsFile.fromPath(_FilePath(path)).hasHostKey(
                target.known_hosts_name(), key
            )
        except HostKeyChanged as e:
            self._error = RemoteHostKeyError(
                f"host key of {target} CHANGED: the {key.sshType().decode()} key it "
                f"sent ({key.fingerprint(_SHA256)}) differs from the one for {name} "
                f"in {path}, line {e.lineno}; refusing to connect (if the host was "
                "reinstalled, remove that line: ssh-keygen -R "
                f"{shlex.quote(name)} -f {shlex.quote(path)})"
            )
            return fail(self._error)
        if not known:
            self._error = RemoteHostKeyError(
                f"host key of {target} is unknown: {name} has no "
                f"{key.sshType().decode()} key in {path}; refusing to connect (add "
                f"it, e.g. ssh-keyscan -p {target.port} {target.host} >> {path}, "
                "after checking its fingerprint "
                f"{key.fingerprint(_SHA256)})"
            )
            return fail(self._error)
        return succeed(True)

    def receiveError(self, reasonCode: int, description: bytes) -> None:
        # The server's disconnect message ("Too many authentication failures").
        self._server_said = description.decode("utf-8", "replace")
        super().receiveError(reasonCode, description)

    def connectionSecure(self) -> None:
        self._state = "authenticating"
        keys, error = _identity_keys(self.owner.target)
        if error is not None:
            self._error = error
            self.loseConnection()
            return
        userauth = _UserAuth(self.owner.target.user, _SSHConnection(self.owner), keys)
        self._userauth = userauth
        sock = os.environ.get("SSH_AUTH_SOCK")
        if self.owner.target.identity is None and sock:
            d = _agent_keys(self.owner.reactor, sock, userauth)

            def ask(_: object) -> None:
                self.requestService(userauth)

            d.addBoth(ask)
        else:
            self.requestService(userauth)

    def connectionLost(self, reason: Failure | None = None) -> None:
        target = self.owner.target
        if self._userauth is not None and self._userauth.agent is not None:
            agent_transport = self._userauth.agent.transport
            if agent_transport is not None:
                agent_transport.loseConnection()  # type: ignore[misc]
        text = reason.getErrorMessage() if reason is not None else "closed"
        if self._state == "running":
            self.owner.connection_lost(text)
        elif self._error is not None:
            self.owner._broken(self._error)
        elif self._state == "authenticating" and (
            self._server_said is not None
            or (self._userauth is not None and self._userauth.exhausted)
        ):
            said = (
                f"; the server said: {self._server_said}" if self._server_said else ""
            )
            self.owner._broken(
                RemoteAuthError(
                    f"authentication as {target.user!r} on {target} failed: no key "
                    f"was accepted ({_key_source(target)}){said}"
                )
            )
        elif self._state == "authenticating":
            self.owner._broken(
                RemoteUnreachable(
                    f"cannot reach {target}: the connection was lost while "
                    f"authenticating ({text})"
                )
            )
        else:
            self.owner._broken(
                RemoteUnreachable(
                    f"cannot reach {target}: SSH handshake failed ({text})"
                )
            )
        super().connectionLost(reason)


def _key_source(target: SSHTarget) -> str:
    if target.identity is not None:
        return f"identity {target.identity}"
    if os.environ.get("SSH_AUTH_SOCK"):
        return "keys of ssh-agent and ~/.ssh/id_*"
    return "no ssh-agent; keys ~/.ssh/id_*"


def _identity_keys(target: SSHTarget) -> tuple[list[Key], BaseException | None]:
    if target.identity is not None:
        try:
            return [Key.fromFile(target.identity)], None
        except (OSError, BadKeyError, EncryptedKeyError) as e:
            return [], RemoteAuthError(
                f"cannot use identity {target.identity} for {target}: {e} "
                "(an unencrypted private key file is needed; use ssh-agent for others)"
            )
    keys = []
    for name in ("id_ed25519", "id_ecdsa", "id_rsa"):
        path = os.path.expanduser(f"~/.ssh/{name}")
        try:
            keys.append(Key.fromFile(path))
        except (OSError, BadKeyError, EncryptedKeyError, ValueError):
            continue
    return keys, None


def _agent_keys(reactor: Reactor, sock: str, auth: _UserAuth) -> Deferred[None]:
    endpoint = UNIXClientEndpoint(reactor, sock, timeout=5)
    d = endpoint.connect(Factory.forProtocol(SSHAgentClient))

    def connected(agent: SSHAgentClient) -> Deferred[None]:
        auth.agent = agent

        def keys(found: list[tuple[bytes, bytes]]) -> None:
            auth._agent_keys = list(found)

        identities: Deferred[None] = agent.requestIdentities().addCallback(keys)
        return identities

    keys_read: Deferred[None] = d.addCallback(connected)
    return keys_read


def _FilePath(path: str) -> Any:
    from twisted.python.filepath import FilePath

    return FilePath(path)


_SHA256 = None
try:
    from twisted.conch.ssh.keys import FingerprintFormats

    _SHA256 = FingerprintFormats.SHA256_BASE64
except ImportError:  # pragma: no cover - older Twisted
    pass
