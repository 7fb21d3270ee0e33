"""systemd's notify protocol, spoken by ``procwork monitor`` (no dependency).

Under ``Type=notify``, :class:`SystemdNotifier` sends ``READY=1``,
``WATCHDOG=1`` (from a reactor timer, so a stalled reactor stops the pings),
``STATUS=...`` and ``STOPPING=1`` as datagrams on ``NOTIFY_SOCKET``, never
waiting: a datagram the socket does not take is dropped and counted.

Design: ARCHITECTURE.md, "systemd's notify protocol".
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, MutableMapping

from twisted.logger import Logger

from procwork._reactor import DelayedCall, Reactor

__all__ = ["SystemdNotifier"]

_log = Logger(namespace="procwork.monitor")

#: Seconds between STATUS updates when there is no watchdog to ping.
STATUS_EVERY = 5.0

_STATUS_MAX = 200  # characters of a STATUS= line


def _address(name: str) -> str | bytes:
    """``NOTIFY_SOCKET`` as a socket address: ``@name`` is abstract."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


class SystemdNotifier:
    """Talks to systemd over ``address``; see the module.

    Args:
        address: The ``NOTIFY_SOCKET`` value (a path, or ``@abstract``).
        reactor: Runs the pings.
        watchdog: Seconds of the watchdog (``WATCHDOG_USEC``); None: no
            watchdog, no pings.
    """

    def __init__(
        self, address: str, reactor: Reactor, *, watchdog: float | None = None
    ) -> None:
        if not address or not (address.startswith(("/", "@"))):
            raise ValueError(
                f"NOTIFY_SOCKET must be a socket path or an @abstract name, "
                f"not {address!r}"
            )
        self.address = address
        self.watchdog = watchdog
        #: Datagrams sent, and those dropped (the socket full, or gone).
        self.sent = 0
        self.dropped = 0
        self._reactor = reactor
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._status: Callable[[], str] | None = None
        self._last_status: str | None = None
        self._call: DelayedCall | None = None
        self._failing: str | None = None
        self._failed_sends = 0
        self._stopping = False

    @classmethod
    def from_environment(
        cls,
        reactor: Reactor,
        environ: MutableMapping[str, str] | None = None,
    ) -> SystemdNotifier | None:
        """The notifier systemd asks for in ``environ`` (default
        ``os.environ``), or None when not run under ``Type=notify``. The
        variables are removed from ``environ``.

        Raises:
            ValueError: ``NOTIFY_SOCKET`` is not a path or an abstract name.
        """
        environ = os.environ if environ is None else environ
        address = environ.pop("NOTIFY_SOCKET", "")
        usec = environ.pop("WATCHDOG_USEC", "")
        pid = environ.pop("WATCHDOG_PID", "")
        if not address:
            return None
        watchdog: float | None = None
        if usec.isdigit() and int(usec) > 0 and pid in ("", str(os.getpid())):
            watchdog = int(usec) / 1e6
        return cls(address, reactor, watchdog=watchdog)

    @property
    def interval(self) -> float:
        """Seconds between pings (half the watchdog) or STATUS updates."""
        return self.watchdog / 2 if self.watchdog is not None else STATUS_EVERY

    def send(self, message: str) -> bool:
        """Send ``message`` (``KEY=value`` lines) as one datagram, without
        waiting; False if it was dropped."""
        try:
            self._socket.sendto(
                message.encode("utf-8", "replace"), _address(self.address)
            )
        except OSError as e:
            self.dropped += 1
            self._failed_sends += 1
            if self._failing is None:
                self._failing = e.strerror or str(e)
                _log.warn(
                    "cannot notify systemd on {address}: {error}; dropped, and "
                    "tried again at the next message",
                    address=self.address,
                    error=self._failing,
                )
            return False
        self.sent += 1
        if self._failing is not None:
            _log.info(
                "systemd notified again on {address}; {count} messages were dropped",
                address=self.address,
                count=self._failed_sends,
            )
            self._failing = None
            self._failed_sends = 0
        return True

    def ready(self, status: Callable[[], str]) -> None:
        """``READY=1`` with the first STATUS; then the pings (if there is a
        watchdog) and STATUS updates every :attr:`interval`. Nothing once
        :meth:`stopping` was said (a stop before the first turn)."""
        if self._stopping:
            return
        self._status = status
        self._last_status = _one_line(status())
        self.send(f"READY=1\nSTATUS={self._last_status}")
        if self._call is None:
            self._call = self._reactor.callLater(self.interval, self._tick)

    def _tick(self) -> None:
        lines = []
        if self.watchdog is not None:
            lines.append("WATCHDOG=1")
        if self._status is not None:
            status = _one_line(self._status())
            if status != self._last_status:
                self._last_status = status
                lines.append(f"STATUS={status}")
        if lines:
            self.send("\n".join(lines))
        self._call = self._reactor.callLater(self.interval, self._tick)

    def stopping(self, status: str = "stopping") -> None:
        """``STOPPING=1``. The pings go on until :meth:`close`: a long stop
        must not look like a hang."""
        self._stopping = True
        self._status = None
        self.send(f"STOPPING=1\nSTATUS={_one_line(status)}")

    def close(self) -> None:
        """Stop the pings and close the socket."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._socket.close()


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _STATUS_MAX else text[: _STATUS_MAX - 3] + "..."
