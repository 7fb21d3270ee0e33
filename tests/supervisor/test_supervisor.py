"""Supervised services: procmon's restarts and backoff, plus what users expect.

Restart, backoff and kill timing run on ``twisted.internet.task.Clock`` with
fake processes (as procmon's own tests do), so they are exact and instant.
The spec's checks are ``test_spec.py``, output and status
``test_status_and_output.py``, and real children on the real reactor
``test_real_services.py``.
"""

from __future__ import annotations

import signal
import textwrap
from typing import Any

import pytest
from twisted.internet.task import Clock

from procwork import ConfigError, ProcworkError
from procwork.supervisor import (
    NoSuchService,
    ServiceState,
    Supervisor,
)
from tests.support import (
    run_child,
)
from tests.support.fake_supervisor import FakeProcess, FakeWorld, lines, spec, state

# -- fakes ---------------------------------------------------------------------


# -- starting ------------------------------------------------------------------


def test_the_supervisor_is_built_on_procmons_ProcessMonitor(sup: Supervisor) -> None:
    from twisted.runner.procmon import ProcessMonitor

    assert isinstance(sup._procmon.process_monitor, ProcessMonitor)


def test_services_start_in_the_order_they_were_added(
    sup: Supervisor, world: FakeWorld
) -> None:
    for name in ("db", "cache", "web"):
        sup.add(spec(name))
    assert world.processes == []
    sup.start()
    assert [p.args[-1] for p in world.processes] == ["db", "cache", "web"]


def test_each_service_gets_its_env_cwd_and_nice_in_its_own_process_group(
    sup: Supervisor, world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """env is added to the supervisor's own environment unless inherit_env=False."""
    monkeypatch.setenv("FROM_PARENT", "yes")
    sup.add(spec("plain"))
    sup.add(spec("added", env={"PORT": "8080"}, cwd="/tmp", nice=5))
    sup.add(spec("alone", env={"PORT": "8081"}, inherit_env=False))
    sup.start()
    plain, added, alone = world.processes
    assert plain.env is None  # inherits
    assert added.env is not None and added.env["PORT"] == "8080"
    assert added.env["FROM_PARENT"] == "yes"
    assert (added.cwd, added.nice) == ("/tmp", 5)
    assert alone.env == {"PORT": "8081"}
    assert not plain.stdin
    assert all(p.kill_group_on_exit for p in world.processes)


def test_a_service_is_STARTING_until_it_has_been_up_start_seconds_then_RUNNING(
    sup: Supervisor, clock: Clock, world: FakeWorld
) -> None:
    sup.add(spec("web", start_seconds=3))
    assert state(sup, "web") == "STOPPED"
    sup.start()
    assert state(sup, "web") is ServiceState.STARTING
    clock.advance(2.9)
    assert state(sup, "web") is ServiceState.STARTING
    clock.advance(0.1)
    status = sup.status()["web"]
    assert status.state is ServiceState.RUNNING
    assert status.pid == world.current("web").pid
    assert status.uptime == 3.0


def test_a_service_added_to_a_started_supervisor_starts_at_once(
    sup: Supervisor, world: FakeWorld
) -> None:
    sup.start()
    sup.add(spec("late"))
    assert state(sup, "late") is ServiceState.STARTING
    assert len(world.of("late")) == 1


def test_adding_a_name_twice_or_after_an_unknown_service_is_a_ConfigError(
    sup: Supervisor,
) -> None:
    sup.add(spec("web"))
    with pytest.raises(ConfigError, match="service 'web': a service of that name"):
        sup.add(spec("web"))
    with pytest.raises(ConfigError, match="after names 'db', which has not been added"):
        sup.add(spec("api", after="db"))
    with pytest.raises(TypeError, match="takes a ServiceSpec"):
        sup.add("web")  # type: ignore[arg-type]


def test_unknown_service_names_raise_NoSuchService_listing_the_known_ones(
    sup: Supervisor,
) -> None:
    sup.add(spec("web"))
    with pytest.raises(
        NoSuchService, match=r"no service named 'wbe' \(services: 'web'\)"
    ):
        sup.start_service("wbe")
    for method in (sup.stop_service, sup.restart, sup.remove, sup.wait_for):
        with pytest.raises(KeyError):
            method("wbe")
    assert issubclass(NoSuchService, ProcworkError)


# -- restarting: procmon's backoff ---------------------------------------------


def test_a_service_that_exits_quickly_is_restarted_after_a_delay_doubling_to_the_max(
    sup: Supervisor, clock: Clock, world: FakeWorld
) -> None:
    """procmon's backoff: crashes double the delay up to max_restart_delay."""
    sup.add(
        spec(
            "web",
            min_restart_delay=1,
            max_restart_delay=4,
            start_seconds=10,
            max_restarts=None,
        )
    )
    sup.start()
    delays = []
    for _ in range(5):
        world.current("web").exit(1)
        status = sup.status()["web"]
        assert status.state is ServiceState.BACKOFF
        assert status.restart_in is not None
        delays.append(status.restart_in)
        clock.advance(status.restart_in)
        assert state(sup, "web") is ServiceState.STARTING
    assert delays == [1, 2, 4, 4, 4]
    assert sup.status()["web"].restarts == 5


def test_a_crash_after_a_run_of_stable_seconds_restarts_at_once_and_resets_the_backoff(
    sup: Supervisor, clock: Clock, world: FakeWorld, events: list[dict[str, Any]]
) -> None:
    sup.add(spec("web", min_restart_delay=1, start_seconds=5, stable_seconds=60))
    sup.start()
    world.current("web").exit(1)
    clock.advance(1)
    world.current("web").exit(1)  # quick again: the next delay is 2 s
    clock.advance(2)
    clock.advance(60)  # now it has run stable_seconds
    world.current("web").exit(1)
    assert sup.status()["web"].restart_in == 0
    assert "service 'web' exited 1 after 60 s; restarting now" in lines(events)
    clock.advance(0)
    assert len(world.of("web")) == 4
    world.current("web").exit(1)  # quick: back to the minimum delay
    assert sup.status()["web"].restart_in == 1


def test_a_service_that_keeps_crashing_is_given_up_as_FATAL_after_max_restarts_in_the_window(  # noqa: E501
    sup: Supervisor, clock: Clock, world: FakeWorld, events: list[dict[str, Any]]
) -> None:
    sup.add(spec("web", max_restarts=3, restart_window=60, min_restart_delay=1))
    sup.start()
    for _ in range(3):
        world.current("web").exit(2)
        clock.advance(sup.status()["web"].restart_in or 0)
    world.current("web").exit(2)
    status = sup.status()["web"]
    assert status.state is ServiceState.FATAL
    assert (status.restarts, status.last_exit, status.returncode) == (3, "exited 2", 2)
    assert clock.getDelayedCalls() == []  # no restart pending
    clock.advance(3600)
    assert len(world.of("web")) == 4
    assert lines(events)[-1] == (
        "service 'web' exited 2 after 0 s; giving up, it is FATAL: 4 unexpected exits "
        "within 60 s, more than max_restarts=3. Fix it, then start it again."
    )
    assert events[-1]["log_level"].name == "critical"


def test_crashes_spread_wider_than_the_window_never_make_a_service_FATAL(
    sup: Supervisor, clock: Clock, world: FakeWorld
) -> None:
    sup.add(spec("web", max_restarts=2, restart_window=30, stable_seconds=10))
    sup.start()
    for _ in range(10):
        clock.advance(20)  # up 20 s, stable, then crashes; restarted at once
        world.current("web").exit(1)
        clock.advance(0)
    status = sup.status()["web"]
    assert status.state is ServiceState.STARTING
    assert status.restarts == 10


def test_max_restarts_0_gives_up_at_the_first_exit(
    sup: Supervisor, world: FakeWorld, events: list[dict[str, Any]]
) -> None:
    sup.add(spec("web", max_restarts=0))
    sup.start()
    world.current("web").exit(1)
    assert state(sup, "web") is ServiceState.FATAL
    assert "max_restarts=0 allows no restart" in lines(events)[-1]


def test_a_service_killed_by_a_signal_says_so_and_is_restarted(
    sup: Supervisor, world: FakeWorld
) -> None:
    sup.add(spec("web", restart="on-failure"))
    sup.start()
    world.current("web").exit(signal=signal.SIGKILL)
    status = sup.status()["web"]
    assert status.state is ServiceState.BACKOFF
    assert (status.last_exit, status.returncode) == ("killed by SIGKILL", -9)


@pytest.mark.parametrize("code", [0, 3])
def test_restart_on_failure_does_not_restart_a_service_that_exits_with_a_success_code(
    sup: Supervisor,
    clock: Clock,
    world: FakeWorld,
    events: list[dict[str, Any]],
    code: int,
) -> None:
    sup.add(spec("job", restart="on-failure", success_exit_codes={0, 3}))
    sup.start()
    world.current("job").exit(code)
    assert state(sup, "job") is ServiceState.EXITED
    assert clock.getDelayedCalls() == []
    assert lines(events)[-1] == (
        f"service 'job' exited {code} after 0 s; not restarted "
        "(restart='on-failure' and it succeeded)"
    )


def test_restart_on_failure_restarts_a_service_that_fails(
    sup: Supervisor, clock: Clock, world: FakeWorld
) -> None:
    sup.add(spec("job", restart="on-failure"))
    sup.start()
    world.current("job").exit(1)
    assert state(sup, "job") is ServiceState.BACKOFF
    clock.advance(1)
    assert len(world.of("job")) == 2


def test_restart_never_leaves_a_service_EXITED_whatever_its_exit(
    sup: Supervisor, clock: Clock, world: FakeWorld
) -> None:
    sup.add(spec("job", restart="never"))
    sup.start()
    world.current("job").exit(1)
    assert state(sup, "job") is ServiceState.EXITED
    assert sup.status()["job"].restarts == 0
    clock.advance(3600)
    assert len(world.of("job")) == 1


def test_a_service_that_cannot_start_is_retried_with_backoff_and_says_why(
    sup: Supervisor, clock: Clock, world: FakeWorld, events: list[dict[str, Any]]
) -> None:
    world.spawn_error = FileNotFoundError(2, "No such file or directory", "svc")
    sup.add(spec("web", max_restarts=1))
    sup.start()
    status = sup.status()["web"]
    assert status.state is ServiceState.BACKOFF
    assert status.last_exit is not None
    assert status.last_exit.startswith("cannot run 'svc web': command 'svc' not found")
    assert status.returncode is None
    clock.advance(1)
    assert state(sup, "web") is ServiceState.FATAL
    assert "giving up, it is FATAL" in lines(events)[-1]
    world.spawn_error = None
    sup.start_service("web")
    assert state(sup, "web") is ServiceState.STARTING


def test_a_service_that_cannot_start_and_may_never_restart_is_FATAL(
    sup: Supervisor, world: FakeWorld
) -> None:
    world.spawn_error = PermissionError(13, "Permission denied", "svc")
    sup.add(spec("web", restart="never"))
    sup.start()
    status = sup.status()["web"]
    assert status.state is ServiceState.FATAL
    assert "is not executable" in (status.last_exit or "")


# -- stopping ------------------------------------------------------------------


def test_stop_service_sends_the_stop_signal_to_the_whole_group_and_fires_when_reaped(
    sup: Supervisor, clock: Clock, world: FakeWorld
) -> None:
    sup.add(spec("web", stop_signal="SIGINT"))
    sup.start()
    proc = world.current("web")
    stopped = sup.stop_service("web")
    assert proc.group_signals == [signal.SIGINT]
    assert state(sup, "web") is ServiceState.STOPPING
    assert not stopped.called
    clock.advance(FakeProcess.TERM_DELAY)
    assert stopped.called
    status = sup.status()["web"]
    assert (status.state, status.last_exit, status.pid) == (
        ServiceState.STOPPED,
        "killed by SIGINT",
        None,
    )
    assert clock.getDelayedCalls() == []  # neither a restart nor a SIGKILL pending
    assert len(world.of("web")) == 1


def test_a_service_ignoring_its_stop_signal_is_SIGKILLed_as_a_group_after_stop_timeout(
    sup: Supervisor, clock: Clock, world: FakeWorld, events: list[dict[str, Any]]
) -> None:
    world.ignoring["web"] = frozenset({signal.SIGTERM})
    sup.add(spec("web", stop_timeout=7))
    sup.start()
    proc = world.current("web")
    stopped = sup.stop_service("web")
    clock.advance(6.9)
    assert proc.group_signals == [signal.SIGTERM]
    assert not stopped.called
    clock.advance(0.1)
    assert proc.group_signals == [signal.SIGTERM, signal.SIGKILL]
    assert (
        "service 'web' did not stop within 7 s of SIGTERM; sending SIGKILL to its "
        "process group"
    ) in lines(events)
    clock.advance(0)
    assert stopped.called
    assert sup.status()["web"].last_exit == "killed by SIGKILL"


def test_stopping_twice_signals_once_and_both_callers_learn_of_the_end(
    sup: Supervisor, clock: Clock, world: FakeWorld
) -> None:
    sup.add(spec("web"))
    sup.start()
    first, second = sup.stop_service("web"), sup.stop_service("web")
    assert world.current("web").group_signals == [signal.SIGTERM]
    clock.advance(FakeProcess.TERM_DELAY)
    assert first.called and second.called


def test_stopping_a_service_in_BACKOFF_cancels_its_restart(
    sup: Supervisor, clock: Clock, world: FakeWorld
) -> None:
    sup.add(spec("web"))
    sup.start()
    world.current("web").exit(1)
    assert state(sup, "web") is ServiceState.BACKOFF
    assert sup.stop_service("web").called
    assert state(sup, "web") is ServiceState.STOPPED
    assert clock.getDelayedCalls() == []
    assert len(world.of("web")) == 1


def test_stop_stops_every_service_and_fires_when_all_are_reaped(
    sup: Supervisor, clock: Clock, world: FakeWorld
) -> None:
    world.ignoring["slow"] = frozenset({signal.SIGTERM})
    sup.add(spec("fast"))
    sup.add(spec("slow", stop_timeout=3))
    sup.start()
    done = sup.stop()
    clock.advance(FakeProcess.TERM_DELAY)
    assert state(sup, "fast") is ServiceState.STOPPED
    assert not done.called
    clock.advance(3 - FakeProcess.TERM_DELAY)
    clock.advance(0)
    assert done.called and done.result is None
    assert {s.state for s in sup.status().values()} == {ServiceState.STOPPED}
    sup.add(spec("later"))  # a stopped supervisor does not start new services
    assert state(sup, "later") is ServiceState.STOPPED


def test_cancelling_a_stop_SIGKILLs_the_group_at_once(
    sup: Supervisor, clock: Clock, world: FakeWorld
) -> None:
    world.ignoring["web"] = frozenset({signal.SIGTERM})
    sup.add(spec("web", stop_timeout=60))
    sup.start()
    proc = world.current("web")
    done = sup.stop()
    done.cancel()
    assert proc.group_signals == [signal.SIGTERM, signal.SIGKILL]
    done.addErrback(lambda f: None)
    clock.advance(0)
    assert state(sup, "web") is ServiceState.STOPPED
    assert clock.getDelayedCalls() == []


def test_restart_stops_a_service_and_starts_a_new_process_without_counting_a_restart(
    sup: Supervisor, clock: Clock, world: FakeWorld
) -> None:
    sup.add(spec("web"))
    sup.start()
    old = world.current("web")
    done = sup.restart("web")
    assert not done.called
    clock.advance(FakeProcess.TERM_DELAY)
    assert done.called
    new = world.current("web")
    assert new is not old
    status = sup.status()["web"]
    assert (status.state, status.pid, status.restarts) == (
        ServiceState.STARTING,
        new.pid,
        0,
    )


def test_a_service_started_again_while_it_stops_starts_once_it_has_stopped(
    sup: Supervisor, clock: Clock, world: FakeWorld
) -> None:
    sup.add(spec("web"))
    sup.start()
    sup.stop_service("web")
    sup.start_service("web")
    assert len(world.of("web")) == 1
    clock.advance(FakeProcess.TERM_DELAY)
    assert len(world.of("web")) == 2
    assert state(sup, "web") is ServiceState.STARTING


def test_start_service_on_a_FATAL_service_starts_it_afresh(
    sup: Supervisor, clock: Clock, world: FakeWorld
) -> None:
    sup.add(spec("web", max_restarts=1, min_restart_delay=1, max_restart_delay=8))
    sup.start()
    world.current("web").exit(1)
    clock.advance(1)
    world.current("web").exit(1)
    assert state(sup, "web") is ServiceState.FATAL
    sup.start_service("web")
    assert state(sup, "web") is ServiceState.STARTING
    world.current("web").exit(1)  # the window and backoff start over
    status = sup.status()["web"]
    assert (status.state, status.restart_in) == (ServiceState.BACKOFF, 1)


def test_start_service_in_BACKOFF_starts_at_once(
    sup: Supervisor, clock: Clock, world: FakeWorld
) -> None:
    sup.add(spec("web", min_restart_delay=30))
    sup.start()
    world.current("web").exit(1)
    sup.start_service("web")
    assert state(sup, "web") is ServiceState.STARTING
    assert len(world.of("web")) == 2
    clock.advance(30)
    assert len(world.of("web")) == 2  # the scheduled restart was cancelled


def test_remove_stops_a_service_and_frees_its_name(
    sup: Supervisor, clock: Clock, world: FakeWorld
) -> None:
    sup.add(spec("web"))
    sup.start()
    removed = sup.remove("web")
    assert "web" in sup.status()
    clock.advance(FakeProcess.TERM_DELAY)
    assert removed.called
    assert "web" not in sup.status()
    sup.add(spec("web"))
    assert len(world.of("web")) == 2


def test_a_service_others_start_after_cannot_be_removed(sup: Supervisor) -> None:
    sup.add(spec("db"))
    sup.add(spec("web", after="db"))
    with pytest.raises(
        ConfigError, match="'db' cannot be removed: service 'web' starts after it"
    ):
        sup.remove("db")


# -- start order ---------------------------------------------------------------


def test_a_service_after_another_starts_once_that_one_is_RUNNING(
    sup: Supervisor, clock: Clock, world: FakeWorld
) -> None:
    sup.add(spec("db", start_seconds=2))
    sup.add(spec("web", after="db"))
    sup.start()
    assert world.of("web") == []
    assert sup.status()["web"].waiting_for == "db"
    clock.advance(2)
    assert state(sup, "db") is ServiceState.RUNNING
    assert state(sup, "web") is ServiceState.STARTING
    assert sup.status()["web"].waiting_for is None


def test_a_service_after_a_one_shot_step_starts_when_the_step_exits_successfully(
    sup: Supervisor, world: FakeWorld
) -> None:
    sup.add(spec("migrate", restart="on-failure"))
    sup.add(spec("web", after="migrate"))
    sup.start()
    assert world.of("web") == []
    world.current("migrate").exit(0)
    assert state(sup, "migrate") is ServiceState.EXITED
    assert state(sup, "web") is ServiceState.STARTING


def test_a_service_after_one_that_is_FATAL_is_not_started_and_the_log_says_why(
    sup: Supervisor, world: FakeWorld, events: list[dict[str, Any]]
) -> None:
    sup.add(spec("db", max_restarts=0))
    sup.add(spec("web", after="db"))
    sup.start()
    world.current("db").exit(1)
    assert state(sup, "web") is ServiceState.STOPPED
    assert world.of("web") == []
    assert lines(events)[-1] == "service 'web' is not started: 'db' is FATAL"


def test_a_service_after_several_starts_once_every_one_of_them_is_ready(
    sup: Supervisor, clock: Clock, world: FakeWorld
) -> None:
    sup.add(spec("db", start_seconds=2))
    sup.add(spec("migrate", restart="on-failure", start_seconds=60))
    sup.add(spec("web", after=["db", "migrate"]))
    sup.start()
    assert sup.status()["web"].waiting_for == "db"
    clock.advance(2)
    assert world.of("web") == []
    assert sup.status()["web"].waiting_for == "migrate"
    world.current("migrate").exit(0)
    assert state(sup, "web") is ServiceState.STARTING


def test_after_is_kept_as_a_tuple_of_names() -> None:
    assert spec("web").after == ()
    assert spec("web", after="db").after == ("db",)
    assert spec("web", after=["db", "cache", "db"]).after == ("db", "cache")
    with pytest.raises(ConfigError, match="after names the service itself"):
        spec("web", after=["db", "web"])
    with pytest.raises(
        ConfigError, match=r"after must be a name or a list .* not \[1\]"
    ):
        spec("web", after=[1])


def test_a_service_with_autostart_false_waits_to_be_started_by_name(
    sup: Supervisor, world: FakeWorld
) -> None:
    sup.add(spec("backup", autostart=False))
    sup.add(spec("web"))
    sup.start()
    assert world.of("backup") == []
    assert state(sup, "backup") is ServiceState.STOPPED
    sup.add(spec("report", autostart=False))  # added to a started supervisor
    assert world.of("report") == []
    sup.start_service("backup")
    assert state(sup, "backup") is ServiceState.STARTING


def test_a_poller_that_runs_then_exits_0_is_restarted_for_ever_never_FATAL(
    sup: Supervisor, clock: Clock, world: FakeWorld
) -> None:
    """Only failed starts count toward max_restarts (supervisord's rule)."""
    sup.add(spec("poller", max_restarts=2, start_seconds=1, restart_window=3600))
    sup.start()
    for _ in range(20):
        clock.advance(5)  # well past start_seconds: it had started fine
        world.current("poller").exit(0)
        assert state(sup, "poller") is ServiceState.BACKOFF
        clock.advance(0)  # it ran longer than start_seconds: restarted at once
    assert sup.status()["poller"].restarts == 20
    assert len(world.of("poller")) == 21


def test_a_crash_counts_toward_max_restarts_however_long_the_run_lasted(
    sup: Supervisor, clock: Clock, world: FakeWorld
) -> None:
    sup.add(spec("web", max_restarts=2, start_seconds=1, min_restart_delay=1))
    sup.start()
    world.current("web").exit(1)  # crash 1, at once
    clock.advance(1)
    world.current("web").exit(1)  # crash 2
    clock.advance(2)
    clock.advance(10)
    world.current("web").exit(1)  # ran 10 s, well past start_seconds: crash 3
    status = sup.status()["web"]
    assert status.state is ServiceState.FATAL
    assert status.reason == "3 unexpected exits within 60 s, more than max_restarts=2"


def test_user_group_and_umask_are_given_to_the_process_factory_only_when_set(
    sup: Supervisor, world: FakeWorld
) -> None:
    sup.add(spec("plain"))
    sup.add(spec("masked", umask="027"))
    sup.add(spec("nobody", user="nobody"))
    sup.start()
    import pwd

    nobody = pwd.getpwnam("nobody")
    plain, masked, as_nobody = world.credentials
    assert plain == {}
    assert masked == {"umask": 0o027}
    assert as_nobody["user"] == nobody.pw_uid
    assert as_nobody["group"] == nobody.pw_gid
    assert nobody.pw_gid in as_nobody["extra_groups"]


def test_an_unknown_user_or_group_or_a_bad_umask_is_a_ConfigError() -> None:
    with pytest.raises(ConfigError, match="service 'web': user 'no-such-user-x' does"):
        spec("web", user="no-such-user-x")
    with pytest.raises(ConfigError, match="service 'web': group 'no-such-group-x'"):
        spec("web", group="no-such-group-x")
    with pytest.raises(ConfigError, match=r"umask must be a mode from 0 to 0o777"):
        spec("web", umask=0o1777)
    with pytest.raises(ConfigError, match=r"umask .* not '9'"):
        spec("web", umask="9")
    with pytest.raises(ConfigError, match=r"user must be a name or an id >= 0"):
        spec("web", user=-1)


@pytest.mark.slow
def test_running_a_service_as_another_user_needs_root_and_says_so() -> None:
    code = """
        import os
        from procwork import ConfigError
        from procwork.supervisor import ServiceSpec
        if os.geteuid() == 0:
            os.setgid(65534)
            os.setuid(65534)  # no longer root: nobody
        try:
            ServiceSpec("web", ["svc"], user="root")
        except ConfigError as e:
            print(e)
        """
    child = run_child(textwrap.dedent(code))
    assert child.returncode == 0, child.stderr
    assert child.stdout.startswith(
        "service 'web': running as user 'root' needs procwork to run as root (it "
        "runs as uid "
    )


def test_start_service_does_not_wait_for_after(
    sup: Supervisor, world: FakeWorld
) -> None:
    sup.add(spec("db"))
    sup.add(spec("web", after="db"))
    sup.start_service("web")
    assert state(sup, "web") is ServiceState.STARTING
