"""Periodic checks: a command every N seconds, its outcome, and its failure action.

The runner is driven by a ``Clock`` and a fake ``run`` that starts nothing:
each call hands the test a Deferred to fire with a :class:`procwork.Result`
(or a failure), so intervals, overlaps and actions are exact and instant. Two
tests at the end run real ``sys.executable -c`` checks on the real reactor,
every wait bounded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

import untwisted
from procwork import ConfigError, SpawnError
from procwork.monitor import CheckSpec
from procwork.monitor._checks import CheckRunner, CheckStatus
from tests.support import PY, drive_until
from tests.support.checks import Call, FakeRun


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake() -> FakeRun:
    return FakeRun()


@pytest.fixture
def make(clock: Clock, fake: FakeRun) -> Callable[..., CheckRunner]:
    """Builds a started runner of the given specs on the clock and the fake."""

    def make(*specs: CheckSpec) -> CheckRunner:
        runner = CheckRunner(specs, run=fake, reactor=clock, wall_clock=lambda: 1e9)
        runner.start()
        return runner

    return make


def disk(**changes: Any) -> CheckSpec:
    """A check named "disk" running ``check-disk`` every 10 s."""
    return CheckSpec("disk", ["check-disk"], **{"every": 10, **changes})


# -- intervals ----------------------------------------------------------------


def test_a_check_runs_at_start_and_then_every_interval(
    make: Callable[..., CheckRunner], clock: Clock, fake: FakeRun
) -> None:
    runner = make(disk())
    assert len(fake.calls) == 1
    fake.calls[0].exits(0)
    clock.advance(9.9)
    assert len(fake.calls) == 1
    clock.advance(0.1)
    assert len(fake.calls) == 2
    fake.calls[1].exits(0)
    clock.advance(10)
    assert len(fake.calls) == 3
    assert runner.status["disk"].runs == 3


def test_a_check_runs_its_command_with_its_timeout_and_high_priority_by_default(
    make: Callable[..., CheckRunner], fake: FakeRun
) -> None:
    make(disk(every=30))
    [call] = fake.calls
    assert (call.argv, call.timeout, call.priority) == (["check-disk"], 30.0, "high")


def test_a_check_runs_with_the_timeout_and_priority_it_is_given(
    make: Callable[..., CheckRunner], fake: FakeRun
) -> None:
    make(disk(timeout=2.5, priority="low"))
    [call] = fake.calls
    assert (call.timeout, call.priority) == (2.5, "low")


def test_a_check_still_running_at_its_next_interval_is_skipped_and_the_skip_counted(
    make: Callable[..., CheckRunner], clock: Clock, fake: FakeRun
) -> None:
    runner = make(disk(timeout=60))
    clock.advance(10)
    clock.advance(10)
    status = runner.status["disk"]
    assert len(fake.calls) == 1, "a check never overlaps itself"
    assert (status.runs, status.skipped, status.running) == (1, 2, True)
    fake.calls[0].exits(0)
    assert not status.running
    clock.advance(10)
    assert len(fake.calls) == 2
    assert (status.runs, status.skipped) == (2, 2)


def test_each_check_keeps_its_own_interval(
    make: Callable[..., CheckRunner], clock: Clock, fake: FakeRun
) -> None:
    make(disk(every=10), CheckSpec("load", ["check-load"], every=3))
    for call in fake.calls:
        call.exits(0)
    clock.advance(3)
    for call in fake.calls[2:]:
        call.exits(0)
    clock.advance(3)
    for call in fake.calls[3:]:
        call.exits(0)
    clock.advance(4)
    assert (len(fake.of("check-disk")), len(fake.of("check-load"))) == (2, 4)


def test_starting_a_started_runner_again_does_not_double_its_intervals(
    make: Callable[..., CheckRunner], clock: Clock, fake: FakeRun
) -> None:
    runner = make(disk())
    runner.start()
    fake.calls[0].exits(0)
    clock.advance(10)
    assert len(fake.calls) == 2


# -- outcomes -----------------------------------------------------------------


def test_an_ok_run_is_recorded_with_its_duration_output_and_start_time(
    make: Callable[..., CheckRunner], fake: FakeRun
) -> None:
    runner = make(disk())
    fake.calls[0].exits(0, stdout=b"/ is 9% full\n", duration=0.125)
    status = runner.status["disk"]
    assert status.last_outcome == "ok"
    assert (status.ok, status.failed, status.timed_out) == (1, 0, 0)
    assert status.last_duration == 0.125
    assert status.last_output == "/ is 9% full\n"
    assert status.last_detail == "exited 0"
    assert status.last_started == 1e9


def test_a_non_zero_exit_is_a_failure_recorded_with_how_it_ended(
    make: Callable[..., CheckRunner], fake: FakeRun
) -> None:
    runner = make(disk())
    fake.calls[0].exits(3, stderr=b"/ is 97% full\n", duration=0.5)
    status = runner.status["disk"]
    assert (status.last_outcome, status.last_detail) == ("failed", "exited 3")
    assert (status.ok, status.failed, status.timed_out) == (0, 1, 0)
    assert (status.last_duration, status.last_output) == (0.5, "/ is 97% full\n")


def test_a_run_killed_by_its_timeout_is_recorded_as_timed_out_not_as_failed(
    make: Callable[..., CheckRunner], fake: FakeRun
) -> None:
    runner = make(disk(timeout=5))
    fake.calls[0].exits(-15, timed_out=True, duration=5.0)
    status = runner.status["disk"]
    assert status.last_outcome == "timed out"
    assert status.last_detail == "killed by SIGTERM after timeout 5 s"
    assert (status.failed, status.timed_out) == (0, 1)


def test_a_command_that_cannot_start_is_an_error_recorded_with_the_reason(
    make: Callable[..., CheckRunner], fake: FakeRun
) -> None:
    runner = make(disk())
    fake.calls[0].fails(
        SpawnError(2, "cannot run 'check-disk': 'check-disk' was not found")
    )
    status = runner.status["disk"]
    assert status.last_outcome == "error"
    assert status.last_detail == "cannot run 'check-disk': 'check-disk' was not found"
    assert (status.failed, status.last_duration, status.running) == (1, None, False)


def test_a_run_function_that_raises_is_an_error_and_the_check_keeps_its_interval(
    make: Callable[..., CheckRunner], clock: Clock, fake: FakeRun
) -> None:
    fake.raises = ValueError("procwork.run('check-disk'): timeout must be >= 0")
    runner = make(disk())
    status = runner.status["disk"]
    assert (status.last_outcome, status.runs, status.running) == ("error", 1, False)
    assert "timeout must be >= 0" in status.last_detail
    fake.raises = None
    clock.advance(10)
    assert len(fake.calls) == 1 and status.runs == 2


def test_the_output_kept_is_the_tail_of_stdout_then_stderr(
    make: Callable[..., CheckRunner], fake: FakeRun
) -> None:
    runner = make(disk())
    fake.calls[0].exits(1, stdout=b"o" * 1000, stderr=b"the end\n")
    output = runner.status["disk"].last_output
    assert len(output) == 400
    assert output.endswith("o" * 392 + "the end\n")


def test_output_that_is_not_utf8_is_kept_with_replacement_characters(
    make: Callable[..., CheckRunner], fake: FakeRun
) -> None:
    runner = make(disk())
    fake.calls[0].exits(0, stdout=b"caf\xe9\n")
    assert runner.status["disk"].last_output == "caf\ufffd\n"


def test_a_check_that_recovers_is_ok_again_and_keeps_its_counts(
    make: Callable[..., CheckRunner], clock: Clock, fake: FakeRun
) -> None:
    runner = make(disk())
    fake.calls[0].exits(1)
    clock.advance(10)
    fake.calls[1].exits(0)
    status = runner.status["disk"]
    assert (status.last_outcome, status.runs, status.ok, status.failed) == (
        "ok",
        2,
        1,
        1,
    )


def test_consecutive_failures_count_runs_in_a_row_that_were_not_ok_until_one_is(
    make: Callable[..., CheckRunner], fake: FakeRun, clock: Clock
) -> None:
    runner = make(disk())
    fake.calls[0].exits(1)
    clock.advance(10)
    fake.calls[1].exits(2)
    status = runner.status["disk"]
    assert (status.consecutive_failures, status.last_success) == (2, None)
    clock.advance(10)
    fake.calls[2].exits(0)
    assert (status.consecutive_failures, status.last_success) == (0, 1e9)


def test_a_check_status_is_json_ready_without_private_fields(
    make: Callable[..., CheckRunner], fake: FakeRun
) -> None:
    runner = make(disk())
    running = runner.status["disk"].to_dict()
    assert running["running"] is True
    assert not any(key.startswith("_") for key in running)
    fake.calls[0].exits(0, stdout=b"fine\n")
    done = json.loads(json.dumps(runner.status["disk"].to_dict()))
    assert done == {
        "name": "disk",
        "kind": "command",
        "target": "check-disk",
        "runs": 1,
        "ok": 1,
        "failed": 0,
        "timed_out": 0,
        "skipped": 0,
        "actions": 0,
        "running": False,
        "last_outcome": "ok",
        "last_detail": "exited 0",
        "last_duration": 0.25,
        "total_duration": 0.25,
        "last_output": "fine\n",
        "last_started": 1e9,
        "last_success": 1e9,
        "consecutive_failures": 0,
        "action_running": False,
        "last_action": None,
        "failing": False,
        "failing_since": None,
    }


def test_a_new_check_status_has_no_outcome_yet() -> None:
    status = CheckStatus("disk")
    assert (status.runs, status.last_outcome, status.last_started) == (0, None, None)


# -- the failure action -------------------------------------------------------


def test_a_failed_check_runs_its_action_critical_by_default(
    make: Callable[..., CheckRunner], fake: FakeRun
) -> None:
    runner = make(disk(on_failure=["clean-tmp", "--now"]))
    fake.calls[0].exits(1)
    [action] = fake.of("clean-tmp")
    assert (action.argv, action.priority, action.timeout) == (
        ["clean-tmp", "--now"],
        "critical",
        60.0,
    )
    status = runner.status["disk"]
    assert (status.actions, status.action_running) == (1, True)
    action.exits(0)
    assert (status.action_running, status.last_action) == (False, "exited 0")


def test_an_action_runs_with_the_priority_and_timeout_it_is_given(
    make: Callable[..., CheckRunner], fake: FakeRun
) -> None:
    make(disk(on_failure="clean-tmp", on_failure_priority="high", action_timeout=7))
    fake.calls[0].exits(1)
    [action] = fake.of("clean-tmp")
    assert (action.priority, action.timeout) == ("high", 7.0)


def test_an_ok_check_runs_no_action(
    make: Callable[..., CheckRunner], fake: FakeRun
) -> None:
    runner = make(disk(on_failure="clean-tmp"))
    fake.calls[0].exits(0)
    assert fake.of("clean-tmp") == []
    assert runner.status["disk"].actions == 0


@pytest.mark.parametrize(
    "ending",
    [
        pytest.param(lambda call: call.exits(1), id="failed"),
        pytest.param(lambda call: call.exits(-15, timed_out=True), id="timed-out"),
        pytest.param(lambda call: call.fails(SpawnError(2, "not found")), id="error"),
    ],
)
def test_every_kind_of_failure_runs_the_action(
    make: Callable[..., CheckRunner],
    fake: FakeRun,
    ending: Callable[[Call], None],
) -> None:
    make(disk(on_failure="clean-tmp"))
    ending(fake.calls[0])
    assert len(fake.of("clean-tmp")) == 1


def test_an_action_never_overlaps_itself(fake: FakeRun, clock: Clock) -> None:
    """A reminder's action is not started while the last one still runs."""
    runner = CheckRunner(
        [disk(on_failure="clean-tmp", repeat_every=10)],
        run=fake,
        reactor=clock,
        wall_clock=clock.seconds,
    )
    runner.start()
    fake.calls[0].exits(1)
    clock.advance(10)
    fake.calls[-1].exits(1)
    assert len(fake.of("clean-tmp")) == 1, "the first action is still running"
    status = runner.status["disk"]
    assert (status.failed, status.actions) == (2, 1)
    fake.of("clean-tmp")[0].exits(0)
    clock.advance(10)
    fake.of("check-disk")[-1].exits(1)
    assert len(fake.of("clean-tmp")) == 2
    assert status.actions == 2


def test_an_action_that_fails_or_cannot_start_is_recorded(
    make: Callable[..., CheckRunner], clock: Clock, fake: FakeRun
) -> None:
    runner = make(disk(on_failure="clean-tmp"))
    fake.calls[0].exits(1)
    fake.of("clean-tmp")[0].exits(2)
    status = runner.status["disk"]
    assert status.last_action == "exited 2"
    clock.advance(10)
    fake.of("check-disk")[-1].exits(0)  # recovered: the next failure acts again
    clock.advance(10)
    fake.of("check-disk")[-1].exits(1)
    fake.of("clean-tmp")[-1].fails(SpawnError(2, "cannot run 'clean-tmp'"))
    assert status.last_action == "error: cannot run 'clean-tmp'"
    assert not status.action_running


def test_an_action_the_run_function_refuses_is_recorded_as_an_error(
    make: Callable[..., CheckRunner], fake: FakeRun
) -> None:
    runner = make(disk(on_failure="clean-tmp"))
    fake.raises = TypeError("bad argument")
    fake.calls[0].exits(1)
    status = runner.status["disk"]
    assert (status.last_action, status.action_running) == ("error: bad argument", False)


# -- stopping -----------------------------------------------------------------


def test_stop_cancels_the_runs_in_flight_and_ends_the_intervals(
    make: Callable[..., CheckRunner], clock: Clock, fake: FakeRun
) -> None:
    runner = make(disk(), CheckSpec("load", ["check-load"], every=3))
    stopped = runner.stop()
    assert [c.cancelled for c in fake.calls] == [True, True]
    assert stopped.called
    clock.advance(60)
    assert len(fake.calls) == 2, "no interval runs after stop()"


def test_a_cancelled_run_is_not_an_outcome_and_triggers_no_action(
    make: Callable[..., CheckRunner], fake: FakeRun
) -> None:
    runner = make(disk(on_failure="clean-tmp"))
    runner.stop()
    status = runner.status["disk"]
    assert (status.last_outcome, status.failed, status.running) == (None, 0, False)
    assert fake.of("clean-tmp") == []


def test_stop_cancels_an_action_in_flight(
    make: Callable[..., CheckRunner], fake: FakeRun
) -> None:
    runner = make(disk(on_failure="clean-tmp"))
    fake.calls[0].exits(1)
    runner.stop()
    [action] = fake.of("clean-tmp")
    assert action.cancelled
    status = runner.status["disk"]
    assert (status.action_running, status.last_action) == (False, None)


def test_stop_leaves_finished_runs_alone_and_its_deferred_fires(
    make: Callable[..., CheckRunner], fake: FakeRun
) -> None:
    runner = make(disk())
    fake.calls[0].exits(0)
    stopped = runner.stop()
    assert stopped.called and not fake.calls[0].cancelled


def test_a_stopped_runner_can_be_started_again(
    make: Callable[..., CheckRunner], fake: FakeRun
) -> None:
    runner = make(disk())
    runner.stop()
    runner.start()
    assert len(fake.calls) == 2
    assert runner.status["disk"].runs == 2


# -- a new set of checks (a reload) ------------------------------------------------


def test_an_update_leaves_an_unchanged_check_on_its_schedule_with_its_state(
    make: Callable[..., CheckRunner], clock: Clock, fake: FakeRun
) -> None:
    """Same name, same spec: no extra run, its run in flight goes on, and its
    failure count and failing state are kept, so it is not said to fail
    again, and its recovery is said."""
    load = CheckSpec("load", ["check-load"], every=20)
    runner = make(disk(failures=2), load)
    seen = _events(runner)
    for _ in range(2):
        fake.of("check-disk")[-1].exits(1)
        clock.advance(10)
    status = runner.status["disk"]
    assert (status.consecutive_failures, status.failing) == (2, True)
    assert seen == [("check.failed", False)]
    clock.advance(5)
    stopped = runner.update(
        [disk(failures=2), CheckSpec("load", "check-load", every=5)]
    )
    assert stopped.called
    assert runner.status["disk"] is status
    [in_flight] = fake.of("check-disk")[-1:]
    assert not in_flight.cancelled
    assert len(fake.of("check-disk")) == 3, "no extra run"
    in_flight.exits(1)
    assert (status.consecutive_failures, status.failing) == (3, True)
    assert seen == [("check.failed", False)]
    clock.advance(5)
    assert len(fake.of("check-disk")) == 4, "the next run on its old schedule"
    fake.of("check-disk")[-1].exits(0)
    assert seen[-1] == ("check.recovered", False)


def test_an_update_replaces_a_changed_check_with_a_fresh_one(
    make: Callable[..., CheckRunner], clock: Clock, fake: FakeRun
) -> None:
    """Its run in flight is cancelled, as stop() cancels it, and the new spec
    runs at once with a new status."""
    runner = make(disk())
    fake.calls[0].exits(1)
    clock.advance(10)
    old = runner.status["disk"]
    runner.update([disk(timeout=3)])
    assert fake.calls[1].cancelled
    assert (fake.calls[2].argv, fake.calls[2].timeout) == (["check-disk"], 3)
    new = runner.status["disk"]
    assert new is not old
    assert (new.runs, new.failed, new.consecutive_failures, new.failing) == (
        1,
        0,
        0,
        False,
    )
    clock.advance(10)
    assert len(fake.calls) == 3, "the old interval has ended"


def test_an_update_starts_added_checks_and_stops_and_forgets_removed_ones(
    make: Callable[..., CheckRunner], clock: Clock, fake: FakeRun
) -> None:
    runner = make(disk(), CheckSpec("load", ["check-load"], every=20))
    stopped = runner.update(
        [CheckSpec("mem", ["check-mem"], every=10, start_delay=2), disk()]
    )
    assert stopped.called
    assert [c.cancelled for c in fake.of("check-load")] == [True]
    assert list(runner.status) == ["mem", "disk"]
    clock.advance(2)
    assert len(fake.of("check-mem")) == 1
    clock.advance(60)
    assert len(fake.of("check-load")) == 1


def test_an_update_before_start_starts_nothing_until_start(
    fake: FakeRun, clock: Clock
) -> None:
    runner = CheckRunner([disk()], run=fake, reactor=clock)
    runner.update([disk(), CheckSpec("load", ["check-load"], every=20)])
    assert fake.calls == []
    runner.start()
    assert [c.argv[0] for c in fake.calls] == ["check-disk", "check-load"]


def test_an_update_with_two_checks_of_one_name_is_refused_and_changes_nothing(
    make: Callable[..., CheckRunner], fake: FakeRun
) -> None:
    runner = make(disk())
    with pytest.raises(ConfigError, match=r"^check 'disk' is defined twice$"):
        runner.update([disk(), disk(every=5)])
    assert list(runner.status) == ["disk"] and not fake.calls[0].cancelled


# -- validation ---------------------------------------------------------------


def test_a_command_string_is_split_like_a_shell_would_but_never_run_by_one() -> None:
    spec = CheckSpec("df", "df -h '/var/lib/my data'", every=5)
    assert spec.command == ("df", "-h", "/var/lib/my data")


def test_timeout_defaults_to_the_interval_and_numbers_become_floats() -> None:
    spec = CheckSpec("df", ["df"], every=5, on_failure="fix it")
    assert (spec.every, spec.timeout, spec.action_timeout) == (5.0, 5.0, 60.0)
    assert spec.on_failure == ("fix", "it")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"command": []}, r"check 'df': command is empty"),
        ({"command": ""}, r"check 'df': command is empty"),
        ({"command": ["df", 3]}, r"check 'df': command must be a string or a list"),
        ({"command": "df 'unclosed"}, r"check 'df': command .* cannot be split"),
        ({"every": 0}, r"check 'df': every must be a finite number > 0, not 0$"),
        ({"every": -1}, r"check 'df': every must be a finite number > 0, not -1$"),
        ({"every": "10"}, r"check 'df': every must be a number of seconds"),
        ({"every": True}, r"check 'df': every must be a number of seconds"),
        ({"timeout": 0}, r"check 'df': timeout must be a finite number > 0"),
        ({"priority": "urgent"}, r"check 'df': priority must be one of 'critical', "),
        (
            {"on_failure_priority": "asap"},
            r"check 'df': on_failure_priority must be one of .*, not 'asap'",
        ),
        ({"on_failure": []}, r"check 'df': on_failure is empty"),
        ({"action_timeout": -5}, r"check 'df': action_timeout must be a.* > 0"),
    ],
)
def test_an_invalid_check_is_rejected_naming_the_check_and_the_field(
    changes: dict[str, Any], message: str
) -> None:
    fields: dict[str, Any] = {"command": ["df"], "every": 10, **changes}
    with pytest.raises(ConfigError, match=message):
        CheckSpec("df", **fields)


@pytest.mark.parametrize("name", ["", None, 7])
def test_a_check_needs_a_name(name: Any) -> None:
    with pytest.raises(ConfigError, match=r"check name must be a non-empty string"):
        CheckSpec(name, ["df"], every=10)


def test_two_checks_of_one_name_are_rejected() -> None:
    with pytest.raises(ConfigError, match=r"check 'df' is defined twice"):
        CheckRunner(
            [CheckSpec("df", "df", every=1)] * 2, run=FakeRun(), reactor=Clock()
        )


# -- real processes on the real reactor ---------------------------------------


@pytest.fixture
def real_runner() -> Iterator[list[CheckRunner]]:
    """Runners made by the test; each is stopped afterwards."""
    runners: list[CheckRunner] = []
    try:
        yield runners
    finally:
        for runner in runners:
            untwisted.run(runner.stop(), timeout=30)


def test_a_real_failing_check_runs_its_action(
    real_runner: list[CheckRunner], tmp_path: Path
) -> None:
    marker = tmp_path / "action-ran"
    write = f"open({str(marker)!r}, 'w').write('fixed')"
    runner = CheckRunner(
        [
            CheckSpec(
                "always-fails",
                [PY, "-c", "import sys; sys.exit(1)"],
                every=60,
                timeout=20,
                on_failure=[PY, "-c", write],
            )
        ]
    )
    real_runner.append(runner)
    runner.start()
    status = runner.status["always-fails"]
    assert drive_until(lambda: status.last_action is not None, timeout=30)
    assert marker.read_text() == "fixed"
    assert (status.last_outcome, status.last_detail, status.failed) == (
        "failed",
        "exited 1",
        1,
    )
    assert status.last_action == "exited 0"


@pytest.mark.slow
def test_a_real_check_over_its_timeout_is_killed_and_recorded_as_timed_out(
    real_runner: list[CheckRunner],
) -> None:
    runner = CheckRunner(
        [
            CheckSpec(
                "hangs",
                [PY, "-c", "import time; print('hanging', flush=True); time.sleep(60)"],
                every=60,
                timeout=0.5,
            )
        ]
    )
    real_runner.append(runner)
    runner.start()
    status = runner.status["hangs"]
    assert drive_until(lambda: status.last_outcome is not None, timeout=30)
    assert status.last_outcome == "timed out"
    assert status.last_detail == "killed by SIGTERM after timeout 0.5 s"
    assert status.last_output == "hanging\n"
    assert status.last_duration is not None and status.last_duration >= 0.5


# -- state changes: failing, reminders, recovered ----------------------------


def _events(runner: CheckRunner) -> list[tuple[str, bool]]:
    seen: list[tuple[str, bool]] = []
    runner.listen(lambda event, spec, status, reminder: seen.append((event, reminder)))
    return seen


def test_a_check_is_failing_after_failures_runs_in_a_row_and_says_so_once(
    make: Callable[..., CheckRunner], fake: FakeRun, clock: Clock
) -> None:
    runner = make(CheckSpec("disk", "df", every=10, failures=3))
    seen = _events(runner)
    for i in range(6):
        fake.calls[i].exits(1)
        clock.advance(10)
    assert seen == [("check.failed", False)]
    assert runner.status["disk"].failing is True


def test_a_failing_check_recovers_once_at_its_next_ok_run(
    make: Callable[..., CheckRunner], fake: FakeRun, clock: Clock
) -> None:
    runner = make(CheckSpec("disk", "df", every=10))
    seen = _events(runner)
    fake.calls[0].exits(1)
    clock.advance(10)
    fake.calls[1].exits(0)
    clock.advance(10)
    fake.calls[2].exits(0)
    assert seen == [("check.failed", False), ("check.recovered", False)]
    assert runner.status["disk"].failing is False


def test_a_failure_shorter_than_failures_runs_is_no_event(
    make: Callable[..., CheckRunner], fake: FakeRun, clock: Clock
) -> None:
    runner = make(CheckSpec("disk", "df", every=10, failures=2))
    seen = _events(runner)
    fake.calls[0].exits(1)
    clock.advance(10)
    fake.calls[1].exits(0)
    assert seen == []


def test_a_failing_check_is_repeated_every_repeat_every_seconds_not_every_run(
    fake: FakeRun, clock: Clock
) -> None:
    runner = CheckRunner(
        [CheckSpec("disk", "df", every=10, repeat_every=30)],
        run=fake,
        reactor=clock,
        wall_clock=clock.seconds,
    )
    runner.start()
    seen = _events(runner)
    for i in range(10):  # runs at 0, 10, ..., 90
        fake.calls[i].exits(1)
        clock.advance(10)
    assert seen == [("check.failed", False)] + [("check.failed", True)] * 3


def test_a_check_with_start_delay_first_runs_after_it(
    make: Callable[..., CheckRunner], fake: FakeRun, clock: Clock
) -> None:
    make(CheckSpec("disk", "df", every=10, start_delay=25))
    assert fake.calls == []
    clock.advance(24)
    assert fake.calls == []
    clock.advance(1)
    assert len(fake.calls) == 1


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("failures", 0, "failures must be a whole number >= 1, not 0"),
        ("repeat_every", -1, "repeat_every must be a finite number >= 0, not -1"),
        ("start_delay", "soon", "start_delay must be a number of seconds"),
    ],
)
def test_bad_alert_keys_of_a_check_are_rejected(
    key: str, value: object, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        fields: dict[str, Any] = {key: value}
        CheckSpec("disk", "df", every=10, **fields)
