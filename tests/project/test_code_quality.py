"""The code base stays clean: ruff-formatted, ruff-clean and mypy --strict clean.

These run the same tools a developer runs, so CI fails on a lint or type
error just as it fails on a broken behaviour.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import ROOT


def _tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_the_three_packages_type_check_under_mypy_strict() -> None:
    """mypy --strict (configured in pyproject.toml) finds no error in the three
    packages, nor in the tests, their support modules and their programs."""
    done = _tool("mypy")
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_finds_nothing_to_complain_about() -> None:
    """ruff check passes on the whole repository."""
    done = _tool("ruff", "check", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_code_is_ruff_formatted() -> None:
    """ruff format would change no file."""
    done = _tool("ruff", "format", "--check", ".")
    assert done.returncode == 0, done.stdout + done.stderr
