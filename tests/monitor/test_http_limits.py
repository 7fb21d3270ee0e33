"""The HTTP endpoint reads no body it will refuse, spools nothing to disk,
and answers malformed input with a 400 that says why.

Each test serves a real :func:`StatusSite` on loopback (``listenTCP`` on
127.0.0.1:0, driven by the test's reactor) and talks to it over a real
socket from a thread, the way an attacker would: a head, then a body sent
for as long as the server reads it. The site is wrapped in a counter of the
bytes it read, so "refused before the body" is a number, not a timing. The
last test does the same to a real ``procwork monitor`` process with its
temporary directory pointed at the test's.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from procwork.monitor._http import (
    MAX_BODY,
    MAX_TAIL_BYTES,
    MAX_TAIL_LINES,
    Guard,
    StatusSite,
)
from procwork.monitor._metrics import http_metrics
from procwork.monitor._protocol import MAX_DEPTH, ok
from procwork.supervisor import NoSuchService
from tests.support import drive_until, global_reactor, wait
from tests.support.http import Exchange, endless, once, post, talk

TOKEN = "s3cret-token-of-some-length"
AUTH = f"authorization: Bearer {TOKEN}\r\n".encode()

#: What one read of the server takes at most (Twisted's TCP read size).
ONE_READ = 65536


# -- a real site, and a client that keeps sending --------------------------------


class _Counting(ProtocolWrapper):
    def dataReceived(self, data: bytes) -> None:
        cast(_CountingFactory, self.factory).read += len(data)
        super().dataReceived(data)


class _CountingFactory(WrappingFactory):
    protocol = _Counting
    read = 0  # bytes the site has read from its clients, all connections


@dataclass
class Served:
    """A site on loopback: its port, its guard, what it read and did."""

    port: int
    guard: Guard
    counter: _CountingFactory
    requests: list[dict[str, Any]] = field(default_factory=list)
    temp_files: list[str] = field(default_factory=list)
    tails: list[tuple[str, str, int]] = field(default_factory=list)

    @property
    def read(self) -> int:
        return self.counter.read


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Served]]:
    """Starts sites (control on with TOKEN unless told otherwise); every
    temporary file made while they run is recorded (none should be)."""
    reactor = global_reactor()

    ports: list[Any] = []
    made: list[str] = []
    for name in ("TemporaryFile", "NamedTemporaryFile", "SpooledTemporaryFile"):
        real = getattr(tempfile, name)

        def spy(*args: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
            made.append(_name)
            return _real(*args, **kw)

        monkeypatch.setattr(tempfile, name, spy)

    def start(
        control: bool = True,
        answer: Callable[[dict[str, Any]], Deferred[dict[str, Any]]] | None = None,
        output: list[str] | None = None,
    ) -> Served:
        served = Served(0, Guard(False, None), _CountingFactory(None), temp_files=made)

        def control_function(message: dict[str, Any]) -> Deferred[dict[str, Any]]:
            served.requests.append(message)
            return succeed(ok({"asked": message["command"]}))

        def tail(service: str, stream: str, count: int) -> list[str]:
            served.tails.append((service, stream, count))
            if service != "web":
                raise NoSuchService(f"no service named {service!r}")
            lines = [f"line {i}" for i in range(1000)] if output is None else output
            return lines[-count:]

        site = StatusSite(
            lambda: {"source": "t"},
            lambda: [],
            control=(answer or control_function) if control else None,
            token=TOKEN if control else None,
            tail=tail,
        )
        served.guard = site.guard
        served.counter = _CountingFactory(site)
        port = reactor.listenTCP(0, served.counter, interface="127.0.0.1")
        ports.append(port)
        served.port = port.getHost().port
        return served

    try:
        yield start
    finally:
        for port in ports:
            wait(port.stopListening())


def exchange(
    served: Served, head: bytes, body: Iterator[bytes] | None = None
) -> Exchange:
    """:func:`talk` from a thread while this one drives the reactor."""
    box: list[Exchange | BaseException] = []

    def client() -> None:
        try:
            box.append(talk(served.port, head, body or iter(())))
        except BaseException as e:
            box.append(e)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    assert drive_until(lambda: bool(box), timeout=40), "the exchange did not end"
    thread.join(timeout=5)
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


HUGE = 300_000_000


# -- bodies refused from the head, unread ---------------------------------------------


def test_a_300_MB_post_without_the_token_is_refused_401_before_its_body_is_read(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    head = post("/control", HUGE)
    seen = exchange(served, head, endless())
    assert seen.code == 401
    assert seen.answer == {
        "procwork": 1,
        "ok": False,
        "error": "a control request needs 'Authorization: Bearer TOKEN'",
    }
    assert seen.headers["www-authenticate"] == 'Bearer realm="procwork"'
    assert seen.headers["connection"] == "close"
    # At most what arrived with the head in one read: not the 300 MB.
    assert served.read <= len(head) + ONE_READ, served.read
    assert served.temp_files == []
    assert served.requests == []
    assert served.guard.refused == {401: 1}


def test_a_post_with_a_wrong_token_is_refused_401_unread(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    head = post("/control", HUGE, b"authorization: Bearer not-the-token\r\n")
    seen = exchange(served, head, endless())
    assert seen.code == 401
    assert served.read <= len(head) + ONE_READ


def test_while_control_is_off_a_post_with_a_body_is_refused_403_unread(
    serve: Callable[..., Served],
) -> None:
    served = serve(control=False)
    head = post("/control", HUGE, AUTH)
    seen = exchange(served, head, endless())
    assert seen.code == 403
    assert seen.answer["error"].startswith("control over HTTP is off")
    assert served.read <= len(head) + ONE_READ
    assert served.temp_files == []


def test_a_control_request_longer_than_64_KiB_is_refused_413_from_its_length(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    head = post("/control", MAX_BODY + 1, AUTH)
    seen = exchange(served, head, endless())
    assert seen.code == 413
    assert seen.answer["error"] == (
        f"a control request is at most {MAX_BODY} bytes, not {MAX_BODY + 1}"
    )
    assert served.read <= len(head) + ONE_READ
    assert served.requests == []


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/metrics"), ("GET", "/"), ("POST", "/status.json"), ("PUT", "/x")],
)
def test_a_body_on_a_path_that_takes_none_is_refused_413_unread(
    serve: Callable[..., Served], method: str, path: str
) -> None:
    served = serve()
    head = f"{method} {path} HTTP/1.1\r\nhost: t\r\ncontent-length: {HUGE}\r\n\r\n"
    seen = exchange(served, head.encode(), endless())
    assert seen.code == 413
    assert seen.answer["error"] == f"{method} {path} takes no request body"
    assert served.read <= len(head) + ONE_READ
    assert served.temp_files == []


def test_a_chunked_control_request_is_cut_off_with_413_once_it_passes_64_KiB(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    head = post("/control", None, AUTH)
    chunk = b"%x\r\n%s\r\n" % (4096, b" " * 4096)
    seen = exchange(served, head, endless(chunk))
    assert seen.code == 413
    assert seen.answer["error"] == f"a request body is at most {MAX_BODY} bytes"
    # The cap, plus what came in the read that crossed it.
    assert served.read <= len(head) + MAX_BODY + 2 * ONE_READ, served.read
    assert served.temp_files == []
    assert served.requests == []


def test_the_refusal_comes_before_a_100_continue_so_a_polite_client_sends_nothing(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    head = post("/control", HUGE, b"expect: 100-continue\r\n")
    seen = exchange(served, head)  # sends no body: it waits for a 100
    assert seen.code == 401
    assert b"100 Continue" not in seen.response
    assert served.read == len(head)


# -- bodies taken: in memory, never a temporary file -----------------------------


def test_a_control_request_of_nearly_64_KiB_is_served_from_memory(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    body = json.dumps({"command": "status", "names": []}).encode()
    body += b" " * (MAX_BODY - len(body))  # exactly the cap
    seen = exchange(served, post("/control", len(body), AUTH), once(body))
    assert (seen.code, seen.answer["result"]) == (200, {"asked": "status"})
    assert served.temp_files == []


def test_a_chunked_control_request_within_the_cap_is_served_without_a_temporary_file(
    serve: Callable[..., Served],
) -> None:
    """twisted.web's own Request spools a body of unknown length to a
    temporary file; this one keeps it in memory."""
    served = serve()
    body = json.dumps({"command": "status"}).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    seen = exchange(served, post("/control", None, AUTH), once(chunked))
    assert (seen.code, seen.answer["ok"]) == (200, True)
    assert served.requests == [{"command": "status", "names": []}]
    assert served.temp_files == []


# -- malformed input: a 400 that says why ----------------------------------------


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"command": "status"', "Expecting ',' delimiter"),
        (b"[" * 60000, f"nested more than {MAX_DEPTH} levels deep"),
        (
            b'{"command": "status", "names": ' + b"[" * 20 + b"]" * 20 + b"}",
            f"a request nests at most {MAX_DEPTH} levels deep",
        ),
        (b'{"command": 5}', "unknown command 5; commands: status, start"),
        (
            b'{"command": "status", "names": "web"}',
            "status: names must be a list of service names",
        ),
        (b'{"command": "stop", "names": ["a"], "x": 1}', "stop: unknown key 'x'"),
        (b'{"command": "st\xffatus"}', "not UTF-8 (byte 0xff at 15)"),
        (b"[1, 2]", "expected a JSON object, not list"),
        (b"", "Expecting value"),
    ],
    ids=[
        "bad-json",
        "nested-60000",
        "nested-20",
        "wrong-command-type",
        "wrong-names-type",
        "unknown-key",
        "invalid-utf8",
        "not-an-object",
        "empty",
    ],
)
def test_a_malformed_control_request_is_a_400_that_says_why(
    serve: Callable[..., Served], body: bytes, why: str
) -> None:
    served = serve()
    seen = exchange(served, post("/control", len(body), AUTH), once(body))
    assert seen.code == 400, seen.response[:300]
    assert seen.answer["ok"] is False
    assert seen.answer["error"].startswith("not a control request: ")
    assert why in seen.answer["error"]
    assert served.requests == []
    assert served.guard.refused == {400: 1}


@pytest.mark.parametrize(
    ("head", "why"),
    [
        (
            b"GET / HTTP/1.1\r\nx-huge: " + b"a" * 20000 + b"\r\n\r\n",
            "a request line or header is longer than 16384 bytes",
        ),
        (
            b"GET / HTTP/1.1\r\n"
            + b"".join(b"x-%d: %s\r\n" % (i, b"c" * 90) for i in range(300))
            + b"\r\n",
            "headers over 16384 bytes",
        ),
        (b"NONSENSE\r\n\r\n", "malformed request: a bad request line"),
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", "malformed request"),
        (
            b"POST /control HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "malformed request",
        ),
    ],
    ids=[
        "one-huge-header",
        "headers-over-16-KiB",
        "bad-line",
        "bad-header",
        "two-lengths",
    ],
)
def test_a_malformed_request_head_is_a_400_that_says_why(
    serve: Callable[..., Served], head: bytes, why: str
) -> None:
    served = serve()
    seen = exchange(served, head)
    assert seen.code == 400
    assert why in seen.answer["error"]
    assert served.guard.refused == {400: 1}


def _raises(message: dict[str, Any]) -> Deferred[dict[str, Any]]:
    raise RuntimeError("the monitor broke")


@pytest.mark.parametrize(
    "answer",
    [lambda message: fail(RuntimeError("the monitor broke")), _raises],
    ids=["fails-later", "raises"],
)
def test_a_control_function_that_fails_is_a_500_that_says_so_not_a_hung_request(
    serve: Callable[..., Served],
    answer: Callable[[dict[str, Any]], Deferred[dict[str, Any]]],
) -> None:
    served = serve(answer=answer)
    body = b'{"command": "status"}'
    seen = exchange(served, post("/control", len(body), AUTH), once(body))
    assert seen.code == 500
    assert seen.answer["error"] == "internal error: the monitor broke"


def test_refusals_are_counted_by_status_and_served_as_a_metric(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    exchange(served, post("/control", HUGE), endless())
    exchange(served, post("/control", HUGE), endless())
    exchange(served, b"GET /metrics HTTP/1.1\r\ncontent-length: 9\r\n\r\n")
    assert served.guard.refused == {401: 2, 413: 1}
    [(name, kind, _, samples)] = http_metrics(served.guard.refused)
    assert (name, kind) == ("procwork_http_requests_refused_total", "counter")
    assert {s[0]["code"]: s[1] for s in samples} == {
        "400": 0,
        "401": 2,
        "403": 0,
        "413": 1,
    }
    assert http_metrics(None) == []


def test_a_request_without_a_body_is_served_as_before(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    seen = exchange(
        served, b"GET /status HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
    )
    assert (seen.code, seen.answer) == (200, {"source": "t"})
    seen = exchange(served, post("/control", 0))
    assert seen.code == 401  # no body, no token: the resource says so
    assert served.guard.refused == {401: 1}


# -- no request from another site -----------------------------------------------


CROSS_SITE = [
    b"origin: http://evil.example\r\n",
    b"origin: null\r\n",
    b"origin: http://t:8080\r\n",  # another port of this host: another origin
    b"sec-fetch-site: cross-site\r\n",
    b"sec-fetch-site: same-site\r\n",  # another port is the same site
]


@pytest.mark.parametrize("header", CROSS_SITE)
def test_a_post_from_another_site_is_refused_403_unread_even_with_the_token(
    serve: Callable[..., Served], header: bytes
) -> None:
    """What a browser says of a request's origin is believed over the
    token: a page of another site that somehow had it still may not."""
    served = serve()
    head = post("/control", HUGE, AUTH, header)
    seen = exchange(served, head, endless())
    assert seen.code == 403
    assert seen.answer["error"].startswith("cross-site request refused: ")
    assert served.read <= len(head) + ONE_READ
    assert served.requests == []
    assert served.guard.refused == {403: 1}


@pytest.mark.parametrize("header", CROSS_SITE)
def test_a_post_without_a_body_from_another_site_is_refused_403_too(
    serve: Callable[..., Served], header: bytes
) -> None:
    served = serve()
    seen = exchange(served, post("/control", 0, AUTH, header))
    assert seen.code == 403
    assert seen.answer["error"].startswith("cross-site request refused: ")
    assert served.requests == []


@pytest.mark.parametrize(
    "headers",
    [
        b"",  # curl, procwork's clients: no browser, no origin
        b"origin: http://t\r\nsec-fetch-site: same-origin\r\n",  # the page
        b"origin: https://t\r\n",  # the page, behind a TLS proxy
        b"sec-fetch-site: none\r\n",  # typed by the user
    ],
)
def test_a_post_from_the_page_itself_or_from_no_browser_is_served(
    serve: Callable[..., Served], headers: bytes
) -> None:
    served = serve()
    body = json.dumps({"command": "stop", "names": ["web"]}).encode()
    seen = exchange(served, post("/control", len(body), AUTH, headers), once(body))
    assert (seen.code, seen.answer["result"]) == (200, {"asked": "stop"})


def test_no_cors_header_is_ever_sent_and_a_preflight_is_not_allowed(
    serve: Callable[..., Served],
) -> None:
    """A page of another origin may send the token only after a CORS
    preflight (an OPTIONS request): it is refused, and no answer grants
    anything to another origin."""
    served = serve()
    seen = exchange(
        served,
        b"OPTIONS /control HTTP/1.1\r\nhost: t\r\norigin: http://evil.example\r\n"
        b"access-control-request-method: POST\r\n"
        b"access-control-request-headers: authorization\r\nconnection: close\r\n\r\n",
    )
    assert seen.code == 405
    body = json.dumps({"command": "status"}).encode()
    served_post = exchange(served, post("/control", len(body), AUTH), once(body))
    for answer in (seen, served_post):
        assert not [h for h in answer.headers if h.startswith("access-control-")]


# -- the tail: the token, no other site, bounded -------------------------------------


def get_tail(query: str, *headers: bytes) -> bytes:
    return (
        f"GET /tail?{query} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n".encode()
        + b"".join(headers)
        + b"\r\n"
    )


def test_the_tail_answers_a_services_last_lines_to_a_client_with_the_token(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    seen = exchange(served, get_tail("service=web&stream=stderr&lines=3", AUTH))
    assert seen.code == 200
    assert seen.headers["cache-control"] == "no-store"
    assert seen.answer == {
        "procwork": 1,
        "ok": True,
        "result": {
            "service": "web",
            "stream": "stderr",
            "lines": ["line 997", "line 998", "line 999"],
            "cut": 0,
        },
    }
    assert served.tails == [("web", "stderr", 3)]
    seen = exchange(served, get_tail("service=web", AUTH))  # the defaults
    assert len(seen.answer["result"]["lines"]) == 200
    assert served.tails[-1] == ("web", "stdout", 200)


@pytest.mark.parametrize(
    ("control", "headers", "code", "error"),
    [
        (True, (), 401, "a tail needs 'Authorization: Bearer TOKEN'"),
        (
            True,
            (b"authorization: Bearer not-the-token\r\n",),
            401,
            "a tail needs 'Authorization: Bearer TOKEN'",
        ),
        (False, (AUTH,), 403, "control over HTTP is off"),
        (
            True,
            (AUTH, b"origin: http://evil.example\r\n"),
            403,
            "cross-site request refused: Origin http://evil.example is not",
        ),
        (
            True,
            (AUTH, b"sec-fetch-site: cross-site\r\n"),
            403,
            "cross-site request refused: a page of another site",
        ),
    ],
)
def test_the_tail_is_refused_without_the_token_while_control_is_off_or_cross_site(
    serve: Callable[..., Served],
    control: bool,
    headers: tuple[bytes, ...],
    code: int,
    error: str,
) -> None:
    """A service's output may hold secrets: the status is read-only and
    public, the tail is not."""
    served = serve(control=control)
    seen = exchange(served, get_tail("service=web", *headers))
    assert seen.code == code
    assert seen.answer["error"].startswith(error)
    assert served.tails == []
    assert served.guard.refused == {code: 1}


@pytest.mark.parametrize(
    ("query", "code", "error"),
    [
        ("service=db", 404, "no service named 'db'"),
        ("", 400, "service= is missing (/tail?service=NAME)"),
        ("service=web&stream=stdin", 400, "stream= must be stdout or stderr, not"),
        ("service=web&lines=0", 400, "lines= must be a whole number from 1 to 1000"),
        ("service=web&lines=1001", 400, "lines= must be a whole number from 1 to"),
        ("service=web&lines=-3", 400, "lines= must be a whole number from 1 to"),
        ("service=web&lines=lots", 400, "lines= must be a whole number from 1 to"),
        ("service=%ff", 400, "service= is not UTF-8"),
    ],
)
def test_a_bad_tail_query_is_answered_with_what_is_wrong(
    serve: Callable[..., Served], query: str, code: int, error: str
) -> None:
    served = serve()
    seen = exchange(served, get_tail(query, AUTH))
    assert seen.code == code
    assert seen.answer["error"].startswith(error), seen.answer


def test_a_tail_of_long_lines_is_cut_to_64_KiB_keeping_the_newest_and_counting_the_rest(
    serve: Callable[..., Served],
) -> None:
    served = serve(output=[f"{i:04d} " + "x" * 995 for i in range(MAX_TAIL_LINES)])
    seen = exchange(served, get_tail(f"service=web&lines={MAX_TAIL_LINES}", AUTH))
    result = seen.answer["result"]
    assert len(json.dumps(result["lines"])) <= MAX_TAIL_BYTES
    assert result["cut"] == MAX_TAIL_LINES - len(result["lines"]) > 0
    assert result["lines"][-1].startswith(f"{MAX_TAIL_LINES - 1:04d} ")
    assert len(seen.response) < MAX_TAIL_BYTES + 1024


def test_a_body_sent_to_the_tail_is_refused_413_unread(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    head = post("/tail?service=web", HUGE, AUTH)
    seen = exchange(served, head, endless())
    assert seen.code == 413
    assert served.read <= len(head) + ONE_READ
    assert served.tails == []


def test_a_client_that_pipelines_tails_and_reads_nothing_gets_few_answered_then_cut(
    serve: Callable[..., Served],
) -> None:
    """twisted.web would answer every request sent on a connection, piling
    the answers up unsent: once the answers stop going out, the one being
    written is the connection's last, and the rest are never read."""
    served = serve(output=["x" * 1000] * MAX_TAIL_LINES)
    request = get_tail(f"service=web&lines={MAX_TAIL_LINES}", AUTH).replace(
        b"connection: close\r\n", b""
    )
    sock = socket.create_connection(("127.0.0.1", served.port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sent: list[int] = [0]

    def send() -> None:
        with contextlib.suppress(OSError):  # cut off: reset by the server
            # 200 requests in one write: the kernel's buffers take them at
            # once, so the server has them all whatever the load.
            sock.sendall(request * 200)
            sent[0] += 200
            for _ in range(1800):
                sock.sendall(request)
                sent[0] += 1

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        drive_until(lambda: not thread.is_alive(), timeout=20)
        assert not thread.is_alive(), "the server kept reading requests"
        # A few answers (what the kernel's socket buffers took, then the
        # one that filled the transport's), not one per request sent
        # (hundreds of them): 1 to 4 of 64 KiB here.
        assert sent[0] >= 200, sent[0]
        # The kernel may hold every request sent before the server read one
        # (a loaded machine): the cut is the server closing the connection.
        counter = served.counter
        drive_until(lambda: counter.read > 0 and not counter.protocols, timeout=20)
        assert counter.read > 0, "the server read nothing"
        assert not counter.protocols, "the connection was not cut"
        assert 1 <= len(served.tails) <= 10, (len(served.tails), sent[0])
    finally:
        sock.close()
        thread.join(timeout=10)


# -- the attack on a real monitor process --------------------------------------------


@pytest.mark.e2e
@pytest.mark.slow
def test_a_300_MB_post_to_a_read_only_monitor_is_refused_403_without_touching_its_disk(
    tmp_path: Path,
) -> None:
    """The attack of the issue, on ``procwork monitor`` as run: its
    temporary directory stays empty, it writes nothing of the body
    anywhere (its write count), it reads a bounded amount, and it goes on
    serving and counting the refusal."""
    from tests.support import sigkill_leftovers
    from tests.support.monitor import MonitorProcess, get

    temp = tmp_path / "tmp"
    temp.mkdir()
    config = tmp_path / "monitor.toml"
    config.write_text("[monitor]\nsummary_every = 0\nmax_load = false\n")
    with sigkill_leftovers() as started:
        monitor = MonitorProcess(
            str(config),
            "--http",
            "127.0.0.1:0",
            "--socket",
            str(tmp_path / "ctl.sock"),
            stderr=tmp_path / "stderr",
            env={**os.environ, "TMPDIR": str(temp)},
        )
        started.append(monitor.proc.pid)
        try:
            port = int(monitor.expect(r"status on http://127\.0\.0\.1:(\d+)/").group(1))
            written_before = _written(monitor.proc.pid)
            seen = talk(port, post("/control", HUGE), endless())
            assert seen.code == 403
            assert seen.answer["error"].startswith("control over HTTP is off")
            # Sent before the answer: the head's read plus the kernel's socket
            # buffers at most, nowhere near the 300 MB.
            assert seen.body_sent < 32 * 1024 * 1024, seen.body_sent
            assert _written(monitor.proc.pid) - written_before < 1024 * 1024
            assert list(temp.iterdir()) == []
            assert not [
                link for link in _fd_links(monitor.proc.pid) if str(temp) in link
            ]
            metrics = get(f"http://127.0.0.1:{port}/metrics").decode()
            assert 'procwork_http_requests_refused_total{code="403"} 1' in metrics
            assert monitor.proc.poll() is None
        finally:
            monitor.close()


def _written(pid: int) -> int:
    """Bytes the process passed to write(2) so far (/proc/PID/io wchar): a
    body spooled to a file counts, even to one its directory does not show
    (TemporaryFile is O_TMPFILE); bytes sent on sockets do not."""
    with open(f"/proc/{pid}/io") as f:
        fields = dict(line.split(": ") for line in f.read().splitlines())
    return int(fields["wchar"])


def _fd_links(pid: int) -> list[str]:
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed since it was listed
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return links
