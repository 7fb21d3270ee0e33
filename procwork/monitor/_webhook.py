"""One webhook delivery: a POST with clockwork.net's HTTP client, its reply capped.

A webhook is a partner the monitor does not control: it may answer with an
endless body, with endless headers, or not at all. Whatever it does, the
monitor reads a bounded amount of it and then hangs up. The bounds are
``clockwork.net.request``'s (Twisted's web client, on a connection of its
own that is closed when the request ends):

- of the reply's body, at most :data:`MAX_REPLY` bytes are kept; past that
  reading stops and the connection is closed, and the reply says it was cut
  (:attr:`Reply.truncated`);
- the reply's head (status line and headers) is at most 64 KiB, and its
  body's framing at most 8 times :data:`MAX_REPLY` and 64 KiB: past either
  the connection is aborted and the attempt fails with
  ``clockwork.net.TooLong`` (endless headers, or a body of tiny chunks), so
  a reply costs the monitor well under 1 MiB of reading;
- a delivery cancelled (its timeout, or the monitor stopping) while the
  reply is coming stops reading it and closes the connection at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

__all__ = [
    "MAX_REPLY",
    "Reply",
    "RequestFunction",
    "describe_failure",
    "post",
]

#: Bytes of a reply's body that are read; the rest is never read.
MAX_REPLY = 64 * 1024

#: What makes the requests: ``clockwork.net.request`` or a stand-in.
RequestFunction = Callable[..., "Deferred[Any]"]


@dataclass(frozen=True)
class Reply:
    """A webhook's answer.

    Attributes:
        code: The HTTP status.
        body: The start of its body, at most :data:`MAX_REPLY` bytes.
        truncated: The body went on past that (and was not read).
    """

    code: int
    body: bytes
    truncated: bool

    @property
    def ok(self) -> bool:
        """A 2xx status."""
        return 200 <= self.code < 300

    def describe(self) -> str:
        """``"answered 503"``, and whether the body was cut (the rest of it
        was not read: said in the result, and so in the log)."""
        cut = f" (reply cut after {len(self.body)} bytes)" if self.truncated else ""
        return f"answered {self.code}{cut}"

    def text(self, limit: int) -> str:
        """The start of the body as text, at most ``limit`` characters."""
        return self.body[:limit].decode("utf-8", "replace")


def post(
    url: str,
    body: bytes,
    *,
    reactor: Any,
    request: RequestFunction | None = None,
    limit: int = MAX_REPLY,
) -> Deferred[Reply]:
    """POST ``body`` (JSON) to ``url``; fires with its :class:`Reply`, of
    which at most ``limit`` bytes of body were read.

    The caller bounds it in time (the alert's ``timeout``) by cancelling
    it: cancelling it while the reply comes closes the connection, nothing
    more is read.

    Args:
        reactor: The reactor of the request.
        request: ``clockwork.net.request`` (the default), or a stand-in
            taking the same arguments.
    """
    if request is None:
        from clockwork.net import request as net_request

        request = net_request
    d: Deferred[Any] = request(
        "POST",
        url,
        headers={"Content-Type": "application/json", "User-Agent": "procwork-monitor"},
        body=body,
        timeout=None,
        max_body=limit,
        reactor=reactor,
    )
    return d.addCallback(
        lambda response: Reply(response.status, response.body, response.truncated)
    )


def describe_failure(failure: Failure) -> str:
    """One line for a failed attempt: a network error in clockwork.net's
    words (``"POST http://...: refused (nothing listens there)"``); another
    client's wrapped reasons (``ResponseFailed``, ...) by their own
    messages."""
    # clockwork is imported when used, not at import time: its classic
    # Command reaches procwork (and so this module) when it runs.
    from clockwork import NetworkError

    if isinstance(failure.value, NetworkError):
        return str(failure.value)
    reasons = getattr(failure.value, "reasons", None)
    if isinstance(reasons, list) and reasons:
        return "; ".join(
            r.getErrorMessage() if isinstance(r, Failure) else str(r) for r in reasons
        )
    return failure.getErrorMessage()
