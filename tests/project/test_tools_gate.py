"""The README's test command passes on a machine with Python and pip alone.

A test that needs a tool pip cannot install is skipped there, saying which
tool and which package; with ``PROCWORK_TEST_REQUIRE_TOOLS=1`` (CI) it fails
instead, so CI can never skip it. Checked on a throw-away test file run by a
child pytest, with a tool that exists nowhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

NEEDS_A_MISSING_TOOL = """
from tests.support.tools import need_tool

def test_needs_it():
    need_tool("procwork-no-such-tool", package="procwork-no-such-package")

def test_needs_nothing():
    pass
"""


def child_pytest(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["tests.support.tools"]\n')
    (tmp_path / "test_gate.py").write_text(NEEDS_A_MISSING_TOOL)
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    environ.pop("PROCWORK_TEST_REQUIRE_TOOLS", None)
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "."],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_a_missing_tool_skips_its_test_naming_the_tool_and_its_package(
    tmp_path: Path,
) -> None:
    done = child_pytest(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed, 1 skipped" in done.stdout
    assert (
        "missing tool procwork-no-such-tool "
        "(apt-get install procwork-no-such-package)" in done.stdout
    )


@pytest.mark.slow
def test_the_run_ends_with_one_line_naming_what_was_skipped_for_lack_of_a_tool(
    tmp_path: Path,
) -> None:
    done = child_pytest(tmp_path)
    lines = [
        line
        for line in done.stdout.splitlines()
        if line.startswith("skipped for lack of a tool:")
    ]
    assert lines == [
        "skipped for lack of a tool: procwork-no-such-tool (1 test; apt-get "
        "install procwork-no-such-package). .ci/run installs them and sets "
        "PROCWORK_TEST_REQUIRE_TOOLS=1."
    ]


@pytest.mark.slow
def test_with_procwork_test_require_tools_a_missing_tool_fails_the_run(
    tmp_path: Path,
) -> None:
    done = child_pytest(tmp_path, PROCWORK_TEST_REQUIRE_TOOLS="1")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed, 1 passed" in done.stdout
    assert "PROCWORK_TEST_REQUIRE_TOOLS=1 forbids skipping its tests" in done.stdout
    assert "skipped for lack of a tool" not in done.stdout
