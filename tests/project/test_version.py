"""One version, said the same everywhere: ``procwork.__version__`` (and
untwisted's and clockwork's), ``procwork --version``, the monitor's
``procwork_build_info`` metric and the installed distribution's metadata.

It is written once, in ``untwisted/_version.py``; pyproject.toml reads it
there, so a release changes one line.
"""

from __future__ import annotations

import re
import subprocess
from importlib.metadata import version as installed_version
from pathlib import Path

import pytest

import clockwork
import procwork
import untwisted
from tests.support import PY, ROOT
from tests.support.fake_monitor import World, metric_lines

PACKAGES = ("untwisted", "clockwork", "procwork")


def test_the_three_packages_say_the_installed_distributions_version() -> None:
    """procwork, untwisted and clockwork have one ``__version__``, the one
    the installed distribution's metadata has (an editable install made
    before the version changed fails here: reinstall)."""
    assert untwisted.__version__ == clockwork.__version__ == procwork.__version__
    assert procwork.__version__ == installed_version("procwork")
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?\w+)*", procwork.__version__)


@pytest.mark.slow
def test_procwork_version_prints_procwork_dot_version() -> None:
    """``procwork --version`` (the console script and ``python -m
    procwork``) prints ``procwork X.Y.Z``, X.Y.Z being
    ``procwork.__version__``."""
    script = Path(PY).parent / "procwork"
    for command in ([str(script)], [PY, "-m", "procwork"]):
        done = subprocess.run(
            [*command, "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert (done.returncode, done.stdout) == (
            0,
            f"procwork {procwork.__version__}\n",
        ), done.stderr


def test_the_monitors_build_info_metric_names_procwork_dot_version() -> None:
    """A monitor's ``/metrics`` has ``procwork_build_info{version="X.Y.Z"} 1``
    with X.Y.Z ``procwork.__version__``."""
    lines = metric_lines(World().monitor)
    assert f'procwork_build_info{{version="{procwork.__version__}"}} 1' in lines


def test_the_version_is_written_in_one_place() -> None:
    """No module of the three packages asks importlib.metadata for the
    version or writes a version string: they read ``untwisted/_version.py``
    (through ``__version__``), where pyproject.toml reads it too."""
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "untwisted" / "_version.py":
                continue
            text = path.read_text()
            if "importlib.metadata" in text or re.search(
                r"""["']\d+\.\d+\.\d+["']""", text
            ):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject
    assert 'version = { attr = "untwisted._version.__version__" }' in pyproject
