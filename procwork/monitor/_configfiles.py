"""The files of a monitor config: reading them, ``include``, ``${VAR}``.

What a config takes from supervisord besides its keys: ``include`` globs,
``${VAR}`` and ``${VAR:-default}`` from the monitor's environment (``$$``
for a literal ``$``), relative paths resolved against the file's directory.
Commands may use ``{python}`` for the interpreter running procwork, so a
config can ship portable Python one-liners. The values themselves are
checked by the specs (:mod:`procwork.monitor._config`).
"""

from __future__ import annotations

import glob
import os
import re
import sys
import tomllib
from collections.abc import Mapping
from typing import Any, NamedTuple

from procwork._errors import ConfigError

__all__ = [
    "ConfigFile",
    "Expander",
    "control_socket",
    "includes",
    "named",
    "parse_toml",
    "prepare",
    "read_file",
    "substitute",
]


class ConfigFile(NamedTuple):
    """One TOML file of the config: the main one or an included one.

    (A NamedTuple, not a dataclass: importing dataclasses costs ``procwork
    ctl --config FILE``, which reads one key of one file, more than the
    rest of the call.)
    """

    source: str
    data: Mapping[str, Any]
    base_dir: str | None  # relative paths in it are resolved against this

    def relative_to(self) -> str:
        """What a relative path in this file is relative to, for people."""
        if self.base_dir is None:
            return f"the monitor's working directory {os.getcwd()}"
        return f"{self.base_dir}, the config file's directory"

    def path(self, path: str) -> str:
        """``path`` as written in this file, resolved."""
        if self.base_dir is None or os.path.isabs(path):
            return path
        return os.path.normpath(os.path.join(self.base_dir, path))


def read_file(path: str) -> str:
    """The text of a config file.

    Raises:
        ConfigError: it cannot be read, or is not UTF-8.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: cannot read config: not UTF-8 text ({e})") from None


def parse_toml(text: str, source: str) -> dict[str, Any]:
    """``text`` as TOML; ``source`` names it in the error."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None


def includes(
    data: Mapping[str, Any],
    source: str,
    base_dir: str | None,
    expand: Expander,
) -> list[ConfigFile]:
    """The files ``include = [...]`` names, read, in order (each once)."""
    patterns = data.get("include", [])
    where = f"{source}: include"
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, list) or not all(
        isinstance(p, str) and p for p in patterns
    ):
        raise ConfigError(
            f"{where}: must be a list of file names or globs, like "
            f'["conf.d/*.toml"], not {patterns!r}'
        )
    main = ConfigFile(source, data, base_dir)
    files: list[ConfigFile] = []
    seen = {os.path.abspath(source)}
    for pattern in patterns:
        pattern = expand(pattern, where)
        full = main.path(pattern)
        matches = sorted(glob.glob(full))
        if not matches and not glob.has_magic(pattern):
            raise ConfigError(
                f"{where}: {full!r} does not exist"
                + (
                    ""
                    if os.path.isabs(pattern)
                    else f" ({pattern!r} is relative to {main.relative_to()})"
                )
            )
        for path in matches:
            if os.path.abspath(path) in seen:
                continue
            seen.add(os.path.abspath(path))
            included = parse_toml(read_file(path), path)
            extra = set(included) - {"service", "check", "rule", "alert"}
            if extra:
                raise ConfigError(
                    f"{path}: an included file holds only [[service]], [[check]], "
                    f"[[rule]] and [[alert]] tables, not {sorted(extra)[0]!r} (that "
                    f"belongs in {source})"
                )
            base = os.path.dirname(os.path.abspath(path))
            files.append(ConfigFile(path, included, base))
    return files


def control_socket(
    path: str, environ: Mapping[str, str] | None = None
) -> str | bool | None:
    """The control socket the monitor of the config file ``path`` serves.

    Read as the monitor reads ``[monitor] socket``, ``${VAR}`` expanded and
    a relative path resolved against the file's directory, but without
    loading the rest of the config (``procwork ctl --config FILE`` needs
    this one key, and no Twisted).

    Returns:
        The socket's path; None when the file names none (the monitor
        serves the default one); False for ``socket = false`` (none).

    Raises:
        ConfigError: the file cannot be read, is not TOML, or its socket is
            neither a path nor false; the message names the file and the key.
    """
    data = parse_toml(read_file(path), path)
    monitor = data.get("monitor", {})
    if not isinstance(monitor, dict):
        raise ConfigError(f"{path}: [monitor]: must be a table")
    where = f"{path}: [monitor] socket"
    socket = Expander(os.environ if environ is None else environ)(
        monitor.get("socket"), where
    )
    if socket is None or socket is False:
        return socket
    if not isinstance(socket, str) or not socket:
        raise ConfigError(f"{where}: must be a path or false, not {socket!r}")
    return ConfigFile(path, data, os.path.dirname(os.path.abspath(path))).path(socket)


# -- ${VAR} expansion, {instance} and {python} ----------------------------------

_VARIABLE = re.compile(r"\$(?:(\$)|\{([^}]*)\})")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Expander:
    """``${VAR}``, ``${VAR:-default}`` and ``$$`` in every string of a value.

    Like a shell's: ``${VAR:-default}`` takes the default when VAR is unset
    or empty. A ``$`` followed by anything else is left as it is.
    """

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def __call__(self, value: Any, where: str) -> Any:
        if isinstance(value, str):
            return _VARIABLE.sub(lambda m: self._one(m, where), value)
        if isinstance(value, list):
            return [self(v, where) for v in value]
        if isinstance(value, dict):
            return {k: self(v, f"{where}.{k}") for k, v in value.items()}
        return value

    def _one(self, match: re.Match[str], where: str) -> str:
        if match.group(1):
            return "$"
        inner = match.group(2)
        name, sep, default = inner.partition(":-")
        if not _NAME.fullmatch(name):
            raise ConfigError(
                f"{where}: ${{{inner}}} is not ${{NAME}} or ${{NAME:-default}}; "
                "write $$ for a literal $"
            )
        value = self._environ.get(name)
        if sep:
            return value or default
        if value is None:
            raise ConfigError(
                f"{where}: ${{{name}}} is not set in the monitor's environment; "
                f"give a default with ${{{name}:-default}}, or write $$ for a "
                "literal $"
            )
        return value


def prepare(entry: Mapping[str, Any], where: str, expand: Expander) -> dict[str, Any]:
    """An entry with ``${VAR}`` expanded and ``{python}`` substituted."""
    entry_named = named(where, entry.get("name"))
    return {
        key: substitute(
            expand(value, f"{entry_named} {key}"), "{python}", sys.executable
        )
        for key, value in entry.items()
    }


def named(where: str, name: object) -> str:
    """``where`` an entry is, with its name if it has a usable one."""
    return f"{where} ({name!r})" if isinstance(name, str) else where


def substitute(value: Any, old: str, new: str) -> Any:
    """``value`` with ``old`` replaced by ``new`` in every string in it."""
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [substitute(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, old, new) for k, v in value.items()}
    return value
