"""A raw HTTP client that keeps sending, for the tests of what a server reads.

:func:`talk` sends a request's head and then its body for as long as the
server takes it, reading all the while, so a test (or
``benchmarks/monitor_soak.py``) sees how much of a body went out before the
server answered and hung up: "refused before the body" is a number, not a
timing.
"""

from __future__ import annotations

import json
import selectors
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class Exchange:
    """What the client saw: the response (up to the close) and how much of
    the body it got into the socket before that."""

    response: bytes
    body_sent: int

    @property
    def code(self) -> int:
        return int(self.response.split(b" ", 2)[1])

    @property
    def headers(self) -> dict[str, str]:
        head = self.response.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        lines = head.split("\r\n")[1:]
        return {k.lower(): v.strip() for k, v in (li.split(":", 1) for li in lines)}

    @property
    def answer(self) -> dict[str, Any]:
        """The JSON of the (first) response's body."""
        body = self.response.split(b"\r\n\r\n", 1)[1]
        result: dict[str, Any] = json.loads(body[: int(self.headers["content-length"])])
        return result


def talk(
    port: int, head: bytes, body: Iterator[bytes], timeout: float = 30
) -> Exchange:
    """Send ``head``, then ``body`` while the server takes it, reading all
    the while; returns once the server has answered and closed (or the
    body is sent and the answer complete). Bounded by ``timeout``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    pending, head_left, sent, response = head, len(head), 0, b""
    writing = True
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for _, events in selector.select(0.2):
                if events & selectors.EVENT_READ:
                    try:
                        data = sock.recv(65536)
                    except ConnectionResetError:
                        data = b""
                    if not data:
                        return Exchange(response, sent)
                    response += data
                elif writing:
                    if not pending:
                        pending = next(body, b"")
                    try:
                        n = sock.send(pending) if pending else 0
                    except (BrokenPipeError, ConnectionResetError):
                        n, pending = 0, b""
                    if not pending:  # all sent, or the server hung up
                        writing = False
                        selector.modify(sock, selectors.EVENT_READ)
                    else:
                        counted = max(0, n - head_left)  # the head is not body
                        head_left = max(0, head_left - n)
                        sent += counted
                        pending = pending[n:]
                if not writing and _complete(response):
                    return Exchange(response, sent)
        raise AssertionError(f"no answer within {timeout} s ({sent} bytes sent)")
    finally:
        selector.close()
        sock.close()


def _complete(response: bytes) -> bool:
    head, sep, body = response.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def endless(chunk: bytes = b"x" * 65536) -> Iterator[bytes]:
    """A body that never ends (the client stops when the server does)."""
    while True:
        yield chunk


def once(data: bytes) -> Iterator[bytes]:
    yield data


def post(path: str, length: int | None, *headers: bytes) -> bytes:
    framing = (
        b"transfer-encoding: chunked\r\n"
        if length is None
        else b"content-length: %d\r\n" % length
    )
    return (
        f"POST {path} HTTP/1.1\r\nhost: t\r\n".encode()
        + b"".join(headers)
        + framing
        + b"\r\n"
    )
