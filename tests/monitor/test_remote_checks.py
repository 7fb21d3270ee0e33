"""A monitor's check on another host (``host =``), against a real OpenSSH
server on 127.0.0.1 (``tests/support/sshd.py``).
"""

from __future__ import annotations

import pytest

import procwork
from tests.support import drive_until, wait
from tests.support.sshd import Sshd

pytestmark = pytest.mark.usefixtures("no_load_gate")


# -- a monitor check on another host --------------------------------------------------


@pytest.mark.e2e
def test_a_monitor_check_with_host_runs_its_command_there(sshd: Sshd) -> None:
    """``host = "..."`` in a [[check]]; the command need not exist here."""
    from procwork.monitor import parse_config
    from procwork.monitor._checks import CheckRunner

    config = parse_config(
        f"""
        [[check]]
        name = "remote"
        command = ["no-such-command-here", "x"]
        every = 60
        host = "{sshd.host}"
        known_hosts = "{sshd.known_hosts}"
        identity = "{sshd.identity}"
        """,
        "remote.toml",
    )
    assert config.checks[0].host == sshd.host
    runner = CheckRunner(config.checks)
    runner.start()
    try:
        status = runner.status["remote"]
        assert drive_until(lambda: status.last_outcome is not None, 30)
        assert status.last_outcome == "error"  # as a local command not found
        assert status.last_detail == (
            f"cannot run 'no-such-command-here x' on {sshd.host}: "
            "command 'no-such-command-here' not found there (on its PATH)"
        )
    finally:
        wait(runner.stop(), 60)


def test_a_check_with_a_malformed_host_is_a_config_error() -> None:
    from procwork.monitor import parse_config

    with pytest.raises(procwork.ConfigError, match=r"remote\.toml.*host 'a b'"):
        parse_config(
            '[[check]]\nname = "x"\ncommand = "true"\nevery = 1\nhost = "a b"\n',
            "remote.toml",
        )
