"""Config files written for a test, and the error one is rejected with."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from procwork import ConfigError
from procwork.monitor import load_config


def write(tmp_path: Path, text: str, name: str = "monitor.toml") -> str:
    """The path of a file ``name`` in ``tmp_path`` holding ``text`` (dedented)."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def rejected(tmp_path: Path, text: str) -> str:
    """The message a config file of ``text`` is rejected with."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), "the message names the file first"
    return message
