"""The services' cgroups: one per service instance, with its limits.

Where the supervisor was given a :class:`~procwork._cgroup.Containment`
that is available, each service's child starts in the cgroup named after
the service (``web.service``), made at the start with the service's limits
(``memory_max``, ``memory_high``, ``pids_max``, ``cpu_max``) and removed
once its process ended and the cgroup emptied. Stopping and killing then
reach everything the service started (see
:class:`~procwork._spawn.GroupProcess`); what follows here is what the
supervisor says about it:

- what the process left in its cgroup when it exited (killed per the
  service's ``kill_leftovers``, or let run), in the log and to listeners;
- OOM kills in the cgroup (``memory.events``, watched while it runs): one
  becomes the exit's reason when it took the service's own process
  ("killed by the OOM killer at memory_max 200M"), and each is told to
  listeners (the monitor's ``service.oom_kill`` event);
- each service's limits, enforced or why not, and its usage (memory, CPU,
  tasks) for the status.

Without a containment (or one that is unavailable) services run in their
process groups, as before, and every limit is reported not enforced, with
the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from twisted.logger import Logger

from procwork._cgroup import Cgroup, Containment, Limits, format_limit
from procwork._cgroup._limits import plan
from procwork._cgroup._watch import watch_file
from procwork._reactor import Reactor
from procwork.supervisor._restart import Exit
from procwork.supervisor._service import ServiceRecord
from procwork.supervisor._spec import ServiceSpec

__all__ = ["CgroupListener", "ServiceCgroups", "limits_of"]

_log = Logger(namespace="procwork.supervisor")

#: Called with (event kind, service name, message, fields): ``"oom_kill"``,
#: ``"leftovers"``.
CgroupListener = Callable[[str, str, str, dict[str, Any]], object]

_T = TypeVar("_T")

NO_CONTAINMENT = (
    "the supervisor contains its services by process group only (it was "
    "given no cgroup containment)"
)


def limits_of(spec: ServiceSpec) -> Limits:
    """A service's limits."""
    return Limits(spec.memory_max, spec.memory_high, spec.pids_max, spec.cpu_max)


def cgroup_name(service: str) -> str:
    """The cgroup of a service: its name (a ``/`` escaped), ``.service``."""
    return service.replace("\\", "\\x5c").replace("/", "\\x2f") + ".service"


class ServiceCgroups:
    """What the supervisor does with cgroups (see the module's docstring).

    Args:
        containment: Where the services' cgroups go; None (or unavailable):
            process groups only.
        reactor: Where the OOM watch runs.
        services: The supervisor's services, by name (for :meth:`statuses`).
    """

    def __init__(
        self,
        containment: Containment | None,
        reactor: Reactor,
        services: Mapping[str, ServiceRecord],
    ) -> None:
        self.containment = containment
        self._reactor = reactor
        self._services = services
        self._listeners: list[CgroupListener] = []

    @property
    def available(self) -> bool:
        """Whether services run in cgroups."""
        return self.containment is not None and self.containment.available

    def listen(self, listener: CgroupListener) -> None:
        """Call ``listener(kind, service, message, fields)`` for each OOM kill
        in a service's cgroup and each exit that left processes behind."""
        self._listeners.append(listener)

    def _tell(self, kind: str, service: str, message: str, **fields: Any) -> None:
        for listener in list(self._listeners):
            try:
                listener(kind, service, message, fields)
            except Exception:
                _log.failure("a cgroup listener failed")

    # -- a service's life -----------------------------------------------------------

    def spawning(
        self, service: ServiceRecord, spawn: Callable[[Cgroup | None], _T]
    ) -> _T:
        """Start the service's child with ``spawn(cgroup)`` inside its cgroup
        (None: none), made with the service's limits now.

        Raises:
            OSError: what ``spawn`` raised (the cgroup is let go again), or
                the cgroup cannot be made (the message names it).
        """
        cgroup = None
        if self.available:
            assert self.containment is not None
            try:
                cgroup = self.containment.cgroup(
                    cgroup_name(service.name), limits_of(service.spec)
                )
            except OSError as e:
                raise OSError(
                    e.errno, f"cannot make its cgroup: {e.strerror or e}", e.filename
                ) from e
        try:
            child = spawn(cgroup)
        except BaseException:
            if cgroup is not None:
                assert self.containment is not None
                self.containment.release(cgroup)
            raise
        if cgroup is not None:
            service.cgroup = cgroup
            service.oom_seen = cgroup.oom_kills()
            service.oom_at_start = service.oom_seen
            self._watch_oom(service, cgroup)
        return child

    def _watch_oom(self, service: ServiceRecord, cgroup: Cgroup) -> None:
        def changed() -> None:
            if service.cgroup is cgroup:
                self._oom_check(service, cgroup)

        try:
            service.oom_watch = watch_file(
                self._reactor, f"{cgroup.path}/memory.events", changed
            )
        except OSError:
            service.oom_watch = None  # no memory controller in v2: seen at exit

    def _oom_check(self, service: ServiceRecord, cgroup: Cgroup) -> None:
        count = cgroup.oom_kills()
        if count <= service.oom_seen:
            return
        new, service.oom_seen = count - service.oom_seen, count
        service.oom_total += new
        limit = _memory_limit(service.spec)
        message = (
            f"service {service.name!r}: the OOM killer killed {new} "
            f"process{'es' if new > 1 else ''} in its cgroup{limit}"
        )
        _log.warn("{message}", message=message, service=service.name)
        self._tell("oom_kill", service.name, message, kills=new, total=count)

    def ended(self, service: ServiceRecord, ended: Exit) -> Exit:
        """The service's process ended (and its cgroup emptied, when
        killing what it left): say what it left, and whether the OOM killer
        took it; the cgroup is let go. Returns how it ended."""
        cgroup, service.cgroup = service.cgroup, None
        if cgroup is None:
            return ended
        watch, service.oom_watch = service.oom_watch, None
        if watch is not None:
            watch.cancel()
        # A v1 memory cgroup changes no file the watch would see: its kills
        # are counted here.
        self._oom_check(service, cgroup)
        killed = cgroup.oom_kills() - service.oom_at_start
        if killed and ended.returncode == -9:
            ended = Exit(
                -9,
                f"killed by the OOM killer{_memory_limit(service.spec, ' at')}",
            )
        transport = service.transport
        left = int(getattr(transport, "leftovers", 0) or 0)
        if left:
            kept = not getattr(transport, "kill_group_on_exit", True)
            what = "left running" if kept else "killed"
            message = (
                f"service {service.name!r} left {left} process"
                f"{'es' if left > 1 else ''} in its cgroup when it ended: {what}"
            )
            _log.warn("{message}", message=message, service=service.name)
            self._tell("leftovers", service.name, message, count=left, killed=not kept)
        assert self.containment is not None
        self.containment.release(cgroup)
        return ended

    # -- status ----------------------------------------------------------------------

    def statuses(self) -> dict[str, dict[str, Any]]:
        """Each service's :meth:`status`, by name, in the order added."""
        return {name: self.status(s) for name, s in self._services.items()}

    def status(self, service: ServiceRecord) -> dict[str, Any]:
        """The service's cgroup, limits (enforced or why not) and usage, as
        JSON types."""
        limits = limits_of(service.spec)
        if self.containment is not None:
            enforcement = (
                service.cgroup.enforcement
                if service.cgroup is not None
                else self.containment.plan(limits)
            )
        else:
            enforcement = plan(
                limits,
                v2_controllers=(),
                v1_controllers=(),
                v2_why=NO_CONTAINMENT,
                v1_why={},
            )
        cgroup = service.cgroup
        usage = None
        if cgroup is not None:
            usage = cgroup.usage().to_dict()
        return {
            "path": None if cgroup is None else cgroup.path,
            "limits": [e.to_dict() for e in enforcement],
            "usage": usage,
            "oom_kills": service.oom_total,
        }


def _memory_limit(spec: ServiceSpec, word: str = " at") -> str:
    """``" at memory_max 200M"`` (memory_high if there is no max), or ""."""
    for key in ("memory_max", "memory_high"):
        value = getattr(spec, key)
        if value is not None:
            return f"{word} {key} {format_limit(key, value)}"
    return ""
