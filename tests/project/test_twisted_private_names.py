"""Every Twisted internal procwork relies on still exists, as procwork uses it.

procwork builds on parts of Twisted that are not its public API: private
names (``_fork``, ``_monitoredProcessExited``, ...) and public-looking names
of internal classes and modules that Twisted may change without a
deprecation cycle. A Twisted release that renames or reshapes one of them
would break procwork quietly (a supervisor whose services stay STARTING
after they exit, a spawn that falls back to Twisted's slow fork). This test
fails loudly instead, naming the internal, who uses it and why.

:data:`INTERNALS` is the one list of them. When code in ``untwisted/``,
``clockwork/`` or ``procwork/`` starts to override or read another Twisted
internal, add it here, with the reason.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import pytest
import twisted
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

import procwork
from tests.support import wait


@dataclass(frozen=True)
class Internal:
    """One Twisted internal that procwork relies on.

    Attributes:
        owner: Dotted path of the module or class that has it.
        name: The attribute.
        use: ``"overrides"`` (a subclass replaces it: it must still be
            called, with these ``parameters``) or ``"reads"`` (procwork
            reads or calls it).
        where: The procwork module that does.
        why: What procwork needs it for.
        parameters: For a method: its parameter names, as procwork's override
            or call expects them.
        instance: For an attribute set in ``__init__``: makes an instance of
            ``owner`` to look on (None: look on the class or module).
    """

    owner: str
    name: str
    use: str
    where: str
    why: str
    parameters: tuple[str, ...] | None = None
    instance: str | None = None

    def __str__(self) -> str:
        return f"{self.owner}.{self.name}"


PROCESS = "twisted.internet.process.Process"
PROCMON = "twisted.runner.procmon.ProcessMonitor"
REACTOR = "twisted.internet.base.ReactorBase"
HTTP_CHANNEL = "twisted.web.http.HTTPChannel"
ASYNCIO_REACTOR = "twisted.internet.asyncioreactor.AsyncioSelectorReactor"

INTERNALS = [
    # -- the process transport: procwork/_spawn.py (GroupProcess) ----------------
    Internal(PROCESS, "_fork", "overrides", "procwork/_spawn.py",
             "start the child with subprocess.Popen in its own session (vfork, "
             "close_range) instead of Twisted's fork, which lists every open fd "
             "in Python; Process.__init__ must still call it with fdmap=",
             ("self", "path", "uid", "gid", "executable", "args", "environment",
              "kwargs")),
    Internal(PROCESS, "_reactor", "reads", "procwork/_spawn.py, procwork/_shutdown.py",
             "the reactor a child belongs to: to remove its pidfd reader, to "
             "defer processEnded by a turn, and to stop only that reactor's "
             "children at shutdown", instance="process"),
    Internal(PROCESS, "pipes", "reads", "procwork/_spawn.py",
             "the child's pipes, drained and closed once it has exited so a "
             "grandchild holding them cannot delay the result",
             instance="process"),
    Internal(PROCESS, "lostProcess", "reads", "procwork/_spawn.py",
             "whether the child was reaped, to decide when to end",
             instance="process"),
    Internal(PROCESS, "maybeCallProcessEnded", "overrides", "procwork/_spawn.py",
             "call processEnded on the next reactor turn, out of the epoll "
             "batch (stale events for reused fd numbers)", ("self",)),
    Internal("twisted.internet.process._BaseProcess", "reapProcess", "overrides",
             "procwork/_spawn.py", "reap through the pidfd, one child per exit",
             ("self",)),
    Internal("twisted.internet.process._BaseProcess", "processEnded", "overrides",
             "procwork/_spawn.py",
             "kill what is left of the group before the status is reported",
             ("self", "status")),
    Internal("twisted.internet.process", "reapProcessHandlers", "reads",
             "procwork/_spawn.py",
             "Twisted's table of children, walked at every SIGCHLD (O(n), "
             "twisted/twisted#2967); procwork takes its children out of it"),
    Internal("twisted.internet.process", "registerReapProcessHandler", "reads",
             "procwork/_spawn.py",
             "back into Twisted's table when the pidfd watch is lost",
             ("pid", "process")),
    Internal("twisted.internet.process", "unregisterReapProcessHandler", "reads",
             "procwork/_spawn.py", "out of Twisted's table (see above)",
             ("pid", "process")),
    # -- procmon: procwork/supervisor/_procmon.py ----------------------------------
    Internal(PROCMON, "_monitoredProcessExited", "overrides",
             "procwork/supervisor/_procmon.py",
             "where procmon learns of every exit (new in Twisted 25.5; before "
             "that, connectionLost): per-service backoff, then the "
             "supervisor's verdict", ("self", "name", "reason")),
    Internal(PROCMON, "_forceStopProcess", "overrides",
             "procwork/supervisor/_processmonitor.py",
             "SIGKILL the service's whole process group, not the leader alone",
             ("self", "proc")),
    Internal(PROCMON, "startProcess", "overrides", "procwork/supervisor/_procmon.py",
             "the supervisor's gate on every (re)start", ("self", "name")),
    Internal(PROCMON, "stopProcess", "overrides", "procwork/supervisor/_procmon.py",
             "the service's own stop signal and timeout, to its whole group",
             ("self", "name")),
    Internal(PROCMON, "_processes", "reads", "procwork/supervisor/_procmon.py",
             "whether a name is known, as procmon's own stopProcess checks",
             instance="procmon"),
    Internal(PROCMON, "_clock", "reads", "procwork/supervisor/_procmon.py",
             "procmon's timer source (new in Twisted 25.5), for the kill timer",
             instance="procmon"),
    *(
        Internal(PROCMON, name, "reads", "procwork/supervisor/_procmon.py",
                 "procmon's per-name state: the restart and kill timers, the "
                 "backoff delay and the running protocols", instance="procmon")
        for name in ("restart", "murder", "delay", "protocols")
    ),
    *(
        Internal(PROCMON, name, "reads", "procwork/supervisor/_procmon.py",
                 "procmon's backoff settings, set per service before each "
                 "exit is handled")
        for name in ("threshold", "minRestartDelay", "maxRestartDelay")
    ),
    # -- the reactor loop: untwisted/_driver.py ---------------------------------------
    Internal(REACTOR, "startRunning", "reads", "untwisted/_driver.py",
             "the first half of reactor.run(), done once, lazily",
             ("self", "installSignalHandlers")),
    Internal(REACTOR, "runUntilCurrent", "reads", "untwisted/_driver.py",
             "the first half of one iteration: due timers and thread calls",
             ("self",)),
    Internal(REACTOR, "doIteration", "reads", "untwisted/_driver.py",
             "the second half: wait for I/O, for at most the given delay",
             ("self", "delay")),
    Internal(REACTOR, "threadCallQueue", "reads", "untwisted/_driver.py",
             "calls queued by callFromThread: the wait for I/O must not block "
             "while there are any", instance="reactor"),
    # -- the HTTP endpoint: procwork/monitor/_http.py -------------------------------
    *(
        Internal(HTTP_CHANNEL, name, "reads", "procwork/monitor/_http.py",
                 "the method and target of the request whose head is in, set "
                 "from its first line until its body is read: whether it may "
                 "have a body is decided before any of the body is read",
                 instance="http_channel")
        for name in ("_command", "_path")
    ),
    Internal(HTTP_CHANNEL, "_respondToBadRequestAndDisconnect", "overrides",
             "procwork/monitor/_http.py",
             "where the parser refuses a malformed request line or header, or "
             "headers over totalHeadersSize: answered with a 400 that says why "
             "instead of a bare one", ("self",)),
    Internal(HTTP_CHANNEL, "allHeadersReceived", "overrides",
             "procwork/monitor/_http.py",
             "called once a request's head is in, before its body is read "
             "(and before any 100 Continue): the guard refuses there",
             ("self",)),
    Internal(HTTP_CHANNEL, "allContentReceived", "overrides",
             "procwork/monitor/_http.py",
             "processes a request once its body is in: not a refused one",
             ("self",)),
    Internal(HTTP_CHANNEL, "totalHeadersSize", "reads", "procwork/monitor/_http.py",
             "the cap on a request's head, named in the 400"),
    Internal(HTTP_CHANNEL, "maxHeaders", "reads", "procwork/monitor/_http.py",
             "the cap on a request's header lines, named in the 400"),
    Internal("twisted.web.http.Request", "gotLength", "overrides",
             "procwork/monitor/_http.py",
             "where twisted.web makes the body's file (a temporary file past "
             "100 KiB or for a chunked body): kept in memory instead",
             ("self", "length")),
    Internal("twisted.web.http.Request", "handleContentChunk", "overrides",
             "procwork/monitor/_http.py",
             "each piece of a body as it is read: a chunked body is cut off at "
             "the cap", ("self", "data")),
    Internal("twisted.web.http.Request", "_disconnected", "reads",
             "procwork/monitor/_http.py",
             "whether the client of a control request has gone before its "
             "answer is written"),
    # -- the reactor of an asyncio loop: untwisted/_loopreactor.py ------------------
    Internal(ASYNCIO_REACTOR, "_readOrWrite", "overrides", "untwisted/_loopreactor.py",
             "where the loop hands a ready descriptor (a child's pipe or pidfd) "
             "to Twisted: fatal signals are held there and their exception "
             "raised from the loop's next callback", ("self", "selectable", "read")),
    Internal(ASYNCIO_REACTOR, "_onTimer", "overrides", "untwisted/_loopreactor.py",
             "where the loop runs Twisted's due timers: fatal signals are held "
             "there", ("self",)),
    Internal(REACTOR, "_registerAsIOThread", "overrides", "untwisted/_loopreactor.py",
             "set False: a loop's own reactor must not make its thread the "
             "global reactor's I/O thread (threadable.ioThread)"),
    Internal("twisted.internet.defer", "_inlineCallbacks", "reads",
             "untwisted/_awaitable.py",
             "Twisted's coroutine runner: an AwaitableDeferred awaited from a "
             "frame it runs is awaited the Twisted way, not on an asyncio "
             "future (its code object is compared)",
             ("result", "gen", "status", "context")),
    Internal(ASYNCIO_REACTOR, "_asyncioEventloop", "reads",
             "untwisted/_asyncio.py, procwork/_threads.py",
             "the loop a program-installed asyncio reactor runs on: that loop "
             "is driven by the global reactor and needs no reactor of its own",
             instance="asyncio_reactor"),
    # -- TLS: clockwork/_tls.py -------------------------------------------------------
    Internal("twisted.protocols.tls.TLSMemoryBIOProtocol", "getHandle", "reads",
             "clockwork/_tls.py",
             "the pyOpenSSL connection (Twisted documents it for its own "
             "Certificate.peerFromTransport only): after a failed verification "
             "getPeerCertificate has nothing, but the chain the peer sent is "
             "there, and its certificate says why it was refused", ("self",)),
    # -- threads: untwisted/_driver.py and procwork/_threads.py ---------------------
    Internal("twisted.python.threadable", "ioThread", "reads",
             "untwisted/_driver.py, procwork/_threads.py",
             "the thread a started reactor runs in, named in ForeignThreadError"),
    Internal("twisted.python.threadable", "isInIOThread", "reads",
             "untwisted/_driver.py, procwork/_threads.py",
             "whether the caller is that thread (a reactor the program runs "
             "itself, in any thread, is owned by it whoever called first)", ()),
]  # fmt: skip


@pytest.fixture(scope="module")
def instances() -> Iterator[dict[str, Any]]:
    """One of each kind of object whose instance attributes are checked."""
    from twisted.internet import reactor
    from twisted.runner.procmon import ProcessMonitor

    from untwisted.lowlevel import LoopReactor

    proc = procwork.spawn(["sleep", "30"], priority="critical")
    loop = asyncio.new_event_loop()
    asyncio_reactor = LoopReactor(loop)
    try:
        yield {
            "process": proc._transport,
            "procmon": ProcessMonitor(reactor=cast(Any, MemoryReactorClock())),
            "reactor": reactor,
            "http_channel": _channel_with_a_head_in(),
            "asyncio_reactor": asyncio_reactor,
        }
    finally:
        asyncio_reactor.close()
        loop.close()
        wait(proc.kill())


def _channel_with_a_head_in() -> Any:
    """A twisted.web HTTP channel that has read a request's head, not its body."""
    from twisted.internet.testing import StringTransport
    from twisted.web.http import HTTPChannel

    channel = HTTPChannel()
    channel.makeConnection(StringTransport())
    channel.dataReceived(b"POST /control HTTP/1.1\r\ncontent-length: 5\r\n\r\n")
    return channel


def test_the_channel_knows_the_method_and_target_when_the_head_is_in() -> None:
    """procwork/monitor/_http.py reads them in allHeadersReceived."""
    from twisted.internet.testing import StringTransport
    from twisted.web.http import HTTPChannel

    seen: list[tuple[object, object, object]] = []

    class Looking(HTTPChannel):
        def allHeadersReceived(self) -> None:
            seen.append((self._command, self._path, self.length))
            super().allHeadersReceived()

    channel = Looking()
    channel.makeConnection(StringTransport())
    channel.dataReceived(b"POST /control?x HTTP/1.1\r\ncontent-length: 5\r\n\r\n")
    assert seen == [(b"POST", b"/control?x", 5)], (
        f"Twisted {twisted.__version__}'s HTTPChannel no longer has the request's "
        "method and target (_command, _path) when allHeadersReceived is called; "
        "procwork/monitor/_http.py decides there whether to read the body"
    )


def _resolve(path: str) -> Any:
    module, _, rest = path.partition(".")
    found: Any = importlib.import_module(module)
    for part in rest.split(".") if rest else []:
        try:
            found = getattr(found, part)
        except AttributeError:
            found = importlib.import_module(f"{found.__name__}.{part}")
    return found


@pytest.mark.parametrize("internal", INTERNALS, ids=str)
def test_each_twisted_internal_procwork_relies_on_still_exists(
    internal: Internal, instances: dict[str, Any]
) -> None:
    owner = _resolve(internal.owner)
    where = owner if internal.instance is None else instances[internal.instance]
    assert hasattr(where, internal.name), (
        f"Twisted {twisted.__version__} has no {internal}, which "
        f"{internal.where} {internal.use} ({internal.why}). Adapt that code "
        "to this Twisted (or pin the Twisted floor in pyproject.toml), then "
        "update tests/project/test_twisted_private_names.py."
    )
    if internal.parameters is not None:
        parameters = tuple(inspect.signature(getattr(owner, internal.name)).parameters)
        assert parameters == internal.parameters, (
            f"Twisted {twisted.__version__} changed the signature of {internal}: "
            f"{parameters}, not {internal.parameters}; {internal.where} "
            f"{internal.use} it ({internal.why})."
        )


def test_the_process_constructor_still_starts_the_child_through_fork_with_fdmap() -> (
    None
):
    """GroupProcess relies on being started through ``_fork(..., fdmap=)``."""
    from twisted.internet.process import Process

    source = inspect.getsource(Process.__init__)
    assert "self._fork(" in source and "fdmap=fdmap" in source, (
        f"Twisted {twisted.__version__}'s Process.__init__ no longer calls "
        "self._fork(..., fdmap=fdmap): procwork/_spawn.py's GroupProcess "
        "would not start its children in their own session"
    )


def test_procmon_still_routes_every_exit_through_monitoredProcessExited() -> None:
    """Under Twisted 24.x procmon's protocol called ``connectionLost`` instead,
    the supervisor's override was never called and services stayed STARTING
    after they exited."""
    from twisted.runner.procmon import LoggingProtocol, ProcessMonitor

    seen: list[tuple[str, object]] = []

    class Recording(ProcessMonitor):
        def _monitoredProcessExited(
            self, name: str, reason: Failure | None = None
        ) -> None:
            seen.append((name, reason))

    monitor = Recording(reactor=cast(Any, MemoryReactorClock()))
    protocol = LoggingProtocol()
    protocol.service = monitor
    protocol.name = "svc"
    protocol.makeConnection(_NoTransport())
    reason = Failure(RuntimeError("ended"))
    protocol.processEnded(reason)
    assert seen == [("svc", reason)], (
        f"Twisted {twisted.__version__}'s procmon does not report exits through "
        "_monitoredProcessExited; procwork/supervisor/_procmon.py relies on it"
    )


class _NoTransport:
    """Just enough of a transport for LoggingProtocol.makeConnection."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


def test_the_list_names_only_modules_that_exist_in_this_checkout() -> None:
    from tests.support import ROOT

    for internal in INTERNALS:
        for path in internal.where.split(", "):
            assert (ROOT / path).is_file(), f"{internal}: no such module {path}"


# -- the list is complete: what the code uses, found in its syntax tree -----------

PACKAGES = ("untwisted", "clockwork", "procwork")


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _private_twisted_uses(tree: ast.Module) -> set[str]:
    """Private Twisted names a module uses, as ``"owner-ish.name"`` strings.

    Found: imports of private Twisted modules or names; ``alias._name`` on a
    Twisted module; and, in a class that subclasses a Twisted class, private
    methods it defines (overrides) and private ``self._name`` attributes it
    reads without ever setting them (Twisted's).
    """
    modules: dict[str, str] = {}  # local name -> Twisted module or class
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("twisted."):
                    modules[alias.asname or alias.name] = alias.name
                    found.update(
                        f"{alias.name}:{part}"
                        for part in alias.name.split(".")
                        if _private(part)
                    )
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "twisted"
        ):
            module = node.module or ""
            found.update(f"{module}:{p}" for p in module.split(".") if _private(p))
            for alias in node.names:
                modules[alias.asname or alias.name] = f"{module}.{alias.name}"
                if _private(alias.name):
                    found.add(f"{module}:{alias.name}")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and _private(node.attr)
        ):
            found.add(f"{modules[node.value.id]}:{node.attr}")
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                path = _dotted(base, modules)
                if path is not None:
                    found.update(_private_class_uses(node, _resolve(path)))
    return found


def _dotted(base: ast.expr, modules: dict[str, str]) -> str | None:
    """The dotted path of a class base that comes from Twisted, else None."""
    parts: list[str] = []
    while isinstance(base, ast.Attribute):
        parts.insert(0, base.attr)
        base = base.value
    if not isinstance(base, ast.Name) or base.id not in modules:
        return None
    return ".".join([modules[base.id], *parts])


def _private_class_uses(cls: ast.ClassDef, base: Any) -> set[str]:
    defined = {
        f.name
        for f in cls.body
        if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    read: set[str] = set()
    written: set[str] = set()
    for node in ast.walk(cls):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
            and _private(node.attr)
        ):
            (written if isinstance(node.ctx, ast.Store) else read).add(node.attr)
    overridden = {name for name in defined if _private(name) and hasattr(base, name)}
    return {f"{cls.name}:{name}" for name in overridden | (read - written - defined)}


@pytest.mark.slow
def test_every_private_twisted_name_the_code_uses_is_in_the_list() -> None:
    """A new private Twisted name in the code must be added to INTERNALS."""
    from tests.support import ROOT

    listed = {internal.name for internal in INTERNALS}
    owners = {internal.owner for internal in INTERNALS}
    missing = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for use in sorted(_private_twisted_uses(tree)):
                owner, name = use.split(":")
                if name not in listed and not any(
                    o.startswith(f"{owner}.{name}") for o in owners
                ):
                    missing.append(f"{path.relative_to(ROOT)}: {use}")
    assert missing == [], (
        "private Twisted names used but not listed in INTERNALS (say why each "
        f"is used): {missing}"
    )


def test_the_completeness_check_finds_what_it_looks_for() -> None:
    tree = ast.parse(
        "from twisted.internet import _signals\n"
        "from twisted.internet import process as p\n"
        "p._BaseProcess\n"
        "class C(p.Process):\n"
        "    def _fork(self): self._mine = self._reactor\n"
        "    def helper(self): return self._mine\n"
    )
    assert _private_twisted_uses(tree) == {
        "twisted.internet:_signals",
        "twisted.internet.process:_BaseProcess",
        "C:_fork",
        "C:_reactor",
    }
