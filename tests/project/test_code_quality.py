"""The code base stays clean: ruff-formatted, ruff-clean and mypy --strict clean,
and no module of the product grows past 800 lines.

These run the same tools a developer runs, so CI fails on a lint or type
error just as it fails on a broken behaviour.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import ROOT

PACKAGES = ("untwisted", "clockwork", "procwork")

#: Lines a module of the product may have. One past it has more than one job:
#: give each its own module (see ARCHITECTURE.md for the rooms).
MAX_LINES = 800


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


def modules_over(limit: int) -> list[str]:
    """``path: N lines`` for each module of the three packages over ``limit``."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > limit:
                found.append(f"{path.relative_to(ROOT).as_posix()}: {lines} lines")
    return found


def test_no_module_of_the_product_is_over_800_lines() -> None:
    """Each module does one job; one over 800 lines is to be split."""
    assert not modules_over(MAX_LINES), "\n".join(modules_over(MAX_LINES))
    # The count reads every package: with a lower limit it finds modules.
    over_200 = modules_over(200)
    assert {path.partition("/")[0] for path in over_200} == set(PACKAGES)
