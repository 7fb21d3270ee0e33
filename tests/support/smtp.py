"""SMTP servers on loopback for the mail alerts' tests: a real one, and bad ones.

:class:`SmtpServer` is aiosmtpd's server (a real ESMTP implementation, from
PyPI, in the ``test`` extra) on ``127.0.0.1:0`` in an asyncio loop of its
own thread; it records every message it accepts, or refuses them all with
a 5xx reply. :class:`SilentServer` accepts connections and never says a
word; :class:`ChattyServer` answers the greeting with an endless
multi-line reply. Every wait is bounded; :meth:`close` stops the thread.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP


@dataclass(frozen=True)
class Received:
    """One message the server accepted."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        """The message, parsed."""
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @property
    def body(self) -> str:
        """The text of the message, decoded."""
        part = self.message.get_body(("plain",))
        assert part is not None
        return str(part.get_content())


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self._server = server

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address in self._server.refuse_addresses:
            return "550 5.1.1 no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self._server.refuse is not None:
            return self._server.refuse
        with self._server.lock:
            self._server.messages.append(
                Received(
                    envelope.mail_from,
                    tuple(envelope.rcpt_tos),
                    bytes(envelope.original_content or envelope.content),
                )
            )
        return "250 2.0.0 Ok: queued as 42"


class SmtpServer:
    """aiosmtpd on loopback, in its own thread.

    Args:
        refuse: A reply to every message (``"554 5.7.1 go away"``), or None
            to accept them.
        refuse_addresses: Addresses whose ``RCPT TO`` is answered 550.
    """

    def __init__(
        self, refuse: str | None = None, refuse_addresses: tuple[str, ...] = ()
    ) -> None:
        self.refuse = refuse
        self.refuse_addresses = refuse_addresses
        self.messages: list[Received] = []
        self.lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        assert started.wait(10), "the SMTP server did not start"

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        handler = _Handler(self)
        server = self._loop.run_until_complete(
            self._loop.create_server(
                lambda: SMTP(handler, hostname="smtp.test"), sock=self._sock
            )
        )
        started.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            # The sessions still open end here, not as "destroyed" tasks.
            tasks = asyncio.all_tasks(self._loop)
            for task in tasks:
                task.cancel()
            self._loop.run_until_complete(
                asyncio.gather(*tasks, server.wait_closed(), return_exceptions=True)
            )
            self._loop.close()

    def received(self) -> list[Received]:
        """The messages accepted so far."""
        with self.lock:
            return list(self.messages)

    def close(self) -> None:
        """Stop serving (bounded)."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


class SilentServer:
    """Accepts connections and never answers (nor reads): an SMTP server
    that hangs. Counts the connections it accepted."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted.append(conn)

    def closed_by_peer(self) -> int:
        """How many of the accepted connections the client has closed."""
        closed = 0
        for conn in list(self.accepted):
            conn.setblocking(False)
            try:
                if conn.recv(1 << 16) == b"":
                    closed += 1
            except BlockingIOError:
                pass
            except OSError:
                closed += 1  # reset: aborted
        return closed

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for conn in self.accepted:
            conn.close()
        self._sock.close()


class ChattyServer:
    """Greets with a multi-line reply that never ends (``220-`` lines as
    fast as the client reads them), until the client hangs up. Counts the
    bytes it managed to send."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(4)
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.sent = 0
        self.hung_up = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        line = b"220-" + b"x" * 70 + b"\r\n"
        chunk = line * 100
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            conn.settimeout(0.2)
            deadline = time.monotonic() + 60  # bounded, whatever the client does
            with conn:
                while not self._stop.is_set() and time.monotonic() < deadline:
                    try:
                        self.sent += conn.send(chunk)
                    except TimeoutError:
                        continue
                    except OSError:
                        self.hung_up.set()
                        break

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._sock.close()
