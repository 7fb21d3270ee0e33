"""clockwork.net.request: HTTP(S) on Twisted's web client, every read bounded.

Well-behaved servers are Twisted's own web server on loopback (the ``web``
fixture, pages of :func:`tests.support.net.web_site`); servers that
misbehave (endless headers, a body of tiny chunks, a trickle) are
:class:`~tests.support.net.Peer`\\ s on plain sockets. What the client read
is counted by a :class:`~tests.support.net.CountingReactor`; every wait is
bounded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from typing import Any

import pytest

import clockwork
from clockwork import net
from tests.support import drive_until, global_reactor, wait
from tests.support.certs import Certificates
from tests.support.net import CountingReactor, Peer, PeerConnection, free_port

Gen = Generator[Any, Any, Any]

#: What one read of Twisted's takes from a socket, at most.
ONE_READ = 65536


def answer(head: bytes, body: Callable[[PeerConnection], None]) -> Callable[..., None]:
    """A peer behaviour: read the request's head, send ``head``, then ``body``."""

    def behaviour(conn: PeerConnection) -> None:
        conn.recv_until(b"\r\n\r\n")
        conn.send(head)
        body(conn)
        conn.drain()

    return behaviour


def forever(chunk: bytes) -> Callable[[PeerConnection], None]:
    def body(conn: PeerConnection) -> None:
        while True:
            conn.send(chunk)

    return body


# -- requests and responses ------------------------------------------------------------


def test_a_get_gives_the_status_the_headers_and_the_body(
    web: Callable[..., str],
) -> None:
    base = web()
    response = wait(net.request("GET", base + "/"))
    assert (response.status, response.reason, response.body) == (200, "OK", b"hello\n")
    assert response.headers["content-type"] == "text/plain"
    assert response.header("Content-Type") == "text/plain"
    assert (response.truncated, response.url, response.redirects) == (
        False,
        base + "/",
        (),
    )
    assert response.certificate is None
    assert response.describe() == "status 200 OK"


def test_any_status_is_a_response_and_describes_itself_in_words(
    web: Callable[..., str],
) -> None:
    response = wait(net.request("GET", web() + "/status/503"))
    assert response.status == 503
    assert response.describe() == "status 503 Service Unavailable"
    assert response.text() == "Service Unavailable"


def test_a_post_sends_its_headers_and_body(web: Callable[..., str]) -> None:
    response = wait(
        net.request(
            "post",
            web() + "/echo",
            headers={"Content-Type": "application/json", "X-Check": "disk"},
            body=b'{"ok": true}',
        )
    )
    seen = json.loads(response.body)
    assert seen["method"] == "POST" and seen["body"] == '{"ok": true}'
    assert seen["headers"]["x-check"] == "disk"
    assert seen["headers"]["content-length"] == "12"
    assert seen["headers"]["user-agent"] == "procwork clockwork.net"
    assert seen["headers"]["connection"] == "close"  # one connection per request


def test_a_request_from_a_routine_yields_the_same(web: Callable[..., str]) -> None:
    base = web()

    def check() -> Gen:
        response = yield net.request("GET", base + "/status/204", timeout=5)
        return response.status

    assert clockwork.wrap(check(), timeout=30) == 204


# -- the body's cap --------------------------------------------------------------------


def test_an_endless_body_is_cut_at_max_body_and_its_connection_closed(
    peers: Callable[..., Peer],
) -> None:
    peer = peers(answer(b"HTTP/1.1 200 OK\r\n\r\n", forever(b"x" * 16384)))
    reactor = CountingReactor(global_reactor())
    response = wait(
        net.request("GET", f"http://{peer.address}/", max_body=100_000, reactor=reactor)
    )
    assert (response.status, response.truncated) == (200, True)
    assert response.body == b"x" * 100_000
    assert response.describe() == "status 200 OK (body cut after 100000 bytes)"
    assert drive_until(lambda: peer.all_closed(1), 10)
    assert 100_000 < reactor.received <= 100_000 + ONE_READ + 100


def test_the_default_body_cap_is_1_MiB(web: Callable[..., str]) -> None:
    response = wait(net.request("GET", web() + "/endless"))
    assert net.MAX_BODY == 1024 * 1024
    assert (len(response.body), response.truncated) == (net.MAX_BODY, True)


def test_max_body_0_reads_no_body(web: Callable[..., str]) -> None:
    response = wait(net.request("GET", web() + "/", max_body=0))
    assert (response.status, response.body, response.truncated) == (200, b"", True)


def test_a_body_without_a_length_ends_when_the_server_closes_and_is_whole(
    peers: Callable[..., Peer],
) -> None:
    def once(conn: PeerConnection) -> None:
        conn.recv_until(b"\r\n\r\n")
        conn.send(b"HTTP/1.0 200 OK\r\n\r\nthanks")

    peer = peers(once)
    response = wait(net.request("GET", f"http://{peer.address}/"))
    assert (response.body, response.truncated) == (b"thanks", False)


def test_endless_headers_fail_at_the_head_cap_having_read_no_more_than_a_read_past_it(
    peers: Callable[..., Peer],
) -> None:
    peer = peers(answer(b"HTTP/1.1 200 OK\r\n", forever(b"x-more: header\r\n" * 100)))
    reactor = CountingReactor(global_reactor())
    url = f"http://{peer.address}/"
    with pytest.raises(net.TooLong) as caught:
        wait(net.request("GET", url, reactor=reactor))
    assert str(caught.value) == (
        f"GET {url}: the response head went on past 65536 bytes; connection closed"
    )
    assert 65536 < reactor.received <= 65536 + ONE_READ
    assert drive_until(lambda: peer.all_closed(1), 10)


@pytest.mark.slow
def test_a_body_of_tiny_chunks_is_cut_at_max_body_within_its_framing_allowance(
    peers: Callable[..., Peer],
) -> None:
    """1-byte chunks take 6 bytes each on the wire: the body is cut at
    max_body bytes of it, and what was read stays under 8 times that."""
    peer = peers(
        answer(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            forever(b"1\r\nx\r\n" * 4096),
        )
    )
    reactor = CountingReactor(global_reactor())
    response = wait(
        net.request("GET", f"http://{peer.address}/", max_body=50_000, reactor=reactor)
    )
    assert (response.body, response.truncated) == (b"x" * 50_000, True)
    assert reactor.received <= 6 * 50_000 + ONE_READ
    assert drive_until(lambda: peer.all_closed(1), 10)


def test_a_body_that_is_mostly_framing_fails_past_its_allowance(
    peers: Callable[..., Peer],
) -> None:
    """Chunk extensions are framing: a server sending a kilobyte of them for
    each byte of body is cut off once the wire passes 8 times max_body."""
    peer = peers(
        answer(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            forever(b"1;e=" + b"v" * 1000 + b"\r\nx\r\n"),
        )
    )
    reactor = CountingReactor(global_reactor())
    url = f"http://{peer.address}/"
    with pytest.raises(net.TooLong) as caught:
        wait(net.request("GET", url, max_body=1000, reactor=reactor))
    assert str(caught.value).endswith(
        "on the wire for at most 1000 bytes of body; connection closed"
    )
    # The read that ended the head, the allowance (8 x max_body and 64 KiB
    # for trailers), and the read that crossed it.
    assert reactor.received <= ONE_READ + (8 * 1000 + 65536) + ONE_READ
    assert drive_until(lambda: peer.all_closed(1), 10)


# -- time ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_server_that_never_answers_times_out_saying_what_was_awaited(
    web: Callable[..., str],
) -> None:
    url = web() + "/never"
    with pytest.raises(net.NetworkTimeout) as caught:
        wait(net.request("GET", url, timeout=0.3))
    assert str(caught.value) == (
        f"GET {url}: timed out after 0.3 s (waiting for the response)"
    )
    assert isinstance(caught.value, clockwork.Timeout)


@pytest.mark.slow
def test_a_body_trickling_past_the_timeout_times_out_reading_the_body_and_hangs_up(
    peers: Callable[..., Peer],
) -> None:
    def trickle(conn: PeerConnection) -> None:
        import time

        while True:
            conn.send(b".")
            time.sleep(0.01)

    peer = peers(answer(b"HTTP/1.1 200 OK\r\n\r\n", trickle))
    with pytest.raises(net.NetworkTimeout, match=r"\(reading the body\)"):
        wait(net.request("GET", f"http://{peer.address}/", timeout=0.3))
    assert drive_until(lambda: peer.all_closed(1), 10)


def test_cancelling_a_request_closes_its_connection(
    peers: Callable[..., Peer],
) -> None:
    peer = peers(lambda conn: conn.drain())  # reads, never answers

    def gives_up() -> Gen:
        url = f"http://{peer.address}/"
        yield clockwork.timeout(0.2, net.request("GET", url, timeout=None))

    with pytest.raises(clockwork.Timeout) as caught:
        wait(gives_up())
    assert not isinstance(caught.value, net.NetworkError)  # clockwork.timeout's
    assert drive_until(lambda: peer.all_closed(1), 10)


# -- redirects -------------------------------------------------------------------------


def test_a_redirect_is_a_response_unless_asked_to_follow(
    web: Callable[..., str],
) -> None:
    base = web()
    moved = wait(net.request("GET", f"{base}/redirect/301?to=/"))
    assert (moved.status, moved.header("location")) == (301, "/")
    followed = wait(
        net.request("GET", f"{base}/redirect/301?to=/", follow_redirects=True)
    )
    assert (followed.status, followed.body, followed.url) == (
        200,
        b"hello\n",
        base + "/",
    )
    assert followed.redirects == (f"{base}/redirect/301?to=/",)


@pytest.mark.parametrize(
    ("code", "method"), [(301, "GET"), (302, "GET"), (303, "GET"), (307, "POST")]
)
def test_a_followed_redirect_of_a_post_keeps_it_only_for_307_and_308(
    web: Callable[..., str], code: int, method: str
) -> None:
    base = web()
    response = wait(
        net.request(
            "POST", f"{base}/redirect/{code}?to=/echo", body=b"x", follow_redirects=True
        )
    )
    seen = json.loads(response.body)
    assert seen["method"] == method
    assert seen["body"] == ("x" if method == "POST" else "")


def test_credentials_are_not_sent_to_another_origin_by_a_redirect(
    web: Callable[..., str],
) -> None:
    base, other = web(), web(host="localhost")
    response = wait(
        net.request(
            "GET",
            f"{base}/redirect/302?to={other}/echo",
            headers={"Authorization": "Bearer s3cret", "X-Kept": "yes"},
            follow_redirects=True,
        )
    )
    headers = json.loads(response.body)["headers"]
    assert "authorization" not in headers and headers["x-kept"] == "yes"


def test_a_redirect_loop_fails_after_the_limit_saying_so(
    web: Callable[..., str],
) -> None:
    url = web() + "/loop"
    with pytest.raises(net.NetworkError) as caught:
        wait(net.request("GET", url, follow_redirects=True))
    assert str(caught.value).endswith("more than 10 redirects")
    assert caught.value.kind == "redirects"


# -- failing to get a response, in words -----------------------------------------------


def test_a_server_that_is_not_there_is_refused() -> None:
    url = f"http://127.0.0.1:{free_port()}/health"
    with pytest.raises(net.Refused) as caught:
        wait(net.request("GET", url))
    assert str(caught.value) == f"GET {url}: refused (nothing listens there)"


def test_a_host_with_no_address_is_a_DNS_error_naming_it() -> None:
    with pytest.raises(net.DNSError) as caught:
        wait(net.request("GET", "http://nosuch.invalid/"))
    assert str(caught.value) == (
        "GET http://nosuch.invalid/: DNS lookup failed: no address for nosuch.invalid"
    )


def test_a_server_that_hangs_up_without_answering_is_disconnected(
    peers: Callable[..., Peer],
) -> None:
    peer = peers(lambda conn: conn.recv_until(b"\r\n\r\n") and None)
    with pytest.raises(net.Disconnected):
        wait(net.request("GET", f"http://{peer.address}/"))


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        (("GET", "example.com/x"), {}, ValueError, "is not http:// or https://"),
        (("GET", "http:///x"), {}, ValueError, "names no host"),
        (("GET", "http://h:99999/"), {}, ValueError, "Port out of range"),
        (("GET", "http://h/a b"), {}, ValueError, "has white space"),
        (("GET", "http://h/caf\u00e9"), {}, ValueError, "is not ASCII"),
        (("G T", "http://h/"), {}, ValueError, "method must be a word"),
        (("GET", "http://h/"), {"body": "text"}, TypeError, "body must be bytes"),
        (("GET", "http://h/"), {"max_body": -1}, ValueError, "max_body must be"),
        (("GET", "http://h/"), {"headers": {"a": 1}}, TypeError, "str to str"),
        (("GET", "http://h/"), {"headers": {"a": "b\r\nc"}}, ValueError, "malformed"),
    ],
)
def test_bad_arguments_to_request_are_refused_at_once_naming_the_call(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=r"clockwork.net.request\(\): .*" + message):
        net.request(*args, **kwargs)


# -- https -----------------------------------------------------------------------------


def test_https_is_verified_against_the_ca_file_and_shows_the_certificate(
    web: Callable[..., str], certificates: Certificates
) -> None:
    base = web(tls=True, host="localhost")
    response = wait(net.request("GET", base + "/", ca_file=certificates.ca))
    assert response.body == b"hello\n"
    assert response.certificate is not None
    assert response.certificate.subject == "localhost"
    assert response.certificate.days_left() == 90


def test_https_to_a_certificate_no_authority_vouches_for_fails_with_tls_in_words(
    web: Callable[..., str],
) -> None:
    base = web(tls=True, host="localhost")
    with pytest.raises(net.TLSError) as caught:
        wait(net.request("GET", base + "/"))
    assert str(caught.value) == (
        f"GET {base}/: TLS failed: certificate verify failed ('localhost' is "
        "issued by 'procwork test CA', which is not a trusted authority)"
    )
