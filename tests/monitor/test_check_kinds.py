"""A check asks one question: a command, or one the monitor answers itself.

The kinds (disk, load, memory, file, process, python) are validated by the
spec, naming the check and the key, and by the config loader, naming the
file too. The runner schedules every kind alike: on a ``Clock``, with the
thread handed to the test (:class:`HandThreads`), timeouts and stops are
exact. Python checks run on the real reactor, every wait bounded.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

import untwisted
from procwork import ConfigError
from procwork.monitor import CheckSpec
from procwork.monitor._checks import CheckRunner, CheckStatus
from procwork.monitor._config import load_config, parse_config
from procwork.monitor._metrics import monitor_metrics
from procwork.monitor._page import render_page
from tests.support import drive_until
from tests.support.checks import FakeRun, HandThreads, race_answers_against_timeouts

# -- the spec -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "kind", "target"),
    [
        ({"command": "df -h"}, "command", "df -h"),
        ({"disk": "/"}, "disk", "/"),
        ({"load": True, "max_per_core": 2}, "load", "per core <= 2"),
        ({"memory": True}, "memory", "available >= 10 %"),
        ({"file": "/run/beat", "max_age": "2m"}, "file", "/run/beat"),
        ({"process": "nginx", "min_count": 2}, "process", "nginx"),
        ({"python": "checks:queue_ok"}, "python", "checks:queue_ok"),
    ],
)
def test_a_check_has_a_kind_and_a_target(
    keys: dict[str, Any], kind: str, target: str
) -> None:
    spec = CheckSpec("c", every=10, **keys)
    assert (spec.kind, spec.target) == (kind, target)


def test_a_check_asking_no_question_is_refused_listing_the_kinds() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^check 'c': no question: set one of command, disk, load, memory, "
        r"file, process, python, http, tcp$",
    ):
        CheckSpec("c", every=10)


def test_a_check_asking_two_questions_is_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"^check 'c': has both command and disk: a check asks"
    ):
        CheckSpec("c", "df", every=10, disk="/")


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            {"disk": "/", "max_age": 60},
            "max_age belongs to file checks, not to a disk check",
        ),
        (
            {"command": "df", "max_used_percent": 50},
            "max_used_percent belongs to disk checks, not to a command check",
        ),
        (
            {"load": True, "host": "web1"},
            "host belongs to command checks, not to a load check",
        ),
        (
            {"disk": "/", "max_used_percent": 101},
            "max_used_percent must be a percentage from 0 to 100, not 101",
        ),
        ({"disk": ""}, "disk must not be empty"),
        ({"disk": "/a\0b"}, "disk contains a NUL character"),
        ({"load": False}, "load must be true \\(leave it out for none\\), not False"),
        ({"load": True, "max_per_core": 0}, "max_per_core must be a finite number > 0"),
        ({"memory": "yes"}, "memory must be true"),
        ({"file": "/x", "max_age": "soon"}, "max_age must be a number of seconds"),
        ({"file": "/x", "max_size": "big"}, "max_size must be a number of bytes"),
        ({"file": "/x", "contains": "("}, "contains is not a valid regular expression"),
        ({"process": ""}, "process must be a non-empty string"),
        ({"process": "x", "cmdline": "[a"}, "cmdline is not a valid regular"),
        ({"process": "x", "min_count": -1}, "min_count must be a whole number >= 0"),
        (
            {"process": "x", "min_count": 3, "max_count": 2},
            "max_count must be >= min_count \\(3\\), not 2",
        ),
        ({"python": "checks"}, "python must be 'module:function' like"),
        ({"python": "my-checks:ok"}, "python must be 'module:function'"),
        ({"python": "checks:ok()"}, "python must be 'module:function'"),
    ],
)
def test_bad_keys_of_each_kind_are_refused_naming_the_check_and_the_key(
    keys: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=f"^check 'c': {message}"):
        CheckSpec("c", every=10, **keys)


def _conf(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "monitor.toml"
    path.write_text(textwrap.dedent(body))
    return path


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('disk = ""', "disk must not be empty"),
        ('python = "checks.ok"', "python must be 'module:function'"),
        ("process = 3", "process must be a non-empty string, not 3"),
        ('file = "/x"\nmax_age = "1 week"', "max_age must be a number of seconds"),
    ],
)
def test_a_config_with_a_bad_check_key_is_refused_naming_file_entry_and_key(
    tmp_path: Path, line: str, message: str
) -> None:
    path = _conf(tmp_path, f'[[check]]\nname = "c"\nevery = 10\n{line}\n')
    with pytest.raises(
        ConfigError, match=rf"^{path}: \[\[check\]\] #1 \('c'\): {message}"
    ):
        load_config(str(path))


def test_a_python_check_whose_module_is_not_beside_the_config_is_refused(
    tmp_path: Path,
) -> None:
    path = _conf(tmp_path, '[[check]]\nname = "q"\nevery = 10\npython = "qs:ok"\n')
    with pytest.raises(
        ConfigError,
        match=rf"^{path}: \[\[check\]\] #1 \('q'\) python: no module 'qs' beside "
        rf"the config file \(looked for {tmp_path}/qs.py and {tmp_path}/qs/"
        r"__init__.py\)$",
    ):
        load_config(str(path))
    (tmp_path / "qs.py").write_text("def ok():\n    return True\n")
    [check] = load_config(str(path)).checks
    assert check.module_dir == str(tmp_path)


def test_relative_paths_of_native_checks_are_relative_to_the_config(
    tmp_path: Path,
) -> None:
    config = parse_config(
        '[[check]]\nname = "beat"\nevery = 10\nfile = "run/beat"\n',
        "c.toml",
        base_dir=str(tmp_path),
    )
    assert config.checks[0].file == str(tmp_path / "run" / "beat")


def test_the_default_config_forks_nothing_to_check() -> None:
    """Its checks are native: in normal operation the monitor forks only its
    services."""
    config = load_config(None)
    assert config.checks, "the default config has checks"
    assert {check.kind for check in config.checks} <= {"disk", "load", "memory"}
    assert all(check.on_failure is None for check in config.checks)


# -- the runner ---------------------------------------------------------------


@pytest.fixture
def threads() -> HandThreads:
    return HandThreads()


def _runner(clock: Clock, threads: HandThreads, *specs: CheckSpec) -> CheckRunner:
    runner = CheckRunner(
        specs, run=FakeRun(), reactor=clock, wall_clock=clock.seconds, in_thread=threads
    )
    runner.start()
    return runner


def test_a_native_check_runs_in_a_thread_and_records_its_verdict_and_duration(
    threads: HandThreads, tmp_path: Path
) -> None:
    clock = Clock()
    runner = _runner(clock, threads, CheckSpec("beat", file=str(tmp_path), every=10))
    status = runner.status["beat"]
    assert (status.kind, status.target, status.running) == ("file", str(tmp_path), True)
    clock.advance(0.25)
    threads.finish()
    assert (status.last_outcome, status.ok, status.running) == ("ok", 1, False)
    assert status.last_detail.startswith(f"{tmp_path}: ")
    assert status.last_duration == 0.25


def test_load_and_memory_checks_need_no_thread(threads: HandThreads) -> None:
    """They are answered on the reactor's thread: at the pid limit, when no
    thread can be started, they still run."""
    clock = Clock()
    runner = _runner(
        clock,
        threads,
        CheckSpec("load", load=True, max_per_core=1e6, every=10),
        CheckSpec("memory", memory=True, min_available_percent=0, every=20),
    )
    assert threads.pending == []
    assert [s.last_outcome for s in runner.status.values()] == ["ok", "ok"]


def test_a_native_check_that_fails_is_failing_with_its_message(
    threads: HandThreads, tmp_path: Path
) -> None:
    clock = Clock()
    seen: list[str] = []
    runner = _runner(
        clock, threads, CheckSpec("beat", file=str(tmp_path / "beat"), every=10)
    )
    runner.listen(lambda event, spec, status, reminder: seen.append(event))
    threads.finish()
    status = runner.status["beat"]
    assert (status.last_outcome, status.failed, status.failing) == ("failed", 1, True)
    assert status.last_detail == f"{tmp_path / 'beat'} does not exist"
    assert seen == ["check.failed"]


def test_a_native_check_past_its_timeout_is_timed_out_and_its_thread_not_piled_on(
    threads: HandThreads, tmp_path: Path
) -> None:
    clock = Clock()
    runner = _runner(
        clock, threads, CheckSpec("nfs", disk=str(tmp_path), every=10, timeout=5)
    )
    status = runner.status["nfs"]
    clock.advance(5)
    assert (status.last_outcome, status.last_detail) == (
        "timed out",
        "timed out after 5 s",
    )
    assert (status.timed_out, status.running) == (1, False)
    clock.advance(5)  # the next run: the first call has not returned
    assert status.last_outcome == "failed"
    assert status.last_detail == (
        "its previous call has not returned after 10 s (not called again until it does)"
    )
    assert len(threads.pending) == 1, "one thread at most per check"


def test_stopping_a_native_check_in_flight_is_no_outcome(
    threads: HandThreads, tmp_path: Path
) -> None:
    clock = Clock()
    runner = _runner(clock, threads, CheckSpec("d", disk=str(tmp_path), every=10))
    runner.stop()
    threads.finish()
    clock.advance(60)
    status = runner.status["d"]
    assert (status.last_outcome, status.runs, clock.getDelayedCalls()) == (
        None,
        1,
        [],
    )


def test_a_probe_that_raises_is_an_error_saying_what_it_raised(
    threads: HandThreads, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import procwork.monitor._probes as probes

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk on fire")

    monkeypatch.setattr(probes, "disk", broken)
    clock = Clock()
    runner = _runner(clock, threads, CheckSpec("d", disk=str(tmp_path), every=10))
    threads.finish()
    status = runner.status["d"]
    assert (status.last_outcome, status.last_detail) == ("error", "error: disk on fire")


# -- python checks, on the real reactor ---------------------------------------

_CHECKS = """
import random
import time
import clockwork
from twisted.internet.defer import Deferred

def fine():
    return True

def says():
    return "queue has 812 jobs, max 500"

def both():
    return (True, "3 jobs queued")

def odd():
    return 42

def raises():
    raise ValueError("no database")

def hangs():
    time.sleep(3)
    return True

def routine():
    yield clockwork.sleep(0.01)
    return (False, "routine says no")

async def coroutine():
    await clockwork.sleep(0.01)
    return "coroutine says no"

def routine_hangs():
    yield Deferred()

def racing():
    time.sleep(random.uniform(0, 0.02))
    return True

def racing_routine():
    yield clockwork.sleep(random.uniform(0, 0.02))
    return True
"""


@pytest.fixture
def checks_dir(tmp_path: Path) -> Path:
    (tmp_path / "mychecks.py").write_text(_CHECKS)
    return tmp_path


@pytest.fixture
def real_runners() -> Iterator[list[CheckRunner]]:
    runners: list[CheckRunner] = []
    try:
        yield runners
    finally:
        for runner in runners:
            untwisted.run(runner.stop(), timeout=30)


def _python(
    runners: list[CheckRunner], directory: Path, function: str, timeout: float = 20
) -> Any:
    spec = CheckSpec(
        "py",
        python=f"mychecks:{function}",
        module_dir=str(directory),
        every=3600,
        timeout=timeout,
    )
    runner = CheckRunner([spec])
    runners.append(runner)
    runner.start()
    status = runner.status["py"]
    assert drive_until(lambda: status.last_outcome is not None, timeout=30)
    return status


@pytest.mark.parametrize(
    ("function", "outcome", "detail"),
    [
        ("fine", "ok", "ok"),
        ("says", "failed", "queue has 812 jobs, max 500"),
        ("both", "ok", "3 jobs queued"),
        ("odd", "failed", "returned 42, not a bool, a message or (bool, message)"),
        ("raises", "failed", "raised ValueError: no database"),
        ("routine", "failed", "routine says no"),
        ("coroutine", "failed", "coroutine says no"),
        ("missing", "failed", "has no function 'missing'"),
    ],
)
def test_a_python_check_is_judged_by_what_its_function_returns_or_raises(
    real_runners: list[CheckRunner],
    checks_dir: Path,
    function: str,
    outcome: str,
    detail: str,
) -> None:
    status = _python(real_runners, checks_dir, function)
    assert status.last_outcome == outcome
    assert status.last_detail.endswith(detail)
    assert status.kind == "python"


@pytest.mark.slow
@pytest.mark.parametrize("function", ["hangs", "routine_hangs"])
def test_a_python_check_that_never_returns_is_bounded_by_its_timeout(
    real_runners: list[CheckRunner], checks_dir: Path, function: str
) -> None:
    status = _python(real_runners, checks_dir, function, timeout=0.5)
    assert (status.last_outcome, status.last_detail) == (
        "timed out",
        "timed out after 0.5 s",
    )


def test_a_python_module_that_fails_to_import_says_so(
    real_runners: list[CheckRunner], tmp_path: Path
) -> None:
    (tmp_path / "mychecks.py").write_text("import no_such_module_here\n")
    status = _python(real_runners, tmp_path, "fine")
    assert status.last_outcome == "failed"
    assert status.last_detail == (
        f"cannot import {tmp_path / 'mychecks.py'}: raised ModuleNotFoundError: "
        "No module named 'no_such_module_here'"
    )


@pytest.mark.slow
@pytest.mark.parametrize("function", ["racing", "racing_routine"])
def test_hundreds_of_python_runs_racing_their_timeout_each_end_once_under_load(
    real_runners: list[CheckRunner], checks_dir: Path, function: str
) -> None:
    """Runs that end just before, at or after their timeout (0 to 20 ms
    against 10 ms), 300 of them under CPU load: each has one outcome, and a
    check never has more than one call in a thread."""
    from twisted.internet import reactor

    from procwork.monitor._checks import _reactor_threads

    threads = _reactor_threads(reactor)
    busy = [0, 0]  # now, most at once

    def counted(call: Any) -> Any:
        busy[0] += 1
        busy[1] = max(busy)

        def returned(result: object) -> object:
            busy[0] -= 1
            return result

        return threads(call).addBoth(returned)

    spec = CheckSpec(
        "race",
        python=f"mychecks:{function}",
        module_dir=str(checks_dir),
        every=0.01,
        timeout=0.01,
    )
    runner = CheckRunner([spec], in_thread=counted)
    real_runners.append(runner)
    race_answers_against_timeouts(runner, "race")
    assert busy[1] == 1


# -- metrics and the page -----------------------------------------------------


def test_metrics_give_every_kinds_duration_result_kind_and_target(
    threads: HandThreads, tmp_path: Path
) -> None:
    clock, fake = Clock(), FakeRun()
    runner = CheckRunner(
        [
            CheckSpec("beat", file=str(tmp_path), every=10),
            CheckSpec("df", "df -h", every=20),
        ],
        run=fake,
        reactor=clock,
        wall_clock=clock.seconds,
        in_thread=threads,
    )
    runner.start()
    clock.advance(0.5)
    threads.finish()
    fake.calls[0].exits(1, duration=0.25)
    families = {
        name: samples
        for name, _, _, samples in monitor_metrics(
            version="0", services={}, checks=runner.status, rules={}, queued=0
        )
    }
    assert families["procwork_check_info"] == [
        ({"check": "beat", "kind": "file", "target": str(tmp_path)}, 1.0),
        ({"check": "df", "kind": "command", "target": "df -h"}, 1.0),
    ]
    assert families["procwork_check_ok"] == [
        ({"check": "beat"}, 1.0),
        ({"check": "df"}, 0.0),
    ]
    assert families["procwork_check_last_duration_seconds"] == [
        ({"check": "beat"}, 0.5),
        ({"check": "df"}, 0.25),
    ]
    assert families["procwork_check_duration_seconds_total"] == [
        ({"check": "beat"}, 0.5),
        ({"check": "df"}, 0.25),
    ]


def test_the_page_shows_each_checks_kind_and_target() -> None:
    status = {
        "checks": {
            "disk-root": CheckStatus("disk-root", kind="disk", target="/").to_dict(),
            "queue": CheckStatus("queue", kind="python", target="jobs:ok<b>").to_dict(),
        }
    }
    page = render_page(status, now=0)
    assert "<th>asks</th>" in page
    assert '<td class="detail">disk /</td>' in page
    assert '<td class="detail">python jobs:ok&lt;b&gt;</td>' in page
