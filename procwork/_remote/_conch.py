"""The ``twisted.conch`` names remote runs use, imported once, quietly.

Twisted before 26 takes TripleDES from its old place in cryptography, which
prints a deprecation warning at import: Twisted's concern, not something a
user of ``procwork.run(host=...)`` can act on, and it would land in the
stderr of ``procwork run --host``. So the modules of this package import
conch from here.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="TripleDES has been moved")
    from twisted.conch.client.knownhosts import KnownHostsFile
    from twisted.conch.error import ConchError, HostKeyChanged
    from twisted.conch.ssh import common
    from twisted.conch.ssh.agent import SSHAgentClient
    from twisted.conch.ssh.channel import SSHChannel
    from twisted.conch.ssh.connection import SSHConnection
    from twisted.conch.ssh.keys import BadKeyError, EncryptedKeyError, Key
    from twisted.conch.ssh.transport import SSHClientTransport
    from twisted.conch.ssh.userauth import SSHUserAuthClient

__all__ = [
    "BadKeyError",
    "ConchError",
    "EncryptedKeyError",
    "HostKeyChanged",
    "Key",
    "KnownHostsFile",
    "SSHAgentClient",
    "SSHChannel",
    "SSHClientTransport",
    "SSHConnection",
    "SSHUserAuthClient",
    "common",
]
