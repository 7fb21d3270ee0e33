"""Where ``procwork ctl`` looks for its monitor.

``--socket PATH``, else the ``[monitor] socket`` of ``--config FILE`` (read
as the monitor reads it, without loading the config), else
``$PROCWORK_SOCKET``, else the default socket. Pure functions here; the
real ctl finding a real monitor each way is
``tests/cli/test_ctl_find_and_wait_e2e.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from procwork import ConfigError
from procwork.cli._ctl import EXIT_UNREACHABLE, EXIT_USAGE, find_socket
from procwork.monitor._configfiles import control_socket
from procwork.monitor._protocol import ControlError, default_socket_path

ENVIRON = {"XDG_RUNTIME_DIR": "/run/user/1000", "SOCKETS": "/srv/sockets"}
DEFAULT = "/run/user/1000/procwork/monitor.sock"


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "etc" / "monitor.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return str(path)


def test_the_socket_option_wins_then_the_config_then_the_variable_then_the_default(
    tmp_path: Path,
) -> None:
    named = config(tmp_path, '[monitor]\nsocket = "/srv/app.sock"\n')
    variable = {**ENVIRON, "PROCWORK_SOCKET": "/tmp/from-env.sock"}
    assert find_socket("/given.sock", None, variable) == "/given.sock"
    assert find_socket(None, named, variable) == "/srv/app.sock"
    assert find_socket(None, None, variable) == "/tmp/from-env.sock"
    assert find_socket(None, None, ENVIRON) == DEFAULT
    assert default_socket_path(ENVIRON) == DEFAULT


def test_a_config_that_names_no_socket_means_the_default_as_for_its_monitor(
    tmp_path: Path,
) -> None:
    """Its monitor serves the default socket, whatever $PROCWORK_SOCKET says."""
    unnamed = config(tmp_path, '[[service]]\nname = "web"\ncommand = "sleep 60"\n')
    variable = {**ENVIRON, "PROCWORK_SOCKET": "/tmp/from-env.sock"}
    assert find_socket(None, unnamed, variable) == DEFAULT


@pytest.mark.parametrize(
    ("socket", "found"),
    [
        ('"ctl.sock"', "{tmp}/etc/ctl.sock"),  # relative to the config's directory
        ('"../run/ctl.sock"', "{tmp}/run/ctl.sock"),
        ('"${SOCKETS}/app.sock"', "/srv/sockets/app.sock"),
        ('"${NOPE:-/srv/default.sock}"', "/srv/default.sock"),
        ("false", False),
    ],
)
def test_the_configs_socket_is_read_as_the_monitor_reads_it(
    tmp_path: Path, socket: str, found: str | bool
) -> None:
    path = config(tmp_path, f"[monitor]\nsocket = {socket}\n")
    if isinstance(found, str):
        found = found.format(tmp=tmp_path)
    assert control_socket(path, ENVIRON) == found


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[monitor\n", r"monitor\.toml: not valid TOML"),
        ("monitor = 3\n", r"monitor\.toml: \[monitor\]: must be a table"),
        ("[monitor]\nsocket = 5\n", r"\[monitor\] socket: must be a path or false"),
        ('[monitor]\nsocket = ""\n', r"\[monitor\] socket: must be a path or false"),
        (
            '[monitor]\nsocket = "${UNSET}/x"\n',
            r"\[monitor\] socket: \$\{UNSET\} is not set",
        ),
    ],
)
def test_a_config_whose_socket_cannot_be_read_is_refused_naming_file_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        control_socket(config(tmp_path, text), ENVIRON)
    with pytest.raises(ControlError, match=message) as raised:
        find_socket(None, config(tmp_path, text), ENVIRON)
    assert getattr(raised.value, "status", None) == EXIT_USAGE


def test_a_config_without_a_control_socket_is_said_to_serve_none(
    tmp_path: Path,
) -> None:
    path = config(tmp_path, "[monitor]\nsocket = false\n")
    with pytest.raises(ControlError, match="that monitor serves no control socket"):
        find_socket(None, path, ENVIRON)
    with pytest.raises(ControlError) as raised:
        find_socket(None, path, ENVIRON)
    assert getattr(raised.value, "status", None) == EXIT_UNREACHABLE


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match=r"nope\.toml: cannot read config"):
        find_socket(None, str(tmp_path / "nope.toml"), ENVIRON)
