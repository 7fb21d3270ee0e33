"""``http`` and ``tcp`` checks: asked over the network by the monitor itself.

Each is a clockwork routine on :mod:`clockwork.net` (Twisted's TCP and web
client; no ``curl``, no fork): the check's timeout bounds the whole of it,
and what failed is said in words: the network's own (``refused``,
``timed out``, ``DNS``, ``TLS``, naming the address), or the answer's
(``status 503 Service Unavailable, expected 200-399``, ``body did not match
/ok/``, ``certificate expires in 3 days``). What is read is capped: the
first :data:`MAX_BODY` bytes of a body, :data:`MAX_ANSWER` bytes of a TCP
answer.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from procwork.monitor._probes import Verdict

if TYPE_CHECKING:
    from procwork.monitor._checkspec import CheckSpec

__all__ = ["MAX_ANSWER", "MAX_BODY", "http", "routine", "tcp"]

#: Bytes of an HTTP body read to match ``expect_body``; the rest is not read.
MAX_BODY = 64 * 1024

#: Bytes of a TCP answer read to match ``expect``.
MAX_ANSWER = 64 * 1024

#: What ``expect_status`` is when it is left out: any success or redirect.
DEFAULT_STATUS = ((200, 399),)


def _statuses(ranges: Sequence[tuple[int, int]]) -> str:
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def _network(error: BaseException) -> Verdict:
    """A clockwork.net failure in words: its kind first, unless it says it."""
    from clockwork.net import NetworkError, NetworkTimeout

    text = " ".join(str(error).split())
    if isinstance(error, NetworkError) and error.kind.lower() not in text.lower():
        text = f"{error.kind}: {text}"
    return Verdict(False, text, timed_out=isinstance(error, NetworkTimeout))


def http(
    url: str,
    *,
    timeout: float,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    expect_status: Sequence[tuple[int, int]] = DEFAULT_STATUS,
    expect_body: str | None = None,
    tls_min_days: int | None = None,
    ca_file: str | None = None,
) -> Generator[Any, Any, Verdict]:
    """Request ``url``; judge its status, its body, its certificate."""
    from clockwork.net import NetworkError, request

    try:
        response = yield request(
            method,
            url,
            headers=dict(headers or {}),
            timeout=timeout,
            max_body=MAX_BODY if expect_body is not None else 0,
            ca_file=ca_file,
        )
    except NetworkError as e:
        return _network(e)
    # (Not response.describe(): with no body wanted, it would say it was cut.)
    said = f"{method} {url}: status {response.status} {response.reason}".rstrip()
    problems = []
    if not any(low <= response.status <= high for low, high in expect_status):
        problems.append(f"{said}, expected {_statuses(expect_status)}")
    if expect_body is not None and not re.search(
        expect_body, response.text(), re.MULTILINE
    ):
        where = f" (in its first {MAX_BODY // 1024} KiB)" if response.truncated else ""
        problems.append(f"{method} {url}: body did not match /{expect_body}/{where}")
    certificate = response.certificate
    if tls_min_days is not None and certificate is not None:
        days = certificate.days_left()
        if days < tls_min_days:
            problems.append(
                f"{url}: certificate expires in {days} days "
                f"({certificate.describe()}), tls_min_days {tls_min_days}"
            )
        else:
            said += f", certificate expires in {days} days"
    if problems:
        return Verdict(False, "; ".join(problems))
    return Verdict(True, said)


def tcp(
    address: str,
    *,
    timeout: float,
    send: str | None = None,
    expect: str | None = None,
) -> Generator[Any, Any, Verdict]:
    """Connect to ``"host:port"``; send ``send``; wait for ``expect``."""
    import clockwork
    from clockwork.net import NetworkError, NetworkTimeout, connect

    host, _, port = address.rpartition(":")
    clock = clockwork.current_worker().reactor
    deadline = clock.seconds() + timeout
    try:
        connection = yield connect(host.strip("[]"), int(port), timeout=timeout)
    except NetworkError as e:
        return _network(e)
    got = b""
    with connection:
        try:
            if send is not None:
                yield connection.write(send.encode())
            if expect is None:
                return Verdict(True, f"{address} accepted the connection")
            pattern = re.compile(expect, re.MULTILINE)
            while len(got) < MAX_ANSWER:
                left = max(deadline - clock.seconds(), 0.001)
                chunk = yield connection.read(MAX_ANSWER - len(got), timeout=left)
                if not chunk:
                    break  # closed by the other end
                got += chunk
                if pattern.search(got.decode("utf-8", "replace")):
                    return Verdict(True, f"{address} answered /{expect}/")
        except NetworkTimeout as e:
            if expect is None:
                return _network(e)
            return Verdict(
                False,
                f"{address} did not answer /{expect}/ within {timeout:g} s "
                f"(got {got[:80]!r})",
                timed_out=True,
            )
        except NetworkError as e:
            return _network(e)
    ended = "closed after" if len(got) < MAX_ANSWER else "sent 64 KiB:"
    return Verdict(
        False, f"{address} {ended} {got[:80]!r}, which does not match /{expect}/"
    )


def routine(spec: CheckSpec) -> Generator[Any, Any, Verdict]:
    """One run of an http or tcp check, as a clockwork routine."""
    if spec.http is not None:
        return http(
            spec.http,
            timeout=spec.timeout,
            method=spec.method or "GET",
            headers=spec.headers,
            expect_status=spec.expect_status or DEFAULT_STATUS,
            expect_body=spec.expect_body,
            tls_min_days=spec.tls_min_days,
            ca_file=spec.ca_file,
        )
    assert spec.tcp is not None
    return tcp(spec.tcp, timeout=spec.timeout, send=spec.send, expect=spec.expect)
