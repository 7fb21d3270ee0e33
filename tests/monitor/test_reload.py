"""What a reload changes: the difference between two configs, a pure function.

:func:`procwork.monitor._reload.diff_config` tells services, checks and rules
apart by name and spec (added, removed, changed, unchanged) and the settings
bound at start from those a reload may change. How the running monitor
applies it is in ``test_control.py``.
"""

from __future__ import annotations

import textwrap

from procwork.monitor import parse_config
from procwork.monitor._reload import diff_config
from tests.support.fake_monitor import checks, rules, services


def test_a_reload_adds_removes_changes_and_keeps_services_by_name_and_spec() -> None:
    old = parse_config(services("a", "b", "c", "d"), check_system=False)
    new = parse_config(
        services("a", "c:stop_signal = 'INT'", "e", "d:env = {X = '1'}"),
        check_system=False,
    )
    diff = diff_config(old, new)
    assert (diff.added, diff.removed, diff.changed, diff.unchanged) == (
        ("e",),
        ("b",),
        ("c", "d"),
        ("a",),
    )
    assert str(diff) == "services: added e; removed b; changed c, d; 1 unchanged"
    assert diff.to_dict()["changed"] == ["c", "d"]


def test_removed_services_go_in_reverse_order_so_dependents_stop_first() -> None:
    old = parse_config(services("a", "b:after = 'a'", "c"), check_system=False)
    new = parse_config(services("c"), check_system=False)
    assert diff_config(old, new).removed == ("b", "a")


def test_the_same_config_read_again_changes_nothing() -> None:
    text = services("a:env = {X = '1'}\nstop_signal = 'HUP'", "b") + textwrap.dedent(
        """
        [[check]]
        name = "disk"
        command = ["true"]
        every = 30
        [[rule]]
        name = "old"
        process_name = "perl"
        max_age = 60
        """
    )
    diff = diff_config(parse_config(text), parse_config(text))
    assert diff.unchanged == ("a", "b")
    assert (diff.checks_unchanged, diff.rules_unchanged) == (("disk",), ("old",))
    assert not (diff.added or diff.removed or diff.changed or diff.not_applied)
    assert not (diff.checks_added or diff.checks_removed or diff.checks_changed)
    assert not (diff.rules_added or diff.rules_removed or diff.rules_changed)


def test_checks_rules_and_settings_bound_at_start_are_told_apart() -> None:
    old = parse_config('[monitor]\nhttp = "127.0.0.1:1"\n')
    new = parse_config(
        '[monitor]\nhttp = "127.0.0.1:2"\nsocket = "/x.sock"\n'
        '[[check]]\nname = "c"\ncommand = ["true"]\nevery = 5\n'
    )
    diff = diff_config(old, new)
    assert diff.checks_added == ("c",) and not diff.rules_added
    assert diff.not_applied == ("http", "socket")


def test_a_reload_tells_checks_and_rules_apart_by_name_and_spec_as_services() -> None:
    """Each kind lists what was added, removed and changed, and counts the
    rest; a kind neither config has is not mentioned."""
    old = parse_config(
        checks("disk", "load", "mem") + rules("slow:600", "gone:60"),
        check_system=False,
    )
    new = parse_config(
        checks("load", "disk:timeout = 5", "swap", "mem")
        + rules("slow:600", "stale:3600"),
        check_system=False,
    )
    diff = diff_config(old, new)
    assert (
        diff.checks_added,
        diff.checks_removed,
        diff.checks_changed,
        diff.checks_unchanged,
    ) == (("swap",), (), ("disk",), ("load", "mem"))
    assert (
        diff.rules_added,
        diff.rules_removed,
        diff.rules_changed,
        diff.rules_unchanged,
    ) == (("stale",), ("gone",), (), ("slow",))
    assert str(diff) == (
        "services: added none; removed none; changed none; 0 unchanged"
        " | checks: added swap; removed none; changed disk; 2 unchanged"
        " | rules: added stale; removed gone; changed none; 1 unchanged"
    )
    answer = diff.to_dict()
    assert answer["checks_changed"] == ["disk"]
    assert answer["rules_removed"] == ["gone"]
    assert str(diff_config(new, new)) == (
        "services: added none; removed none; changed none; 0 unchanged"
        " | checks: added none; removed none; changed none; 4 unchanged"
        " | rules: added none; removed none; changed none; 2 unchanged"
    )
