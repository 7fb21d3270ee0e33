"""A drop-in for :class:`twisted.runner.procmon.ProcessMonitor` on procwork's spawn.

:class:`ProcessMonitor` *is* procmon (a subclass, the same API, restart
arithmetic and log events); on a stock posix reactor each child is a
:class:`~procwork._spawn.GroupProcess` (its own process group, reaped in
O(1)), stopped as a group by the one escalation, and killed when the reactor
shuts down. Any other reactor is used exactly as procmon uses it. This
module imports ``twisted.runner.procmon``, which imports the global reactor,
so :mod:`procwork.supervisor` imports it on first use only.

Design: ARCHITECTURE.md, "Services on procmon".
"""

from __future__ import annotations

import os
import signal
from typing import Any, cast

from twisted.internet.interfaces import IReactorFDSet
from twisted.logger import Logger
from twisted.runner import procmon

from procwork._escalation import Escalation
from procwork._reactor import ProcessReactor, default_reactor
from procwork._shutdown import watch_reactor
from procwork._spawn import GroupProcess

__all__ = ["ProcessMonitor"]

# Where procmon's events are published; kept so that observers and filters
# written for procmon see ours.
_PROCMON_NAMESPACE = "twisted.runner.procmon.ProcessMonitor"


class _ProcmonLog:
    """``ProcessMonitor.log``: a Logger in procmon's namespace.

    ``Logger`` used as a class attribute names its events after the class it
    is read through, which would be ours; a drop-in keeps procmon's name.
    Like procmon's, it can be replaced per instance (``pm.log = ...``).
    """

    def __get__(self, instance: object, owner: type | None = None) -> Logger:
        return Logger(namespace=_PROCMON_NAMESPACE, source=instance or owner)


class _GroupTransport:
    """What :class:`ProcessMonitor` uses of a transport that can stop a group."""

    kill_group_on_exit: bool

    def signal_group(self, signum: int) -> bool:
        raise NotImplementedError


def _group_transport(transport: object) -> _GroupTransport | None:
    """The transport, if it can signal its whole process group, else None."""
    if callable(getattr(transport, "signal_group", None)):
        return cast(_GroupTransport, transport)
    return None


class _GroupSpawningReactor:
    """Stands in for a stock reactor as procmon's ``_reactor``.

    Its ``spawnProcess`` starts a :class:`~procwork._spawn.GroupProcess`;
    everything else is the reactor's own.
    """

    def __init__(self, reactor: ProcessReactor) -> None:
        self._reactor = reactor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def spawnProcess(
        self,
        processProtocol: Any,
        executable: Any,
        args: Any = (),
        env: Any = None,
        path: Any = None,
        uid: Any = None,
        gid: Any = None,
        usePTY: Any = False,
        childFDs: Any = None,
    ) -> Any:
        # GroupProcess cannot change user or group, nor use a pty or other
        # descriptors; such a child is started the way procmon would, by the
        # reactor (no session of its own, reaped by Twisted's SIGCHLD scan).
        # It is still stopped and restarted as procmon does.
        wants_credentials = (uid is not None and uid != os.getuid()) or (
            gid is not None and gid != os.getgid()
        )
        if wants_credentials or usePTY or childFDs is not None:
            return self._reactor.spawnProcess(
                processProtocol, executable, args, env, path, uid, gid, usePTY, childFDs
            )
        watch_reactor(self._reactor)
        # procmon always passes ``executable = args[0]``, which GroupProcess
        # looks up on PATH, as Twisted's spawnProcess does; an env of {} is
        # an empty environment, as it is for Twisted.
        return GroupProcess(self._reactor, processProtocol, args, env=env, cwd=path)


def _is_stock_reactor(reactor: object) -> bool:
    """Whether ``reactor`` spawns processes the way every posix reactor does.

    Only then is ``spawnProcess`` replaced by GroupProcess (which needs the
    reactor's file-descriptor set for its pidfd); a reactor with a
    ``spawnProcess`` of its own, such as a test double, keeps it.
    """
    from twisted.internet.posixbase import PosixReactorBase

    return (
        isinstance(reactor, PosixReactorBase)
        and type(reactor).spawnProcess is PosixReactorBase.spawnProcess
        and IReactorFDSet.providedBy(reactor)
    )


class ProcessMonitor(procmon.ProcessMonitor):
    """:class:`twisted.runner.procmon.ProcessMonitor`, spawning through procwork.

    Use it as procmon: ``pm = ProcessMonitor(reactor)``, ``pm.addProcess(...)``,
    ``pm.startService()``; everything procmon documents holds. On a real
    reactor each child leads its own process group, is stopped as a group
    (SIGTERM, then SIGKILL after :attr:`killTime`) and is reaped in O(1).
    Call from the reactor thread.

    Args:
        reactor: Spawns the processes and times the restarts. Default the
            global reactor. A stock posix reactor's ``spawnProcess`` is
            replaced by procwork's; any other reactor's is used as is.
    """

    log = _ProcmonLog()

    # Any: procmon's own signature, an IReactorProcess (a zope interface, which
    # mypy cannot match); the default is the global reactor.
    def __init__(self, reactor: Any = None) -> None:
        if reactor is None:
            reactor = default_reactor()
        super().__init__(reactor)
        if _is_stock_reactor(reactor):
            # Replaces only procmon's spawner; its timers (``_clock``) stay
            # the reactor's. __getstate__ leaves ``_reactor`` out of pickles,
            # as procmon does.
            self._reactor = cast(Any, _GroupSpawningReactor(reactor))

    def stopProcess(self, name: str) -> None:
        """Stop the named process: SIGTERM to its group, SIGKILL after killTime.

        A process whose transport cannot signal its group (started by a
        reactor of its own) is stopped as procmon does, alone.

        Raises:
            KeyError: No process has this name.
        """
        if name not in self._processes:
            raise KeyError(f"Unrecognized process name: {name}")
        proto = self.protocols.get(name)
        if proto is None or proto.transport is None:
            return  # not running (procmon would fail an assertion on the latter)
        transport = _group_transport(proto.transport)
        if transport is None:
            super().stopProcess(name)
            return
        # procmon schedules a new SIGKILL at every call and leaves the
        # earlier one armed; one is enough: a second stop only signals again.
        # (Any: mypy cannot check zope interfaces' methods, declared without self.)
        murder: Any = self.murder.get(name)
        if murder is not None and murder.active():
            transport.signal_group(self._stop_signal(name))
            return
        # The one kill escalation of procwork; it also marks the group to be
        # SIGKILLed whole when the process exits (before it is reaped), so a
        # restarted service never meets its old children. Its SIGKILL timer
        # goes into procmon's ``murder`` table, where procmon cancels it when
        # the process exits.
        escalation = Escalation(
            transport, self._clock, on_expired=lambda: self._stop_expired(transport)
        )
        if escalation.terminate(self._kill_time(name), self._stop_signal(name)):
            self.murder[name] = escalation.kill_call

    def _forceStopProcess(self, proc: Any) -> None:
        # procmon's own kill timer calls this for a process stopped alone;
        # a group's stop is timed by the Escalation above.
        self._stop_expired(proc)
        transport = _group_transport(proc)
        if transport is None:
            super()._forceStopProcess(proc)
        else:
            Escalation(transport, self._clock).kill()

    def _stop_expired(self, transport: Any) -> None:
        """Hook: the process did not stop in time; SIGKILL follows at once."""

    def _stop_signal(self, name: str) -> int:
        """The signal that asks the named process to stop (SIGTERM)."""
        return signal.SIGTERM

    def _kill_time(self, name: str) -> float:
        """Seconds between the stop signal and SIGKILL (:attr:`killTime`)."""
        return float(self.killTime)
