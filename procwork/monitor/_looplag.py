"""How late the monitor's reactor runs: its loop lag, and a warning when a
turn blocks it.

:class:`LoopLag` arms a timer every ``every`` seconds and measures how late
it fires: the largest lag of the last ``window`` seconds
(``procwork_monitor_loop_lag_seconds``), the stalls over ``warn_over``
seconds (``procwork_monitor_loop_stalls_total``), and a warning for them at
most every ``warn_every`` seconds.

Design: ARCHITECTURE.md, "Loop lag".
"""

from __future__ import annotations

import math
from collections import deque

from twisted.logger import Logger

from procwork._reactor import DelayedCall, Reactor

__all__ = ["LoopLag"]

_log = Logger(namespace="procwork.monitor")


class LoopLag:
    """Measures the reactor's lag; see the module.

    Args:
        reactor: The reactor to measure.
        every: Seconds between measures.
        window: Seconds :attr:`recent_max` looks back.
        warn_over: A lag over this many seconds is a stall, and logged.
        warn_every: At most one warning this often (seconds).
    """

    def __init__(
        self,
        reactor: Reactor,
        *,
        every: float = 0.25,
        window: float = 60.0,
        warn_over: float = 1.0,
        warn_every: float = 60.0,
    ) -> None:
        self._reactor = reactor
        self.every = every
        self.window = window
        self.warn_over = warn_over
        self.warn_every = warn_every
        #: The lag of the last measure (seconds).
        self.last = 0.0
        #: Lags over ``warn_over`` since the start.
        self.stalls = 0
        # (when, lag) of the window's measures: at most window / every.
        self._recent: deque[tuple[float, float]] = deque(
            maxlen=math.ceil(window / every) + 1
        )
        self._due = 0.0
        self._call: DelayedCall | None = None
        self._warned_at: float | None = None
        self._unwarned = 0  # stalls since the last warning, not said

    @property
    def running(self) -> bool:
        """Measuring."""
        return self._call is not None

    @property
    def recent_max(self) -> float:
        """The largest lag of the last ``window`` seconds."""
        since = self._reactor.seconds() - self.window
        return max((lag for when, lag in self._recent if when >= since), default=0.0)

    def start(self) -> None:
        """Start measuring (nothing if it does)."""
        if self._call is None:
            self._arm()

    def stop(self) -> None:
        """Stop measuring."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _arm(self) -> None:
        self._due = self._reactor.seconds() + self.every
        self._call = self._reactor.callLater(self.every, self._fired)

    def _fired(self) -> None:
        now = self._reactor.seconds()
        lag = max(0.0, now - self._due)  # a wall clock set back: not negative
        self.last = lag
        self._recent.append((now, lag))
        if lag > self.warn_over:
            self._stalled(now, lag)
        self._arm()

    def _stalled(self, now: float, lag: float) -> None:
        self.stalls += 1
        if self._warned_at is not None and now - self._warned_at < self.warn_every:
            self._unwarned += 1
            return
        more, self._unwarned = self._unwarned, 0
        self._warned_at = now
        _log.warn(
            "the monitor's reactor was blocked for at least {lag:.1f} s (a timer "
            "ran that late): checks, restarts and control requests waited"
            "{more_text}",
            lag=lag,
            more=more,
            more_text=(
                f"; {more} more such stall{'s' if more != 1 else ''} since the last "
                "warning"
                if more
                else ""
            ),
            event="monitor.loop_stalled",
        )
