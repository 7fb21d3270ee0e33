"""What the supervisor's services print, as the :class:`Supervisor` offers it.

:class:`ServiceOutputs` holds :class:`Supervisor`'s methods about output
(the last lines of a stream, following it, the log files' losses and
reopening them); it is a base class of :class:`Supervisor`, kept apart so
that the supervisor's module keeps to what happens at each start, exit and
stop. Each service's output itself is its
:class:`~procwork.supervisor._servicelog.ServiceOutput`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from procwork._reactor import ReactorTime
from procwork._threads import check_thread
from procwork.supervisor._servicelog import LogStats, OutputListener

if TYPE_CHECKING:
    from procwork.supervisor._service import ServiceRecord

__all__ = ["ServiceOutputs"]


class ServiceOutputs:
    """The output methods of :class:`~procwork.supervisor.Supervisor`.

    Call them from the reactor thread, as every method of the supervisor.
    """

    # The Supervisor's, which these methods use.
    _reactor: ReactorTime
    _services: dict[str, ServiceRecord]

    if TYPE_CHECKING:

        def _get(self, name: str) -> ServiceRecord: ...

    def output(
        self, name: str, stream: str = "stdout", lines: int | None = None
    ) -> list[str]:
        """The last lines a service printed on ``stream``, oldest first.

        Each stream keeps its last :data:`OUTPUT_TAIL` bytes, across
        restarts; the lines are also logged as events (within the service's
        ``console_rate``) and written to its log files.

        Raises:
            NoSuchService: no such service.
            ValueError: ``stream`` is not ``"stdout"`` or ``"stderr"``.
        """
        return self._get(name).output.lines(stream, lines)

    def follow(self, name: str, listener: OutputListener) -> Callable[[], None]:
        """Call ``listener(stream, line)`` for each line the service prints
        from now on.

        Returns:
            A function that stops the following (idempotent). A removed
            service's listeners are dropped.

        Raises:
            NoSuchService: no such service.
        """
        listeners = self._get(name).output.listeners
        listeners.append(listener)

        def unfollow() -> None:
            if listener in listeners:
                listeners.remove(listener)

        return unfollow

    def log_stats(self) -> dict[str, LogStats]:
        """What each service's log files lost (failed writes, lines), by
        service, in the order added."""
        return {name: s.output.log_stats for name, s in self._services.items()}

    def reopen_logs(self, name: str) -> list[str]:
        """Close a service's ``stdout_log``/``stderr_log`` files and open them
        again at their paths (``procwork ctl reopen``, after an external
        rotation moved them away).

        Returns:
            The files' paths (none: the service keeps no log files).

        Raises:
            NoSuchService: no such service.
            OSError: a file cannot be opened again; the message names it
                and says why (it is also reported like a failed write).
        """
        check_thread("Supervisor.reopen_logs", self._reactor)
        return self._get(name).output.reopen()
