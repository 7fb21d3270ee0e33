"""clockwork.net under stress: cancels at every moment leave nothing open.

A connection or a request cancelled while it connects, shakes hands, waits
or reads must end at once and leave no descriptor and no connection on the
server behind. A thousand connections (plain and TLS) and 600 requests,
each cancelled after a random delay, under two CPU-bound processes; every
wait bounded.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator
from typing import Any

import pytest
from twisted.internet.defer import CancelledError

import clockwork
from clockwork import net
from clockwork.net import Connection, Server
from tests.support import cpu_load, drive_until, fd_table, opened_since, wait
from tests.support.certs import Certificates

Gen = Generator[Any, Any, Any]

pytestmark = pytest.mark.slow


def echo(conn: Connection) -> Gen:
    while line := (yield conn.readline()):
        yield conn.write(line)


def cancelled_at_random(make: Callable[[], Any], count: int, seed: int) -> list[str]:
    """Run ``count`` operations, 10 at a time, nine of each ten cancelled
    after a random delay between none and twice an operation's usual length
    (measured on a few first), so that cancels land in every phase; how
    each ended."""
    rng = random.Random(seed)
    reactor = clockwork.default_worker().reactor

    def timed() -> Gen:
        start = reactor.seconds()
        yield make()
        return reactor.seconds() - start

    usual = sorted(wait(clockwork.gather(*(timed() for _ in range(5))), 60))[2]

    def one(n: int) -> Gen:
        if n == 0:
            # One of each ten is never cancelled: however slow a loaded
            # machine makes the others, some end "done" in the same mix.
            yield make()
            return "done"
        try:
            yield clockwork.timeout(rng.uniform(0, 2 * usual), make())
        except (clockwork.Timeout, CancelledError):
            return "cancelled"
        return "done"

    outcomes: list[str] = []
    for _ in range(count // 10):
        outcomes += wait(clockwork.gather(*(one(n) for n in range(10))), 60)
    return outcomes


def test_connections_cancelled_at_random_moments_leave_nothing_open(
    servers: Callable[..., Server], certificates: Certificates
) -> None:
    plain = servers(0, echo)
    tls = servers(0, echo, certificate=certificates.server)

    def talk(port: int, **kw: Any) -> Gen:
        with (yield net.connect("127.0.0.1", port, timeout=10, **kw)) as conn:
            yield conn.write(b"ping\n")
            yield conn.readline()

    before = fd_table()
    with cpu_load(2):
        outcomes = cancelled_at_random(lambda: talk(plain.port), 600, 1)
        outcomes += cancelled_at_random(
            lambda: talk(tls.port, tls=True, ca_file=certificates.ca), 400, 2
        )
    assert set(outcomes) == {"done", "cancelled"}  # both, and nothing else
    assert drive_until(lambda: plain.connections == tls.connections == 0, 30)
    assert drive_until(lambda: not opened_since(before), 30), opened_since(before)


def test_requests_cancelled_at_random_moments_leave_nothing_open(
    web: Callable[..., str],
) -> None:
    base = web()
    before = fd_table()
    with cpu_load(2):
        outcomes = cancelled_at_random(
            lambda: net.request("GET", base + "/", timeout=10), 600, 3
        )
    assert set(outcomes) == {"done", "cancelled"}  # both, and nothing else
    assert drive_until(lambda: not opened_since(before), 30), opened_since(before)
