"""Fixtures of clockwork's tests: a worker on a reactor whose clock moves only
when the worker waits, so sleeps, timeouts and intervals are exact and instant;
for clockwork.net, certificates, misbehaving peers and servers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import untwisted
from clockwork import Worker, net
from clockwork.net import Server
from tests.support import ClockReactor, wait
from tests.support.certs import Certificates, make_certificates
from tests.support.net import Peer, listen_web


@pytest.fixture
def clock() -> ClockReactor:
    return ClockReactor()


@pytest.fixture
def worker(clock: ClockReactor) -> Worker:
    """A worker on the fake clock: its tasks' sleeps take no real time."""
    return Worker(
        driver=untwisted.lowlevel.Driver(clock, register_atexit=lambda hook: None)
    )


# -- clockwork.net: certificates, peers and servers, closed after each test ----------


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A throwaway CA, and a certificate it signed for localhost and
    127.0.0.1, valid 90 days (and an hour)."""
    return make_certificates(tmp_path_factory.mktemp("certificates"))


@pytest.fixture
def peers() -> Iterator[Callable[..., Peer]]:
    """Starts :class:`Peer` servers; closes them after the test."""
    started: list[Peer] = []

    def start(*args: Any, **kwargs: Any) -> Peer:
        started.append(Peer(*args, **kwargs))
        return started[-1]

    try:
        yield start
    finally:
        for peer in started:
            peer.close()


@pytest.fixture
def servers() -> Iterator[Callable[..., Server]]:
    """Starts ``clockwork.net.listen`` servers; closes them (a bounded wait)
    after the test."""
    started: list[Server] = []

    def start(*args: Any, **kwargs: Any) -> Server:
        started.append(net.listen(*args, **kwargs))
        return started[-1]

    try:
        yield start
    finally:
        for server in started:
            wait(server.close(), 10)


@pytest.fixture
def web(certificates: Certificates) -> Iterator[Callable[..., str]]:
    """Starts Twisted's web server on loopback with the pages of
    :func:`tests.support.net.web_site` (``tls=True``: https, with the
    ``certificates``); gives its base URL (``http://127.0.0.1:PORT``, or
    with another ``host``). The ports are closed after the test."""
    ports: list[Any] = []

    def start(tls: bool = False, host: str = "127.0.0.1") -> str:
        ports.append(listen_web(certificates.server if tls else None))
        scheme = "https" if tls else "http"
        return f"{scheme}://{host}:{ports[-1].getHost().port}"

    try:
        yield start
    finally:
        for port in ports:
            wait(port.stopListening(), 10)
