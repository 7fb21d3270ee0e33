"""One mail delivery: an event as a message, sent with Twisted's SMTP client.

A mail alert (``mail = ["ops@example.com"]`` in an ``[[alert]]``) sends
each event it takes through the SMTP server of ``[monitor] smtp``, as one
message to all its addresses: the subject and the first line say what
happened in words (:func:`compose`), the rest gives the event's details,
its output's tail and the host.

The server is a partner the monitor does not control: it may never answer,
answer slowly, or answer without end. :func:`send_mail` reads at most
:data:`MAX_SERVER_BYTES` of what it says over one connection (past that
the connection is aborted and the attempt fails with
:class:`ServerTooChatty`: Twisted's client would otherwise keep every line
of a multi-line reply), and closes the connection as soon as the outcome
is known, whatever the server does next; cancelling the attempt (its
timeout, or the monitor stopping) aborts the connection at once. The
alert's timeout, retries and delivery slots are the dispatcher's
(:mod:`procwork.monitor._alerts`), as for a webhook.

What is supported: plain SMTP (ESMTP ``EHLO``, falling back to ``HELO``) to
``host:port``, typically the machine's own relay (``127.0.0.1:25``:
postfix, exim, nullmailer), which delivers onwards. No STARTTLS and no
authentication: a relay on the loopback needs neither.
"""

from __future__ import annotations

import email.policy
import email.utils
import socket
import time
from dataclasses import dataclass
from email.message import EmailMessage
from io import BytesIO
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from procwork import _validate as validate
from procwork._errors import ProcworkError
from procwork.monitor._events import OUTPUT_TAIL, Event

__all__ = [
    "MAX_SERVER_BYTES",
    "Accepted",
    "MailRefused",
    "MailServer",
    "ServerTooChatty",
    "compose",
    "send_mail",
]

#: Bytes read from an SMTP server over one connection, at most.
MAX_SERVER_BYTES = 64 * 1024

#: Characters of a subject, at most (the message says the rest).
_SUBJECT = 160

_KINDS = {"service": "service", "check": "check", "rule": "rule", "monitor": "monitor"}


@attrs.frozen
class MailServer:
    """Where mail alerts are sent: ``[monitor] smtp`` and ``smtp_from``.

    Attributes:
        host: The SMTP server's name or address.
        port: Its port.
        sender: The envelope sender and ``From:``; None for
            ``procwork@HOSTNAME``.
    """

    host: str
    port: int
    sender: str | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def sender_address(self) -> str:
        """The sender: ``smtp_from``, or ``procwork@`` the host's name."""
        if self.sender is not None:
            return self.sender
        domain = _hostname()
        try:
            validate.mail_address(None, None, f"procwork@{domain}")
        except validate.Invalid:
            domain = "localhost"  # a host name that is no mail domain
        return f"procwork@{domain}"


def _hostname() -> str:
    # gethostname, not getfqdn: no name lookup, which could block the reactor.
    return socket.gethostname() or "localhost"


@dataclass(frozen=True)
class Accepted:
    """The server took the message for every address.

    Attributes:
        recipients: How many addresses.
        reply: Its reply to the message, ``"250 2.0.0 Ok: queued"``.
    """

    recipients: int
    reply: str


class MailRefused(ProcworkError, ConnectionError):
    """The server refused the message (or some of its addresses).

    Attributes:
        code: The SMTP reply code (``550``).
        partial: Some addresses were refused, the others took the message.
    """

    def __init__(self, message: str, code: int, partial: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.partial = partial

    @property
    def permanent(self) -> bool:
        """Trying again is no use: a 5xx reply, or some addresses have the
        message already (they would get it twice)."""
        return self.partial or 500 <= self.code < 600


class ServerTooChatty(ProcworkError, ConnectionError):
    """An SMTP server said more than :data:`MAX_SERVER_BYTES` on one connection.

    Attributes:
        received: The bytes read from it (the read that crossed the cap
            included; nothing after it).
    """

    def __init__(self, message: str, received: int) -> None:
        super().__init__(message)
        self.received = received


# -- the message ---------------------------------------------------------------------


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def compose(
    event: Event, *, sender: str, recipients: tuple[str, ...], alert: str
) -> bytes:
    """The message of ``event`` (lines end with ``\\n``, as Twisted's client
    wants them): its subject and first line say what happened, on which
    host; then the details, and the end of the output if the event has one.

    Args:
        event: What happened.
        sender: ``From:``.
        recipients: ``To:``.
        alert: The alert's name, said at the end (who sent this, and why).
    """
    host = _hostname()
    kind = _KINDS.get(event.kind, event.kind)
    message = EmailMessage(policy=email.policy.default)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = _one_line(f"[procwork {host}] {event.message}", _SUBJECT)
    message["Date"] = email.utils.formatdate(event.time, localtime=True)
    # The domain given: make_msgid would look the host's name up otherwise.
    message["Message-ID"] = email.utils.make_msgid("procwork", domain=host)
    # RFC 3834: no vacation reply or auto-responder answers an alert.
    message["Auto-Submitted"] = "auto-generated"
    message["X-Procwork-Event"] = event.event
    details = [
        ("event", event.event + (" (a reminder: still so)" if event.reminder else "")),
        (kind, event.name),
        ("state", event.state),
        ("host", host),
        ("time", time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(event.time))),
    ]
    if event.exit_status is not None:
        details.append(("exit status", str(event.exit_status)))
    if event.duration is not None:
        details.append(("duration", f"{event.duration:.3f} s"))
    details += [(str(key), str(value)) for key, value in event.fields.items()]
    width = max(len(key) for key, _ in details) + 1
    lines = [event.message, ""]
    lines += [f"  {key + ':':<{width}} {value}" for key, value in details]
    output = event.output[-OUTPUT_TAIL:].rstrip("\n")
    if output:
        lines += ["", "The end of its output:", "", output]
    lines += [
        "",
        "-- ",
        f"procwork monitor on {host}, alert {alert!r}",
    ]
    # A body with long or non-ASCII lines is sent quoted-printable or
    # base64 (the policy chooses): SMTP lines stay under 1000 characters.
    message.set_content("\n".join(lines) + "\n")
    return message.as_bytes()


# -- the delivery -------------------------------------------------------------------


def send_mail(
    reactor: Any,
    server: MailServer,
    recipients: tuple[str, ...],
    message: bytes,
    *,
    limit: int = MAX_SERVER_BYTES,
) -> Deferred[Accepted]:
    """Send ``message`` to ``recipients`` through ``server``, once.

    Args:
        reactor: A real reactor (TCP, and name resolution in a thread).
        server: The SMTP server.
        recipients: The addresses.
        message: The message (:func:`compose`).
        limit: Bytes read from the server, at most.

    Returns:
        A Deferred firing with :class:`Accepted`, or failing with
        :class:`MailRefused` (a reply that is not a success, or an address
        refused), :class:`ServerTooChatty`, or the connection's error.
        Cancelling it aborts the connection. The connection is closed when
        it fires, however it fires.
    """
    from twisted.mail.smtp import SMTPClientError

    factory: Any = None
    connector: Any = None

    def cancel(_: Deferred[Accepted]) -> None:
        factory.sendFinished = True  # no more from the factory
        factory.hang_up(connector)

    outcome: Deferred[Accepted] = Deferred(cancel)
    result: Deferred[Any] = Deferred()
    factory = _factory_class()(
        None,  # no authentication
        None,
        server.sender_address(),
        list(recipients),
        BytesIO(message),
        result,
        retries=0,  # the dispatcher retries, after its retry_delay
        heloFallback=True,
        requireAuthentication=False,
        requireTransportSecurity=False,
        hostname=server.host,
    )
    factory.limit = limit
    factory.domain = _hostname().encode("ascii", "replace")
    factory.noisy = False

    def accepted(sent: tuple[int, list[tuple[bytes, int, bytes]]]) -> Accepted:
        count, addresses = sent
        refused = [(a, code, r) for a, code, r in addresses if not 200 <= code < 300]
        if refused:
            raise MailRefused(
                f"accepted for {count} of {len(addresses)} addresses; refused "
                + "; ".join(
                    f"{a.decode('ascii', 'replace')}: {code} {_text(r)}"
                    for a, code, r in refused
                ),
                max(code for _, code, _ in refused),
                partial=count > 0,
            )
        return Accepted(count, _text(factory.last_reply))

    def refused(failure: Failure) -> Failure:
        error = failure.value
        if isinstance(error, SMTPClientError) and error.code > 0:
            raise MailRefused(f"refused: {error.code} {_text(error.resp)}", error.code)
        return failure

    def finish(value: Any) -> None:
        # The outcome is known: the connection has nothing more to give
        # (no QUIT is waited for: a server that never answers it is not
        # to hold a connection).
        factory.hang_up(connector)
        if outcome.called:
            return  # cancelled
        if isinstance(value, Failure):
            outcome.errback(value)
        else:
            outcome.callback(value)

    result.addCallbacks(accepted, refused).addBoth(finish)
    connector = reactor.connectTCP(server.host, server.port, factory)
    return outcome


def _text(data: bytes) -> str:
    """A server's words, for a message: decoded, on one line, cut short."""
    return _one_line(data.decode("utf-8", "replace"), 300)


_FACTORY: list[type] = []


def _factory_class() -> type:
    """Twisted's ESMTP sender factory, its protocol reading at most the
    factory's ``limit``. Made at the first mail: ``twisted.mail`` looks the
    host's full name up when imported, which a monitor without mail alerts
    need not pay."""
    if _FACTORY:
        return _FACTORY[0]
    from twisted.mail.smtp import ESMTPSender, ESMTPSenderFactory

    class CappedSender(ESMTPSender):
        """Counts what the server sends; past the factory's ``limit``,
        fails the delivery and aborts the connection."""

        received = 0

        def dataReceived(self, data: bytes) -> None:
            factory: Any = self.factory  # typed Factory | None on Twisted 25.5
            if factory.over:
                return
            self.received += len(data)
            if self.received > factory.limit:
                factory.over = True
                transport: Any = self.transport
                transport.abortConnection()
                if factory.sendFinished:
                    return  # the outcome is known already
                factory.sendFinished = True
                factory.result.errback(
                    ServerTooChatty(
                        f"the server said more than {factory.limit} bytes; "
                        "connection closed",
                        self.received,
                    )
                )
                return
            super().dataReceived(data)

        def lineReceived(self, line: bytes) -> Any:
            if line[3:4] != b"-":  # the last line of a reply: the one kept
                factory: Any = self.factory
                factory.last_reply = line
            return super().lineReceived(line)

    class SenderFactory(ESMTPSenderFactory):
        protocol = CappedSender
        limit = MAX_SERVER_BYTES
        over = False
        last_reply = b""

        def hang_up(self, connector: Any) -> None:
            """Abort the connection now (or stop making it)."""
            protocol = self.currentProtocol
            if protocol is not None and protocol.transport is not None:
                protocol.transport.abortConnection()
            elif connector is not None:
                connector.disconnect()

    _FACTORY.append(SenderFactory)
    return SenderFactory
