"""A config made of several files: includes, ``${VAR}`` and relative paths.

``include = ["conf.d/*.toml"]`` adds the services, checks and rules of the
matching files in order, ``${VAR}``/``${VAR:-default}`` come from the
monitor's environment, and relative paths are resolved against the config
file's directory (``procwork/monitor/_configfiles.py``); an error names the
file it is in.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from procwork import ConfigError
from procwork.monitor import load_config, parse_config
from tests.support.configs import rejected, write


def test_include_adds_the_services_checks_and_rules_of_matching_files_in_order(
    tmp_path: Path,
) -> None:
    (tmp_path / "conf.d").mkdir()
    write(tmp_path, '[[service]]\nname = "b"\ncommand = "true"\n', "conf.d/20-b.toml")
    write(
        tmp_path,
        '[[service]]\nname = "a"\ncommand = "true"\n'
        '[[check]]\nname = "c"\ncommand = "true"\nevery = 5\n',
        "conf.d/10-a.toml",
    )
    write(tmp_path, "ignored", "conf.d/README")
    path = write(
        tmp_path,
        'include = ["conf.d/*.toml"]\n[[service]]\nname = "main"\ncommand = "true"\n',
    )
    config = load_config(path)
    assert [s.name for s in config.services] == ["main", "a", "b"]
    assert [c.name for c in config.checks] == ["c"]
    assert config.included == (
        str(tmp_path / "conf.d" / "10-a.toml"),
        str(tmp_path / "conf.d" / "20-b.toml"),
    )


def test_an_error_in_an_included_file_names_that_file(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    bad = write(tmp_path, '[[service]]\nname = "b"\n', "conf.d/b.toml")
    path = write(tmp_path, 'include = ["conf.d/*.toml"]\n')
    with pytest.raises(
        ConfigError, match=rf"^{re.escape(bad)}: \[\[service\]\] #1 \('b'\): missing"
    ):
        load_config(path)


@pytest.mark.parametrize(
    ("included", "expected"),
    [
        pytest.param(
            "[monitor]\nhttp = false\n",
            "an included file holds only [[service]], [[check]], [[rule]] and "
            "[[alert]] tables, not 'monitor'",
            id="monitor-in-include",
        ),
        pytest.param(
            'include = ["more.toml"]\n',
            "not 'include'",
            id="nested-include",
        ),
    ],
)
def test_an_included_file_holds_only_services_checks_and_rules(
    tmp_path: Path, included: str, expected: str
) -> None:
    write(tmp_path, included, "extra.toml")
    path = write(tmp_path, 'include = ["extra.toml"]\n')
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(path)


def test_an_included_file_that_does_not_exist_is_rejected_saying_relative_to_what(
    tmp_path: Path,
) -> None:
    message = rejected(tmp_path, 'include = ["extra.toml"]\n')
    assert message.endswith(
        f"include: {str(tmp_path / 'extra.toml')!r} does not exist ('extra.toml' is "
        f"relative to {tmp_path}, the config file's directory)"
    )


def test_a_glob_that_matches_nothing_includes_nothing(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, 'include = ["conf.d/*.toml"]\n')).services == ()


def test_variables_are_expanded_from_the_monitors_environment() -> None:
    text = """
        [[service]]
        name = "${APP}-web"
        command = ["true", "${PORT:-8080}", "${EMPTY:-fallback}", "$$HOME", "$1"]
        env = { TOKEN = "${TOKEN}" }
        """
    environ = {"APP": "shop", "TOKEN": "s3cret", "EMPTY": ""}
    [svc] = parse_config(textwrap.dedent(text), environ=environ).services
    assert svc.name == "shop-web"
    assert svc.argv == ("true", "8080", "fallback", "$HOME", "$1")
    assert dict(svc.env or {}) == {"TOKEN": "s3cret"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(
            "${NOPE}",
            "[[service]] #1 ('s') command: ${NOPE} is not set in the monitor's "
            "environment; give a default with ${NOPE:-default}, or write $$ for a "
            "literal $",
            id="unset",
        ),
        pytest.param(
            "${NO PE}",
            "[[service]] #1 ('s') command: ${NO PE} is not ${NAME} or "
            "${NAME:-default}; write $$ for a literal $",
            id="bad-name",
        ),
    ],
)
def test_a_variable_that_cannot_be_expanded_is_rejected_naming_the_key(
    value: str, expected: str
) -> None:
    text = f'[[service]]\nname = "s"\ncommand = "true {value}"\n'
    with pytest.raises(ConfigError, match=re.escape(f"x.toml: {expected}")):
        parse_config(text, "x.toml", environ={})


def test_a_relative_cwd_and_command_are_resolved_against_the_config_directory(
    tmp_path: Path,
) -> None:
    (tmp_path / "bin").mkdir()
    tool = tmp_path / "bin" / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    path = write(
        tmp_path,
        """
        [[service]]
        name = "in-bin"
        command = "./tool --x"
        cwd = "bin"

        [[service]]
        name = "here"
        command = "bin/tool"

        [[check]]
        name = "c"
        command = "bin/tool"
        every = 1
        on_failure = "./bin/tool --fix"
        """,
    )
    in_bin, here = load_config(path).services
    [check] = load_config(path).checks
    assert (in_bin.cwd, in_bin.argv) == (str(tmp_path / "bin"), (str(tool), "--x"))
    assert here.argv == (str(tool),)
    assert (check.command, check.on_failure) == ((str(tool),), (str(tool), "--fix"))
