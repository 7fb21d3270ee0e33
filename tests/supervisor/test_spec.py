"""A service's spec: what it accepts, and how a bad one is rejected.

``ServiceSpec`` is checked when it is made (no Twisted, no process): a
command string split like a shell would, signals by name or number, exit
codes, and errors naming the service and the field.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest

from procwork import ConfigError
from procwork.supervisor import ServiceSpec
from tests.support.fake_supervisor import spec


def test_a_command_string_is_split_like_a_shell_would_but_never_run_by_one() -> None:
    s = ServiceSpec("web", "python3 -m http.server --bind '127.0.0.1' 8000")
    assert s.argv == ("python3", "-m", "http.server", "--bind", "127.0.0.1", "8000")
    assert ServiceSpec("web", ["a b", "c"]).argv == ("a b", "c")


def test_the_stop_signal_may_be_given_by_name_or_number() -> None:
    assert spec("a", stop_signal="INT").stop_signum is signal.SIGINT
    assert spec("a", stop_signal="sighup").stop_signum is signal.SIGHUP
    assert spec("a", stop_signal=9).stop_signum is signal.SIGKILL
    assert spec("a").stop_signum is signal.SIGTERM


def test_success_exit_codes_from_a_config_list_are_kept_as_a_frozenset() -> None:
    assert spec("a", success_exit_codes=[0, 3]).success_exit_codes == {0, 3}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"command": ""}, r"service 'x': command is empty"),
        ({"command": []}, r"service 'x': command is empty"),
        ({"command": "echo 'unclosed"}, r"service 'x': command .* cannot be split"),
        ({"command": ["ok", 3]}, r"service 'x': command must be a string or a list"),
        ({"restart": "sometimes"}, r"restart must be one of 'always', 'on-failure'"),
        ({"max_restarts": -1}, r"max_restarts must be a whole number >= 0"),
        ({"max_restarts": 2.5}, r"max_restarts must be a whole number >= 0"),
        ({"restart_window": 0}, r"restart_window must be a finite number > 0"),
        ({"min_restart_delay": -1}, r"min_restart_delay must be a finite number >= 0"),
        (
            {"stop_timeout": "5"},
            r"stop_timeout must be a number of seconds or a duration like .*, not '5'",
        ),
        ({"start_seconds": float("inf")}, r"start_seconds must be a finite number"),
        (
            {"min_restart_delay": 10, "max_restart_delay": 5},
            r"max_restart_delay \(5 s\) is less than min_restart_delay \(10 s\)",
        ),
        ({"stop_signal": "SIGNOPE"}, r"stop_signal must be a signal number or name"),
        ({"stop_signal": 0}, r"stop_signal must be a signal number or name"),
        ({"success_exit_codes": [0, 256]}, r"success_exit_codes must hold exit codes"),
        ({"success_exit_codes": 0}, r"success_exit_codes must be a list of codes"),
        ({"env": {"A": 1}}, r"env has A = 1, which is not a string"),
        ({"env": {"A=B": "c"}}, r"env has 'A=B', which is not a valid variable name"),
        ({"env": ["A"]}, r"env must be a table"),
        ({"nice": 40}, r"nice must be a whole number from -20 to 19"),
        ({"after": "x"}, r"service 'x': after names the service itself"),
        ({"max_log_line": 0}, r"max_log_line must be a whole number >= 1"),
        ({"inherit_env": "no"}, r"inherit_env must be true or false"),
        (
            {"start_seconds": 10, "stable_seconds": "5s"},
            r"stable_seconds \(5 s\) is less than start_seconds \(10 s\): a run is "
            r"stable only once it has started",
        ),
        ({"stable_seconds": -1}, r"stable_seconds must be a finite number >= 0"),
        ({"repeat_every": "often"}, r"repeat_every must be a number of seconds"),
    ],
)
def test_an_invalid_field_is_rejected_naming_the_service_and_the_field(
    changes: dict[str, Any], message: str
) -> None:
    fields: dict[str, Any] = {"command": ["svc"], **changes}
    with pytest.raises(ConfigError, match=message):
        ServiceSpec("x", **fields)


def test_a_run_is_stable_after_60_s_by_default_or_start_seconds_if_longer() -> None:
    assert spec("a").stable_seconds == 60
    assert spec("a", start_seconds=90).stable_seconds == 90
    assert spec("a", stable_seconds="2m30s").stable_seconds == 150
    assert spec("a", repeat_every="1h").repeat_every == 3600


def test_a_service_needs_a_name_without_spaces() -> None:
    with pytest.raises(ConfigError, match="service name must be a non-empty"):
        ServiceSpec("", ["svc"])
    with pytest.raises(
        ConfigError, match=r"^service name must have no spaces, not 'a b'$"
    ):
        ServiceSpec("a b", ["svc"])


def test_spec_errors_are_ValueErrors_too() -> None:
    """ConfigError is also the builtin ValueError."""
    with pytest.raises(ValueError):
        ServiceSpec("x", [])
