"""The monitor's TOML config: what loads, and how a bad one is rejected.

A bad config is rejected before anything runs, with a :class:`ConfigError`
whose message names the file, the table or entry, and the key. A config of
several files (includes, ``${VAR}``, relative paths) is ``test_configfiles.py``.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import sys
import textwrap
from pathlib import Path

import attrs
import pytest

from procwork import ConfigError
from procwork._fields import file_keys
from procwork.monitor import (
    AlertSpec,
    CheckSpec,
    MonitorConfig,
    Rule,
    load_config,
    parse_config,
)
from procwork.monitor._config import parse_http
from procwork.monitor._toml import dump_config
from procwork.supervisor import ServiceSpec
from tests.support import ROOT
from tests.support.configs import rejected, write

DEFAULT = ROOT / "procwork" / "monitor" / "default.toml"
EXAMPLE = ROOT / "specs" / "example-monitor.toml"


# -- configs that load ----------------------------------------------------------


def test_the_built_in_config_loads_with_a_service_checks_and_a_dry_run_rule() -> None:
    config = load_config(None)
    assert config.source == "<built-in config>"
    assert [s.name for s in config.services] == ["heartbeat"]
    assert [c.name for c in config.checks] == ["load", "disk-root", "memory"]
    [rule] = config.rules
    assert (rule.name, rule.dry_run) == ("stale-sleep", True)
    assert config.http == ("127.0.0.1", 8642)
    assert (config.summary_every, config.rules_every) == (30.0, 10.0)


def test_the_built_in_configs_python_runs_on_the_interpreter_running_procwork() -> None:
    config = load_config(None)
    for argv in [s.argv for s in config.services]:
        assert argv[0] == sys.executable
        compile(argv[-1], "<default.toml>", "exec")  # the one-liners are Python


def test_the_built_in_config_is_the_packaged_default_toml() -> None:
    assert load_config(None) == attrs.evolve(
        load_config(str(DEFAULT)), source="<built-in config>"
    )


def test_the_documented_example_config_loads() -> None:
    config = load_config(str(EXAMPLE))
    assert config.source == str(EXAMPLE)
    assert config.services and config.checks and config.rules
    assert all(rule.dry_run for rule in config.rules), "the example is harmless"
    names = [s.name for s in config.services]
    for service in config.services:
        assert set(service.after) <= set(names)


def test_the_documented_example_config_shows_every_key() -> None:
    text = EXAMPLE.read_text()
    # Set, or shown commented out ("# user = ...": it would need root).
    documented = set(re.findall(r"^(?:# )?(\w+) *=", text, flags=re.MULTILINE))
    for cls in (ServiceSpec, CheckSpec, Rule, AlertSpec, MonitorConfig):
        keys = set(file_keys(cls))
        assert keys <= documented, f"{cls.__name__}: {sorted(keys - documented)}"
    assert {"numprocs", "include"} <= documented


def test_an_empty_config_is_valid_and_takes_the_defaults() -> None:
    assert parse_config("", "empty.toml") == MonitorConfig(source="empty.toml")


def test_a_full_config_becomes_specs_services_in_start_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [monitor]
        summary_every = 0
        rules_every = 0.5
        http = "[::1]:0"
        json_log = true
        max_running = 4
        max_load = false

        [[service]]
        name = "db"
        command = "{python} -m db --port 5432"
        stop_signal = "SIGINT"
        env = { MODE = "test" }

        [[service]]
        name = "web"
        command = ["{python}", "-m", "http.server"]
        after = "db"
        success_exit_codes = [0, 3]

        [[check]]
        name = "df"
        command = ["df", "-h"]
        every = 10
        on_failure = "{python} cleanup.py"

        [[rule]]
        name = "cgi"
        process_name = "perl"
        cmdline = '\\.cgi\\b'
        max_age = 600
        max_rss = "512M"
        action = "term"
        allow_pids = [4242]
        """,
    )
    config = load_config(path)
    assert config.summary_every == 0.0
    assert config.rules_every == 0.5
    assert config.http == ("::1", 0)
    assert (config.json_log, config.max_running, config.max_load) == (True, 4, None)
    db, web = config.services
    assert db.argv == (sys.executable, "-m", "db", "--port", "5432")
    assert db.stop_signum is signal.SIGINT
    assert dict(db.env or {}) == {"MODE": "test"}
    assert (web.after, web.success_exit_codes) == (("db",), frozenset({0, 3}))
    [check] = config.checks
    assert check.on_failure == (sys.executable, "cleanup.py")
    [rule] = config.rules
    assert (rule.max_rss, rule.allow_pids) == (512 << 20, frozenset({4242}))


def test_the_http_endpoint_can_be_turned_off() -> None:
    assert parse_config("[monitor]\nhttp = false\n").http is None


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("512M", 512 << 20),
        ("512MB", 512 << 20),
        ("512MiB", 512 << 20),
        ("2G", 2 << 30),
        ("1.5k", 1536),
        ("10 M", 10 << 20),
        ("1T", 1 << 40),
        ("4096", 4096),
        (4096, 4096),
    ],
)
def test_max_rss_takes_bytes_or_a_size_string(size: object, expected: int) -> None:
    text = f"""
        [[rule]]
        name = "hog"
        process_name = "x"
        max_rss = {size!r}
        """.replace("'", '"')
    [rule] = parse_config(textwrap.dedent(text)).rules
    assert rule.max_rss == expected


# -- configs that are rejected --------------------------------------------------


def test_a_missing_file_is_rejected_naming_it(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.toml")
    with pytest.raises(
        ConfigError,
        match=rf"^{re.escape(path)}: cannot read config: No such file or directory$",
    ):
        load_config(path)


def test_a_directory_is_rejected_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(tmp_path))}: cannot read"):
        load_config(str(tmp_path))


def test_a_file_that_is_not_utf8_is_rejected_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"# caf\xe9\n")
    with pytest.raises(
        ConfigError, match=rf"^{re.escape(str(path))}: cannot read config: not UTF-8"
    ):
        load_config(str(path))


def test_a_file_that_is_not_toml_is_rejected_naming_the_file_and_line(
    tmp_path: Path,
) -> None:
    message = rejected(tmp_path, "[monitor]\nhttp = 127.0.0.1:80\n")
    assert "not valid TOML" in message and "line 2" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "[monitr]\n",
            "unknown table 'monitr'; expected [monitor], [[service]], [[check]], "
            "[[rule]], [[service_rule]] and [[alert]] (and include)",
            id="unknown-table",
        ),
        pytest.param(
            "monitor = 3\n",
            "[monitor]: must be a table",
            id="monitor-not-a-table",
        ),
        pytest.param(
            "[monitor]\nsumary_every = 5\n",
            "[monitor]: unknown key 'sumary_every'; did you mean 'summary_every'?",
            id="unknown-monitor-key",
        ),
        pytest.param(
            "[monitor]\nverbose = true\n",
            "[monitor]: unknown key 'verbose'; known keys: contain, "
            "control_idle_timeout, control_max_connections, http, http_control, "
            "http_max_connections, http_token, json_log, log, log_level, max_load, "
            "max_running, nice, realtime, rules_every, smtp, smtp_from, socket, "
            "summary_every, syslog_facility, syslog_format",
            id="unknown-monitor-key-listed",
        ),
        pytest.param(
            '[check]\nname = "df"\n',
            "'check' must be written as [[check]] tables",
            id="table-not-array",
        ),
        pytest.param(
            '[[check]]\nname = "df"\ncommand = "df"\nevery = 5\ninterval = 5\n',
            "[[check]] #1 ('df'): unknown key 'interval'; known keys: "
            + ", ".join(sorted(file_keys(CheckSpec))),
            id="unknown-check-key",
        ),
        pytest.param(
            '[[check]]\nname = "df"\ncommand = "df"\n',
            "[[check]] #1 ('df'): missing required key 'every'",
            id="missing-check-key",
        ),
        pytest.param(
            '[[service]]\ncommand = "sleep 9"\n',
            "[[service]] #1: missing required key 'name'",
            id="missing-service-name",
        ),
        pytest.param(
            '[[check]]\nname = "ok"\ncommand = "true"\nevery = 1\n'
            '[[check]]\nname = "df"\ncommand = "df"\nevery = "10"\n',
            "[[check]] #2 ('df'): every must be a number of seconds or a duration like "
            "'500ms', '5s', '1.5s', '2m', '1h', '1d' or '1m30s', not '10'",
            id="wrong-type",
        ),
        pytest.param(
            '[[check]]\nname = "df"\ncommand = "df"\nevery = 5\npriority = "asap"\n',
            "[[check]] #1 ('df'): priority must be one of 'critical', 'high',"
            " 'normal', 'low', not 'asap'",
            id="bad-priority",
        ),
        pytest.param(
            '[[service]]\nname = "web"\ncommand = "web"\nrestart = "sometimes"\n',
            "[[service]] #1 ('web'): restart must be one of 'always', "
            "'on-failure', 'never', not 'sometimes'",
            id="bad-service-value",
        ),
        pytest.param(
            '[[service]]\nname = "web"\ncommand = "web"\nport = 80\n',
            "[[service]] #1 ('web'): unknown key 'port'",
            id="unknown-service-key",
        ),
        pytest.param(
            '[[rule]]\nname = "r"\nprocess_name = "x"\nmax_age = 5\naction = "nuke"\n',
            "[[rule]] #1 ('r'): action must be one of 'log', 'term', 'kill',"
            " not 'nuke'",
            id="bad-rule-action",
        ),
        pytest.param(
            '[[rule]]\nname = "r"\nprocess_name = "x"\nmax_rss = "lots"\n',
            "[[rule]] #1 ('r'): max_rss must be a number of bytes or a size like "
            "'64K', '10M' or '1G' (K = 1024 bytes), not 'lots'",
            id="bad-size",
        ),
        pytest.param(
            '[[rule]]\nname = "r"\nprocess_name = "x"\nmax_rss = "inf"\n',
            "[[rule]] #1 ('r'): max_rss must be a number of bytes or a size like "
            "'64K', '10M' or '1G' (K = 1024 bytes), not 'inf'",
            id="infinite-size",
        ),
        pytest.param(
            '[[rule]]\nname = "r"\nprocess_name = "x"\nmax_age = 1\n'
            'allow_pids = ["init"]\n',
            "[[rule]] #1 ('r'): allow_pids must hold positive pids, not 'init'",
            id="bad-allow-pids",
        ),
        pytest.param(
            '[[service]]\nname = "a"\ncommand = "a"\n'
            '[[service]]\nname = "a"\ncommand = "b"\n',
            "[[service]] #2 ('a'): service 'a' is defined twice (first at "
            "[[service]] #1 ('a'))",
            id="duplicate-service",
        ),
        pytest.param(
            '[[check]]\nname = "df"\ncommand = "df"\nevery = 1\n'
            '[[check]]\nname = "df"\ncommand = "du"\nevery = 1\n',
            "check 'df' is defined twice",
            id="duplicate-check",
        ),
        pytest.param(
            '[[rule]]\nname = "r"\nprocess_name = "x"\nmax_age = 1\n'
            '[[rule]]\nname = "r"\nprocess_name = "y"\nmax_age = 1\n',
            "rule 'r' is defined twice",
            id="duplicate-rule",
        ),
        pytest.param(
            '[[service]]\nname = "web"\ncommand = "web"\nafter = "db"\n',
            "[[service]] #1 ('web'): after names 'db', which is not a [[service]] "
            "defined before it",
            id="after-unknown",
        ),
        pytest.param(
            '[[service]]\nname = "web"\ncommand = "web"\nafter = "db"\n'
            '[[service]]\nname = "db"\ncommand = "db"\n',
            "[[service]] #1 ('web'): after names 'db', which is not a [[service]] "
            "defined before it",
            id="after-later",
        ),
        pytest.param(
            '[monitor]\nhttp = "localhost"\n',
            "[monitor]: http must be HOST:PORT like 127.0.0.1:8642 (port 0: any "
            "free port), not 'localhost'",
            id="http-no-port",
        ),
        pytest.param(
            '[monitor]\nhttp = "127.0.0.1:99999"\n',
            "[monitor]: http must be HOST:PORT like 127.0.0.1:8642 (port 0: any "
            "free port), not '127.0.0.1:99999'",
            id="http-bad-port",
        ),
        pytest.param(
            "[monitor]\nhttp = 8642\n",
            "[monitor]: http must be HOST:PORT like 127.0.0.1:8642 (port 0: any "
            "free port), not 8642",
            id="http-not-a-string",
        ),
        pytest.param(
            "[monitor]\nrules_every = 0\n",
            "[monitor]: rules_every must be a finite number > 0, not 0",
            id="rules-every-zero",
        ),
        pytest.param(
            "[monitor]\nsummary_every = -1\n",
            "[monitor]: summary_every must be a finite number >= 0, not -1",
            id="summary-every-negative",
        ),
        pytest.param(
            '[monitor]\njson_log = "yes"\n',
            "[monitor]: json_log must be true or false, not 'yes'",
            id="json-log-not-bool",
        ),
        pytest.param(
            "[monitor]\nmax_running = 0\n",
            "[monitor]: max_running must be a whole number >= 1, not 0",
            id="max-running-zero",
        ),
        pytest.param(
            "[monitor]\nmax_load = true\n",
            "[monitor]: max_load must be a number, not True",
            id="max-load-true",
        ),
        pytest.param(
            '[[alert]]\nname = "a"\n',
            "[[alert]] #1 ('a'): needs a command, a webhook or mail (one of them; "
            "for two, write two alerts)",
            id="alert-without-action",
        ),
        pytest.param(
            '[[alert]]\nname = "a"\nwebhook = "ftp://x"\n',
            "webhook must be an http:// or https:// URL, not 'ftp://x'",
            id="alert-webhook-not-http",
        ),
        pytest.param(
            '[[alert]]\nname = "a"\nwebhook = "http://x"\nevents = ["check.fail"]\n',
            "events has 'check.fail', which matches no event",
            id="alert-unknown-event",
        ),
        pytest.param(
            '[[alert]]\nname = "a"\nwebhook = "http://x"\nmax_in_flight = 0\n',
            "[[alert]] #1 ('a'): max_in_flight must be a whole number >= 1, not 0",
            id="alert-max-in-flight-zero",
        ),
        pytest.param(
            '[[alert]]\nname = "a"\ncommand = "true"\nmax_queued = "lots"\n',
            "[[alert]] #1 ('a'): max_queued must be a whole number >= 0, not 'lots'",
            id="alert-max-queued-not-a-number",
        ),
        pytest.param(
            "[monitor]\nhttp_max_connections = 0\n",
            "[monitor]: http_max_connections must be a whole number >= 1, not 0",
            id="http-max-connections-zero",
        ),
        pytest.param(
            '[[service]]\nname = "s"\ncommand = "true"\nconsole_rate = -1\n',
            "[[service]] #1 ('s'): console_rate must be a finite number >= 0, not -1",
            id="console-rate-negative",
        ),
        pytest.param(
            '[[service]]\nname = "s"\ncommand = "true"\nlog_backups = -1\n',
            "[[service]] #1 ('s'): log_backups must be a whole number >= 0, not -1",
            id="log-backups-negative",
        ),
    ],
)
def test_a_bad_config_is_rejected_naming_the_file_the_entry_and_the_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    message = rejected(tmp_path, text)
    assert expected in message


def test_the_entry_is_named_by_its_position_when_it_has_no_usable_name(
    tmp_path: Path,
) -> None:
    message = rejected(tmp_path, '[[check]]\nname = 7\ncommand = "df"\nevery = 1\n')
    assert "[[check]] #1: name must be a non-empty string, not 7" in message


def test_parse_config_names_the_source_it_is_given() -> None:
    with pytest.raises(ConfigError, match=r"^inline: \[monitor\]: unknown key 'x'"):
        parse_config("[monitor]\nx = 1\n", "inline")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8642", ("127.0.0.1", 8642)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:80", ("::1", 80)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_an_http_address_is_host_colon_port(
    value: str, expected: tuple[str, int]
) -> None:
    assert parse_http(value) == expected


@pytest.mark.parametrize("value", [":8642", "localhost", "host:http", "h:70000", ""])
def test_a_bad_http_address_is_rejected_naming_where_it_came_from(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^--http must be HOST:PORT like "):
        parse_http(value)


# -- supervisord's conventions ------------------------------------------------------


def test_numprocs_makes_instances_numbered_in_name_command_env_and_cwd(
    tmp_path: Path,
) -> None:
    for i in range(3):
        (tmp_path / f"spool-{i}").mkdir()
    path = write(
        tmp_path,
        """
        [[service]]
        name = "worker-{instance}"
        numprocs = 3
        command = ["{python}", "-m", "worker", "--slot={instance}"]
        env = { SLOT = "{instance}" }
        cwd = "spool-{instance}"

        [[service]]
        name = "web"
        command = "{python} -m web"
        after = ["worker-0", "worker-2"]
        """,
    )
    config = load_config(path)
    workers = config.services[:3]
    assert [w.name for w in workers] == ["worker-0", "worker-1", "worker-2"]
    assert [w.argv[-1] for w in workers] == ["--slot=0", "--slot=1", "--slot=2"]
    assert [dict(w.env or {}) for w in workers] == [{"SLOT": str(i)} for i in range(3)]
    assert [w.cwd for w in workers] == [str(tmp_path / f"spool-{i}") for i in range(3)]
    assert config.services[3].after == ("worker-0", "worker-2")


def test_instance_is_0_in_a_service_without_numprocs() -> None:
    [svc] = parse_config(
        '[[service]]\nname = "solo-{instance}"\ncommand = "true"\n'
    ).services
    assert svc.name == "solo-0"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        pytest.param(
            'name = "worker"\nnumprocs = 2\n',
            "[[service]] #1 ('worker'): numprocs = 2 needs {instance} in the "
            'name, like name = "worker-{instance}"',
            id="no-instance-in-name",
        ),
        pytest.param(
            'name = "w-{instance}"\nnumprocs = 0\n',
            "[[service]] #1 ('w-{instance}'): numprocs must be a whole number >= 1, "
            "not 0",
            id="zero",
        ),
    ],
)
def test_bad_numprocs_are_rejected(tmp_path: Path, entry: str, expected: str) -> None:
    message = rejected(tmp_path, f'[[service]]\ncommand = "true"\n{entry}')
    assert message.endswith(expected)


def test_autostart_user_group_and_umask_are_read_from_the_config() -> None:
    [svc] = parse_config(
        '[[service]]\nname = "s"\ncommand = "true"\nautostart = false\n'
        'user = "nobody"\ngroup = "nogroup"\numask = 0o027\n'
    ).services
    assert (svc.autostart, svc.user, svc.group, svc.umask) == (
        False,
        "nobody",
        "nogroup",
        0o027,
    )


def test_an_unknown_user_is_rejected_naming_the_entry(tmp_path: Path) -> None:
    message = rejected(
        tmp_path, '[[service]]\nname = "s"\ncommand = "true"\nuser = "nosuchuser9"\n'
    )
    assert message.endswith(
        "[[service]] #1 ('s'): user 'nosuchuser9' does not exist on this machine"
    )


def test_a_user_or_group_given_as_a_string_of_digits_is_a_uid_or_gid() -> None:
    """As the docs say: ``user = "1000"`` is uid 1000, as ``user = 1000`` is
    (TOML users quote numbers too). Procwork's own, so no root is needed."""
    uid, gid = os.getuid(), os.getgid()
    [svc] = parse_config(
        f'[[service]]\nname = "s"\ncommand = "true"\nuser = "{uid}"\ngroup = "{gid}"\n'
    ).services
    credentials = svc.credentials()
    assert credentials is not None
    assert (credentials.uid, credentials.gid) == (uid, gid)
    assert svc.user == str(uid), "the config keeps what was written"


@pytest.mark.skipif(os.getuid() != 0, reason="running as another user needs root")
def test_user_65534_in_quotes_runs_the_service_as_uid_65534() -> None:
    [svc] = parse_config(
        '[[service]]\nname = "s"\ncommand = "true"\nuser = "65534"\n'
    ).services
    credentials = svc.credentials()
    assert credentials is not None
    assert (credentials.uid, credentials.gid) == (65534, pwd.getpwuid(65534).pw_gid)


def test_a_name_made_of_digits_is_a_name_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """A user whose name is digits (chown(1) reads it so too) is that user."""
    me = pwd.getpwuid(os.getuid())
    real = pwd.getpwnam

    def getpwnam(name: str) -> pwd.struct_passwd:
        return me if name == "4242" else real(name)

    monkeypatch.setattr(pwd, "getpwnam", getpwnam)
    [svc] = parse_config(
        '[[service]]\nname = "s"\ncommand = "true"\nuser = "4242"\n'
    ).services
    credentials = svc.credentials()
    assert credentials is not None and credentials.uid == me.pw_uid


@pytest.mark.parametrize(
    ("value", "shown"),
    [("4294967296", "'4294967296'"), ("9" * 5000, "'999"), ("٣", "'٣'")],
)
def test_digits_that_are_no_id_here_are_an_unknown_user(
    tmp_path: Path, value: str, shown: str
) -> None:
    message = rejected(
        tmp_path, f'[[service]]\nname = "s"\ncommand = "true"\nuser = "{value}"\n'
    )
    assert f"[[service]] #1 ('s'): user {shown}" in message
    assert message.endswith("does not exist on this machine")


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        pytest.param(
            '[[service]]\nname = "s"\ncommand = "no-such-program-x"\n',
            "[[service]] #1 ('s') command: 'no-such-program-x' not found on PATH (",
            id="service-not-on-path",
        ),
        pytest.param(
            '[[service]]\nname = "s"\ncommand = "true"\ncwd = "nowhere"\n',
            "[[service]] #1 ('s') cwd: '{dir}/nowhere' does not exist (a relative "
            "cwd is relative to {dir}, the config file's directory)",
            id="missing-cwd",
        ),
        pytest.param(
            '[[service]]\nname = "s"\ncommand = "true"\ncwd = "monitor.toml"\n',
            "[[service]] #1 ('s') cwd: '{dir}/monitor.toml' is not a directory",
            id="cwd-not-a-dir",
        ),
        pytest.param(
            '[[service]]\nname = "s"\ncommand = "bin/nope"\n',
            "[[service]] #1 ('s') command: '{dir}/bin/nope' does not exist (a "
            "relative command is relative to the service's cwd, else to {dir}, the "
            "config file's directory)",
            id="missing-relative-command",
        ),
        pytest.param(
            '[[service]]\nname = "s"\ncommand = "./monitor.toml"\n',
            "[[service]] #1 ('s') command: '{dir}/monitor.toml' is not an "
            "executable file",
            id="not-executable",
        ),
        pytest.param(
            '[[service]]\nname = "s"\ncommand = "true"\nenv = { PATH = "/nonexistent" }'
            "\n",
            "[[service]] #1 ('s') command: 'true' not found on PATH (/nonexistent)",
            id="service-PATH-from-its-env",
        ),
        pytest.param(
            '[[check]]\nname = "c"\ncommand = "no-such-program-x"\nevery = 1\n',
            "[[check]] #1 ('c') command: 'no-such-program-x' not found on PATH",
            id="check-not-on-path",
        ),
        pytest.param(
            '[[check]]\nname = "c"\ncommand = "true"\nevery = 1\n'
            'on_failure = "no-such-fixer-x"\n',
            "[[check]] #1 ('c') on_failure: 'no-such-fixer-x' not found on PATH",
            id="action-not-on-path",
        ),
    ],
)
def test_what_cannot_run_on_this_machine_is_rejected_at_start(
    tmp_path: Path, entry: str, expected: str
) -> None:
    message = rejected(tmp_path, entry)
    assert expected.format(dir=tmp_path) in message


def test_the_machine_checks_can_be_left_out_for_a_config_made_elsewhere() -> None:
    text = '[[service]]\nname = "s"\ncommand = "no-such-program-x"\ncwd = "/nope"\n'
    [svc] = parse_config(text, check_system=False).services
    assert svc.argv == ("no-such-program-x",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "[monitor]\nsummary_every = nan\n",
            "[monitor]: summary_every must be a finite number >= 0, not nan",
            id="summary-nan",
        ),
        pytest.param(
            "[monitor]\nrules_every = inf\n",
            "[monitor]: rules_every must be a finite number > 0, not inf",
            id="rules-inf",
        ),
        pytest.param(
            "[monitor]\nmax_load = nan\n",
            "[monitor]: max_load must be a finite number > 0, not nan",
            id="max-load-nan",
        ),
        pytest.param(
            "[monitor]\nrules_every = 1e-300\n",
            "[monitor]: rules_every must be at least 0.01 s (a shorter interval is "
            "a busy loop), not 1e-300",
            id="rules-tiny",
        ),
        pytest.param(
            '[[check]]\nname = "c"\ncommand = "true"\nevery = 1e-300\n',
            "[[check]] #1 ('c'): every must be at least 0.01 s (a shorter interval "
            "is a busy loop), not 1e-300",
            id="check-every-tiny",
        ),
        pytest.param(
            '[[check]]\nname = "c"\ncommand = "true"\nevery = nan\n',
            "[[check]] #1 ('c'): every must be a finite number > 0, not nan",
            id="check-every-nan",
        ),
        pytest.param(
            '[[check]]\nname = "c"\ncommand = "true"\nevery = 1\ntimeout = inf\n',
            "[[check]] #1 ('c'): timeout must be a finite number > 0, not inf",
            id="check-timeout-inf",
        ),
        pytest.param(
            '[[check]]\nname = "c"\ncommand = []\nevery = 1\n',
            "[[check]] #1 ('c'): command is empty",
            id="check-command-empty",
        ),
        pytest.param(
            '[[check]]\nname = "c"\ncommand = [""]\nevery = 1\n',
            "[[check]] #1 ('c'): command is empty",
            id="check-command-empty-program",
        ),
        pytest.param(
            '[[check]]\nname = "c"\ncommand = ["true", "a\\u0000b"]\nevery = 1\n',
            "[[check]] #1 ('c'): command contains a NUL character",
            id="check-command-nul",
        ),
        pytest.param(
            '[[service]]\nname = "s"\ncommand = "true"\nrestart_window = nan\n',
            "[[service]] #1 ('s'): restart_window must be a finite number > 0, not nan",
            id="service-nan",
        ),
    ],
)
def test_intervals_that_cannot_work_and_empty_commands_are_rejected(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert expected in rejected(tmp_path, text)


def test_the_effective_config_written_as_TOML_loads_back_the_same(
    tmp_path: Path,
) -> None:
    original = load_config(str(EXAMPLE))
    text = dump_config(original)
    again = parse_config(text, original.source)
    assert again == original
    dollars = parse_config(
        '[[service]]\nname = "s"\ncommand = ["sh", "-c", "echo $$HOME\\n\\"x\\""]\n'
    )
    assert parse_config(dump_config(dollars), "<string>") == dollars


def test_relative_log_files_are_relative_to_the_config_files_directory(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        '[[service]]\nname = "s"\ncommand = "true"\nstdout_log = "logs/s.out"\n',
    )
    [service] = load_config(path).services
    assert service.stdout_log == str(tmp_path / "logs" / "s.out")


def test_the_effective_config_keeps_the_alerts() -> None:
    config = load_config(str(EXAMPLE))
    assert [a.name for a in config.alerts] == ["log-to-syslog", "chat", "ops-mail"]
    again = parse_config(dump_config(config), str(EXAMPLE))
    assert again.alerts == config.alerts
