"""The effective config written back as TOML (``--check-config``).

Written from the field definitions of the specs (:mod:`procwork._fields`):
every key of every table, in field order, with the value kept; a field's
TOML metadata says when that is not written as it is kept (``http`` as
``"HOST:PORT"``, None as ``false`` where ``false`` means none). So a key
added to a spec is written, and read back, with no change here.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING

from procwork._fields import file_keys

if TYPE_CHECKING:
    from procwork.monitor._config import MonitorConfig

__all__ = ["dump_config", "toml_keys"]


def dump_config(config: MonitorConfig) -> str:
    """The effective config as TOML: includes inlined, instances expanded,
    ``${VAR}`` and ``{python}`` substituted, every key with its value.

    Loading the text gives the same config back (``$`` is written ``$$``).
    """
    out = [
        f"# The effective config of {config.source}: includes inlined, instances",
        "# expanded, variables substituted, every key with its value.",
    ]
    out += [f"# Included: {path}" for path in config.included]
    out += ["", "[monitor]", *toml_keys(config)]
    for kind, items in (
        ("service", config.services),
        ("check", config.checks),
        ("rule", config.rules),
        ("service_rule", config.service_rules),
        ("alert", config.alerts),
    ):
        for item in items:
            out += ["", f"[[{kind}]]", *toml_keys(item)]
    return "\n".join(out) + "\n"


def toml_keys(spec: object) -> list[str]:
    """``key = value`` lines for the file keys of ``spec``, an attrs spec;
    a key whose value is None (and not written as ``false``) or empty is
    left out."""
    lines = []
    for key, how in file_keys(type(spec)).items():
        value = getattr(spec, key) if how.write is None else how.write(spec)
        if value is None and how.false_is_none:
            value = False  # TOML has no null
        if value is not None and value != () and value != frozenset():
            lines.append(f"{key} = {_toml_value(value)}")
    return lines


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):  # a signal: by name
        return _toml_string(str(value.name))
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, Mapping):
        items = ", ".join(
            f"{_toml_string(str(k))} = {_toml_value(v)}" for k, v in value.items()
        )
        return "{ " + items + " }" if items else "{}"
    if isinstance(value, frozenset | set):
        return _toml_value(sorted(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")  # pragma: no cover


def _toml_string(text: str) -> str:
    # A script keeps its lines: a multi-line string (the newline right after
    # the opening quotes is not part of it).
    multiline = "\n" in text
    escaped = []
    for char in text.replace("$", "$$"):  # read back, $$ is one $
        if char == '"' or char == "\\":
            escaped.append("\\" + char)
        elif char == "\n":
            escaped.append("\n" if multiline else "\\n")
        elif char == "\t":
            escaped.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    if multiline:
        return '"""\n' + "".join(escaped) + '"""'
    return '"' + "".join(escaped) + '"'
