"""procwork.ProcessMonitor: a drop-in for twisted.runner.procmon.ProcessMonitor.

The acceptance test is Twisted's own: the installed Twisted's
``twisted/runner/test/test_procmon.py``, copied at test time with only its
import of ``ProcessMonitor`` changed to procwork's, must pass in full. So the
promise follows whichever Twisted is installed. The other tests show what the
drop-in changes on a real reactor: children in their own process group,
stopped as a group, reaped in O(1).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import pwd
import re
import subprocess
import sys
from pathlib import Path

import pytest
from twisted.runner import procmon

import procwork
import procwork.supervisor
from tests.support import child_env, run_child, run_program

# procmon's test module imports ProcessMonitor with a line like this one.
IMPORT_LINE = re.compile(
    r"^from twisted\.runner\.procmon import (?P<names>[^\n]*\bProcessMonitor\b[^\n]*)$",
    re.MULTILINE,
)


def twisted_procmon_tests() -> Path:
    """The installed Twisted's own tests of procmon."""
    spec = importlib.util.find_spec("twisted.runner.test.test_procmon")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin)


def with_procworks_monitor(source: str) -> str:
    """``source`` with its import of ProcessMonitor taken from procwork instead;
    nothing else changed (exactly one line is rewritten)."""

    def rewrite(match: re.Match[str]) -> str:
        others = [
            name.strip()
            for name in match["names"].split(",")
            if name.strip() != "ProcessMonitor"
        ]
        lines = [f"from twisted.runner.procmon import {', '.join(others)}"] * bool(
            others
        )
        return "\n".join([*lines, "from procwork.supervisor import ProcessMonitor"])

    rewritten, count = IMPORT_LINE.subn(rewrite, source)
    assert count == 1, f"expected one import of ProcessMonitor, found {count}"
    return rewritten


def count_tests(source: str) -> int:
    """The ``test_*`` methods of the module's classes."""
    return sum(
        1
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ClassDef)
        for item in node.body
        if isinstance(item, ast.FunctionDef) and item.name.startswith("test_")
    )


@pytest.mark.slow
def test_twisteds_own_procmon_tests_pass_in_full_against_procworks_ProcessMonitor(
    tmp_path: Path,
) -> None:
    """Every test of the installed Twisted's test_procmon.py passes, none is
    skipped, and the class under test is procwork's."""
    source = with_procworks_monitor(twisted_procmon_tests().read_text())
    expected = count_tests(source)
    assert expected >= 30  # procmon's suite, not an empty file
    (tmp_path / "test_procmon_procwork.py").write_text(source)
    runner = (
        "import sys, pytest, test_procmon_procwork as copied\n"
        "from procwork.supervisor import ProcessMonitor\n"
        "assert copied.ProcessMonitor is ProcessMonitor, copied.ProcessMonitor\n"
        "sys.exit(pytest.main(['-q', '-rfEs', '-p', 'no:cacheprovider',"
        " '-o', 'addopts=', 'test_procmon_procwork.py']))\n"
    )
    env = child_env()
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    child = subprocess.run(
        [sys.executable, "-c", runner],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = child.stdout + child.stderr
    assert child.returncode == 0, output
    summary = output.strip().splitlines()[-1]
    assert re.match(rf"^{expected} passed(, \d+ warnings?)? in ", summary), output


def test_the_rewrite_changes_the_import_of_ProcessMonitor_and_nothing_else() -> None:
    source = twisted_procmon_tests().read_text()
    rewritten = with_procworks_monitor(source)
    removed = set(source.splitlines()) - set(rewritten.splitlines())
    added = set(rewritten.splitlines()) - set(source.splitlines())
    assert len(removed) == 1 and "ProcessMonitor" in removed.pop()
    assert "from procwork.supervisor import ProcessMonitor" in added


def test_procworks_ProcessMonitor_is_procmons_and_importable_from_procwork() -> None:
    """It is procmon (a subclass), so isinstance checks and ``super()`` hold."""
    assert procwork.ProcessMonitor is procwork.supervisor.ProcessMonitor
    assert issubclass(procwork.supervisor.ProcessMonitor, procmon.ProcessMonitor)
    assert "ProcessMonitor" in procwork.supervisor.__all__
    assert "ProcessMonitor" not in procwork.__all__  # the core's names only


@pytest.mark.slow
def test_importing_procwork_supervisor_still_does_not_import_the_global_reactor() -> (
    None
):
    """procmon imports the reactor, so ProcessMonitor is imported on first use."""
    child = run_child(
        """
        import sys, procwork, procwork.supervisor
        assert "twisted.internet.reactor" not in sys.modules, "reactor imported"
        procwork.supervisor.ProcessMonitor
        assert "twisted.internet.reactor" in sys.modules
        """
    )
    assert child.returncode == 0, child.stderr


# On a real reactor -------------------------------------------------------------


@pytest.mark.slow
def test_on_a_real_reactor_children_lead_a_group_that_is_stopped_whole() -> None:
    """A service's grandchild dies with it at stopProcess; procmon restarts the
    service; its output is procmon's log events; stopService stops it."""
    child = run_program("procmon", "group-stopped-whole", timeout=60)
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == ["restarted", "stopped"]


@pytest.mark.slow
def test_a_real_reactor_stops_a_group_that_ignores_SIGTERM_after_killTime() -> None:
    """SIGKILL goes to the whole group when killTime has passed."""
    child = run_program("procmon", "group-stopped-whole", "--ignore-term", timeout=60)
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == ["restarted", "stopped"]


@pytest.mark.slow
def test_a_process_run_as_another_user_is_started_by_the_reactor_as_procmon_does() -> (
    None
):
    """procwork's process core does not change users: a process given another
    uid/gid is spawned by the reactor itself (Twisted's transport), and runs
    as that user; one given our own uid still gets a GroupProcess."""
    if os.geteuid() != 0:
        pytest.skip("changing user needs root")
    nobody = pwd.getpwnam("nobody")
    child = run_program(
        "procmon", "as-another-user", str(nobody.pw_uid), str(nobody.pw_gid)
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout == "ok\n"
