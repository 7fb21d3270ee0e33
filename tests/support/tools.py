"""Tools outside pip that some tests need, and what happens when one is missing.

A few tests check procwork against the real thing: an OpenSSH server,
Prometheus's ``promtool``, Alertmanager, ``systemd-analyze``, a headless
chromium. pip cannot install those, so the README's test command (Python and
pip only) would fail on a fresh machine if they were demanded. Instead a test
asks :func:`need_tool` for its tool:

- found: the tool's path;
- missing: the test is skipped, the reason naming the tool and the Debian
  package that brings it;
- missing while ``PROCWORK_TEST_REQUIRE_TOOLS=1`` (``.ci/run`` sets it after
  installing them): the test fails, so CI can never skip them.

This module is also a pytest plugin (``tests/conftest.py`` loads it): at the
end of a run it prints one line naming the tools whose tests were skipped.
"""

from __future__ import annotations

import os
import re
import shutil

import pytest

REQUIRE_TOOLS = "PROCWORK_TEST_REQUIRE_TOOLS"
"""The environment variable that turns a missing tool into a failure."""

_PREFIX = "missing tool"
_REASON = re.compile(rf"{_PREFIX} (\S+) \(apt-get install (\S+)\)")


def tools_required() -> bool:
    """Whether a missing tool fails its tests instead of skipping them."""
    return os.environ.get(REQUIRE_TOOLS, "") not in ("", "0")


def need_tool(*names: str, package: str) -> str:
    """The path of the first of ``names`` found; skip (or fail) the test if none is.

    A name with a slash is a path checked as it is (``/usr/sbin/sshd`` is not on
    every user's PATH); others are looked up on PATH.
    """
    for name in names:
        if "/" in name:
            if os.access(name, os.X_OK):
                return name
        elif (found := shutil.which(name)) is not None:
            return found
    reason = f"{_PREFIX} {os.path.basename(names[0])} (apt-get install {package})"
    if tools_required():
        pytest.fail(f"{reason}, and {REQUIRE_TOOLS}=1 forbids skipping its tests")
    pytest.skip(f"{reason}; set {REQUIRE_TOOLS}=1 to fail instead of skipping")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line naming the tools whose tests were skipped, and how many each."""
    counts: dict[tuple[str, str], int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = getattr(report, "longrepr", None)
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        if match := _REASON.search(reason):
            key = (match.group(1), match.group(2))
            counts[key] = counts.get(key, 0) + 1
    if not counts:
        return
    named = ", ".join(
        f"{tool} ({count} test{'s' * (count != 1)}; apt-get install {package})"
        for (tool, package), count in sorted(counts.items())
    )
    terminalreporter.write_line(
        f"skipped for lack of a tool: {named}. .ci/run installs them and sets "
        f"{REQUIRE_TOOLS}=1.",
        yellow=True,
    )
