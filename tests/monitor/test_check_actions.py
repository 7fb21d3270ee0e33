"""A check's actions run once per failing episode, not on every failed run.

``on_failure``, ``restart = [...]`` and ``signal`` with ``services`` run when
the check starts failing (``failures`` runs in a row), again only at each
``repeat_every`` reminder while it stays failing, and again in the next
episode after it recovered. Driven by a ``Clock`` and a fake ``run`` (see
test_checks.py); the fork-free actions act on a fake supervisor.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from procwork import ConfigError
from procwork.monitor import CheckSpec
from procwork.monitor._checks import CheckRunner
from procwork.monitor._config import parse_config
from tests.support.checks import FakeRun
from tests.support.monitor import (
    HEADER,
    MonitorProcess,
    get,
    python_service,
    start_monitor,
    wait_for,
)


class FakeServices:
    """A Supervisor's restart and signal_service, recorded."""

    def __init__(self) -> None:
        self.done: list[tuple[str, str]] = []
        self.not_running: set[str] = set()

    def restart(self, name: str) -> Deferred[None]:
        self.done.append(("restart", name))
        return succeed(None)

    def signal_service(self, name: str, signum: int | str) -> None:
        if name in self.not_running:
            raise ProcessLookupError(f"service {name!r} is not running")
        self.done.append((f"signal {int(signum)}", name))


def runner_of(
    spec: CheckSpec, clock: Clock, fake: FakeRun, services: Any = None
) -> CheckRunner:
    runner = CheckRunner(
        [spec], run=fake, reactor=clock, wall_clock=clock.seconds, services=services
    )
    runner.start()
    return runner


def fail_runs(fake: FakeRun, clock: Clock, count: int, every: float = 10) -> None:
    """The next ``count`` runs of the check fail, one interval apart."""
    for _ in range(count):
        fake.of("check-web")[-1].exits(1)
        clock.advance(every)


def test_on_failure_waits_for_failures_runs_in_a_row_then_runs_once_per_episode() -> (
    None
):
    """One blip does not restart the app; a failing episode acts once."""
    clock, fake = Clock(), FakeRun()
    runner = runner_of(
        CheckSpec("web", "check-web", every=10, failures=2, on_failure="fix-web"),
        clock,
        fake,
    )
    fail_runs(fake, clock, 1)
    fake.of("check-web")[-1].exits(0)  # a blip, then ok
    clock.advance(10)
    fail_runs(fake, clock, 1)
    assert fake.of("fix-web") == [], "one failure is below failures = 2"
    fail_runs(fake, clock, 1)
    assert len(fake.of("fix-web")) == 1
    fake.of("fix-web")[0].exits(0)
    fail_runs(fake, clock, 30)
    assert len(fake.of("fix-web")) == 1, "30 more failed runs, the same episode"
    assert runner.status["web"].actions == 1


def test_an_action_runs_again_in_the_next_failing_episode() -> None:
    clock, fake = Clock(), FakeRun()
    runner_of(
        CheckSpec("web", "check-web", every=10, on_failure="fix-web"), clock, fake
    )
    fail_runs(fake, clock, 3)
    fake.of("fix-web")[0].exits(0)
    fake.of("check-web")[-1].exits(0)  # recovered
    clock.advance(10)
    fail_runs(fake, clock, 3)
    assert len(fake.of("fix-web")) == 2


def test_an_action_is_repeated_only_every_repeat_every_while_failing() -> None:
    clock, fake = Clock(), FakeRun()
    runner_of(
        CheckSpec("web", "check-web", every=10, repeat_every=60, on_failure="fix-web"),
        clock,
        fake,
    )
    for _ in range(18):  # failed runs at 0, 10, ..., 170 s
        fake.of("check-web")[-1].exits(1)
        for action in fake.of("fix-web"):
            if not action.deferred.called:
                action.exits(0)
        clock.advance(10)
    assert len(fake.of("fix-web")) == 3, "at 0, 60 and 120 s"


def test_restart_restarts_the_named_services_once_per_episode_without_a_fork() -> None:
    clock, fake, services = Clock(), FakeRun(), FakeServices()
    runner = runner_of(
        CheckSpec("web", "check-web", every=10, failures=2, restart=["web", "api"]),
        clock,
        fake,
        services,
    )
    fail_runs(fake, clock, 5)
    assert services.done == [("restart", "web"), ("restart", "api")]
    assert [c.argv[0] for c in fake.calls] == ["check-web"] * 6, "nothing forked"
    status = runner.status["web"]
    assert (status.actions, status.last_action) == (1, "restarted web; restarted api")


def test_signal_is_sent_to_the_services_and_one_not_running_is_reported() -> None:
    clock, fake, services = Clock(), FakeRun(), FakeServices()
    services.not_running.add("worker")
    runner = runner_of(
        CheckSpec(
            "web", "check-web", every=10, signal="HUP", services=["web", "worker"]
        ),
        clock,
        fake,
        services,
    )
    fail_runs(fake, clock, 1)
    assert services.done == [("signal 1", "web")]
    assert runner.status["web"].last_action == (
        "sent SIGHUP to web; cannot send SIGHUP to worker: "
        "service 'worker' is not running"
    )


def test_restart_and_on_failure_both_run_and_count_as_one_action() -> None:
    clock, fake, services = Clock(), FakeRun(), FakeServices()
    runner = runner_of(
        CheckSpec("web", "check-web", every=10, restart="web", on_failure="page-me"),
        clock,
        fake,
        services,
    )
    fail_runs(fake, clock, 1)
    assert services.done == [("restart", "web")]
    assert len(fake.of("page-me")) == 1
    assert runner.status["web"].actions == 1


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"signal": "HUP"}, "signal needs services"),
        ({"services": ["web"]}, "services needs signal"),
        ({"signal": "NOPE", "services": ["web"]}, "signal must be a signal number"),
        ({"restart": [3]}, "restart must be a name or a list of names"),
    ],
)
def test_a_signal_needs_services_and_a_real_signal(
    keys: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=f"check 'web': {message}"):
        CheckSpec("web", "check-web", every=10, **keys)


@pytest.mark.parametrize("key", ["restart", "services"])
def test_a_config_whose_check_acts_on_an_unknown_service_is_refused_naming_it(
    key: str, tmp_path: Path
) -> None:
    extra = 'signal = "HUP"\n' if key == "services" else ""
    text = f"""
[[service]]
name = "web"
command = "sleep 60"

[[check]]
name = "web-up"
load = true
every = 10
{key} = ["web", "wbe"]
{extra}"""
    with pytest.raises(
        ConfigError,
        match=(
            rf"^conf.toml: \[\[check\]\] #1 \('web-up'\): {key} names 'wbe', "
            r"which is not a \[\[service\]\]$"
        ),
    ):
        parse_config(text, "conf.toml", base_dir=str(tmp_path))


# -- in a real monitor ----------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.slow
def test_a_real_monitors_file_check_restarts_its_service_once_per_episode(
    tmp_path: Path, monitors: list[MonitorProcess], ours: str
) -> None:
    """A native check (no fork) restarts a real service through the
    supervisor after failures runs in a row, once, however long it fails."""
    healthy = tmp_path / "healthy"
    config = tmp_path / "monitor.toml"
    config.write_text(
        HEADER
        + python_service("web", "import time; time.sleep(600)", ours)
        + textwrap.dedent(
            f"""
            [[check]]
            name = "health"
            file = "{healthy}"
            every = 0.1
            failures = 2
            restart = ["web"]
            """
        )
    )
    monitor = start_monitor(monitors, tmp_path, config, "--http", "127.0.0.1:0")
    port = monitor.expect(r"status on http://127\.0\.0\.1:(\d+)/").group(1)
    first = int(monitor.expect(r"service 'web' started: pid (\d+)").group(1))
    monitor.expect(r"check health: restarted web")

    def restarted() -> int | None:
        web = _status(port)["services"]["web"]
        return web["pid"] if web["state"] == "RUNNING" and web["pid"] != first else None

    web = wait_for("web to run again", restarted)
    # 20 more failed runs of the same episode: no second restart.
    runs = _status(port)["checks"]["health"]["runs"]
    health = wait_for(
        "20 more runs",
        lambda: (c := _status(port)["checks"]["health"])["runs"] >= runs + 20 and c,
        timeout=60,
    )
    assert health["actions"] == 1
    assert health["last_detail"] == f"{healthy} does not exist"
    assert _status(port)["services"]["web"]["pid"] == web
    healthy.write_text("ok\n")
    monitor.expect(r"check health recovered")
    monitor.proc.terminate()
    assert monitor.proc.wait(timeout=30) == 0
    log = "\n".join(monitor.drain())
    assert log.count("restarted web") == 1
    assert "Traceback" not in log and "Unhandled" not in log


def _status(port: str) -> dict[str, Any]:
    """The monitor's status JSON, from its HTTP endpoint."""
    found: dict[str, Any] = json.loads(get(f"http://127.0.0.1:{port}/"))
    return found


def test_a_numprocs_family_in_restart_names_all_its_instances(tmp_path: Path) -> None:
    text = """
[[service]]
name = "worker-{instance}"
numprocs = 3
command = "sleep 60"

[[check]]
name = "queue"
load = true
every = 10
restart = ["worker"]
signal = "HUP"
services = ["worker-1", "worker"]
"""
    [check] = parse_config(text, "conf.toml", base_dir=str(tmp_path)).checks
    assert check.restart == ("worker-0", "worker-1", "worker-2")
    assert check.services == ("worker-1", "worker-0", "worker-2")
