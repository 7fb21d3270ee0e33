"""Which services a control request names: names, ``all``, globs, families.

The resolver (``procwork/monitor/_names.py``) as a pure function, the
families a config's ``numprocs`` entries make, and the
:class:`~procwork.monitor._control.Controller` taking patterns in every
command, on a Monitor on a ``Clock`` with fake processes. The real
``procwork ctl`` doing the same is ``tests/cli/test_ctl_find_and_wait_e2e.py``.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from procwork.monitor import parse_config
from procwork.monitor._names import UnknownPattern, family_of, resolve
from tests.support.fake_monitor import HEADER, Operated, services

SERVICES = ["web-a", "web-b", "worker-0", "worker-1", "worker-2", "db"]
FAMILIES = {"worker": ["worker-0", "worker-1", "worker-2"]}


@pytest.mark.parametrize(
    ("patterns", "named"),
    [
        (["web-*"], ["web-a", "web-b"]),
        (["worker"], ["worker-0", "worker-1", "worker-2"]),
        (["db", "web-?"], ["web-a", "web-b", "db"]),
        (["worker-[02]"], ["worker-0", "worker-2"]),
        (["all"], SERVICES),
        (["db", "d*", "all"], SERVICES),
    ],
)
def test_a_pattern_names_its_services_once_each_in_the_monitors_order(
    patterns: list[str], named: list[str]
) -> None:
    assert resolve(patterns, SERVICES, FAMILIES) == named


def test_a_services_own_name_wins_over_a_family_of_the_same_name() -> None:
    services = ["web", "web-0", "web-1"]
    assert resolve(["web"], services, {"web": ["web-0", "web-1"]}) == ["web"]
    assert resolve(["web-*"], services, {"web": ["web-0", "web-1"]}) == [
        "web-0",
        "web-1",
    ]


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("wrker", "no service named 'wrker'; did you mean 'worker', "),
        ("web-c", "no service named 'web-c'; did you mean 'web-a' or 'web-b'?"),
        ("x*", "no service matches 'x*' (services: web-a, web-b, worker-0, "),
        ("nope", "no service named 'nope' (services: web-a, web-b, worker-0, "),
    ],
)
def test_a_pattern_that_names_nothing_is_refused_with_the_names_close_to_it(
    pattern: str, message: str
) -> None:
    with pytest.raises(UnknownPattern) as raised:
        resolve(["db", pattern], SERVICES, FAMILIES)
    assert str(raised.value).startswith(message)
    assert isinstance(raised.value, ValueError)


def test_past_twenty_services_a_refusal_counts_them_instead_of_listing_them() -> None:
    many = [f"svc{i:03d}" for i in range(300)]
    with pytest.raises(UnknownPattern, match=r"\(300 services; procwork ctl status"):
        resolve(["zzz"], many)
    with pytest.raises(UnknownPattern, match=r"runs no services"):
        resolve(["zzz"], [])


@pytest.mark.parametrize(
    ("template", "family"),
    [
        ("worker-{instance}", "worker"),
        ("{instance}.web", "web"),
        ("app_{instance}_db", "app_db"),
        ("w{instance}", "w"),
        ("{instance}", None),
        ("web", None),
    ],
)
def test_a_family_is_the_name_template_without_instance_and_its_separator(
    template: str, family: str | None
) -> None:
    assert family_of(template) == family


def test_a_config_records_the_family_of_each_numprocs_entry() -> None:
    config = parse_config(
        '[[service]]\nname = "worker-{instance}"\nnumprocs = 3\ncommand = "sleep 60"\n'
        '[[service]]\nname = "cron-{instance}"\ncommand = "sleep 60"\n'
        '[[service]]\nname = "web"\ncommand = "sleep 60"\n',
        check_system=False,
    )
    assert dict(config.families) == {
        "worker": ("worker-0", "worker-1", "worker-2"),
        "cron": ("cron-0",),
    }


# -- every command takes them ------------------------------------------------------

WORKERS = """
[[service]]
name = "worker-{instance}"
numprocs = 3
command = ["sleep", "60", "worker-{instance}"]
start_seconds = 0
"""


@pytest.fixture
def operated(tmp_path: Path) -> Operated:
    return Operated(
        tmp_path,
        HEADER
        + services("web-a:start_seconds = 0", "web-b:start_seconds = 0", "db")
        + WORKERS,
    )


def test_restart_of_a_family_restarts_its_instances_and_nothing_else(
    operated: Operated,
) -> None:
    before = {name: operated.pid(name) for name in ("web-a", "db", "worker-1")}
    answer = operated.ask(command="restart", names=["worker"])
    assert list(answer["result"]["services"]) == ["worker-0", "worker-1", "worker-2"]
    assert operated.pid("worker-1") not in (None, before["worker-1"])
    assert operated.pid("web-a") == before["web-a"]
    assert operated.pid("db") == before["db"]


def test_status_stop_start_signal_and_reopen_take_globs(operated: Operated) -> None:
    answer = operated.ask(command="status", names=["web-*"])
    assert list(answer["result"]["services"]) == ["web-a", "web-b"]
    answer = operated.ask(command="stop", names=["web-?"])
    assert {s["state"] for s in answer["result"]["services"].values()} == {"STOPPED"}
    assert operated.pid("db") is not None
    answer = operated.ask(command="start", names=["web-*"])
    assert answer["ok"], answer
    answer = operated.ask(command="signal", signal="USR1", names=["worker-[01]"])
    assert answer["result"]["signalled"] == ["worker-0", "worker-1"]
    for name, sent in (("worker-0", [signal.SIGUSR1]), ("worker-2", [])):
        assert operated.world.current(name).group_signals == sent
    answer = operated.ask(command="reopen", names=["worker"])
    assert list(answer["result"]["reopened"]) == ["worker-0", "worker-1", "worker-2"]


def test_tail_takes_a_pattern_that_names_one_service_and_says_which(
    operated: Operated,
) -> None:
    operated.world.current("db").say(b"ready\n")
    answer = operated.ask(command="tail", name="d?")
    assert answer["result"] == {"name": "db", "lines": ["ready"]}
    answer = operated.ask(command="tail", name="web-*")
    assert answer["ok"] is False
    assert answer["error"] == (
        "tail: 'web-*' names 2 services (web-a, web-b); tail takes one"
    )


def test_a_pattern_naming_nothing_refuses_the_whole_request(
    operated: Operated,
) -> None:
    pid = operated.pid("db")
    answer = operated.ask(command="stop", names=["db", "wrker"])
    assert answer["ok"] is False
    assert answer["error"].startswith("no service named 'wrker'; did you mean")
    assert operated.pid("db") == pid
