"""``http`` and ``tcp`` checks ask over the network, in the monitor, no fork.

Against loopback servers the tests start (tests.support.net: a twisted.web
site, plain-socket peers that misbehave, a port where nothing listens, one
where connecting hangs; tests.support.certs: a CA, a server certificate
about to expire), on the real reactor, every wait bounded. Each failure says
in words what failed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import untwisted
from procwork import ConfigError
from procwork.monitor import CheckSpec
from procwork.monitor._checks import CheckRunner, CheckStatus
from tests.support import drive_until
from tests.support.certs import make_certificates, self_signed
from tests.support.checks import race_answers_against_timeouts
from tests.support.net import (
    Peer,
    PeerConnection,
    endless,
    free_port,
    listen_web,
    stuck_port,
)


@pytest.fixture
def web() -> Iterator[str]:
    """The test site on http://127.0.0.1:PORT."""
    port = listen_web()
    try:
        yield f"http://127.0.0.1:{port.getHost().port}"
    finally:
        untwisted.run(port.stopListening(), timeout=10)


@pytest.fixture
def runners() -> Iterator[list[CheckRunner]]:
    made: list[CheckRunner] = []
    try:
        yield made
    finally:
        for runner in made:
            untwisted.run(runner.stop(), timeout=30)


def asked(runners: list[CheckRunner], **keys: Any) -> CheckStatus:
    """The status of a check of ``keys`` after its first run."""
    runner = CheckRunner([CheckSpec("net", every=3600, **{"timeout": 10, **keys})])
    runners.append(runner)
    runner.start()
    status = runner.status["net"]
    assert drive_until(lambda: status.last_outcome is not None, timeout=30)
    return status


# -- http -----------------------------------------------------------------------


def test_an_http_check_is_ok_for_a_success_status_and_says_it(
    runners: list[CheckRunner], web: str
) -> None:
    status = asked(runners, http=f"{web}/")
    assert (status.last_outcome, status.last_detail) == (
        "ok",
        f"GET {web}/: status 200 OK",
    )
    assert (status.kind, status.target) == ("http", f"{web}/")


def test_an_http_status_outside_expect_status_fails_naming_it(
    runners: list[CheckRunner], web: str
) -> None:
    status = asked(runners, http=f"{web}/status/503")
    assert (status.last_outcome, status.last_detail) == (
        "failed",
        f"GET {web}/status/503: status 503 Service Unavailable, expected 200-399",
    )
    assert asked(runners, http=f"{web}/status/503", expect_status=503).ok == 1


def test_expect_status_takes_statuses_and_ranges(
    runners: list[CheckRunner], web: str
) -> None:
    status = asked(runners, http=f"{web}/status/404", expect_status=[200, "300-399"])
    assert status.last_detail.endswith("status 404 Not Found, expected 200, 300-399")


def test_a_body_that_does_not_match_expect_body_fails(
    runners: list[CheckRunner], web: str
) -> None:
    status = asked(runners, http=f"{web}/", expect_body="^ready$")
    assert status.last_detail == f"GET {web}/: body did not match /^ready$/"
    assert asked(runners, http=f"{web}/", expect_body="^hello$").last_outcome == "ok"


def test_expect_body_reads_at_most_64_kib_of_an_endless_body(
    runners: list[CheckRunner], web: str
) -> None:
    """The cap: a body without end is cut, and the check says where it looked."""
    status = asked(runners, http=f"{web}/endless", expect_body="never")
    assert (status.last_outcome, status.last_detail) == (
        "failed",
        f"GET {web}/endless: body did not match /never/ (in its first 64 KiB)",
    )


def test_method_and_headers_are_sent(runners: list[CheckRunner], web: str) -> None:
    status = asked(
        runners,
        http=f"{web}/echo",
        method="POST",
        headers={"X-Check": "procwork"},
        expect_body='"method": "POST".*"x-check": "procwork"',
    )
    assert status.last_outcome == "ok", status.last_detail


def test_a_refused_connection_says_refused(runners: list[CheckRunner]) -> None:
    port = free_port()
    status = asked(runners, http=f"http://127.0.0.1:{port}/")
    assert status.last_outcome == "failed"
    assert "refused" in status.last_detail
    assert f"127.0.0.1:{port}" in status.last_detail


@pytest.mark.slow
def test_a_server_that_never_answers_is_timed_out_by_the_checks_timeout(
    runners: list[CheckRunner], web: str
) -> None:
    status = asked(runners, http=f"{web}/never", timeout=0.5)
    assert status.last_outcome == "timed out"
    assert "timed out" in status.last_detail
    assert status.timed_out == 1


def test_a_host_without_an_address_says_dns(runners: list[CheckRunner]) -> None:
    status = asked(runners, http="http://no-such-host.invalid/", timeout=10)
    assert status.last_outcome == "failed"
    assert status.last_detail == (
        "GET http://no-such-host.invalid/: DNS lookup failed: no address for "
        "no-such-host.invalid"
    )


def test_an_untrusted_certificate_says_tls(
    runners: list[CheckRunner], tmp_path: Path
) -> None:
    port = listen_web(self_signed(tmp_path))
    try:
        status = asked(runners, http=f"https://127.0.0.1:{port.getHost().port}/")
    finally:
        untwisted.run(port.stopListening(), timeout=10)
    assert status.last_outcome == "failed"
    assert "TLS" in status.last_detail


def test_a_certificate_expiring_within_tls_min_days_fails_saying_when(
    runners: list[CheckRunner], tmp_path: Path
) -> None:
    certs = make_certificates(tmp_path, days=2)
    port = listen_web(certs.server)
    url = f"https://127.0.0.1:{port.getHost().port}/"
    try:
        soon = asked(runners, http=url, ca_file=str(certs.ca), tls_min_days=7)
        fine = asked(runners, http=url, ca_file=str(certs.ca), tls_min_days=1)
    finally:
        untwisted.run(port.stopListening(), timeout=10)
    assert soon.last_outcome == "failed"
    assert soon.last_detail.startswith(f"{url}: certificate expires in 2 days (")
    assert soon.last_detail.endswith("), tls_min_days 7")
    assert (fine.last_outcome, fine.last_detail) == (
        "ok",
        f"GET {url}: status 200 OK, certificate expires in 2 days",
    )


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"http": "ftp://x/"}, "http must be an http:// or https:// URL"),
        ({"http": "http:///path"}, "http must name a host"),
        ({"http": "http://x:99999/"}, "http is not a valid URL"),
        ({"http": "http://a b/"}, "http must be an http:// or https:// URL"),
        ({"http": "http://x/", "method": "GET /"}, "method must be a word"),
        ({"http": "http://x/", "headers": {"a b": "c"}}, "headers has 'a b'"),
        ({"http": "http://x/", "headers": {"A": "b\nc"}}, "headers has A = "),
        ({"http": "http://x/", "expect_status": 99}, "expect_status must be a"),
        ({"http": "http://x/", "expect_status": "399-200"}, "expect_status must"),
        ({"http": "http://x/", "expect_body": "("}, "expect_body is not a valid"),
        ({"http": "http://x/", "tls_min_days": 7}, "tls_min_days needs an https"),
        ({"tcp": "db1"}, "tcp must be HOST:PORT like 'db1:5432'"),
        ({"tcp": "db1:0"}, "tcp must be HOST:PORT"),
        ({"tcp": ":80"}, "tcp must be HOST:PORT"),
        ({"tcp": "db1:5432", "expect": "["}, "expect is not a valid regular"),
        ({"tcp": "db1:5432", "method": "GET"}, "method belongs to http checks"),
    ],
)
def test_a_malformed_url_or_host_port_is_refused_naming_the_key(
    keys: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=f"^check 'c': {message}"):
        CheckSpec("c", every=10, **keys)


def test_a_check_with_headers_is_hashable_and_equal_to_its_twin() -> None:
    """Reload compares specs; the headers' read-only table is no obstacle."""
    spec = CheckSpec("c", http="http://x/", headers={"A": "b"}, every=1)
    twin = CheckSpec("c", http="http://x/", headers={"A": "b"}, every=1)
    assert spec == twin and hash(spec) == hash(twin)
    assert spec != CheckSpec("c", http="http://x/", headers={"A": "c"}, every=1)


# -- tcp ------------------------------------------------------------------------


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    made: list[Peer] = []
    try:
        yield made
    finally:
        for peer in made:
            peer.close()


def peer(peers: list[Peer], behaviour: Any) -> Peer:
    made = Peer(behaviour, timeout=20)
    peers.append(made)
    return made


def greets(connection: PeerConnection) -> None:
    """A server that answers PING with PONG, then waits for the close."""
    connection.recv_until(b"PING\n")
    connection.send(b"+PONG\r\n")
    connection.drain()


def silent(connection: PeerConnection) -> None:
    connection.drain()


def test_a_tcp_check_is_ok_when_the_port_accepts(
    runners: list[CheckRunner], peers: list[Peer]
) -> None:
    server = peer(peers, silent)
    status = asked(runners, tcp=server.address)
    assert (status.last_outcome, status.last_detail) == (
        "ok",
        f"{server.address} accepted the connection",
    )
    assert drive_until(lambda: server.all_closed(1), timeout=20), "it hung up"


def test_a_tcp_check_sends_and_expects_an_answer(
    runners: list[CheckRunner], peers: list[Peer]
) -> None:
    server = peer(peers, greets)
    status = asked(runners, tcp=server.address, send="PING\n", expect="^\\+PONG")
    assert (status.last_outcome, status.last_detail) == (
        "ok",
        f"{server.address} answered /^\\+PONG/",
    )


@pytest.mark.slow
def test_a_tcp_answer_that_does_not_match_fails_showing_it(
    runners: list[CheckRunner], peers: list[Peer]
) -> None:
    """The server keeps the connection open: the check waits for a match
    until its timeout, then shows what came."""
    server = peer(peers, greets)
    status = asked(
        runners, tcp=server.address, send="PING\n", expect="^OK", timeout=0.5
    )
    assert status.last_detail == (
        f"{server.address} did not answer /^OK/ within 0.5 s (got b'+PONG\\r\\n')"
    )
    assert status.last_outcome == "timed out"


def test_a_tcp_answer_is_read_64_kib_at_most(
    runners: list[CheckRunner], peers: list[Peer]
) -> None:
    """The cap: a server that talks without end is not read without end."""
    server = peer(peers, endless(b"x" * 4096))
    status = asked(runners, tcp=server.address, expect="never")
    assert status.last_outcome == "failed"
    assert status.last_detail.startswith(f"{server.address} sent 64 KiB: b'xxx")
    assert status.last_detail.endswith(", which does not match /never/")


def test_a_refused_tcp_port_says_refused(runners: list[CheckRunner]) -> None:
    status = asked(runners, tcp=f"127.0.0.1:{free_port()}")
    assert status.last_outcome == "failed"
    assert "refused" in status.last_detail


@pytest.mark.slow
def test_a_tcp_connect_that_hangs_is_timed_out(runners: list[CheckRunner]) -> None:
    with stuck_port() as port:
        status = asked(runners, tcp=f"127.0.0.1:{port}", timeout=0.5)
    assert status.last_outcome == "timed out"
    assert "timed out" in status.last_detail and f"127.0.0.1:{port}" in (
        status.last_detail
    )


@pytest.mark.slow
def test_hundreds_of_tcp_runs_racing_their_timeout_each_end_once_and_close(
    runners: list[CheckRunner], peers: list[Peer]
) -> None:
    """Answers that come just before, at or after the timeout (0 to 40 ms
    against 20 ms), 300 runs under CPU load: each run has one outcome, and
    every connection is closed, whichever side of the race it fell on."""

    def late(connection: PeerConnection) -> None:
        time.sleep(random.uniform(0, 0.04))
        connection.send(b"ok\n")
        connection.drain()

    server = peer(peers, late)
    spec = CheckSpec("race", tcp=server.address, expect="ok", every=0.02, timeout=0.02)
    runner = CheckRunner([spec])
    runners.append(runner)
    status = race_answers_against_timeouts(runner, "race")
    count = len(server.connections)
    assert count >= status.runs - 1
    assert drive_until(lambda: server.all_closed(len(server.connections)), 30), (
        f"{sum(not c.closed.is_set() for c in server.connections)} of {count} "
        "connections left open"
    )
