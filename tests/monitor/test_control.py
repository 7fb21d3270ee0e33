"""Operating a running monitor: the control protocol, reload, and what they do.

Unit tests: the protocol's requests and answers, the control socket's config
keys, and the :class:`Controller` acting on a Monitor that runs on a
``Clock`` with fake processes, so stops and restarts are exact and instant.
What a reload changes is ``test_reload.py``; the supervisor's verbs the
controller calls (replace a spec, signal a group, keep output) are
``tests/supervisor/test_operations.py``. The real ``procwork monitor`` and
``procwork ctl`` are driven as processes in ``tests/cli/test_ctl_e2e.py``.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.logger import formatEvent

from procwork import ConfigError, Result
from procwork.cli._ctl import status_table
from procwork.monitor import load_config, parse_config
from procwork.monitor._protocol import (
    MAX_DEPTH,
    PROTOCOL,
    decode,
    default_socket_path,
    encode,
    parse_request,
)
from procwork.supervisor import (
    ServiceState,
)
from tests.support import FakeTable, observing
from tests.support.fake_monitor import (
    HEADER,
    Operated,
    cgi,
    checks,
    metric_lines,
    rules,
    services,
)

# -- the protocol ----------------------------------------------------------------


def test_a_request_and_its_answer_are_each_one_line_of_json() -> None:
    line = encode({"command": "status", "names": ["web\nserver"]})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode(line) == {"command": "status", "names": ["web\nserver"]}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"status\n", r"^not a line of JSON: "),
        (b"[1, 2]", r"^expected a JSON object, not list$"),
        (b"\xff\xfe", r"^not a line of JSON: not UTF-8 \(byte 0xff at 0\)$"),
        # json.loads would take UTF-16 and UTF-32 too.
        ('{"command": "status"}'.encode("utf-16"), r"^not a line of JSON: not UTF-8"),
        (b'"status"', r"^expected a JSON object, not str$"),
        (b"null", r"^expected a JSON object, not NoneType$"),
        # Deep enough to make json.loads raise RecursionError...
        (b"[" * 60000, r"^not a line of JSON: nested more than 8 levels deep$"),
        (b'{"names": ' + b"[" * 60000, r"^not a line of JSON: nested more than 8 "),
        # ... or not, but deeper than any request needs.
        (
            b'{"command": "status", "names": ' + b"[" * 50 + b"]" * 50 + b"}",
            r"^a request nests at most 8 levels deep$",
        ),
        (
            b'{"command": "tail", "lines": 1' + b"0" * 5000 + b"}",
            r"^not a line of JSON: Exceeds the limit \(4300 digits\)",
        ),
    ],
)
def test_a_line_that_is_not_a_json_object_is_refused(line: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode(line)


def test_a_request_nesting_to_the_limit_is_decoded() -> None:
    nested: Any = ["web"]
    for _ in range(MAX_DEPTH - 2):
        nested = [nested]
    assert decode(encode({"names": nested}))["names"] == nested


def test_a_request_gets_its_defaults() -> None:
    assert parse_request({"command": "status"}) == {"command": "status", "names": []}
    assert parse_request({"command": "tail", "name": "web"}) == {
        "command": "tail",
        "name": "web",
        "stream": "stdout",
        "lines": 10,
        "follow": False,
    }


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"command": "launch"}, r"^unknown command 'launch'; commands: status, "),
        ({}, r"^unknown command None; "),
        ({"command": "stop"}, r"^stop: name the services \(or 'all'\)$"),
        ({"command": "stop", "names": "web"}, r"^stop: names must be a list of "),
        ({"command": "reload", "force": True}, r"^reload: unknown key 'force'$"),
        ({"command": "signal", "names": ["web"]}, r"^signal: give the signal by "),
        ({"command": "tail"}, r"^tail: name the service$"),
        (
            {"command": "tail", "name": "web", "stream": "stdin"},
            r"^tail: stream must be stdout or stderr, not 'stdin'$",
        ),
        (
            {"command": "tail", "name": "web", "lines": -1},
            r"^tail: lines must be a whole number >= 0, not -1$",
        ),
        # What no service can be named is refused before it reaches the log.
        ({"command": "stop", "names": ["web\nFAKE LOG LINE"]}, r"^stop: names must "),
        ({"command": "status", "names": ["\ud800"]}, r"^status: names must be a "),
        ({"command": "status", "names": [["web"]]}, r"^status: names must be a "),
        ({"command": "reopen", "names": [""]}, r"^reopen: names must be a list of "),
        ({"command": "tail", "name": ""}, r"^tail: name the service$"),
        ({"command": "tail", "name": 3}, r"^tail: name the service$"),
        ({"command": "tail", "name": "web", "lines": True}, r"^tail: lines must be "),
        ({"command": "tail", "name": "web", "lines": 1.5}, r"^tail: lines must be "),
        ({"command": "tail", "name": "web", "follow": "yes"}, r"^tail: follow must "),
        ({"command": "signal", "names": ["web"], "signal": "X" * 999}, r"^signal: "),
        ({"command": "signal", "names": ["web"], "signal": None}, r"^signal: give "),
        ({"command": ["status"]}, r"^unknown command \['status'\]; commands: "),
        # An echoed value is cut short: a request may be 64 KiB.
        (
            {"command": "x" * 60000},
            r"^unknown command 'xxx[x]*\.\.\. \(60002 characters\); commands: ",
        ),
        ({"command": "reload", "k" * 60000: 1}, r"^reload: unknown key 'k+\.\.\. "),
    ],
)
def test_a_malformed_request_is_refused_saying_what_is_wrong(
    request_: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        parse_request(request_)
    assert len(str(refused.value)) < 400


def test_the_default_socket_is_in_the_runtime_dir_else_run_for_root_else_a_temp_dir(
    tmp_path: Path,
) -> None:
    runtime = {"XDG_RUNTIME_DIR": "/run/user/1000"}
    assert default_socket_path(runtime, 1000) == "/run/user/1000/procwork/monitor.sock"
    assert default_socket_path({}, 0) == "/run/procwork/monitor.sock"
    path = default_socket_path({}, 1000)
    assert path.endswith("/procwork-1000/monitor.sock")


def test_the_status_table_reads_like_supervisorctls() -> None:
    table = status_table(
        [
            {
                "name": "web",
                "state": "RUNNING",
                "pid": 4242,
                "uptime": 3 * 86400 + 3725.2,
                "restarts": 1,
                "last_exit": "killed by SIGKILL",
            },
            {
                "name": "worker-1",
                "state": "FATAL",
                "pid": None,
                "uptime": None,
                "restarts": 5,
                "last_exit": "exited 3",
            },
        ]
    )
    assert table.splitlines() == [
        "NAME      STATE    PID   UPTIME           RESTARTS  LAST EXIT",
        "web       RUNNING  4242  3 days, 1:02:05  1         killed by SIGKILL",
        "worker-1  FATAL    -     -                5         exited 3",
    ]


def test_the_status_table_shows_a_crash_loop_and_why_a_service_is_FATAL() -> None:
    """The STATE column is the monitor's summary; under an unhealthy service,
    the last lines its crashed run wrote to stderr."""
    table = status_table(
        [
            {
                "name": "api",
                "state": "BACKOFF",
                "pid": None,
                "uptime": None,
                "restarts": 3,
                "last_exit": "exited 3",
                "healthy": False,
                "summary": "BACKOFF (crash loop: 3 exits in 5 s, next start in 4 s)",
                "last_stderr": ["KeyError: 'DB'"],
            },
            {
                "name": "db",
                "state": "RUNNING",
                "pid": 7,
                "uptime": 5,
                "restarts": 1,
                "last_exit": "exited 1",
                "healthy": True,
                "summary": "RUNNING",
                "last_stderr": ["an old crash, now stable"],
            },
        ]
    )
    assert table.splitlines() == [
        "NAME  STATE                                                    PID  UPTIME   "
        "RESTARTS  LAST EXIT",
        "api   BACKOFF (crash loop: 3 exits in 5 s, next start in 4 s)  -    -        "
        "3         exited 3",
        "      | KeyError: 'DB'",
        "db    RUNNING                                                  7    0:00:05  "
        "1         exited 1",
    ]


# -- the config keys ---------------------------------------------------------------


def test_the_socket_is_a_path_relative_to_the_config_or_false_for_none(
    tmp_path: Path,
) -> None:
    config = tmp_path / "monitor.toml"
    config.write_text('[monitor]\nsocket = "run/ctl.sock"\n')
    loaded = load_config(str(config))
    assert (loaded.socket, loaded.control) == (str(tmp_path / "run/ctl.sock"), True)
    assert parse_config("[monitor]\nsocket = false\n").control is False
    default = parse_config("")
    assert (default.socket, default.control, default.http_control) == (
        None,
        True,
        False,
    )


@pytest.mark.parametrize(
    ("monitor", "message"),
    [
        (
            "http_control = true",
            r"^t: \[monitor\]: http_control = true needs http_token, the secret "
            r"HTTP control requests carry as 'Authorization: Bearer TOKEN'$",
        ),
        (
            'http_control = true\nhttp_token = "short"',
            r"^t: \[monitor\]: http_token must be a secret string of at least 16 ",
        ),
        ("socket = 3", r"^t: \[monitor\]: socket must be a path, not 3$"),
    ],
)
def test_http_control_needs_a_token_of_some_length(monitor: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(f"[monitor]\n{monitor}\n", "t")


def test_the_control_socket_takes_64_connections_and_closes_them_after_60_s_idle(
    tmp_path: Path,
) -> None:
    default = parse_config("")
    assert (default.control_max_connections, default.control_idle_timeout) == (64, 60)
    config = parse_config(
        "[monitor]\ncontrol_max_connections = 8\ncontrol_idle_timeout = 2.5\n"
    )
    assert (config.control_max_connections, config.control_idle_timeout) == (8, 2.5)


@pytest.mark.parametrize(
    ("monitor", "message"),
    [
        ("control_max_connections = 0", r"control_max_connections must be a whole "),
        ("control_max_connections = 1.5", r"control_max_connections must be a "),
        ("control_max_connections = true", r"control_max_connections must be a "),
        ("control_idle_timeout = 0", r"control_idle_timeout must be a finite number "),
        ("control_idle_timeout = nan", r"control_idle_timeout must be a finite "),
        ("control_idle_timeout = '60'", r"control_idle_timeout must be a number of "),
        ("control_idle_timeout = 0.5", r"control_idle_timeout must be at least 1 s "),
    ],
)
def test_bad_control_socket_bounds_are_rejected_naming_the_file_table_and_key(
    tmp_path: Path, monitor: str, message: str
) -> None:
    path = tmp_path / "monitor.toml"
    path.write_text(f"[monitor]\n{monitor}\n")
    with pytest.raises(ConfigError, match=rf"^{path}: \[monitor\]: {message}"):
        load_config(str(path))


def test_the_token_is_not_shown_in_the_configs_repr() -> None:
    config = parse_config(
        '[monitor]\nhttp_control = true\nhttp_token = "0123456789abcdef-secret"\n'
    )
    assert config.http_token == "0123456789abcdef-secret"
    assert "secret" not in repr(config)


# -- the controller on a monitor ------------------------------------------------------


@pytest.fixture
def operated(tmp_path: Path) -> Operated:
    return Operated(
        tmp_path, HEADER + services("web:start_seconds = 0", "tool:autostart = false")
    )


def test_status_answers_for_every_service_or_those_named(operated: Operated) -> None:
    answer = operated.ask(command="status")
    assert answer["ok"] is True
    assert list(answer["result"]["services"]) == ["web", "tool"]
    web = answer["result"]["services"]["web"]
    assert (web["state"], web["pid"]) == ("RUNNING", operated.pid("web"))
    answer = operated.ask(command="status", names=["tool"])
    assert list(answer["result"]["services"]) == ["tool"]


def test_an_unknown_name_is_refused_and_nothing_is_done(operated: Operated) -> None:
    pid = operated.pid("web")
    answer = operated.ask(command="stop", names=["web", "nope"])
    assert answer == {
        "procwork": PROTOCOL,
        "ok": False,
        "error": "no service named 'nope' (services: web, tool)",
    }
    assert operated.pid("web") == pid


def test_stop_answers_once_the_service_is_stopped_and_start_brings_it_back(
    operated: Operated,
) -> None:
    answer = operated.ask(command="stop", names=["all"])
    assert answer["ok"] and answer["result"]["services"]["web"]["state"] == "STOPPED"
    assert operated.pid("web") is None
    answer = operated.ask(command="start", names=["web", "tool"])
    states = {n: s["state"] for n, s in answer["result"]["services"].items()}
    assert states == {"web": "RUNNING", "tool": "STARTING"}


def test_start_brings_a_FATAL_service_back_with_its_restart_count_reset(
    tmp_path: Path,
) -> None:
    operated = Operated(
        tmp_path, HEADER + services("bad:max_restarts = 1\nmin_restart_delay = 1")
    )
    for _ in range(2):
        operated.world.current("bad").exit(3)
        operated.clock.advance(1)
    assert operated.monitor.supervisor.status()["bad"].state is ServiceState.FATAL
    answer = operated.ask(command="start", names=["bad"])
    assert answer["result"]["services"]["bad"]["state"] == "STARTING"
    # It may fail again max_restarts times before it is FATAL again.
    operated.world.current("bad").exit(3)
    assert operated.monitor.supervisor.status()["bad"].state is ServiceState.BACKOFF


def test_restart_gives_a_new_pid_and_signal_reaches_the_group(
    operated: Operated,
) -> None:
    first = operated.pid("web")
    answer = operated.ask(command="restart", names=["web"])
    second = answer["result"]["services"]["web"]["pid"]
    assert second not in (None, first)
    answer = operated.ask(command="signal", signal="USR1", names=["web"])
    assert answer["ok"] and answer["result"]["signalled"] == ["web"]
    assert operated.world.current("web").group_signals == [signal.SIGUSR1]
    answer = operated.ask(command="signal", signal="USR1", names=["all"])
    assert answer["ok"] is False
    assert answer["error"].startswith("service 'tool' is not running (STOPPED)")
    assert answer["result"]["signalled"] == ["web"]


def test_tail_answers_with_the_kept_lines(operated: Operated) -> None:
    operated.world.current("web").say(b"1\n2\n3\n")
    answer = operated.ask(command="tail", name="web", lines=2)
    assert answer["result"] == {"name": "web", "lines": ["2", "3"]}
    answer = operated.ask(command="tail", name="web", stream="stderr")
    assert answer["result"] == {"name": "web", "lines": []}


def test_reopen_opens_each_services_log_files_again_by_path(tmp_path: Path) -> None:
    """As logrotate's postrotate wants: the files moved away get nothing
    more, new files at the configured paths get what follows."""
    logs = tmp_path / "logs"
    operated = Operated(
        tmp_path,
        HEADER
        + services(
            f"web:stdout_log = '{logs}/web.out'\nstderr_log = '{logs}/web.err'",
            "tool",
        ),
    )
    web = operated.world.current("web")
    web.say(b"before\n")
    web.say(b"before err\n", fd=2)
    for name in ("web.out", "web.err"):
        (logs / name).rename(logs / f"{name}.1")
    answer = operated.ask(command="reopen", names=["web"])
    assert answer["ok"], answer
    assert answer["result"] == {
        "reopened": {"web": [f"{logs}/web.out", f"{logs}/web.err"]}
    }
    web.say(b"after\n")
    web.say(b"after err\n", fd=2)
    operated.monitor.supervisor.stop()
    operated.clock.advance(5)  # stopped: the files are flushed
    assert (logs / "web.out.1").read_text() == "before\n"
    assert (logs / "web.out").read_text() == "after\n"
    assert (logs / "web.err.1").read_text() == "before err\n"
    assert (logs / "web.err").read_text() == "after err\n"


def test_reopen_names_every_service_by_default_and_says_which_file_it_cannot_open(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    operated = Operated(
        tmp_path, HEADER + services(f"web:stdout_log = '{logs}/web.out'", "tool")
    )
    answer = operated.ask(command="reopen")
    assert answer["result"] == {"reopened": {"web": [f"{logs}/web.out"], "tool": []}}
    # Its directory replaced by a file: it cannot be opened (nor the
    # directory made again: only the first open makes it).
    (logs / "web.out").unlink()
    logs.rmdir()
    logs.write_text("")
    answer = operated.ask(command="reopen")
    assert answer["ok"] is False
    assert answer["error"] == (
        f"service 'web': cannot reopen {logs}/web.out: Not a directory"
    )
    assert answer["result"] == {"reopened": {"tool": []}}
    assert operated.ask(command="reopen", names=["nope"])["error"] == (
        "no service named 'nope' (services: web, tool)"
    )


def test_reload_applies_the_difference_and_keeps_unchanged_services_running(
    tmp_path: Path,
) -> None:
    operated = Operated(
        tmp_path, HEADER + services("keep", "drop", "change", "dep:after = 'keep'")
    )
    operated.clock.advance(2)  # dep starts once keep is RUNNING
    pids = {n: operated.pid(n) for n in ("keep", "drop", "change", "dep")}
    assert None not in pids.values()
    operated.path.write_text(
        HEADER
        + services("keep", "change:nice = 3", "dep:after = 'keep'", "new")
        + '[[check]]\nname = "c"\ncommand = ["true"]\nevery = 5\n'
    )
    answer = operated.ask(command="reload")
    assert answer["ok"], answer
    assert answer["result"]["added"] == ["new"]
    assert answer["result"]["removed"] == ["drop"]
    assert answer["result"]["changed"] == ["change"]
    assert answer["result"]["checks_added"] == ["c"]
    status = operated.monitor.supervisor.status()
    assert list(status) == ["keep", "change", "dep", "new"]
    assert status["keep"].pid == pids["keep"] and status["dep"].pid == pids["dep"]
    assert status["change"].pid not in (None, pids["change"])
    assert operated.world.current("change").nice == 3
    assert status["new"].pid is not None
    assert list(operated.monitor.checks.status) == ["c"]
    assert operated.monitor.config.services[-1].name == "new"


def test_a_broken_config_is_rejected_and_the_old_one_keeps_running(
    operated: Operated,
) -> None:
    pid = operated.pid("web")
    operated.path.write_text(HEADER + '[[service]]\nname = "web"\n')
    answer = operated.ask(command="reload")
    assert answer == {
        "procwork": PROTOCOL,
        "ok": False,
        "error": f"{operated.path}: [[service]] #1 ('web'): missing required key "
        "'command'",
    }
    assert operated.pid("web") == pid
    assert [s.name for s in operated.monitor.config.services] == ["web", "tool"]
    # Fixed, it reloads.
    operated.path.write_text(HEADER + services("web:start_seconds = 0"))
    assert operated.ask(command="reload")["result"]["removed"] == ["tool"]


def test_reloads_asked_together_are_applied_one_after_the_other(
    operated: Operated,
) -> None:
    operated.path.write_text(HEADER + services("web:nice = 1"))
    first: list[Any] = []
    operated.monitor.reload().addCallback(first.append)
    operated.path.write_text(HEADER + services("web:nice = 2"))
    second: list[Any] = []
    operated.monitor.reload().addCallback(second.append)
    # The first still waits for the old web to stop; the second has not begun.
    assert not first and not second
    for _ in range(10):
        operated.clock.advance(0.5)
    assert first[0].changed == ("web",) and first[0].removed == ("tool",)
    assert second[0].changed == ("web",) and second[0].removed == ()
    assert operated.world.current("web").nice == 2


def check_runs(operated: Operated, name: str) -> list[Deferred[Any]]:
    """The runs of check ``name`` (its command is ``true NAME``), oldest first."""
    return [d for argv, d in operated.run.calls if argv == ["true", name]]


def check_ends(operated: Operated, name: str, returncode: int) -> None:
    """The run in flight of check ``name`` exits with ``returncode``."""
    [run] = [d for d in check_runs(operated, name) if not d.called]
    run.callback(Result(("true", name), 99, returncode, duration=0.1))


def check_events(operated: Operated, name: str) -> list[str]:
    return [
        e.event
        for e in operated.monitor.alerts.recent
        if e.kind == "check" and e.name == name
    ]


def test_a_reload_that_changes_one_check_keeps_the_others_running_with_their_state(
    tmp_path: Path,
) -> None:
    """The unchanged check is not run again, keeps its failure count and its
    failing state (in the status and the metrics), is not said to fail again,
    and its recovery is said; the changed one starts afresh."""
    operated = Operated(tmp_path, HEADER + checks("disk:failures = 2", "load"))
    for _ in range(2):
        check_ends(operated, "disk", 1)
        operated.clock.advance(10)
    check_ends(operated, "load", 1)
    assert check_events(operated, "disk") == ["check.failed"]
    disk_runs = len(check_runs(operated, "disk"))
    operated.path.write_text(HEADER + checks("disk:failures = 2", "load:failures = 3"))
    logged: list[str] = []
    with observing(lambda event: logged.append(formatEvent(event))):
        answer = operated.ask(command="reload")
    assert answer["result"]["checks_changed"] == ["load"]
    assert answer["result"]["checks_unchanged"] == ["disk"]
    assert (
        f"reloading {operated.path}: services: added none; removed none; changed "
        "none; 0 unchanged | checks: added none; removed none; changed load; "
        "1 unchanged" in logged
    )
    status = operated.monitor.status()["checks"]
    assert (status["disk"]["consecutive_failures"], status["disk"]["failing"]) == (
        2,
        True,
    )
    assert 'procwork_check_consecutive_failures{check="disk"} 2' in metric_lines(
        operated.monitor
    )
    assert len(check_runs(operated, "disk")) == disk_runs, "no extra run"
    assert (status["load"]["runs"], status["load"]["failed"]) == (1, 0)
    check_ends(operated, "disk", 1)
    assert operated.monitor.checks.status["disk"].consecutive_failures == 3
    assert check_events(operated, "disk") == ["check.failed"]
    operated.clock.advance(10)
    check_ends(operated, "disk", 0)
    assert check_events(operated, "disk") == ["check.failed", "check.recovered"]


def test_a_reload_starts_added_checks_and_stops_removed_ones(tmp_path: Path) -> None:
    """A removed check's run is cancelled and it is gone from the status; an
    added one runs at once and alerts like the others."""
    operated = Operated(tmp_path, HEADER + checks("disk", "load"))
    check_ends(operated, "disk", 1)
    operated.path.write_text(HEADER + checks("disk", "mem"))
    answer = operated.ask(command="reload")["result"]
    assert (answer["checks_added"], answer["checks_removed"]) == (["mem"], ["load"])
    assert ["true", "load"] in operated.run.cancelled
    assert list(operated.monitor.status()["checks"]) == ["disk", "mem"]
    assert not any('check="load"' in line for line in metric_lines(operated.monitor))
    check_ends(operated, "mem", 1)
    assert check_events(operated, "mem") == ["check.failed"]
    assert operated.monitor.checks.status["disk"].failing


def test_a_reload_keeps_unchanged_rules_with_what_they_found(tmp_path: Path) -> None:
    """An unchanged rule does not report again a process it has reported; a
    changed or added one reports it afresh, at the next scan on its schedule
    (not at the reload); a removed one is gone."""
    header = HEADER + "rules_every = 5\n"
    operated = Operated(
        tmp_path,
        header + rules("slow:600", "stale:3600", "gone:60"),
        FakeTable(cgi(700, age=4000)),
    )
    assert [f.rule.name for f in operated.monitor.findings] == [
        "slow",
        "stale",
        "gone",
    ]
    operated.clock.advance(1)
    operated.path.write_text(header + rules("slow:600", "stale:3000", "new:100"))
    answer = operated.ask(command="reload")["result"]
    assert (
        answer["rules_added"],
        answer["rules_removed"],
        answer["rules_changed"],
        answer["rules_unchanged"],
    ) == (["new"], ["gone"], ["stale"], ["slow"])
    assert len(operated.monitor.findings) == 3, "no scan at the reload"
    operated.clock.advance(4)  # the next scan, 5 s after the one at start
    assert [f.rule.name for f in operated.monitor.findings[3:]] == ["stale", "new"]
    status = operated.monitor.status()["rules"]
    assert {name: rule["matches"] for name, rule in status.items()} == {
        "slow": 1,
        "stale": 1,
        "new": 1,
    }


def test_shutdown_answers_then_asks_whoever_runs_the_monitor_to_stop_it(
    operated: Operated,
) -> None:
    stopping: Deferred[None] = operated.monitor.shutdown_requested
    assert operated.ask(command="shutdown")["result"] == {"stopping": True}
    assert not stopping.called  # the answer goes out first
    operated.clock.advance(0)
    assert stopping.called


@pytest.mark.slow
def test_a_service_reloaded_and_operated_hundreds_of_times_leaves_one_process(
    tmp_path: Path,
) -> None:
    """Reloads that change a service, interleaved with stops, starts, restarts
    and signals in every order: each ends with exactly one live process."""
    operated = Operated(tmp_path, HEADER + services("web:start_seconds = 0"))
    verbs = [
        {"command": "stop", "names": ["web"]},
        {"command": "start", "names": ["web"]},
        {"command": "restart", "names": ["web"]},
        {"command": "signal", "names": ["web"], "signal": "TERM"},
    ]
    pending: list[Deferred[Any]] = []
    for i in range(400):
        operated.path.write_text(
            HEADER + services(f"web:start_seconds = 0\nnice = {i % 3}")
        )
        pending.append(operated.monitor.reload())
        pending.append(operated.controller.handle(verbs[i % 4], "test"))
        pending.append(operated.controller.handle(verbs[(i * 7) % 4], "test"))
        operated.clock.advance(0.4 * (i % 4))
    operated.ask(command="start", names=["web"])
    for _ in range(20):
        operated.clock.advance(1)
    assert all(d.called for d in pending)
    live = [p for p in operated.world.of("web") if p.pid is not None]
    assert len(live) == 1
    assert operated.pid("web") == live[0].pid


def test_an_unexpected_error_becomes_an_answer_and_a_logged_traceback(
    operated: Operated, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> None:
        raise RuntimeError("the reload broke")

    monkeypatch.setattr(operated.monitor, "reload", broken)
    seen: list[dict[str, Any]] = []
    with observing(seen.append):
        answer = operated.ask(command="reload")
    assert answer == {"procwork": PROTOCOL, "ok": False, "error": "the reload broke"}
    assert any(e.get("log_failure") is not None for e in seen)


def test_a_reload_while_the_monitor_stops_changes_nothing(operated: Operated) -> None:
    operated.path.write_text(HEADER + services("web", "tool", "late"))
    operated.monitor.stop()
    done: list[Any] = []
    operated.monitor.reload().addCallback(done.append)
    assert str(done[0]) == (
        "services: added none; removed none; changed none; 0 unchanged"
    )
    assert list(operated.monitor.supervisor.status()) == ["web", "tool"]
