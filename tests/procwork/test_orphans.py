"""PID 1 and subreapers: procwork reaps the orphans the kernel hands it, and
never the exit status of a child other code of the program waits for.

The scheduling of sweeps is tested on a ``task.Clock``. Everything that needs
orphans runs in a child Python made a subreaper with
``prctl(PR_SET_CHILD_SUBREAPER)``, or in a new pid namespace where
``procwork monitor`` is PID 1 (``unshare --pid --fork --mount-proc``). Every
wait is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import process as twisted_process
from twisted.internet import task

from procwork import _orphans
from tests.support import PY, ROOT, child_env, observing, run_child

# -- sweeps: when they run ------------------------------------------------------


@pytest.fixture
def clock_reaper() -> Iterator[tuple[task.Clock, _orphans.OrphanReaper]]:
    """A started reaper on a Clock (hooked into Twisted's table); stopped after."""
    clock = task.Clock()
    reaper = _orphans.OrphanReaper(clock, min_interval=0.05, backstop=1.0, max_busy=0)
    reaper.start()
    try:
        yield clock, reaper
    finally:
        reaper.stop()


def hook() -> Any:
    """The reaper's entry in Twisted's reap table."""
    table: dict[Any, Any] = twisted_process.reapProcessHandlers
    return table[_orphans._HOOK_KEY]


def test_twisteds_sigchld_reaping_asks_the_reaper_for_a_sweep(
    clock_reaper: tuple[task.Clock, _orphans.OrphanReaper],
) -> None:
    """The reaper is an entry of Twisted's reap table, so the reapAllProcesses()
    that Twisted runs on every SIGCHLD asks for a sweep, on a later turn."""
    clock, reaper = clock_reaper
    clock.advance(0)
    assert reaper.sweeps == 1  # start() sweeps once, for orphans already there
    clock.advance(0.5)
    twisted_process.reapAllProcesses()
    assert reaper.sweeps == 1
    clock.advance(0)
    assert reaper.sweeps == 2


def test_its_entry_in_twisteds_table_is_not_a_pid(
    clock_reaper: tuple[task.Clock, _orphans.OrphanReaper],
) -> None:
    """No code that walks the table for pids can signal or wait on a process
    group because of it: its key is a string."""
    table: dict[Any, Any] = twisted_process.reapProcessHandlers
    [key] = [k for k, v in table.items() if v is hook()]
    assert isinstance(key, str)


def test_a_burst_of_sigchld_makes_one_sweep_and_sweeps_are_spaced(
    clock_reaper: tuple[task.Clock, _orphans.OrphanReaper],
) -> None:
    """A thousand SIGCHLDs before the sweep runs make one sweep; the next one
    waits until min_interval after it."""
    clock, reaper = clock_reaper
    for _ in range(1000):
        hook().reapProcess()
    clock.advance(0)
    assert reaper.sweeps == 1
    for _ in range(1000):
        hook().reapProcess()
    clock.advance(0.04)
    assert reaper.sweeps == 1
    clock.advance(0.01)
    assert reaper.sweeps == 2


def test_slow_sweeps_are_spaced_by_what_they_cost() -> None:
    """A sweep that took 3 ms (thousands of children to list) is followed by
    the next one 0.15 s later at the soonest: at most 2 % of the time goes to
    sweeping, however many SIGCHLD arrive."""
    clock = task.Clock()
    reaper = _orphans.OrphanReaper(clock, min_interval=0.05, max_busy=0.02)
    ticks = iter([0.0, 0.003] * 10)
    reaper._timer = lambda: next(ticks)
    reaper.start()
    try:
        clock.advance(0)
        assert reaper.sweeps == 1
        hook().reapProcess()
        clock.advance(0.149)
        assert reaper.sweeps == 1
        clock.advance(0.001)
        assert reaper.sweeps == 2
    finally:
        reaper.stop()


def test_the_backstop_sweeps_every_second_without_any_sigchld(
    clock_reaper: tuple[task.Clock, _orphans.OrphanReaper],
) -> None:
    """For a reactor with no SIGCHLD handling (driven off the main thread)."""
    clock, reaper = clock_reaper
    clock.advance(0)
    for _ in range(3):
        clock.advance(1.0)
    assert reaper.sweeps == 4


def test_stopping_unhooks_from_twisted_and_cancels_every_timer() -> None:
    clock = task.Clock()
    reaper = _orphans.OrphanReaper(clock)
    reaper.start()
    reaper.stop()
    assert _orphans._HOOK_KEY not in twisted_process.reapProcessHandlers
    assert clock.getDelayedCalls() == []
    reaper.request_sweep()
    assert clock.getDelayedCalls() == []


def test_a_failing_sweep_is_logged_and_the_reaper_goes_on(
    clock_reaper: tuple[task.Clock, _orphans.OrphanReaper],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock, reaper = clock_reaper
    events: list[dict[str, Any]] = []
    monkeypatch.setattr(_orphans, "_peek_zombie", lambda: 1 / 0)
    with observing(events.append):
        clock.advance(0)
        clock.advance(1.0)
    failures = [e for e in events if "log_failure" in e]
    assert [e["log_format"] for e in failures] == ["sweep for orphans failed"] * 2
    assert failures[0]["log_failure"].check(ZeroDivisionError)
    assert reaper.sweeps == 2


# -- when reaping starts ---------------------------------------------------------


PRELUDE = """
import ctypes, json, os, subprocess, sys, threading, time
import procwork
procwork.scheduler().load = procwork.NoLoadLimit()  # a busy CI box must not queue

def become_subreaper():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")

def children():
    # pid -> state letter of every child of this process, zombies included
    found = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                pids = f.read().split()
        except FileNotFoundError:
            continue
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    found[int(pid)] = f.read().rpartition(")")[2].split()[0]
            except OSError:
                pass
    return found

def zombies(keep=()):
    return sorted(p for p, s in children().items() if s == "Z" and p not in keep)

def settle(keep=(), seconds=10):
    # drive the reactor until no child is left but those in keep and the
    # lifeline helper, which lives as long as the program (the orphans have
    # ended and been reaped); the zombies left but those in keep
    import untwisted
    from procwork import _lifeline
    deadline = time.monotonic() + seconds
    keep = {*keep, _lifeline.lifeline_pid()}
    while set(children()) - keep and time.monotonic() < deadline:
        untwisted.tick(0.02)
    return zombies(keep)
"""


def run_program(code: str, timeout: float = 90) -> dict[str, Any]:
    """Run PRELUDE + ``code`` in a fresh Python; its last stdout line is JSON."""
    done = run_child(PRELUDE + textwrap.dedent(code), timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_a_subreaper_is_detected_and_its_first_spawn_starts_reaping() -> None:
    report = run_program(
        """
        import procwork, untwisted
        from procwork import _orphans
        become_subreaper()
        before = _orphans.current()
        untwisted.run(procwork.run(["true"]), timeout=30)
        reaper = _orphans.current()
        print(json.dumps({"role": _orphans.reaper_role(), "before": before is None,
                          "after": reaper is not None and not reaper.all_children}))
        """
    )
    assert report == {"role": "subreaper", "before": True, "after": True}


@pytest.mark.slow
def test_an_ordinary_process_reaps_nothing_and_its_spawns_look_once() -> None:
    """Neither PID 1 nor a subreaper: reap_orphans() does nothing, and after
    the first spawn had a look, spawns don't look again."""
    report = run_program(
        """
        import procwork, untwisted
        from procwork import _orphans
        from twisted.internet import process
        untwisted.run(procwork.run(["true"]), timeout=30)
        looked = _orphans._auto
        print(json.dumps({"role": _orphans.reaper_role(), "looked": looked,
                          "explicit": procwork.reap_orphans(all_children=True),
                          "reaper": _orphans.current() is not None,
                          "hooked": _orphans._HOOK_KEY in process.reapProcessHandlers}))
        """
    )
    assert report == {
        "role": None,
        "looked": False,
        "explicit": False,
        "reaper": False,
        "hooked": False,
    }


# -- a subreaper's orphans ---------------------------------------------------------


@pytest.mark.slow
def test_a_subreaper_reaps_the_orphans_of_its_runs_and_popen_keeps_its_status() -> None:
    """Runs that leave a grandchild behind (kill_leftovers=False), 100 times:
    every orphan is reaped, while a plain subprocess.Popen child of the same
    program, and one in a new session, still return their exit status."""
    report = run_program(
        """
        import procwork, untwisted
        from procwork import _orphans
        become_subreaper()
        plain = subprocess.Popen(["sh", "-c", "exit 7"])
        leader = subprocess.Popen(["sh", "-c", "exit 5"], start_new_session=True)
        late = subprocess.Popen(["sh", "-c", "sleep 0.3; exit 9"])
        for _ in range(100):
            untwisted.run(procwork.run(["sh", "-c", "sleep 0.01 & exit 0"],
                                       kill_leftovers=False, timeout=10), timeout=30)
        left = settle(keep=(plain.pid, leader.pid, late.pid))
        reaper = _orphans.current()
        print(json.dumps({"zombies": left, "reaped": reaper.reaped,
                          "statuses": [plain.wait(10), leader.wait(10), late.wait(10)],
                          "children": children()}))
        """
    )
    assert report["zombies"] == []
    assert report["reaped"] >= 100
    assert report["statuses"] == [7, 5, 9]
    assert report["children"] == {}


@pytest.mark.slow
def test_sigchld_alone_wakes_the_reaper() -> None:
    """With the backstop an hour away, orphans are still reaped: Twisted's
    SIGCHLD handling is what wakes the reaper."""
    report = run_program(
        """
        import procwork, untwisted
        from procwork import _orphans
        _orphans._BACKSTOP = 3600.0
        become_subreaper()
        for _ in range(20):
            untwisted.run(procwork.run(["sh", "-c", "sleep 0.02 & exit 0"],
                                       kill_leftovers=False, timeout=10), timeout=30)
        print(json.dumps({"zombies": settle(seconds=20),
                          "reaped": _orphans.current().reaped}))
        """
    )
    assert report == {"zombies": [], "reaped": 20}


@pytest.mark.slow
def test_without_twisteds_sigchld_handling_the_backstop_reaps() -> None:
    """The reactor driven from another thread gets no SIGCHLD handler; the
    backstop's sweep every second reaps the orphans all the same."""
    report = run_program(
        """
        import signal
        import procwork, untwisted
        from procwork import _orphans
        become_subreaper()
        report = {}
        def work():
            for _ in range(10):
                run = procwork.run(["sh", "-c", "sleep 0.01 & exit 0"],
                                   kill_leftovers=False, timeout=10)
                untwisted.run(run, timeout=30)
            report["handler"] = signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL
            report["zombies"] = settle(seconds=20)
            report["reaped"] = _orphans.current().reaped
        thread = threading.Thread(target=work)
        thread.start()
        thread.join(timeout=60)
        print(json.dumps(report))
        """
    )
    assert report == {"handler": True, "zombies": [], "reaped": 10}


SESSION_LEADER_ORPHAN = (
    "import os, time\n"
    "r, w = os.pipe()\n"
    "if os.fork() == 0:\n"
    "    os.setsid(); os.write(w, b'x'); time.sleep(0.05); os._exit(0)\n"
    "os.read(r, 1)\n"
)
"""A Python whose child calls setsid() and outlives it: an orphan that leads
its own session, like a daemon that forked once. It exits once the child has
left its session, so the kill of its process group never reaches the child."""


@pytest.mark.slow
def test_by_default_an_orphan_that_leads_its_own_session_is_left_alone() -> None:
    """The limit of the default rule: such an orphan looks exactly like a child
    the program started with start_new_session=True, so it stays a zombie."""
    report = run_program(
        f"""
        import procwork, untwisted
        from procwork import _orphans
        become_subreaper()
        untwisted.run(procwork.run([sys.executable, "-c", {SESSION_LEADER_ORPHAN!r}],
                                   timeout=10), timeout=30)
        deadline = time.monotonic() + 1.5  # past a backstop's sweep
        while time.monotonic() < deadline:
            untwisted.tick(0.05)
        left = zombies()
        print(json.dumps({{"zombies": len(left), "reaped": _orphans.current().reaped,
                          "leads": [os.getsid(p) == p for p in left]}}))
        for pid in left:
            os.waitpid(pid, 0)
        """
    )
    assert report == {"zombies": 1, "reaped": 0, "leads": [True]}


@pytest.mark.slow
def test_all_children_reaps_every_orphan_but_never_procworks_or_twisteds_own() -> None:
    """procwork monitor's choice: every unclaimed zombie child is reaped, the
    session leader orphan too, while procwork's runs, Twisted's own
    spawnProcess children and a helper procwork claimed keep their exit
    status."""
    report = run_program(
        f"""
        import procwork, untwisted
        from twisted.internet import defer, protocol, reactor
        from procwork import _orphans
        become_subreaper()
        assert procwork.reap_orphans(all_children=True)
        class Ended(protocol.ProcessProtocol):
            def __init__(self):
                self.d = defer.Deferred()
            def processEnded(self, reason):
                self.d.callback(reason.value.exitCode)
        codes, twisted_codes = [], []
        helper = subprocess.Popen(["sh", "-c", "exit 6"])  # procwork's own helper
        _orphans.claim(helper)
        for _ in range(30):
            ended = Ended()
            reactor.spawnProcess(ended, "sh", ["sh", "-c", "sleep 0.01 & exit 4"],
                                 env=None)
            run = procwork.run(["sh", "-c", "sleep 0.01 & exit 3"],
                               kill_leftovers=False, timeout=10)
            leader = procwork.run([sys.executable, "-c", {SESSION_LEADER_ORPHAN!r}],
                                  timeout=10)
            codes.append(untwisted.run(run, timeout=30).returncode)
            untwisted.run(leader, timeout=30)
            twisted_codes.append(untwisted.run(ended.d, timeout=30))
        left = settle(keep=[helper.pid])
        print(json.dumps({{"zombies": left, "reaped": _orphans.current().reaped,
                          "helper": helper.wait(10), "codes": sorted(set(codes)),
                          "twisted": sorted(set(twisted_codes))}}))
        """
    )
    assert report["zombies"] == []
    assert report["reaped"] >= 60
    assert report["codes"] == [3]
    assert report["twisted"] == [4]
    assert report["helper"] == 6


# -- stress -------------------------------------------------------------------------


STRESS = """
import clockwork, procwork, untwisted
from procwork import _orphans
become_subreaper()
all_children = sys.argv[1] == "all"
if all_children:
    procwork.reap_orphans(all_children=True)
wrong = []

def popen_loop():
    # plain children of the same program, waited from another thread, while
    # orphans are reaped around them
    for i in range(150):
        new_session = bool(i % 2)
        child = subprocess.Popen(["sh", "-c", f"exit {7 + new_session}"],
                                 start_new_session=new_session)
        status = child.wait(timeout=30)
        if status != 7 + new_session:
            wrong.append(("popen", status))

def batch():
    runs = [procwork.run(["sh", "-c", "sleep 0.005 & sleep 0.01 & exit 3"],
                         kill_leftovers=bool(i % 2), timeout=20) for i in range(25)]
    results = yield clockwork.gather(*runs)
    wrong.extend(("run", r.returncode) for r in results if r.returncode != 3)

thread = None if all_children else threading.Thread(target=popen_loop)
if thread:
    thread.start()
for _ in range(16):
    clockwork.wrap(batch(), timeout=60)
if thread:
    thread.join(timeout=60)
left = settle()
print(json.dumps({"wrong": wrong, "zombies": left, "reaped": _orphans.current().reaped,
                  "children": children()}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["orphans", "all"])
def test_stress_hundreds_of_orphans_amid_runs_and_popen_children(mode: str) -> None:
    """400 runs, each leaving two orphans (killed or not), 25 at a time; in the
    default mode a thread starts and waits 150 plain Popen children meanwhile.
    Every status is right, and no zombie is left."""
    done = subprocess.run(
        [PY, "-c", PRELUDE + textwrap.dedent(STRESS), mode],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["wrong"] == []
    assert report["zombies"] == []
    assert report["children"] == {}
    assert report["reaped"] >= 800


# -- procwork monitor as PID 1 ---------------------------------------------------


def _unshare_prefix() -> list[str]:
    """The unshare command that works here, or skip the test saying why not."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare(1) is not installed: no new pid namespace here")
    reasons = []
    for extra in ([], ["--user", "--map-root-user"]):
        prefix = [unshare, *extra, "--pid", "--fork", "--mount-proc", "--kill-child"]
        try:
            probe = subprocess.run(
                [*prefix, "true"], capture_output=True, text=True, timeout=20
            )
        except subprocess.TimeoutExpired:
            reasons.append(f"{' '.join(prefix)} true: no answer in 20 s")
            continue
        if probe.returncode == 0:
            return prefix
        reasons.append(f"{' '.join(prefix)} true: {probe.stderr.strip()}")
    pytest.skip(
        "unshare --pid --fork --mount-proc is not permitted on this machine: "
        + "; ".join(reasons)
    )


def _children_of(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.extend(int(p) for p in f.read().split())
    except OSError:
        pass
    return found


def _state(pid: int) -> str | None:
    """The state letter of ``pid`` (``Z`` for a zombie), None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except OSError:
        return None


MONITOR_CONFIG = """
[monitor]
summary_every = 0
http = false
max_load = false

# Three grandchildren left behind every 0.1 s: when sh exits they are
# re-parented to PID 1. The kill of sh's process group makes the first a
# zombie at once; the other two have left the group (in 0.02 s, most likely)
# for sessions of their own, and end a little later: only all_children reaps
# them. The check fails so that each run is logged (and counted).
[[check]]
name = "orphans"
command = [
    "sh", "-c",
    "sleep 1 & setsid sleep 0.05 & setsid sleep 0.05 & sleep 0.02; exit 1",
]
every = 0.1

# Fails every 0.5 s, and its action has priority "critical" (the default).
[[check]]
name = "watch"
command = ["{python}", "-c", "raise SystemExit(1)"]
every = 0.5
on_failure = ["{python}", "-c", "print('fixed')"]
"""


@pytest.mark.e2e
@pytest.mark.slow
def test_procwork_monitor_as_pid_1_reaps_the_orphans_of_its_checks(
    tmp_path: Path,
) -> None:
    """In a new pid namespace, a check leaving three orphans every 0.1 s for 4 s
    (over a hundred in all): the monitor's zombies stay a handful, its critical
    actions keep starting, and it stops cleanly."""
    prefix = _unshare_prefix()
    config = tmp_path / "monitor.toml"
    config.write_text(MONITOR_CONFIG)
    stdout = (tmp_path / "stdout").open("w+")
    outer = subprocess.Popen(
        [*prefix, PY, "-m", "procwork", "monitor", str(config), "--duration", "4"],
        cwd=ROOT,
        env=child_env(),
        stdout=stdout,
        stderr=subprocess.STDOUT,
    )
    monitor: int | None = None
    try:
        deadline = time.monotonic() + 20
        while monitor is None and time.monotonic() < deadline:
            monitor = next(iter(_children_of(outer.pid)), None)
            time.sleep(0.01)
        assert monitor is not None, "unshare started no child within 20 s"
        most_zombies = 0
        deadline = time.monotonic() + 60
        while outer.poll() is None and time.monotonic() < deadline:
            states = [_state(pid) for pid in _children_of(monitor)]
            zombies = states.count("Z")
            most_zombies = max(most_zombies, zombies)
            time.sleep(0.02)
        assert outer.wait(timeout=30) == 0
    finally:
        for pid in (monitor, outer.pid):
            if pid is not None and _state(pid) is not None:
                os.kill(pid, 9)
        if outer.poll() is None:
            outer.wait(timeout=10)
        stdout.seek(0)
        output = stdout.read()
        stdout.close()
    # Each failed run left three orphans to PID 1.
    assert output.count("check orphans failed: exited 1") >= 15, output
    assert most_zombies < 10, output
    assert output.count("check watch: action exited 0") >= 3, output
    assert "monitor stopped" in output
    assert "Traceback" not in output


ENTRYPOINT = """
import subprocess, time
for _ in range(15):  # each leaves a sleep to PID 1, which is procwork run
    subprocess.run(["sh", "-c", "sleep 0.01 &"], check=True)
    # this one leads its own session: only all_children reaps it
    subprocess.run(["sh", "-c", "setsid sleep 0.01 &"], check=True)
time.sleep(1)
with open("/proc/1/task/1/children") as f:
    pids = f.read().split()
states = []
for pid in pids:
    with open(f"/proc/{pid}/stat") as f:
        states.append(f.read().rpartition(")")[2].split()[0])
print("zombies of PID 1:", states.count("Z"))
"""


@pytest.mark.slow
def test_procwork_run_as_a_containers_entrypoint_reaps_what_its_command_orphans() -> (
    None
):
    """``procwork run -- CMD`` as PID 1: the 30 grandchildren CMD leaves
    behind, half of them leading their own session, are reaped while CMD
    still runs."""
    prefix = _unshare_prefix()
    done = subprocess.run(
        [*prefix, PY, "-m", "procwork", "run", "--", PY, "-c", ENTRYPOINT],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == "zombies of PID 1: 0\n", done.stdout + done.stderr
