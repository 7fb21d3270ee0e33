"""The config specs' fields: units, unknown keys, errors, the TOML they write.

``ServiceSpec``, ``CheckSpec``, ``Rule``, ``AlertSpec`` and ``MonitorConfig``
are frozen attrs classes whose fields check their values with
``procwork._validate`` and name the entry and the key of a bad one
(``procwork._fields``). The cases here are derived from the field
definitions, so a key added to a spec is covered without a new test.
"""

from __future__ import annotations

import os
import re
import textwrap
from typing import Any

import attrs
import pytest

from procwork import ConfigError
from procwork._fields import file_keys, unit
from procwork._format import format_seconds
from procwork._validate import duration, size
from procwork.monitor import AlertSpec, CheckSpec, MonitorConfig, Rule, parse_config
from procwork.monitor._didyoumean import FOREIGN_KEYS
from procwork.monitor._toml import dump_config
from procwork.supervisor import ServiceSpec
from tests.support import ROOT

EXAMPLE = ROOT / "specs" / "example-monitor.toml"

#: Each spec, its table in a file, and the least entry it accepts.
TABLES: dict[type, tuple[str, dict[str, object]]] = {
    ServiceSpec: ("[[service]]", {"name": "x", "command": "true"}),
    CheckSpec: ("[[check]]", {"name": "x", "command": "true", "every": 1}),
    Rule: ("[[rule]]", {"name": "x", "process_name": "x", "max_age": 1}),
    AlertSpec: ("[[alert]]", {"name": "x", "command": "true"}),
    MonitorConfig: ("[monitor]", {}),
}
KINDS = {ServiceSpec: "service", CheckSpec: "check", Rule: "rule", AlertSpec: "alert"}


def toml_value(value: object) -> str:
    if isinstance(value, str):
        return '"' + value + '"'
    return repr(value)


def config_text(cls: type, **values: object) -> str:
    """A config of one ``cls`` entry: its least entry, with ``values``."""
    table, least = TABLES[cls]
    keys = {**least, **values}
    return table + "\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in keys.items())


def loaded(cls: type, **values: object) -> Any:
    """The one ``cls`` a config of ``values`` holds."""
    config = parse_config(config_text(cls, **values), "t.toml", check_system=False)
    if cls is MonitorConfig:
        return config
    kind = {ServiceSpec: "services", CheckSpec: "checks", Rule: "rules"}
    [spec] = getattr(config, kind.get(cls, "alerts"))
    return spec


def rejected(cls: type, **values: object) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(config_text(cls, **values), "t.toml", check_system=False)
    return str(info.value)


def where(cls: type) -> str:
    """How the error of a one-entry config names the entry."""
    return (
        "t.toml: [monitor]"
        if cls is MonitorConfig
        else f"t.toml: {TABLES[cls][0]} #1 ('x')"
    )


def fields_with(kind: str) -> list[Any]:
    return [
        pytest.param(cls, field.name, id=f"{cls.__name__}.{field.name}")
        for cls in TABLES
        for field in attrs.fields(cls)
        if field.name in file_keys(cls) and unit(field) == kind
    ]


DURATIONS = fields_with("seconds")
SIZES = fields_with("bytes")


def test_the_keys_with_units_are_found_from_the_field_definitions() -> None:
    """A sanity bound: the known durations and sizes are among those found,
    so the parametrized tests below cannot pass on an empty list."""
    durations = {(p.values[0].__name__, p.values[1]) for p in DURATIONS}
    sizes = {(p.values[0].__name__, p.values[1]) for p in SIZES}
    assert {
        ("ServiceSpec", "stop_timeout"),
        ("ServiceSpec", "restart_window"),
        ("CheckSpec", "every"),
        ("Rule", "max_cpu"),
        ("AlertSpec", "retry_delay"),
        ("MonitorConfig", "control_idle_timeout"),
    } <= durations
    assert sizes == {
        ("ServiceSpec", "max_log_line"),
        ("ServiceSpec", "log_max_bytes"),
        ("Rule", "max_rss"),
    }


# -- durations --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("5s", 5.0),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1m30s", 90.0),
        ("1h 30m", 5400.0),
        ("2d12h", 216000.0),
        (" 10s ", 10.0),
        (7, 7.0),
        (2.5, 2.5),
    ],
)
def test_a_duration_is_a_number_of_seconds_or_a_string_with_units(
    text: object, seconds: float
) -> None:
    assert duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["10", "5 sec", "5S", "1x", "m", "", "-5s", "1m30", "five", True, None]
)
def test_a_duration_without_a_unit_or_with_an_unknown_one_is_refused(
    text: object,
) -> None:
    with pytest.raises(ConfigError, match=r"^must be a number of seconds or a "):
        duration(text)


@pytest.mark.parametrize(("cls", "key"), DURATIONS)
@pytest.mark.parametrize(("text", "seconds"), [("1500ms", 1.5), ("1.5s", 1.5)])
def test_every_duration_key_takes_a_string_with_units(
    cls: type, key: str, text: str, seconds: float
) -> None:
    assert getattr(loaded(cls, **{key: text}), key) == seconds


@pytest.mark.parametrize(("cls", "key"), DURATIONS)
def test_every_duration_key_refuses_a_bad_one_showing_the_forms_accepted(
    cls: type, key: str
) -> None:
    assert rejected(cls, **{key: "90"}) == (
        f"{where(cls)}: {key} must be a number of seconds or a duration like "
        "'500ms', '5s', '1.5s', '2m', '1h', '1d' or '1m30s', not '90'"
    )


# -- sizes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size_in_bytes"),
    [
        ("64K", 65536),
        ("64k", 65536),
        ("10M", 10 << 20),
        ("10MB", 10 << 20),
        ("10MiB", 10 << 20),
        ("1G", 1 << 30),
        ("1T", 1 << 40),
        ("1.5K", 1536),
        ("4096", 4096),
        ("4096B", 4096),
        (4096, 4096),
    ],
)
def test_a_size_is_bytes_or_a_string_with_a_binary_unit(
    text: object, size_in_bytes: int
) -> None:
    assert size(text) == size_in_bytes


@pytest.mark.parametrize("text", ["64X", "100iB", "1.5.2K", "-1K", "K", "", 1.5, True])
def test_a_size_with_no_number_or_an_unknown_unit_is_refused(text: object) -> None:
    with pytest.raises(ConfigError, match=r"^must be a number of bytes or a size "):
        size(text)


@pytest.mark.parametrize(("cls", "key"), SIZES)
@pytest.mark.parametrize(
    ("text", "size_in_bytes"), [("64K", 65536), ("10M", 10 << 20), ("1G", 1 << 30)]
)
def test_every_size_key_takes_a_string_with_a_unit(
    cls: type, key: str, text: str, size_in_bytes: int
) -> None:
    assert getattr(loaded(cls, **{key: text}), key) == size_in_bytes


@pytest.mark.parametrize(("cls", "key"), SIZES)
def test_every_size_key_refuses_a_bad_one_showing_the_forms_accepted(
    cls: type, key: str
) -> None:
    assert rejected(cls, **{key: "lots"}) == (
        f"{where(cls)}: {key} must be a number of bytes or a size like '64K', "
        "'10M' or '1G' (K = 1024 bytes), not 'lots'"
    )


# -- unknown keys: did you mean --------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("startsecs", "start_seconds"),
        ("startretries", "max_restarts"),
        ("autorestart", "restart"),
        ("stopwaitsecs", "stop_timeout"),
        ("stopsignal", "stop_signal"),
        ("environment", "env"),
        ("directory", "cwd"),
        ("stdout_logfile", "stdout_log"),
        ("stderr_logfile", "stderr_log"),
        ("priority", "after"),
        ("exitcodes", "success_exit_codes"),
        ("RestartSec", "min_restart_delay"),
        ("ExecStart", "command"),
        ("WorkingDirectory", "cwd"),
        ("Environment", "env"),
        ("TimeoutStopSec", "stop_timeout"),
        ("KillSignal", "stop_signal"),
        ("User", "user"),
        ("Group", "group"),
    ],
)
def test_the_usual_supervisord_and_systemd_names_point_at_the_key_here(
    name: str, key: str
) -> None:
    assert FOREIGN_KEYS[name].key == key


def test_every_foreign_name_is_no_key_here_and_maps_to_a_key_of_a_service() -> None:
    keys = file_keys(ServiceSpec)
    for name, foreign in FOREIGN_KEYS.items():
        assert name not in keys, name
        assert foreign.key is None or foreign.key in keys, (name, foreign)
        assert foreign.key is not None or foreign.note, f"{name}: say why none"


@pytest.mark.parametrize("name", list(FOREIGN_KEYS))
def test_a_foreign_key_in_a_service_is_answered_with_the_key_it_is_here(
    name: str,
) -> None:
    foreign = FOREIGN_KEYS[name]
    message = rejected(ServiceSpec, **{name: 1})
    said = f"{where(ServiceSpec)}: unknown key {name!r}"
    whose = f"{foreign.whose}'s {name}"
    if foreign.key is None:
        assert message == f"{said} ({whose}): none is needed here: {foreign.note}"
    elif foreign.note is None:
        assert message == f"{said}; did you mean {foreign.key!r}? ({whose})"
    else:
        assert message == (
            f"{said}; did you mean {foreign.key!r}? ({whose}; here {foreign.note})"
        )


def test_startretries_says_how_its_count_differs() -> None:
    assert rejected(ServiceSpec, startretries=3).endswith(
        "unknown key 'startretries'; did you mean 'max_restarts'? (supervisord's "
        "startretries; here it counts unexpected exits within restart_window "
        "(however long the run), not failed starts in a row)"
    )


def test_systemds_start_limit_names_the_crash_loop_keys() -> None:
    assert rejected(ServiceSpec, StartLimitBurst=5).endswith(
        "unknown key 'StartLimitBurst'; did you mean 'max_restarts'? (systemd's "
        "StartLimitBurst; here it counts unexpected exits within restart_window, "
        "not starts)"
    )
    assert rejected(ServiceSpec, StartLimitInterval=10).endswith(
        "unknown key 'StartLimitInterval'; did you mean 'restart_window'? "
        "(systemd's StartLimitInterval)"
    )


def test_a_foreign_name_is_found_whatever_its_case() -> None:
    assert rejected(ServiceSpec, execstart="x").endswith(
        "unknown key 'execstart'; did you mean 'command'? (systemd's execstart)"
    )


def test_supervisords_names_that_are_the_same_here_are_keys() -> None:
    service = loaded(ServiceSpec, user=str(os.getuid()), umask="022")
    assert service.umask == 0o022
    [one, two] = parse_config(
        '[[service]]\nname = "w-{instance}"\ncommand = "true"\nnumprocs = 2\n'
        "autostart = false\n",
        check_system=False,
    ).services
    assert (one.name, two.name, one.autostart) == ("w-0", "w-1", False)


@pytest.mark.parametrize(
    ("cls", "typo", "meant"),
    [
        (ServiceSpec, "stop_timout", "'stop_timeout'"),
        (
            ServiceSpec,
            "max_restart",
            "'max_restarts' or 'max_restart_delay' or 'restart'",
        ),
        (ServiceSpec, "Autostart", "'autostart'"),
        (CheckSpec, "evry", "'every'"),
        (Rule, "proces_name", "'process_name'"),
        (AlertSpec, "webhok", "'webhook'"),
        (MonitorConfig, "rule_every", "'rules_every'"),
    ],
)
def test_a_typo_gets_the_close_matches(cls: type, typo: str, meant: str) -> None:
    assert rejected(cls, **{typo: 1}) == (
        f"{where(cls)}: unknown key {typo!r}; did you mean {meant}?"
    )


def test_a_typo_close_to_two_keys_gets_both() -> None:
    assert rejected(ServiceSpec, std_log="a").endswith(
        "unknown key 'std_log'; did you mean 'stdout_log' or 'stderr_log'?"
    )


def test_a_key_close_to_nothing_gets_the_list_of_known_keys() -> None:
    message = rejected(AlertSpec, colour="red")
    assert message == (
        f"{where(AlertSpec)}: unknown key 'colour'; known keys: command, events, "
        "mail, max_in_flight, max_queued, name, only, retries, retry_delay, "
        "timeout, webhook"
    )


# -- errors name the entry and the key, from a file and from Python --------------------

SECONDS_FORMS = (
    "a number of seconds or a duration like '500ms', '5s', '1.5s', '2m', '1h', "
    "'1d' or '1m30s'"
)
BAD = [
    (ServiceSpec, "stop_timeout", -1, "must be a finite number >= 0, not -1"),
    (ServiceSpec, "nice", 40, "must be a whole number from -20 to 19, not 40"),
    (CheckSpec, "failures", 0, "must be a whole number >= 1, not 0"),
    (
        CheckSpec,
        "priority",
        "asap",
        "must be one of 'critical', 'high', 'normal', 'low', not 'asap'",
    ),
    (Rule, "dry_run", "yes", "must be true or false, not 'yes'"),
    (Rule, "grace", "soon", f"must be {SECONDS_FORMS}, not 'soon'"),
    (AlertSpec, "max_queued", -1, "must be a whole number >= 0, not -1"),
    (AlertSpec, "timeout", 0, "must be a finite number > 0, not 0"),
    (MonitorConfig, "http_max_connections", 0, "must be a whole number >= 1, not 0"),
    (
        MonitorConfig,
        "rules_every",
        "1ms",
        "must be at least 0.01 s (a shorter interval is a busy loop), not 0.001",
    ),
]


@pytest.mark.parametrize(("cls", "key", "value", "problem"), BAD)
def test_a_bad_value_in_a_file_is_named_by_file_entry_and_key(
    cls: type, key: str, value: object, problem: str
) -> None:
    assert rejected(cls, **{key: value}) == f"{where(cls)}: {key} {problem}"


@pytest.mark.parametrize(("cls", "key", "value", "problem"), BAD)
def test_a_bad_value_given_in_python_is_named_by_entry_and_key(
    cls: type, key: str, value: object, problem: str
) -> None:
    least = dict(TABLES[cls][1])
    if cls is MonitorConfig:
        least["source"] = "mine"
    with pytest.raises(ConfigError) as info:
        cls(**{**least, key: value})
    entry = "mine: [monitor]" if cls is MonitorConfig else f"{KINDS[cls]} 'x'"
    assert str(info.value) == f"{entry}: {key} {problem}"
    assert isinstance(info.value, ValueError)


def test_a_problem_of_the_whole_entry_names_the_entry_alone() -> None:
    needs = r"^alert 'x': needs a command, a webhook or mail"
    with pytest.raises(ConfigError, match=needs):
        AlertSpec("x")
    with pytest.raises(ConfigError) as info:
        parse_config('[[rule]]\nname = "x"\nprocess_name = "x"\n', "t.toml")
    assert str(info.value) == (
        "t.toml: [[rule]] #1 ('x'): no threshold: set at least one of max_age, "
        "max_cpu, max_rss, cpu_percent"
    )


def test_the_keyword_constructors_keep_working_and_convert_what_they_are_given() -> (
    None
):
    spec = ServiceSpec(name="web", command=["sleep", "9"], stop_timeout=5)
    assert (spec.command, spec.stop_timeout) == (("sleep", "9"), 5.0)
    assert ServiceSpec(name="web", command="sleep 9", stop_timeout="5s") == spec
    check = CheckSpec("df", "df -h", every="1m")
    assert (check.every, check.timeout) == (60.0, 60.0), "timeout defaults to every"


def test_a_changed_copy_is_checked_as_a_new_spec_is() -> None:
    spec = ServiceSpec("web", ["sleep", "9"])
    with pytest.raises(ConfigError, match=r"^service 'web': nice must be a whole"):
        attrs.evolve(spec, nice=99)


# -- the TOML written back ----------------------------------------------------------


def test_the_effective_config_writes_every_key_a_spec_has_a_value_for() -> None:
    config = parse_config(EXAMPLE.read_text(), str(EXAMPLE), check_system=False)
    text = dump_config(config)
    blocks = text.split("\n\n")
    heartbeat = next(b for b in blocks if 'name = "heartbeat"' in b)
    written = set(re.findall(r"^(\w+) = ", heartbeat, flags=re.MULTILINE))
    # The example sets every key of heartbeat but user and group (root only).
    assert written == set(file_keys(ServiceSpec)) - {"user", "group"}
    monitor = blocks[1] if blocks[1].startswith("[monitor]") else blocks[2]
    written = set(re.findall(r"^(\w+) = ", monitor, flags=re.MULTILINE))
    assert written == set(file_keys(MonitorConfig)) - {"socket", "http_token"}


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            '[[service]]\nname = "s"\ncommand = "true"\nmax_restarts = false\n',
            "max_restarts = false",
        ),
        ("[monitor]\nmax_load = false\n", "max_load = false"),
        ("[monitor]\nhttp = false\n", "http = false"),
        ('[monitor]\nhttp = "[::1]:0"\n', 'http = "[::1]:0"'),
        ("[monitor]\nsocket = false\n", "socket = false"),
    ],
)
def test_false_for_none_is_written_back_as_false(text: str, line: str) -> None:
    config = parse_config(text, check_system=False)
    dumped = dump_config(config)
    assert line in dumped.splitlines()
    assert parse_config(dumped, check_system=False) == config


# -- one formatter for seconds ---------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.0, "0"),
        (0.05, "0.05"),
        (2.0, "2"),
        (9.5, "9.5"),
        (12.25, "12"),
        (312.4, "312"),
    ],
)
def test_a_measured_duration_is_shown_with_three_digits_below_ten_seconds(
    value: float, shown: str
) -> None:
    assert format_seconds(value) == shown


def test_the_example_config_documents_the_units() -> None:
    text = textwrap.dedent(EXAMPLE.read_text())
    assert '"500ms"' in text and '"64K"' in text and "did you mean" in text
