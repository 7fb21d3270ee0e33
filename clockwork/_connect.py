"""``clockwork.net.connect``: a TCP connection, TLS or not, within a timeout.

Built on Twisted's endpoints: ``HostnameEndpoint`` resolves a name (in the
reactor's thread pool) and tries its addresses (IPv6 and IPv4, "happy
eyeballs"); an IP address is connected to directly, with no trip through a
thread; ``wrapClientTLS`` adds TLS, verified by default. One timer bounds
the whole of it, name resolution and handshake included, and the error says
which of the three it was stuck in.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from clockwork._neterrors import NetworkError, NetworkTimeout
from clockwork._networds import network_error
from clockwork._stream import Connection, check_seconds, format_address
from clockwork._tls import client_creator
from clockwork._worker import current_task, current_worker

__all__ = ["CONNECT_TIMEOUT", "check_port", "connect", "tcp_endpoint"]

#: ``connect``'s default timeout, in seconds.
CONNECT_TIMEOUT = 10.0


class _OneConnection(Factory):
    """Builds the one protocol of a connection attempt, quietly (a Factory
    logs "Starting factory" and "Stopping factory" for every connection)."""

    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        return self._protocol


def check_port(what: str, port: object, *, zero: bool = False) -> int:
    """``port`` as an int in 1..65535 (0 too if ``zero``), or a clear error."""
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"{what}: port must be an int, not {port!r}")
    if not (0 if zero else 1) <= port <= 65535:
        low = 0 if zero else 1
        raise ValueError(f"{what}: port must be in {low}..65535, not {port}")
    return port


def tcp_endpoint(reactor: Any, host: str, port: int, timeout: float | None) -> Any:
    """Twisted's endpoint for ``host:port``: an IP address directly, a name
    through ``HostnameEndpoint``; each attempt given up after ``timeout``."""
    from twisted.internet.endpoints import (
        HostnameEndpoint,
        TCP4ClientEndpoint,
        TCP6ClientEndpoint,
    )

    attempt_timeout = 30.0 if timeout is None else max(timeout, 0.001)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return HostnameEndpoint(reactor, host, port, timeout=attempt_timeout)
    tcp = TCP6ClientEndpoint if ip.version == 6 else TCP4ClientEndpoint
    return tcp(reactor, host, port, timeout=attempt_timeout)


def connect(
    host: str,
    port: int,
    *,
    timeout: float | None = CONNECT_TIMEOUT,
    tls: bool = False,
    ca_file: str | os.PathLike[str] | None = None,
    server_name: str | None = None,
    reactor: Any = None,
) -> Deferred[Connection]:
    """Connect to ``host:port``; yield it for the :class:`Connection`.

    Args:
        host: A name or an IP address.
        port: 1..65535.
        timeout: Seconds for all of it: resolving the name, connecting,
            the TLS handshake. Also the connection's :attr:`~Connection.timeout`,
            the default of each of its reads and writes. None: no limit of
            ours (Twisted gives up a connection attempt after 30 s).
        tls: Speak TLS, verified: the certificate must chain to a trusted
            authority and be for ``server_name``.
        ca_file: A PEM file of the authorities to trust instead of the
            system's (a self-signed server's own certificate will do).
        server_name: The name the certificate must be for, and the one
            sent as SNI; default ``host``.
        reactor: Default: the reactor of the worker running the caller.

    The connection belongs to the task that called ``connect``: if that
    task is cancelled, the connection is aborted; if it fails, closed.
    When it returns, the connection stays open (it may be what it
    returns): close it, or use ``with``.

    Raises:
        TypeError, ValueError: a bad argument (at once, not in the Deferred).
        OSError: ``ca_file`` cannot be read (at once).
        (in the Deferred) Refused, DNSError, NetworkTimeout, TLSError,
        Disconnected, NetworkError: what went wrong, naming ``host:port``.
    """
    what = "clockwork.net.connect()"
    if not isinstance(host, str) or not host:
        raise TypeError(f"{what}: host must be a non-empty str, not {host!r}")
    port = check_port(what, port)
    seconds = check_seconds(what, timeout)
    if not tls and (ca_file is not None or server_name is not None):
        raise ValueError(f"{what}: ca_file and server_name are for tls=True")
    if reactor is None:
        reactor = current_worker().reactor
    address = format_address(host, port)
    endpoint = tcp_endpoint(reactor, host, port, seconds)
    if tls:
        from twisted.internet.endpoints import wrapClientTLS

        creator = client_creator(server_name or host, ca_file)
        endpoint = wrapClientTLS(creator, endpoint)
    return _Attempt(reactor, address, endpoint, seconds, tls).result


class _Attempt:
    """One ``connect``: the endpoint's attempt, the connection's readiness
    (connected; for TLS, the handshake done), the deadline and a cancel,
    told apart so that each failure gets its own words."""

    def __init__(
        self,
        reactor: Any,
        address: str,
        endpoint: Any,
        timeout: float | None,
        tls: bool,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.owner = current_task()
        self.phase = "connecting"
        self.expired = False
        self.cancelled = False
        self.connected = False  # the TCP connection is made (TLS may follow)
        self.connection = Connection(address, reactor=reactor, timeout=timeout, tls=tls)
        self.result: Deferred[Connection] = Deferred(self._cancel)
        self.timer = (
            None if timeout is None else reactor.callLater(timeout, self._expire)
        )
        self.attempt: Deferred[Any] = endpoint.connect(
            _OneConnection(self.connection.protocol)
        )
        self.attempt.addCallbacks(self._connected, self._failed)
        self.connection.ready.addCallbacks(self._ready, self._failed)

    def _connected(self, _: object) -> None:
        self.connected = True
        if self.connection.ready.called:
            return
        self.phase = "the TLS handshake"

    def _ready(self, connection: Connection) -> None:
        self._stop_timer()
        if self.result.called or self.cancelled:
            connection.abort()
            return
        connection.attach(self.owner)
        self.result.callback(connection)

    def _failed(self, failure: Failure) -> None:
        self._stop_timer()
        if self.result.called or self.cancelled:
            return
        error: NetworkError
        if self.expired:
            error = NetworkTimeout(
                f"connecting to {self.address}: timed out after {self.timeout:g} s "
                f"({self.phase})",
                address=self.address,
            )
        else:
            error = network_error(
                failure, f"connecting to {self.address}", self.address
            )
        self.result.errback(error)

    def _expire(self) -> None:
        self.timer = None
        self.expired = True
        self._give_up()

    def _cancel(self, _: Deferred[Connection]) -> None:
        # The Deferred fails with CancelledError once this returns.
        self.cancelled = True
        self._stop_timer()
        self._give_up()

    def _give_up(self) -> None:
        # Not attempt.called: that is true too while its callbacks wait on
        # the attempts that follow the name's resolution.
        if not self.connected:
            self.attempt.cancel()  # its failure comes to _failed
        else:
            self.connection.abort()  # mid-handshake: connection_lost follows

    def _stop_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
